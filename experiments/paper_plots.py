"""Plots of the paper's Figs 3-10: our mean with its 95% interval beside the paper's
values, as PNG and SVG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

# key -> (title, x label, y label, x log base or None)
FIGURES = {
    "fig3_path_km": ("Fig 3: routing distance", "satellites (N = M)", "mean path length (km)", None),
    "fig4_hops": ("Fig 4: hop count", "satellites (N = M)", "mean hops", None),
    "fig5_map_improvement_pct": ("Fig 5: map allocation improvement", "orbital planes",
                                 "bipartite's saving (%)", None),
    "fig6_map_cost": ("Fig 6: map cost", "orbital planes", "map cost C_m (s)", None),
    "fig7_reduce_cost": ("Fig 7: reduce cost", "orbital planes", "reduce cost C_r (s)", None),
    "fig8_improvement_pct": ("Fig 8: center vs LOS by reduce factor", "reduce factor F_R",
                             "center's reduce-cost saving (%)", 2),
    "fig9_map_contention": ("Fig 9: map phase contention", "orbital planes",
                            "contention (sum of node visits squared)", None),
    "fig10_reduce_contention": ("Fig 10: reduce phase contention", "orbital planes",
                                "contention (sum of node visits squared)", None),
}


def plot_figure(key: str, fig: dict, paper: dict | None, out: Path, note: str = "") -> list[Path]:
    """One figure: each series' mean with 95% error bars, the paper's values dashed in
    the same colour.  Writes ``<key>.png`` and ``<key>.svg``; returns their paths."""
    title, xlabel, ylabel, log_base = FIGURES[key]
    f, ax = plt.subplots(figsize=(6.5, 4.4))
    for k, (name, means) in enumerate(fig["series"].items()):
        color = f"C{k}"
        lo = [m - c[0] for m, c in zip(means, fig["ci"][name])]
        hi = [c[1] - m for m, c in zip(means, fig["ci"][name])]
        ax.errorbar(fig["x"], means, yerr=[lo, hi], color=color, marker="o", ms=4, capsize=3,
                    label=f"{name} (ours, 95% CI)")
        if paper and name in paper["series"]:
            ax.plot(paper["x"], paper["series"][name], "--", color=color, marker="x", alpha=0.8,
                    label=f"{name} (paper)")
    if log_base:
        ax.set_xscale("log", base=log_base)
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    f.tight_layout()
    return save_png_svg(f, out, key)


def save_png_svg(f, out: Path, stem: str) -> list[Path]:
    """Write figure ``f`` as ``<out>/<stem>.png`` and ``.svg``, close it; their paths."""
    paths = []
    for ext in ("png", "svg"):
        path = out / f"{stem}.{ext}"
        f.savefig(path, dpi=110)
        paths.append(path)
    plt.close(f)
    return paths


def plot_all(figures: dict, paper: dict, out: Path, note: str = "") -> list[Path]:
    """Every figure of ``figures`` that :data:`FIGURES` knows."""
    paths = []
    for key, fig in figures.items():
        if key in FIGURES:
            paths += plot_figure(key, fig, paper.get(key), out, note)
    return paths
