"""headline.md of experiments.paper: the four headlines beside the paper's ranges, the
figure-by-figure comparison, the sensitivity table, and why a number departs."""

from __future__ import annotations

import numpy as np

# The paper's headline ranges (its abstract and Section IV-E), percent.
PAPER_RANGES = {
    "routing_distance_saving_pct": (8.0, 21.0),
    "bipartite_vs_random_pct": (61.0, 79.0),
    "bipartite_vs_eager_pct": (18.0, 28.0),
    "center_vs_los_pct": (67.0, 72.0),
}


def stats_of(values) -> dict:
    v = [x for x in values if x == x]
    if not v:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(np.mean(v)), "min": float(min(v)), "max": float(max(v))}


def headline(figures: dict, f_r: float) -> dict:
    """The four headlines (and two companions), each the mean over its figure's points
    with the range over points: routing saving over constellation sizes (Fig 3),
    bipartite's savings over plane counts (Fig 5), center's at the headline F_R (Fig 7)."""
    def saving(fig, ours, base):
        a, b = fig["series"].get(ours), fig["series"].get(base)
        if not a or not b:
            return []
        return [100.0 * (1.0 - x / y) for x, y in zip(a, b) if y]

    f3, f5, f7 = figures["fig3_path_km"], figures["fig5_map_improvement_pct"], figures["fig7_reduce_cost"]
    return {
        "routing_distance_saving_pct": stats_of(saving(f3, "optimised", "not_optimised")),
        "routing_distance_saving_outage_pct": stats_of(
            saving(f3, "optimised_protected", "not_optimised_protected")),
        "bipartite_vs_random_pct": stats_of(f5["series"]["bipartite_vs_random"]),
        "bipartite_vs_eager_pct": stats_of(f5["series"]["bipartite_vs_eager"]),
        "center_vs_los_pct": stats_of(saving(f7, "center", "los")),
    }


def verdict(mean: float, paper: tuple[float, float]) -> str:
    if mean != mean:
        return "no data"
    if paper[0] <= mean <= paper[1]:
        return "within"
    return "above" if mean > paper[1] else "below"


def headline_table(head: dict, f_r: float) -> list[str]:
    lines = ["| headline | ours: mean over points | ours: range over points | paper | verdict |",
             "|---|---|---|---|---|"]
    for key, (lo, hi) in PAPER_RANGES.items():
        s = head[key]
        name = key + (f" (F_R={f_r:g})" if key == "center_vs_los_pct" else "")
        lines.append(f"| {name} | {s['mean']:.1f}% | {s['min']:.1f}..{s['max']:.1f}% | "
                     f"{lo:g}-{hi:g}% | {verdict(s['mean'], (lo, hi))} |")
    s = head["routing_distance_saving_outage_pct"]
    lines.append(f"| routing saving with cross-over links down | {s['mean']:.1f}% | "
                 f"{s['min']:.1f}..{s['max']:.1f}% | - | - |")
    return lines


def markdown_table(header: list[str], rows) -> list[str]:
    """A markdown table: the header row, the rule, then one row per cell list."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def figure_table(summary: list[dict]) -> list[str]:
    return markdown_table(
        ["figure", "paper's points", "ours agrees (within 20% or paper in our 95% CI)",
         "median abs difference", "paper source"],
        ([r["figure"], r["points"], r["agree"], f"{r['median_abs_rel_diff_pct']:.0f}%",
          r["source"]] for r in summary))


def point_table(rows: list[dict]) -> list[str]:
    return markdown_table(
        ["figure", "series", "x", "paper", "ours", "95% CI", "diff", "agrees"],
        ([r["figure"], r["series"], f"{r['x']:g}", f"{r['paper']:.4g}", f"{r['ours']:.4g}",
          f"{r['ci_low']:.4g}..{r['ci_high']:.4g}", f"{r['rel_diff_pct']:+.0f}%",
          "yes" if r["agrees"] else "no"] for r in rows))


def sensitivity_rows(variants: dict[str, dict], default: str) -> list[dict]:
    """Per headline: its value on the paper's reading and its range across the variants
    (each one setup option changed), naming the variant at each end."""
    out = []
    for key, (lo, hi) in PAPER_RANGES.items():
        if key == "routing_distance_saving_pct":
            continue  # the job options do not touch routing
        vals = {name: v[key] for name, v in variants.items() if v[key] == v[key]}
        if not vals:
            continue
        low, high = min(vals, key=vals.get), max(vals, key=vals.get)
        out.append({"headline": key, "paper": f"{lo:g}-{hi:g}", "paper_reading": variants[default][key],
                    "min": vals[low], "min_variant": low, "max": vals[high], "max_variant": high,
                    "variants_within": sum(lo <= v <= hi for v in vals.values()),
                    "variants": len(vals)})
    return out


def sensitivity_range_table(rows: list[dict]) -> list[str]:
    """Per headline: the paper's range, ours on its reading, and the range across readings."""
    return markdown_table(
        ["headline", "paper", "paper's reading", "lowest (reading)", "highest (reading)",
         "readings inside the paper's range"],
        ([r["headline"], f"{r['paper']}%", f"{r['paper_reading']:.1f}%",
          f"{r['min']:.1f}% ({r['min_variant']})", f"{r['max']:.1f}% ({r['max_variant']})",
          f"{r['variants_within']} of {r['variants']}"] for r in rows))


