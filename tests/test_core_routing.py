"""Manhattan routing (the reference's rule) and its outage-aware variant."""

import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.routing import EAST, NORTH, SOUTH, WEST, NoRoute, PlaneFirstRouter, Router, ring_step
from topo.constellation import Constellation

GRIDS = [(3, 3), (5, 5), (7, 7), (11, 11), (12, 8)]


def bfs_hops(constellation, down, target):
    """Independent breadth-first hop distances to ``target`` over the links that are up."""
    dist = {target: 0}
    queue = deque([target])
    while queue:
        cur = queue.popleft()
        for n in constellation.neighbours(cur):
            if frozenset((cur, n)) not in down and n not in dist:
                dist[n] = dist[cur] + 1
                queue.append(n)
    return dist


def assert_valid_path(constellation, down, path):
    assert len(set(path)) == len(path), f"loop in {path}"
    for a, b in zip(path, path[1:]):
        assert b in constellation.neighbours(a), f"{a}->{b} is not an ISL"
        assert frozenset((a, b)) not in down, f"{a}->{b} is down"


@pytest.mark.parametrize("grid", GRIDS)
def test_every_pair_routes_minimally_without_loops(grid):
    c = Constellation(*grid)
    router = Router(c)
    sats = c.satellites()
    hop_matrix = router.hop_matrix(sats, sats)
    length_matrix = router.length_matrix(sats, sats)
    for i, a in enumerate(sats):
        expected = bfs_hops(c, frozenset(), a)
        for j, b in enumerate(sats):
            route = router.route(a, b)
            assert route.path[0] == a and route.path[-1] == b
            assert_valid_path(c, frozenset(), route.path)
            assert route.hops == expected[b] == c.hops(a, b) == hop_matrix[i, j]
            assert route.length_m == pytest.approx(length_matrix[i, j])


def test_hops_to_self_is_zero():
    c = Constellation(5, 5)
    assert Router(c).route((2, 3), (2, 3)).hops == 0
    assert c.hops((2, 3), (2, 3)) == 0


def test_ring_ties_go_toward_increasing_index():
    assert ring_step(1, 3, 4) == 1     # 2 either way: EAST / SOUTH
    assert ring_step(3, 1, 4) == 1
    assert ring_step(1, 4, 5) == -1
    assert ring_step(2, 2, 5) == 0


def test_reference_rule_defers_plane_changes_to_short_links():
    # 11 sats: theta = 2*pi*s/11; cross-plane links are shortest at s=3 (theta ~ 98 deg).
    c = Constellation(11, 11)
    router = Router(c)
    dn = router.cross_plane_m
    assert min(range(11), key=lambda k: dn[k]) + 1 == 3
    # From sat 1 to sat 5 in another plane: move in-plane to where the planes are
    # closest before changing planes, never at the long links of sat 1.
    route = router.route((1, 1), (5, 4))
    changes = [a for a, b in zip(route.path, route.path[1:]) if a[1] != b[1]]
    assert {s for s, _ in changes} == {4}, route.path  # the rule passes the minimum at s=3
    assert router.manhattan_direction((1, 1), (5, 4)) == EAST
    assert router.manhattan_direction((5, 1), (5, 4)) == SOUTH
    assert router.manhattan_direction((5, 4), (5, 1)) == NORTH
    assert router.manhattan_direction((5, 4), (2, 4)) == WEST


def test_distance_aware_is_shorter_on_average_than_changing_planes_at_the_source():
    # Not pair by pair: the reference rule deliberately steps past the cross-over
    # (a local minimum of the cross-plane length) before changing planes.
    c = Constellation(20, 20)
    router = Router(c)
    rng = random.Random(1)
    aware = plane_first = 0.0
    for _ in range(500):
        a = (rng.randint(1, 20), rng.randint(1, 20))
        b = (rng.randint(1, 20), rng.randint(1, 20))
        aware += router.route(a, b).length_m
        plane_first += (c.hops(a, (a[0], b[1])) * router.cross_plane_at(a[0])
                        + c.hops((a[0], b[1]), b) * c.in_plane_length_m)
    assert aware < 0.95 * plane_first


