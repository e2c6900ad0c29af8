"""Several servers, one constellation: which server holds which plane, and which ISLs cross.

Pure core (no I/O).  The model is Mininet Cluster Edition's (``mininet/examples/cluster.py``):
a list of servers reached over SSH, the first running the controller and the experiment, and
a placer that bins switches evenly over them (its ``SwitchBinPlacer.bin``: contiguous bins,
the remainder to the first servers), hosts co-located with their switch.  Here the unit
placed is a whole *plane*, so only the cross-plane ISLs at block boundaries cross servers
(two boundaries per server on the torus, each with ``sats_per_plane`` links).

Config (``topo.config``)::

    servers: [local, root@10.0.0.2, {ssh: root@10.0.0.3, address: 10.1.0.3}]
    servers: local:2        # this machine plus one network-namespace "server" (a test rig)
    placement: {0: [1, 2, 3], 1: [4, 5, 6]}   # optional: server index -> its planes

Each cross-server ISL is one VXLAN tunnel with its own key (VNI) between the two servers'
underlay addresses (:func:`tunnels`): the tunnel device gets the name the veth end would
have had, so shaping, outages and loss treat it like any other ISL end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from topo.addressing import isl_ports, switch_name
from topo.constellation import Constellation, Sat

MAX_SERVERS = 64
LOCAL = "local"
LOCAL_RE = re.compile(r"local:(\d+)")
DEST_RE = re.compile(r"([A-Za-z0-9_.-]+@)?[A-Za-z0-9_.:-]+")
ADDR_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
VXLAN_PORT = 4789
FIRST_VNI = 4096  # keys below are left to whatever else the underlay carries


class PlacementError(ValueError):
    """The servers list or the placement map is malformed; the message names the key."""


@dataclass(frozen=True)
class ServerSpec:
    """One server of a run.

    index: 0-based position in ``servers`` (0 runs the controller and the experiment).
    dest: SSH destination ``[user@]host``; ``"local"`` for this machine; ``"netns"`` for a
        network-namespace server this run creates on this machine (``servers: local:N``).
    address: underlay IPv4 address tunnels and OpenFlow connections use (None: resolved at
        run time; a netns server's is assigned by the run).
    """

    index: int
    dest: str
    address: str | None = None

    @property
    def name(self) -> str:
        return f"srv{self.index}"

    @property
    def is_local(self) -> bool:
        return self.dest == LOCAL

    @property
    def is_netns(self) -> bool:
        return self.dest == "netns"


def parse_servers(value) -> list[ServerSpec]:
    """``servers`` config value -> specs.  ``"local:N"`` (or ``--servers local:N``) is this
    machine plus N-1 network-namespace servers; a list holds ``"local"``, ``"[user@]host"``
    or ``{ssh: DEST, address: IP}`` entries, the first of which must be ``local``."""
    if value is None:
        return [ServerSpec(0, LOCAL)]
    if isinstance(value, str):
        m = LOCAL_RE.fullmatch(value.strip())
        if m:
            n = int(m.group(1))
            if not 1 <= n <= MAX_SERVERS:
                raise PlacementError(f"servers: local:{n} must have 1 to {MAX_SERVERS} servers")
            return [ServerSpec(0, LOCAL)] + [ServerSpec(i, "netns") for i in range(1, n)]
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_SERVERS:
        raise PlacementError(f"servers: must be local:N or a list of 1 to {MAX_SERVERS} "
                             "SSH destinations")
    out = []
    for i, entry in enumerate(value):
        where = f"servers[{i}]"
        addr = None
        if isinstance(entry, dict):
            extra = set(entry) - {"ssh", "address"}
            if extra:
                raise PlacementError(f"{where}.{sorted(extra)[0]}: unknown key (ssh, address)")
            addr = entry.get("address")
            entry = entry.get("ssh")
            if addr is not None and not (isinstance(addr, str) and ADDR_RE.fullmatch(addr)
                                         and all(int(p) < 256 for p in addr.split("."))):
                raise PlacementError(f"{where}.address: {addr!r} must be an IPv4 address")
        if not isinstance(entry, str) or len(entry) > 253 or not DEST_RE.fullmatch(entry):
            raise PlacementError(f"{where}: {entry!r} must be 'local' or an SSH destination "
                                 "[user@]host")
        if (i == 0) != (entry == LOCAL):
            raise PlacementError(f"{where}: the first server (and only it) is 'local': it runs "
                                 "the controller and the experiment")
        out.append(ServerSpec(i, entry, addr))
    dests = [s.dest for s in out]
    if len(set(dests)) != len(dests):
        raise PlacementError("servers: a destination is listed twice")
    return out


def block_placement(planes: int, n_servers: int) -> dict[int, int]:
    """Contiguous blocks of planes by Cluster Edition's ``SwitchBinPlacer.bin`` (even bins,
    the first ``planes % n`` servers one plane more): ``{orb: server index}``."""
    if not 1 <= n_servers <= planes:
        raise PlacementError(f"servers: {n_servers} servers for {planes} planes: each server "
                             "needs at least one plane")
    from mininet.examples.cluster import SwitchBinPlacer  # Debian's mininet
    return SwitchBinPlacer.bin(list(range(1, planes + 1)), list(range(n_servers)))


def explicit_placement(value, planes: int, n_servers: int) -> dict[int, int]:
    """``placement`` config value ``{server index: [planes]}`` -> ``{orb: server index}``;
    every plane exactly once, every server at least one plane."""
    if not isinstance(value, dict):
        raise PlacementError("placement: must map a server index to its list of planes")
    out: dict[int, int] = {}
    for key, orbs in value.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise PlacementError(f"placement: key {key!r} must be a server index") from None
        if not 0 <= k < n_servers:
            raise PlacementError(f"placement: server {k} is not in servers (0..{n_servers - 1})")
        if not isinstance(orbs, list) or not orbs:
            raise PlacementError(f"placement.{k}: must be a non-empty list of planes")
        for orb in orbs:
            if not isinstance(orb, int) or isinstance(orb, bool) or not 1 <= orb <= planes:
                raise PlacementError(f"placement.{k}: plane {orb!r} outside 1..{planes}")
            if orb in out:
                raise PlacementError(f"placement.{k}: plane {orb} is placed twice")
            out[orb] = k
    missing = sorted(set(range(1, planes + 1)) - set(out))
    if missing:
        raise PlacementError(f"placement: plane {missing[0]} is on no server")
    empty = sorted(set(range(n_servers)) - set(out.values()))
    if empty:
        raise PlacementError(f"placement: server {empty[0]} has no plane")
    return out


@dataclass(frozen=True)
class Tunnel:
    """One cross-server ISL: ``a`` (on server ``server_a``) to ``b`` (on ``server_b``);
    ``intf_a``/``intf_b`` the tunnel devices' names (those of the veth ends it replaces);
    ``vni`` the VXLAN key, unique in the run."""

    a: Sat
    b: Sat
    server_a: int
    server_b: int
    intf_a: str
    intf_b: str
    vni: int


def tunnels(c: Constellation, plane_server: dict[int, int]) -> list[Tunnel]:
    """Every ISL whose ends are on different servers, in ``isl_ports`` order, one VNI each."""
    out = []
    for a, pa, b, pb, _kind in isl_ports(c):
        sa, sb = plane_server[a[1]], plane_server[b[1]]
        if sa != sb:
            out.append(Tunnel(a, b, sa, sb, f"{switch_name(a)}-eth{pa}",
                              f"{switch_name(b)}-eth{pb}", FIRST_VNI + len(out)))
    return out


def boundary_links(tuns: list[Tunnel]) -> dict[tuple[int, int], int]:
    """Cross-server links per server pair ``(lower index, higher index)``."""
    out: dict[tuple[int, int], int] = {}
    for t in tuns:
        key = (min(t.server_a, t.server_b), max(t.server_a, t.server_b))
        out[key] = out.get(key, 0) + 1
    return out


def server_of_intf(name: str, plane_server: dict[int, int]) -> int | None:
    """Server holding switch interface ``s<sat>_<orb>-eth<port>`` (None: not a switch's)."""
    m = re.fullmatch(r"s(\d+)_(\d+)-eth\d+", name)
    return plane_server.get(int(m.group(2))) if m else None
