"""The paper's sweeps by simulation (experiments.paper), on small sizes: seconds."""

import json
import random

import numpy as np
import pytest

from controller.routing import PlaneFirstRouter
from experiments import paper, sweeps
from topo.constellation import Constellation

JOBS = {
    "aoi": "geo", "ascending_only": True, "grid_aoi": [3, 12],
    "geo_box": {"ul_lat": 49.0, "ul_lon": -125.0, "lr_lat": 25.0, "lr_lon": -67.0},
    "collector_fraction": 0.2, "reduce_factors": [2.0, 5.0, 256.0],
    "cost_model": {"data_volume_bytes": 10e9, "reduce_reduction_factor": 5.0},
}
ORBIT = {"altitude_m": 530e3, "inclination_deg": 87.0}


# --- the plane-first baseline --------------------------------------------------------------
def test_plane_first_changes_planes_at_the_source_then_moves_in_plane():
    c = Constellation(12, 12)
    route = PlaneFirstRouter(c).route((2, 3), (7, 9))
    orbs = [o for _, o in route.path]
    sats = [s for s, _ in route.path]
    assert route.hops == c.hops((2, 3), (7, 9))
    k = orbs.index(9)  # every plane change first, at the source's in-plane index
    assert set(sats[:k + 1]) == {2} and set(orbs[k:]) == {9}


def test_plane_first_length_matrix_matches_its_routes():
    c = Constellation(10, 14)
    router = PlaneFirstRouter(c, t_s=321.0)
    sats = c.satellites()
    lengths = router.length_matrix(sats, sats)
    hops = router.hop_matrix(sats, sats)
    rng = random.Random(3)
    for _ in range(200):
        i, j = rng.randrange(len(sats)), rng.randrange(len(sats))
        route = router.route(sats[i], sats[j])
        assert route.hops == hops[i, j]
        assert route.length_m == pytest.approx(lengths[i, j], abs=1e-3)


# --- sweep runs ----------------------------------------------------------------------------
@pytest.mark.parametrize("outages", [False, True])
def test_distance_aware_never_more_hops_and_shorter_in_total(outages):
    aware = plane_first = 0.0
    for run in range(4):
        rows = sweeps.routing_run(16, outages, run, seed=1, endpoints=6, outage_lat_deg=70.0,
                                  constellation=ORBIT)
        by = {r["rule"]: r for r in rows}
        assert by["distance_aware"]["pairs_more_hops"] == 0
        assert by["distance_aware"]["hops_mean"] == by["plane_first"]["hops_mean"]
        assert by["distance_aware"]["unreachable"] == 0
        aware += by["distance_aware"]["length_mean_m"]
        plane_first += by["plane_first"]["length_mean_m"]
        if outages:
            assert by["distance_aware"]["down_links"] > 0
    assert aware <= plane_first


def test_runs_are_reproducible_from_the_seed_alone():
    kw = dict(seed=5, endpoints=4, outage_lat_deg=70.0, constellation=ORBIT)
    assert sweeps.routing_run(12, True, 2, **kw) == sweeps.routing_run(12, True, 2, **kw)
    assert sweeps.routing_run(12, True, 2, **kw) != sweeps.routing_run(12, True, 3, **kw)


def test_bipartite_is_never_dearer_and_center_wins_at_high_reduce_factor():
    los = center = 0.0
    for run in range(3):
        out = sweeps.job_run(50, run, seed=2, jobs=JOBS, constellation=ORBIT)
        assert not out["skipped"]
        cost = {r["allocator"]: r["map_cost_s"] for r in out["map"]}
        assert cost["bipartite"] <= cost["eager"] + 1e-9
        assert cost["bipartite"] <= cost["random"] + 1e-9
        high = {r["reducetype"]: r["reduce_cost_s"] for r in out["reduce"]
                if r["reduce_factor"] == 256.0}
        los, center = los + high["los"], center + high["center"]
    assert center < los


def test_grid_aoi_option_runs():
    jobs = {**JOBS, "aoi": "grid"}
    out = sweeps.job_run(20, 0, seed=2, jobs=jobs, constellation=ORBIT)
    assert out["map"][0]["collectors"] == 20  # 1/5 of the 10x10 AOI cells


# --- the command ---------------------------------------------------------------------------
def test_quick_json_prints_one_line_of_numeric_improvements_and_writes_results(tmp_path, capsys):
    assert paper.main(["--quick", "--json", "--results", str(tmp_path), "--workers", "1",
                       "--runs", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    metrics = json.loads(lines[0])
    for key in ("routing_distance_saving_pct", "bipartite_vs_random_pct",
                "bipartite_vs_eager_pct", "center_vs_los_pct"):
        assert isinstance(metrics[key], float) and np.isfinite(metrics[key]), key
    assert metrics["routing_hops_equal"] is True
    out = tmp_path / "paper"
    (run_dir,) = out.iterdir()
    for name in ("config.yaml", "environment.json", "metrics.json", "headline.md",
                 "routing.csv", "routing_runs.csv", "map_cost.csv", "reduce_cost.csv",
                 "routing_distance.png", "contention.png", "map_cost.png", "reduce_cost.png",
                 "reduce_factor.png"):
        assert (run_dir / name).stat().st_size > 0, name
    assert "| paper |" in (run_dir / "headline.md").read_text()


@pytest.mark.parametrize("argv", [["--bogus"], ["--runs", "0"], ["--workers", "x"]])
def test_bad_flags_exit_2_with_one_line(argv, capsys):
    assert paper.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1


def test_bad_config_key_exits_2(tmp_path, capsys):
    text = paper.DEFAULT_CONFIG.read_text().replace("endpoints: 12", "endpoint: 12")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert paper.main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "routing.endpoint" in err and len(err.splitlines()) == 1
