"""PNG plots of the paper's sweeps (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

RULE_LABELS = {"distance_aware": "distance-aware", "plane_first": "plane-first"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_routing(summary: list[dict], out: Path) -> list[Path]:
    """Sweep 1 (length, hops, saving vs satellites) and sweep 5 (contention)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for outages, style in ((False, "-"), (True, "--")):
        pts = [r for r in summary if r["outages"] == outages]
        if not pts:
            continue
        x = [r["satellites"] for r in pts]
        tag = "outages" if outages else "no outages"
        for rule, marker in (("distance_aware", "o"), ("plane_first", "s")):
            label = f"{RULE_LABELS[rule]}, {tag}"
            axes[0].plot(x, [r[f"length_km_{rule}"] for r in pts], style, marker=marker, label=label)
            axes[1].plot(x, [r[f"hops_{rule}"] for r in pts], style, marker=marker, label=label)
        axes[2].plot(x, [r["distance_saving_pct"] for r in pts], style, marker="o", label=tag)
    axes[2].axhspan(8, 21, color="tab:green", alpha=0.15, label="paper: 8-21%")
    for ax, ylabel in zip(axes, ("mean path length (km)", "mean hops",
                                 "distance saving vs plane-first (%)")):
        ax.set_xlabel("satellites (N = M)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    paths = [_save(fig, out / "routing_distance.png")]

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for outages, style in ((False, "-"), (True, "--")):
        pts = [r for r in summary if r["outages"] == outages]
        x = [r["satellites"] for r in pts]
        for rule, marker in (("distance_aware", "o"), ("plane_first", "s")):
            ax.plot(x, [r[f"relay_visits_max_{rule}"] for r in pts], style, marker=marker,
                    label=f"{RULE_LABELS[rule]}, {'outages' if outages else 'no outages'}")
    ax.set_xlabel("satellites (N = M)")
    ax.set_ylabel("routes through the busiest relay (mean over runs)")
    ax.set_title("Contention: node visits per routed set")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "contention.png"))
    return paths


def plot_map(summary: list[dict], out: Path) -> Path:
    """Sweep 2: map cost by allocator vs satellites."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    x = [r["satellites"] for r in summary]
    for allocator, marker in (("random", "^"), ("eager", "s"), ("bipartite", "o")):
        ax.plot(x, [r[f"map_cost_s_{allocator}"] for r in summary], marker=marker, label=allocator)
    ax.set_yscale("log")
    ax.set_xlabel("satellites (N = M)")
    ax.set_ylabel("map cost C_m (s, mean over runs)")
    ax.set_title("Map cost by allocator (physical cost, Eq. 5)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, out / "map_cost.png")


def plot_reduce(summary: list[dict], headline_f_r: float, out: Path) -> list[Path]:
    """Sweep 3 (reduce cost LOS vs center at the headline F_R) and sweep 4 (center's
    saving vs F_R, one line per constellation size)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    pts = [r for r in summary if r["reduce_factor"] == headline_f_r]
    x = [r["planes"] ** 2 for r in pts]
    ax.plot(x, [r["reduce_cost_s_los"] for r in pts], marker="^", label="LOS reducer")
    ax.plot(x, [r["reduce_cost_s_center"] for r in pts], marker="o", label="center reducer")
    ax.set_yscale("log")
    ax.set_xlabel("satellites (N = M)")
    ax.set_ylabel("reduce cost C_r (s, mean over runs)")
    ax.set_title(f"Reduce cost by placement (F_R = {headline_f_r:g})")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    paths = [_save(fig, out / "reduce_cost.png")]

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for planes in sorted({r["planes"] for r in summary}):
        pts = sorted((r for r in summary if r["planes"] == planes), key=lambda r: r["reduce_factor"])
        ax.plot([r["reduce_factor"] for r in pts], [r["center_vs_los_pct"] for r in pts],
                marker="o", label=f"{planes}x{planes}")
    ax.set_xscale("log", base=2)
    ax.axhspan(67, 72, color="tab:green", alpha=0.15, label="paper at F_R=5: 67-72%")
    ax.set_xlabel("reduce reduction factor F_R")
    ax.set_ylabel("center vs LOS: reduce cost saving (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "reduce_factor.png"))
    return paths
