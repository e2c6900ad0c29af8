"""controller.ofwire packs route FlowMods byte for byte as os-ken's message classes do."""

import pytest

from controller import flowtable as F
from controller import ofwire
from topo.constellation import Constellation

ofp = pytest.importorskip("os_ken.ofproto.ofproto_v1_3")
parser = pytest.importorskip("os_ken.ofproto.ofproto_v1_3_parser")


class _Dp:
    ofproto = ofp
    ofproto_parser = parser
    id = 1


def _framework_bytes(e: F.FlowEntry, command: int, cookie: int) -> bytes:
    """What controller/app.py sent before: the framework's classes, serialized."""
    dst = e.value_str if e.mask == 0xFFFFFFFF else (e.value_str, e.mask_str)
    actions = [] if e.port == F.DROP else [parser.OFPActionOutput(e.port)]
    if e.eth_dst:
        actions.insert(0, parser.OFPActionSetField(eth_dst=e.eth_dst))
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
    msg = parser.OFPFlowMod(datapath=_Dp, cookie=cookie, priority=e.priority,
                            match=parser.OFPMatch(eth_type=0x0800, ipv4_dst=dst),
                            instructions=inst, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                            command=command)
    msg.set_xid(7)
    msg.serialize()
    return bytes(msg.buf)


def _entries():
    c = Constellation(6, 5)
    from controller.routing import Router
    r = Router(c, 0.0, frozenset({frozenset(((1, 1), (1, 2))), frozenset(((3, 4), (4, 4)))}))
    out = []
    for sat in [(1, 1), (3, 4), (5, 6)]:
        out += F.switch_table(r, sat, [(1, 1)])
    return out


@pytest.mark.parametrize("command", [ofp.OFPFC_ADD, ofp.OFPFC_MODIFY_STRICT,
                                     ofp.OFPFC_DELETE_STRICT])
def test_every_kind_of_entry_packs_like_the_framework(command):
    entries = _entries()
    kinds = {(e.mask == 0xFFFFFFFF, e.port == F.DROP, bool(e.eth_dst)) for e in entries}
    assert len(kinds) >= 3  # /32 deliveries with a MAC rewrite, masked routes, drops
    for e in entries:
        got = ofwire.flow_mod(e, command, cookie=0x5C01, xid=7)
        assert got == _framework_bytes(e, command, 0x5C01), e


def test_the_framework_parses_what_is_packed_back_to_the_entry():
    from os_ken.ofproto import ofproto_parser
    for e in _entries():
        buf = ofwire.flow_mod(e, ofwire.OFPFC_MODIFY_STRICT, xid=3)
        msg = ofproto_parser.msg(_Dp, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, len(buf), 3, buf)
        assert msg.priority == e.priority and msg.command == ofp.OFPFC_MODIFY_STRICT
        dst = msg.match["ipv4_dst"]
        assert (F.parse_match(dst if isinstance(dst, str) else "/".join(dst))
                == (e.value, e.mask))


def test_an_unknown_command_is_refused():
    with pytest.raises(ValueError):
        ofwire.flow_mod(_entries()[0], 1)
