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


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _points(svg_text: str) -> list[int]:
    import re
    return [g.count("<use") for g in re.findall(r'id="PathCollection_\d+">(.*?)</g>', svg_text, re.S)]


def test_replot_fidelity_and_dynamics_from_their_csvs(tmp_path):
    from experiments.replot import replot
    fid = tmp_path / "fid"
    fid.mkdir()
    _write(fid / "links.csv", [{"link": f"[1, {i}]-[2, {i}]", "kind": k, "shaped_mbps": 10.0 * i,
                                "measured_mbps": 9.5 * i, "ratio": 0.95}
                               for i, k in ((1, "in"), (2, "cross"), (3, "in"))])
    _write(fid / "jobs.csv", [{"allocator": a, "job_time": 1.0 + i, "link_load_s": 0.5 + i,
                               "per_hop_s": 0.6 + i, "paper_scaled_s": 0.7 + i, "cost": 2.0 - i}
                              for i, a in enumerate(["random", "eager", "bipartite", "random"])])
    paths = replot(fid)
    assert {p.name for p in paths} == {"throughput.png", "throughput.svg", "jobs.png", "jobs.svg"}
    # one point per job in each predictor's panel: 4 panels x (2 random, 1 eager, 1 bipartite),
    # and the first panel's legend (one marker per allocator)
    assert sorted(_points((fid / "jobs.svg").read_text())) == sorted([2, 1, 1] * 4 + [1, 1, 1])

    dyn = tmp_path / "dyn"
    dyn.mkdir()
    _write(dyn / "jobs.csv", [{"seed": 1, "wall_start_s": 1.0, "wall_end_s": 3.0, "exact": True},
                              {"seed": 2, "wall_start_s": 4.0, "wall_end_s": 6.0, "exact": False}])
    _write(dyn / "steps.csv", [{"wall_s": float(t), "links_down": t % 3, "hops_changed": 2 * t}
                               for t in range(8)])
    paths = replot(dyn)
    assert {p.name for p in paths} == {"dynamics.png", "dynamics.svg"}
    assert (dyn / "dynamics.png").read_bytes()[:4] == b"\x89PNG"
