"""The ground job CLI's planning interface: ``python3 -m node_app.job --dry-run``."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = json.loads((Path(__file__).parent / "reference_ci_values.json").read_text())


def run_job(*args):
    return subprocess.run([sys.executable, "-m", "node_app.job", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_dry_run_json_matches_the_reference_ci_case():
    for seed in (1, 4):
        for reducetype in ("los", "center"):
            out = run_job("--grid", "11x11", "-a", "bipartite", "-r", reducetype, "-s", str(seed),
                          "-mi", "3", "-ma", "8", "-c", "15", "--dry-run", "--json")
            assert out.returncode == 0, out.stderr
            lines = out.stdout.strip().splitlines()
            assert len(lines) == 1
            plan = json.loads(lines[0])
            for key in ("reducer", "los", "allocations", "allocator", "distance",
                        "reduce_distance", "cost"):
                assert key in plan
            assert [plan["distance"], plan["reduce_distance"]] == REFERENCE[f"{seed}-{reducetype}"]
            assert plan["allocator"] == "bipartite" and plan["los"] == [1, 1]
            assert len(plan["allocations"]) == 15
            collectors = [tuple(c) for c, _ in plan["allocations"]]
            mappers = [tuple(m) for _, m in plan["allocations"]]
            assert len(set(collectors)) == len(set(mappers)) == 15
            assert not set(collectors) & set(mappers)
            assert plan["cost"] > 0


def test_dry_run_table_is_the_default_output():
    out = run_job("--grid", "5x5", "-mi", "1", "-ma", "4", "-c", "3", "-s", "2", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "collector" in out.stdout and "distance=" in out.stdout


def test_random_seed_is_reported_so_the_plan_can_be_repeated():
    first = json.loads(run_job("-a", "random", "-c", "5", "--dry-run", "--json").stdout)
    again = json.loads(run_job("-a", "random", "-c", "5", "-s", str(first["seed"]),
                               "--dry-run", "--json").stdout)
    assert again["allocations"] == first["allocations"]


@pytest.mark.parametrize("args, message", [
    (["--grid", "2x2"], "grid"),
    (["--grid", "elevenbyeleven"], "--grid"),
    (["-mi", "0"], "outside"),
    (["-ma", "12"], "outside"),
    (["-c", "19"], "collectors"),
    (["-a", "fastest"], "allocator"),
    (["-r", "middle"], "reducer"),
    (["-s", "notanumber"], "seed"),
    (["-d", "/nonexistent/job.json"], "--data"),
    (["--no-such-flag"], "unrecognized"),
])
def test_bad_input_gives_one_line_and_exit_2(args, message):
    out = run_job(*args, "--dry-run", "--json")
    assert out.returncode == 2
    assert out.stdout == ""
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert message in out.stderr


def test_malformed_job_data_is_refused(tmp_path):
    bad = tmp_path / "job.json"
    bad.write_text("{not json")
    out = run_job("-d", str(bad), "--dry-run", "--json")
    assert out.returncode == 2 and "invalid JSON" in out.stderr and "Traceback" not in out.stderr
    good = tmp_path / "good.json"
    good.write_text('{"filename": "x.txt"}')
    out = run_job("-d", str(good), "--dry-run", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["job_data"] == {"filename": "x.txt"}


@pytest.mark.parametrize("text, message", [
    ("grid: 5x5\nfrobnicate: 3\n", "frobnicate: unknown key"),
    ("grid: 5x5\ninclination_deg: 400\n", "inclination_deg"),
    ("grid: [5\n", "not valid YAML"),
    ("- just\n- a list\n", "mapping"),
    ("grid: 2x9\n", "grid"),
])
def test_malformed_config_is_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "testbed.yaml"
    path.write_text(text)
    out = run_job("--config", str(path), "-mi", "1", "-ma", "5", "-c", "4", "--dry-run", "--json")
    assert out.returncode == 2 and out.stdout == ""
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_config_sets_grid_los_and_orbit(tmp_path):
    path = tmp_path / "testbed.yaml"
    path.write_text("grid: 5x7\nground: [[2, 3]]\ninclination_deg: 53\n")
    args = ("-mi", "1", "-ma", "5", "-c", "4", "-s", "3", "-r", "los", "--cost", "physical",
            "--dry-run", "--json")
    plan = json.loads(run_job("--config", str(path), *args).stdout)
    assert plan["grid"] == "5x7" and plan["los"] == [2, 3] and plan["reducer"] == [2, 3]
    # Inclination changes cross-plane lengths, hence the physical path lengths.
    path.write_text("grid: 5x7\nground: [[2, 3]]\ninclination_deg: 87\n")
    polar = json.loads(run_job("--config", str(path), *args).stdout)
    assert polar["distance_m"] != plan["distance_m"]
    # Flags still win over the config.
    flagged = json.loads(run_job("--config", str(path), "--grid", "6x6", "--los", "1,1", *args).stdout)
    assert flagged["grid"] == "6x6" and flagged["los"] == [1, 1]
