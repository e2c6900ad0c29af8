"""Benchmark: plan a SpaceCoMP job on 11x11 and on 100x100 (printed figures, not a test).

    python3 -m experiments.bench_planner

The 100x100 case is the issue's goal: 10,000 satellites, a 40x40 AOI, 320 collectors
and 320 mappers, physical cost (cost matrix included) in under 1 s on 2 cores.
Anchors measured in the same run: the reference-style per-pair hop-by-hop route walk for
the same cost matrix (what the reference implementation does), and scipy's solver alone.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from controller.routing import Router
from node_app.planner import grid_aoi, plan_job
from topo import cli
from topo.constellation import Constellation


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def plan_case(grid, minsat, maxsat, collectors, cost_kind, solver="lapjv"):
    c = Constellation(*grid)
    aoi = grid_aoi(c, minsat, maxsat, random.Random(1))

    def run():
        return plan_job(c, aoi[:collectors], aoi[collectors:2 * collectors], allocator="bipartite",
                        reducetype="center", cost_kind=cost_kind, seed=1, solver=solver)
    return c, aoi, run


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m experiments.bench_planner", description=__doc__)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)

    print(f"{'case':<44} {'median s':>9}  notes")
    _, _, small = plan_case((11, 11), 3, 8, 15, "hops")
    t, plan = timed(small, args.repeat)
    print(f"{'11x11, AOI 3..8, 15 collectors, hops':<44} {t:9.4f}  distance={plan.distance}")
    _, _, small_phys = plan_case((11, 11), 3, 8, 15, "physical")
    t, _ = timed(small_phys, args.repeat)
    print(f"{'11x11, AOI 3..8, 15 collectors, physical':<44} {t:9.4f}")

    c, aoi, big = plan_case((100, 100), 31, 70, 320, "physical")
    t_big, plan = timed(big, args.repeat)
    print(f"{'100x100, AOI 40x40, 320+320, physical':<44} {t_big:9.4f}  goal < 1 s: "
          f"{'met' if t_big < 1 else 'NOT met'}; cost={plan.cost:.4g} s")
    _, _, big_h = plan_case((100, 100), 31, 70, 320, "physical", solver="hungarian")
    t_h, _ = timed(big_h, 1)
    print(f"{'  same, own Hungarian solver':<44} {t_h:9.4f}")

    # Anchor: the same cost matrix by walking every route hop by hop (the reference's
    # way), on a sample of rows, scaled to the full 320x320 matrix.
    router = Router(c)
    collectors, mappers = aoi[:320], aoi[320:640]
    rows = 8
    t0 = time.perf_counter()
    for a in collectors[:rows]:
        for b in mappers:
            router.route(a, b)
    walk = (time.perf_counter() - t0) * 320 / rows
    t0 = time.perf_counter()
    router.length_matrix(collectors, mappers)
    vec = time.perf_counter() - t0
    print(f"{'anchor: 320x320 routes walked hop by hop':<44} {walk:9.4f}  (estimated from {rows} rows)")
    print(f"{'ours: 320x320 vectorised length matrix':<44} {vec:9.4f}  speed-up x{walk / vec:.0f}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
