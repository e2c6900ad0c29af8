"""Compressed flow tables forward exactly like Router.next_hop, for every pair, links down too."""

import ipaddress
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import flowtable as F
from controller.routing import NoRoute, PlaneFirstRouter, Router
from topo.addressing import HOST_PORT, ground_ip, ground_ports, port_towards, sat_ip
from topo.constellation import Constellation

GRIDS = [(3, 3), (4, 7), (5, 5), (8, 6), (11, 11), (20, 20)]


def brute_lookup(table, ip: str):
    """Independent OpenFlow lookup: the highest-priority entry whose masked match holds;
    two matching entries of equal priority must agree (else OpenFlow is ambiguous)."""
    addr = int(ipaddress.IPv4Address(ip))
    hits = [e for e in table if addr & e.mask == e.value]
    if not hits:
        return None
    top = max(e.priority for e in hits)
    best = {(e.port, e.eth_dst) for e in hits if e.priority == top}
    assert len(best) == 1, f"ambiguous entries for {ip}: {hits}"
    return next(e for e in hits if e.priority == top)


def reference_port(router, a, b):
    """The port Router.next_hop sends a packet from ``a`` toward ``b`` (0: dropped)."""
    if a == b:
        return HOST_PORT
    try:
        return port_towards(router.constellation, a, router.next_hop(a, b))
    except NoRoute:
        return F.DROP


def random_down(c, k, seed):
    isls = [frozenset((a, b)) for a, b, _kind in c.isls()]
    return frozenset(random.Random(seed).sample(isls, min(k, len(isls))))


def assert_forwards_like_router(router, ground=((1, 1),), brute=True):
    c = router.constellation
    addrs = F.target_addrs(c)
    for a in c.satellites():
        table = F.switch_table(router, a, list(ground))
        ports = F.ports_of(table, addrs)
        for b in c.satellites():
            want = reference_port(router, a, b)
            assert ports[c.node_id(b) - 1] == want, (a, b)
            if brute:  # another address of b's /24 and the independent lookup agree
                e = brute_lookup(table, f"{sat_ip(b)[:-2]}.77")
                got = F.DROP if e is None else e.port
                assert got == (F.DROP if a == b else want), (a, b)
        for k, los, port in ground_ports(list(ground)):
            e = brute_lookup(table, ground_ip(k, los))
            if los == a:
                assert e.port == port and e.eth_dst is not None
            else:
                assert (F.DROP if e is None else e.port) == reference_port(router, a, los)


@pytest.mark.parametrize("grid", GRIDS)
def test_every_pair_without_outages(grid):
    c = Constellation(*grid)
    assert_forwards_like_router(Router(c, 0.0), brute=c.size <= 121)


@pytest.mark.parametrize("grid", GRIDS[:5])
@pytest.mark.parametrize("k", [1, 5, 30])
def test_every_pair_with_random_links_down(grid, k):
    c = Constellation(*grid)
    assert_forwards_like_router(Router(c, 0.0, random_down(c, k, seed=k)))


def test_crossover_outages_and_the_seam():
    c = Constellation(12, 10, outage_lat_deg=60.0, seam=False)
    router = Router(c, 300.0, c.down_links(300.0))
    assert router.down
    assert_forwards_like_router(router, ground=((1, 1), (4, 7), (4, 7)))


def test_plane_first_rule_too():
    c = Constellation(7, 6)
    assert_forwards_like_router(PlaneFirstRouter(c, 0.0, random_down(c, 6, seed=3)))


@settings(max_examples=40, deadline=None)
@given(planes=st.integers(3, 9), sats=st.integers(3, 9), k=st.integers(0, 40),
       seed=st.integers(0, 10_000), t_s=st.floats(0, 6000))
def test_property_compressed_equals_next_hop(planes, sats, k, seed, t_s):
    c = Constellation(planes, sats)
    assert_forwards_like_router(Router(c, t_s, random_down(c, k, seed)), brute=False)


@pytest.mark.parametrize("grid", [(3, 3), (20, 20), (72, 22)])
def test_addresses_outside_the_grid_are_dropped_at_once(grid):
    c = Constellation(*grid)
    table = F.switch_table(Router(c), (2, 2))
    rnd = random.Random(1)
    for _ in range(300):
        o, s = rnd.randrange(0, 256), rnd.randrange(0, 256)
        if 1 <= o <= c.planes and 1 <= s <= c.sats_per_plane:
            continue
        e = brute_lookup(table, f"10.{o}.{s}.{rnd.randrange(256)}")
        assert e is None or e.port == F.DROP, (o, s, e)
    assert brute_lookup(table, "11.2.2.1") is None  # nothing outside 10/8 matches


@pytest.mark.parametrize("grid", [(20, 20), (25, 25), (30, 30), (40, 40), (72, 22)])
def test_tables_grow_with_planes_plus_satellites(grid):
    c = Constellation(*grid)
    router = Router(c)
    sizes = [len(F.switch_table(router, a)) for a in c.satellites()]
    per_destination = c.size  # one flow per destination satellite (+ local)
    print(f"{c.planes}x{c.sats_per_plane}: flows per switch max {max(sizes)} mean "
          f"{np.mean(sizes):.1f} vs {per_destination} per destination")
    assert max(sizes) <= c.planes + c.sats_per_plane + 20


def test_placed_station_flows_outrank_the_outside_drops():
    # Placed stations live at 10.0.0.<100+k>, outside every satellite's /24: their /32
    # flows (controller.stations) must win over the drops for off-grid addresses.
    from controller.stations import PRIO_STATION
    from topo.addressing import station_ip
    c = Constellation(5, 5)
    table = F.switch_table(Router(c), (2, 2))
    station = F.FlowEntry(PRIO_STATION, F.ip_int(station_ip(1)), 0xFFFFFFFF, 3)
    assert brute_lookup(table, station_ip(1)).port == F.DROP  # off-grid without its flow
    assert brute_lookup(table + [station], station_ip(1)) == station
    assert all(e.priority != PRIO_STATION for e in table)


def test_match_strings_round_trip_as_ovs_writes_them():
    for e, text in [(F.FlowEntry(220, 0x0A030000, 0xFFFF0000, 4), "10.3.0.0/16"),
                    (F.FlowEntry(230, 0x0A000500, 0xFF00FF00, 2), "10.0.5.0/255.0.255.0"),
                    (F.FlowEntry(300, 0x0A010101, 0xFFFFFFFF, 1, "02:00:0a:01:01:01"),
                     "10.1.1.1")]:
        assert e.match == text
        assert F.parse_match(text) == (e.value, e.mask)
