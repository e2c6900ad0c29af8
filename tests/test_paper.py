"""The paper's sweeps by simulation (experiments.paper), on small sizes: seconds."""

import json
import random

import numpy as np
import pytest

from controller.routing import PlaneFirstRouter
from controller.routing import Router
from experiments import paper, paper_figures, paper_report, sweeps
from node_app import planner
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


# --- setup options: center placement, eager order, line of sight ------------------------------
def test_center_placements_across_the_ring_wrap():
    c = Constellation(20, 20)
    mappers = [(19, 5), (20, 5), (1, 6), (2, 6)]  # straddles sat 20 -> 1 in-plane
    # The reference's truncating mean lands on the far side of the ring...
    assert planner.place_center(c, mappers, "reference_mean") == (10, 5)
    # ... the wrap-aware placements stay among the mappers.
    for placement in ("wrap_mean", "medoid"):
        center = planner.place_center(c, mappers, placement)
        assert max(c.hops(center, m) for m in mappers) <= 3, (placement, center)
    assert planner.place_center(c, mappers, "wrap_mean")[0] in (20, 1)
    # Straddling plane 20 -> 1 as well.
    across = [(5, 19), (5, 20), (6, 1), (6, 2)]
    assert planner.place_center(c, across, "wrap_mean")[1] in (20, 1)
    # Without a straddle the circular mean agrees with the plain mean.
    assert planner.place_center(c, [(4, 4), (6, 8)], "wrap_mean") == (5, 6)


def test_box_mid_is_the_middle_of_the_covering_arcs():
    c = Constellation(20, 20)
    # No straddle: the middle of the index ranges (sats 4..8, planes 2..10).
    assert planner.place_center(c, [(4, 2), (8, 10), (5, 3)], "box_mid") == (6, 6)
    # Straddling sat 20 -> 1 and plane 20 -> 1: the arc 18..3 of each ring, middle 20.
    assert planner.place_center(c, [(18, 18), (3, 3), (1, 20)], "box_mid") == (20, 20)
    # A single mapper is its own box.
    assert planner.place_center(c, [(7, 9)], "box_mid") == (7, 9)


def test_allocation_cost_hops_allocates_on_hop_counts_and_costs_physically():
    runs = []
    for run in range(6):
        out = {kind: sweeps.job_run(60, run, seed=4, constellation=ORBIT, routes=False,
                                    jobs={**JOBS, "center": "wrap_mean", "allocation_cost": kind})
               for kind in ("physical", "hops")}
        by = {kind: {r["allocator"]: r for r in out[kind]["map"]} for kind in out}
        if not by["hops"]:
            continue
        runs.append(by)
        # The hop-optimal assignment: never more hops than the cost-optimal one, never
        # cheaper in the cost model than it (both costed by Eq. 5).
        assert by["hops"]["bipartite"]["distance_hops"] <= by["physical"]["bipartite"]["distance_hops"]
        assert by["hops"]["bipartite"]["map_cost_s"] >= by["physical"]["bipartite"]["map_cost_s"] - 1e-6
        assert by["hops"]["random"]["map_cost_s"] == by["physical"]["random"]["map_cost_s"]
    assert len(runs) >= 4
    # Over the runs the hop-count allocation is dearer somewhere: a real difference.
    assert any(r["hops"]["bipartite"]["map_cost_s"] > r["physical"]["bipartite"]["map_cost_s"] + 1
               for r in runs)


def test_footprint_aoi_takes_more_satellites():
    plain = sweeps.job_run(60, 1, seed=4, constellation=ORBIT, routes=False,
                           jobs={**JOBS, "center": "wrap_mean"})
    wide = sweeps.job_run(60, 1, seed=4, constellation=ORBIT, routes=False,
                          jobs={**JOBS, "center": "wrap_mean", "footprint_diameter_m": 1e6})
    assert wide["map"][0]["aoi_nodes"] > plain["map"][0]["aoi_nodes"] > 0


def test_grid_aoi_keeps_the_reference_center_for_parity():
    jobs = {**JOBS, "aoi": "grid", "center": "wrap_mean"}
    out = sweeps.job_run(20, 0, seed=2, jobs=jobs, constellation=ORBIT, routes=False)
    assert {r["center"] for r in out["reduce"]} == {"reference_mean"}


