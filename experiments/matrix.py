"""The reference's acceptance matrix on the emulated network.

    python3 -m experiments.matrix [--config experiments/matrix.yaml] [--grid 5x5] [--seeds 2]
                                  [--json] [--pcap auto] [--results DIR]

One testbed (Mininet torus, Friis/Shannon-shaped ISLs, Manhattan routes from the
controller) with a node daemon on every satellite; for each seed and each
allocator x reducer cell one real word-count job from ground station 1.  The five
orderings of the reference's acceptance checks are evaluated on the means of ``distance``,
``reduce_distance`` (hops) and the measured ``job_time`` (seconds):

1. random > bipartite on distance and job_time
2. los > center on reduce_distance
3. random-los > random-center on reduce_distance
4. bipartite-los > bipartite-center on reduce_distance and job_time
5. random-los > bipartite-center on all three

Writes ``results/matrix/<timestamp>/``: ``config.yaml``, ``environment.json`` (datapath,
netem, shaping caps, versions), ``jobs.csv`` (one row a job), ``means.csv``,
``metrics.json``, ``matrix.png`` and, with ``--pcap``, ``pcap/*.pcap``.  Prints a
table and the line ``checks: 1:ok 2:ok ...``; ``--json`` prints one JSON line instead
(``checks`` maps "1".."5" to true/false, ``means`` the per-cell means).  Exit 0 when
every job ran (whatever the checks say), 1 when a job or the testbed failed, 2 on
bad input.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from experiments import common
from experiments.common import UsageError
from experiments.output import Progress, new_result_dir, write_csv, write_json, write_yaml
from topo import cli

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "matrix.yaml"
METRICS = ("distance", "reduce_distance", "job_time")
DEFAULTS = {"grid": "11x11", "minsat": 3, "maxsat": 8, "collectors": 15, "seeds": 5,
            "first_seed": 1, "allocators": ["random", "bipartite"], "reducers": ["los", "center"],
            "job_timeout_s": 300, "testbed": {}}

# (number, description, [(greater cell filter, smaller cell filter, metrics)])
ORDERINGS = [
    ("1", "random > bipartite on distance and job_time",
     ({"allocator": "random"}, {"allocator": "bipartite"}, ("distance", "job_time"))),
    ("2", "los > center on reduce_distance",
     ({"reducer": "los"}, {"reducer": "center"}, ("reduce_distance",))),
    ("3", "random-los > random-center on reduce_distance",
     ({"allocator": "random", "reducer": "los"}, {"allocator": "random", "reducer": "center"},
      ("reduce_distance",))),
    ("4", "bipartite-los > bipartite-center on reduce_distance and job_time",
     ({"allocator": "bipartite", "reducer": "los"}, {"allocator": "bipartite", "reducer": "center"},
      ("reduce_distance", "job_time"))),
    ("5", "random-los > bipartite-center on all three",
     ({"allocator": "random", "reducer": "los"}, {"allocator": "bipartite", "reducer": "center"},
      METRICS)),
]


def load_config(path: Path, overrides: dict) -> dict:
    cfg = common.load_config(path, DEFAULTS, overrides)
    common.check_ints(cfg, ("minsat", "maxsat", "collectors", "seeds"))
    common.check_ints(cfg, ("first_seed",), minimum=0)
    common.check_choices(cfg, "allocators", ("random", "bipartite", "eager"))
    common.check_choices(cfg, "reducers", ("los", "center"))
    return cfg


def fit_aoi(cfg: dict, planes: int, sats: int) -> dict:
    """The configured AOI, or on a grid too small for it the whole grid with a quarter of
    its cells collecting (said in the output as ``aoi_scaled``)."""
    side = min(planes, sats)
    if cfg["maxsat"] <= side and 2 * cfg["collectors"] <= (cfg["maxsat"] - cfg["minsat"] + 1) ** 2:
        return {**cfg, "aoi_scaled": False}
    return {**cfg, "minsat": 1, "maxsat": side, "collectors": max(1, side * side // 4),
            "aoi_scaled": True}


def cell_name(allocator: str, reducer: str) -> str:
    return f"{allocator}-{reducer}"


def mean_of(rows: list[dict], where: dict, metric: str) -> float | None:
    values = [r[metric] for r in rows if all(r[k] == v for k, v in where.items())]
    return statistics.fmean(values) if values else None


def evaluate(rows: list[dict]) -> tuple[dict, dict]:
    """The five orderings on the means: ``checks`` (number -> bool) and the compared means."""
    checks, detail = {}, {}
    for number, text, (big, small, metrics) in ORDERINGS:
        pairs = {m: (mean_of(rows, big, m), mean_of(rows, small, m)) for m in metrics}
        ok = all(a is not None and b is not None and a > b for a, b in pairs.values())
        checks[number] = ok
        detail[number] = {"ordering": text, "means": pairs, "ok": ok}
    return checks, detail


def cell_means(rows: list[dict], cfg: dict) -> dict:
    return {cell_name(a, r): {m: mean_of(rows, {"allocator": a, "reducer": r}, m) for m in
                              (*METRICS, "end_to_end_s", "cost")}
            for a in cfg["allocators"] for r in cfg["reducers"]}


def summary_line(checks: dict) -> str:
    return "checks: " + " ".join(f"{k}:{'ok' if v else 'FAIL'}" for k, v in checks.items())


def plot_rows(rows: list[dict], path_stem: Path) -> list:
    """``matrix.png``/``matrix.svg``: per cell the mean, its 95 % interval over the seeds and
    every seed's value (``python3 -m experiments.replot DIR`` redraws it from jobs.csv)."""
    from experiments.spread_plots import cell_plot
    cells = list(dict.fromkeys(cell_name(r["allocator"], r["reducer"]) for r in rows))
    return cell_plot(rows, lambda r: cell_name(r["allocator"], r["reducer"]), cells,
                     list(zip(METRICS, ("hops", "hops", "s"))), path_stem)


