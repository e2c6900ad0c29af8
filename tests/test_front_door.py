"""The ``./testbed`` front door and the demo's flag handling."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.demo import default_job_args

ROOT = Path(__file__).resolve().parent.parent


def door(*args, timeout=120):
    return subprocess.run([str(ROOT / "testbed"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_help_exits_0_and_lists_every_command():
    res = door("--help")
    assert res.returncode == 0
    for cmd in ("demo", "test", "run", "job", "paper", "matrix", "fidelity", "dynamics", "fedavg",
                "faults", "replot"):
        assert f"\n  {cmd} " in res.stdout, cmd


@pytest.mark.parametrize("args", [("nope",), ()])
def test_unknown_or_missing_command_exits_2(args):
    res = door(*args)
    assert res.returncode == 2 and res.stderr.strip()


@pytest.mark.parametrize("cmd", ["paper", "matrix", "fidelity", "dynamics", "fedavg", "faults",
                                 "replot", "job", "run"])
def test_each_command_reaches_its_program(cmd):
    res = door(cmd, "--help")
    assert res.returncode == 0, res.stderr
    assert "usage" in res.stdout.lower()


def test_demo_defaults_yield_to_the_flags_given():
    assert default_job_args(5, 5) == ["-mi", "1", "-ma", "5", "-c", "6", "-s", "1"]
    assert default_job_args(5, 5, ["-a", "random", "-c", "4"]) == \
        ["-mi", "1", "-ma", "5", "-s", "1", "-a", "random", "-c", "4"]
    assert default_job_args(5, 5, ["--seed=7"])[-1] == "--seed=7"
    assert "-s" not in default_job_args(5, 5, ["--seed=7"])


def test_loopback_demo_with_a_job_flag_runs_exact(tmp_path):
    """``./testbed demo --loopback -a random`` used to fail (AOI 3..8 outside 5x5)."""
    res = subprocess.run([sys.executable, "-m", "experiments.demo", "--loopback", "-a", "random",
                          "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "exact (equals a straightforward count of the file): True" in res.stdout
    assert "allocator=random" in res.stdout
    saved = Path(res.stdout.strip().splitlines()[-1].split("saved: ", 1)[1])
    assert (saved / "job.json").is_file() and saved.parent == tmp_path / "demo"


def test_demo_json_is_one_line_and_results_go_where_asked(tmp_path):
    res = subprocess.run([sys.executable, "-m", "experiments.demo", "--loopback", "--grid", "3x3",
                          "--json", "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (line,) = res.stdout.strip().splitlines()
    out = json.loads(line)
    assert out["exact"] is True and out["plan"]["allocator"] == "bipartite"
    assert Path(out["demo_results_dir"]).parent == tmp_path / "demo"


def test_demo_bad_job_flag_is_refused_before_building():
    res = subprocess.run([sys.executable, "-m", "experiments.demo", "--loopback", "-c", "40"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: 40 collectors")
