"""Jobs on a moving constellation with cross-over outages.

    python3 -m experiments.dynamics [--config experiments/dynamics.yaml] [--grid 6x6]
                                    [--seeds N] [--time-factor X] [--outage-lat DEG]
                                    [--json] [--pcap SPEC] [--results DIR]

One testbed whose links move with the orbit at an accelerated ``time_factor``
(constellation seconds per wall second): every ``step_s`` the dynamics updater
(``topo.dynamics.Dynamics``) reshapes the ISLs whose length changed, takes the
cross-plane links above ``outage_lat_deg`` down and brings the others back up; the
controller reroutes around down links and moves the Manhattan plane changes with time.
Meanwhile real word-count jobs run from ground station 1, one after the other.

Per job: how many dynamics steps ran during it, how many ISLs went down and came up,
how many of those steps made the controller reroute (outage changes), how many flows
changed (the controller's next-hop tables diffed step by step: outage reroutes plus
time-driven route moves), the constellation time span, and whether the word count
equals ``exact_word_count`` of the input.

Writes ``results/dynamics/<timestamp>/``: ``config.yaml``, ``environment.json``,
``jobs.csv`` (one row a job), ``steps.csv`` (one row a dynamics step), ``metrics.json``,
``dynamics.png`` (links down and flows changed over time, jobs shaded), ``run/`` and,
with ``--pcap``, ``pcap/*.pcap``.  ``--json`` prints one line (``jobs``, ``failed``,
``all_exact``, ``links_down_events``, ``links_up_events``, ``reroute_steps``,
``flows_changed``, ``jobs_with_outage_change``, ``results_dir``).  Exit 0 when every job
ran (exact or not: see ``all_exact``), 1 when a job or the testbed failed, 2 on bad input.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from experiments import common
from experiments.common import UsageError
from experiments.output import Progress, json_safe, new_result_dir, write_csv, write_json, write_yaml
from experiments.paper_plots import save_png_svg
from topo import cli

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "dynamics.yaml"
DEFAULTS = {"grid": "6x6", "minsat": 1, "maxsat": 6, "collectors": 6, "seeds": 3, "first_seed": 1,
            "allocators": ["random", "bipartite"], "reducers": ["center"],
            "job_timeout_s": 300,
            "testbed": {"time_factor": 200, "outage_lat_deg": 65, "step_s": 1.0, "start_time_s": 0}}


def load_config(path: Path, overrides: dict) -> dict:
    tb_over = {k: overrides.pop(k) for k in ("time_factor", "outage_lat_deg") if overrides.get(k) is not None}
    overrides = {k: v for k, v in overrides.items() if k not in ("time_factor", "outage_lat_deg")}
    cfg = common.load_config(path, DEFAULTS, overrides)
    cfg["testbed"] = {**cfg["testbed"], **tb_over}
    common.check_ints(cfg, ("minsat", "maxsat", "collectors", "seeds", "job_timeout_s"))
    common.check_ints(cfg, ("first_seed",), minimum=0)
    common.check_choices(cfg, "allocators", ("random", "bipartite", "eager"))
    common.check_choices(cfg, "reducers", ("los", "center"))
    if cfg["testbed"].get("dynamics") is False:
        raise UsageError("testbed.dynamics: this experiment runs the dynamics updater; it cannot be false")
    tb_cfg = common.testbed_config(cfg)
    side = min(tb_cfg.planes, tb_cfg.sats_per_plane)
    if cfg["maxsat"] > side or cfg["minsat"] > cfg["maxsat"]:
        raise UsageError(f"maxsat: AOI {cfg['minsat']}..{cfg['maxsat']} does not fit the {cfg['grid']} grid")
    cells = (cfg["maxsat"] - cfg["minsat"] + 1) ** 2
    if 2 * cfg["collectors"] > cells:
        raise UsageError(f"collectors: {cfg['collectors']} collectors and as many mappers need "
                         f"{2 * cfg['collectors']} AOI cells, the AOI has {cells}")
    return cfg


class StepLog:
    """Per dynamics step: wall time, the StepReport, links down after it and the number of
    (switch, destination) next hops that changed in the controller since the last step."""

    def __init__(self, tb, dyn):
        self.tb, self.dyn = tb, dyn
        self.rows: list[dict] = []
        self.lock = threading.Lock()
        self.last_hops = self._next_hops(tb.controller_state() or {})
        self.t0 = time.monotonic()

    def _next_hops(self, state: dict) -> dict:
        """The controller's next hops: in its state file on small grids, else over HTTP."""
        if "next_hops" in state or state.get("next_hops_in_file", True):
            return state.get("next_hops", {})
        return self.tb.controller_http("GET", "/next_hops")["next_hops"]

    def __call__(self, line: str) -> None:  # Dynamics' echo: called after every step
        rep = self.dyn.history[-1]
        state = self.tb.controller_state() or {}
        hops = self._next_hops(state)
        changed = sum(1 for sw, row in hops.items() for a, b in zip(row, self.last_hops.get(sw, row)) if a != b)
        self.last_hops = hops
        with self.lock:
            self.rows.append({"wall_s": time.monotonic() - self.t0, "t_s": rep.t_s,
                              "went_down": len(rep.went_down), "came_up": len(rep.came_up),
                              "links_down": len(state.get("links_down", [])),
                              "rate_changes": rep.rate_changes, "hops_changed": changed,
                              "time_route_flows": rep.flows_changed, "reroute_s": rep.reroute_s,
                              "apply_s": rep.apply_s, "generation": state.get("generation")})

    def since(self, n: int) -> list[dict]:
        with self.lock:
            return list(self.rows[n:])

    def count(self) -> int:
        with self.lock:
            return len(self.rows)


