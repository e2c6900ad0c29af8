"""Ground job CLI: plan a SpaceCoMP job, submit it, wait for and save its result.

    python3 -m node_app.job --grid 11x11 -a bipartite -r center -s 7 -mi 3 -ma 8 -c 15 --dry-run --json
    python3 -m node_app.job --loopback --grid 3x3 -mi 1 -ma 3 -c 4          # word count, loopback
    python3 -m node_app.job --addr-map addrs.json --grid 5x5 -mi 1 -ma 5 -c 6  # a running testbed
    python3 -m node_app.job --grid 11x11 --aoi-box 50,-10,35,20 --aoi-count 6 --dry-run  # geographic AOI

Flags follow the reference implementation's ``job.py``.  ``--dry-run`` plans only
(no network) and prints the plan: a table, or with ``--json`` one JSON object.
Otherwise the job is submitted to the coordinator on the line-of-sight satellite
(``--los``) of a running testbed (``--addr-map`` or ``--coordinator``), or of a loopback
constellation started for it (``--loopback``, stopped afterwards).  Progress goes to
stderr; the result, ``metrics.json`` and the merged job timeline go to
``results/job/<UTC timestamp>/``; stdout gets the result and metrics (``--json``: one line).
Exit codes: 0 success, 1 the job failed, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys

from node_app.cost_model import CostModel
from node_app.planner import (ALLOCATORS, COSTS, REDUCE_TYPES, SOLVERS, GeoBox, PlanError,
                              check_grid_job, check_options, plan_geo_job, plan_grid_job)
from topo import cli
from topo.cli import UsageError
from topo.spec import ConstellationSpec, SpecError
from topo.spec import parse_grid as _parse_grid


WORKLOADS = {"wordcount": ("doccollector", "wordcountmapper", "sumreducer"),
             "eo": ("thermalcollector", "anomalymapper", "maskreducer"),
             "synthetic": ("syntheticcollector", "syntheticmapper", "syntheticreducer"),
             "fedavg": ("fedcollector", "fedmapper", "fedavgreducer")}


def parse_grid(text: str) -> tuple[int, int]:
    """``PLANESxSATS`` -> (planes, sats_per_plane) (UsageError naming --grid)."""
    try:
        return _parse_grid(text)
    except SpecError as e:
        raise UsageError(f"--grid: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python3 -m node_app.job",
                   "Plan and run a SpaceCoMP (collect-map-reduce) job.")
    p.add_argument("-a", "--allocator", default="bipartite",
                   help=f"map allocator: {', '.join(ALLOCATORS)} (default bipartite)")
    p.add_argument("-s", "--seed", type=int, default=-1,
                   help="AOI shuffle seed; -1 picks one at random and reports it")
    p.add_argument("-r", "--reducetype", default="center",
                   help=f"reducer placement: {', '.join(REDUCE_TYPES)} (default center)")
    p.add_argument("-mi", "--minsat", type=int, default=3, help="min AOI grid index (default 3)")
    p.add_argument("-ma", "--maxsat", type=int, default=8, help="max AOI grid index (default 8)")
    p.add_argument("-c", "--collectors", type=int, default=11,
                   help="number of collectors (and of mappers) (default 11)")
    p.add_argument("-ct", "--collecttask", default="doccollector", help="collect task name")
    p.add_argument("-mt", "--maptask", default="wordcountmapper", help="map task name")
    p.add_argument("-rt", "--reducetask", default="sumreducer", help="reduce task name")
    p.add_argument("--aoi-box", default=None, metavar="UL_LAT,UL_LON,LR_LAT,LR_LON",
                   help="geographic AOI instead of the grid one (-mi/-ma/-c): the satellites over "
                        "this latitude/longitude box (degrees; UL_LON > LR_LON crosses the "
                        "antimeridian) collect, as many nearest them map")
    p.add_argument("--aoi-count", type=int, default=None,
                   help="with --aoi-box: at most this many collectors (node-id order; default all)")
    p.add_argument("-d", "--data", default=None, help="job data file (JSON)")
    p.add_argument("--grid", default=None,
                   help="constellation PLANESxSATS (default: the --config's, else 11x11)")
    p.add_argument("--config", default=None,
                   help="testbed YAML (topo.config keys): grid, orbit, link model, ground stations")
    p.add_argument("--spec", default=os.environ.get("SPACECOMP_SPEC"),
                   help="a run's constellation spec (spec.json, written by the testbed; env "
                        "SPACECOMP_SPEC): grid, orbit, link model, ground stations")
    p.add_argument("--cost", default="hops", help=f"allocation cost: {', '.join(COSTS)} (default hops)")
    p.add_argument("--solver", default="lapjv",
                   help=f"bipartite solver: {', '.join(SOLVERS)} (default lapjv)")
    p.add_argument("--los", default=None,
                   help="line-of-sight gateway satellite SAT,ORB (default: the --config's first "
                        "ground station, else 1,1)")
    p.add_argument("--dry-run", action="store_true", help="plan only, no network")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png|FILE.svg",
                   help="with --dry-run: draw the plan on the grid and on the map")
    run = p.add_argument_group("running a job")
    run.add_argument("--workload", choices=sorted(WORKLOADS),
                     help="set -ct/-mt/-rt to a shipped workload's tasks")
    run.add_argument("-mr", "--maxrecords", type=int, default=1024,
                     help="records per DataChunk from a collector (default 1024)")
    run.add_argument("--job-data", help="job data as inline JSON (instead of -d FILE)")
    run.add_argument("--tasks-module", action="append", default=[], metavar="MODULE",
                     help="import MODULE (pkg.mod or a .py file) for its own tasks; with "
                          "--loopback every daemon imports it too")
    run.add_argument("--loopback", action="store_true",
                     help="start a loopback constellation of --grid for this job, then stop it")
    run.add_argument("--spawn", action="store_true",
                     help="with --loopback: one python3 -m node_app.daemon per satellite")
    run.add_argument("--addr-map", default=os.environ.get("SPACECOMP_ADDR_MAP"),
                     help="address map JSON of a running testbed (env SPACECOMP_ADDR_MAP)")
    run.add_argument("--coordinator", help="HOST:PORT of the coordinator (overrides the map)")
    run.add_argument("--failover", default=None, metavar="S,O[;S,O...]",
                     help="satellites to coordinate the job, in this order, if the coordinator "
                          "dies mid-job: the job's roles are released and the same job "
                          "re-submitted (with the address map or --loopback)")
    run.add_argument("--key-file", default=None,
                     help="the testbed key (default: $SPACECOMP_KEY_FILE, else testbed.key beside "
                          "--addr-map; --loopback makes its own)")
    run.add_argument("--log-dir", help="the testbed's node log directory (for the timeline)")
    run.add_argument("--timeout", type=float, default=30.0,
                     help="phase timeout, s: a phase without progress fails the job (default 30)")
    run.add_argument("--results", default="results", help="results directory (default results)")
    run.add_argument("--data-volume", type=int, default=0,
                     help="data_volume_bytes V of the SubmitJob (synthetic workload)")
    run.add_argument("--map-reduction", type=float, default=1.0, help="F_M (default 1)")
    run.add_argument("--reduce-reduction", type=float, default=5.0, help="F_R (default 5)")
    run.add_argument("--map-processing", type=float, default=1.0, help="m_p (default 1)")
    run.add_argument("--reduce-processing", type=float, default=1.0, help="r_p (default 1)")
    run.add_argument("--ascending-only", action="store_true", help="SubmitJob flag bit 0")
    run.add_argument("--ground-state", help="the emulator's ground-segment state JSON: wait for "
                                            "contact, submit through the current gateway")
    run.add_argument("--station", type=int, default=1,
                     help="with --ground-state: this placed ground station's number (default 1)")
    return p


def load_job_data(path: str | None, inline: str | None = None):
    """The ``-d`` JSON file (or ``--job-data`` inline JSON), or None."""
    if inline is not None:
        try:
            return json.loads(inline)
        except json.JSONDecodeError as e:
            raise UsageError(f"--job-data: invalid JSON ({e.msg} at column {e.colno})") from None
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise UsageError(f"--data {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"--data {path}: invalid JSON ({e.msg} at line {e.lineno})") from None


def parse_sat(text: str, flag: str) -> tuple[int, int]:
    try:
        s, o = (int(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected SAT,ORB, e.g. 1,1") from None
    return s, o


def resolve_config(args) -> ConstellationSpec:
    """The run's constellation spec (from ``--spec``, ``--config`` or the defaults on
    ``--grid``); fills ``args.grid`` and ``args.los`` where the flags leave them open.
    ConfigError/SpecError/UsageError on bad input."""
    if args.spec and args.config:
        raise UsageError("give --spec or --config, not both")
    if args.spec:
        spec = ConstellationSpec.load(args.spec)
        if args.grid and parse_grid(args.grid) != spec.grid:
            raise UsageError(f"--grid {args.grid} but the spec {args.spec} is {spec.grid_text}")
    elif args.config:
        from topo import config as topo_config
        cfg = topo_config.load(args.config)
        if args.grid:
            cfg.planes, cfg.sats_per_plane = parse_grid(args.grid)
        spec = cfg.spec()
    else:
        spec = ConstellationSpec.for_grid(*parse_grid(args.grid or "11x11"))
    args.grid = spec.grid_text
    args.los = args.los or ",".join(str(v) for v in (spec.ground[0] if spec.ground else (1, 1)))
    return spec


def resolve_seed(args) -> int:
    """The AOI seed: the flag's, or (-1) one drawn at random and reported."""
    if args.seed == -1:
        args.seed = random.SystemRandom().randrange(2 ** 31)
    return args.seed