def run_matrix(cfg: dict, out_dir: Path, pcap: str | None, echo) -> list[dict]:
    """Build the testbed, run every job, tear down; the job rows."""
    from experiments.capture import Capture
    from node_app.emulated import EmulatedNodes
    from node_app.tasks.wordcount import exact_word_count, resolve_data_file
    from topo import config as topo_config
    from topo.testbed import Testbed

    tb_cfg = topo_config.from_dict({**cfg["testbed"], "grid": cfg["grid"]})
    exact = exact_word_count(resolve_data_file("data/sample.txt"))
    seeds = range(cfg["first_seed"], cfg["first_seed"] + cfg["seeds"])
    jobs = [(s, a, r) for s in seeds for a in cfg["allocators"] for r in cfg["reducers"]]
    rows = []
    with Testbed(tb_cfg, echo=echo) as tb, EmulatedNodes(tb, str(out_dir / "run")) as nodes:
        write_json(out_dir / "environment.json", common.testbed_environment(tb))
        progress = Progress(len(jobs), "matrix jobs")
        capture = Capture(tb, pcap, str(out_dir / "pcap")) if pcap else None
        if capture:
            capture.__enter__()
        try:
            for seed, allocator, reducer in jobs:
                out = nodes.run_job(["-a", allocator, "-r", reducer, "-s", str(seed),
                                     "-mi", str(cfg["minsat"]), "-ma", str(cfg["maxsat"]),
                                     "-c", str(cfg["collectors"])], timeout_s=cfg["job_timeout_s"])
                rows.append({"seed": seed, "allocator": allocator, "reducer": reducer,
                             **common.job_row(out, exact)})
                progress.advance()
        finally:
            if capture:
                capture.__exit__(None, None, None)
    return rows


def main(argv=None) -> int:
    p = common.parser("python3 -m experiments.matrix", __doc__, DEFAULT_CONFIG)
    p.add_argument("--seeds", type=int, help="seeds per cell (overrides the config)")
    try:
        args = p.parse_args(argv)
        cfg = load_config(args.config, {"grid": args.grid, "seeds": args.seeds})
        from topo import config as topo_config
        planes, sats = topo_config.parse_grid(cfg["grid"])
        cfg = fit_aoi(cfg, planes, sats)
        topo_config.from_dict({**cfg["testbed"], "grid": cfg["grid"]})  # validate before building
    except (UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not common.need_root("the matrix"):
        return 2
    out_dir = new_result_dir(args.results, "matrix")
    write_yaml(out_dir / "config.yaml", cfg)
    try:
        rows = run_matrix(cfg, out_dir, args.pcap, common.echo_stderr)
    except Exception as e:  # the testbed tore itself down; say what failed, in one line
        print(f"error: matrix run failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    checks, detail = evaluate(rows)
    means = cell_means(rows, cfg)
    write_csv(out_dir / "jobs.csv", rows)
    write_csv(out_dir / "means.csv", [{"cell": c, **m} for c, m in means.items()])
    metrics = {"grid": cfg["grid"], "aoi": [cfg["minsat"], cfg["maxsat"]], "collectors": cfg["collectors"],
               "aoi_scaled": cfg["aoi_scaled"], "seeds": cfg["seeds"], "jobs": len(rows),
               "all_exact": all(r["exact"] for r in rows), "checks": checks, "orderings": detail,
               "means": means, "summary": summary_line(checks), "results_dir": str(out_dir)}
    write_json(out_dir / "metrics.json", metrics)
    plot_rows(rows, out_dir / "matrix")
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{'cell':<18} {'distance':>9} {'reduce_dist':>11} {'job_time_s':>10}")
        for cell, m in means.items():
            print(f"{cell:<18} {m['distance']:>9.2f} {m['reduce_distance']:>11.2f} {m['job_time']:>10.3f}")
        print(summary_line(checks))
        print(f"results: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
