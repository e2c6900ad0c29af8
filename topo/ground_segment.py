"""Placed ground stations in a running testbed: handovers as the constellation moves.

Each placed station ``k`` (config ``ground_stations``) is a host ``g<k>`` with its own
address (``topo.addressing.station_ip``) on a Linux bridge ``g<k>-eth0`` and one
**pre-created link per candidate satellite** (:mod:`topo.station_links`): every satellite
that serves it within ``handover_horizon_s`` of the start (from the contact windows,
:func:`topo.ground_stations.serving_candidates`), each a port (number ``station_port(k)``)
of that satellite's switch.  Only the serving satellite's link is up.  A handover brings
the new link up and the old one down (netlink, in the station's namespace); then
``POST /ground`` moves the controller's flows for the station's /32 on every switch, and
the call returns once the controller has its barriers back from every switch it changed.
The station's address, MAC, routes and neighbour entry never change.  With no satellite
in view every link is down and the controller drops traffic to the station.

Each step also keeps the serving link's rate at the ground RF model's (``ground_link``)
Shannon rate for the current slant range (times ``rate_scale``, capped at
``rate_cap_mbps``, reported), so a contact starts at the rate of its first elevation;
``ground_rate_mbps`` instead fixes every ground link's rate.

The serving satellite follows :func:`topo.ground_stations.choose_serving` at each step's
constellation time.  The current gateways are also written (atomically) to
``state_path`` (JSON, below) for the node application, which holds ground-bound results
while its station is out of contact::

    {"t_s": ..., "unix": ..., "stations": [{"k", "name", "ip", "sat": [s, o] | null,
     "since_t_s", "since_unix", "handovers", "rate_bps", "links"}],
     "history": [{"k", "t_s", "unix", "from", "to", "apply_s", "flows", "link_s",
     "routes_s", "created", "rate_bps"}]}   # history: the last HISTORY_MAX handovers
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from topo import ground_stations as gs
from topo.addressing import station_ip, station_port
from topo.spec import write_json_atomic
from topo.station_links import StationLinks

HISTORY_MAX = 1000


@dataclass
class AppliedHandover:
    """One handover as applied: station ``k`` from ``old`` to ``new`` (None: out of view)
    at constellation time ``t_s``; ``apply_s`` wall time to switch the link and have
    the controller's routes follow (``link_s`` + ``routes_s``); ``flows`` changed;
    ``created``: the new gateway had no pre-created link (made at the handover);
    ``rate_bps``: the new link's shaped rate (None: unshaped); ``shape_s``: time to set it
    (after the routes, not part of ``apply_s``)."""

    k: int
    t_s: float
    old: tuple | None
    new: tuple | None
    link_s: float = 0.0
    routes_s: float = 0.0
    flows: int = 0
    created: bool = False
    rate_bps: float | None = None
    shape_s: float = 0.0

    @property
    def apply_s(self) -> float:
        return self.link_s + self.routes_s

    def line(self) -> str:
        fmt = lambda s: list(s) if s else "none"  # noqa: E731
        return (f"handover g{self.k} t={self.t_s:9.1f}s {fmt(self.old)} -> {fmt(self.new)} "
                f"applied in {self.apply_s * 1e3:.1f} ms (link {self.link_s * 1e3:.1f} ms, "
                f"routes {self.routes_s * 1e3:.1f} ms, {self.flows} flows)"
                + (" link created" if self.created else "")
                + (f", ground link {self.rate_bps / 1e6:.0f} Mbit/s" if self.rate_bps else ""))


class GroundSegment:
    """The placed stations of one testbed.

    testbed: the Testbed (uses ``c``, ``cfg``, ``network``, ``controller_http``,
        ``wait_generation``).
    state_path: where the gateway state JSON goes.
    attached: ``{k: first gateway}`` from the config (``cfg.ground``).
    """

    def __init__(self, testbed, state_path: str, attached: dict):
        self.tb = testbed
        self.c = testbed.c
        cfg = testbed.cfg
        self.min_el = cfg.min_elevation_deg
        self.stations = cfg.stations()
        self.sats = self.c.satellites()
        self.state_path = state_path
        self.attached = {k: tuple(v) if v else None for k, v in attached.items()}
        self.current: dict[int, tuple | None] = dict(self.attached)
        self.since = {k: (testbed.t_s, time.time()) for k in self.attached}
        self.counts = {k: 0 for k in self.attached}
        self.history: list[dict] = []
        self.links: dict[int, StationLinks] = {}
        self.rates: dict[int, float | None] = {k: None for k in self.attached}
        self.rate_tolerance = 0.01
        self._root_ipr = None
        lm = cfg.ground_link_model()
        self.link_model = lm

    # --- what the controller and the node application are told at start ------------------
    def serving_at(self, t_s: float) -> dict:
        """``{k: gateway}`` at ``t_s`` under the policy, given the current gateways."""
        out = {}
        for k, st in enumerate(self.stations, start=1):
            el = gs.elevations_deg(self.c, st, t_s)
            cur = self.current.get(k)
            idx = gs.choose_serving(None if cur is None else self.c.node_id(cur) - 1, el,
                                    self.min_el)
            out[k] = None if idx is None else self.sats[idx]
        return out

    def controller_config(self) -> list[dict]:
        return [{"k": k, "ip": station_ip(k), "port": station_port(k),
                 "sat": list(self.current[k]) if self.current[k] else None}
                for k in range(1, len(self.stations) + 1)]

    def plan_links(self) -> dict:
        """Before the build: ``{k: (candidate satellites, serving satellite)}``, the
        candidates being every satellite that serves the station within
        ``handover_horizon_s`` of now (and its current and first gateways)."""
        out = {}
        for k, st in enumerate(self.stations, start=1):
            cands = set(gs.serving_candidates(self.c, st, self.tb.t_s,
                                              self.tb.cfg.handover_horizon_s, self.min_el))
            cands |= {s for s in (self.current[k], self.attached[k]) if s is not None}
            out[k] = (sorted(cands, key=self.c.node_id), self.current[k])
        return out

    def start(self) -> None:
        """After the build (the serving links up): open each station's namespace, shape
        its links, write the state."""
        nw = self.tb.network
        for k in self.attached:
            host = nw.ground_hosts[k - 1]
            self.links[k] = StationLinks(nw, k, host, {sl.sat: sl for sl in nw.station_links
                                                       if sl.k == k})
        if self.tb.cfg.shaping:
            from pyroute2 import IPRoute
            self._root_ipr = IPRoute()
            self._report_shaping()
            for k, sl in self.links.items():
                st = self.stations[k - 1]
                start_rate = self.rate_bps(st, None)  # at the minimum elevation
                rates = {sat: start_rate for sat in sl.links}
                if self.current[k] is not None:
                    rates[self.current[k]] = self.rate_bps(st, self.current[k])
                    self.rates[k] = rates[self.current[k]]
                sl.shape_all(rates)
        self.write_state(self.tb.t_s)

    def _report_shaping(self) -> None:
        """What the ground links are shaped from, into the run's metadata (and one line
        when the cap keeps them below the model's rate)."""
        cfg = self.tb.cfg
        model, capped = self.model_rate_bps(self.stations[0], None)
        raw = float(self.link_model.shannon_rate_bps(gs.slant_range_at_elevation_m(
            self.c.altitude_m, self.min_el, self.stations[0].alt_m))) * cfg.rate_scale
        fixed = bool(cfg.ground_rate_mbps)
        self.tb.metadata["ground_shaping"] = {
            "source": "fixed" if fixed else "model", "contact_start_model_bps": raw,
            "rate_cap_bps": cfg.rate_cap_mbps * 1e6, "capped": capped and not fixed}
        if capped and not fixed:
            self.tb.echo(f"rate cap {cfg.rate_cap_mbps:g} Mbit/s applied to the ground links "
                         f"(Ka-band model {raw / 1e6:.0f} Mbit/s at {self.min_el:g} degrees)")

    def close(self) -> None:
        for sl in self.links.values():
            sl.close()
        if self._root_ipr is not None:
            self._root_ipr.close()
            self._root_ipr = None

    # --- ground link rate ------------------------------------------------------------------
    def model_rate_bps(self, station, sat, t_s: float | None = None) -> tuple[float, bool]:
        """(rate, capped) of the ground link to ``sat`` at ``t_s`` (default now) from the
        RF model at the slant range, times ``rate_scale``, within the floor and cap;
        ``sat`` None: at the minimum elevation (the start of a contact)."""
        cfg = self.tb.cfg
        if sat is None:
            d = gs.slant_range_at_elevation_m(self.c.altitude_m, self.min_el, station.alt_m)
        else:
            d = float(gs.slant_range_m(self.c, station, self.tb.t_s if t_s is None else t_s,
                                       [sat])[0])
        model = float(self.link_model.shannon_rate_bps(d)) * cfg.rate_scale
        rate = min(max(model, cfg.rate_floor_mbps * 1e6), cfg.rate_cap_mbps * 1e6)
        return rate, model > cfg.rate_cap_mbps * 1e6

    def rate_bps(self, station, sat, t_s: float | None = None) -> float:
        """The shaped rate of a ground link: ``ground_rate_mbps`` when set, else the model's."""
        if self.tb.cfg.ground_rate_mbps:
            return self.tb.cfg.ground_rate_mbps * 1e6
        return self.model_rate_bps(station, sat, t_s)[0]

    def reshape(self, t_s: float, moved=()) -> None:
        """Keep each serving link at its rate for ``t_s`` (changed beyond the tolerance, or
        just handed over: ``moved``, whose ``rate_bps``/``shape_s`` are filled)."""
        if self._root_ipr is None or self.tb.cfg.ground_rate_mbps:
            return
        by_k = {h.k: h for h in moved}
        for k, sl in self.links.items():
            sat = self.current[k]
            if sat is None:
                continue
            t0 = time.monotonic()
            rate = self.rate_bps(self.stations[k - 1], sat, t_s)
            old = self.rates[k]
            if k in by_k or old is None or abs(rate - old) > self.rate_tolerance * old:
                sl.set_rate(self._root_ipr, sat, rate)
                self.rates[k] = rate
            if k in by_k:
                by_k[k].rate_bps, by_k[k].shape_s = rate, time.monotonic() - t0

    # --- handovers ---------------------------------------------------------------------------
    def step(self, t_s: float, echo=None) -> list[AppliedHandover]:
        """Apply every handover due at constellation time ``t_s``; keep the serving links'
        rates."""
        want = self.serving_at(t_s)
        moves = [AppliedHandover(k, t_s, self.current[k], new)
                 for k, new in want.items() if new != self.current[k]]
        if moves:
            self.apply(moves)
        self.reshape(t_s, moves)
        if moves:
            self._record(moves)
            for h in moves:
                if echo:
                    echo(h.line())
        return moves

    def apply(self, moves: list[AppliedHandover]) -> None:
        """Switch each station's link (new up, old down), then move the routes."""
        for h in moves:
            t0 = time.monotonic()
            rate = None
            if h.new is not None and h.new not in self.links[h.k].links and self.tb.cfg.shaping:
                rate = self.rate_bps(self.stations[h.k - 1], h.new, h.t_s)
            h.created = self.links[h.k].switch(h.old, h.new, rate)
            t1 = time.monotonic()
            res = self.tb.controller_http("POST", "/ground", {
                "k": h.k, "sat": list(h.new) if h.new else None})
            if not res.get("fenced"):  # the barriers did not come back in time: wait more
                self.tb.wait_generation(res["generation"] - 1, timeout_s=30)
            h.link_s, h.routes_s, h.flows = t1 - t0, time.monotonic() - t1, \
                res["changed_flows"]
            self.current[h.k] = h.new
            self.since[h.k] = (h.t_s, time.time())
            self.counts[h.k] += 1
            if h.new is None:
                self.rates[h.k] = None

    def _record(self, moves: list[AppliedHandover]) -> None:
        for h in moves:
            self.history.append({"k": h.k, "t_s": round(h.t_s, 3), "unix": time.time(),
                                 "from": list(h.old) if h.old else None,
                                 "to": list(h.new) if h.new else None,
                                 "apply_s": round(h.apply_s, 4), "flows": h.flows,
                                 "link_s": round(h.link_s, 4), "routes_s": round(h.routes_s, 4),
                                 "created": h.created, "rate_bps": h.rate_bps})
        del self.history[:-HISTORY_MAX]
        self.write_state(moves[-1].t_s)

    def write_state(self, t_s: float) -> None:
        state = {"t_s": t_s, "unix": time.time(), "stations": [
            {"k": k, "name": st.name, "ip": station_ip(k),
             "sat": list(self.current[k]) if self.current[k] else None,
             "since_t_s": self.since[k][0], "since_unix": self.since[k][1],
             "handovers": self.counts[k], "rate_bps": self.rates.get(k),
             "links": len(self.links[k].links) if k in self.links else None}
            for k, st in enumerate(self.stations, start=1)], "history": self.history}
        write_json_atomic(self.state_path, state)
