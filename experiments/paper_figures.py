"""The paper's Figs 3-10 from the sweeps' per-run rows, with 95% intervals, and the
point-by-point comparison with the paper's values (``paper_values.yaml``).

A figure is ``{"x": [...], "series": {name: [mean, ...]}, "ci": {name: [[lo, hi], ...]},
"runs": {name: [n, ...]}}``.  Means of a quantity are over runs with a Student-t 95%
interval; an improvement (percent) is ``100 * (1 - mean(ours) / mean(baseline))`` over the
same runs, with a paired bootstrap 95% interval (runs resampled together, seeded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from scipy import stats

PAPER_VALUES = Path(__file__).with_name("paper_values.yaml")
BOOTSTRAP = 2000          # resamples for an improvement's interval
WITHIN_REL = 0.20         # a point agrees when within 20% of the paper's value ...
                          # ... or when the paper's value lies inside our interval

# Series of each figure: name -> (row kind, selector); the x of the routing figures is
# the satellite count, of the job figures the plane count, of Fig 8 the reduce factor F_R.
ROUTING_SERIES = {"optimised": ("distance_aware", False), "not_optimised": ("plane_first", False),
                  "optimised_protected": ("distance_aware", True),
                  "not_optimised_protected": ("plane_first", True)}
ALLOCATORS = ("random", "eager", "bipartite")
REDUCERS = ("los", "center")


def load_paper_values(path: Path = PAPER_VALUES) -> dict:
    """The paper's figures as read off its PDF: {figure key: {source, x, series}}."""
    return yaml.safe_load(path.read_text())["figures"]


def mean_ci(values) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite ``values`` and its Student-t 95% interval
    (the mean itself for one value, NaNs for none)."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if v.size == 1:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return mean, mean - half, mean + half


def saving_ci(ours, base, seed: int = 0) -> tuple[float, float, float]:
    """(saving, low, high): ``100 * (1 - mean(ours) / mean(base))`` over paired runs and
    its paired-bootstrap 95% interval."""
    a, b = np.asarray(ours, dtype=float), np.asarray(base, dtype=float)
    if a.size == 0 or b.sum() == 0:
        return float("nan"), float("nan"), float("nan")
    point = float(100.0 * (1.0 - a.mean() / b.mean()))
    idx = np.random.default_rng(seed).integers(0, a.size, size=(BOOTSTRAP, a.size))
    boot = 100.0 * (1.0 - a[idx].mean(axis=1) / b[idx].mean(axis=1))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return point, float(lo), float(hi)


def _figure(x: list, series: dict[str, list[tuple[float, float, float, int]]]) -> dict:
    return {"x": list(x),
            "series": {k: [p[0] for p in pts] for k, pts in series.items()},
            "ci": {k: [[p[1], p[2]] for p in pts] for k, pts in series.items()},
            "runs": {k: [p[3] for p in pts] for k, pts in series.items()}}


def _paired(rows: list[dict], a: dict, b: dict, value: str):
    """Values of ``value`` for rows matching ``a`` and ``b``, paired by run."""
    def pick(sel):
        return {r["run"]: r[value] for r in rows if all(r[k] == v for k, v in sel.items())
                and r[value] == r[value]}
    ra, rb = pick(a), pick(b)
    runs = sorted(set(ra) & set(rb))
    return [ra[r] for r in runs], [rb[r] for r in runs]


def routing_figures(rows: list[dict]) -> dict:
    """Fig 3 (mean path length, km) and Fig 4 (mean hops) vs satellites."""
    sizes = sorted({r["size"] for r in rows})
    out = {}
    for key, value, scale in (("fig3_path_km", "length_mean_m", 1e-3), ("fig4_hops", "hops_mean", 1)):
        series = {}
        for name, (rule, outages) in ROUTING_SERIES.items():
            pts = []
            for n in sizes:
                vals = [r[value] * scale for r in rows
                        if r["size"] == n and r["rule"] == rule and r["outages"] == outages]
                pts.append((*mean_ci(vals), len(vals)))
            if any(p[3] for p in pts):
                series[name] = pts
        out[key] = _figure([n * n for n in sizes], series)
    return out


