"""Fidelity of the emulated network to the model.

    python3 -m experiments.fidelity [--config experiments/fidelity.yaml] [--grid 5x5]
                                    [--links N] [--seeds N] [--json] [--pcap SPEC] [--results DIR]

One testbed (shaping on); three comparisons:

(a) throughput: for a sample of in-plane and cross-plane ISLs, TCP (iperf3) between the
    two neighbour hosts (host -> switch -> ISL -> switch -> host; host links are
    unshaped, so the ISL's htb class is the bottleneck) against the rate the model gives
    that link (Shannon capacity of its length x ``rate_scale``, capped: the ``shaped``
    rate).  Reported as ``ratio = measured / shaped`` per link.  TCP goodput excludes
    the Ethernet/IP/TCP headers htb counts (1448 of 1514 bytes per full frame, 0.956).
(b) RTT: ping between the same neighbours against twice the model's propagation delay
    (2 d/c) -- only where the kernel has sch_netem (``testbed.metadata["netem"]``);
    without it delay is not emulated and the part is skipped, with the reason.
(c) job time: many real jobs (seeds x allocators x reducers, collector counts cycled)
    and, per job, its measured ``job_time`` against four predictions, each with its
    Spearman rank correlation:

    * ``cost``: the plan's paper cost (Eq. 5-7 at V = 10 GB per collector, Shannon rate
      of the whole path length, K = 1 s, t_h = 3 s per hop) -- what the planner optimises;
    * ``paper_scaled_s``: the same S(d, V) = d/c + 8V/(rate_scale * B log2(1+SNR(d)))
      summed over every transfer of the job, at the volumes the job really moved (bytes
      per collector, per mapper, the result) and without processing/hop overheads
      (the emulator does not emulate them);
    * ``per_hop_s``: :mod:`node_app.job_model`: per phase, streams share each ISL
      max-min fairly (re-shared as streams finish), a stream runs at its slowest hop's
      share, plus per-hop propagation delay where netem emulates it; phases added
      (``per_hop_pipelined_s``: collect and map streams at once, sharing links);
    * ``link_load_s``: what the emulator should do: each phase (collect -> map, map ->
      reduce, reduce -> LOS) lasts as long as its most loaded ISL needs (sum of the bytes
      of every flow routed over it / its shaped rate), phases added.  Flows share links
      and run in parallel, which the paper's per-transfer sum does not model.

(d) ``forwarding`` (a part not in the defaults, :mod:`experiments.forwarding`): the
    datapath's forwarding capacity measured on its own testbed with every ISL at the htb
    ceiling, independently of the jobs; it adds ``per_hop_fwd_s`` and
    ``per_hop_fwd_pipelined_s`` (the per-hop model with that budget) to (c).  ``forward_bps``
    in the config reuses an earlier calibration.  ``aoi_boxes`` runs (c) on geographic AOIs.
(e) ``hoprate`` (a part not in the defaults, :func:`experiments.forwarding.measure_hop_rate`):
    ``hoprate_streams`` TCP streams at once over paths of 1 to planes/2 hops on the shaped
    network; the goodput x hops of those their links did not limit is the latency bound
    ``hop_rate_bps`` of ``per_hop_latency_s`` (the chained per-hop model with a stream over
    h hops at most ``hop_rate_bps / h``).  ``hop_rate_bps`` in the config reuses a measurement.

Where a plan ran more than once (a geographic box's plan does not depend on the seed),
``metrics.json`` adds ``jobs.repeats``: the test-retest rank correlation of the measured
times (what any model can reach against one run) and each predictor against the plans'
median times.

Writes ``results/fidelity/<timestamp>/``: ``config.yaml``, ``environment.json``,
``links.csv``, ``rtt.csv`` (with netem), ``jobs.csv``, ``forwarding.csv`` and
``hoprate.csv`` (with those parts), ``metrics.json``,
``throughput.png``, ``jobs.png`` and, with ``--pcap``, ``pcap/*.pcap``.  ``--json``
prints one line (``throughput``, ``rtt``, ``jobs`` summaries, ``results_dir``).
Exit 0 when everything ran, 1 when a measurement, a job or the testbed failed, 2 on
bad input.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

from experiments import common
from experiments.common import UsageError
from experiments.forwarding import (TCP_GOODPUT_SHARE, check_forwarding, cpu_busy_pct,
                                    cpu_times, tcp_counters)
from experiments.job_predictions import PREDICTORS, diagnostics, predictions, spearman  # noqa: F401 (API)
from experiments.output import Progress, new_result_dir, write_csv, write_json, write_yaml
from experiments.paper_plots import save_png_svg
from topo import cli

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "fidelity.yaml"
WORKLOADS = ("wordcount", "synthetic")
DEFAULTS = {"grid": "5x5", "parts": ["throughput", "rtt", "jobs"],
            "in_plane_links": 3, "cross_plane_links": 3, "iperf_seconds": 6, "iperf_omit_s": 2,
            "rtt_pings": 10, "minsat": 1, "maxsat": 5, "collectors": [4, 6, 8],
            "seeds": 3, "first_seed": 1, "allocators": ["random", "eager", "bipartite"],
            "reducers": ["los", "center"], "workload": "wordcount", "data_volume_bytes": 2_000_000,
            "job_timeout_s": 300, "testbed": {}, "aoi_boxes": [],
            "forwarding_hops": [1, 2, 3, 4], "forwarding_seconds": 5,
            "forwarding_lift_mbps": 10000,
            "forward_bps": None, "forward_scope": "global", "queue_bytes": None,
            "hoprate_streams": 10, "hoprate_seconds": 10, "hop_rate_bps": None}


def load_config(path: Path, overrides: dict) -> dict:
    cfg = common.load_config(path, DEFAULTS, overrides)
    common.check_choices(cfg, "parts",
                         ("forwarding", "queueing", "hoprate", "throughput", "rtt", "jobs"))
    check_forwarding(cfg)
    common.check_ints(cfg, ("in_plane_links", "cross_plane_links", "first_seed"), minimum=0)
    common.check_ints(cfg, ("iperf_seconds", "rtt_pings", "minsat", "maxsat", "seeds",
                            "data_volume_bytes", "job_timeout_s"))
    common.check_ints(cfg, ("iperf_omit_s",), minimum=0)
    common.check_ints(cfg, ("hoprate_streams",), minimum=2)
    common.check_ints(cfg, ("hoprate_seconds",))
    if isinstance(cfg["collectors"], int) and not isinstance(cfg["collectors"], bool):
        cfg["collectors"] = [cfg["collectors"]]
    if (not isinstance(cfg["collectors"], list) or not cfg["collectors"]
            or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in cfg["collectors"])):
        raise UsageError(f"collectors: {cfg['collectors']!r} must be a positive integer or a list of them")
    common.check_choices(cfg, "allocators", ("random", "bipartite", "eager"))
    common.check_choices(cfg, "reducers", ("los", "center"))
    if cfg["workload"] not in WORKLOADS:
        raise UsageError(f"workload: {cfg['workload']!r} must be one of {', '.join(WORKLOADS)}")
    if cfg["testbed"].get("shaping") is False:
        raise UsageError("testbed.shaping: fidelity measures the shaping; it must be on")
    tb_cfg = common.testbed_config(cfg)
    if "hoprate" in cfg["parts"] and cfg["hoprate_streams"] > tb_cfg.sats_per_plane:
        raise UsageError(f"hoprate_streams: {cfg['hoprate_streams']} streams need as many "
                         f"satellites per plane, the {cfg['grid']} grid has {tb_cfg.sats_per_plane}")
    side = min(tb_cfg.planes, tb_cfg.sats_per_plane)
    if cfg["maxsat"] > side or cfg["minsat"] > cfg["maxsat"]:
        raise UsageError(f"maxsat: AOI {cfg['minsat']}..{cfg['maxsat']} does not fit the {cfg['grid']} grid")
    cells = (cfg["maxsat"] - cfg["minsat"] + 1) ** 2
    if 2 * max(cfg["collectors"]) > cells:
        raise UsageError(f"collectors: {max(cfg['collectors'])} collectors and as many mappers "
                         f"need {2 * max(cfg['collectors'])} AOI cells, the AOI has {cells}")
    return cfg


# --- (a) throughput and (b) RTT ------------------------------------------------------------

def sample_links(shapes: dict, n_in: int, n_cross: int) -> list:
    """Up to ``n_in`` in-plane and ``n_cross`` cross-plane ISLs that are up, spread over the
    grid; cross-plane ones spread over their lengths (so over their rates)."""
    def spread(items, n):
        if n <= 0 or not items:
            return []
        if n >= len(items):
            return items
        step = (len(items) - 1) / max(n - 1, 1)
        return [items[round(k * step)] for k in range(n)]

    up = [s for s in shapes.values() if s.state != "down"]
    in_plane = sorted((s for s in up if s.kind == "in"), key=lambda s: (s.a[1], s.a[0], s.b))
    # One in-plane link per plane first (different switches), then the rest.
    seen, first = set(), []
    for s in in_plane:
        if s.a[1] not in seen:
            seen.add(s.a[1])
            first.append(s)
    in_plane = first + [s for s in in_plane if s not in first]
    cross = sorted((s for s in up if s.kind == "cross"), key=lambda s: (s.length_m, s.a[1], s.a[0]))
    # One link of each distinct length first (spread over them), so the sample covers the
    # rate range; then the others.
    by_len = {}
    for s in cross:
        by_len.setdefault(round(s.length_m), s)
    picked = spread(list(by_len.values()), n_cross)
    cross = picked + [s for s in cross if s not in picked][:max(0, n_cross - len(picked))]
    return in_plane[:n_in] + cross


def iperf_bps(server, client, ip: str, seconds: int, omit_s: int, port: int = 5201,
              wait_s: float = 20.0) -> float:
    """TCP goodput client -> server (iperf3, receiver side), bit/s.  The client starts once
    the server listens (at most ``wait_s``: a host on another server starts it over SSH)."""
    srv = server.popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + wait_s
        while f":{port} " not in server.cmd(f"ss -Htln sport = :{port}") + " ":
            if time.monotonic() > deadline or srv.poll() is not None:
                raise RuntimeError(f"iperf3 server on {server.name} did not listen")
            time.sleep(0.1)
        out = client.cmd(f"iperf3 -c {ip} -p {port} -t {seconds} -O {omit_s} -J")
        data = json.loads(out[out.index("{"):])
        if "error" in data:
            raise RuntimeError(f"iperf3: {data['error']}")
        return float(data["end"]["sum_received"]["bits_per_second"])
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait(5)


def measure_throughput(tb, links, cfg, progress) -> list[dict]:
    rows = []
    for s in links:
        bps = iperf_bps(tb.host_of(s.b), tb.host_of(s.a), tb.ip_of(s.b),
                        cfg["iperf_seconds"], cfg["iperf_omit_s"])
        rows.append({"link": f"{list(s.a)}-{list(s.b)}", "kind": s.kind, "length_km": s.length_m / 1e3,
                     "model_mbps": s.model_bps / 1e6, "shaped_mbps": s.rate_bps / 1e6, "capped": s.capped,
                     "measured_mbps": bps / 1e6, "ratio": bps / s.rate_bps,
                     "goodput_ratio": bps / (s.rate_bps * TCP_GOODPUT_SHARE)})
        progress.advance()
    return rows


def measure_rtt(tb, links, cfg, progress) -> list[dict]:
    rows = []
    for s in links:
        out = tb.host_of(s.a).cmd(f"ping -c {cfg['rtt_pings']} -i 0.2 -W 2 {tb.ip_of(s.b)}")
        rtts = [float(tok.split("=")[1]) for tok in out.split() if tok.startswith("time=")]
        model_ms = 2 * s.delay_s * 1e3
        rtt = min(rtts) if rtts else math.nan
        rows.append({"link": f"{list(s.a)}-{list(s.b)}", "kind": s.kind, "length_km": s.length_m / 1e3,
                     "model_rtt_ms": model_ms, "min_rtt_ms": rtt,
                     "median_rtt_ms": statistics.median(rtts) if rtts else math.nan,
                     "ratio": rtt / model_ms if model_ms > 0 else math.nan, "replies": len(rtts)})
        progress.advance()
    return rows


# --- (c) job time against the cost model -------------------------------------------------------

def job_list(cfg: dict) -> list[tuple]:
    """(seed, allocator, reducer, collectors or a geographic box) of every job: with
    ``aoi_boxes`` each box x seeds x allocators x reducers, else the grid AOI with the
    collector counts in turn."""
    seeds = range(cfg["first_seed"], cfg["first_seed"] + cfg["seeds"])
    if cfg["aoi_boxes"]:
        return [(s, a, r, str(box)) for box in cfg["aoi_boxes"] for s in seeds
                for a in cfg["allocators"] for r in cfg["reducers"]]
    jobs = [(s, a, r) for s in seeds for a in cfg["allocators"] for r in cfg["reducers"]]
    return [(s, a, r, cfg["collectors"][k % len(cfg["collectors"])]) for k, (s, a, r) in enumerate(jobs)]


def plan_digest(plan: dict) -> str:
    """A short name of what a job ran (its allocations, reducer and LOS): equal for two jobs
    that moved the same data over the same routes."""
    key = json.dumps([plan.get("allocations"), plan.get("reducer"), plan.get("los")])
    return hashlib.sha1(key.encode()).hexdigest()[:10]


def build_router(tb):
    """The controller's routing rule on ``tb`` as built: its constellation at the build's
    time, without the links the build took down (the routes jobs and calibration streams take)."""
    from controller.routing import Router
    return Router(tb.c, t_s=tb.cfg.start_time_s,
                  down={k for k, s in tb.shapes.items() if s.state == "down"})


def run_jobs(tb, nodes, cfg, progress, forwarding: dict | None = None,
             queue_bytes: float | None = None, failed: list | None = None,
             hop_rate_bps: float | None = None, router=None) -> list[dict]:
    """One row per job that ran to its result; a job that failed goes to ``failed``
    (its shape and error) and the next one runs, so what was measured is kept.
    router: the build's Router (:func:`build_router`), built here when not given."""
    from node_app.tasks.wordcount import exact_word_count, resolve_data_file

    exact = exact_word_count(resolve_data_file("data/sample.txt")) if cfg["workload"] == "wordcount" else None
    if router is None:
        router = build_router(tb)
    rows = []
    for seed, allocator, reducer, collectors in job_list(cfg):
        args = ["-a", allocator, "-r", reducer, "-s", str(seed)]
        if isinstance(collectors, str):
            args += ["--aoi-box", collectors]
        else:
            args += ["-mi", str(cfg["minsat"]), "-ma", str(cfg["maxsat"]), "-c", str(collectors)]
        if cfg["workload"] == "synthetic":
            args += ["--workload", "synthetic", "--data-volume", str(cfg["data_volume_bytes"])]
        before, cpu_before = tcp_counters(tb), cpu_times()
        try:
            out = nodes.run_job(args, timeout_s=cfg["job_timeout_s"])
        except RuntimeError as e:
            if failed is None:
                raise
            failed.append({"seed": seed, "allocator": allocator, "reducer": reducer,
                           "aoi": collectors if isinstance(collectors, str) else "grid",
                           "error": str(e)[-300:]})
            progress.advance()
            continue
        after, cpu = tcp_counters(tb), cpu_busy_pct(cpu_before, cpu_times())
        rows.append({"seed": seed, "allocator": allocator, "reducer": reducer,
                     "collectors": len(out["plan"]["allocations"]), "plan": plan_digest(out["plan"]),
                     "aoi": collectors if isinstance(collectors, str) else "grid",
                     **common.job_row(out, exact), **diagnostics(out),
                     **{k: None if after[k] is None or before[k] is None else after[k] - before[k]
                        for k in after},
                     "cpu_busy_pct": cpu,
                     **predictions(out, router, tb.shapes, tb.cfg.rate_scale, tb.lm,
                                    netem=bool(tb.metadata.get("netem")),
                                    forward_bps=(forwarding or {}).get("forward_bps"),
                                    forward_scope=(forwarding or {}).get("forward_scope", "global"),
                                    queue_bytes=queue_bytes, hop_rate_bps=hop_rate_bps)})
        progress.advance()
    return rows


