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

    def plane_change_table(self) -> np.ndarray:
        """``table[sa-1, st-1] = sa``: plane changes happen at the source's in-plane index."""
        m = self.constellation.sats_per_plane
        return np.repeat(np.arange(1, m + 1)[:, None], m, axis=1)


ROUTING_RULES = {"distance_aware": Router, "plane_first": PlaneFirstRouter}
