"""experiments.dynamics: config validation (fast) and jobs on a moving 3x3 with
cross-over outages (root: builds a network)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.dynamics import DEFAULT_CONFIG, load_config
from topo.constellation import Constellation

ROOT = Path(__file__).resolve().parent.parent


def _run(args, timeout=60):
    return subprocess.run([sys.executable, "-m", "experiments.dynamics", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_unknown_key_exits_2_naming_it(tmp_path):
    bad = tmp_path / "d.yaml"
    bad.write_text("grid: 6x6\ntimefactor: 100\n")
    out = _run(["--config", str(bad)])
    assert out.returncode == 2 and "timefactor: unknown key" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("text, key", [
    ("testbed: {dynamics: false}\n", "testbed.dynamics"),
    ("testbed: {outage_lat_deg: 95}\n", "outage_lat_deg"),
    ("collectors: 30\n", "collectors"),
    ("reducers: [middle]\n", "reducers"),
])
def test_bad_values_exit_2_naming_the_key(tmp_path, text, key):
    bad = tmp_path / "d.yaml"
    bad.write_text(text)
    out = _run(["--config", str(bad)])
    assert out.returncode == 2 and key in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_default_config_makes_outages_change_every_few_seconds():
    cfg = load_config(DEFAULT_CONFIG, {})
    tb = cfg["testbed"]
    planes, sats = map(int, cfg["grid"].split("x"))
    c = Constellation(planes, sats, outage_lat_deg=tb["outage_lat_deg"])
    changes, prev = [], c.down_links(0.0)
    for k in range(1, int(c.period_s)):
        now = c.down_links(float(k))
        if now != prev:
            changes.append(k)
        prev = now
    gaps_wall = [(b - a) / tb["time_factor"] for a, b in zip(changes, changes[1:])]
    assert changes and changes[0] / tb["time_factor"] < 2.0  # the first soon after start
    assert max(gaps_wall) < 6.0, gaps_wall
    # A section override keeps the section's other defaults.
    over = load_config(DEFAULT_CONFIG, {"time_factor": 50.0})
    assert over["testbed"]["time_factor"] == 50.0 and over["testbed"]["outage_lat_deg"] == tb["outage_lat_deg"]


@pytest.mark.root
def test_dynamics_3x3_jobs_exact_through_outages(tmp_path):
    cfg = tmp_path / "dyn.yaml"
    cfg.write_text("""grid: 3x3
minsat: 1
maxsat: 3
collectors: 4
seeds: 2
allocators: [random, bipartite]
reducers: [center]
testbed: {time_factor: 200, outage_lat_deg: 65, step_s: 0.5, rate_scale: 4.0}
""")
    out = _run(["--config", str(cfg), "--json", "--pcap", "g1", "--results", str(tmp_path)], timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["jobs"] == 4 and m["failed"] == 0 and m["all_exact"]
    assert m["steps"] > 0
    during = m["during_jobs"]
    assert during["links_went_down"] + during["links_came_up"] >= 1, m
    assert during["reroute_steps"] >= 1 and during["flows_changed"] >= 1, m
    assert m["jobs_with_outage_change"] >= 1
    out_dir = Path(m["results_dir"])
    with open(out_dir / "jobs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["ok"] == "True" and r["exact"] == "True" for r in rows)
    for name in ("config.yaml", "environment.json", "jobs.csv", "steps.csv", "metrics.json", "dynamics.png"):
        assert (out_dir / name).stat().st_size > 0, name
    # The ground station's capture holds every job's conversation, submit to result.
    from experiments.pcap.scapy_layer import read_frames
    by_job = {}
    for fr in read_frames(str(out_dir / "pcap" / "g1.pcap")):
        by_job.setdefault(fr.job_id, []).append(fr.name)
    assert len(by_job) == 4 and all(n[0] == "SubmitJob" and n[-1] == "JobResult" for n in by_job.values())