def summarise(links: list, rtt: list | None, rtt_skip: str | None, jobs: list) -> dict:
    out = {}
    if links:
        ratios = [r["ratio"] for r in links]
        out["throughput"] = {"links": len(links), "ratio_min": min(ratios), "ratio_max": max(ratios),
                             "ratio_mean": statistics.fmean(ratios),
                             "within_10pct": all(abs(r - 1) <= 0.10 for r in ratios),
                             "tcp_goodput_share": TCP_GOODPUT_SHARE,
                             "per_link": {r["link"]: r["ratio"] for r in links}}
    if rtt_skip:
        out["rtt"] = {"skipped": True, "reason": rtt_skip}
    elif rtt is not None:
        ratios = [r["ratio"] for r in rtt if math.isfinite(r["ratio"])]
        out["rtt"] = {"skipped": False, "links": len(rtt),
                      "ratio_min": min(ratios) if ratios else None,
                      "ratio_max": max(ratios) if ratios else None,
                      "per_link": {r["link"]: r["ratio"] for r in rtt}}
    if jobs:
        t = [r["job_time"] for r in jobs]
        out["jobs"] = {"n": len(jobs), "job_time_min": min(t), "job_time_max": max(t),
                       "all_exact": all(r.get("exact", True) for r in jobs),
                       "predictors": PREDICTORS,
                       "spearman": {p: spearman([r[p] for r in jobs], t)
                                    for p in ("link_load_s", "per_hop_s", "per_hop_pipelined_s",
                                              "per_hop_chained_s", "per_hop_queue_s",
                                              "per_hop_latency_s", "per_hop_fwd_s",
                                              "per_hop_fwd_pipelined_s",
                                              "paper_scaled_s", "cost", "distance")
                                    if p in jobs[0]}}
        out["jobs"]["totals"] = {  # where the unmodelled time went, summed over the jobs
            "jobs_with_reassignments": sum(1 for r in jobs if r.get("reassignments")),
            **{k: _total(jobs, k) for k in
               ("reassignments", "syn_retrans", "listen_drops", "tcp_timeouts")},
            **_cpu_summary(jobs)}
        calm = [r for r in jobs if not r.get("reassignments")]
        out["jobs"]["without_reassignments"] = {
            "n": len(calm), "spearman": {p: spearman([r[p] for r in calm], [r["job_time"] for r in calm])
                                         for p in out["jobs"]["spearman"]}}
        out["jobs"]["repeats"] = repeatability(jobs, list(out["jobs"]["spearman"]))
    return out


