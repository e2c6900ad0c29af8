"""Redraw a run's plots from the CSVs it wrote: ``python3 -m experiments.replot RESULT_DIR``.

Knows the acceptance matrix (``jobs.csv`` -> ``matrix.png``/``.svg``: per-seed points and
95 % intervals), fidelity (``links.csv``, ``rtt.csv``, ``jobs.csv`` -> ``throughput``,
``rtt``, ``jobs``: one point a link or a job) and dynamics (``jobs.csv`` + ``steps.csv`` ->
``dynamics``), each as PNG and SVG.  Exit 0 redrawn, 2 not a result directory it knows.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from topo import cli


def _value(text: str):
    """A CSV cell back to what was written: bool, number, empty (None) or text."""
    if text in ("True", "False"):
        return text == "True"
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def rows(path: Path) -> list[dict]:
    """The rows of a CSV this project wrote, cells typed back (empty list when absent)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _value(v) for k, v in r.items()} for r in csv.DictReader(f)]


def replot(result_dir: Path) -> list[Path]:
    """Redraw what ``result_dir`` holds; ValueError when nothing is known there."""
    jobs = rows(result_dir / "jobs.csv")
    cols = set(jobs[0]) if jobs else set()
    if (result_dir / "steps.csv").is_file() and {"wall_start_s", "wall_end_s"} <= cols:
        from experiments.dynamics import plot
        return plot(jobs, rows(result_dir / "steps.csv"), result_dir)
    if (result_dir / "links.csv").is_file():
        from experiments.fidelity import plot
        return plot(rows(result_dir / "links.csv"), rows(result_dir / "rtt.csv"), jobs, result_dir)
    if {"allocator", "reducer", "distance"} <= cols:
        from experiments.matrix import plot_rows
        with open(result_dir / "jobs.csv", newline="", encoding="utf-8") as f:
            return plot_rows(list(csv.DictReader(f)), result_dir / "matrix")
    raise ValueError(f"{result_dir}: no plot to redraw (expected a matrix, fidelity or "
                     f"dynamics run's CSVs)")


def main(argv=None) -> int:
    p = cli.parser("python3 -m experiments.replot", __doc__)
    p.add_argument("result_dir", type=Path)
    a = p.parse_args(argv)
    try:
        paths = replot(a.result_dir)
    except (OSError, ValueError) as e:
        raise cli.UsageError(str(e)) from None
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