def test_eager_orders():
    cost = np.array([[1.0, 2.0], [0.5, 9.0]])
    rng = random.Random(0)
    # index: collector 0 takes mapper 0, collector 1 is left with the dear mapper 1
    assert planner.allocate(cost, "eager", rng) == [0, 1]
    # global: the cheapest pair (1, 0) first, then collector 0 takes mapper 1
    assert planner.allocate(cost, "eager", rng, eager_order="global") == [1, 0]
    assert planner.allocate(cost, "eager", rng, order=[1, 0]) == [1, 0]


def test_eager_latitude_serves_northern_collectors_first():
    c = Constellation(12, 12)
    router = Router(c, 0.0)
    collectors, mappers = [(1, 1), (3, 1)], [(2, 1), (3, 2)]
    lat = {s: c.latitude_deg(s, 0.0) for s in collectors}
    north = max(collectors, key=lat.get)
    plan = planner.plan_job(c, collectors, mappers, allocator="eager", reducetype="los",
                            router=router, eager_order="latitude")
    cost = router.hop_matrix([north], mappers)[0]
    assert dict(plan.allocations)[north] == mappers[int(np.argmin(cost))]


def test_los_over_a_city_is_the_nearest_satellite():
    c = Constellation(40, 40)
    lat, lon, t_s = 40.71, -74.01, 1234.0  # New York
    for ascending_only in (False, True):
        sat = planner.nearest_satellite(c, lat, lon, t_s, ascending_only)
        assert not ascending_only or c.ascending(sat, t_s)
        # no satellite (of the allowed direction) is closer
        def dist(s):
            p, q = np.radians([c.latitude_deg(s, t_s), c.longitude_deg(s, t_s)])
            a, b = np.radians([lat, lon])
            return np.arccos(np.clip(np.sin(a) * np.sin(p) + np.cos(a) * np.cos(p) * np.cos(q - b), -1, 1))
        allowed = [s for s in c.satellites() if not ascending_only or c.ascending(s, t_s)]
        assert dist(sat) == pytest.approx(min(dist(s) for s in allowed))
        assert np.degrees(dist(sat)) < 9.0  # within one grid spacing (360/40)


def test_los_cities_come_from_geonames_by_population_and_region():
    us = sweeps.los_cities(1_000_000, "US", None)
    box = planner.GeoBox(**JOBS["geo_box"])
    assert len(us) >= 10
    assert any(abs(lat - 40.71) < 0.1 and abs(lon + 74.0) < 0.1 for lat, lon in us)  # NYC
    assert all(box.contains(lat, lon) for lat, lon in us)
    in_box = set(sweeps.los_cities(1_000_000, "aoi", box))  # US plus Toronto, Monterrey, ...
    assert set(us) < in_box and all(box.contains(lat, lon) for lat, lon in in_box)
    world = sweeps.los_cities(1_000_000, "world", None)
    assert len(world) > 10 * len(us)
    assert len(sweeps.los_cities(5_000_000, "US", None)) < len(us)


def test_cities_los_lies_over_the_us_and_sizing_is_read_from_jobs():
    jobs = {**JOBS, "sizing": "sats_per_plane", "sats_per_plane": 30, "center": "wrap_mean",
            "los": {"source": "cities", "min_population": 1_000_000, "region": "US",
                    "ascending_only": True}}
    out = sweeps.job_run(40, 1, seed=3, jobs=jobs, constellation=ORBIT)
    row = out["reduce"][0]
    assert row["satellites"] == 40 * 30 and row["sats_per_plane"] == 30
    lat, lon = map(float, row["los_from"].split(","))
    assert 25 <= lat <= 49 and -125 <= lon <= -67
    c = Constellation(40, 30)
    los = tuple(int(v) for v in row["los"].split(","))
    assert c.ascending(los, row["t_s"])
    assert abs(c.latitude_deg(los, row["t_s"]) - lat) < 12
    assert "contention" in out["map"][0] and out["map"][0]["contention"] >= out["map"][0]["visits"]


def test_job_grid_sizings():
    jobs = {"planes": [50, 100], "sizing": "total", "total_satellites": [1000, 10000]}
    assert sweeps.job_grid(50, jobs) == (50, 20)
    assert sweeps.job_grid(100, jobs) == (100, 100)
    assert sweeps.job_grid(70, {"sizing": "square"}) == (70, 70)
    assert sweeps.job_grid(70, {"sizing": "sats_per_plane", "sats_per_plane": 60}) == (70, 60)


