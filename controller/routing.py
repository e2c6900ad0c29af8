"""Manhattan routing on the ISL torus: the one routing rule of the project.

The controller installs it, the planner costs with it and the simulator sweeps
with it.  :class:`Router` gives the next hop from any satellite toward any target
and whole routes with their physical length.

Without outages it is the reference implementation's rule: per axis the shorter way
round the ring (ties toward increasing index); plane changes are deferred to where
cross-plane links are short.  With a set of links down it routes on breadth-first
hop distances over the links still up: minimal wherever a minimal path survives,
loop-free because every hop gets strictly closer, and otherwise the fewest extra
hops; among equally short next hops it keeps the reference rule's choice.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from topo.constellation import Constellation, Sat

EAST, WEST, SOUTH, NORTH, ZERO = (1, 0), (-1, 0), (0, 1), (0, -1), (0, 0)
DIRECTION_NAMES = {EAST: "EAST", WEST: "WEST", SOUTH: "SOUTH", NORTH: "NORTH", ZERO: "ZERO"}
ALL_PAIRS_MAX_NODES = 4096
"""Up to this many satellites :meth:`Router.distances_from` searches from every node at
once (an N x N matrix: 64 MB at 4096); beyond, one search per source, cached."""


class NoRoute(Exception):
    """The target cannot be reached over the links that are up."""


@dataclass(frozen=True)
class Route:
    """A route: ``path`` from source to target inclusive, and its length in metres."""

    path: tuple[Sat, ...]
    length_m: float

    @property
    def hops(self) -> int:
        return len(self.path) - 1


def ring_step(cur: int, target: int, n: int) -> int:
    """+1, -1 or 0: the shorter way from ``cur`` to ``target`` on a ring of ``n``.

    A tie goes toward the increasing index (+1), as in the reference."""
    forward = (target - cur) % n
    backward = (cur - target) % n
    if forward == 0:
        return 0
    return -1 if backward < forward else 1


def prefers_in_plane(dn_west: float, dn_here: float, dn_east: float, step: int) -> bool:
    """The reference rule's deferral test, given a needed in-plane ``step`` (+1 EAST, -1 WEST).

    Move in-plane when here is a local minimum of the cross-plane length, or when
    the in-plane step leads to a shorter cross-plane link."""
    if dn_west > dn_here and dn_east > dn_here:
        return True
    return dn_here > (dn_west if step < 0 else dn_east)


def _ring_steps(cur: int, targets: np.ndarray, n: int) -> np.ndarray:
    """:func:`ring_step` from ``cur`` toward every entry of ``targets``."""
    forward = (targets - cur) % n
    backward = (cur - targets) % n
    return np.where(forward == 0, 0, np.where(backward < forward, -1, 1))


class Router:
    """Next hops and routes on ``constellation`` at time ``t_s``.

    down: ISLs that are down, each ``frozenset({a, b})``; empty means the
        reference Manhattan rule applies unchanged.
    """

    def __init__(self, constellation: Constellation, t_s: float = 0.0, down=frozenset()):
        self.constellation = constellation
        self.t_s = t_s
        self.down = frozenset(down)
        # Rounded to the millimetre: mathematically equal lengths (symmetric about the
        # cross-over) must compare equal despite floating-point noise.
        self.cross_plane_m = [round(d, 3) for d in constellation.cross_plane_lengths_m(t_s)]
        self.in_plane_m = constellation.in_plane_length_m
        self._distance_to = lru_cache(maxsize=None)(self._bfs_distances)

    # --- the reference rule -------------------------------------------------------------
    def cross_plane_at(self, sat: int) -> float:
        """Dn (metres, rounded to the mm) of the cross-plane links at in-plane index ``sat``."""
        return self.cross_plane_m[(sat - 1) % self.constellation.sats_per_plane]

    def _vertical_step(self, orb: int, target_orb: int) -> int:
        c = self.constellation
        if c.seam:
            return ring_step(orb, target_orb, c.planes)
        return (target_orb > orb) - (target_orb < orb)

    def manhattan_direction(self, cur: Sat, target: Sat) -> tuple[int, int]:
        """The reference rule's direction (EAST/WEST/SOUTH/NORTH/ZERO) from ``cur``."""
        s, o = cur
        h = ring_step(s, target[0], self.constellation.sats_per_plane)
        v = self._vertical_step(o, target[1])
        if h and (v == 0 or prefers_in_plane(self.cross_plane_at(s - 1), self.cross_plane_at(s),
                                             self.cross_plane_at(s + 1), h)):
            return (h, 0)
        if v:
            return (0, v)
        return ZERO

    # --- outage-aware variant -------------------------------------------------------------
    def link_up(self, a: Sat, b: Sat) -> bool:
        return frozenset((a, b)) not in self.down

    def up_neighbours(self, sat: Sat) -> list[Sat]:
        return [n for n in self.constellation.neighbours(sat) if self.link_up(sat, n)]

    def _bfs_distances(self, target: Sat) -> dict[Sat, int]:
        """Hop distance to ``target`` over the links that are up (links are symmetric)."""
        dist = {target: 0}
        queue = deque([target])
        while queue:
            cur = queue.popleft()
            for n in self.up_neighbours(cur):
                if n not in dist:
                    dist[n] = dist[cur] + 1
                    queue.append(n)
        return dist

    def next_hop(self, cur: Sat, target: Sat) -> Sat | None:
        """The neighbour to forward to from ``cur`` toward ``target``; None when there.

        Raises NoRoute when the target is unreachable over the links that are up."""
        if cur == target:
            return None
        c = self.constellation
        step = self.manhattan_direction(cur, target)
        preferred = c.wrap(cur[0] + step[0], cur[1] + step[1])
        if not self.down:
            return preferred
        dist = self._distance_to(target)
        if cur not in dist:
            raise NoRoute(f"{cur} cannot reach {target}: links down")
        closer = [n for n in self.up_neighbours(cur) if dist.get(n, -1) == dist[cur] - 1]
        if preferred in closer:
            return preferred
        # Among equally short next hops, the shortest link, then the lowest node id.
        return min(closer, key=lambda n: (c.link_length_m(cur, n, self.t_s), c.node_id(n)))

    # --- vectorised next hops: one source toward every target ---------------------------------
    def direction_arrays(self, cur: Sat, ts: np.ndarray, to: np.ndarray):
        """:meth:`manhattan_direction` from ``cur`` toward every target ``(ts[i], to[i])``:
        the in-plane and cross-plane steps (-1, 0, +1) as two arrays."""
        c = self.constellation
        s, o = cur
        h = _ring_steps(s, ts, c.sats_per_plane)
        v = _ring_steps(o, to, c.planes) if c.seam else np.sign(to - o)
        west, here, east = (self.cross_plane_at(s - 1), self.cross_plane_at(s),
                            self.cross_plane_at(s + 1))
        in_plane = (h != 0) & ((v == 0) | np.where(h > 0, prefers_in_plane(west, here, east, 1),
                                                    prefers_in_plane(west, here, east, -1)))
        return np.where(in_plane, h, 0), np.where(in_plane, 0, v)

    def _neighbour_arrays(self):
        """``(nbr, up)``: ``nbr[k, i]`` the node index (node id - 1) of neighbour k
        (east, west, south, north) of node index i; ``up[k, i]`` that the link exists and is up."""
        if getattr(self, "_nbr", None) is None:
            c = self.constellation
            ids = np.arange(c.size)
            ts, to = ids % c.sats_per_plane + 1, ids // c.sats_per_plane + 1
            nbr = np.empty((4, c.size), dtype=np.int64)
            up = np.ones((4, c.size), dtype=bool)
            for k, (ds, do) in enumerate((EAST, WEST, SOUTH, NORTH)):
                ns = (ts - 1 + ds) % c.sats_per_plane + 1
                no = (to - 1 + do) % c.planes + 1
                nbr[k] = (no - 1) * c.sats_per_plane + ns - 1
                if do and not c.seam:
                    up[k] = (to + do >= 1) & (to + do <= c.planes)
            for link in self.down:
                a, b = tuple(link)
                ia, ib = c.node_id(a) - 1, c.node_id(b) - 1
                up[(nbr[:, ia] == ib), ia] = False
                up[(nbr[:, ib] == ia), ib] = False
            self._nbr, self._up = nbr, up
        return self._nbr, self._up

    def distances_from(self, sat: Sat) -> np.ndarray:
        """Hop distance from ``sat`` to every node (index node id - 1) over the links that
        are up; -1 where unreachable.  Links are symmetric, so this is also the distance
        from every node to ``sat``."""
        c = self.constellation
        if c.size <= ALL_PAIRS_MAX_NODES:
            return self._all_distances()[c.node_id(sat) - 1]
        cache = self.__dict__.setdefault("_dist_rows", {})
        if sat not in cache:
            nbr, up = self._neighbour_arrays()
            dist = np.full(self.constellation.size, -1, dtype=np.int64)
            frontier = np.array([self.constellation.node_id(sat) - 1])
            dist[frontier] = 0
            d = 0
            while frontier.size:
                d += 1
                cand = np.unique(nbr[:, frontier][up[:, frontier]])
                frontier = cand[dist[cand] < 0]
                dist[frontier] = d
            cache[sat] = dist
        return cache[sat]

    def _all_distances(self) -> np.ndarray:
        """Hop distances between every pair of nodes (``[i, j]``, node indices), -1 where
        unreachable: one breadth-first search from all sources at once (a row per target,
        a column per source), so a controller routing every switch after an outage pays
        one pass over the diameter instead of a search per switch."""
        if getattr(self, "_dist_all", None) is None:
            nbr, up = self._neighbour_arrays()
            n = self.constellation.size
            dist = np.full((n, n), -1, dtype=np.int32)
            np.fill_diagonal(dist, 0)
            seen = np.eye(n, dtype=bool)
            frontier = seen.copy()  # frontier[j, i]: node j reached from source i last round
            d = 0
            while frontier.any():
                d += 1
                reach = np.zeros_like(frontier)
                for k in range(4):  # j is reached when a neighbour over an up link was
                    reach[up[k]] |= frontier[nbr[k, up[k]]]
                frontier = reach & ~seen
                seen |= frontier
                dist[frontier] = d
            self._dist_all = dist  # symmetric: links are
        return self._dist_all

    def next_hops_from(self, cur: Sat) -> np.ndarray:
        """:meth:`next_hop` from ``cur`` toward every target at once, indexed by node id - 1:
        the next hop's node id, 0 at ``cur`` itself, -1 where the target is unreachable."""
        c = self.constellation
        m = c.sats_per_plane
        ids = np.arange(c.size)
        ts, to = ids % m + 1, ids // m + 1
        step_s, step_o = self.direction_arrays(cur, ts, to)
        s, o = cur
        preferred = ((o - 1 + step_o) % c.planes) * m + (s - 1 + step_s) % m + 1
        me = c.node_id(cur) - 1
        if not self.down:
            preferred[me] = 0
            return preferred
        nbr, up = self._neighbour_arrays()
        dcur = self.distances_from(cur)
        # The up neighbours in tie-break order: shortest link, then lowest node id.
        nbrs = sorted({int(nbr[k, me]) for k in range(4) if up[k, me]},
                      key=lambda i: (c.link_length_m(cur, c.sat_of(i + 1), self.t_s), i))
        out = np.full(c.size, -1, dtype=np.int64)
        chosen = np.zeros(c.size, dtype=bool)
        closer = {i: self.distances_from(c.sat_of(i + 1)) == dcur - 1 for i in nbrs}
        for i in nbrs:  # the rule's own choice wherever it is one of the closer neighbours
            hit = closer[i] & (preferred == i + 1)
            out[hit], chosen[hit] = i + 1, True
        for i in nbrs:
            hit = closer[i] & ~chosen
            out[hit], chosen[hit] = i + 1, True
        out[dcur < 0] = -1
        out[me] = 0
        return out

    def route(self, a: Sat, b: Sat) -> Route:
        """The hop-by-hop route from ``a`` to ``b`` and its physical length."""
        c = self.constellation
        if not (c.contains(a) and c.contains(b)):
            raise ValueError(f"route {a} -> {b}: outside the {c.planes}x{c.sats_per_plane} grid")
        path = [a]
        length = 0.0
        cur = a
        limit = c.size
        while cur != b:
            nxt = self.next_hop(cur, b)
            length += self.in_plane_m if nxt[1] == cur[1] else self.cross_plane_at(cur[0])
            path.append(nxt)
            cur = nxt
            if len(path) > limit:  # cannot happen with a correct rule; never loop forever
                raise RuntimeError(f"routing loop from {a} to {b}: {path[:8]}...")
        return Route(tuple(path), length)

    # --- vectorised costs for the planner and the simulator -------------------------------------
    def plane_change_table(self) -> np.ndarray:
        """``table[sa-1, st-1]``: the in-plane index where a route from sat ``sa`` to sat
        ``st`` changes planes under the reference rule (no outages).

        Plane changes all happen at one in-plane index: while an in-plane move is
        still needed the rule either moves in-plane or changes planes, and the test
        does not depend on the plane."""
        m = self.constellation.sats_per_plane
        # steps[h][s-1]: in-plane steps from s in direction h until the rule would change
        # planes (m when it never would); the direction toward a target never flips.
        steps = {}
        for h in (1, -1):
            stops = [not prefers_in_plane(self.cross_plane_at(s - 1), self.cross_plane_at(s),
                                          self.cross_plane_at(s + 1), h) for s in range(1, m + 1)]
            steps[h] = np.array([next((k for k in range(m) if stops[(s + h * k) % m]), m)
                                 for s in range(m)])
        sa = np.arange(1, m + 1)[:, None]
        st = np.arange(1, m + 1)[None, :]
        forward = (st - sa) % m
        backward = (sa - st) % m
        west = backward < forward
        to_go = np.where(west, backward, forward)
        moved = np.minimum(np.where(west, steps[-1][:, None], steps[1][:, None]), to_go)
        return (sa - 1 + np.where(west, -moved, moved)) % m + 1

    def hop_matrix(self, sources: list[Sat], targets: list[Sat]) -> np.ndarray:
        """Minimal hop counts, sources x targets (the Manhattan route's hop count)."""
        if self.down:
            return np.array([[len(self.route(a, b).path) - 1 for b in targets] for a in sources])
        c = self.constellation
        src = np.asarray(sources, dtype=np.int64).reshape(-1, 2)
        dst = np.asarray(targets, dtype=np.int64).reshape(-1, 2)
        ds = np.abs(src[:, None, 0] - dst[None, :, 0]) % c.sats_per_plane
        ds = np.minimum(ds, c.sats_per_plane - ds)
        do = np.abs(src[:, None, 1] - dst[None, :, 1])
        if c.seam:
            do = np.minimum(do % c.planes, c.planes - do % c.planes)
        return ds + do

    def length_matrix(self, sources: list[Sat], targets: list[Sat]) -> np.ndarray:
        """Routed path lengths in metres, sources x targets."""
        if self.down:
            return np.array([[self.route(a, b).length_m for b in targets] for a in sources])
        c = self.constellation
        src = np.asarray(sources, dtype=np.int64).reshape(-1, 2)
        dst = np.asarray(targets, dtype=np.int64).reshape(-1, 2)
        ds = np.abs(src[:, None, 0] - dst[None, :, 0]) % c.sats_per_plane
        ds = np.minimum(ds, c.sats_per_plane - ds)
        do = self.hop_matrix(sources, targets) - ds
        change_at = self.plane_change_table()[src[:, None, 0] - 1, dst[None, :, 0] - 1]
        dn = np.asarray(self.cross_plane_m)[change_at - 1]
        return ds * self.in_plane_m + do * dn


