"""The typed job API (node_app.api), --tasks-module, and the examples/ scripts, run."""

import csv
import os
import subprocess
import sys

import pytest

from node_app.api import FLAGS, JobResult, JobSpec, JobFailed, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def test_job_spec_round_trips_through_cli_flags():
    spec = JobSpec(grid="7x7", minsat=2, maxsat=6, collectors=5, seed=9, allocator="random",
                   reducetype="los", job_data={"n": 10}, tasks_modules=("a.b",), los="2,2")
    assert JobSpec.from_args(spec.to_args()) == spec
    args = spec.to_args()
    assert args[args.index("--allocator") + 1] == "random" and "--tasks-module" in args
    # the defaults are the job CLI's own
    from node_app.job import build_parser
    d = build_parser().parse_args([])
    assert (JobSpec().allocator, JobSpec().maxrecords, JobSpec().timeout_s) == \
        (d.allocator, d.maxrecords, d.timeout)
    with pytest.raises(ValueError, match="--loopback"):
        JobSpec.from_args(["--loopback"])
    with pytest.raises(ValueError):
        JobSpec.from_args(["--seed", "x"])
    assert set(FLAGS) <= {f.name for f in JobSpec.__dataclass_fields__.values()}


def test_run_returns_a_result_and_raises_on_failure(tmp_path):
    res = run(JobSpec(grid="3x3", minsat=1, maxsat=3, collectors=2, seed=4),
              results=str(tmp_path))
    assert isinstance(res, JobResult) and res.distance >= 0 and res.job_time > 0
    assert sum(res.result.values()) == 330180  # the sample file's words
    assert res.results_dir and os.path.exists(os.path.join(res.results_dir, "metrics.json"))
    with pytest.raises(JobFailed, match="unknown collect task"):
        run(JobSpec(grid="3x3", minsat=1, maxsat=3, collectors=2, collecttask="nosuch"))
    with pytest.raises(ValueError):
        run(JobSpec(), on="mars")


def test_bad_tasks_module_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    for mod in ("no_such_module_xyz", str(bad), str(tmp_path / "missing.py")):
        proc = subprocess.run([sys.executable, "-m", "node_app.job", "--grid", "3x3", "--dry-run",
                               "--tasks-module", mod], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "--tasks-module" in proc.stderr and "Traceback" not in proc.stderr


def _example(name, *args, cwd):
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-800:]
    return proc.stdout


def test_example_custom_task(tmp_path):
    out = _example("custom_task.py", "--grid", "3x3", "--n", "5000", cwd=tmp_path)
    assert "669 primes below 5000" in out and "exact: True" in out


def test_example_seed_sweep(tmp_path):
    out = _example("seed_sweep.py", "--grid", "3x3", "--seeds", "2", "--out", "s.csv", cwd=tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == 4 and all(r["exact"] == "True" for r in rows)
    assert {r["allocator"] for r in rows} == {"bipartite", "random"}
    assert "wrote 4 rows" in out


def test_example_link_failure(tmp_path):
    out = _example("link_failure.py", "--grid", "9x9", "--trials", "4", "--failures", "0,30",
                   "--out", "f.csv", cwd=tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "f.csv")))
    assert len(rows) == 5
    intact = [r for r in rows if r["failed_links"] == "0"][0]
    failed = [r for r in rows if r["failed_links"] == "30" and r["partitioned"] == "False"]
    # failed links never shorten a hop distance, so the optimal (bipartite) total cannot drop
    assert failed and "30 cross-plane ISLs down" in out
    assert all(int(r["distance"]) >= int(intact["distance"]) > 0 for r in failed)


def test_tasks_module_reaches_spawned_daemons(tmp_path):
    """--spawn: every satellite is its own ``python3 -m node_app.daemon`` that loads the
    module itself (from the environment the CLI hands down)."""
    proc = subprocess.run([sys.executable, "-m", "node_app.job", "--loopback", "--spawn",
                           "--grid", "3x3", "-mi", "1", "-ma", "3", "-c", "3", "-s", "1",
                           "--tasks-module", os.path.join(EXAMPLES, "custom_task.py"),
                           "-ct", "rangecollector", "-mt", "primemapper", "-rt", "primereducer",
                           "--job-data", '{"n": 100}', "--results", str(tmp_path), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-800:]
    import json
    assert json.loads(proc.stdout.strip().splitlines()[-1])["result"] == {"count": 25, "sum": 1060}
