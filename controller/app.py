"""OpenFlow 1.3 controller app: proactive Manhattan routes on every satellite switch.

Runs under both ``osken-manager`` (Debian's os-ken, the maintained Ryu) and
``ryu-manager`` (Ryu 4.34, via ``controller/ryu_launcher.py``); the framework is
whichever manager imported first.

Routing is :class:`controller.routing.Router`, destination based, installed as the
compressed tables of :mod:`controller.flowtable`: masked matches per destination
plane (``10.<o>.0.0/16``) and per in-plane index (``10.0.<s>.0/255.0.255.0``) plus
per-satellite /24 exceptions, so a switch holds about planes + satellites flows
(not their product) and forwards exactly as ``Router.next_hop``.  The destination
switch delivers by /32 to its host and ground stations, rewriting the
Ethernet destination (hosts send everything to a virtual gateway MAC).  ARP
requests go to the controller, which answers them from the addressing plan, so
nothing ever floods the torus; anything unmatched is dropped (no table-miss flow).

A connecting switch is never wiped: the app reads its flow table back (a flow stats
request over all tables, :mod:`controller.resync`) and sends only the difference against
the table it would install, once the port states of every switch are known -- so a
switch in ``fail_mode=secure`` that kept forwarding while the controller was killed and
restarted, or while its own connection flapped, keeps every flow that is still right
(and its counters) and never passes through an empty table.  Flows the app does not
know are deleted one by one on their own match.  ``flow_mods`` in the view counts the
FlowMods sent by kind (``add``, ``modify``, ``delete``: strict deletions of single flows,
the only kind sent) and ``tables_read`` the tables read back.

On port down/up (OFPT_PORT_STATUS, or the port states read when a switch
connects) the app recomputes with the outage-aware Router and sends only the
difference between the old and the new table (OFPFC_MODIFY_STRICT keeps packet
counters of entries that stay).

Configuration: JSON file named by ``SPACECOMP_CTL_CONFIG`` with ``spec`` (the run's
``spec.json``, :class:`topo.spec.ConstellationSpec`: geometry, start time, ground
stations), ``http_port``, ``stations`` (placed ground stations, each
``{"k", "ip", "port", "sat": [sat, orb] | null}``) and ``state_path``.  A placed station's
/32 has a flow on every switch (toward its current gateway, delivered on its port there,
dropped while it has none); ``POST /ground {"k": k, "sat": [s, o] | null}`` moves it at a
handover (see :mod:`controller.stations`).  Whenever its routes change the app writes
the spec's ``link_state_path`` (the constellation time its routes are for and the links
down: what the coordinator plans on) and rewrites ``state_path`` (atomically, at most
every STATE_INTERVAL_S) with its view::

    {"framework": "os_ken"|"ryu", "expected": N, "connected": [dpid...],
     "ports_known": n, "synced": bool, "generation": g, "links_down": [[[s,o],[s,o]]...],
     "flows_per_switch": {dpid: n}, "next_hops": {dpid: [next-hop dpid per target
     node id 1..N, 0 = self, -1 = unreachable]}, "recompute_s": last, "changed_flows": n}

``next_hops`` (read back from the installed tables) is in the file only up to
NEXT_HOPS_IN_FILE_MAX satellites (it grows as N^2); ``GET /next_hops`` and
``GET /state`` always carry it.  ``next_hops_in_file`` says which.

At start the app raises its open-file limit to what one connection per switch
needs: os-ken's accept loop dies on EMFILE and closes the listening socket, after
which every switch is refused.
"""

from __future__ import annotations

import json
import os
import sys
import time

if "ryu" in sys.modules or "ryu.base" in sys.modules:  # started by ryu-manager
    FRAMEWORK = "ryu"
else:
    try:
        import os_ken  # noqa: F401
        FRAMEWORK = "os_ken"
    except ImportError:
        FRAMEWORK = "ryu"

