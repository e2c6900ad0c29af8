"""Redraw a run's plots from the CSVs it wrote: ``python3 -m experiments.replot RESULT_DIR``.

Knows the acceptance matrix (``jobs.csv`` -> ``matrix.png``/``matrix.svg``: per-seed points
and 95 % intervals).  Exit 0 redrawn, 2 not a result directory it knows.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def replot(result_dir: Path) -> list[Path]:
    """Redraw what ``result_dir`` holds; ValueError when nothing is known there."""
    jobs = result_dir / "jobs.csv"
    if jobs.is_file():
        rows = _rows(jobs)
        if rows and {"allocator", "reducer", "distance"} <= set(rows[0]):
            from experiments.matrix import plot_rows
            return plot_rows(rows, result_dir / "matrix")
    raise ValueError(f"{result_dir}: no plot to redraw (expected a matrix run's jobs.csv)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m experiments.replot", description=__doc__.split("\n")[0])
    p.add_argument("result_dir", type=Path)
    a = p.parse_args(argv)
    try:
        paths = replot(a.result_dir)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
