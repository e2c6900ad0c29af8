"""Several servers: the servers list, plane placement, cross-server links (pure core)."""

import pytest

from topo.addressing import isl_ports
from topo.config import ConfigError, from_dict
from topo.constellation import Constellation
from topo.servers import (PlacementError, block_placement, boundary_links,
                          explicit_placement, parse_servers, server_of_intf, tunnels)


def test_local_n_is_this_machine_plus_namespaces():
    s = parse_servers("local:3")
    assert [x.dest for x in s] == ["local", "netns", "netns"]
    assert [x.index for x in s] == [0, 1, 2]
    assert parse_servers(None)[0].is_local and len(parse_servers(None)) == 1


def test_server_list_entries():
    s = parse_servers(["local", "root@10.0.0.2", {"ssh": "sat3", "address": "10.1.0.3"}])
    assert [x.dest for x in s] == ["local", "root@10.0.0.2", "sat3"]
    assert s[2].address == "10.1.0.3" and s[1].address is None
    assert [x.dest for x in parse_servers("local, root@h2")] == ["local", "root@h2"]


@pytest.mark.parametrize("bad", [["root@h1", "local"], ["local", "local"], [], "local:0",
                                 ["local", "a b"], ["local", {"ssh": "h", "port": 2}],
                                 ["local", {"ssh": "h", "address": "300.1.1.1"}], 5,
                                 ["local", "h;rm"]])
def test_bad_server_lists_are_refused(bad):
    with pytest.raises(PlacementError):
        parse_servers(bad)


def test_blocks_are_contiguous_and_even():
    p = block_placement(7, 3)
    assert p == {1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 2, 7: 2}
    with pytest.raises(PlacementError):
        block_placement(3, 4)


@pytest.mark.parametrize("planes,sats,n", [(6, 6, 2), (7, 5, 3), (10, 4, 4), (6, 6, 1)])
def test_only_boundary_cross_plane_links_cross(planes, sats, n):
    c = Constellation(planes=planes, sats_per_plane=sats)
    p = block_placement(planes, n)
    tuns = tunnels(c, p)
    # Every crossing link is cross-plane between adjacent blocks: M links per boundary,
    # n boundaries on the torus (none with one server).
    assert len(tuns) == (0 if n == 1 else n * sats)
    crossing = {frozenset((a, b)) for a, _pa, b, _pb, _k in isl_ports(c) if p[a[1]] != p[b[1]]}
    assert {frozenset((t.a, t.b)) for t in tuns} == crossing
    assert all(t.a[0] == t.b[0] for t in tuns)  # same sat index: cross-plane
    assert len({t.vni for t in tuns}) == len(tuns)
    if n == 2:
        assert boundary_links(tuns) == {(0, 1): 2 * sats}


def test_explicit_placement():
    p = explicit_placement({0: [1, 3, 5], "1": [2, 4, 6]}, 6, 2)
    assert p == {1: 0, 3: 0, 5: 0, 2: 1, 4: 1, 6: 1}
    # alternating planes: every cross-plane link crosses
    assert len(tunnels(Constellation(planes=6, sats_per_plane=4), p)) == 24
    for bad in ({0: [1, 2, 3], 1: [3, 4, 5, 6]}, {0: [1, 2, 3], 1: [4, 5]}, {0: [1, 2, 3, 4, 5, 6]},
                {2: [1]}, {0: [7]}, [1, 2], {0: []}):
        with pytest.raises(PlacementError):
            explicit_placement(bad, 6, 2)


def test_server_of_intf():
    p = block_placement(6, 2)
    assert server_of_intf("s2_4-eth5", p) == 1 and server_of_intf("s2_1-eth1", p) == 0
    assert server_of_intf("g1-up", p) is None


def test_config_keys():
    cfg = from_dict({"grid": "6x4", "servers": "local:2"})
    assert cfg.plane_servers() == {1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1}
    cfg = from_dict({"grid": "6x4", "servers": ["local", "root@h2"],
                     "placement": {0: [1, 2], 1: [3, 4, 5, 6]}})
    assert cfg.plane_servers()[3] == 1
    assert from_dict({}).plane_servers() == {1: 0, 2: 0, 3: 0}
    for bad in ({"servers": "local:4"}, {"placement": {0: [1, 2, 3]}},
                {"servers": "local:2", "placement": {0: [1, 2, 3]}}):
        with pytest.raises(ConfigError):
            from_dict(bad)
