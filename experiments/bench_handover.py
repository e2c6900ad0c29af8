"""Benchmark: ground-station handovers in the emulator (root).

    python3 -m experiments.bench_handover [--grid 10x10] [--station Berlin] [--handovers 20]
                                          [--json]

Builds the grid with one placed ground station (default Berlin, 530 km, 25 degrees) and
steps the dynamics updater through the station's gateway changes as the pure core
predicts them (``topo.ground_stations.serving_timeline``), one step just past each.  For
each it prints the time to apply the handover (re-attach the ground link: one ovs-vsctl
transaction; move the routes: ``POST /ground`` until the controller's barriers are back)
and the whole step's time, beside the anchor measured in the same run: steps of the same
testbed in which no handover happens.  Goal: a handover under 200 ms, within one step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from experiments import common

GOAL_S = 0.2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m experiments.bench_handover",
                                description=__doc__.split("\n")[0])
    p.add_argument("--grid", default="10x10")
    p.add_argument("--station", default="Berlin", help="a city (GeoNames)")
    p.add_argument("--handovers", type=int, default=20, help="gateway changes to apply")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not common.need_root("bench_handover"):
        return 2
    from topo import ground_stations as gs
    from topo.config import ConfigError, from_dict
    from topo.testbed import Testbed, TestbedError
    try:
        cfg = from_dict({"grid": args.grid, "ground_stations": [{"city": args.station}],
                         "lock_wait_s": 3600})
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c, st = cfg.constellation(), cfg.stations()[0]
    span = 86_400.0
    windows = gs.contact_windows(c, st, 0.0, span, cfg.min_elevation_deg)
    segs = gs.serving_timeline(c, st, windows, 0.0, span, cfg.min_elevation_deg)
    changes = [b.start_s for b in segs[1:]][:args.handovers]
    quiet = [(a.start_s + a.end_s) / 2 for a in segs[1:len(changes)]]  # mid-segment: none
    rows, anchor = [], []
    try:
        clean = _run(Testbed(cfg, echo=lambda m: None), changes, quiet, rows, anchor)
    except TestbedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return _report(args, st, changes, rows, anchor, clean)


def _run(testbed, changes, quiet, rows, anchor) -> bool:
    """Step ``testbed`` just past each change (and, between them, to a quiet instant)."""
    with testbed as tb:
        for t_change, t_quiet in zip(changes, quiet + [None]):
            rep = tb.dynamics.step(t_change + 1.0)
            step_s = rep.compute_s + rep.apply_s + rep.reroute_s + rep.route_s + sum(
                h.apply_s for h in rep.handovers)
            for h in rep.handovers:
                rows.append({"t_s": round(h.t_s, 1), "from": h.old, "to": h.new,
                             "apply_s": h.apply_s, "link_s": h.link_s, "routes_s": h.routes_s,
                             "flows": h.flows, "step_s": step_s,
                             "created": getattr(h, "created", False),
                             "rate_bps": getattr(h, "rate_bps", None)})
            if t_quiet is not None:
                q = tb.dynamics.step(t_quiet)
                anchor.append(q.compute_s + q.apply_s + q.reroute_s + q.route_s)
        return tb.stop()


def _report(args, st, changes, rows, anchor, clean) -> int:
    applied = [r["apply_s"] for r in rows]
    out = {"grid": args.grid, "station": st.name, "handovers": len(rows),
           "expected": len(changes),
           "handover_median_s": round(statistics.median(applied), 4) if applied else None,
           "handover_max_s": round(max(applied), 4) if applied else None,
           "link_median_s": round(statistics.median(r["link_s"] for r in rows), 4) if rows else None,
           "routes_median_s": round(statistics.median(r["routes_s"] for r in rows), 4) if rows else None,
           "step_with_handover_median_s": round(statistics.median(r["step_s"] for r in rows), 4)
           if rows else None,
           "anchor_step_without_handover_median_s": round(statistics.median(anchor), 4)
           if anchor else None,
           "handover_p90_s": round(_quantile(applied, 0.9), 4) if applied else None,
           "handover_min_s": round(min(applied), 4) if applied else None,
           "handovers_ms": [round(a * 1e3, 1) for a in applied],
           "under_goal": sum(a < GOAL_S for a in applied),
           "links_created": sum(bool(r.get("created")) for r in rows),
           "goal_s": GOAL_S, "all_under_goal": bool(applied) and max(applied) < GOAL_S,
           "one_step_each": len(rows) == len(changes), "teardown_clean": clean}
    if args.json:
        print(json.dumps(out))
    else:
        for r in rows:
            fmt = lambda s: list(s) if s else "none"  # noqa: E731
            print(f"t={r['t_s']:9.1f}s {fmt(r['from'])} -> {fmt(r['to'])}: handover "
                  f"{r['apply_s'] * 1e3:6.1f} ms (link {r['link_s'] * 1e3:.1f}, routes "
                  f"{r['routes_s'] * 1e3:.1f}, {r['flows']} flows), step {r['step_s'] * 1e3:.1f} ms")
        print(f"{args.grid} {st.name}: {len(rows)}/{len(changes)} handovers, each in one step; "
              f"{out['under_goal']} under the goal; min {out['handover_min_s'] * 1e3:.1f}, "
              f"median {out['handover_median_s'] * 1e3:.1f} ms, p90 {out['handover_p90_s'] * 1e3:.1f}, "
              f"max {out['handover_max_s'] * 1e3:.1f} ms "
              f"(goal {GOAL_S * 1e3:.0f} ms); step with a handover {out['step_with_handover_median_s'] * 1e3:.1f} ms "
              f"vs anchor step without one {out['anchor_step_without_handover_median_s'] * 1e3:.1f} ms")
    return 0 if out["all_under_goal"] and out["one_step_each"] else 1


def _quantile(values, q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation)."""
    import numpy as np
    return float(np.quantile(np.asarray(values, dtype=float), q))


if __name__ == "__main__":
    sys.exit(main())