def sensitivity_table(variants: dict[str, dict], described: dict[str, str], default: str) -> list[str]:
    keys = [k for k in PAPER_RANGES if k != "routing_distance_saving_pct"]
    lines = ["| setup (one option changed from the paper's reading) | "
             + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, v in variants.items():
        cells = [f"{v[k]:.1f}%" + (" *" if PAPER_RANGES[k][0] <= v[k] <= PAPER_RANGES[k][1] else "")
                 for k in keys]
        label = f"**{name}** ({described.get(name, '')})" if name == default else \
            f"{name} ({described.get(name, '')})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| paper | " + " | ".join(f"{PAPER_RANGES[k][0]:g}-{PAPER_RANGES[k][1]:g}%"
                                           for k in keys) + " |")
    lines.append("")
    lines.append("`*`: inside the paper's range.  Every reading over the same seeded runs "
                 "(the sensitivity section's run count, so the paper's reading here can differ "
                 "from the headline above, which uses every run); verdicts are made on the "
                 "paper's reading and the headline's runs only.")
    return lines


# Why a headline can differ from the paper (our formulas follow the paper's Eq. 5-7).
NOTES = {
    "routing_distance_saving_pct":
        "The saving depends on how much of a route is cross-plane and where the plane "
        "change would otherwise happen; plane-first changes planes at the source's "
        "along-orbit angle.",
    "bipartite_vs_random_pct":
        "S(d, V) puts the whole routed path length d into one Shannon term; at low SNR "
        "the rate falls as 1/d^2, so far random pairings cost ~d^2.",
    "bipartite_vs_eager_pct":
        "The paper defines eager only as 'tasks processed sequentially; each assigned to "
        "lowest-cost available mapper' (Sec. IV-C), on the cost bipartite uses, and gives no "
        "order; which collectors it serves first decides which are left with far mappers. "
        "Every order the text allows is a key (eager_order: index, latitude, global), and so "
        "is the reference's choice on hop counts (allocation_cost: hops, the closest); none "
        "brings the saving inside 18-28% (see the sensitivity table).",
    "center_vs_los_pct":
        "With a random 1/5 of the AOI as mappers, the mappers span the whole AOI, so the "
        "mean squared mapper->center path is about half the mapper->LOS one for a LOS "
        "over a US city; mappers in compact blocks (selection: ordered) give more. The paper "
        "puts the reducer 'at the geometric center of the mapper distribution, minimizing total "
        "transfer distance from mappers' (Sec. III-B3) and gives no reduce-cost formula (ours: "
        "r_p K + S(d_red->LOS, V/F_R) + sum S(d_map->red, V/F_M)); every placement the text "
        "or LeoDOS allows is a key (center: wrap_mean, the default; box_mid; medoid; "
        "medoid_m), and the least-cost reducer over every satellite (above) bounds them all "
        "below 67%: with this LOS no reducer saves 67-72% of the LOS cost.",
}


# Why a figure's absolute values can differ, whatever the headlines do.
FIGURE_NOTES = [
    "Figs 3-4: the paper's routes average 0.75*N hops and about 28,700 km at every size, "
    "about half an orbit in-plane (21,700 km) plus a quarter of the planes; uniformly drawn "
    "endpoints on an N x N torus give 0.5*N hops (a quarter orbit each way; the reference's "
    "own router gives the same on uniform pairs), so our absolute lengths and hops are about "
    "0.63x the paper's.  The paper does not say how it drew endpoints and says both "
    "directions are the shortest ('Compute shortest horizontal (cross-plane) and vertical "
    "(within-plane) directions', Sec. IV-B), so this is reported, not adopted; the saving "
    "(a ratio) is what it claims.",
    "Figs 9-10: the paper gives no formula for 'node visits'; ours is the sum over satellites "
    "of (routes entering it)^2, so shared hops count against each other.",
    "Fig 5: the PDF's Fig 5 repeats Fig 9's image; its values here are derived from Fig 6.",
]


def _ratio_range(compare: list[dict], figure: str, series: str) -> str:
    r = [1 + p["rel_diff_pct"] / 100 for p in compare
         if p["figure"] == figure and p["series"] == series and p["rel_diff_pct"] == p["rel_diff_pct"]]
    return f"{min(r):.2f}..{max(r):.2f}x" if r else "n/a"