def parse_aoi_box(args):
    """``--aoi-box`` -> GeoBox, or None for the grid AOI (UsageError naming the flag)."""
    if args.aoi_box is None:
        if args.aoi_count is not None:
            raise UsageError("--aoi-count needs --aoi-box")
        return None
    try:
        values = [float(v) for v in args.aoi_box.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise UsageError(f"--aoi-box {args.aoi_box!r}: expected UL_LAT,UL_LON,LR_LAT,LR_LON "
                         f"in degrees, e.g. 50,-10,35,20")
    if args.aoi_count is not None and args.aoi_count < 1:
        raise UsageError(f"--aoi-count {args.aoi_count}: must be at least 1")
    try:
        return GeoBox(*values)
    except PlanError as e:
        raise UsageError(f"--aoi-box: {e}") from None


def plan_options(args) -> dict:
    return dict(minsat=args.minsat, maxsat=args.maxsat, collectors=args.collectors,
                allocator=args.allocator, reducetype=args.reducetype, cost_kind=args.cost,
                solver=args.solver, los=parse_sat(args.los, "--los"))


def plan_from_args(args):
    """Plan the job the flags describe, as the coordinator would at the spec's start time
    (raises UsageError / PlanError / ValueError)."""
    spec = resolve_config(args)
    box = parse_aoi_box(args)
    seed = resolve_seed(args)
    options = plan_options(args)
    router = spec.router()
    if box is not None:
        for key in ("minsat", "maxsat", "collectors"):
            del options[key]
        return plan_geo_job(spec.constellation, box, t_s=router.t_s,
                            ascending_only=args.ascending_only, count=args.aoi_count,
                            seed=seed, router=router, cost_model=CostModel(link=spec.link),
                            **options)
    return plan_grid_job(spec.constellation, seed=seed, router=router,
                         cost_model=CostModel(link=spec.link), **plan_options(args))


def check_from_args(args) -> ConstellationSpec:
    """Check the job the flags describe without planning it (the coordinator plans it)."""
    spec = resolve_config(args)
    resolve_seed(args)
    if parse_aoi_box(args) is None:
        check_grid_job(spec.constellation, **plan_options(args))
    else:
        options = plan_options(args)
        check_options(options["allocator"], options["reducetype"], options["cost_kind"],
                      options["solver"])
        if not spec.constellation.contains(options["los"]):
            raise UsageError(f"--los {args.los}: outside the {spec.grid_text} grid")
    return spec


def format_plan_table(plan) -> str:
    """A human-readable plan: one row per collector, then the totals."""
    lines = [f"SpaceCoMP plan on {plan.grid[0]}x{plan.grid[1]}: allocator={plan.allocator} "
             f"reducer={plan.reducetype} {list(plan.reducer)} los={list(plan.los)} seed={plan.seed}",
             f"{'collector':>10} {'mapper':>10} {'hops':>5}"]
    for (c, m), hops in zip(plan.allocations, plan.pair_hops):
        lines.append(f"{str(list(c)):>10} {str(list(m)):>10} {hops:>5}")
    lines.append(f"distance={plan.distance} hops  reduce_distance={plan.reduce_distance} hops  "
                 f"cost={plan.cost:.6g} s (map {plan.map_cost:.6g} s, reduce {plan.reduce_cost:.6g} s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from node_app import tasks as user_tasks
        user_tasks.use_modules(args.tasks_module)  # before the task names are checked
        if args.workload:
            args.collecttask, args.maptask, args.reducetask = WORKLOADS[args.workload]
        job_data = load_job_data(args.data, args.job_data)
        args.uplink = None
        if args.ground_state and not args.dry_run:
            from node_app.contact import NoContact
            from node_app.job_run import resolve_gateway
            try:
                args.uplink = resolve_gateway(args)
            except NoContact as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
        if not args.dry_run:
            spec = check_from_args(args)
            from node_app.job_run import check_run_args
            check_run_args(args, job_data, spec.grid)
        else:
            if args.plot:
                from view.plan_plot import plot_format
                plot_format(args.plot)  # a bad name is bad input before planning
            plan = plan_from_args(args)
        if args.plot and not args.dry_run:
            raise UsageError("--plot draws a plan: give it with --dry-run")
    except (UsageError, PlanError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.dry_run:
        from node_app.job_run import run_job
        return run_job(args, spec, job_data)
    out = plan.to_json()
    out["aoi"] = ({"kind": "geo", "box": [float(v) for v in args.aoi_box.split(",")],
                   "count": args.aoi_count, "ascending_only": args.ascending_only}
                  if args.aoi_box else {"kind": "grid", "minsat": args.minsat,
                                        "maxsat": args.maxsat, "collectors": args.collectors})
    out["tasks"] = {"collect": args.collecttask, "map": args.maptask, "reduce": args.reducetask}
    if job_data is not None:
        out["job_data"] = job_data
    if args.plot:
        from view.plan_plot import plot_plan
        try:
            plot_plan(plan, resolve_config(args), args.plot,
                      aoi=None if args.aoi_box else (args.minsat, args.maxsat),
                      box=[float(v) for v in args.aoi_box.split(",")] if args.aoi_box else None)
        except OSError as e:
            print(f"error: --plot {args.plot}: {e.strerror or e}", file=sys.stderr)
            return 2
        out["plot"] = args.plot
    print(json.dumps(out) if args.json else format_plan_table(plan))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