def test_reference_rule_steps_past_the_crossover():
    c = Constellation(20, 20)  # sat 5: theta = 90 deg exactly, the local minimum
    router = Router(c)
    assert router.manhattan_direction((5, 19), (3, 9)) == WEST
    assert router.manhattan_direction((4, 19), (3, 9)) == SOUTH  # 10 planes either way: tie


def random_down_links(c, rng, fraction):
    cross = [frozenset((a, b)) for a, b, kind in c.isls() if kind == "cross"]
    everything = [frozenset((a, b)) for a, b, _ in c.isls()]
    pool = cross if rng.random() < 0.5 else everything
    return frozenset(rng.sample(pool, int(len(pool) * fraction)))


@pytest.mark.parametrize("grid", GRIDS)
def test_outage_aware_routes_are_loop_free_and_bfs_short(grid):
    c = Constellation(*grid)
    rng = random.Random(sum(grid))
    for trial in range(4):
        down = random_down_links(c, rng, fraction=0.1 + 0.1 * trial)
        router = Router(c, down=down)
        for target in rng.sample(c.satellites(), min(6, c.size)):
            dist = bfs_hops(c, down, target)
            for source in c.satellites():
                if source not in dist:
                    with pytest.raises(NoRoute):
                        router.route(source, target)
                    continue
                route = router.route(source, target)
                assert_valid_path(c, down, route.path)
                assert route.hops == dist[source]


def test_outage_aware_keeps_the_reference_route_where_it_survives():
    c = Constellation(11, 11)
    plain = Router(c)
    # Take down links far from the route: the route must not change.
    route = plain.route((1, 1), (5, 4))
    down = frozenset(frozenset(((s, 9), (s, 10))) for s in range(1, 12))
    assert Router(c, down=down).route((1, 1), (5, 4)).path == route.path
    # Take down one link on it: the detour keeps the minimal hop count.
    a, b = route.path[2], route.path[3]
    detour = Router(c, down={frozenset((a, b))}).route((1, 1), (5, 4))
    assert detour.hops == route.hops and (a, b) not in zip(detour.path, detour.path[1:])


def test_crossover_outages_from_the_model_still_route():
    c = Constellation(12, 12, outage_lat_deg=70)
    down = c.down_links(0.0)
    assert down
    router = Router(c, down=down)
    for b in c.satellites()[::7]:
        dist = bfs_hops(c, down, b)
        for a in c.satellites()[::5]:
            assert router.route(a, b).hops == dist[a]


@settings(max_examples=60, deadline=None)
@given(planes=st.integers(3, 9), sats=st.integers(3, 9), seed=st.integers(0, 10_000))
def test_property_next_hop_always_gets_closer(planes, sats, seed):
    c = Constellation(planes, sats)
    rng = random.Random(seed)
    down = random_down_links(c, rng, rng.uniform(0, 0.4))
    router = Router(c, down=down)
    target = rng.choice(c.satellites())
    dist = bfs_hops(c, down, target)
    for cur in c.satellites():
        if cur == target or cur not in dist:
            continue
        nxt = router.next_hop(cur, target)
        assert dist[nxt] == dist[cur] - 1


def test_route_outside_the_grid_is_refused():
    with pytest.raises(ValueError):
        Router(Constellation(5, 5)).route((1, 1), (6, 1))


@pytest.mark.parametrize("rule", [Router, PlaneFirstRouter])
@pytest.mark.parametrize("grid,seam,k", [((3, 3), True, 0), ((5, 5), True, 3), ((7, 4), False, 5),
                                          ((12, 8), True, 40), ((6, 9), False, 20)])
def test_vectorised_next_hops_equal_next_hop(rule, grid, seam, k):
    c = Constellation(*grid, seam=seam)
    isls = [frozenset((a, b)) for a, b, _kind in c.isls()]
    router = rule(c, 700.0, frozenset(random.Random(k).sample(isls, k)))
    for a in c.satellites():
        hops = router.next_hops_from(a)
        for b in c.satellites():
            try:
                nh = router.next_hop(a, b)
                want = 0 if nh is None else c.node_id(nh)
            except NoRoute:
                want = -1
            assert hops[c.node_id(b) - 1] == want, (a, b)
            if want > 0 and router.down:
                assert router.distances_from(a)[c.node_id(b) - 1] == len(router.route(a, b).path) - 1
