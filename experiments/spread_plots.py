"""Plots that show the spread, not only the mean: per-seed points and 95 % confidence
intervals (Student t over the seeds), written as PNG and SVG; and ``replot``.

    python3 -m experiments.replot RESULT_DIR      # redraw a run's plots from its CSVs

Used by the acceptance matrix (``matrix.png``/``matrix.svg`` from ``jobs.csv``).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

FORMATS = ("png", "svg")
PALETTE = ["#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]


def mean_ci95(values) -> tuple[float, float]:
    """Mean and the half-width of its 95 % confidence interval (t distribution; 0 for
    fewer than two values)."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, 0.0
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    from scipy import stats
    sem = statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * sem)


def cell_plot(rows: list[dict], cell_of, cells: list[str], metrics, path_stem: Path,
              title: str = "") -> list[Path]:
    """One panel per ``(metric, unit)``: per cell the mean (bar), its 95 % interval (error
    bar) and every seed's value (points).  ``cell_of(row)`` names a row's cell.  Writes
    ``path_stem.png`` and ``path_stem.svg``; returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.9))
    axes = np.atleast_1d(axes)
    rng = np.random.default_rng(0)  # jitter only; fixed so replots are identical
    for ax, (metric, unit) in zip(axes, metrics):
        for k, cell in enumerate(cells):
            vals = [float(r[metric]) for r in rows if cell_of(r) == cell
                    and r.get(metric) not in (None, "")]
            if not vals:
                continue
            mean, half = mean_ci95(vals)
            colour = PALETTE[k % len(PALETTE)]
            ax.bar(k, mean, color=colour, alpha=0.35, width=0.7)
            ax.errorbar(k, mean, yerr=half, color="black", capsize=5, lw=1.2)
            ax.scatter(k + rng.uniform(-0.18, 0.18, len(vals)), vals, s=14, color=colour,
                       edgecolors="black", linewidths=0.4, zorder=3)
        ax.set_xticks(range(len(cells)), cells, rotation=20)
        ax.set_title(f"{metric} ({unit})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    n = len({r.get("seed") for r in rows})
    fig.suptitle((title + "  " if title else "") + f"bars: mean; whiskers: 95 % CI over "
                 f"{n} seeds; points: seeds", fontsize=9)
    fig.tight_layout()
    out = []
    for fmt in FORMATS:
        path = Path(f"{path_stem}.{fmt}")
        fig.savefig(path, format=fmt, dpi=110)
        out.append(path)
    plt.close(fig)
    return out
