"""Benchmark: a cross-server ISL against a local one, and the cost of a second server (root).

    python3 -m experiments.bench_multiserver [--grid 6x6] [--servers local:2] [--rate-mbps 20]
                                             [--pairs 3] [--seconds 5] [--json]

Builds the grid on this machine alone (the anchor), then on ``--servers`` (``local:N``: the
extra servers are network namespaces with their own sshd and Open vSwitch, the cross-server
ISLs VXLAN tunnels).  Every link is capped at ``--rate-mbps`` (rate_scale 1000), so a local
and a cross-server cross-plane ISL are shaped alike; for ``--pairs`` satellite indices s it
measures TCP goodput (iperf3, one hop) over the local ISL [s, 1]-[s, 2] and the
cross-server ISL [s, 3]-[s, 4] of the same testbed, and prints them side by side with the
build, routing and teardown times of both testbeds.  Goal: cross-server within 10 % of local.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from experiments import common

GOAL = 0.10


def _testbed(grid: str, servers, rate_mbps: float):
    from topo.config import from_dict
    from topo.testbed import Testbed
    raw = {"grid": grid, "rate_scale": 1000, "rate_cap_mbps": rate_mbps, "lock_wait_s": 3600}
    if servers:
        raw["servers"] = servers
    return Testbed(from_dict(raw), echo=lambda m: None)


def _times(tb) -> dict:
    m = tb.metadata
    return {k: round(m[k], 2) for k in ("build_s", "routes_s", "teardown_s") if m.get(k) is not None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m experiments.bench_multiserver",
                                description=__doc__.split("\n")[0])
    p.add_argument("--grid", default="6x6")
    p.add_argument("--servers", default="local:2")
    p.add_argument("--rate-mbps", type=float, default=20.0)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not common.need_root("bench_multiserver"):
        return 2
    from experiments.fidelity import iperf_bps
    from topo.config import ConfigError, from_dict
    from topo.testbed import TestbedError
    try:
        cfg = from_dict({"grid": args.grid, "servers": args.servers})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ps = cfg.plane_servers()
    if cfg.planes < 4 or ps[1] != ps[2] or ps[3] == ps[4] or not 1 <= args.pairs <= cfg.sats_per_plane:
        print("error: needs planes 1, 2 on one server and 3, 4 on two (e.g. --grid 6x6 "
              "--servers local:2) and 1 <= --pairs <= sats per plane", file=sys.stderr)
        return 2
    out = {"grid": args.grid, "servers": args.servers, "rate_mbps": args.rate_mbps, "rows": []}
    try:
        one = _testbed(args.grid, None, args.rate_mbps)
        with one:
            pass
        out["one_server"] = _times(one)
        tb = _testbed(args.grid, args.servers, args.rate_mbps)
        with tb:
            out["cross_server_links"] = tb.metadata["cross_server_links"]
            for s in range(1, args.pairs + 1):
                row = {"sat": s}
                for kind, (a, b) in (("local", ((s, 1), (s, 2))), ("cross", ((s, 3), (s, 4)))):
                    row[f"{kind}_mbps"] = round(iperf_bps(tb.host_of(b), tb.host_of(a),
                                                          tb.ip_of(b), args.seconds, 1) / 1e6, 3)
                row["ratio"] = round(row["cross_mbps"] / row["local_mbps"], 3)
                out["rows"].append(row)
        out["multi_server"] = _times(tb)
        out["teardown_clean"] = tb.metadata.get("teardown_clean")
    except (TestbedError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ratios = [r["ratio"] for r in out["rows"]]
    out["ratio_median"] = statistics.median(ratios)
    out["goal_met"] = all(abs(r - 1) <= GOAL for r in ratios)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{args.grid} on {args.servers}: {out['cross_server_links']} cross-server ISLs, "
          f"every link shaped to {args.rate_mbps:g} Mbit/s")
    print("sat  local ISL Mbit/s  cross-server ISL Mbit/s  ratio")
    for r in out["rows"]:
        print(f"{r['sat']:>3}  {r['local_mbps']:>15.2f}  {r['cross_mbps']:>23.2f}  {r['ratio']:.3f}")
    print(f"goal (within {GOAL:.0%}): {'met' if out['goal_met'] else 'NOT met'}")
    print(f"one server (anchor): {out['one_server']}   {args.servers}: {out['multi_server']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