class PlaneFirstRouter(Router):
    """The plane-first baseline: change planes at the source, then move in-plane.

    The distance-unaware Manhattan rule the paper compares against: every route is
    still minimal on the torus (same axis choices and ties as :func:`ring_step`), but
    all plane changes happen at the source's in-plane index, whatever the
    cross-plane link length there.  With outages it keeps the outage-aware
    behaviour of :class:`Router` (BFS-minimal, this rule's choice among equals).
    """

    def manhattan_direction(self, cur: Sat, target: Sat) -> tuple[int, int]:
        """NORTH/SOUTH while a plane change is needed, then EAST/WEST, else ZERO."""
        v = self._vertical_step(cur[1], target[1])
        if v:
            return (0, v)
        h = ring_step(cur[0], target[0], self.constellation.sats_per_plane)
        return (h, 0) if h else ZERO

    def direction_arrays(self, cur: Sat, ts: np.ndarray, to: np.ndarray):
        """Cross-plane step while a plane change is needed, else the in-plane step."""
        c = self.constellation
        h = _ring_steps(cur[0], ts, c.sats_per_plane)
        v = _ring_steps(cur[1], to, c.planes) if c.seam else np.sign(to - cur[1])
        return np.where(v != 0, 0, h), v

    def plane_change_table(self) -> np.ndarray:
        """``table[sa-1, st-1] = sa``: plane changes happen at the source's in-plane index."""
        m = self.constellation.sats_per_plane
        return np.repeat(np.arange(1, m + 1)[:, None], m, axis=1)


ROUTING_RULES = {"distance_aware": Router, "plane_first": PlaneFirstRouter}
