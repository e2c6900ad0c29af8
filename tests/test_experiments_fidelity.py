"""experiments.fidelity: config validation (fast) and a small run on an emulated 3x3
(root: builds a network)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.fidelity import DEFAULT_CONFIG, job_list, load_config, sample_links

ROOT = Path(__file__).resolve().parent.parent


def _run(args, timeout=60):
    return subprocess.run([sys.executable, "-m", "experiments.fidelity", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_unknown_key_exits_2_naming_it(tmp_path):
    bad = tmp_path / "f.yaml"
    bad.write_text("grid: 3x3\niperf_secs: 3\n")
    out = _run(["--config", str(bad)])
    assert out.returncode == 2 and "iperf_secs: unknown key" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("text, key", [
    ("collectors: [2, 0]\n", "collectors"),
    ("workload: images\n", "workload"),
    ("grid: 3x3\nmaxsat: 5\n", "maxsat"),
    ("testbed: {shaping: false}\n", "testbed.shaping"),
    ("testbed: {rate_scael: 2}\n", "rate_scael"),
    ("parts: [throughput, latency]\n", "parts"),
    ("forwarding_hops: [0, 2]\n", "forwarding_hops"),
    ("forwarding_lift_mbps: 0\n", "forwarding_lift_mbps"),
    ("forward_bps: -5\n", "forward_bps"),
    ("forward_scope: bus\n", "forward_scope"),
    ("queue_bytes: -1\n", "queue_bytes"),
    ("queue_bytes: lots\n", "queue_bytes"),
    ("parts: [queue]\n", "parts"),
    ("hoprate_streams: 1\n", "hoprate_streams"),
    ("hoprate_seconds: 0\n", "hoprate_seconds"),
    ("hop_rate_bps: -3\n", "hop_rate_bps"),
    ("grid: 3x3\nmaxsat: 3\ncollectors: 2\nparts: [hoprate, jobs]\n", "hoprate_streams"),
    ("aoi_boxes: ['10,0,20,5']\n", "aoi_boxes[0]"),
    ("aoi_boxes: ['1,2,3']\n", "aoi_boxes[0]"),
])
def test_bad_values_exit_2_naming_the_key(tmp_path, text, key):
    bad = tmp_path / "f.yaml"
    bad.write_text(text)
    out = _run(["--config", str(bad)])
    assert out.returncode == 2 and key in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_default_config_plans_many_varied_jobs_and_spread_links():
    cfg = load_config(DEFAULT_CONFIG, {})
    jobs = job_list(cfg)
    assert 12 <= len(jobs) <= 20
    assert {a for _s, a, _r, _c in jobs} == {"random", "eager", "bipartite"}
    assert len({c for *_x, c in jobs}) > 1
    from topo import config, shaping
    tc = config.from_dict({"grid": "5x5"})
    links = sample_links(shaping.plan(tc.constellation(), tc.link_model(), 0.0), 3, 3)
    kinds = [s.kind for s in links]
    assert kinds.count("in") == 3 and kinds.count("cross") == 3
    # The cross-plane sample covers distinct lengths, so distinct rates.
    assert len({round(s.length_m) for s in links if s.kind == "cross"}) == 3


@pytest.mark.root
def test_fidelity_3x3_throughput_and_rank_correlation(tmp_path):
    cfg = tmp_path / "fid.yaml"
    cfg.write_text("""grid: 3x3