def repeatability(jobs: list, predictors: list) -> dict | None:
    """How well the measurement agrees with itself, for runs that ran the same plan more
    than once (``plan`` column; a geographic box's plan does not change with the seed):
    ``test_retest_rho``, Spearman between each plan's first and second measured job time
    (the most any model can reach against one run's times), and ``spearman_plan_median``,
    each predictor against the median time of each plan's runs.  None when no plan ran twice."""
    by_plan: dict = {}
    for r in jobs:
        if r.get("plan"):
            by_plan.setdefault(r["plan"], []).append(r)
    repeated = [rows for rows in by_plan.values() if len(rows) > 1]
    if len(repeated) < 3:
        return None
    return {"plans": len(repeated), "runs_per_plan_min": min(len(rows) for rows in repeated),
            "test_retest_rho": spearman([rows[0]["job_time"] for rows in repeated],
                                        [rows[1]["job_time"] for rows in repeated]),
            "spearman_plan_median": {
                p: spearman([statistics.median(r[p] for r in rows) for rows in repeated],
                            [statistics.median(r["job_time"] for r in rows) for rows in repeated])
                for p in predictors}}


CPU_SATURATED_PCT = 95.0
"""A job during which the machine's CPUs were at least this busy ran at the emulator's pace."""


def _cpu_summary(rows: list) -> dict:
    """``cpu_busy_pct_median`` and ``jobs_cpu_saturated`` (busy >= CPU_SATURATED_PCT) over the
    jobs whose CPU share was read (both None when none was)."""
    vals = [r["cpu_busy_pct"] for r in rows if r.get("cpu_busy_pct") is not None]
    if not vals:
        return {"cpu_busy_pct_median": None, "jobs_cpu_saturated": None}
    return {"cpu_busy_pct_median": statistics.median(vals),
            "jobs_cpu_saturated": sum(1 for v in vals if v >= CPU_SATURATED_PCT)}


