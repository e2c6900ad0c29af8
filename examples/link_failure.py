"""A link-failure study on the model: how much longer do a job's routes get as cross-plane
ISLs fail?

    python3 examples/link_failure.py [--grid 11x11] [--trials 20] [--out failures.csv]

For each number of failed cross-plane links (random, seeded), the job is planned on the
routes that survive (the outage-aware routing rule the controller installs) and its
``distance`` and ``reduce_distance`` compared with the intact network.  No root, no
network: the same planner and router the coordinator and the controller use.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from controller.routing import NoRoute  # noqa: E402
from node_app.cost_model import CostModel  # noqa: E402
from node_app.planner import plan_grid_job  # noqa: E402
from topo.spec import ConstellationSpec, LinkState, parse_grid  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="job hops as cross-plane ISLs fail")
    p.add_argument("--grid", default="11x11")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--failures", default="0,5,10,20,40")
    p.add_argument("--out", default="failures.csv")
    a = p.parse_args(argv)
    spec = ConstellationSpec.for_grid(*parse_grid(a.grid))
    c = spec.constellation
    cross = [frozenset((x, y)) for x, y, kind in c.isls() if kind == "cross"]
    job = dict(minsat=3, maxsat=min(8, c.planes, c.sats_per_plane), collectors=8,
               allocator="bipartite", reducetype="center", seed=7)
    rows = []
    for k in (int(v) for v in a.failures.split(",")):
        for trial in range(a.trials if k else 1):
            down = frozenset(random.Random(1000 * k + trial).sample(cross, k))
            router = spec.router(LinkState(0.0, down))
            try:
                plan = plan_grid_job(c, router=router, cost_model=CostModel(link=spec.link), **job)
            except (NoRoute, ValueError):
                rows.append({"failed_links": k, "trial": trial, "distance": None,
                             "reduce_distance": None, "partitioned": True})
                continue
            rows.append({"failed_links": k, "trial": trial, "distance": plan.distance,
                         "reduce_distance": plan.reduce_distance, "partitioned": False})
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    base = next(r for r in rows if r["failed_links"] == 0)
    for k in sorted({r["failed_links"] for r in rows}):
        ok = [r for r in rows if r["failed_links"] == k and not r["partitioned"]]
        if ok:
            d = sum(r["distance"] + r["reduce_distance"] for r in ok) / len(ok)
            print(f"{k:3d} cross-plane ISLs down: {d:.1f} hops "
                  f"(intact {base['distance'] + base['reduce_distance']}), "
                  f"{len(ok)} of {sum(r['failed_links'] == k for r in rows)} plannable")
    print(f"wrote {len(rows)} rows to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
