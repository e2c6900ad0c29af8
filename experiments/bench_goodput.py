"""Benchmark: goodput of one collector->mapper stream over one shaped ISL (root).

    python3 -m experiments.bench_goodput [--grid 5x5] [--rate-mbps 20] [--volume-mb 20]
                                         [--big-gb 1] [--json]

A synthetic job with one collector whose mapper is its neighbour: the stream crosses
exactly one shaped ISL (host links are unshaped).  The figure is the collector's payload
bytes over its sending time, beside that ISL's htb rate measured in the same run (the
anchor; goal: at least 90%).  ``rate_scale`` is set so the link's rate is about
``--rate-mbps`` (the Shannon rates of a small grid are well under 1 Mbit/s).  With
``--big-gb`` it also runs a synthetic job of that volume on the same testbed (6
collectors) and prints its time and throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from experiments import common
from topo import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def neighbour_seed(grid: str) -> int:
    """A seed whose 2x2 AOI (cells 1..2) makes the collector and mapper ISL neighbours."""
    for seed in range(1, 200):
        out = subprocess.run([sys.executable, "-m", "node_app.job", "--grid", grid, "-mi", "1",
                              "-ma", "2", "-c", "1", "-s", str(seed), "--dry-run", "--json"],
                             cwd=ROOT, capture_output=True, text=True, check=True)
        if json.loads(out.stdout)["distance"] == 1:
            return seed
    raise RuntimeError("no seed puts the collector next to its mapper")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m experiments.bench_goodput", description=__doc__.split("\n")[0])
    p.add_argument("--grid", default="5x5")
    p.add_argument("--rate-mbps", type=float, default=20.0, help="target rate of the ISL")
    p.add_argument("--volume-mb", type=float, default=20.0, help="bytes the collector streams")
    p.add_argument("--big-gb", type=float, default=0.0, help="also a synthetic job of this volume")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not common.need_root("bench_goodput"):
        return 2

    from topo.config import from_dict

    seed = neighbour_seed(args.grid)
    plan = json.loads(subprocess.run(
        [sys.executable, "-m", "node_app.job", "--grid", args.grid, "-mi", "1", "-ma", "2", "-c", "1",
         "-s", str(seed), "--dry-run", "--json"], cwd=ROOT, capture_output=True, text=True).stdout)
    collector, mapper = (tuple(x) for x in plan["allocations"][0])
    probe = from_dict({"grid": args.grid})
    link_bps = probe.link_model().shannon_rate_bps(probe.constellation().link_length_m(collector, mapper))
    cfg = from_dict({"grid": args.grid, "rate_scale": args.rate_mbps * 1e6 / link_bps,
                     "rate_cap_mbps": max(1000.0, 2 * args.rate_mbps)})
    volume = int(args.volume_mb * 1e6)
    figures = {"grid": args.grid, "collector": collector, "mapper": mapper}
    try:
        shape = measure(cfg, args, seed, volume, figures)
    except Exception as e:  # the testbed tore itself down; one line for the user
        print(f"error: {type(e).__name__}: {str(e)[-300:]}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(figures))
        return 0
    goodput = figures["goodput_bps"]
    print(f"one collector->mapper stream over one shaped ISL {collector}->{mapper} on {args.grid} "
          f"({figures['datapath']} datapath)")
    print(f"  anchor: the ISL's htb rate          {shape.rate_bps / 1e6:8.2f} Mbit/s")
    print(f"  goodput: {volume} payload bytes in {figures['collector_s']} s "
          f"{goodput / 1e6:8.2f} Mbit/s = {figures['goodput_pct']}% (goal >= 90%)")
    if args.big_gb:
        print(f"  synthetic {args.big_gb} GB job on {args.grid}: {figures['big_job_time_s']} s, "
              f"{figures['big_job_throughput_mbps']} Mbit/s")
    return 0


def measure(cfg, args, seed: int, volume: int, figures: dict):
    """Run the jobs on one testbed; fills ``figures``, returns the ISL's shape."""
    from node_app.emulated import EmulatedNodes
    from topo.testbed import Testbed

    collector, mapper = figures["collector"], figures["mapper"]
    with Testbed(cfg) as tb, EmulatedNodes(tb, tempfile.mkdtemp(prefix="goodput-")) as nodes:
        shape = tb.shapes[frozenset((collector, mapper))]
        out = nodes.run_job(["-mi", "1", "-ma", "2", "-c", "1", "-s", str(seed), "--workload", "synthetic",
                             "--data-volume", str(volume), "--timeout", "120"], timeout_s=600)
        role = next(r for r in out["roles"] if r["role"] == "collector")
        goodput = 8 * volume / role["duration_s"]
        figures.update(link_rate_bps=shape.rate_bps, volume_bytes=volume,
                       collector_s=round(role["duration_s"], 3), goodput_bps=round(goodput),
                       goodput_pct=round(100 * goodput / shape.rate_bps, 1),
                       wire_bytes=out["bytes"]["collect"], datapath=tb.metadata["datapath"])
        if args.big_gb:
            big = int(args.big_gb * 1e9)
            side = min(tb.c.planes, tb.c.sats_per_plane)
            out = nodes.run_job(["-mi", "1", "-ma", str(side), "-c", "6", "-s", "1", "--workload",
                                 "synthetic", "--data-volume", str(big), "--timeout", "300"],
                                timeout_s=3600)
            figures.update(big_job_bytes=big, big_job_time_s=round(out["job_time"], 2),
                           big_job_throughput_mbps=round(8 * big / out["job_time"] / 1e6, 1))
    return shape


if __name__ == "__main__":
    sys.exit(cli.run(main))