def saturation_warning(metrics: dict) -> str | None:
    """One line when some jobs ran with the machine's CPUs saturated (their time is the
    emulator's, not the modelled network's), else None."""
    jobs = metrics.get("jobs") or {}
    saturated = (jobs.get("totals") or {}).get("jobs_cpu_saturated")
    if not saturated:
        return None
    return (f"warning: {saturated} of {jobs['n']} jobs ran with the machine's CPUs at least "
            f"{CPU_SATURATED_PCT:.0f}% busy: the emulator, not the shaped links, set their pace "
            f"(cpu_busy_pct in jobs.csv)")


def _total(rows: list, key: str):
    """Sum of ``key`` over the rows that have it (None when none has: not measured)."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    return sum(vals) if vals else None


def plot(links: list, rtt: list | None, jobs: list, out_dir: Path) -> list[Path]:
    """``throughput``, ``rtt`` and ``jobs`` as PNG and SVG (each point one link or one job)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    if links:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        names = [r["link"] for r in links]
        colors = ["#1f77b4" if r["kind"] == "in" else "#ff7f0e" for r in links]
        x = range(len(links))
        axes[0].bar([i - 0.2 for i in x], [r["shaped_mbps"] for r in links], 0.4, label="model (shaped)", color="#cccccc")
        axes[0].bar([i + 0.2 for i in x], [r["measured_mbps"] for r in links], 0.4, label="TCP measured", color=colors)
        axes[0].set_xticks(list(x), names, rotation=30, fontsize=7, ha="right")
        axes[0].set_ylabel("Mbit/s")
        axes[0].set_yscale("log")
        axes[0].legend(fontsize=8)
        axes[0].set_title("ISL throughput (blue in-plane, orange cross-plane)")
        axes[1].bar(list(x), [r["ratio"] for r in links], color=colors)
        axes[1].axhline(1.0, color="k", lw=0.8)
        axes[1].axhline(TCP_GOODPUT_SHARE, color="k", lw=0.8, ls=":")
        axes[1].axhspan(0.9, 1.1, alpha=0.1, color="green")
        axes[1].set_xticks(list(x), names, rotation=30, fontsize=7, ha="right")
        axes[1].set_title("measured / shaped (dotted: TCP header share)")
        fig.tight_layout()
        paths += save_png_svg(fig, out_dir, "throughput")
    if rtt:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter([r["model_rtt_ms"] for r in rtt], [r["min_rtt_ms"] for r in rtt])
        hi = max([r["model_rtt_ms"] for r in rtt] + [1])
        ax.plot([0, hi], [0, hi], "k--", lw=0.8)
        ax.set_xlabel("model 2d/c (ms)")
        ax.set_ylabel("measured min RTT (ms)")
        fig.tight_layout()
        paths += save_png_svg(fig, out_dir, "rtt")
    if jobs:
        preds = [("link_load_s", "link-load prediction (s)"), ("per_hop_s", "per-hop model (s)"),
                 ("paper_scaled_s", "paper S(d,V) at emulated V (s)"), ("cost", "plan cost, paper Eq. 5-7 (s)")]
        fig, axes = plt.subplots(1, 4, figsize=(18, 4))
        t = [r["job_time"] for r in jobs]
        for ax, (key, label) in zip(axes, preds):
            rho = spearman([r[key] for r in jobs], t)["rho"]
            for alloc, marker in (("random", "o"), ("eager", "s"), ("bipartite", "^")):
                sel = [r for r in jobs if r["allocator"] == alloc]
                ax.scatter([r[key] for r in sel], [r["job_time"] for r in sel], marker=marker, label=alloc)
            ax.set_xlabel(label)
            ax.set_ylabel("measured job_time (s)")
            ax.set_title(f"Spearman rho = {rho:.2f}" if rho is not None else "n < 3")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        paths += save_png_svg(fig, out_dir, "jobs")
    return paths