if FRAMEWORK == "os_ken":
    from os_ken import cfg as framework_cfg
    from os_ken.base import app_manager
    from os_ken.controller import ofp_event
    from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER,
                                           set_ev_cls)
    from os_ken.lib import hub
    from os_ken.lib.packet import arp, ethernet, ether_types, packet
    from os_ken.ofproto import ofproto_v1_3
else:
    from ryu import cfg as framework_cfg
    from ryu.base import app_manager
    from ryu.controller import ofp_event
    from ryu.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER,
                                        set_ev_cls)
    from ryu.lib import hub
    from ryu.lib.packet import arp, ethernet, ether_types, packet
    from ryu.ofproto import ofproto_v1_3

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from controller import flowtable as F  # noqa: E402
from controller import http_api, ofwire, resync  # noqa: E402
from controller.routing import Router  # noqa: E402
from controller.stations import PRIO_STATION, StationFlows  # noqa: E402
from topo.controller_proc import SETTLE_MAX_S, expect_window_s  # noqa: E402
from topo.ovsdb_ops import CONTROLLER_PROBE_MS  # noqa: E402
from topo.procs import raise_open_file_limit  # noqa: E402
from topo.spec import ConstellationSpec, write_json_atomic, write_link_state  # noqa: E402
from topo import addressing as T  # noqa: E402

PRIO_ARP = 100
COOKIE_ROUTE, COOKIE_LOCAL, COOKIE_ARP = 0x5C01, 0x5C02, 0x5C03
DEBOUNCE_S = 0.02  # port events of one outage arrive together; recompute once
QUIET_S = 0.1  # ...and a step's events trickle in over a while: recompute once none came for this long
# SETTLE_MAX_S: but wait at most this long after the first event for the rest (one
# definition with the announced steps' window: topo.controller_proc)
STARTUP_WAIT_S = 30.0  # longest wait for every switch's port states before routing around outages
STATE_INTERVAL_S = 0.1  # state file rewritten at most this often (it was once per barrier)
NEXT_HOPS_IN_FILE_MAX = 400  # satellites; beyond, next_hops only over HTTP
# The framework's per-connection socket timeout (default 5 s): a send waiting longer for a
# switch to read closes the connection without a word, and an OVS instance applying a
# dynamics step's FlowMods for 400 bridges stalls that long (72x22: switches dropped and
# read back in the middle of a step).  The switches' own inactivity probe bound instead.
SOCKET_TIMEOUT_S = CONTROLLER_PROBE_MS / 1000


