"""Addressing plan of the testbed: names, addresses, MACs, datapath ids and switch ports.

Pure functions, no Mininet import (the controller imports this under eventlet).
See ``topo/topology.py`` for the table of the plan.
"""

from __future__ import annotations

from topo.constellation import Constellation, Sat

HOST_PORT, EAST_PORT, WEST_PORT, SOUTH_PORT, NORTH_PORT = 1, 2, 3, 4, 5
FIRST_GROUND_PORT = 6
GATEWAY_IP = "169.254.0.1"
MAX_GROUND = 150  # 10.o.s.101 .. 10.o.s.250
# Planes and satellites per plane: one address octet each (10.<orb>.<sat>.x, 1..255).  The
# interface names fit Linux's 15 characters up to there: s255_255-eth155 (a switch port,
# 155 = the last ground port) and h255_255-eth0 are 15 and 13 (see max_intf_name_len).
MAX_AXIS = 255
IFNAMSIZ = 15  # longest Linux interface name (IFNAMSIZ 16 with the terminating NUL)


def switch_name(sat: Sat) -> str:
    return f"s{sat[0]}_{sat[1]}"


def host_name(sat: Sat) -> str:
    return f"h{sat[0]}_{sat[1]}"


def ground_name(k: int) -> str:
    """Name of ground station ``k`` (1-based)."""
    return f"g{k}"


def sat_ip(sat: Sat) -> str:
    """Address of the satellite computer of ``[sat, orb]``."""
    return f"10.{sat[1]}.{sat[0]}.1"


def sat_prefix(sat: Sat) -> str:
    """The /24 owned by ``[sat, orb]`` (its host and its ground stations)."""
    return f"10.{sat[1]}.{sat[0]}.0/24"


def ground_ip(k: int, los: Sat) -> str:
    """Address of ground station ``k`` (1-based) attached to satellite ``los``."""
    if not 1 <= k <= MAX_GROUND:
        raise ValueError(f"ground station {k}: at most {MAX_GROUND} ground stations")
    return f"10.{los[1]}.{los[0]}.{100 + k}"


def station_ip(k: int) -> str:
    """Address of placed ground station ``k`` (1-based; ``ground_stations`` in the config):
    ``10.0.0.<100+k>``, outside every satellite's /24, so it survives handovers."""
    if not 1 <= k <= MAX_GROUND:
        raise ValueError(f"ground station {k}: at most {MAX_GROUND} ground stations")
    return f"10.0.0.{100 + k}"


def station_port(k: int) -> int:
    """Switch port of placed station ``k`` on whichever satellite serves it (the same on
    every switch, so stations sharing a gateway never collide)."""
    return FIRST_GROUND_PORT + k - 1


def station_link(k: int, sat: Sat) -> str:
    """Station-side end (in ``g<k>``'s namespace) of placed station ``k``'s pre-created link
    to satellite ``sat``; the switch end is ``<switch>-eth<station_port(k)>``."""
    return f"g{k}-{sat[0]}_{sat[1]}"


def sat_of_ip(ip: str) -> Sat | None:
    """The satellite owning ``ip`` (its host or a pinned ground station under it), else None
    (also for placed stations, which belong to no satellite)."""
    parts = ip.split(".")
    if len(parts) != 4 or parts[0] != "10" or parts[1] == "0":
        return None
    return (int(parts[2]), int(parts[1]))


def mac_of(ip: str) -> str:
    """Deterministic locally administered MAC of an address."""
    return "02:00:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


GATEWAY_MAC = mac_of(GATEWAY_IP)


def dpid_of(c: Constellation, sat: Sat) -> int:
    """Datapath id of the switch of ``sat``: its node id."""
    return c.node_id(sat)


def port_towards(c: Constellation, sat: Sat, nbr: Sat) -> int:
    """Switch port of ``sat`` facing its ISL neighbour ``nbr``."""
    s, o = sat
    if nbr == c.wrap(s + 1, o):
        return EAST_PORT
    if nbr == c.wrap(s - 1, o):
        return WEST_PORT
    if nbr == c.wrap(s, o + 1):
        return SOUTH_PORT
    if nbr == c.wrap(s, o - 1):
        return NORTH_PORT
    raise ValueError(f"{nbr} is not an ISL neighbour of {sat}")


def neighbour_on_port(c: Constellation, sat: Sat, port: int) -> Sat | None:
    """The ISL neighbour of ``sat`` behind ``port`` (None for host/ground ports)."""
    s, o = sat
    return {EAST_PORT: c.wrap(s + 1, o), WEST_PORT: c.wrap(s - 1, o),
            SOUTH_PORT: c.wrap(s, o + 1), NORTH_PORT: c.wrap(s, o - 1)}.get(port)


def isl_ports(c: Constellation):
    """Every ISL once as ``(a, port_a, b, port_b, kind)``; ``a`` as in ``Constellation.isls``."""
    out = []
    for a, b, kind in c.isls():
        if kind == "in":
            out.append((a, EAST_PORT, b, WEST_PORT, kind))
        else:
            out.append((a, SOUTH_PORT, b, NORTH_PORT, kind))
    return out


def ground_ports(ground: list[Sat]) -> list[tuple[int, Sat, int]]:
    """``(k, los_sat, switch_port)`` for each ground station (1-based k)."""
    per_sat: dict[Sat, int] = {}
    out = []
    for k, los in enumerate(ground, start=1):
        port = FIRST_GROUND_PORT + per_sat.get(los, 0)
        per_sat[los] = per_sat.get(los, 0) + 1
        out.append((k, los, port))
    return out


def max_intf_name_len(planes: int, sats_per_plane: int, ground: int = MAX_GROUND) -> int:
    """Longest interface name the plan gives a grid: switch ports (ISLs, host, up to
    ``ground`` ground ports on one satellite), host and ground-station ends."""
    sat = (sats_per_plane, planes)
    last_port = FIRST_GROUND_PORT + ground - 1
    names = [f"{switch_name(sat)}-eth{last_port}", f"{host_name(sat)}-eth0",
             f"{ground_name(ground)}-eth0", switch_name(sat)]
    return max(len(n) for n in names)