def notes_for(head: dict, compare: list[dict] = ()) -> list[str]:
    """Why headlines and figures differ; ``compare`` (compare.csv's rows) gives the
    measured ours/paper ratios quoted."""
    lines = [f"- {key}: differs from the paper. {note}" for key, note in NOTES.items()
             if verdict(head[key]["mean"], PAPER_RANGES[key]) != "within"]
    lines += [f"- {note}" for note in FIGURE_NOTES]
    if compare:
        lines.append(f"- Fig 7, ours / paper over the plane counts: LOS "
                     f"{_ratio_range(compare, 'fig7_reduce_cost', 'los')}, center "
                     f"{_ratio_range(compare, 'fig7_reduce_cost', 'center')}; map cost (Fig 6): "
                     f"random {_ratio_range(compare, 'fig6_map_cost', 'random')}, eager "
                     f"{_ratio_range(compare, 'fig6_map_cost', 'eager')}, bipartite "
                     f"{_ratio_range(compare, 'fig6_map_cost', 'bipartite')}.")
    return lines


# A series whose ours/paper ratio stays within this factor (max/min) over its x points is
# called constant (a missing constant: units, volume, a per-hop term); wider, it drifts
# with x (a sizing or setup difference).
CONSTANT_RATIO_SPREAD = 1.25

# What explains each figure's ratio (the analysis behind experiments/README.md).
RATIO_CAUSES = {
    "fig3_path_km": "endpoints: the paper's in-plane legs average half an orbit (the "
                    "half-orbit check above brings every series within 5% of the paper)",
    "fig4_hops": "endpoints: 0.75*N hops in the paper against N/2 for uniform pairs",
    "fig5_map_improvement_pct": "derived from Fig 6 (eager's cost: see Fig 6)",
    "fig6_map_cost": "collectors per plane count and their spread (M, AOI): the paper "
                     "gives neither M nor its eager order",
    "fig7_reduce_cost": "center: cheaper in the paper than every placement its text allows "
                        "(see the sensitivity table)",
    "fig8_improvement_pct": "the center's cost (Fig 7); the rise with F_R and its "
                            "saturation are the paper's",
    "fig9_map_contention": "the paper gives no formula for node visits; its values grow "
                           "faster with the plane count than ours",
    "fig10_reduce_contention": "as Fig 9; the paper's LOS paths visit more satellites",
}


def ratio_rows(compare: list[dict]) -> list[dict]:
    """Per (figure, series): ours / paper at the first and last x, its range, and
    whether it is constant over x (:data:`CONSTANT_RATIO_SPREAD`) or drifts."""
    groups: dict[tuple, list] = {}
    for r in compare:
        if r["paper"] and r["ours"] == r["ours"]:
            groups.setdefault((r["figure"], r["series"]), []).append((r["x"], r["ours"] / r["paper"]))
    out = []
    for (figure, series), pts in groups.items():
        pts.sort()
        ratios = [q for _, q in pts]
        lo, hi = min(ratios), max(ratios)
        constant = lo > 0 and hi / lo <= CONSTANT_RATIO_SPREAD
        out.append({"figure": figure, "series": series, "first": ratios[0], "last": ratios[-1],
                    "min": lo, "max": hi, "kind": "constant" if constant else "drifts",
                    "cause": RATIO_CAUSES.get(figure, "")})
    return out


def ratio_table(rows: list[dict]) -> list[str]:
    return markdown_table(
        ["figure", "series", "ours/paper at first x", "at last x", "range", "over x", "what explains it"],
        ([r["figure"], r["series"], f"{r['first']:.2f}", f"{r['last']:.2f}",
          f"{r['min']:.2f}..{r['max']:.2f}", r["kind"], r["cause"]] for r in rows))


def half_orbit_check(compare: list[dict], in_plane_km) -> list[str]:
    """Figs 3-4 with the paper's apparent endpoints: our routes plus the in-plane hops that
    make an in-plane leg average (N-1)/2 hops (half an orbit, one way round) instead of
    the N/4 of the shortest way, each ``in_plane_km(N)`` long.  An estimate (the
    distance-aware route's cross-plane part is kept as measured); ours/paper per series."""
    lines = []
    for figure in ("fig3_path_km", "fig4_hops"):
        for series in sorted({r["series"] for r in compare if r["figure"] == figure}):
            ratios = []
            for r in compare:
                if r["figure"] != figure or r["series"] != series or not r["paper"]:
                    continue
                n = round(r["x"] ** 0.5)
                extra_hops = n / 4 - 0.5
                extra = extra_hops * (in_plane_km(n) if figure == "fig3_path_km" else 1.0)
                ratios.append((r["ours"] + extra) / r["paper"])
            if ratios:
                lines.append(f"{figure} {series} {min(ratios):.2f}..{max(ratios):.2f}x")
    return lines
