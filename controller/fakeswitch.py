"""Many fake OpenFlow 1.3 switches in one asyncio process: load the controller without a network.

Each :class:`FakeSwitch` connects to the controller, says HELLO, answers
FEATURES_REQUEST (its datapath id), PORT_DESC (ports 1..5 plus ground ports, up
unless listed down), BARRIER and ECHO requests, and keeps the flow table the
controller programs (ADD, MODIFY_STRICT, DELETE, DELETE_STRICT; FlowMods decoded with
os-ken's own parser; ``flow_mods_by_command`` and ``delete_all`` count them).  FLOW stats
requests are answered from that table (matches and actions, zero counters), so a
controller can read a reconnecting switch's table back.  The table outlives a
connection: run the same switches again (:func:`run`) and they reconnect with the flows
they had, as an OVS bridge in ``fail_mode=secure`` does.  :func:`run` connects ``N`` of them at once and runs a test script
meanwhile; :meth:`FakeSwitch.table` gives the IPv4 flows as
:class:`controller.flowtable.FlowEntry`, so a test can check every installed route.

Used by ``tests/test_controller_scale.py``; nothing here needs root or Mininet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
import time
from dataclasses import dataclass, field

from os_ken.ofproto import ofproto_parser, ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

from controller.flowtable import DROP, FlowEntry

HEADER = struct.Struct("!BBHI")
_PORT = struct.Struct(ofp.OFP_PORT_PACK_STR)


class _Datapath:
    """The minimum os-ken's message parsers need of a datapath."""

    ofproto = ofp
    ofproto_parser = parser
    id = None


def _msg(msg_type: int, xid: int, body: bytes = b"") -> bytes:
    return HEADER.pack(ofp.OFP_VERSION, msg_type, HEADER.size + len(body), xid) + body


def _port(no: int, name: str, down: bool) -> bytes:
    mac = bytes([2, 0xfe, (no >> 8) & 0xFF, no & 0xFF, 0, 1])
    state = ofp.OFPPS_LINK_DOWN if down else ofp.OFPPS_LIVE
    return _PORT.pack(no, mac, name.encode()[:15], 0, state, 0, 0, 0, 0, 10_000_000, 10_000_000)


