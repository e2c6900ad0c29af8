"""Collector->mapper allocation: the Hungarian method, and the three allocators the
paper compares (``bipartite``: optimal assignment; ``eager``: each collector in turn
takes its cheapest free mapper; ``random``: seeded).  Pure, no I/O; used by
:mod:`node_app.planner`."""

from __future__ import annotations

import random

import numpy as np
from scipy.optimize import linear_sum_assignment

ALLOCATORS = ("bipartite", "eager", "random")
SOLVERS = ("hungarian", "lapjv")
# The order in which ``eager`` serves collectors: as listed, north to south at the
# planning time, or globally cheapest remaining pair first.
EAGER_ORDERS = ("index", "latitude", "global")


def hungarian(cost: np.ndarray) -> np.ndarray:
    """Optimal assignment of rows to columns of a square cost matrix (Hungarian method,
    shortest augmenting paths with potentials, O(n^3)); ``result[row] = column``."""
    n = cost.shape[0]
    u = np.zeros(n + 1)
    v = np.zeros(n + 1)
    match = np.zeros(n + 1, dtype=np.int64)  # match[col] = row, 1-based; 0 = free
    for row in range(1, n + 1):
        match[0] = row
        col0 = 0
        minv = np.full(n + 1, np.inf)
        way = np.zeros(n + 1, dtype=np.int64)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[col0] = True
            r = match[col0]
            free = ~used[1:]
            reduced = cost[r - 1] - u[r] - v[1:]
            better = free & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = col0
            cand = np.where(free, minv[1:], np.inf)
            col1 = int(np.argmin(cand)) + 1
            delta = cand[col1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            col0 = col1
            if match[col0] == 0:
                break
        while col0:
            col1 = way[col0]
            match[col0] = match[col1]
            col0 = col1
    result = np.zeros(n, dtype=np.int64)
    for col in range(1, n + 1):
        result[match[col] - 1] = col - 1
    return result


def allocate(cost: np.ndarray, allocator: str, rng: random.Random,
             solver: str = "lapjv", eager_order: str = "index",
             order: list[int] | None = None) -> list[int]:
    """Mapper index for each collector (row) of ``cost`` (collectors x mappers).

    eager_order: how ``eager`` serves collectors: ``index`` in row order (or in
        ``order``, a permutation of the rows, when given), ``global`` cheapest
        remaining (collector, mapper) pair first."""
    n = cost.shape[0]
    if allocator == "bipartite":
        if solver == "hungarian":
            return [int(c) for c in hungarian(cost)]
        rows, cols = linear_sum_assignment(cost)
        return [int(c) for c in cols[np.argsort(rows)]]
    if allocator == "eager":
        if eager_order == "global":
            return _global_greedy(cost)
        free = np.ones(n, dtype=bool)
        picks = [0] * n
        for row in (range(n) if order is None else order):
            col = int(np.argmin(np.where(free, cost[row], np.inf)))
            free[col] = False
            picks[row] = col
        return picks
    if allocator == "random":
        picks = list(range(n))
        rng.shuffle(picks)
        return picks
    from node_app.planner import PlanError  # the planner's error (it imports this module)
    raise PlanError(f"unknown allocator {allocator!r} (choose from {', '.join(ALLOCATORS)})")


def _global_greedy(cost: np.ndarray) -> list[int]:
    """Repeatedly take the cheapest pair among free collectors and free mappers."""
    n = cost.shape[0]
    order = np.argsort(cost, axis=None, kind="stable")
    row_free = np.ones(n, dtype=bool)
    col_free = np.ones(n, dtype=bool)
    picks = [0] * n
    for flat in order:
        r, c = divmod(int(flat), n)
        if row_free[r] and col_free[c]:
            picks[r] = c
            row_free[r] = col_free[c] = False
    return picks
