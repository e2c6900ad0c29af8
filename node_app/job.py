"""Ground job CLI: plan a SpaceCoMP job and (later) submit it.

    python3 -m node_app.job --grid 11x11 -a bipartite -r center -s 7 -mi 3 -ma 8 -c 15 --dry-run --json

Flags follow the reference implementation's ``job.py``.  ``--dry-run`` plans only
(no network) and prints the plan: a table, or with ``--json`` one JSON object.
Exit codes: 0 success, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import random
import sys

from node_app.cost_model import CostModel
from node_app.planner import ALLOCATORS, COSTS, REDUCE_TYPES, SOLVERS, PlanError, plan_grid_job
from topo.constellation import Constellation


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2, no usage dump
        raise UsageError(message)


def parse_grid(text: str) -> tuple[int, int]:
    """``PLANESxSATS`` -> (planes, sats_per_plane)."""
    try:
        planes, sats = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--grid {text!r}: expected PLANESxSATS, e.g. 11x11") from None
    return planes, sats


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python3 -m node_app.job",
                description="Plan and run a SpaceCoMP (collect-map-reduce) job.")
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
    p.add_argument("-d", "--data", default=None, help="job data file (JSON)")
    p.add_argument("--grid", default="11x11", help="constellation PLANESxSATS (default 11x11)")
    p.add_argument("--cost", default="hops", help=f"allocation cost: {', '.join(COSTS)} (default hops)")
    p.add_argument("--solver", default="lapjv",
                   help=f"bipartite solver: {', '.join(SOLVERS)} (default lapjv)")
    p.add_argument("--los", default="1,1", help="line-of-sight gateway satellite SAT,ORB (default 1,1)")
    p.add_argument("--dry-run", action="store_true", help="plan only, no network")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def load_job_data(path: str | None):
    """The ``-d`` JSON file, or None."""
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


def plan_from_args(args):
    """Plan the job the flags describe (raises UsageError / PlanError / ValueError)."""
    planes, sats = parse_grid(args.grid)
    constellation = Constellation(planes=planes, sats_per_plane=sats)
    seed = args.seed if args.seed != -1 else random.SystemRandom().randrange(2 ** 31)
    return plan_grid_job(constellation, minsat=args.minsat, maxsat=args.maxsat,
                         collectors=args.collectors, seed=seed, allocator=args.allocator,
                         reducetype=args.reducetype, cost_kind=args.cost, solver=args.solver,
                         los=parse_sat(args.los, "--los"), cost_model=CostModel())


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
        job_data = load_job_data(args.data)
        plan = plan_from_args(args)
    except (UsageError, PlanError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.dry_run:
        print("error: only --dry-run is available until the node application lands", file=sys.stderr)
        return 2
    out = plan.to_json()
    out["tasks"] = {"collect": args.collecttask, "map": args.maptask, "reduce": args.reducetask}
    if job_data is not None:
        out["job_data"] = job_data
    print(json.dumps(out) if args.json else format_plan_table(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
