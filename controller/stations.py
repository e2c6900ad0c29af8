"""Flows toward placed ground stations, which move between satellites at handovers.

A placed station ``k`` has an address of its own (``topo.addressing.station_ip``) that no
satellite's /24 covers.  Every switch holds one /32 flow for it:

* on the current gateway: rewrite the Ethernet destination and output on the station's
  port (``topo.addressing.station_port``);
* elsewhere: output toward the gateway (the Manhattan next hop of ``Router``, outages
  included);
* with no gateway (no satellite in view), or the gateway unreachable: drop.

At a handover the testbed switches the station's link to the new gateway's switch and calls
``POST /ground``; :meth:`StationFlows.move` then modifies (OFPFC_MODIFY_STRICT, counters
kept) only the flows whose action changed, fences them with barriers and answers once the
barriers are back (``fenced``), so the caller knows the routes follow without polling the
controller's state file.
"""

from __future__ import annotations

import time

from controller.routing import NoRoute
from topo import addressing as T

PRIO_STATION = 250
COOKIE_STATION = 0x5C04


class StationFlows:
    """The station part of the controller app (``app``: the ManhattanRouting instance).

    stations: ``[{"k", "ip", "port", "sat": [sat, orb] | None}]`` from the controller config.
    """

    def __init__(self, app, stations: list, sleep=None):
        self.app = app
        self.sleep = sleep  # the framework's green sleep (hub.sleep), to await barriers
        self.by_k: dict[int, dict] = {}
        for st in stations:
            k = int(st["k"])
            sat = tuple(st["sat"]) if st.get("sat") else None
            self.by_k[k] = {"ip": str(st["ip"]), "port": int(st["port"]), "sat": sat,
                            "moves": 0}
        self.installed: dict[int, dict[int, tuple]] = {}  # dpid -> {k: action key}

    def ips(self) -> set[str]:
        return {st["ip"] for st in self.by_k.values()}

    def ip_to_k(self) -> dict[str, int]:
        """``{ip: k}`` of the placed stations (to read their flows back)."""
        return {st["ip"]: k for k, st in self.by_k.items()}

    def view(self) -> dict:
        return {str(k): {"ip": st["ip"], "sat": list(st["sat"]) if st["sat"] else None,
                         "moves": st["moves"]} for k, st in self.by_k.items()}

    def _action(self, sat, k) -> tuple:
        gw = self.by_k[k]["sat"]
        if gw is None:
            return ("drop",)
        if gw == sat:
            return ("local", self.by_k[k]["port"])
        try:
            nh = self.app.router.next_hop(sat, gw)
        except NoRoute:
            return ("drop",)
        return ("via", self.app.c.node_id(nh)) if nh is not None else ("drop",)

    def _msg(self, dp, sat, k, key, command):
        parser = dp.ofproto_parser
        ip = self.by_k[k]["ip"]
        match = parser.OFPMatch(eth_type=0x0800, ipv4_dst=ip)
        if key[0] == "local":
            actions = [parser.OFPActionSetField(eth_dst=T.mac_of(ip)),
                       parser.OFPActionOutput(key[1])]
        elif key[0] == "via":
            actions = [parser.OFPActionOutput(T.port_towards(self.app.c, sat,
                                                             self.app.c.sat_of(key[1])))]
        else:
            actions = []
        return self.app._flow(dp, PRIO_STATION, match, actions, COOKIE_STATION, command)

    def sync(self, dp, sat, fresh: bool = False) -> int:
        """Bring switch ``dp``'s station flows in line; the number of flows sent.
        fresh: the switch's table was just emptied (it connected)."""
        if fresh:
            self.installed.pop(dp.id, None)
        have = self.installed.setdefault(dp.id, {})
        sent = 0
        for k in self.by_k:
            key = self._action(sat, k)
            if have.get(k) == key:
                continue
            command = dp.ofproto.OFPFC_MODIFY_STRICT if k in have else dp.ofproto.OFPFC_ADD
            dp.send_msg(self._msg(dp, sat, k, key, command))
            have[k] = key
            sent += 1
        return sent

    def move(self, k: int, sat, fence_timeout_s: float = 10.0) -> tuple[int, bool]:
        """Station ``k`` is now served by ``sat`` (``[s, o]``, or None: out of contact):
        update every switch and fence with barriers; returns the number of flows changed
        and whether every barrier came back (within ``fence_timeout_s``)."""
        if k not in self.by_k:
            raise KeyError(f"no placed ground station {k}")
        new = tuple(int(v) for v in sat) if sat else None
        if new is not None and not self.app.c.contains(new):
            raise ValueError(f"satellite {list(new)} outside the grid")
        st = self.by_k[k]
        if st["sat"] != new:
            st["moves"] += 1
        st["sat"] = new
        app = self.app
        app.generation += 1
        changed, fenced = 0, []
        for dpid, dp in list(app.datapaths.items()):
            n = self.sync(dp, app.c.sat_of(dpid))
            if n:
                app._barrier(dp)
                fenced.append(dpid)
            changed += n
        app.mark_dirty()
        if self.sleep is None:
            return changed, False
        deadline = time.monotonic() + fence_timeout_s
        while any(d in app.pending_barriers for d in fenced):
            if time.monotonic() > deadline:
                return changed, False
            self.sleep(0.002)
        return changed, True
