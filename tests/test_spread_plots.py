"""Spread plots (per-seed points, 95 % intervals, PNG and SVG) and ``experiments.replot``."""

import csv
import os
import subprocess
import sys

import pytest

from experiments.spread_plots import mean_ci95

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mean_ci95_student_t():
    mean, half = mean_ci95([1, 2, 3, 4, 5])
    assert mean == 3 and half == pytest.approx(2.7764451 * 1.5811388 / 5 ** 0.5, rel=1e-6)
    assert mean_ci95([7.0]) == (7.0, 0.0)


def test_replot_matrix_from_its_csv(tmp_path):
    rows = [{"seed": s, "allocator": a, "reducer": r, "distance": 10 + s + (5 if a == "random" else 0),
             "reduce_distance": 20 - s, "job_time": 1.5 + 0.1 * s, "exact": True}
            for s in (1, 2, 3) for a in ("random", "bipartite") for r in ("los", "center")]
    with open(tmp_path / "jobs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    proc = subprocess.run([sys.executable, "-m", "experiments.replot", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "matrix.png").read_bytes()[:4] == b"\x89PNG"
    svg = (tmp_path / "matrix.svg").read_text()
    # one scatter per cell and metric (4 x 3), each with a point per seed (3)
    import re
    groups = re.findall(r'id="PathCollection_\d+">(.*?)</g>', svg, re.S)
    assert len(groups) == 12 and all(g.count("<use") == 3 for g in groups)
    proc = subprocess.run([sys.executable, "-m", "experiments.replot", str(tmp_path / "none")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no plot to redraw" in proc.stderr
