"""The README's main command: a real SpaceCoMP word-count job on an emulated constellation.

    ./testbed demo [--grid 5x5] [--loopback] [JOB FLAGS ...]     (= python3 -m experiments.demo)

Builds the testbed (Mininet torus, Friis/Shannon-shaped ISLs, Manhattan routes from
the controller), starts a node daemon on every satellite host, submits a word-count
job from ground station 1 to its line-of-sight satellite [1, 1], prints the result and
the job's metrics, and tears everything down.  ``--loopback`` (or running without
root) runs the same daemons on the loopback instead.  Other flags go to the job CLI
(``python3 -m node_app.job``), e.g. ``-a random -r los -s 7``, and replace the demo's own
job defaults one by one.  The plan reported is the coordinator's.  Everything is kept in
``results/demo/<timestamp>/``, with ``view.html``: the run replayed in a browser.
``--view [PORT]`` serves the live web view (default http://127.0.0.1:8470/) as soon as
the network is up.  Exit 0 when the job ran and its count is exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

from experiments.output import new_result_dir, write_json
from topo.spec import SpecError, parse_grid
from topo import cli
from view.live import add_view_flag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_job_args(planes: int, sats: int, given: list[str] = ()) -> list[str]:
    """The demo's job: the whole grid is the AOI, a quarter of it collects, another
    quarter maps, seed 1; each default yields to the same job flag in ``given``."""
    side = min(planes, sats)
    defaults = {("-mi", "--minsat"): "1", ("-ma", "--maxsat"): str(side),
                ("-c", "--collectors"): str(max(1, side * side // 4)), ("-s", "--seed"): "1"}
    flags = {a.split("=", 1)[0] for a in given}
    out = []
    for names, value in defaults.items():
        if not flags & set(names):
            out += [names[0], value]
    return out + list(given)


def check_job_args(grid: str, job_args: list[str]) -> str | None:
    """The job CLI's own check of the flags (no planning, nothing built): the error line,
    or None when the job can be submitted."""
    from node_app import job
    try:
        args = job.build_parser().parse_args(["--grid", grid, *job_args])
        job.check_from_args(args)
    except (job.UsageError, job.PlanError, ValueError) as e:
        return f"error: {e}"
    return None


def run_emulated(grid: str, job_args: list[str], out_dir) -> tuple[dict, dict]:
    from node_app.emulated import EmulatedNodes
    from topo.config import from_dict
    from topo.testbed import Testbed
    from view.live import open_view

    with Testbed(from_dict({"grid": grid})) as tb, \
            open_view(tb, str(out_dir / "run" / "view"), str(out_dir / "view.html"), "demo"), \
            EmulatedNodes(tb, str(out_dir / "run")) as nodes:
        print(f"testbed {grid} up: datapath={tb.metadata['datapath']} "
              f"netem={tb.metadata['netem']} build {tb.metadata['build_s']:.1f} s, "
              f"routes {tb.metadata['routes_s']:.1f} s; node daemons up in {nodes.startup_s:.1f} s",
              file=sys.stderr, flush=True)
        out = nodes.run_job(job_args, show_progress=True)
        meta = dict(tb.metadata)
    return out, meta


def run_loopback(grid: str, job_args: list[str], out_dir) -> tuple[dict, dict]:
    cmd = [sys.executable, "-m", "node_app.job", "--loopback", "--grid", grid, "--json",
           "--results", str(out_dir / "results"), *job_args]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"loopback job failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1]), {"datapath": "loopback", "netem": False}


def report(out: dict, meta: dict) -> str:
    from node_app.tasks.wordcount import exact_word_count, resolve_data_file
    counts = out.get("result") or {}
    exact = counts == exact_word_count(resolve_data_file("data/sample.txt"))
    top = ", ".join(f"{w} {n}" for w, n in Counter(counts).most_common(8))
    b = out.get("bytes", {})
    lines = [
        f"result: {sum(counts.values())} words, {len(counts)} distinct; top: {top}",
        f"exact (equals a straightforward count of the file): {exact}",
        f"plan: allocator={out['plan']['allocator']} reducer={out['plan']['reducetype']} "
        f"{out['plan']['reducer']} los={out['plan']['los']}",
        f"distance={out['distance']} hops  reduce_distance={out['reduce_distance']} hops  "
        f"model cost={out['plan']['cost']:.4g} s",
        f"job_time={out['job_time']:.3f} s  end_to_end={out.get('end_to_end_s', 0):.3f} s",
        f"bytes: collect={b.get('collect')} map={b.get('map')} result={b.get('result')}",
        f"network: datapath={meta.get('datapath')} netem={meta.get('netem')}"
        + ("" if meta.get("netem") or meta.get("datapath") == "loopback"
           else "  (propagation delay NOT emulated on this kernel; rates and outages are)"),
    ]
    return "\n".join(lines), exact


def main(argv=None) -> int:
    p = cli.parser("./testbed demo", __doc__)
    p.add_argument("--grid", default="5x5", help="constellation PLANESxSATS (default 5x5)")
    p.add_argument("--loopback", action="store_true", help="run on the loopback, no Mininet")
    cli.add_common(p, results=os.path.join(ROOT, "results"))
    add_view_flag(p)
    args, job_args = p.parse_known_args(argv)
    try:
        planes, sats = parse_grid(args.grid)
    except SpecError as e:
        print(f"error: --grid: {e}", file=sys.stderr)
        return 2
    job_args = default_job_args(planes, sats, job_args)
    error = check_job_args(args.grid, job_args)  # bad job flags: say so before building
    if error:
        print(error, file=sys.stderr)
        return 2
    loopback = args.loopback or os.geteuid() != 0
    if loopback and not args.loopback:
        print("not root: running on the loopback instead of Mininet", file=sys.stderr)
    if loopback and args.view is not None:
        print("--view shows an emulated testbed: ignored on the loopback", file=sys.stderr)
    out_dir = new_result_dir(args.results, "demo")
    try:
        out, meta = (run_loopback if loopback else run_emulated)(args.grid, job_args, out_dir)
    except Exception as e:  # the testbed tore itself down; one line for the user
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    text, exact = report(out, meta)
    record = {**out, "exact": exact, "demo_results_dir": str(out_dir),
              "network": {k: meta.get(k) for k in ("datapath", "netem", "warnings", "shaping")}}
    write_json(out_dir / "job.json", record)
    if args.json:
        cli.print_json(record)
    else:
        print(text)
        print(f"saved: {out_dir}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
