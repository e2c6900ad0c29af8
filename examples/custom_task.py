"""A user's own collect/map/reduce tasks, loaded by every node with ``--tasks-module``.

    python3 examples/custom_task.py [--grid 4x4] [--n 20000]

Counts the primes below ``n`` on a loopback constellation: each collector yields its
share of the integers, mappers keep the primes, the reducer counts and sums them.  The
same module works on the emulator (``EmulatedNodes(..., tasks_modules=[this file])``) and
from the shell (``python3 -m node_app.job --loopback --tasks-module examples/custom_task.py
-ct rangecollector -mt primemapper -rt primereducer --job-data '{"n": 1000}' ...``).
Exit 0 when the distributed count equals a local count.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from node_app import tasks  # noqa: E402


class RangeCollector:
    """Integers ``data_id-1, data_id-1+data_size, ...`` below ``job_data["n"]``."""

    def collect(self, payload):
        md = payload["meta_data"]
        n = int((md.get("job_data") or {}).get("n", 1000))
        yield from range(md["data_id"] - 1, n, md["data_size"])


class PrimeMapper:
    """The primes among one chunk of integers."""

    def run_map(self, payload):
        yield [k for k in payload["data"] if is_prime(k)]


class PrimeReducer:
    """How many primes, and their sum."""

    def reduce(self, payloads):
        primes = [k for p in payloads for k in p["data"]]
        return {"count": len(primes), "sum": sum(primes)}


def is_prime(k: int) -> bool:
    if k < 2:
        return False
    f = 2
    while f * f <= k:
        if k % f == 0:
            return False
        f += 1
    return True


tasks.register("collect", "rangecollector", RangeCollector())
tasks.register("map", "primemapper", PrimeMapper())
tasks.register("reduce", "primereducer", PrimeReducer())


def main(argv=None) -> int:
    from node_app.api import JobSpec, run
    from topo.spec import parse_grid
    p = argparse.ArgumentParser(description="prime count with user tasks on a loopback constellation")
    p.add_argument("--grid", default="4x4")
    p.add_argument("--n", type=int, default=20000)
    a = p.parse_args(argv)
    side = parse_grid(a.grid)[0]
    spec = JobSpec(grid=a.grid, minsat=1, maxsat=side, collectors=side, seed=1,
                   collecttask="rangecollector", maptask="primemapper",
                   reducetask="primereducer", job_data={"n": a.n},
                   tasks_modules=(os.path.abspath(__file__),))
    res = run(spec)
    expected = [k for k in range(a.n) if is_prime(k)]
    ok = res.result == {"count": len(expected), "sum": sum(expected)}
    print(f"{res.result['count']} primes below {a.n} (sum {res.result['sum']}) in "
          f"{res.job_time:.2f} s over {spec.collectors} collectors; distance {res.distance} "
          f"hops; exact: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
