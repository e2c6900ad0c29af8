"""What the constellation view draws, as plain JSON-ready data (pure: no I/O, no threads).

The view has two kinds of message, shared by the live server and the replay file:

* the **topology** (once): grid, satellites in node-id order, ISLs (index pairs into the
  satellites, kind ``in``/``cross``), ground stations;
* a **frame** (whenever something changed): constellation time, every satellite's
  sub-satellite point, every ISL's state (one character each: ``u`` up, ``l`` lossy,
  ``d`` down) and shaped rate (Mbit/s), and the jobs (:class:`JobTracker`).

Link states come from the run's own sources: the shapes the emulator applied (rate, lossy,
the outage model's down links) and the controller's links down (anything the switches
report down, e.g. a link an experimenter took down by hand).
"""

from __future__ import annotations

import math

import numpy as np

from topo.constellation import Constellation

STATE_CHARS = {"up": "u", "lossy": "l", "down": "d"}


def link_keys(c: Constellation) -> list[frozenset]:
    """The ISLs in the view's order (``Constellation.isls``), as ``frozenset({a, b})``."""
    return [frozenset((a, b)) for a, b, _kind in c.isls()]


def topology(spec, stations=(), title: str = "") -> dict:
    """The view's static part for a :class:`topo.spec.ConstellationSpec`.

    stations: placed ground stations (``topo.ground_stations.GroundStation``) in the
        order of ``spec.ground`` (default: the spec's own ``stations``); a station without
        one is drawn under its satellite."""
    stations = stations or getattr(spec, "stations", ())
    c = spec.constellation
    sats = c.satellites()
    index = {s: i for i, s in enumerate(sats)}
    links = [[index[a], index[b], kind] for a, b, kind in c.isls()]
    ground = []
    for k, los in enumerate(spec.ground, start=1):
        st = stations[k - 1] if k - 1 < len(stations) else None
        ground.append({"k": k, "name": getattr(st, "name", None) or f"g{k}",
                       "lat": getattr(st, "lat_deg", None), "lon": getattr(st, "lon_deg", None),
                       "los": index[tuple(los)]})
    return {"type": "topology", "title": title, "grid": [c.planes, c.sats_per_plane],
            "sats": [list(s) for s in sats], "links": links, "ground": ground,
            "altitude_km": c.altitude_m / 1000.0, "inclination_deg": c.inclination_deg,
            "outage_lat_deg": c.outage_lat_deg,
            "rate_cap_mbps": spec.shaping.rate_cap_mbps}


def subsatellite_points(c: Constellation, t_s: float) -> tuple[list[float], list[float]]:
    """Latitude and longitude (degrees, 2 decimals) of every satellite at ``t_s``."""
    p = c.positions_ecef_m(t_s)
    lat = np.degrees(np.arcsin(np.clip(p[:, 2] / np.linalg.norm(p, axis=1), -1, 1)))
    lon = np.degrees(np.arctan2(p[:, 1], p[:, 0]))
    return np.round(lat, 2).tolist(), np.round(lon, 2).tolist()


def link_states(keys: list[frozenset], shapes: dict | None, down) -> tuple[str, list[float]]:
    """Per ISL (in ``keys`` order): the state string and the shaped rate in Mbit/s.

    shapes: ``{frozenset: topo.shaping.LinkShape}`` the emulator applied (None: unknown,
        every link ``up`` with rate 0); down: links the controller sees down."""
    chars, rates = [], []
    for key in keys:
        shape = shapes.get(key) if shapes else None
        state = shape.state if shape is not None else "up"
        if key in down:
            state = "down"
        chars.append(STATE_CHARS.get(state, "u"))
        rates.append(round(shape.rate_bps / 1e6, 3) if shape is not None else 0.0)
    return "".join(chars), rates


def model_shapes(spec, t_s: float) -> dict:
    """The shapes the outage and link models give at ``t_s`` (runs without an emulator)."""
    from topo import shaping
    s = spec.shaping
    return shaping.plan(spec.constellation, spec.link, t_s, s.rate_scale,
                        s.rate_cap_mbps * 1e6, s.rate_floor_mbps * 1e6)


def frame(c: Constellation, keys, t_s: float, shapes, down, jobs=(), wall_s: float = 0.0,
          generation: int | None = None) -> dict:
    """One frame of the view (see the module docstring)."""
    lat, lon = subsatellite_points(c, t_s)
    state, rate = link_states(keys, shapes, down)
    return {"type": "frame", "wall_s": round(wall_s, 3), "t_s": round(t_s, 3),
            "generation": generation, "lat": lat, "lon": lon, "state": state,
            "rate_mbps": rate, "jobs": list(jobs)}


def next_hop_table(router, c: Constellation) -> list[list[int]]:
    """``table[i][j]``: node index of the next hop from satellite i toward j (``i`` itself
    when there, -1 unreachable); indices are node ids - 1.  The controller's
    ``next_hops`` in the same shape."""
    from controller.routing import NoRoute
    sats = c.satellites()
    out = []
    for i, a in enumerate(sats):
        row = []
        for j, b in enumerate(sats):
            if i == j:
                row.append(i)
                continue
            try:
                row.append(c.node_id(router.next_hop(a, b)) - 1)
            except NoRoute:
                row.append(-1)
        out.append(row)
    return out


def controller_next_hops(state: dict | None, c: Constellation) -> list[list[int]] | None:
    """The controller state's installed ``next_hops`` (dpid -> next-hop dpid per target,
    0 self, -1 unreachable) as :func:`next_hop_table`; None until every switch has one."""
    table = (state or {}).get("next_hops") or {}
    if len(table) < c.size:
        return None
    out = []
    for i in range(c.size):
        row = table.get(str(i + 1))
        if row is None or len(row) != c.size:
            return None
        out.append([i if n == 0 else (n - 1 if n > 0 else -1) for n in row])
    return out


def follow(table: list[list[int]], a: int, b: int) -> list[int] | None:
    """The path of node indices from ``a`` to ``b`` along a next-hop table (None: no route)."""
    path = [a]
    while path[-1] != b:
        nxt = table[path[-1]][b]
        if nxt < 0 or nxt in path or len(path) > len(table):
            return None
        path.append(nxt)
    return path


def rate_domain_mbps(rates) -> tuple[float, float]:
    """Colour-scale bounds for shaped rates (log scale needs positive bounds)."""
    pos = [r for r in rates if r > 0]
    if not pos:
        return (1.0, 10.0)
    lo, hi = min(pos), max(pos)
    if math.isclose(lo, hi):
        lo, hi = lo / 2, hi * 2
    return (lo, hi)