# --- figures and intervals ----------------------------------------------------------------
def test_intervals_cover_the_mean_and_shrink_with_runs():
    rng = np.random.default_rng(1)
    few, many = rng.normal(10, 2, 5), rng.normal(10, 2, 500)
    m, lo, hi = paper_figures.mean_ci(few)
    assert lo < m < hi
    m2, lo2, hi2 = paper_figures.mean_ci(many)
    assert hi2 - lo2 < (hi - lo) / 3 and lo2 < 10 < hi2
    s, lo, hi = paper_figures.saving_ci([1.0, 1.1, 0.9, 1.0], [2.0, 2.1, 1.9, 2.2])
    assert lo <= s <= hi and s == pytest.approx(100 * (1 - 4.0 / 8.2))


def test_compare_marks_agreement():
    figs = {"fig6_map_cost": {"x": [50], "series": {"random": [100.0]},
                              "ci": {"random": [[90.0, 110.0]]}, "runs": {"random": [20]}}}
    paper = {"fig6_map_cost": {"source": "Fig. 6", "x": [50], "series": {"random": [125.0]}}}
    (row,) = paper_figures.compare(figs, paper)
    assert row["agrees"] and not row["paper_in_ci"] and row["rel_diff_pct"] == -20.0
    paper["fig6_map_cost"]["series"]["random"] = [130.0]
    assert not paper_figures.compare(figs, paper)[0]["agrees"]


def test_paper_values_cover_every_figure():
    values = paper_figures.load_paper_values()
    assert set(FIGURES) <= set(values)
    for key, ref in values.items():
        for name, series in ref["series"].items():
            assert len(series) == len(ref["x"]), (key, name)


# --- the command ---------------------------------------------------------------------------
FIGURES = {"fig3_path_km": {"optimised", "not_optimised"},
           "fig4_hops": {"optimised", "not_optimised"},
           "fig5_map_improvement_pct": {"bipartite_vs_random", "bipartite_vs_eager"},
           "fig6_map_cost": {"random", "eager", "bipartite"},
           "fig7_reduce_cost": {"los", "center"},
           "fig8_improvement_pct": {"center_vs_los"},
           "fig9_map_contention": {"random", "eager", "bipartite"},
           "fig10_reduce_contention": {"los", "center"}}


