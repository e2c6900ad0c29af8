"""OpenFlow 1.3 FlowMods for :class:`controller.flowtable.FlowEntry`, packed straight to bytes.

The controller changes tens of thousands of route flows in one dynamics step (72x22:
about 57 000).  Building each through the framework's message classes (an ``OFPMatch``,
an ``OFPFlowMod``, ``serialize``) costs about 70 microseconds of the single controller
thread apiece, and handing each to the datapath's 16-deep send queue blocks the loop
whenever a switch reads slowly.  Here a route flow is packed with :mod:`struct` (the same
bytes the framework writes: ``tests/test_ofwire.py`` compares them) and a switch's whole
difference goes out as one buffer.

Pure: struct only, no I/O.
"""

from __future__ import annotations

import struct

from controller.flowtable import DROP, FlowEntry

OFP_VERSION = 0x04
OFPT_FLOW_MOD = 14
OFPFC_ADD, OFPFC_MODIFY_STRICT, OFPFC_DELETE_STRICT = 0, 2, 4
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFP_NO_BUFFER = 0xFFFFFFFF
OFPIT_APPLY_ACTIONS = 4
OFPAT_OUTPUT, OFPAT_SET_FIELD = 0, 25
OFPCML_MAX = 0xFFE5  # max_len of an output action (the framework's default)
_ALL = 0xFFFFFFFF

_HEADER = struct.Struct("!BBHI")
# cookie, cookie_mask, table_id, command, idle, hard, priority, buffer_id, out_port,
# out_group, flags, pad
_FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")
# OXM: class 0x8000 (OpenFlow basic); field << 1 | hasmask; length
_OXM_ETH_TYPE = struct.pack("!HBBH", 0x8000, 5 << 1, 2, 0x0800)
_OXM_IPV4_DST = struct.Struct("!HBBI")
_OXM_IPV4_DST_MASKED = struct.Struct("!HBBII")
_OXM_ETH_DST = struct.Struct("!HBB6s")
_ACTION_OUTPUT = struct.Struct("!HHIH6x")


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


def _match(e: FlowEntry) -> bytes:
    """ofp_match (type OXM) on eth_type IPv4 and ipv4_dst, padded to 8 bytes."""
    if e.mask == _ALL:
        oxm = _OXM_ETH_TYPE + _OXM_IPV4_DST.pack(0x8000, 12 << 1, 4, e.value)
    else:
        oxm = _OXM_ETH_TYPE + _OXM_IPV4_DST_MASKED.pack(0x8000, 12 << 1 | 1, 8,
                                                       e.value & e.mask, e.mask)
    length = 4 + len(oxm)
    return struct.pack("!HH", 1, length) + oxm + bytes(_pad8(length) - length)


def _instructions(e: FlowEntry) -> bytes:
    """One apply-actions instruction: set eth_dst (when given), output (unless a drop)."""
    actions = b""
    if e.eth_dst:
        mac = bytes.fromhex(e.eth_dst.replace(":", ""))
        field = _OXM_ETH_DST.pack(0x8000, 3 << 1, 6, mac)
        length = _pad8(4 + len(field))
        actions += struct.pack("!HH", OFPAT_SET_FIELD, length) + field
        actions += bytes(length - 4 - len(field))
    if e.port != DROP:
        actions += _ACTION_OUTPUT.pack(OFPAT_OUTPUT, 16, e.port, OFPCML_MAX)
    return struct.pack("!HH4x", OFPIT_APPLY_ACTIONS, 8 + len(actions)) + actions


def flow_mod(e: FlowEntry, command: int = OFPFC_ADD, cookie: int = 0, xid: int = 0) -> bytes:
    """One OFPT_FLOW_MOD installing (``OFPFC_ADD``), changing (``OFPFC_MODIFY_STRICT``) or
    removing (``OFPFC_DELETE_STRICT``) route flow ``e`` in table 0.

    cookie: the flow's cookie; xid: the message's transaction id (0: none to match)."""
    if command not in (OFPFC_ADD, OFPFC_MODIFY_STRICT, OFPFC_DELETE_STRICT):
        raise ValueError(f"flow_mod: unsupported command {command}")
    body = _FLOW_MOD.pack(cookie, 0, 0, command, 0, 0, e.priority, OFP_NO_BUFFER,
                          OFPP_ANY, OFPG_ANY, 0) + _match(e) + _instructions(e)
    return _HEADER.pack(OFP_VERSION, OFPT_FLOW_MOD, _HEADER.size + len(body), xid) + body
