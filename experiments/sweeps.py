"""One run of each of the paper's simulated sweeps, and their aggregation.

A run is one seeded random draw (time, endpoints, AOI, line-of-sight satellite) at one
point of a sweep; it is a plain top-level function of plain arguments so a process
pool can run it anywhere.  Every number comes from the project's own model:
:mod:`controller.routing` routes, :mod:`node_app.planner` allocates and places the
reducer, :mod:`node_app.cost_model` costs.  Nothing here re-implements them.

Units: lengths in metres, times and costs in seconds (the cost model's unit).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from functools import lru_cache

import numpy as np

from controller.routing import ROUTING_RULES, NoRoute, Router
from node_app.cost_model import CostModel
from node_app.planner import (ALLOCATORS, GeoBox, geo_collectors, grid_aoi,
                              nearest_satellite, plan_job)
from topo.cities import larger_than
from topo.constellation import Constellation

REDUCERS = ("los", "center")


def run_rng(seed: int, sweep: str, point, run: int) -> random.Random:
    """The random stream of one run: fixed by (seed, sweep, point, run) alone, so
    results do not depend on worker count or scheduling.  (String seeds are hashed
    with SHA-512 by :mod:`random`, not with the per-process ``hash``.)"""
    return random.Random(f"{seed}:{sweep}:{point}:{run}")


# --- sweeps 1 and 5: routing distance, hops and contention ---------------------------------
def routing_run(size: int, outages: bool, run: int, *, seed: int, endpoints: int,
                outage_lat_deg: float, constellation: dict) -> list[dict]:
    """Route ``endpoints`` x ``endpoints`` random pairs on a ``size`` x ``size`` grid at a
    random time, with every rule of :data:`ROUTING_RULES`, over the same pairs.

    outages: cross-plane ISLs are down above ``outage_lat_deg`` (cross-over protection);
        both rules then route outage-aware (BFS-minimal).
    Returns one row per rule: mean hops, mean path length (m), contention (how many of
    the routes relay through the busiest satellite, and the mean over relaying
    satellites; endpoints are not counted, they own the traffic), and pair-by-pair
    comparisons against the plane-first baseline.
    """
    rng = run_rng(seed, "routing", (size, outages), run)
    c = Constellation(size, size, outage_lat_deg=outage_lat_deg if outages else None,
                      **constellation)
    t_s = rng.uniform(0.0, c.period_s)
    down = c.down_links(t_s) if outages else frozenset()
    sats = c.satellites()
    sources = rng.sample(sats, endpoints)
    targets = rng.sample(sats, endpoints)
    pairs = [(a, b) for a in sources for b in targets if a != b]

    routes = {}
    for rule, router_class in ROUTING_RULES.items():
        router = router_class(c, t_s, down)
        routes[rule] = []
        for a, b in pairs:
            try:
                routes[rule].append(router.route(a, b))
            except NoRoute:  # a partitioned grid: count it, do not crash the sweep
                routes[rule].append(None)
    base = routes["plane_first"]
    rows = []
    for rule, rs in routes.items():
        ok = [k for k, r in enumerate(rs) if r is not None and base[k] is not None]
        visits = Counter(sat for k in ok for sat in rs[k].path[1:-1])
        rows.append({
            "size": size, "satellites": c.size, "outages": outages, "run": run, "rule": rule,
            "t_s": round(t_s, 3), "down_links": len(down), "routes": len(ok),
            "unreachable": len(rs) - len(ok),
            "hops_mean": float(np.mean([rs[k].hops for k in ok])) if ok else float("nan"),
            "length_mean_m": float(np.mean([rs[k].length_m for k in ok])) if ok else float("nan"),
            "relay_visits_max": max(visits.values(), default=0),
            "relay_visits_mean": float(np.mean(list(visits.values()))) if visits else 0.0,
            "relays": len(visits),
            "pairs_more_hops": sum(rs[k].hops > base[k].hops for k in ok),
            "pairs_longer": sum(rs[k].length_m > base[k].length_m + 1e-3 for k in ok),
        })
    return rows


# --- sweeps 2, 3 and 4: map and reduce cost ------------------------------------------------
def job_grid(planes: int, jobs: dict) -> tuple[int, int]:
    """(planes, satellites per plane) of a job sweep point under ``jobs["sizing"]``:
    ``square`` N = M; ``sats_per_plane`` a fixed M; ``total`` N x M growing linearly
    from ``total_satellites[0]`` at the first plane count to ``[1]`` at the last."""
    sizing = jobs.get("sizing", "square")
    if sizing == "square":
        return planes, planes
    if sizing == "sats_per_plane":
        return planes, int(jobs["sats_per_plane"])
    lo, hi = jobs["total_satellites"]
    first, last = min(jobs["planes"]), max(jobs["planes"])
    total = lo if first == last else lo + (hi - lo) * (planes - first) / (last - first)
    return planes, max(3, round(total / planes))


@lru_cache(maxsize=None)
def los_cities(min_population: int, region: str, box: GeoBox | None) -> tuple:
    """(lat, lon) of the cities of more than ``min_population`` people
    (:func:`topo.cities.larger_than`: GeoNames, packaged data) in ``region``: ``world``,
    ``aoi`` (inside ``box``) or a comma-separated list of ISO country codes (``US``)."""
    codes = {c.strip().upper() for c in region.split(",")}
    return tuple((c.lat_deg, c.lon_deg) for c in larger_than(min_population)
                 if region == "world"
                 or (region == "aoi" and box is not None and box.contains(c.lat_deg, c.lon_deg))
                 or (region not in ("world", "aoi") and c.country.upper() in codes))


def line_of_sight(c: Constellation, rng: random.Random, t_s: float, jobs: dict) -> tuple:
    """The run's LOS satellite and where it came from: the satellite over a random city
    (``los.source: cities``) or a random satellite (``uniform``)."""
    los = jobs.get("los", {"source": "uniform"})
    if los["source"] == "uniform":
        return rng.choice(c.satellites()), "uniform"
    box = GeoBox(**jobs["geo_box"]) if los.get("region") == "aoi" else None
    cities = los_cities(int(los["min_population"]), los["region"], box)
    lat, lon = rng.choice(cities)
    sat = nearest_satellite(c, lat, lon, t_s, los["ascending_only"])
    return sat, f"{lat:.2f},{lon:.2f}"


def job_aoi(c: Constellation, rng: random.Random, t_s: float, jobs: dict) -> list:
    """The run's area of interest: a geographic box at time t (ascending-only as
    configured; with ``footprint_diameter_m`` > 0 every satellite whose footprint
    touches the box, else those whose sub-satellite point lies in it) or the
    reference's grid AOI, shuffled (``selection: shuffled``) or in
    node-id order (``ordered``: collectors and mappers then form compact blocks)."""
    if jobs["aoi"] == "grid":
        lo, hi = jobs["grid_aoi"]
        return grid_aoi(c, lo, hi, rng)
    aoi = geo_collectors(c, GeoBox(**jobs["geo_box"]), t_s, jobs["ascending_only"],
                         footprint_radius_m=jobs.get("footprint_diameter_m", 0.0) / 2)
    if jobs.get("selection", "shuffled") == "shuffled":
        rng.shuffle(aoi)
    return aoi


def contention(routes) -> dict:
    """Node visits of a phase's routes: every satellite a route enters (the source is
    not visited, the destination is).  ``visits`` is their total (the sum of hops);
    ``contention`` the sum over satellites of visits squared (routes sharing a
    satellite count against each other: the paper's congestion proxy, Figs 9-10);
    ``max_visits`` the busiest satellite's count."""
    visits = Counter(sat for route in routes for sat in route.path[1:])
    return {"visits": sum(visits.values()),
            "contention": sum(v * v for v in visits.values()),
            "max_visits": max(visits.values(), default=0)}


def job_run(planes: int, run: int, *, seed: int, jobs: dict, constellation: dict,
            routes: bool = True) -> dict:
    """Plan one job at a random time with every allocator and both reducer placements,
    costed physically (Eq. 5-7), on the grid :func:`job_grid` gives ``planes``.

    A fraction of the AOI (``collector_fraction``) collects and a disjoint equal share
    maps; the LOS satellite comes from :func:`line_of_sight`; the center reducer goes
    where ``jobs["center"]`` says (geographic AOIs; the grid AOI keeps the reference's
    truncating mean); eager serves collectors in ``jobs["eager_order"]``; the allocators
    choose on ``jobs["allocation_cost"]`` (``physical``: Eq. 5, ``hops``: the reference's
    hop counts) and every cost reported is Eq. 5-7 either way.  Returns
    ``map`` rows (one per allocator) and ``reduce`` rows (bipartite allocation, one
    per reducer placement and F_R); with ``routes`` each row also carries the node
    visits of its phase (:func:`contention`).  ``skipped`` when the AOI is too small.
    """
    n, m = job_grid(planes, jobs)
    rng = run_rng(seed, "jobs", planes, run)
    c = Constellation(n, m, **constellation)
    t_s = rng.uniform(0.0, c.period_s)
    aoi = job_aoi(c, rng, t_s, jobs)
    k = int(len(aoi) * jobs["collector_fraction"])
    head = {"planes": planes, "sats_per_plane": m, "satellites": c.size, "run": run,
            "t_s": round(t_s, 3), "aoi_nodes": len(aoi), "collectors": k}
    if k < 1:
        return {"map": [], "reduce": [], "skipped": [head]}
    collectors, mappers = aoi[:k], aoi[k:2 * k]
    los, los_from = line_of_sight(c, rng, t_s, jobs)
    router = Router(c, t_s)  # plans are made and costed at the run's time
    model = CostModel(**jobs["cost_model"])
    plan_seed = rng.randrange(2 ** 31)  # the random allocator's own stream
    center = "reference_mean" if jobs["aoi"] == "grid" else jobs.get("center", "reference_mean")

    def plan(allocator, reducetype, cost_model):
        return plan_job(c, collectors, mappers, allocator=allocator, reducetype=reducetype,
                        los=los, cost_kind=jobs.get("allocation_cost", "physical"),
                        cost_model=cost_model, seed=plan_seed,
                        router=router, center=center,
                        eager_order=jobs.get("eager_order", "index"))

    map_rows = []
    for allocator in ALLOCATORS:
        p = plan(allocator, "los", model)
        row = {**head, "allocator": allocator, "map_cost_s": p.map_cost,
               "distance_hops": p.distance, "distance_m": p.distance_m}
        if routes:
            row.update(contention([router.route(a, b) for a, b in p.allocations]))
        map_rows.append(row)
    # A mapper set straddling a ring's wrap (sat M -> 1 or plane N -> 1) sends the
    # reference's unwrapped center far from every mapper; flagged for reading.
    sat_span = max(s for s, _ in mappers) - min(s for s, _ in mappers)
    orb_span = max(o for _, o in mappers) - min(o for _, o in mappers)
    straddles = sat_span > c.sats_per_plane / 2 or orb_span > c.planes / 2
    reduce_rows = []
    visits = {}
    # Every satellite as the reducer (a bound: what no placement can beat).
    sats = c.satellites()
    to_all_m = router.length_matrix(mappers, sats)
    all_to_los_m = router.length_matrix(sats, [los])[:, 0]
    for f_r in jobs["reduce_factors"]:
        m_model = replace(model, reduce_reduction_factor=float(f_r))
        best_s = float(m_model.reduce_costs(to_all_m, all_to_los_m).min())
        for reducetype in REDUCERS:
            p = plan("bipartite", reducetype, m_model)
            row = {**head, "reduce_factor": f_r, "reducetype": reducetype,
                   "reducer": f"{p.reducer[0]},{p.reducer[1]}", "center": center,
                   "los": f"{los[0]},{los[1]}", "los_from": los_from,
                   "mappers_straddle_wrap": straddles,
                   "reduce_cost_s": p.reduce_cost, "best_reduce_cost_s": best_s,
                   "map_cost_s": p.map_cost,
                   "cost_s": p.cost, "reduce_distance_hops": p.reduce_distance,
                   "reduce_distance_m": p.reduce_distance_m}
            if routes:
                if reducetype not in visits:  # the reduce paths do not depend on F_R
                    paths = [router.route(mp, p.reducer) for mp in p.mappers]
                    if p.reducer != los:
                        paths.append(router.route(p.reducer, los))
                    visits[reducetype] = contention(paths)
                row.update(visits[reducetype])
            reduce_rows.append(row)
    return {"map": map_rows, "reduce": reduce_rows, "skipped": []}


# --- aggregation -------------------------------------------------------------------------------
def saving_pct(ours: float, baseline: float) -> float:
    """How much cheaper ``ours`` is than ``baseline``, percent (negative: dearer)."""
    return 100.0 * (1.0 - ours / baseline) if baseline else float("nan")


def _mean(rows, key):
    values = [r[key] for r in rows if r[key] == r[key]]  # NaN != NaN: skip failed runs
    return float(np.mean(values)) if values else float("nan")


def summarise_routing(rows: list[dict]) -> list[dict]:
    """Per (size, outages): mean hops and length of each rule and the distance saving
    of distance-aware over plane-first (ratio of the means over runs)."""
    out = []
    for size, outages in sorted({(r["size"], r["outages"]) for r in rows}):
        point = [r for r in rows if r["size"] == size and r["outages"] == outages]
        by = {rule: [r for r in point if r["rule"] == rule] for rule in ROUTING_RULES}
        aware, base = by["distance_aware"], by["plane_first"]
        out.append({
            "size": size, "satellites": size * size, "outages": outages, "runs": len(aware),
            "hops_distance_aware": _mean(aware, "hops_mean"),
            "hops_plane_first": _mean(base, "hops_mean"),
            "length_km_distance_aware": _mean(aware, "length_mean_m") / 1e3,
            "length_km_plane_first": _mean(base, "length_mean_m") / 1e3,
            "distance_saving_pct": saving_pct(_mean(aware, "length_mean_m"),
                                              _mean(base, "length_mean_m")),
            "relay_visits_max_distance_aware": _mean(aware, "relay_visits_max"),
            "relay_visits_max_plane_first": _mean(base, "relay_visits_max"),
            "relay_visits_mean_distance_aware": _mean(aware, "relay_visits_mean"),
            "relay_visits_mean_plane_first": _mean(base, "relay_visits_mean"),
            "pairs_more_hops": sum(r["pairs_more_hops"] for r in aware),
            "pairs_longer": sum(r["pairs_longer"] for r in aware),
            "routes": sum(r["routes"] for r in aware),
        })
    return out


def summarise_map(rows: list[dict]) -> list[dict]:
    """Per plane count: mean map cost of each allocator and bipartite's saving."""
    out = []
    for planes in sorted({r["planes"] for r in rows}):
        point = [r for r in rows if r["planes"] == planes]
        cost = {a: _mean([r for r in point if r["allocator"] == a], "map_cost_s")
                for a in ALLOCATORS}
        out.append({
            "planes": planes, "satellites": planes * planes,
            "runs": sum(r["allocator"] == "bipartite" for r in point),
            "collectors_mean": _mean([r for r in point if r["allocator"] == "bipartite"],
                                     "collectors"),
            **{f"map_cost_s_{a}": cost[a] for a in ALLOCATORS},
            "bipartite_vs_random_pct": saving_pct(cost["bipartite"], cost["random"]),
            "bipartite_vs_eager_pct": saving_pct(cost["bipartite"], cost["eager"]),
        })
    return out


def summarise_reduce(rows: list[dict]) -> list[dict]:
    """Per (plane count, F_R): mean reduce and total cost of LOS and center placement
    (bipartite allocation) and center's saving on each."""
    out = []
    for planes, f_r in sorted({(r["planes"], r["reduce_factor"]) for r in rows}):
        point = [r for r in rows if r["planes"] == planes and r["reduce_factor"] == f_r]
        by = {t: sorted((r for r in point if r["reducetype"] == t), key=lambda r: r["run"])
              for t in REDUCERS}
        reduce = {t: _mean(by[t], "reduce_cost_s") for t in REDUCERS}
        total = {t: _mean(by[t], "cost_s") for t in REDUCERS}
        out.append({
            "planes": planes, "reduce_factor": f_r, "runs": len(by["los"]),
            "reduce_cost_s_los": reduce["los"], "reduce_cost_s_center": reduce["center"],
            "cost_s_los": total["los"], "cost_s_center": total["center"],
            "center_vs_los_pct": saving_pct(reduce["center"], reduce["los"]),
            "best_vs_los_pct": saving_pct(_mean(by["los"], "best_reduce_cost_s"), reduce["los"]),
            "center_vs_los_total_pct": saving_pct(total["center"], total["los"]),
            "center_cheaper_runs": sum(c["reduce_cost_s"] < l["reduce_cost_s"]
                                       for c, l in zip(by["center"], by["los"])),
            "straddling_runs": sum(r["mappers_straddle_wrap"] for r in by["center"]),
        })
    return out
