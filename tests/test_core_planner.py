"""Job planning and the cost model (the paper's Eq. 5-7)."""

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from controller.routing import Router
from node_app.cost_model import CostModel
from node_app.allocation import hungarian
from node_app.planner import (GeoBox, PlanError, allocate, center_of, geo_collectors, grid_aoi,
                              nearest_mappers, plan_grid_job, plan_job)
from topo.constellation import Constellation
from topo.link_model import LinkModel

REFERENCE = json.loads((Path(__file__).parent / "reference_ci_values.json").read_text())


def test_grid_aoi_matches_the_reference_shuffle():
    c = Constellation(11, 11)
    aoi = grid_aoi(c, 3, 8, random.Random(42))
    expected = [[s, o] for s in range(3, 9) for o in range(3, 9)]
    random.seed(42)
    random.shuffle(expected)
    assert [list(x) for x in aoi] == expected


@pytest.mark.parametrize("key", sorted(REFERENCE))
def test_reference_ci_case_distances_equal_the_reference(key):
    """Values computed by the reference implementation's own routing.py, allocation.py and
    hungarian.py (LeoDOS-Project/leopymr, docker/) for 11x11, AOI 3..8, 15 collectors,
    bipartite allocation, with hops(a, a) = 0."""
    seed, reducetype = key.split("-")
    plan = plan_grid_job(Constellation(11, 11), minsat=3, maxsat=8, collectors=15,
                         seed=int(seed), allocator="bipartite", reducetype=reducetype)
    assert [plan.distance, plan.reduce_distance] == REFERENCE[key]


def brute_force_min(cost):
    n = cost.shape[0]
    return min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("seed", range(12))
def test_bipartite_equals_brute_force_and_beats_eager_and_random(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 7))
    cost = rng.integers(0, 20, size=(n, n)).astype(float)
    if seed % 2:
        cost = rng.random((n, n)) * 1e6
    best = brute_force_min(cost)
    rows = np.arange(n)
    for solver in ("lapjv", "hungarian"):
        picks = allocate(cost, "bipartite", random.Random(0), solver)
        assert sorted(picks) == list(range(n))
        assert cost[rows, picks].sum() == pytest.approx(best)
    for other in ("eager", "random"):
        picks = allocate(cost, other, random.Random(seed), "lapjv")
        assert sorted(picks) == list(range(n))
        assert cost[rows, picks].sum() >= best - 1e-9


def test_hungarian_agrees_with_scipy_on_a_large_instance():
    cost = np.random.default_rng(3).random((120, 120))
    from scipy.optimize import linear_sum_assignment
    r, cidx = linear_sum_assignment(cost)
    assert cost[np.arange(120), hungarian(cost)].sum() == pytest.approx(cost[r, cidx].sum())


def test_eager_takes_the_cheapest_free_mapper_in_collector_order():
    cost = np.array([[1.0, 2.0], [1.0, 9.0]])
    assert allocate(cost, "eager", random.Random(0)) == [0, 1]
    assert allocate(cost, "bipartite", random.Random(0)) == [1, 0]


@pytest.mark.parametrize("allocator", ["bipartite", "eager", "random"])
def test_seeded_plans_repeat_exactly(allocator):
    c = Constellation(11, 11)
    a = plan_grid_job(c, minsat=3, maxsat=8, collectors=15, seed=9, allocator=allocator,
                      reducetype="center", cost_kind="physical")
    b = plan_grid_job(c, minsat=3, maxsat=8, collectors=15, seed=9, allocator=allocator,
                      reducetype="center", cost_kind="physical")
    assert a.to_json() == b.to_json()


def test_bipartite_never_worse_than_eager_or_random_over_seeds():
    c = Constellation(11, 11)
    for seed in range(10):
        plans = {a: plan_grid_job(c, minsat=3, maxsat=8, collectors=15, seed=seed, allocator=a,
                                  reducetype="center") for a in ("bipartite", "eager", "random")}
        assert plans["bipartite"].distance <= plans["eager"].distance
        assert plans["bipartite"].distance <= plans["random"].distance
    for seed in range(5):
        phys = {a: plan_grid_job(c, minsat=3, maxsat=8, collectors=15, seed=seed, allocator=a,
                                 reducetype="center", cost_kind="physical")
                for a in ("bipartite", "eager", "random")}
        assert phys["bipartite"].map_cost <= phys["eager"].map_cost + 1e-6
        assert phys["bipartite"].map_cost <= phys["random"].map_cost + 1e-6


def test_reducer_placement():
    assert center_of([(3, 4), (4, 4), (6, 9)]) == (4, 5)  # truncating means
    c = Constellation(11, 11)
    los = plan_grid_job(c, minsat=3, maxsat=8, collectors=15, seed=1, reducetype="los", los=(2, 3))
    assert los.reducer == (2, 3) and los.los == (2, 3)
    center = plan_grid_job(c, minsat=3, maxsat=8, collectors=15, seed=1, reducetype="center")
    assert center.reducer == center_of(center.mappers)