def job_figures(map_rows: list[dict], reduce_rows: list[dict], f_r: float) -> dict:
    """Figs 5-10 from the job sweep's rows (Fig 7 and 10 at the headline F_R)."""
    planes = sorted({r["planes"] for r in map_rows})
    at = [r for r in reduce_rows if r["reduce_factor"] == f_r]
    figs = {}

    def quantity(rows, kind_key, kinds, value):
        return {k: [(*mean_ci([r[value] for r in rows
                                 if r["planes"] == n and r[kind_key] == k]),
                     sum(r["planes"] == n and r[kind_key] == k for r in rows))
                    for n in planes] for k in kinds}

    def improvement(rows, kind_key, ours, bases, value):
        series = {}
        for base in bases:
            pts = []
            for n in planes:
                point = [r for r in rows if r["planes"] == n]
                a, b = _paired(point, {kind_key: ours}, {kind_key: base}, value)
                pts.append((*saving_ci(a, b, seed=n), len(a)))
            series[f"{ours}_vs_{base}"] = pts
        return series

    figs["fig5_map_improvement_pct"] = _figure(
        planes, improvement(map_rows, "allocator", "bipartite", ("random", "eager"), "map_cost_s"))
    figs["fig6_map_cost"] = _figure(planes, quantity(map_rows, "allocator", ALLOCATORS, "map_cost_s"))
    figs["fig7_reduce_cost"] = _figure(planes, quantity(at, "reducetype", REDUCERS, "reduce_cost_s"))
    factors = sorted({r["reduce_factor"] for r in reduce_rows})
    pts = []
    for f in factors:  # pooled over every plane count: one line, as the paper draws it
        rows = [r for r in reduce_rows if r["reduce_factor"] == f]
        keyed = {(r["planes"], r["run"], r["reducetype"]): r["reduce_cost_s"] for r in rows}
        runs = sorted({(p, k) for p, k, _ in keyed if (p, k, "los") in keyed
                       and (p, k, "center") in keyed})
        pts.append((*saving_ci([keyed[(*pk, "center")] for pk in runs],
                               [keyed[(*pk, "los")] for pk in runs], seed=int(f)), len(runs)))
    figs["fig8_improvement_pct"] = _figure(factors, {"center_vs_los": pts})
    if map_rows and "contention" in map_rows[0]:
        figs["fig9_map_contention"] = _figure(
            planes, quantity(map_rows, "allocator", ALLOCATORS, "contention"))
        figs["fig10_reduce_contention"] = _figure(
            planes, quantity(at, "reducetype", REDUCERS, "contention"))
    return figs


def compare(figures: dict, paper: dict) -> list[dict]:
    """One row per paper point: the paper's value, ours, our interval, and whether they
    agree (within 20% of the paper's value, or the paper's value inside our interval)."""
    rows = []
    for key, ref in paper.items():
        fig = figures.get(key)
        for name, values in ref["series"].items():
            for x, want in zip(ref["x"], values):
                row = {"figure": key, "series": name, "x": x, "paper": want,
                       "ours": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                       "runs": 0, "rel_diff_pct": float("nan"), "paper_in_ci": False,
                       "agrees": False, "source": ref["source"]}
                if fig and name in fig["series"] and x in fig["x"]:
                    i = fig["x"].index(x)
                    ours = fig["series"][name][i]
                    lo, hi = fig["ci"][name][i]
                    rel = (ours - want) / want if want else float("nan")
                    inside = bool(lo <= want <= hi)
                    row.update(ours=ours, ci_low=lo, ci_high=hi, runs=fig["runs"][name][i],
                               rel_diff_pct=100 * rel, paper_in_ci=inside,
                               agrees=bool(inside or abs(rel) <= WITHIN_REL))
                rows.append(row)
    return rows


def figure_summary(rows: list[dict]) -> list[dict]:
    """Per figure: how many of the paper's points ours agrees with."""
    out = []
    for key in dict.fromkeys(r["figure"] for r in rows):
        pts = [r for r in rows if r["figure"] == key]
        rel = [abs(r["rel_diff_pct"]) for r in pts if r["rel_diff_pct"] == r["rel_diff_pct"]]
        out.append({"figure": key, "points": len(pts), "agree": sum(r["agrees"] for r in pts),
                    "median_abs_rel_diff_pct": float(np.median(rel)) if rel else float("nan"),
                    "source": pts[0]["source"]})
    return out