def job_list(cfg: dict) -> list[tuple]:
    seeds = range(cfg["first_seed"], cfg["first_seed"] + cfg["seeds"])
    return [(s, a, r) for s in seeds for a in cfg["allocators"] for r in cfg["reducers"]]


def run_dynamics(cfg: dict, out_dir: Path, pcap: str | None, echo) -> tuple[list, list, dict]:
    from experiments.capture import Capture
    from node_app.emulated import EmulatedNodes
    from node_app.tasks.wordcount import exact_word_count, resolve_data_file
    from topo.testbed import Testbed

    exact = exact_word_count(resolve_data_file("data/sample.txt"))
    jobs = job_list(cfg)
    rows = []
    # The testbed's updater is started below, once the node daemons run (not at build).
    with Testbed(common.testbed_config(cfg, dynamics=False), echo=echo) as tb, \
            EmulatedNodes(tb, str(out_dir / "run")) as nodes:
        env = common.testbed_environment(tb, time_factor=tb.cfg.time_factor, step_s=tb.cfg.step_s,
                                         outage_lat_deg=tb.cfg.outage_lat_deg,
                                         period_s=tb.c.period_s)
        write_json(out_dir / "environment.json", env)
        log = StepLog(tb, tb.dynamics)
        capture = Capture(tb, pcap, str(out_dir / "pcap")) if pcap else None
        if capture:
            capture.__enter__()
        progress = Progress(len(jobs), "dynamics jobs")
        try:
            dyn = tb.start_dynamics(echo=log)  # the testbed stops it first at teardown
            for seed, allocator, reducer in jobs:
                n0, w0, t0 = log.count(), time.monotonic() - log.t0, dyn.now_s()
                row = {"seed": seed, "allocator": allocator, "reducer": reducer}
                try:
                    out = nodes.run_job(["-a", allocator, "-r", reducer, "-s", str(seed),
                                         "-mi", str(cfg["minsat"]), "-ma", str(cfg["maxsat"]),
                                         "-c", str(cfg["collectors"])], timeout_s=cfg["job_timeout_s"])
                    row.update({"ok": True, **common.job_row(out, exact)})
                except Exception as e:  # a job that failed under outages is a finding: record it
                    row.update({"ok": False, "exact": False, "error": str(e)[-300:]})
                    echo(f"job seed={seed} {allocator}-{reducer} failed: {e}")
                steps = log.since(n0)
                row.update({"wall_start_s": w0, "wall_end_s": time.monotonic() - log.t0,
                            "t_start_s": t0, "t_end_s": dyn.now_s(), "steps": len(steps),
                            "links_went_down": sum(s["went_down"] for s in steps),
                            "links_came_up": sum(s["came_up"] for s in steps),
                            "reroute_steps": sum(1 for s in steps if s["went_down"] or s["came_up"]),
                            "flows_changed": sum(s["hops_changed"] for s in steps),
                            "max_links_down": max([s["links_down"] for s in steps], default=None)})
                rows.append(row)
                progress.advance()
        finally:
            tb.stop_dynamics()
            if capture:
                capture.__exit__(None, None, None)
            state = tb.controller_state() or {}
    return rows, log.rows, {"final_generation": state.get("generation")}


