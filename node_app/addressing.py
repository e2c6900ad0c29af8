"""Where each satellite's node daemon listens: a pluggable address map.

The map is a parameter of every daemon and of the ground side.  Schemes:

* loopback, one IP per satellite: ``127.0.<orb>.<sat>:PORT`` (all of 127/8 is loopback on
  Linux, no root needed; up to 255 planes x 255 sats);
* loopback, one port per satellite: ``127.0.0.1:BASE+node_id``;
* the emulator's plan, one IP per satellite host (``topo.addressing.sat_ip``:
  ``10.<orb>.<sat>.1``), one port for all: :meth:`AddressMap.emulated`;
* any explicit map loaded from a JSON file
  ``{"grid": "PxS", "nodes": {"SAT,ORB": ["ip", port], ...}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from topo.constellation import Constellation, Sat
from topo.spec import parse_grid

DEFAULT_PORT = 4700


def sat_key(sat: Sat) -> str:
    return f"{sat[0]},{sat[1]}"


def parse_sat_key(text: str) -> Sat:
    s, o = (int(x) for x in text.split(","))
    return (s, o)


@dataclass
class AddressMap:
    """``nodes``: satellite -> (host, port).  ``grid``: (planes, sats_per_plane)."""

    grid: tuple[int, int]
    nodes: dict[Sat, tuple[str, int]]

    def __post_init__(self):
        self._by_addr = {addr: sat for sat, addr in self.nodes.items()}

    def addr(self, sat: Sat) -> tuple[str, int]:
        try:
            return self.nodes[tuple(sat)]
        except KeyError:
            raise KeyError(f"satellite {list(sat)} has no address in the map") from None

    def sat_at(self, addr: tuple[str, int]) -> Sat | None:
        return self._by_addr.get(tuple(addr))

    # --- schemes ----------------------------------------------------------------------
    @classmethod
    def loopback_ips(cls, planes: int, sats: int, port: int = DEFAULT_PORT) -> "AddressMap":
        if planes > 255 or sats > 255:
            raise ValueError("127.0.<orb>.<sat> addressing needs at most 255x255; use ports")
        c = Constellation(planes=planes, sats_per_plane=sats)
        return cls((planes, sats), {(s, o): (f"127.0.{o}.{s}", port) for s, o in c.satellites()})

    @classmethod
    def emulated(cls, planes: int, sats: int, port: int = DEFAULT_PORT) -> "AddressMap":
        """The Mininet testbed's satellite hosts (the emulator's addressing plan)."""
        from topo.addressing import sat_ip
        c = Constellation(planes=planes, sats_per_plane=sats)
        return cls((planes, sats), {sat: (sat_ip(sat), port) for sat in c.satellites()})

    @classmethod
    def loopback_ports(cls, planes: int, sats: int, base: int = 20000) -> "AddressMap":
        c = Constellation(planes=planes, sats_per_plane=sats)
        return cls((planes, sats), {sat: ("127.0.0.1", base + c.node_id(sat))
                                     for sat in c.satellites()})

    # --- files -------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"grid": f"{self.grid[0]}x{self.grid[1]}",
                "nodes": {sat_key(s): [h, p] for s, (h, p) in self.nodes.items()}}

    @classmethod
    def from_json(cls, obj: dict) -> "AddressMap":
        planes, sats = parse_grid(str(obj["grid"]))
        nodes = {parse_sat_key(k): (str(v[0]), int(v[1])) for k, v in obj["nodes"].items()}
        return cls((planes, sats), nodes)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f)

    @classmethod
    def load(cls, path: str) -> "AddressMap":
        with open(path, encoding="utf-8") as f:
            return cls.from_json(json.load(f))
