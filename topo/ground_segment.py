"""Placed ground stations in a running testbed: handovers as the constellation moves.

Each placed station ``k`` (config ``ground_stations``) is a host ``g<k>`` with its own
address (``topo.addressing.station_ip``) and one veth: ``g<k>-eth0`` in its namespace and
``g<k>-up`` in the root namespace, which is a port (number ``station_port(k)``) of the
bridge of the satellite serving it.  A handover **re-attaches** ``g<k>-up``: one
``ovs-vsctl`` transaction deletes it from the old bridge and adds it to the new one with
the same port number; then ``POST /ground`` moves the controller's flows for the station's
/32 on every switch, and the call returns once the controller has its barriers back
from every switch it changed.  The station's address, MAC, routes and neighbour entry never change.  With no
satellite in view the port belongs to no bridge and the controller drops traffic to it.

The serving satellite follows :func:`topo.ground_stations.choose_serving` at each step's
constellation time.  The current gateways are also written (atomically) to
``state_path`` (JSON, below) for the node application, which holds ground-bound results
while its station is out of contact::

    {"t_s": ..., "unix": ..., "stations": [{"k", "name", "ip", "sat": [s, o] | null,
     "since_t_s", "since_unix", "handovers"}], "history": [{"k", "t_s", "unix", "from",
     "to", "apply_s", "flows"}]}   # history: the last HISTORY_MAX handovers
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from topo import ground_stations as gs
from topo import ovs
from topo.addressing import station_ip, station_port, station_uplink, switch_name
from topo.spec import write_json_atomic

HISTORY_MAX = 1000


@dataclass
class AppliedHandover:
    """One handover as applied: station ``k`` from ``old`` to ``new`` (None: out of view)
    at constellation time ``t_s``; ``apply_s`` wall time to re-attach the link and have
    the controller's routes follow (``link_s`` + ``routes_s``); ``flows`` changed."""

    k: int
    t_s: float
    old: tuple | None
    new: tuple | None
    link_s: float = 0.0
    routes_s: float = 0.0
    flows: int = 0

    @property
    def apply_s(self) -> float:
        return self.link_s + self.routes_s

    def line(self) -> str:
        fmt = lambda s: list(s) if s else "none"  # noqa: E731
        return (f"handover g{self.k} t={self.t_s:9.1f}s {fmt(self.old)} -> {fmt(self.new)} "
                f"applied in {self.apply_s * 1e3:.1f} ms (link {self.link_s * 1e3:.1f} ms, "
                f"routes {self.routes_s * 1e3:.1f} ms, {self.flows} flows)")


class GroundSegment:
    """The placed stations of one testbed.

    testbed: the Testbed (uses ``c``, ``cfg``, ``controller_http``, ``wait_generation``).
    state_path: where the gateway state JSON goes.
    attached: ``{k: bridge-attached satellite}`` as built (the station's first gateway).
    """

    def __init__(self, testbed, state_path: str, attached: dict):
        self.tb = testbed
        self.c = testbed.c
        self.min_el = testbed.cfg.min_elevation_deg
        self.stations = testbed.cfg.stations()
        self.sats = self.c.satellites()
        self.state_path = state_path
        self.attached = {k: tuple(v) if v else None for k, v in attached.items()}
        self.current: dict[int, tuple | None] = dict(self.attached)
        self.since = {k: (testbed.t_s, time.time()) for k in self.attached}
        self.counts = {k: 0 for k in self.attached}
        self.history: list[dict] = []
        self._loose: dict = {}  # k -> Mininet Intf of a detached station's g<k>-up

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

    def start(self) -> None:
        """After the build (links on ``attached``): bring the links to ``current`` (a
        station with no satellite in view at the start is detached), write the state."""
        moves = [AppliedHandover(k, self.tb.t_s, self.attached[k], self.current[k])
                 for k in self.attached if self.current[k] != self.attached[k]]
        if moves:
            self._move_links(moves)
        self.write_state(self.tb.t_s)

    # --- handovers ---------------------------------------------------------------------------
    def step(self, t_s: float, echo=None) -> list[AppliedHandover]:
        """Apply every handover due at constellation time ``t_s``."""
        want = self.serving_at(t_s)
        moves = [AppliedHandover(k, t_s, self.current[k], new)
                 for k, new in want.items() if new != self.current[k]]
        if moves:
            self.apply(moves)
            for h in moves:
                if echo:
                    echo(h.line())
        return moves

    def _move_links(self, moves: list[AppliedHandover]) -> float:
        """Re-attach the stations' links: one ovs-vsctl transaction; returns its time."""
        t0 = time.monotonic()
        args = []
        for h in moves:
            intf = station_uplink(h.k)
            if self.attached.get(h.k) is not None:
                args += ["--", "--if-exists", "del-port", switch_name(self.attached[h.k]), intf]
            if h.new is not None:
                args += ["--", "add-port", switch_name(h.new), intf, "--", "set", "interface",
                         intf, f"ofport_request={station_port(h.k)}"]
        ovs.vsctl(*args)
        for h in moves:  # keep Mininet's view (net.links, the CLI) in line
            self._move_intf(h.k, self.attached.get(h.k), h.new)
            self.attached[h.k] = h.new
        return time.monotonic() - t0

    def _move_intf(self, k: int, old, new) -> None:
        switches = getattr(self.tb, "switches", {}) or {}
        port, name = station_port(k), station_uplink(k)
        intf = None
        if old is not None and old in switches:
            sw = switches[old]
            intf = sw.intfs.pop(port, None)
            if intf is not None:
                sw.ports.pop(intf, None)
                sw.nameToIntf.pop(name, None)
        if intf is not None:
            self._loose[k] = intf  # a detached station's Intf waits here for the next contact
        intf = self._loose.pop(k, None) if new is not None else None
        if intf is not None and new in switches:
            sw = switches[new]
            sw.intfs[port], sw.ports[intf], sw.nameToIntf[name] = intf, port, intf
            intf.node = sw

    def apply(self, moves: list[AppliedHandover]) -> None:
        """Re-attach the links (one ovs-vsctl transaction), then move the routes."""
        link_s = self._move_links(moves)
        for h in moves:
            t1 = time.monotonic()
            res = self.tb.controller_http("POST", "/ground", {
                "k": h.k, "sat": list(h.new) if h.new else None})
            if not res.get("fenced"):  # the barriers did not come back in time: wait more
                self.tb.wait_generation(res["generation"] - 1, timeout_s=30)
            h.link_s, h.routes_s, h.flows = link_s / len(moves), time.monotonic() - t1, \
                res["changed_flows"]
            self.current[h.k] = h.new
            self.since[h.k] = (h.t_s, time.time())
            self.counts[h.k] += 1
            self.history.append({"k": h.k, "t_s": round(h.t_s, 3), "unix": time.time(),
                                 "from": list(h.old) if h.old else None,
                                 "to": list(h.new) if h.new else None,
                                 "apply_s": round(h.apply_s, 4), "flows": h.flows})
        del self.history[:-HISTORY_MAX]
        self.write_state(moves[-1].t_s)

    def write_state(self, t_s: float) -> None:
        state = {"t_s": t_s, "unix": time.time(), "stations": [
            {"k": k, "name": st.name, "ip": station_ip(k),
             "sat": list(self.current[k]) if self.current[k] else None,
             "since_t_s": self.since[k][0], "since_unix": self.since[k][1],
             "handovers": self.counts[k]}
            for k, st in enumerate(self.stations, start=1)], "history": self.history}
        write_json_atomic(self.state_path, state)