def summarise(rows: list, steps: list, cfg: dict, extra: dict) -> dict:
    ok = [r for r in rows if r["ok"]]
    return {"grid": cfg["grid"], "time_factor": cfg["testbed"].get("time_factor"),
            "outage_lat_deg": cfg["testbed"].get("outage_lat_deg"), "jobs": len(rows),
            "failed": len(rows) - len(ok), "all_exact": bool(rows) and all(r.get("exact") for r in rows),
            "steps": len(steps),
            "links_down_events": sum(s["went_down"] for s in steps),
            "links_up_events": sum(s["came_up"] for s in steps),
            "reroute_steps": sum(1 for s in steps if s["went_down"] or s["came_up"]),
            "flows_changed": sum(s["hops_changed"] for s in steps),
            "jobs_with_outage_change": sum(1 for r in rows if r["links_went_down"] or r["links_came_up"]),
            "during_jobs": {k: sum(r[k] for r in rows) for k in
                            ("links_went_down", "links_came_up", "reroute_steps", "flows_changed")},
            "reroute_s_max": max([s["reroute_s"] for s in steps if s["went_down"] or s["came_up"]], default=None),
            **extra}


def plot(rows: list, steps: list, out_dir: Path) -> list[Path]:
    """``dynamics.png``/``.svg``: ISLs down and next hops changed per step, jobs shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    w = [s["wall_s"] for s in steps]
    ax1.step(w, [s["links_down"] for s in steps], where="post", color="#d62728")
    ax1.set_ylabel("ISLs down")
    ax2.bar(w, [s["hops_changed"] for s in steps], width=0.3, color="#1f77b4", label="next hops changed")
    ax2.set_ylabel("flows changed / step")
    ax2.set_xlabel("wall time since dynamics start (s)")
    for ax in (ax1, ax2):
        for r in rows:
            ax.axvspan(r["wall_start_s"], r["wall_end_s"], alpha=0.12,
                       color="green" if r.get("exact") else "red")
        ax.grid(alpha=0.3)
    ax1.set_title("cross-over outages during jobs (shaded: a job; green exact, red wrong/failed)")
    fig.tight_layout()
    return save_png_svg(fig, out_dir, "dynamics")


def main(argv=None) -> int:
    p = common.parser("python3 -m experiments.dynamics", __doc__, DEFAULT_CONFIG)
    p.add_argument("--seeds", type=int, help="seeds (jobs = seeds x allocators x reducers)")
    p.add_argument("--time-factor", type=float, help="constellation seconds per wall second")
    p.add_argument("--outage-lat", type=float, help="cross-plane ISLs down above this latitude (deg)")
    try:
        args = p.parse_args(argv)
        cfg = load_config(args.config, {"grid": args.grid, "seeds": args.seeds,
                                        "time_factor": args.time_factor, "outage_lat_deg": args.outage_lat})
    except (UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not common.need_root("dynamics"):
        return 2
    out_dir = new_result_dir(args.results, "dynamics")
    write_yaml(out_dir / "config.yaml", cfg)
    try:
        rows, steps, extra = run_dynamics(cfg, out_dir, args.pcap, common.echo_stderr)
    except Exception as e:  # the testbed tore itself down; say what failed, in one line
        print(f"error: dynamics run failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    write_csv(out_dir / "jobs.csv", rows)
    if steps:
        write_csv(out_dir / "steps.csv", steps)
    metrics = {**summarise(rows, steps, cfg, extra), "results_dir": str(out_dir)}
    write_json(out_dir / "metrics.json", metrics)
    plot(rows, steps, out_dir)
    if args.json:
        print(json.dumps(json_safe(metrics)))
    else:
        print(f"{'job':<22} {'ok':>3} {'exact':>5} {'time_s':>7} {'steps':>5} {'down':>5} {'up':>4} "
              f"{'reroutes':>8} {'flows':>6}")
        for r in rows:
            name = f"s{r['seed']} {r['allocator']}-{r['reducer']}"
            jt = f"{r['job_time']:.2f}" if r.get("job_time") is not None else "-"
            print(f"{name:<22} {'y' if r['ok'] else 'n':>3} {'y' if r.get('exact') else 'n':>5} {jt:>7} "
                  f"{r['steps']:>5} {r['links_went_down']:>5} {r['links_came_up']:>4} "
                  f"{r['reroute_steps']:>8} {r['flows_changed']:>6}")
        m = metrics
        print(f"dynamics: {m['steps']} steps, {m['links_down_events']} ISLs went down, "
              f"{m['links_up_events']} came up, {m['reroute_steps']} reroute steps, "
              f"{m['flows_changed']} flows changed; {m['jobs_with_outage_change']}/{m['jobs']} jobs saw "
              f"an outage change; failed {m['failed']}; all exact: {m['all_exact']}")
        print(f"results: {out_dir}")
    return 1 if metrics["failed"] else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