def test_quick_json_prints_one_line_with_the_interface_and_writes_results(tmp_path, capsys):
    assert paper.main(["--quick", "--json", "--results", str(tmp_path), "--workers", "1",
                       "--runs", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    metrics = json.loads(lines[0])
    for key in ("routing_distance_saving_pct", "bipartite_vs_random_pct",
                "bipartite_vs_eager_pct", "center_vs_los_pct"):
        assert isinstance(metrics[key], float) and np.isfinite(metrics[key]), key
    assert metrics["routing_hops_equal"] is True
    figures = metrics["figures"]
    for key, names in FIGURES.items():
        fig = figures[key]
        assert names <= set(fig["series"]), key
        for name in names:
            assert len(fig["series"][name]) == len(fig["x"]), (key, name)
            assert all(isinstance(v, float) for v in fig["series"][name]), (key, name)
    assert figures["fig6_map_cost"]["x"] == [50, 70]          # plane counts (quick)
    assert figures["fig3_path_km"]["x"] == [400, 900]         # satellites (quick)
    assert figures["fig8_improvement_pct"]["x"] == [2.0, 5.0, 16.0, 256.0]  # F_R
    assert {r["headline"] for r in metrics["sensitivity"]} == {
        "bipartite_vs_random_pct", "bipartite_vs_eager_pct", "center_vs_los_pct"}
    out = tmp_path / "paper"
    (run_dir,) = out.iterdir()
    for name in ("config.yaml", "environment.json", "metrics.json", "headline.md",
                 "routing.csv", "routing_runs.csv", "map_cost.csv", "reduce_cost.csv",
                 "compare.csv", "sensitivity.csv", "figures.json",
                 *(f"{k}.{ext}" for k in FIGURES for ext in ("png", "svg"))):
        assert (run_dir / name).stat().st_size > 0, name
    text = (run_dir / "headline.md").read_text()
    assert "| paper |" in text and "Sensitivity" in text and "fig10_reduce_contention" in text
    compare = (run_dir / "compare.csv").read_text().splitlines()
    assert compare[0].startswith("figure,series,x,paper,ours,ci_low,ci_high")


def _guest_result(tmp_path):
    """A fidelity result saved the way ``tests/vm/run_check.py --results`` saves the guest's."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "run_check", Path(__file__).parent / "vm" / "run_check.py")
    run_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_check)
    rho = {"paper_scaled_s": 0.27, "per_hop_s": 0.65, "per_hop_chained_s": 0.77}
    metrics = {"grid": "3x3", "jobs": {
        "n": 12, "job_time_min": 2.9, "job_time_max": 5.4,
        "spearman": {k: {"rho": v, "p": 0.01, "n": 12} for k, v in rho.items()},
        "without_reassignments": {"n": 11, "spearman": {"per_hop_chained_s": {"rho": 0.8}}},
        "totals": {"reassignments": 3, "syn_retrans": 40, "tcp_timeouts": None}},
        "queueing": {"queue_bytes": 82000.0}}
    rows = [{"job_time": "3.1", "per_hop_s": "2.5"}, {"job_time": "4.0", "per_hop_s": "3.5"}]
    return run_check.save_fidelity({"kernel": "6.1", "fidelity": {
        "ok": True, "netem": True, "datapath": "kernel", "metrics": metrics, "jobs_csv": rows}},
        str(tmp_path / "res"))


def test_measured_jobs_table_from_a_guest_run(tmp_path):
    from experiments import measured_jobs
    out = _guest_result(tmp_path)
    assert (out / "jobs.csv").read_text().startswith("job_time,per_hop_s")
    (run,) = measured_jobs.load([out])
    assert run["netem"] is True and run["where"] == "full-kernel guest (qemu TCG)"
    assert run["spearman"]["per_hop_chained_s"] == 0.77 and run["spearman"]["per_hop_queue_s"] is None
    text = "\n".join(measured_jobs.section([run]))
    assert "netem: per-hop delay emulated" in text and "| 0.27 | 0.65 | 0.77 | n/a | n/a | 11: 0.80 | 3 / 40 / n/a | n/a |" in text
    assert "No measured jobs" in measured_jobs.section([])[0]
    (out / "config.yaml").write_text("aoi_boxes: ['60,-130,20,-60']\n")
    env = json.loads((out / "environment.json").read_text())
    env["ovs_socket_buffers"] = [{"send_socket": True}]
    (out / "environment.json").write_text(json.dumps(env))
    (run,) = measured_jobs.load([out])
    assert "geographic AOI, OVS send buffer enlarged |" in "\n".join(measured_jobs.section([run]))
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["jobs"]["spearman"]["per_hop_latency_s"] = {"rho": 0.66}
    metrics["jobs"]["repeats"] = {"plans": 18, "test_retest_rho": {"rho": 0.73},
                                  "spearman_plan_median": {"per_hop_latency_s": {"rho": 0.8},
                                                           "per_hop_chained_s": {"rho": 0.48},
                                                           "paper_scaled_s": {"rho": 0.81}}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    (run,) = measured_jobs.load([out])
    assert ("| 0.77 | n/a | 0.66 | 11: 0.80 | 3 / 40 / n/a | 18: 0.73; on the median times "
            "per-hop, chained 0.48, per-hop, chained + latency bound 0.80, paper S(d, V) 0.81 |") in "\n".join(measured_jobs.section([run]))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.json").write_text("{}")
    (empty / "environment.json").write_text("{}")
    with pytest.raises(paper.UsageError, match="no measured jobs"):
        measured_jobs.load([empty])


def test_jobs_from_puts_the_measured_jobs_into_headline_and_metrics(tmp_path, capsys):
    out = _guest_result(tmp_path)
    assert paper.main(["--quick", "--json", "--results", str(tmp_path), "--workers", "1",
                       "--runs", "2", "--jobs-from", str(out)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["measured_jobs"][0]["spearman"]["per_hop_s"] == 0.65
    (run_dir,) = (tmp_path / "paper").iterdir()
    text = (run_dir / "headline.md").read_text()
    assert "## The model against measured jobs" in text and "full-kernel guest" in text
    assert paper.main(["--quick", "--jobs-from", str(tmp_path / "nowhere")]) == 2
    assert "--jobs-from" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--bogus"], ["--runs", "0"], ["--workers", "x"]])
def test_bad_flags_exit_2_with_one_line(argv, capsys):
    assert paper.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("old,new,named", [
    ("endpoints: 12", "endpoint: 12", "routing.endpoint"),
    ("center: wrap_mean ", "center: middle ", "jobs.center"),
    ("eager_order: index ", "eager_order: random ", "jobs.eager_order"),
    ("sizing: sats_per_plane ", "sizing: huge ", "jobs.sizing"),
    ("source: cities ", "source: towns ", "jobs.los.source"),
    ("region: US ", "region: United States ", "jobs.los.region"),
    ("min_population: 1000000 ", "min_population: 100000000 ", "jobs.los"),
    ("selection: shuffled ", "selection: best ", "jobs.selection"),
    ("allocation_cost: physical", "allocation_cost: money", "jobs.allocation_cost"),
    ("footprint_diameter_m: 0.0", "footprint_diameter_m: -1.0", "jobs.footprint_diameter_m"),
    ("center_medoid: {center: medoid}", "center_medoid: {center: median}",
     "sensitivity.variants.center_medoid.center"),
    ("center_medoid: {center: medoid}", "center_medoid: {centre: medoid}",
     "sensitivity.variants.center_medoid.centre"),
])
def test_bad_config_values_exit_2_naming_the_key(tmp_path, capsys, old, new, named):
    text = paper.DEFAULT_CONFIG.read_text()
    assert old in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(old, new))
    assert paper.main(["--config", str(bad), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1
    assert not (tmp_path / "paper").exists()  # failed before running


def test_medoid_m_minimises_total_routed_distance_from_the_mappers():
    from controller.routing import Router
    c = Constellation(10, 10)
    router = Router(c, t_s=1200.0)  # cross-plane lengths differ with latitude at this time
    mappers = [(2, 2), (3, 7), (9, 4), (5, 5)]
    best = planner.place_center(c, mappers, "medoid_m", router)
    total = {s: sum(router.route(m, s).length_m for m in mappers) for s in c.satellites()}
    assert total[best] == pytest.approx(min(total.values()), rel=1e-9)
    hop_medoid = planner.place_center(c, mappers, "medoid", router)
    assert total[best] <= total[hop_medoid] + 1e-6


def test_ratio_rows_tell_a_constant_from_a_drift():
    rows = [{"figure": "f", "series": "flat", "x": x, "paper": 10.0, "ours": 6.0 + 0.1 * k}
            for k, x in enumerate([1, 2, 3])]
    rows += [{"figure": "f", "series": "drift", "x": x, "paper": 10.0, "ours": 5.0 * (k + 1)}
             for k, x in enumerate([3, 1, 2])]  # unsorted x: first/last follow x
    by = {r["series"]: r for r in paper_report.ratio_rows(rows)}
    assert by["flat"]["kind"] == "constant" and by["flat"]["first"] == pytest.approx(0.6)
    assert by["drift"]["kind"] == "drifts"
    assert by["drift"]["first"] == pytest.approx(1.0) and by["drift"]["last"] == pytest.approx(0.5)
    assert by["drift"]["min"] == pytest.approx(0.5) and by["drift"]["max"] == pytest.approx(1.5)


def test_half_orbit_check_adds_the_missing_in_plane_hops():
    # N = 20: (N-1)/2 - N/4 = 4.5 more hops, 100 km each in this made-up constellation.
    rows = [{"figure": "fig3_path_km", "series": "optimised", "x": 400, "paper": 1000.0, "ours": 550.0},
            {"figure": "fig4_hops", "series": "optimised", "x": 400, "paper": 15.0, "ours": 10.5}]
    lines = paper_report.half_orbit_check(rows, lambda n: 100.0)
    assert lines == ["fig3_path_km optimised 1.00..1.00x", "fig4_hops optimised 1.00..1.00x"]


def test_best_reducer_bounds_both_placements_and_matches_the_cost_model():
    from node_app.cost_model import CostModel
    model = CostModel()
    lengths = np.array([[1e6, 2e6, 0.0], [3e6, 0.0, 5e5]])  # 2 mappers x 3 candidates
    to_los = np.array([4e6, 0.0, 1e6])
    costs = model.reduce_costs(lengths, to_los)
    for j in range(3):
        assert costs[j] == pytest.approx(model.reduce_cost(lengths[:, j], to_los[j]))
    seen = 0
    for run in range(4):
        out = sweeps.job_run(50, run, seed=5, jobs={**JOBS, "center": "wrap_mean"},
                             constellation=ORBIT, routes=False)
        for row in out["reduce"]:
            seen += 1
            assert row["best_reduce_cost_s"] <= row["reduce_cost_s"] + 1e-6
    assert seen