class ManhattanRouting(app_manager.RyuApp if FRAMEWORK == "ryu" else app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read by every connection made from now on (the listener starts after the apps).
        framework_cfg.CONF.set_override("socket_timeout", SOCKET_TIMEOUT_S)
        path = os.environ.get("SPACECOMP_CTL_CONFIG")
        cfg = {}
        if path:
            with open(path) as fh:
                cfg = json.load(fh)
        # The run's constellation spec (topo/spec.py), written once by the testbed.
        self.spec = (ConstellationSpec.load(cfg["spec"]) if cfg.get("spec")
                     else ConstellationSpec.for_grid(3, 3))
        self.c = self.spec.constellation
        self.t_s = self.spec.clock.start_s
        # Pinned stations sit in their satellite's /24; placed ones (``stations``) move.
        self.ground = [] if cfg.get("stations") else list(self.spec.ground)
        self.state_path = cfg.get("state_path")
        self.link_state_path = self.spec.link_state_path
        self.sats = self.c.satellites()
        self.datapaths = {}  # dpid -> datapath
        self.ports_known = set()  # dpids whose port states were read
        self.port_down = set()  # (dpid, port) reported down
        self.installed = {}  # dpid -> {(priority, value, mask): FlowEntry} of IPv4 flows
        self.pending_barriers = {}  # dpid -> xid
        self.reading = {}  # dpid -> (xid, [OFPFlowStats]) of a table being read back
        self.fresh = set()  # dpids read back but not yet brought in line
        self.flow_mods = {"add": 0, "modify": 0, "delete": 0}
        self.tables_read = 0
        self.generation = 0
        self.down = frozenset()
        self.router = Router(self.c, self.t_s)
        self.recompute_pending = False
        self.last_port_event = 0.0  # monotonic time of the last port state change
        self.expected_down = None  # links a dynamics step announced it is taking down
        self.expect_until = 0.0    # monotonic deadline of that announcement
        self.last_recompute_s = 0.0
        self.changed_flows = 0
        self.compute_s = 0.0  # time in routing + table compression, cumulative
        self.send_s = 0.0  # time packing and queueing FlowMods, cumulative
        # Every address the plan owns, for ARP answers.
        self.known_ips = {T.GATEWAY_IP} | {T.sat_ip(s) for s in self.sats}
        for k, los, _port in T.ground_ports(self.ground):
            self.known_ips.add(T.ground_ip(k, los))
        self.stations = StationFlows(self, cfg.get("stations") or [], hub.sleep)
        self.known_ips |= self.stations.ips()
        self.flow_stats = {}  # dpid -> {nw_dst: packets} being collected
        self.stats_pending = set()
        self.installing = 0  # reinstalls now sending (they may yield)
        self.state_dirty = False
        self.state_writer = None
        self.last_write = 0.0
        # One socket per switch, the HTTP endpoint, the log and some slack.
        need = self.c.size + 256
        self.fd_limit = raise_open_file_limit(need)[0]
        self.error = None
        if self.fd_limit < need:
            self.error = (f"open-file limit {self.fd_limit} < {need} needed for "
                          f"{self.c.size} switches (raise ulimit -n)")
            self.logger.error(self.error)
        self.http_port = cfg.get("http_port")
        if self.http_port:
            server = hub.StreamServer(("127.0.0.1", int(self.http_port)),
                                      lambda sock, _addr: http_api.handle(self, sock))
            hub.spawn(server.serve_forever)
        self.write_state()

    # --- OpenFlow helpers -------------------------------------------------------------
    _KIND = {0: "add", 1: "modify", 2: "modify", 3: "delete", 4: "delete"}

    def _flow(self, dp, priority, match, actions, cookie, command=None):
        """A FlowMod (counted in ``flow_mods``: every one built is sent)."""
        ofp, parser = dp.ofproto, dp.ofproto_parser
        self.flow_mods[self._KIND[ofp.OFPFC_ADD if command is None else command]] += 1
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        # out_port/out_group filter deletions (0 would match no flow): ANY for all commands.
        return parser.OFPFlowMod(datapath=dp, cookie=cookie, priority=priority, match=match,
                                 instructions=inst, out_port=ofp.OFPP_ANY,
                                 out_group=ofp.OFPG_ANY,
                                 command=ofp.OFPFC_ADD if command is None else command)

    def _table(self, sat) -> dict:
        t0 = time.monotonic()
        table = {(e.priority, e.value, e.mask): e
                 for e in F.switch_table(self.router, sat, self.ground)}
        self.compute_s += time.monotonic() - t0
        return table

    def _send_diff(self, dp, old: dict, new: dict) -> int:
        """Bring ``dp`` from table ``old`` to ``new``: adds and changes first, deletions
        last, so no target is ever left without a matching flow.  The FlowMods are packed
        by :mod:`controller.ofwire` and go out as one buffer (one send-queue slot, however
        many).  FlowMods sent."""
        t0 = time.monotonic()
        msgs = []
        for key, e in new.items():
            if key not in old:
                msgs.append(self._wire(e, ofwire.OFPFC_ADD))
            elif old[key] != e:
                msgs.append(self._wire(e, ofwire.OFPFC_MODIFY_STRICT))
        for key, e in old.items():
            if key not in new:
                msgs.append(self._wire(e, ofwire.OFPFC_DELETE_STRICT))
        if msgs:
            dp.send(b"".join(msgs))
        self.send_s += time.monotonic() - t0
        return len(msgs)

    def _wire(self, e: F.FlowEntry, command: int) -> bytes:
        self.flow_mods[self._KIND[command]] += 1
        cookie = COOKIE_LOCAL if e.priority == F.PRIO_LOCAL else COOKIE_ROUTE
        return ofwire.flow_mod(e, command, cookie)

    def _barrier(self, dp):
        req = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(req)
        self.pending_barriers[dp.id] = req.xid
        dp.send_msg(req)

    # --- switch connect --------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev):
        """A switch connected: read its ports and its whole flow table back; the
        difference is sent once both are in (:meth:`_table_read`), never a wipe."""
        dp = ev.msg.datapath
        if not 1 <= dp.id <= self.c.size:
            self.logger.warning("ignoring unknown datapath %s", dp.id)
            return
        ofp, parser = dp.ofproto, dp.ofproto_parser
        self.datapaths[dp.id] = dp
        self.fresh.discard(dp.id)
        self.pending_barriers.pop(dp.id, None)
        dp.send_msg(parser.OFPPortDescStatsRequest(dp, 0))
        req = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         0, 0, parser.OFPMatch())
        dp.set_xid(req)
        self.reading[dp.id] = (req.xid, [])
        dp.send_msg(req)
        self.mark_dirty()

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def switch_gone(self, ev):
        """A switch's connection closed: it keeps forwarding on its flows (secure fail
        mode); forget the connection until it comes back."""
        dp = ev.datapath
        if dp.id is None or self.datapaths.get(dp.id) is not dp:
            return
        del self.datapaths[dp.id]
        self.reading.pop(dp.id, None)
        self.fresh.discard(dp.id)
        self.pending_barriers.pop(dp.id, None)
        self.mark_dirty()

    def _table_read(self, dp, stats: list) -> None:
        """``dp``'s table is read back: delete what the app does not know, then bring the
        rest in line now (ports of every switch known) or at the coming recompute."""
        ofp, parser = dp.ofproto, dp.ofproto_parser
        sat = self.c.sat_of(dp.id)
        read = resync.classify(stats, self.c, sat, self.stations.ip_to_k(), PRIO_STATION,
                               PRIO_ARP, ofp.OFPP_CONTROLLER)
        self.tables_read += 1
        if not read.arp_ok:  # ADD replaces a wrong one with the same match in place
            dp.send_msg(self._flow(
                dp, PRIO_ARP, parser.OFPMatch(eth_type=0x0806),
                [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, 128)], COOKIE_ARP))
        for st in read.extras:
            self.flow_mods["delete"] += 1
            dp.send_msg(parser.OFPFlowMod(datapath=dp, table_id=st.table_id,
                                          command=ofp.OFPFC_DELETE_STRICT,
                                          priority=st.priority, match=st.match,
                                          out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
        self.installed[dp.id] = read.routes
        self.stations.installed[dp.id] = read.stations
        self.fresh.add(dp.id)
        self.logger.info("switch %s: table read back (%d flows, %d unknown)", dp.id,
                         read.flows, len(read.extras))
        if self._ports_ready():
            self._sync_switch(dp)
        else:
            self._schedule()
        self.mark_dirty()

    def _ports_ready(self) -> bool:
        return len(self.ports_known) == self.c.size and not self.recompute_pending

    def _sync_switch(self, dp) -> int:
        """Bring one read-back switch in line with the current routes; FlowMods sent."""
        sat = self.c.sat_of(dp.id)
        table = self._table(sat)
        sent = self._send_diff(dp, self.installed.get(dp.id, {}), table)
        sent += self.stations.sync(dp, sat)
        self.installed[dp.id] = table
        self.fresh.discard(dp.id)
        self._barrier(dp)
        return sent

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_desc(self, ev):
        dp = ev.msg.datapath
        for p in ev.msg.body:
            self._set_port(dp, p)
        self.ports_known.add(dp.id)
        self._schedule()

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def port_status(self, ev):
        self._set_port(ev.msg.datapath, ev.msg.desc)
        self.last_port_event = time.monotonic()
        self._schedule()

    def _set_port(self, dp, desc):
        ofp = dp.ofproto
        down = bool(desc.state & ofp.OFPPS_LINK_DOWN) or bool(desc.config & ofp.OFPPC_PORT_DOWN)
        if desc.port_no > ofp.OFPP_MAX:
            return
        if down:
            self.port_down.add((dp.id, desc.port_no))
        else:
            self.port_down.discard((dp.id, desc.port_no))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_reply(self, ev):
        dpid = ev.msg.datapath.id
        if self.pending_barriers.get(dpid) == ev.msg.xid:
            del self.pending_barriers[dpid]
            self.mark_dirty()

    # --- outages ----------------------------------------------------------------------------
    def _down_links(self) -> frozenset:
        links = set()
        for dpid, port in self.port_down:
            sat = self.c.sat_of(dpid)
            nbr = T.neighbour_on_port(self.c, sat, port)
            if nbr is not None:
                links.add(frozenset((sat, nbr)))
        return frozenset(links)

    def _schedule(self):
        if not self.recompute_pending:
            self.recompute_pending = True
            hub.spawn(self._recompute_later)

    def _recompute_later(self):
        hub.sleep(DEBOUNCE_S)
        # One step takes hundreds of links down and up; their events reach us over a while
        # (more so while a recompute keeps this process busy).  Routing on each partial set
        # cost a full recompute apiece (eleven for one 30x30 step): wait for a quiet moment.
        first = time.monotonic()
        while (time.monotonic() - self.last_port_event < QUIET_S
               and time.monotonic() - first < SETTLE_MAX_S):
            hub.sleep(QUIET_S / 4)
        # A step that announced its links (POST /expect): route once the ports say so.
        while (self.expected_down is not None and time.monotonic() < self.expect_until
               and self._down_links() != self.expected_down):
            hub.sleep(0.02)
        if self.expected_down is not None and self._down_links() != self.expected_down:
            self.logger.info("announced links not all reported in time: routing %d links down "
                             "(%d announced)", len(self._down_links()), len(self.expected_down))
        self.expected_down = None
        # While switches are still connecting, their port states trickle in one by one:
        # wait for all of them (bounded) instead of recomputing every route per switch.
        deadline = time.monotonic() + STARTUP_WAIT_S
        while len(self.ports_known) < self.c.size and time.monotonic() < deadline:
            hub.sleep(0.1)
        # Never two installs at once: a reinstall yields between switches, and one started
        # meanwhile would interleave with it (both slower, and the older routes could land
        # last on a switch).  Events coming in the meantime join this recompute.
        while self.installing:
            hub.sleep(0.02)
        self.recompute_pending = False
        self.recompute()

    def recompute(self):
        """Re-route with the links now down; modify only flows whose next hop changed."""
        t0 = time.monotonic()
        down = self._down_links()
        changed = 0
        if down != self.down:
            self.down = down
            compute0, send0 = self.compute_s, self.send_s
            self.router = Router(self.c, self.t_s, down)
            changed = self._reinstall()
            self.last_recompute_s = time.monotonic() - t0
            self.logger.info("recompute: %d links down, %d flows changed in %.3f s "
                             "(tables %.3f s, FlowMods %.3f s)", len(down), changed,
                             self.last_recompute_s, self.compute_s - compute0,
                             self.send_s - send0)
        else:  # switches read back while the port states came in
            for dpid in list(self.fresh):
                dp = self.datapaths.get(dpid)
                if dp is not None:
                    changed += self._sync_switch(dp)
            self.changed_flows = changed
        self.mark_dirty()

    def _reinstall(self) -> int:
        """Send every switch the difference between its table and ``self.router``'s.

        Sending yields to other greenlets (the state writer among them): ``installing``
        keeps the view unsynced until every switch has its barrier outstanding."""
        changed = 0
        self.generation += 1
        self.installing += 1
        try:
            for dpid, dp in list(self.datapaths.items()):
                if dpid in self.reading:  # its table is still being read back
                    continue
                table = self._table(self.c.sat_of(dpid))
                sent = self._send_diff(dp, self.installed.get(dpid, {}), table)
                sent += self.stations.sync(dp, self.c.sat_of(dpid))
                self.installed[dpid] = table
                changed += sent
                if sent or dpid in self.fresh:
                    self.fresh.discard(dpid)
                    self._barrier(dp)
                # Let the switches' connections run between switches: barrier replies,
                # port events and echoes are read while the rest is computed.
                hub.sleep(0)
        finally:
            self.installing -= 1
        self.changed_flows = changed
        self.mark_dirty()
        return changed

    # --- ARP -----------------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        pkt = packet.Packet(msg.data)
        req = pkt.get_protocol(arp.arp)
        if req is None or req.opcode != arp.ARP_REQUEST or req.dst_ip not in self.known_ips:
            return
        mac = T.mac_of(req.dst_ip)
        reply = packet.Packet()
        reply.add_protocol(ethernet.ethernet(ethertype=ether_types.ETH_TYPE_ARP,
                                             dst=req.src_mac, src=mac))
        reply.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=mac, src_ip=req.dst_ip,
                                   dst_mac=req.src_mac, dst_ip=req.src_ip))
        reply.serialize()
        ofp, parser = dp.ofproto, dp.ofproto_parser
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
                                        in_port=ofp.OFPP_CONTROLLER,
                                        actions=[parser.OFPActionOutput(msg.match["in_port"])],
                                        data=reply.data))

    def expect_links_down(self, links) -> int:
        """A dynamics step is about to bring its links to a state where exactly ``links``
        (pairs of ``[sat, orb]``) are down: route once the ports report that, not on every
        partial set on the way.  The wait is bounded by :func:`expect_window_s` of the
        links that change (the step's ``ip -batch`` and OVS's port events take about that
        long).  Returns how many links are expected down."""
        self.expected_down = frozenset(frozenset(tuple(int(v) for v in sat) for sat in link)
                                       for link in links)
        changing = len(self.expected_down ^ self._down_links())
        self.expect_until = time.monotonic() + expect_window_s(changing)
        return len(self.expected_down)

    def set_time(self, t_s: float) -> int:
        """Route for constellation time ``t_s`` (the rule defers plane changes to where
        cross-plane links are shortest, which moves with the orbit)."""
        self.t_s = t_s
        self.router = Router(self.c, self.t_s, self.down)
        return self._reinstall()

    def collect_flow_stats(self, timeout_s: float = 30.0) -> dict:
        """Packet counters of every IPv4 flow of every switch: {dpid: {nw_dst: n}}."""
        self.flow_stats = {}
        self.stats_pending = set(self.datapaths)
        for dp in self.datapaths.values():
            parser = dp.ofproto_parser
            dp.send_msg(parser.OFPFlowStatsRequest(dp, 0, 0, dp.ofproto.OFPP_ANY,
                                                   dp.ofproto.OFPG_ANY, 0, 0,
                                                   parser.OFPMatch(eth_type=0x0800)))
        deadline = time.monotonic() + timeout_s
        while self.stats_pending and time.monotonic() < deadline:
            hub.sleep(0.01)
        return {str(d): v for d, v in self.flow_stats.items()}

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def flow_stats_reply(self, ev):
        dpid = ev.msg.datapath.id
        reading = self.reading.get(dpid)
        if reading is not None and reading[0] == ev.msg.xid:  # a table read back
            reading[1].extend(ev.msg.body)
            if not ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
                del self.reading[dpid]
                self._table_read(ev.msg.datapath, reading[1])
            return
        table = self.flow_stats.setdefault(dpid, {})
        for st in ev.msg.body:
            dst = st.match.get("ipv4_dst")
            if dst is None:
                continue
            if isinstance(dst, tuple):  # (addr, mask): written as ovs-ofctl writes it
                value, mask = F.ip_int(dst[0]), F.ip_int(dst[1])
                dst = F.FlowEntry(0, value & mask, mask, 0).match
            table[dst] = st.packet_count
        if not ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            self.stats_pending.discard(dpid)

    # --- the view for tests and experiments --------------------------------------------------
    def next_hops(self) -> dict:
        """``{dpid: [next-hop node id per target node id 1..N]}`` read back from the
        installed tables (0 = self, -1 = dropped)."""
        addrs = F.target_addrs(self.c)
        out = {}
        for d, table in self.installed.items():
            sat = self.c.sat_of(d)
            ports = F.ports_of(list(table.values()), addrs)
            out[str(d)] = F.next_hop_ids(self.c, sat, ports).tolist()
        return out

    def view(self, next_hops: bool | None = None) -> dict:
        """The controller's state; ``next_hops`` None: only up to NEXT_HOPS_IN_FILE_MAX."""
        if next_hops is None:
            next_hops = self.c.size <= NEXT_HOPS_IN_FILE_MAX
        synced = (len(self.datapaths) == self.c.size and not self.pending_barriers
                  and len(self.ports_known) == self.c.size and not self.recompute_pending
                  and not self.installing and not self.reading and not self.fresh)
        view = {
            "framework": FRAMEWORK,
            "pid": os.getpid(),
            "time": time.time(),
            "expected": self.c.size,
            "connected": sorted(self.datapaths),
            "ports_known": len(self.ports_known),
            "synced": synced,
            "generation": self.generation,
            "t_s": self.t_s,
            "links_down": sorted([sorted(list(map(list, link))) for link in self.down]),
            "stations": self.stations.view(),
            "flows_per_switch": {str(d): len(t) + 1 + len(self.stations.by_k)
                                 for d, t in self.installed.items()},
            "recompute_s": self.last_recompute_s,
            "changed_flows": self.changed_flows,
            "flow_mods": dict(self.flow_mods),
            "tables_read": self.tables_read,
            "http_port": self.http_port,
            "recompute_pending": self.recompute_pending,
            "fd_limit": self.fd_limit,
            # What the framework's connections use (set in __init__; default 5 s).
            "socket_timeout_s": framework_cfg.CONF.socket_timeout,
            "error": self.error,
            "next_hops_in_file": next_hops,
        }
        if next_hops:
            view["next_hops"] = self.next_hops()
        return view

    def mark_dirty(self):
        """Schedule a state write: at most one per STATE_INTERVAL_S, however many events."""
        self.state_dirty = True
        if self.state_writer is None and self.state_path:
            self.state_writer = hub.spawn(self._write_later)

    def _write_later(self):
        try:
            while self.state_dirty:
                wait = self.last_write + STATE_INTERVAL_S - time.monotonic()
                if wait > 0:
                    hub.sleep(wait)
                self.state_dirty = False
                self.write_state()
                self.last_write = time.monotonic()
        finally:
            self.state_writer = None

    def write_state(self):
        # Small: what a coordinator plans a job on; only once every switch's ports are
        # known (a restarted controller must not announce "no link down" meanwhile).
        if self.link_state_path and len(self.ports_known) == self.c.size:
            write_link_state(self.link_state_path, self.t_s, self.down, self.generation)
        if not self.state_path:
            return
        write_json_atomic(self.state_path, self.view())
