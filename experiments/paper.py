"""The paper's sweeps by simulation, with the project's own routing, planner and cost model.

    python3 -m experiments.paper                  # full sweeps (experiments/paper.yaml)
    python3 -m experiments.paper --quick --json   # seconds; one JSON line on stdout

The paper's Figs 3-10 on its own setup (20 seeded runs a point, over all cores):
Fig 3/4 path length and hops vs constellation size, distance-aware routing
(:class:`controller.routing.Router`) vs plane-first
(:class:`controller.routing.PlaneFirstRouter`), without and with cross-over links down;
Fig 5/6 map cost of the random / eager / bipartite allocators vs plane count; Fig 7
reduce cost of LOS vs center placement; Fig 8 center's saving vs F_R; Figs 9/10 node
visits on the map and reduce paths.  Jobs: geographic AOI over the contiguous US,
ascending-only, 1/5 collectors and a disjoint 1/5 mappers, the LOS satellite over a
random US city of more than 1 million people, physical cost (Eq. 5-7).  Every
alternative reading of the paper's setup is a config key; the ``sensitivity`` section
reruns the job sweeps with one option changed at a time.

Writes ``results/paper/<timestamp>/``: config.yaml, environment.json, raw runs and
summaries as CSV, figures.json, compare.csv (each of the paper's points beside ours
with its 95% interval), sensitivity.csv, metrics.json, headline.md, and each figure as
PNG and SVG.  ``--jobs-from DIR`` (repeatable, a result directory of experiments.fidelity)
adds the models against those measured jobs to headline.md and ``measured_jobs`` to the
metrics.  Exit codes: 0 ok, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

from experiments import measured_jobs, output, paper_figures, paper_report, sweeps
from experiments.paper_config import (DEFAULT_CONFIG, DEFAULT_VARIANT, describe, load_config,
                                      variants)
from experiments.paper_report import PAPER_RANGES, verdict
from topo.constellation import Constellation
from topo import cli
from topo.cli import UsageError

EXPERIMENT = "paper"


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python3 -m experiments.paper",
                   "The SpaceCoMP paper's sweeps by simulation (no network).")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="small sizes and few runs (seconds)")
    p.add_argument("--json", action="store_true", help="print one JSON line of metrics on stdout")
    p.add_argument("--results", help="results root (default: the config's, 'results')")
    p.add_argument("--workers", type=int, help="processes (default: the config's; 0 = all cores)")
    p.add_argument("--runs", type=int, help="runs per point (overrides the config)")
    p.add_argument("--seed", type=int, help="base seed (overrides the config)")
    p.add_argument("--jobs-from", action="append", default=[], metavar="DIR",
                   help="a result directory of experiments.fidelity (repeatable): headline.md "
                        "compares the models with its measured jobs")
    return p


# --- running -------------------------------------------------------------------------------------
def _call(task):
    kind, fn, args, kwargs = task
    return kind, fn(*args, **kwargs)


def headline_reduce_factor(config: dict) -> float:
    return float(config["jobs"]["cost_model"].get("reduce_reduction_factor", 5.0))


def build_tasks(config: dict) -> list:
    """Every run of every sweep, largest first (keeps the pool busy to the end)."""
    seed, runs, kw = config["seed"], config["runs"], config["constellation"]
    r = config["routing"]
    f_r = headline_reduce_factor(config)
    tasks = []
    for n in r["sizes"]:
        for outages in (False, True):
            for run in range(runs):
                tasks.append((n * n * (8 if outages else 1), ("routing", sweeps.routing_run,
                              (n, outages, run),
                              dict(seed=seed, endpoints=r["endpoints"],
                                   outage_lat_deg=r["outage_lat_deg"], constellation=kw))))
    sens_runs = (config.get("sensitivity") or {}).get("runs", runs)
    for name, jobs in variants(config).items():
        jobs = dict(jobs)
        main = name == DEFAULT_VARIANT
        # The headline F_R is always costed, whether or not the F_R sweep lists it;
        # variants only need the headline F_R.
        factors = {float(f) for f in jobs["reduce_factors"]} if main else set()
        jobs["reduce_factors"] = sorted(factors | {f_r})
        for n in jobs["planes"]:
            for run in range(runs if main else sens_runs):
                tasks.append((n * n * (2 if main else 1), (f"jobs:{name}", sweeps.job_run, (n, run),
                              dict(seed=seed, jobs=jobs, constellation=kw, routes=main))))
    tasks.sort(key=lambda t: -t[0])
    return [t for _, t in tasks]


def run_tasks(tasks: list, workers: int, progress: output.Progress) -> dict:
    """Run every task (in-process when one worker), collecting rows by kind:
    ``routing`` and, per job variant, ``{"map", "reduce", "skipped"}``."""
    rows = {"routing": [], "jobs": {}}

    def collect(kind, result):
        if kind == "routing":
            rows["routing"].extend(result)
        else:
            into = rows["jobs"].setdefault(kind.split(":", 1)[1],
                                           {"map": [], "reduce": [], "skipped": []})
            for key in ("map", "reduce", "skipped"):
                into[key].extend(result[key])
        progress.advance()

    if workers == 1:
        for task in tasks:
            collect(*_call(task))
        return rows
    with multiprocessing.Pool(workers) as pool:
        for kind, result in pool.imap_unordered(_call, tasks):
            collect(kind, result)
    return rows


def variant_headline(rows: dict, f_r: float, runs: int) -> dict:
    """The job headlines of one variant's rows, over its first ``runs`` runs (so every
    reading is compared over the same seeded runs)."""
    figs = paper_figures.job_figures([r for r in rows["map"] if r["run"] < runs],
                                     [r for r in rows["reduce"] if r["run"] < runs], f_r)
    figs["fig3_path_km"] = {"series": {}}
    head = paper_report.headline(figs, f_r)
    return {k: head[k]["mean"] for k in ("bipartite_vs_random_pct", "bipartite_vs_eager_pct",
                                           "center_vs_los_pct")}


# --- main --------------------------------------------------------------------------------------------
def run(config: dict, *, quick: bool, results_root: str, measured: list | None = None) -> dict:
    """Run the sweeps of ``config``, write the result directory, return the metrics;
    ``measured``: :func:`experiments.measured_jobs.load` summaries for headline.md."""
    measured = measured or []
    start = time.monotonic()
    workers = config["workers"] or os.cpu_count() or 1
    tasks = build_tasks(config)
    workers = max(1, min(workers, len(tasks)))
    progress = output.Progress(len(tasks), f"paper{' --quick' if quick else ''} ({workers} workers):")
    rows = run_tasks(tasks, workers, progress)
    sweep_s = time.monotonic() - start
    f_r = headline_reduce_factor(config)
    main_rows = rows["jobs"][DEFAULT_VARIANT]

    figures = paper_figures.routing_figures(rows["routing"])
    figures.update(paper_figures.job_figures(main_rows["map"], main_rows["reduce"], f_r))
    paper = paper_figures.load_paper_values()
    compare = paper_figures.compare(figures, paper)
    summary = paper_figures.figure_summary(compare)
    head = paper_report.headline(figures, f_r)
    routing = sweeps.summarise_routing(rows["routing"])
    sens_runs = min(config["runs"], (config.get("sensitivity") or {}).get("runs", config["runs"]))
    sens = {name: variant_headline(r, f_r, sens_runs) for name, r in rows["jobs"].items()}
    described = {name: describe(jobs) for name, jobs in variants(config).items()}
    sens_rows = paper_report.sensitivity_rows(sens, DEFAULT_VARIANT)

    out = output.new_result_dir(results_root, EXPERIMENT)
    output.write_yaml(out / "config.yaml", config)
    output.write_json(out / "environment.json", output.environment_info(
        datapath="simulation (no network: routing, planner and cost model only)",
        netem=False, workers=workers))
    output.write_csv(out / "routing_runs.csv", rows["routing"])
    output.write_csv(out / "routing.csv", routing)
    output.write_csv(out / "map_runs.csv", main_rows["map"])
    output.write_csv(out / "map_cost.csv", sweeps.summarise_map(main_rows["map"]))
    output.write_csv(out / "reduce_runs.csv", main_rows["reduce"])
    output.write_csv(out / "reduce_cost.csv", sweeps.summarise_reduce(main_rows["reduce"]))
    if main_rows["skipped"]:
        output.write_csv(out / "skipped_runs.csv", main_rows["skipped"])
    output.write_csv(out / "compare.csv", compare)
    output.write_csv(out / "sensitivity.csv", [
        {"variant": name, "setup": described[name], **values} for name, values in sens.items()])
    output.write_json(out / "figures.json", {"figures": figures, "paper": paper})

    straddling = sum(r["mappers_straddle_wrap"] for r in main_rows["reduce"]
                     if r["reduce_factor"] == f_r and r["reducetype"] == "center")
    center_runs = sum(1 for r in main_rows["reduce"]
                      if r["reduce_factor"] == f_r and r["reducetype"] == "center")
    hops_equal = all(r["pairs_more_hops"] == 0 for r in routing)
    best = [r["best_vs_los_pct"] for r in sweeps.summarise_reduce(main_rows["reduce"])
            if r["reduce_factor"] == f_r]
    best_stats = paper_report.stats_of(best)
    lines = [f"# The paper's figures on its own setup{' (--quick)' if quick else ''}", "",
             f"Setup (the paper's reading): {described[DEFAULT_VARIANT]}; {config['runs']} runs "
             f"a point; 95% intervals over runs.", "",
             "## Headlines", "", *paper_report.headline_table(head, f_r), "",
             f"- hops: distance-aware {'equals' if hops_equal else 'EXCEEDS'} plane-first on "
             f"every route ({sum(r['routes'] for r in routing)} routes)",
             f"- center reducer ({config['jobs']['center']}): {straddling} of {center_runs} job "
             f"runs had mappers straddling a ring's wrap",
             f"- the least-cost reducer (every satellite tried; a bound no placement beats): "
             f"{best_stats['mean']:.1f}% cheaper than LOS at F_R={f_r:g} "
             f"({best_stats['min']:.1f}..{best_stats['max']:.1f}% over the plane counts)",
             *paper_report.notes_for(head, compare),
             "- Figs 3-4 with in-plane legs of half an orbit ((N-1)/2 hops one way round, not "
             "the N/4 of the shortest way; our routes plus those hops), ours / paper: "
             + "; ".join(paper_report.half_orbit_check(compare, lambda n: Constellation(
                 n, n, **config["constellation"]).in_plane_length_m / 1e3)) + ".", "",
             "## Ours / paper per series: constant (a missing constant) or drifting with x "
             "(a setup difference)", "", *paper_report.ratio_table(paper_report.ratio_rows(compare)), "",
             "## The model against measured jobs", "", *measured_jobs.section(measured), "",
             "## Figure by figure", "", *paper_report.figure_table(summary), "",
             "## Sensitivity: each headline across the readings of the paper's setup", "",
             *paper_report.sensitivity_range_table(sens_rows), "",
             *paper_report.sensitivity_table(sens, described, DEFAULT_VARIANT), "",
             "## Point by point (compare.csv)", "", *paper_report.point_table(compare), ""]
    table = "\n".join(lines)
    (out / "headline.md").write_text(table)

    from experiments import paper_plots  # matplotlib only once there is something to draw
    paper_plots.plot_all(figures, paper, out)

    metrics = {
        "experiment": EXPERIMENT, "quick": quick, "runs": config["runs"], "workers": workers,
        **{key: head[key]["mean"] for key in head},
        "routing_hops_equal": hops_equal,
        "best_reducer_vs_los_pct": best_stats["mean"],
        "routing_pairs_longer": sum(r["pairs_longer"] for r in routing),
        "routing_routes": sum(r["routes"] for r in routing),
        "skipped_job_runs": len(main_rows["skipped"]),
        "ranges": {key: [head[key]["min"], head[key]["max"]] for key in head},
        "paper": {key: list(v) for key, v in PAPER_RANGES.items()},
        "verdict": {key: verdict(head[key]["mean"], v) for key, v in PAPER_RANGES.items()},
        "figures": figures,
        "figures_agree": {r["figure"]: [r["agree"], r["points"]] for r in summary},
        "sensitivity": sens_rows,
        "measured_jobs": measured,
        "wall_s": round(time.monotonic() - start, 2),
        "sweep_s": round(sweep_s, 2),
        "results_dir": str(out),
    }
    output.write_json(out / "metrics.json", {**metrics, "routing": routing})
    metrics["table"] = "\n".join(lines[:lines.index("## Point by point (compare.csv)")])
    return metrics


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        config = load_config(args.config, args.quick, {
            "workers": args.workers, "runs": args.runs, "seed": args.seed,
            "results": args.results})
        measured = measured_jobs.load(args.jobs_from)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics = run(config, quick=args.quick, results_root=config["results"], measured=measured)
    table = metrics.pop("table")
    if args.json:
        print(json.dumps(output.json_safe(metrics)))
    else:
        print(table, end="")
        print(f"results: {metrics['results_dir']}  ({metrics['wall_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