parts: [queueing, hoprate, throughput, rtt, jobs]
hoprate_streams: 3
hoprate_seconds: 2
in_plane_links: 1
cross_plane_links: 2
iperf_seconds: 4
iperf_omit_s: 1
minsat: 1
maxsat: 3
collectors: [2, 3, 4]
seeds: 1
allocators: [random, eager, bipartite]
reducers: [los, center]
testbed: {rate_scale: 4.0}
""")
    out = _run(["--config", str(cfg), "--json", "--results", str(tmp_path)], timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    th = m["throughput"]
    assert th["links"] == 3
    # TCP over one shaped ISL gets the model's rate (less TCP/IP header share) within 10%.
    assert th["within_10pct"] and 0.9 <= th["ratio_min"] <= th["ratio_max"] <= 1.1, th
    out_dir = Path(m["results_dir"])
    env = json.loads((out_dir / "environment.json").read_text())
    if env["netem"]:
        assert not m["rtt"]["skipped"] and m["rtt"]["links"] == 3
    else:
        assert m["rtt"]["skipped"] and "sch_netem" in m["rtt"]["reason"]
    jobs = m["jobs"]
    assert jobs["n"] == 6 and jobs["all_exact"]
    rho = jobs["spearman"]["link_load_s"]["rho"]
    assert rho is not None and math.isfinite(rho) and rho > 0, jobs["spearman"]
    per_hop = jobs["spearman"]["per_hop_s"]["rho"]
    assert per_hop is not None and math.isfinite(per_hop), jobs["spearman"]
    # a shaped link saturated by TCP holds a standing queue: pings wait behind it
    q = m["queueing"]
    assert q["loaded_rtt_ms"] > q["idle_rtt_ms"] and q["queue_bytes"] > 10_000, q
    assert {"per_hop_chained_s", "per_hop_queue_s"} <= set(jobs["spearman"])
    # three streams at once measured the latency bound; with one it enters the predictions
    hr = m["hoprate"]
    assert hr["streams"] == 3 and 0 <= hr["bound_streams"] <= 3, hr
    assert (hr["hop_rate_bps"] is None) == (hr["bound_streams"] == 0), hr
    assert ("per_hop_latency_s" in jobs["spearman"]) == (hr["hop_rate_bps"] is not None)
    assert env["hoprate"]["streams"] == 3
    assert jobs["without_reassignments"]["n"] <= jobs["n"]
    import csv
    rows = list(csv.DictReader(open(out_dir / "jobs.csv")))
    for key in ("syn_retrans", "listen_drops", "tcp_timeouts", "reassignments"):
        assert all(int(r[key]) >= 0 for r in rows), key  # counter differences across a job
    for name in ("config.yaml", "environment.json", "links.csv", "jobs.csv", "metrics.json",
                 "throughput.png", "jobs.png", "hoprate.csv"):
        assert (out_dir / name).stat().st_size > 0, name


def test_geographic_boxes_make_the_job_list():
    cfg = load_config(DEFAULT_CONFIG, {})
    cfg["aoi_boxes"] = ["60,-130,20,-60", "10,60,-40,150"]
    jobs = job_list(cfg)
    assert len(jobs) == 2 * cfg["seeds"] * 3 * 2
    assert {c for *_x, c in jobs} == set(cfg["aoi_boxes"])


def test_forwarding_budget_enters_the_per_hop_prediction():
    from types import SimpleNamespace
    from controller.routing import Router
    from experiments.job_predictions import predictions
    from topo import config, shaping
    tc = config.from_dict({"grid": "5x5"})
    c = tc.constellation()
    shapes = shaping.plan(c, tc.link_model(), 0.0)
    out = {"plan": {"allocations": [[[1, 1], [3, 1]], [[1, 2], [1, 4]]], "reducer": [2, 2],
                    "los": [1, 1]},
           "roles": [{"role": "collector", "node": [1, 1], "bytes": 10_000_000},
                     {"role": "collector", "node": [1, 2], "bytes": 10_000_000},
                     {"role": "mapper", "node": [3, 1], "bytes": 5_000_000},
                     {"role": "mapper", "node": [1, 4], "bytes": 5_000_000}],
           "bytes": {"result": 1000}}
    base = predictions(out, Router(c), shapes, 1.0, tc.link_model())
    assert "per_hop_fwd_s" not in base
    fast = predictions(out, Router(c), shapes, 1.0, tc.link_model(), forward_bps=1e12)
    slow = predictions(out, Router(c), shapes, 1.0, tc.link_model(), forward_bps=1e6)
    assert fast["per_hop_fwd_s"] == pytest.approx(base["per_hop_s"])
    # 1 Mbit/s for all switch traversals: the collect phase alone (2 streams of 10 MB over
    # 2 and 2 hops, 3 switches each) needs 8 * 20e6 * 3 / 1e6 = 480 s
    assert slow["per_hop_fwd_s"] >= 480 > base["per_hop_s"]
    assert "per_hop_latency_s" not in base
    bound = predictions(out, Router(c), shapes, 1.0, tc.link_model(), hop_rate_bps=0.2e6)
    # 0.2 Mbit/s x hops: each 2-hop collect stream at most 0.1 Mbit/s, 80 Mbit: 800 s
    assert bound["per_hop_latency_s"] >= 800 > base["per_hop_chained_s"]


def test_forwarding_fit_and_scope_and_links_restored(monkeypatch):
    """experiments.forwarding.measure on a stand-in testbed: a datapath of 200 Mbit/s
    x switches gives forward_bps 200 Mbit/s; the lifted links are put back."""
    from types import SimpleNamespace
    from controller.routing import Router
    from experiments import forwarding
    from topo.constellation import Constellation
    c = Constellation(11, 11)
    tb = SimpleNamespace(cfg=SimpleNamespace(sats_per_plane=11, planes=11), shapes={})
    lifted = []
    monkeypatch.setattr(forwarding, "lift", lambda tb, links, rate: lifted.append((set(links), rate)))
    for pair_sum, scope in ((1.0, "global"), (2.0, "switch")):
        def fake(tb, pairs, seconds, omit_s, pair_sum=pair_sum):
            k = Router(c).route(*pairs[0]).hops
            single = 200e6 / (k + 1)
            return [single] if len(pairs) == 1 else [single * pair_sum / 2] * 2
        monkeypatch.setattr(forwarding, "goodputs_bps", fake)
        out = forwarding.measure(tb, Router(c), [1, 2, 3, 4], 1, 0, 10e9)
        assert out["forward_bps"] == pytest.approx(200e6)
        assert out["forward_scope"] == scope
        assert [r["hops"] for r in out["rows"]] == [1, 2, 3, 4, 3]
    links, rate = lifted[0]
    assert rate == 10e9 and lifted[1] == (links, None) and len(links) == 4 + 3


def test_hop_rate_is_measured_on_the_streams_the_links_did_not_limit(monkeypatch):
    """experiments.forwarding.measure_hop_rate on a stand-in testbed whose datapath lets a
    stream over h hops move at most 30 Mbit/s / h: the streams their shaped links held to
    less are left out, the others give hop_rate_bps 30 Mbit/s x hops."""
    from types import SimpleNamespace
    from controller.routing import Router
    from experiments import forwarding
    from topo import config, shaping
    tc = config.from_dict({"grid": "20x11"})
    c = tc.constellation()
    shapes = shaping.plan(c, tc.link_model(), 0.0)
    tb = SimpleNamespace(cfg=SimpleNamespace(sats_per_plane=11, planes=20), shapes=shapes)
    pairs = forwarding.hop_rate_pairs(tb, 10)
    hops = [Router(c).route(a, b).hops for a, b in pairs]
    assert hops[0] == 1 and hops[-1] == 10 and hops == sorted(hops)
    assert len({a[0] for a, _b in pairs}) == 10     # one satellite row each: no shared ISL
    rate = {pair: min(shapes[frozenset(p)].rate_bps for p in zip(r.path, r.path[1:]))
            for pair, r in ((pair, Router(c).route(*pair)) for pair in pairs)}

    def datapath(tb, pairs, seconds, omit_s, limit=30e6):
        return [min(0.95 * rate[p], limit / Router(c).route(*p).hops) for p in pairs]
    monkeypatch.setattr(forwarding, "goodputs_bps", datapath)
    out = forwarding.measure_hop_rate(tb, Router(c), 10, 1, 0)
    bound = [r for r in out["rows"] if r["bound"]]
    assert 0 < len(bound) == out["bound_streams"] and out["streams"] == 10
    assert all(r["hops"] >= 2 for r in bound)       # one hop: the 5-10 Mbit/s link wins
    assert out["hop_rate_bps"] == pytest.approx(30e6)
    monkeypatch.setattr(forwarding, "goodputs_bps",
                        lambda tb, pairs, s, o: [0.95 * rate[p] for p in pairs])
    assert forwarding.measure_hop_rate(tb, Router(c), 10, 1, 0)["hop_rate_bps"] is None


def test_repeated_plans_give_the_test_retest_ceiling_and_the_median_comparison():
    from experiments.fidelity import summarise
    # four plans, each run twice; the model orders them right, the second runs disagree
    times = {"a": (10, 14), "b": (20, 12), "c": (30, 31), "d": (40, 45)}
    model = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    jobs = [{"job_time": t[k], "per_hop_s": model[p], "plan": p, "exact": True}
            for k in (0, 1) for p, t in times.items()]
    rep = summarise([], None, None, jobs)["jobs"]["repeats"]
    assert rep["plans"] == 4 and rep["runs_per_plan_min"] == 2
    assert rep["test_retest_rho"]["rho"] == pytest.approx(0.8)      # b and a swap
    assert rep["spearman_plan_median"]["per_hop_s"]["rho"] == pytest.approx(1.0)
    once = [j for j in jobs if j["job_time"] in (10, 20, 30, 40)]
    assert summarise([], None, None, once)["jobs"]["repeats"] is None


def test_diagnostics_count_reassignments_and_the_start_lag():
    from experiments.fidelity import diagnostics, summarise
    out = {"roles": [{"role": "reducer", "t_start": 10.0}, {"role": "collector", "t_start": 10.5},
                     {"role": "collector", "t_start": 13.0}],
           "reassignments": [{"role": "mapper"}]}
    assert diagnostics(out) == {"reassignments": 1, "start_lag_s": pytest.approx(3.0)}
    assert diagnostics({"roles": []}) == {"reassignments": 0, "start_lag_s": None}
    jobs = [{"job_time": t, "per_hop_s": p, "reassignments": k, "exact": True}
            for t, p, k in [(1, 1, 0), (2, 2, 0), (9, 3, 2), (4, 4, 0), (5, 5, 0)]]
    s = summarise([], None, None, jobs)["jobs"]
    assert s["spearman"]["per_hop_s"]["rho"] < 1.0
    assert s["without_reassignments"]["n"] == 4
    assert s["without_reassignments"]["spearman"]["per_hop_s"]["rho"] == pytest.approx(1.0)
    assert s["totals"] == {"jobs_with_reassignments": 1, "reassignments": 2, "syn_retrans": None,
                           "listen_drops": None, "tcp_timeouts": None,  # counters not read
                           "cpu_busy_pct_median": None, "jobs_cpu_saturated": None}
    jobs[0]["syn_retrans"], jobs[2]["syn_retrans"] = 3, 4
    for job, busy in zip(jobs, (99.0, 40.0, None, 96.0, 60.0)):
        job["cpu_busy_pct"] = busy
    totals = summarise([], None, None, jobs)["jobs"]["totals"]
    assert totals["syn_retrans"] == 7
    assert totals["cpu_busy_pct_median"] == pytest.approx(78.0)  # of the four read
    assert totals["jobs_cpu_saturated"] == 2
    from experiments.fidelity import saturation_warning
    metrics = {"jobs": summarise([], None, None, jobs)["jobs"]}
    assert saturation_warning(metrics).startswith("warning: 2 of 5 jobs ran with the machine's CPUs")
    for job in jobs:
        job["cpu_busy_pct"] = 50.0
    assert saturation_warning({"jobs": summarise([], None, None, jobs)["jobs"]}) is None
    assert saturation_warning({}) is None


def test_cpu_busy_share_between_two_readings_of_proc_stat(tmp_path):
    from experiments.forwarding import cpu_busy_pct, cpu_times
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 800 50 0 0 0 7 0\ncpu0 1 2 3 4 5\n")
    assert cpu_times(str(stat)) == (150, 1000)
    stat.write_text("cpu  250 0 100 850 100 0 0 0 9 0\n")
    after = cpu_times(str(stat))
    assert after == (350, 1300)
    assert cpu_busy_pct((150, 1000), after) == pytest.approx(100 * 200 / 300)
    assert cpu_busy_pct(None, after) is None and cpu_busy_pct(after, after) is None
    stat.write_text("intr 1 2 3\n")
    assert cpu_times(str(stat)) is None and cpu_times(str(tmp_path / "missing")) is None
    busy, total = cpu_times()  # this machine's
    assert 0 <= busy <= total


def test_tcp_counters_sum_the_hosts_namespaces_and_say_when_unreadable():
    import os
    from types import SimpleNamespace
    from experiments.forwarding import tcp_counters
    lines = open("/proc/self/net/netstat").read().splitlines()
    head, body = next((h, b) for h, b in zip(lines[::2], lines[1::2]) if h.startswith("TcpExt:"))
    direct = dict(zip(head.split()[1:], map(int, body.split()[1:])))
    pids = {(1, 1): os.getpid(), (1, 2): os.getpid(), (2, 1): None}
    tb = SimpleNamespace(sat_hosts=pids, host_of=lambda sat: SimpleNamespace(pid=pids[sat]))
    got = tcp_counters(tb)
    # two readable hosts (the same namespace twice here), one without a process
    assert got["syn_retrans"] >= 2 * direct["TCPSynRetrans"]
    assert got["listen_drops"] >= 2 * direct["ListenDrops"]
    assert got["tcp_timeouts"] >= 2 * direct["TCPTimeouts"]
    none = SimpleNamespace(sat_hosts={(1, 1): None},
                           host_of=lambda sat: SimpleNamespace(pid=None))
    assert tcp_counters(none) == {"syn_retrans": None, "listen_drops": None, "tcp_timeouts": None}


def test_a_failed_job_is_recorded_and_the_next_one_runs(monkeypatch):
    """At 72x22 one failed job used to end the run and lose every job measured before it."""
    from types import SimpleNamespace
    from experiments import fidelity
    from experiments.output import Progress
    from topo.constellation import Constellation
    cfg = load_config(DEFAULT_CONFIG, {"grid": "3x3", "seeds": 1, "maxsat": 3, "collectors": [1],
                                       "workload": "synthetic"})
    tb = SimpleNamespace(c=Constellation(3, 3), cfg=SimpleNamespace(start_time_s=0.0, rate_scale=1.0),
                         shapes={}, metadata={}, lm=None)
    calls = []

    def run_job(args, timeout_s):
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("job failed (exit 1): no progress for 30 s (stalled)")
        return {"n": len(calls), "plan": {"allocations": [[[1, 1], [2, 2]]]}}
    monkeypatch.setattr(fidelity, "tcp_counters", lambda tb: {"syn_retrans": 0})
    monkeypatch.setattr(fidelity.common, "job_row", lambda out, exact: {"job_time": float(out["n"])})
    monkeypatch.setattr(fidelity, "diagnostics", lambda out: {})
    monkeypatch.setattr(fidelity, "predictions", lambda out, *a, **k: {"per_hop_s": 1.0})
    jobs = job_list(cfg)
    failed = []
    rows = fidelity.run_jobs(tb, SimpleNamespace(run_job=run_job), cfg, Progress(len(jobs), "t"),
                             failed=failed)
    assert len(calls) == len(jobs) == 6
    assert [r["job_time"] for r in rows] == [1.0, 3.0, 4.0, 5.0, 6.0]
    seed, allocator, reducer, _ = jobs[1]
    assert failed == [{"seed": seed, "allocator": allocator, "reducer": reducer, "aoi": "grid",
                       "error": "job failed (exit 1): no progress for 30 s (stalled)"}]
    with pytest.raises(RuntimeError):  # without a list to keep them in, a failure ends the run
        calls.clear()
        fidelity.run_jobs(tb, SimpleNamespace(run_job=run_job), cfg, Progress(len(jobs), "t"))