def run_fidelity(cfg: dict, out_dir: Path, pcap: str | None, echo):
    """(links, rtt rows, rtt skip reason, job rows, forwarding calibration or None,
    standing queue measurement or None, latency bound measurement or None, failed jobs)."""
    from experiments.capture import Capture
    from node_app.emulated import EmulatedNodes
    from topo.testbed import Testbed

    links_rows, rtt_rows, rtt_skip, job_rows, failed = [], None, None, [], []
    fwd = None
    if cfg["forward_bps"] and "forwarding" not in cfg["parts"]:
        fwd = {"forward_bps": float(cfg["forward_bps"]), "forward_scope": cfg["forward_scope"],
               "source": "config"}
    with Testbed(common.testbed_config(cfg), echo=echo) as tb:
        from experiments import forwarding
        router = build_router(tb)
        if "forwarding" in cfg["parts"]:
            fwd = forwarding.measure(tb, router, cfg["forwarding_hops"], cfg["forwarding_seconds"],
                                     1, cfg["forwarding_lift_mbps"] * 1e6,
                                     Progress(len(cfg["forwarding_hops"]) + 1, "forwarding"))
        queue = None
        if "queueing" in cfg["parts"]:
            queue = forwarding.measure_queue(tb, cfg["forwarding_seconds"])
            echo(f"queueing: {queue['queue_bytes'] / 1e3:.0f} kB standing queue on {queue['link']} "
                 f"({queue['rate_mbps']:.1f} Mbit/s: RTT {queue['idle_rtt_ms']:.1f} -> "
                 f"{queue['loaded_rtt_ms']:.1f} ms)")
        elif cfg["queue_bytes"] is not None:
            queue = {"queue_bytes": float(cfg["queue_bytes"]), "source": "config"}
        hoprate = None
        if "hoprate" in cfg["parts"]:
            hoprate = forwarding.measure_hop_rate(tb, router, cfg["hoprate_streams"],
                                                  cfg["hoprate_seconds"], 2)
            echo(f"hoprate: {hoprate['bound_streams']} of {hoprate['streams']} streams "
                 f"latency-bound, hop_rate "
                 + ("none" if hoprate["hop_rate_bps"] is None
                    else f"{hoprate['hop_rate_bps'] / 1e6:.1f} Mbit/s x hops"))
        elif cfg["hop_rate_bps"] is not None:
            hoprate = {"hop_rate_bps": float(cfg["hop_rate_bps"]), "source": "config"}
        env = common.testbed_environment(tb)
        if queue:
            env["queueing"] = queue
        if hoprate:
            env["hoprate"] = {k: v for k, v in hoprate.items() if k != "rows"}
        if fwd:
            env["forwarding"] = {k: fwd[k] for k in ("forward_bps", "forward_scope")}
        write_json(out_dir / "environment.json", env)
        links = sample_links(tb.shapes, cfg["in_plane_links"], cfg["cross_plane_links"])
        capture = Capture(tb, pcap, str(out_dir / "pcap")) if pcap else None
        if capture:
            capture.__enter__()
        try:
            if "throughput" in cfg["parts"] and links:
                links_rows = measure_throughput(tb, links, cfg, Progress(len(links), "throughput links"))
            if "rtt" in cfg["parts"]:
                if not tb.metadata.get("netem"):
                    rtt_skip = ("no sch_netem in this kernel: propagation delay is not emulated "
                                "(testbed metadata netem=false), so RTT cannot be compared with 2d/c")
                    echo(f"rtt: skipped: {rtt_skip}")
                elif links:
                    rtt_rows = measure_rtt(tb, links, cfg, Progress(len(links), "rtt links"))
            if "jobs" in cfg["parts"]:
                jobs = job_list(cfg)
                with EmulatedNodes(tb, str(out_dir / "run")) as nodes:
                    job_rows = run_jobs(tb, nodes, cfg, Progress(len(jobs), "fidelity jobs"), fwd,
                                        queue["queue_bytes"] if queue else None, failed,
                                        hop_rate_bps=(hoprate or {}).get("hop_rate_bps"),
                                        router=router)
        finally:
            if capture:
                capture.__exit__(None, None, None)
    return links_rows, rtt_rows, rtt_skip, job_rows, fwd, queue, hoprate, failed