def test_plan_metrics_are_sums_over_routes():
    c = Constellation(9, 9)
    router = Router(c)
    plan = plan_grid_job(c, minsat=2, maxsat=7, collectors=8, seed=4, reducetype="center",
                         cost_kind="physical")
    assert plan.distance == sum(router.route(a, b).hops for a, b in plan.allocations)
    assert plan.reduce_distance == sum(router.route(m, plan.reducer).hops for m in plan.mappers)
    assert plan.distance_m == pytest.approx(sum(router.route(a, b).length_m for a, b in plan.allocations))


def test_cost_model_equations():
    model = CostModel()
    link = LinkModel()
    d = 2e6
    assert model.transfer_s(d, 1e9) == pytest.approx(d / 299_792_458 + 8e9 / link.shannon_rate_bps(d))
    assert model.transfer_s(0.0, 1e9) == 0.0
    pair = model.map_pair_cost(3, d)
    assert pair == pytest.approx(1.0 + 3 * 3.0 + model.transfer_s(d, 10e9))
    red = model.reduce_cost(np.array([d, 0.0]), 3e6)
    assert red == pytest.approx(1.0 + model.transfer_s(3e6, 10e9 / 5) + model.transfer_s(d, 10e9))
    plan = plan_job(Constellation(5, 5), [(1, 1)], [(2, 1)], reducetype="los", los=(3, 1))
    assert plan.cost == pytest.approx(plan.map_cost + plan.reduce_cost)


def test_geographic_aoi_selects_satellites_over_the_box():
    c = Constellation(20, 20)
    box = GeoBox(ul_lat=60, ul_lon=-130, lr_lat=20, lr_lon=-60)
    picked = geo_collectors(c, box, t_s=0.0)
    assert picked
    for sat in picked:
        assert 20 <= c.latitude_deg(sat) <= 60 and -130 <= c.longitude_deg(sat) <= -60
    others = set(c.satellites()) - set(picked)
    assert all(not box.contains(c.latitude_deg(s), c.longitude_deg(s)) for s in others)
    ascending = geo_collectors(c, box, t_s=0.0, ascending_only=True)
    assert set(ascending) <= set(picked) and all(c.ascending(s) for s in ascending)
    mappers = nearest_mappers(c, picked, len(picked))
    assert not set(mappers) & set(picked) and len(set(mappers)) == len(picked)
    plan = plan_job(c, picked, mappers, cost_kind="physical")
    assert sorted(plan.mappers) == sorted(mappers)


def test_geobox_across_the_antimeridian():
    box = GeoBox(ul_lat=10, ul_lon=170, lr_lat=-10, lr_lon=-170)
    assert box.contains(0, 175) and box.contains(0, -175) and not box.contains(0, 0)
    with pytest.raises(PlanError):
        GeoBox(ul_lat=-10, ul_lon=0, lr_lat=10, lr_lon=5)


def test_geobox_distance_and_footprint_aoi():
    box = GeoBox(ul_lat=49, ul_lon=-125, lr_lat=25, lr_lon=-67)
    assert box.distance_m(37, -100) == 0.0
    # Due north of the box: one degree of latitude is R * pi / 180.
    assert box.distance_m(50, -100) == pytest.approx(6_371_000 * np.pi / 180, rel=1e-9)
    # East of the east edge along the equator-side parallel 25: shorter than the degrees
    # of longitude at the equator, by about cos(25 deg).
    assert box.distance_m(25, -66) == pytest.approx(6_371_000 * np.pi / 180 * np.cos(np.radians(25)),
                                                    rel=1e-3)
    # Across the antimeridian the nearer edge is found going round either way.
    wrap = GeoBox(ul_lat=10, ul_lon=170, lr_lat=-10, lr_lon=-170)
    assert wrap.distance_m(0, 179) == 0.0
    assert wrap.distance_m(0, -169) == pytest.approx(wrap.distance_m(0, 169), rel=1e-9)
    assert wrap.distance_m(0, -169) < 200e3
    c = Constellation(40, 40)
    nadir = geo_collectors(c, box, t_s=100.0, ascending_only=True)
    wide = geo_collectors(c, box, t_s=100.0, ascending_only=True, footprint_radius_m=500e3)
    assert set(nadir) < set(wide)
    for sat in set(wide) - set(nadir):
        d = box.distance_m(c.latitude_deg(sat, 100.0), c.longitude_deg(sat, 100.0))
        assert 0 < d <= 500e3
    outside = set(c.satellites()) - set(wide)
    assert all(box.distance_m(c.latitude_deg(s, 100.0), c.longitude_deg(s, 100.0)) > 500e3
               or not c.ascending(s, 100.0) for s in outside)


@pytest.mark.parametrize("kwargs, message", [
    (dict(minsat=0, maxsat=8), "outside"),
    (dict(minsat=3, maxsat=12), "outside"),
    (dict(minsat=8, maxsat=3), "minsat"),
    (dict(collectors=19), "half"),
    (dict(collectors=0), "between"),
    (dict(allocator="greedy"), "allocator"),
    (dict(reducetype="north"), "reducer type"),
    (dict(cost_kind="money"), "cost"),
])
def test_bad_jobs_are_refused_with_a_clear_message(kwargs, message):
    args = dict(minsat=3, maxsat=8, collectors=15, seed=1)
    args.update(kwargs)
    with pytest.raises(PlanError, match=message):
        plan_grid_job(Constellation(11, 11), **args)
