"""Job planning: area of interest, collector->mapper allocation (:mod:`node_app.allocation`),
reducer placement, and the plan's metrics.  Pure, no I/O.

The coordinator daemon, the ground CLI's ``--dry-run`` and the simulator all plan
with :func:`plan_job`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

from controller.routing import Router
from node_app.allocation import ALLOCATORS, EAGER_ORDERS, SOLVERS, allocate
from node_app.cost_model import CostModel
from topo.cli import UsageError
from topo.constellation import EARTH_RADIUS_M, Constellation, Sat

REDUCE_TYPES = ("los", "center")
COSTS = ("hops", "physical")
# Where the ``center`` reducer goes: the reference's truncating index mean (no wrap), a
# circular (wrap-aware) mean per axis, or the satellite minimising total hops to the mappers.
CENTER_PLACEMENTS = ("reference_mean", "wrap_mean", "box_mid", "medoid", "medoid_m")


class PlanError(UsageError):
    """A job that cannot be planned (bad AOI, too many collectors, unknown option)."""


# --- areas of interest -------------------------------------------------------------------
def grid_aoi(constellation: Constellation, minsat: int, maxsat: int,
             rng: random.Random) -> list[Sat]:
    """Cells ``(s, o)`` for s, o in minsat..maxsat (s the outer loop), shuffled exactly as
    the reference does (``random.seed(seed); random.shuffle(aoi)``) when
    ``rng = random.Random(seed)``."""
    if minsat > maxsat:
        raise PlanError(f"AOI {minsat}..{maxsat}: minsat must not exceed maxsat")
    if minsat < 1 or maxsat > min(constellation.sats_per_plane, constellation.planes):
        raise PlanError(f"AOI {minsat}..{maxsat} is outside the "
                        f"{constellation.planes}x{constellation.sats_per_plane} grid")
    aoi = [(s, o) for s in range(minsat, maxsat + 1) for o in range(minsat, maxsat + 1)]
    rng.shuffle(aoi)
    return aoi


@dataclass(frozen=True)
class GeoBox:
    """A latitude/longitude box: upper-left and lower-right corners, degrees.

    ``ul_lon > lr_lon`` means the box crosses the antimeridian."""

    ul_lat: float
    ul_lon: float
    lr_lat: float
    lr_lon: float

    def __post_init__(self):
        if not (-90 <= self.lr_lat <= self.ul_lat <= 90):
            raise PlanError(f"geographic AOI: need -90 <= lr_lat ({self.lr_lat}) <= "
                            f"ul_lat ({self.ul_lat}) <= 90")
        for lon in (self.ul_lon, self.lr_lon):
            if not -180 <= lon <= 180:
                raise PlanError(f"geographic AOI: longitude {lon} outside [-180, 180]")

    def contains(self, lat: float, lon: float) -> bool:
        if not self.lr_lat <= lat <= self.ul_lat:
            return False
        if self.ul_lon <= self.lr_lon:
            return self.ul_lon <= lon <= self.lr_lon
        return lon >= self.ul_lon or lon <= self.lr_lon

    def distance_m(self, lat: float, lon: float) -> float:
        """Great-circle distance (metres, on the sphere of radius ``EARTH_RADIUS_M``) from a
        point to the box: 0 inside; outside, to the box point with the latitude and the
        longitude clamped into the box's ranges (exact across a parallel edge, a close
        upper bound across a meridian edge at the small margins a footprint adds)."""
        if self.contains(lat, lon):
            return 0.0
        near_lat = min(max(lat, self.lr_lat), self.ul_lat)
        if self.ul_lon <= self.lr_lon and self.ul_lon <= lon <= self.lr_lon:
            near_lon = lon
        elif self.ul_lon > self.lr_lon and (lon >= self.ul_lon or lon <= self.lr_lon):
            near_lon = lon
        else:  # the nearer of the two meridian edges, going round either way
            gap = lambda edge: abs((lon - edge + 180.0) % 360.0 - 180.0)  # noqa: E731
            near_lon = min((self.ul_lon, self.lr_lon), key=gap)
        p1, p2 = math.radians(lat), math.radians(near_lat)
        dl = math.radians(lon - near_lon)
        h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def geo_collectors(constellation: Constellation, box: GeoBox, t_s: float = 0.0,
                   ascending_only: bool = False, footprint_radius_m: float = 0.0) -> list[Sat]:
    """Satellites over ``box`` at time t (node-id order): whose sub-satellite point lies
    in it, or with ``footprint_radius_m`` > 0 whose ground footprint (a circle of that
    radius round the sub-satellite point) intersects it (the paper's "satellites whose
    ground projections intersect the AOI", Sec. II-B)."""
    def over(sat) -> bool:
        lat, lon = constellation.latitude_deg(sat, t_s), constellation.longitude_deg(sat, t_s)
        if footprint_radius_m > 0:
            return box.distance_m(lat, lon) <= footprint_radius_m
        return box.contains(lat, lon)
    return [sat for sat in constellation.satellites()
            if over(sat) and (not ascending_only or constellation.ascending(sat, t_s))]


def nearest_mappers(constellation: Constellation, collectors: list[Sat], count: int) -> list[Sat]:
    """``count`` satellites outside ``collectors``, nearest to them in hops (ties by node id)."""
    taken = set(collectors)
    others = [s for s in constellation.satellites() if s not in taken]
    if len(others) < count:
        raise PlanError(f"{count} mappers wanted but only {len(others)} satellites are free")
    hops = Router(constellation).hop_matrix(others, collectors).min(axis=1)
    order = sorted(range(len(others)), key=lambda k: (hops[k], constellation.node_id(others[k])))
    return [others[k] for k in order[:count]]


def spare_satellites(constellation: Constellation, anchors: list[Sat], exclude, *,
                     cost_kind: str = "hops", cost_model: CostModel | None = None,
                     router: Router | None = None) -> list[Sat]:
    """Satellites outside ``exclude``, cheapest first, to take over a role whose data comes
    from and goes to ``anchors`` (its upstream and downstream peers): by total hops, or
    with ``cost_kind`` "physical" by the cost model's transfer cost over the routed
    lengths (ties by node id)."""
    taken = set(map(tuple, exclude))
    others = [s for s in constellation.satellites() if s not in taken]
    if not others:
        return []
    router = router or Router(constellation)
    anchors = [tuple(a) for a in anchors] or [others[0]]
    hops = router.hop_matrix(others, anchors)
    if cost_kind == "physical":
        cost = (cost_model or CostModel()).map_pair_cost(hops, router.length_matrix(others, anchors))
    else:
        cost = hops.astype(float)
    total = cost.sum(axis=1)
    order = sorted(range(len(others)), key=lambda k: (total[k], constellation.node_id(others[k])))
    return [others[k] for k in order]


def nearest_satellite(constellation: Constellation, lat_deg: float, lon_deg: float,
                      t_s: float = 0.0, ascending_only: bool = False) -> Sat:
    """The satellite highest in the sky (so nearest) of a ground point at time t: the
    line-of-sight gateway of a ground station there.  With ``ascending_only`` only
    ascending satellites qualify.  Ties: lowest node id."""
    from topo.ground_stations import GroundStation, elevations_deg
    sats = constellation.satellites()
    elevation = elevations_deg(constellation, GroundStation("los", lat_deg, lon_deg), t_s)
    for k in np.argsort(-elevation, kind="stable"):
        if not ascending_only or constellation.ascending(sats[k], t_s):
            return sats[int(k)]
    raise PlanError("no satellite qualifies as line of sight (none ascending)")


# --- the plan ------------------------------------------------------------------------------
@dataclass
class Plan:
    """A planned job: who collects, who maps for whom, who reduces, and what it costs.

    allocations: ``[collector, mapper]`` pairs in collector order; pair_hops their hop counts.
    distance: sum of hops collector->mapper; reduce_distance: sum of hops mapper->reducer.
    cost: the model cost C = C_m + C_r in seconds (the paper's Eq. 5-7), split as map_cost/reduce_cost.
    """

    grid: tuple[int, int]
    allocator: str
    reducetype: str
    seed: int
    los: Sat
    reducer: Sat
    allocations: list[tuple[Sat, Sat]]
    pair_hops: list[int]
    distance: int
    reduce_distance: int
    distance_m: float
    reduce_distance_m: float
    map_cost: float
    reduce_cost: float
    cost_kind: str = "hops"
    extra: dict = field(default_factory=dict)

    @property
    def cost(self) -> float:
        return self.map_cost + self.reduce_cost

    @property
    def collectors(self) -> list[Sat]:
        return [c for c, _ in self.allocations]

    @property
    def mappers(self) -> list[Sat]:
        return [m for _, m in self.allocations]

    def to_json(self) -> dict:
        return {
            "grid": f"{self.grid[0]}x{self.grid[1]}",
            "allocator": self.allocator,
            "reducetype": self.reducetype,
            "seed": self.seed,
            "cost_kind": self.cost_kind,
            "los": list(self.los),
            "reducer": list(self.reducer),
            "allocations": [[list(c), list(m)] for c, m in self.allocations],
            "pair_hops": list(self.pair_hops),
            "distance": self.distance,
            "reduce_distance": self.reduce_distance,
            "distance_m": round(self.distance_m, 3),
            "reduce_distance_m": round(self.reduce_distance_m, 3),
            "map_cost": self.map_cost,
            "reduce_cost": self.reduce_cost,
            "cost": self.cost,
            **self.extra,
        }


def center_of(mappers: list[Sat]) -> Sat:
    """The reference's center reducer: (int(mean sat), int(mean orb)), truncating, no wrap."""
    return (int(sum(s for s, _ in mappers) / len(mappers)),
            int(sum(o for _, o in mappers) / len(mappers)))


def check_options(allocator: str, reducetype: str, cost_kind: str, solver: str) -> None:
    """PlanError naming the first option that is not one of the planner's."""
    for what, value, known in (("allocator", allocator, ALLOCATORS),
                               ("reducer type", reducetype, REDUCE_TYPES),
                               ("cost", cost_kind, COSTS), ("solver", solver, SOLVERS)):
        if value not in known:
            raise PlanError(f"unknown {what} {value!r} (choose from {', '.join(known)})")


def check_grid_job(constellation: Constellation, *, minsat: int, maxsat: int,
                   collectors: int, los: Sat, allocator: str = "bipartite",
                   reducetype: str = "center", cost_kind: str = "hops",
                   solver: str = "lapjv") -> None:
    """Everything :func:`plan_grid_job` would reject, checked without planning (the
    ground checks a job this way; the coordinator plans it)."""
    check_options(allocator, reducetype, cost_kind, solver)
    cells = len(grid_aoi(constellation, minsat, maxsat, random.Random(0)))
    _check_collectors(collectors, cells)
    if not constellation.contains(tuple(los)):
        raise PlanError(f"satellite {list(los)} is outside the "
                        f"{constellation.planes}x{constellation.sats_per_plane} grid")


def _check_collectors(collectors: int, cells: int) -> None:
    if collectors < 1 or 2 * collectors > cells:
        raise PlanError(f"{collectors} collectors: need between 1 and {cells // 2} "
                        f"(half the {cells} AOI cells; each collector needs its own mapper)")


def _circular_mean_index(values: list[int], n: int) -> int:
    """The 1-based ring index nearest the circular mean of ``values`` on a ring of n."""
    angles = 2 * np.pi * (np.asarray(values) - 1) / n
    mean = math.atan2(float(np.sin(angles).mean()), float(np.cos(angles).mean()))
    return int(round(mean / (2 * np.pi) * n)) % n + 1


def _covering_arc_mid(values: list[int], n: int) -> int:
    """The 1-based middle of the shortest arc of a ring of n covering ``values`` (the
    arc leaves out the largest gap between neighbouring occupied indices)."""
    idx = sorted({(v - 1) % n for v in values})
    gaps = [((idx[(k + 1) % len(idx)] - idx[k]) % n or n, k) for k in range(len(idx))]
    _, k = max(gaps)  # the arc runs from the index after the largest gap to the one before it
    start, end = idx[(k + 1) % len(idx)], idx[k]
    return (start + ((end - start) % n) // 2) % n + 1


def place_center(constellation: Constellation, mappers: list[Sat], placement: str,
                 router: Router | None = None) -> Sat:
    """The ``center`` reducer for ``placement`` (:data:`CENTER_PLACEMENTS`).

    ``reference_mean``: :func:`center_of` (can land on the far side of the torus when
    the mappers straddle a ring's wrap); ``wrap_mean``: circular mean per axis, so a
    set straddling sat M -> 1 or plane N -> 1 centres between them; ``box_mid``: the
    middle of the mappers' grid bounding box, wrap-aware (the shortest covering arc of
    each ring; LeoDOS places its reducer at the middle of the AOI's grid box); ``medoid``: the
    satellite with the fewest total hops to the mappers; ``medoid_m``: the one with the
    least total routed distance (metres) from the mappers, the paper's words for its
    reducer ("minimizing total transfer distance from mappers", d the routed length)
    (ties: lowest node id)."""
    if placement == "reference_mean":
        return center_of(mappers)
    if placement == "box_mid":
        return (_covering_arc_mid([s for s, _ in mappers], constellation.sats_per_plane),
                _covering_arc_mid([o for _, o in mappers], constellation.planes))
    if placement == "wrap_mean":
        return (_circular_mean_index([s for s, _ in mappers], constellation.sats_per_plane),
                _circular_mean_index([o for _, o in mappers], constellation.planes))
    if placement in ("medoid", "medoid_m"):
        sats = constellation.satellites()
        router = router or Router(constellation)
        matrix = router.hop_matrix if placement == "medoid" else router.length_matrix
        return sats[int(np.argmin(matrix(mappers, sats).sum(axis=0)))]
    raise PlanError(f"unknown center placement {placement!r} "
                    f"(choose from {', '.join(CENTER_PLACEMENTS)})")


def plan_job(constellation: Constellation, collectors: list[Sat], mappers: list[Sat], *,
             allocator: str = "bipartite", reducetype: str = "center", los: Sat = (1, 1),
             cost_kind: str = "hops", cost_model: CostModel | None = None, seed: int = 0,
             solver: str = "lapjv", router: Router | None = None,
             rng: random.Random | None = None, center: str = "reference_mean",
             eager_order: str = "index") -> Plan:
    """Allocate ``collectors`` to ``mappers``, place the reducer and cost the job.

    cost_kind: ``hops`` (Manhattan model: hop count) or ``physical`` (Eq. 5 with the
        routed path length) as the allocation cost.
    router: routes at the planning time (default: time 0, no outages).
    rng: the random stream for the ``random`` allocator (default: seeded by ``seed``).
    center: where the ``center`` reducer goes (:data:`CENTER_PLACEMENTS`; default the
        reference's truncating mean).
    eager_order: the order ``eager`` serves collectors in (:data:`EAGER_ORDERS`;
        ``latitude`` is north to south at the router's time).
    """
    check_options(allocator, reducetype, cost_kind, solver)
    if center not in CENTER_PLACEMENTS:
        raise PlanError(f"unknown center placement {center!r} "
                        f"(choose from {', '.join(CENTER_PLACEMENTS)})")
    if eager_order not in EAGER_ORDERS:
        raise PlanError(f"unknown eager order {eager_order!r} "
                        f"(choose from {', '.join(EAGER_ORDERS)})")
    if not collectors or len(collectors) != len(mappers):
        raise PlanError(f"need as many mappers as collectors, at least one "
                        f"({len(collectors)} collectors, {len(mappers)} mappers)")
    for sat in [*collectors, *mappers, los]:
        if not constellation.contains(sat):
            raise PlanError(f"satellite {list(sat)} is outside the "
                            f"{constellation.planes}x{constellation.sats_per_plane} grid")
    router = router or Router(constellation)
    model = cost_model or CostModel()
    hops = router.hop_matrix(collectors, mappers)
    lengths = router.length_matrix(collectors, mappers)
    cost = hops.astype(float) if cost_kind == "hops" else model.map_pair_cost(hops, lengths)
    order = None
    if allocator == "eager" and eager_order == "latitude":
        lat = [constellation.latitude_deg(sat, router.t_s) for sat in collectors]
        order = sorted(range(len(collectors)), key=lambda k: -lat[k])
    picks = allocate(cost, allocator, rng or random.Random(seed), solver, eager_order, order)
    rows = np.arange(len(collectors))

    reducer = (tuple(los) if reducetype == "los"
               else place_center(constellation, mappers, center, router))
    to_reducer_h = router.hop_matrix(mappers, [reducer])[:, 0]
    to_reducer_m = router.length_matrix(mappers, [reducer])[:, 0]
    reducer_to_los_m = float(router.length_matrix([reducer], [tuple(los)])[0, 0])
    return Plan(
        grid=(constellation.planes, constellation.sats_per_plane),
        allocator=allocator, reducetype=reducetype, seed=seed, los=tuple(los), reducer=reducer,
        allocations=[(collectors[i], mappers[picks[i]]) for i in rows],
        pair_hops=[int(h) for h in hops[rows, picks]],
        distance=int(hops[rows, picks].sum()),
        reduce_distance=int(to_reducer_h.sum()),
        distance_m=float(lengths[rows, picks].sum()),
        reduce_distance_m=float(to_reducer_m.sum()),
        map_cost=model.map_cost(hops[rows, picks], lengths[rows, picks]),
        reduce_cost=model.reduce_cost(to_reducer_m, reducer_to_los_m),
        cost_kind=cost_kind,
    )


def plan_geo_job(constellation: Constellation, box: GeoBox, *, t_s: float,
                 ascending_only: bool = False, count: int | None = None, **options) -> Plan:
    """A geographic AOI's job: the satellites over ``box`` at ``t_s`` collect (node-id
    order, the first ``count``), as many satellites nearest them in hops map."""
    if count is not None and count < 1:
        raise PlanError(f"geographic AOI: count {count} must be at least 1")
    collectors = geo_collectors(constellation, box, t_s, ascending_only)
    if not collectors:
        raise PlanError("geographic AOI: no satellite over the box at that time")
    collectors = collectors[:count] if count is not None else collectors
    mappers = nearest_mappers(constellation, collectors, len(collectors))
    return plan_job(constellation, collectors, mappers, **options)


def plan_grid_job(constellation: Constellation, *, minsat: int, maxsat: int, collectors: int,
                  seed: int, **options) -> Plan:
    """The reference CLI's job: a shuffled grid AOI, the first ``collectors`` cells
    collect, the next ``collectors`` map."""
    rng = random.Random(seed)  # one stream: the AOI shuffle, then the random allocator
    aoi = grid_aoi(constellation, minsat, maxsat, rng)
    _check_collectors(collectors, len(aoi))
    return plan_job(constellation, aoi[:collectors], aoi[collectors:2 * collectors],
                    seed=seed, rng=rng, **options)