def _fmt(v, spec=".3f"):
    return "n/a" if v is None else format(v, spec)


def main(argv=None) -> int:
    p = common.parser("python3 -m experiments.fidelity", __doc__, DEFAULT_CONFIG)
    p.add_argument("--links", type=int, help="in-plane and cross-plane links each (overrides the config)")
    p.add_argument("--seeds", type=int, help="seeds (jobs = seeds x allocators x reducers)")
    try:
        args = p.parse_args(argv)
        over = {"grid": args.grid, "seeds": args.seeds, "in_plane_links": args.links,
                "cross_plane_links": args.links}
        cfg = load_config(args.config, over)
    except (UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not common.need_root("fidelity"):
        return 2
    out_dir = new_result_dir(args.results, "fidelity")
    write_yaml(out_dir / "config.yaml", cfg)
    try:
        links, rtt, rtt_skip, jobs, fwd, queue, hoprate, failed = run_fidelity(
            cfg, out_dir, args.pcap, common.echo_stderr)
    except Exception as e:  # the testbed tore itself down; say what failed, in one line
        print(f"error: fidelity run failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if links:
        write_csv(out_dir / "links.csv", links)
    if rtt:
        write_csv(out_dir / "rtt.csv", rtt)
    if jobs:
        write_csv(out_dir / "jobs.csv", jobs)
    metrics = {"grid": cfg["grid"], **summarise(links, rtt, rtt_skip, jobs), "results_dir": str(out_dir)}
    if queue:
        metrics["queueing"] = queue
    if hoprate:
        metrics["hoprate"] = {k: v for k, v in hoprate.items() if k != "rows"}
        if hoprate.get("rows"):
            write_csv(out_dir / "hoprate.csv", hoprate["rows"])
    if failed:  # measured jobs are kept; the run still exits 1
        metrics["jobs_failed"] = failed
        write_csv(out_dir / "jobs_failed.csv", failed)
    if fwd:
        metrics["forwarding"] = {k: v for k, v in fwd.items() if k != "rows"}
        if fwd.get("rows"):
            write_csv(out_dir / "forwarding.csv", fwd["rows"])
    write_json(out_dir / "metrics.json", metrics)
    plot(links, rtt, jobs, out_dir)
    status = 0
    warning = saturation_warning(metrics)
    if warning:
        print(warning, file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} of {len(failed) + len(jobs)} jobs failed (the others are "
              f"kept: {out_dir}); first: {failed[0]['error'][-200:]}", file=sys.stderr)
        status = 1
    if args.json:
        from experiments.output import json_safe
        print(json.dumps(json_safe(metrics)))
        return status
    if links:
        print(f"{'link':<16} {'kind':<5} {'km':>7} {'shaped':>8} {'TCP':>8} {'ratio':>6}")
        for r in links:
            print(f"{r['link']:<16} {r['kind']:<5} {r['length_km']:>7.0f} {r['shaped_mbps']:>8.3f} "
                  f"{r['measured_mbps']:>8.3f} {r['ratio']:>6.3f}")
        th = metrics["throughput"]
        print(f"throughput: ratio {th['ratio_min']:.3f}..{th['ratio_max']:.3f} "
              f"({'all within 10%' if th['within_10pct'] else 'NOT all within 10%'})")
    if "rtt" in metrics:
        if metrics["rtt"]["skipped"]:
            print(f"rtt: skipped: {metrics['rtt']['reason']}")
        else:
            print(f"rtt: measured / 2d/c {_fmt(metrics['rtt']['ratio_min'])}..{_fmt(metrics['rtt']['ratio_max'])}")
    if fwd and fwd.get("rows"):
        for r in fwd["rows"]:
            print(f"forwarding: {r['kind']:<13} {r['hops']} hops, {r['streams']} stream(s): "
                  f"{r['goodput_mbps']:.1f} Mbit/s")
        print(f"forwarding: forward_bps {fwd['forward_bps'] / 1e6:.1f} Mbit/s, scope "
              f"{fwd['forward_scope']} (pair / single {fwd['pair_over_single']:.2f})")
    if hoprate and hoprate.get("rows"):
        for r in hoprate["rows"]:
            print(f"hoprate: {r['hops']:>3} hops: {r['goodput_mbps']:.2f} Mbit/s of "
                  f"{r['links_share_mbps']:.2f} ({'latency-bound' if r['bound'] else 'links'})")
    if jobs:
        jm = metrics["jobs"]
        print(f"jobs: {jm['n']}, job_time {jm['job_time_min']:.2f}..{jm['job_time_max']:.2f} s, "
              f"all exact: {jm['all_exact']}")
        for key, s in jm["spearman"].items():
            print(f"  spearman(job_time, {key}) = {_fmt(s['rho'])} (p {_fmt(s['p'], '.2g')})")
        rep = jm.get("repeats")
        if rep:
            print(f"  {rep['plans']} plans ran {rep['runs_per_plan_min']}+ times: test-retest "
                  f"rho {_fmt(rep['test_retest_rho']['rho'])}; against each plan's median time:")
            for key, s in rep["spearman_plan_median"].items():
                print(f"    spearman(median job_time, {key}) = {_fmt(s['rho'])}")
    print(f"results: {out_dir}")
    return status


if __name__ == "__main__":
    sys.exit(cli.run(main))