@dataclass
class FakeSwitch:
    """One fake switch.  ``ports``: port numbers; ``down``: those reported down."""

    dpid: int
    ports: tuple = (1, 2, 3, 4, 5)
    down: set = field(default_factory=set)
    flows: dict = field(default_factory=dict)  # (priority, eth_type, value, mask) -> FlowEntry
    flow_mods: int = 0
    flow_mods_by_command: dict = field(default_factory=dict)  # OFPFC_* -> count
    delete_all: int = 0  # DELETEs with an empty match (a wipe)
    barriers: int = 0
    features_sent: bool = False
    errors: list = field(default_factory=list)
    writer: object = field(default=None, repr=False)  # the connection, once connected

    # --- the table --------------------------------------------------------------------------
    def apply(self, mod) -> None:
        """Apply one decoded OFPFlowMod to the table."""
        self.flow_mods += 1
        self.flow_mods_by_command[mod.command] = self.flow_mods_by_command.get(mod.command, 0) + 1
        if mod.command == ofp.OFPFC_DELETE and not mod.match.to_jsondict()["OFPMatch"]["oxm_fields"]:
            self.delete_all += 1
            self.flows.clear()
            return
        eth_type = mod.match.get("eth_type", 0)
        dst = mod.match.get("ipv4_dst")
        if dst is None:
            value, mask = 0, 0
        elif isinstance(dst, tuple):
            value, mask = int(ipaddress.IPv4Address(dst[0])), int(ipaddress.IPv4Address(dst[1]))
        else:
            value, mask = int(ipaddress.IPv4Address(dst)), 0xFFFFFFFF
        key = (mod.priority, eth_type, value & mask, mask)
        if mod.command == ofp.OFPFC_DELETE_STRICT:
            # OpenFlow 1.3: out_port other than ANY deletes only flows that output there.
            flow = self.flows.get(key)
            if flow is not None and mod.out_port in (ofp.OFPP_ANY, flow[1].port):
                del self.flows[key]
            elif flow is not None:
                self.errors.append(f"DELETE_STRICT with out_port {mod.out_port} kept {key}")
            return
        if mod.command not in (ofp.OFPFC_ADD, ofp.OFPFC_MODIFY_STRICT):
            self.errors.append(f"unsupported FlowMod command {mod.command}")
            return
        out, eth_dst = DROP, None
        for inst in mod.instructions:
            for act in getattr(inst, "actions", []):
                if isinstance(act, parser.OFPActionOutput):
                    out = act.port
                elif isinstance(act, parser.OFPActionSetField) and act.key == "eth_dst":
                    eth_dst = act.value
        if mod.command == ofp.OFPFC_MODIFY_STRICT and key not in self.flows:
            self.errors.append(f"MODIFY_STRICT of a missing flow {key}")
        self.flows[key] = (eth_type, FlowEntry(mod.priority, value & mask, mask, out, eth_dst))

    def table(self) -> list[FlowEntry]:
        """The IPv4 flows now installed."""
        return [e for eth_type, e in self.flows.values() if eth_type == 0x0800]

    # --- the protocol -----------------------------------------------------------------------
    def _port_desc(self, xid: int) -> bytes:
        body = struct.pack("!HH4x", ofp.OFPMP_PORT_DESC, 0)
        body += b"".join(_port(p, f"p{self.dpid}-{p}", p in self.down) for p in self.ports)
        body += _port(ofp.OFPP_LOCAL, f"br{self.dpid}", False)
        return _msg(ofp.OFPT_MULTIPART_REPLY, xid, body)

    def _flow_stats(self, xid: int) -> bytes:
        stats = []
        for eth_type, f in self.flows.values():
            fields = [] if eth_type == 0 else [("eth_type", eth_type)]
            if f.mask == 0xFFFFFFFF:
                fields.append(("ipv4_dst", str(ipaddress.IPv4Address(f.value))))
            elif f.mask:
                fields.append(("ipv4_dst", (str(ipaddress.IPv4Address(f.value)),
                                            str(ipaddress.IPv4Address(f.mask)))))
            actions = [] if f.port == DROP else [parser.OFPActionOutput(f.port, 128)]
            if f.eth_dst:
                actions.insert(0, parser.OFPActionSetField(eth_dst=f.eth_dst))
            inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
            # OFPFlowStats has a parser only: the fixed part, the match, the instructions.
            buf = bytearray(ofp.OFP_FLOW_STATS_0_SIZE)
            parser.OFPMatch(_ordered_fields=fields).serialize(buf, len(buf))
            for i in inst:
                i.serialize(buf, len(buf))
            struct.pack_into(ofp.OFP_FLOW_STATS_0_PACK_STR, buf, 0, len(buf), 0, 0, 0,
                             f.priority, 0, 0, 0, 0, 0, 0)
            stats.append(bytes(buf))
        return _msg(ofp.OFPT_MULTIPART_REPLY, xid,
                    struct.pack("!HH4x", ofp.OFPMP_FLOW, 0) + b"".join(stats))

    def port_status(self, port: int, down: bool) -> None:
        """Announce ``port`` going down or up (OFPT_PORT_STATUS)."""
        (self.down.add if down else self.down.discard)(port)
        body = struct.pack("!B7x", ofp.OFPPR_MODIFY) + _port(port, f"p{self.dpid}-{port}", down)
        self.writer.write(_msg(ofp.OFPT_PORT_STATUS, 0, body))

    def handle(self, msg_type: int, xid: int, buf: bytes) -> bytes:
        """Handle one message from the controller; the reply bytes (may be empty)."""
        if msg_type == ofp.OFPT_FEATURES_REQUEST:
            self.features_sent = True
            return _msg(ofp.OFPT_FEATURES_REPLY, xid,
                        struct.pack("!QIBB2xII", self.dpid, 0, 254, 0, 0x4F, 0))
        if msg_type == ofp.OFPT_ECHO_REQUEST:
            return _msg(ofp.OFPT_ECHO_REPLY, xid, buf[HEADER.size:])
        if msg_type == ofp.OFPT_BARRIER_REQUEST:
            self.barriers += 1
            return _msg(ofp.OFPT_BARRIER_REPLY, xid)
        if msg_type == ofp.OFPT_FLOW_MOD:
            self.apply(ofproto_parser.msg(_Datapath, ofp.OFP_VERSION, msg_type, len(buf), xid,
                                          buf))
            return b""
        if msg_type == ofp.OFPT_MULTIPART_REQUEST:
            (mp_type,) = struct.unpack_from("!H", buf, HEADER.size)
            if mp_type == ofp.OFPMP_PORT_DESC:
                return self._port_desc(xid)
            if mp_type == ofp.OFPMP_FLOW:
                return self._flow_stats(xid)
        return b""


async def _serve(sw: FakeSwitch, host: str, port: int, connect_by: float,
                 connected: list) -> None:
    """Connect (retrying until ``connect_by``, monotonic) and speak OpenFlow until closed."""
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            break
        except OSError as exc:
            if time.monotonic() > connect_by:
                sw.errors.append(f"connect: {exc}")
                return
            await asyncio.sleep(0.2)
    sw.writer = writer
    connected.append(sw.dpid)
    writer.write(_msg(ofp.OFPT_HELLO, 1))
    try:
        while True:
            head = await reader.readexactly(HEADER.size)
            _v, msg_type, length, xid = HEADER.unpack(head)
            body = await reader.readexactly(length - HEADER.size) if length > HEADER.size else b""
            reply = sw.handle(msg_type, xid, head + body)
            if reply:
                writer.write(reply)
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def run(switches: list[FakeSwitch], port: int, script, timeout_s: float,
              host: str = "127.0.0.1"):
    """Connect every switch to the controller at ``host:port`` (all at once), run the
    coroutine ``script()`` meanwhile and return its result; the switches disconnect
    afterwards.  TimeoutError when the script takes longer than ``timeout_s``."""
    t0 = time.monotonic()
    connected: list = []
    tasks = [asyncio.create_task(_serve(sw, host, port, t0 + timeout_s, connected))
             for sw in switches]
    try:
        return await asyncio.wait_for(script(), timeout_s)
    except asyncio.TimeoutError:
        raise TimeoutError(f"not done within {timeout_s:.0f} s ({len(connected)} of "
                           f"{len(switches)} switches connected)") from None
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
