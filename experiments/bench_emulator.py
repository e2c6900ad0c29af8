"""Benchmark the emulator against plain Mininet, in the same run (printed figures).

For each grid N x N (default 5, 10, 15, 20):

* ours: build (hosts, veths, OVS, tc shaping) -> fully routed (controller synced),
  all-pairs reachability with the path check, one dynamics step over every link
  (rates + moving cross-over outages) and the controller's reroute after it,
  flows per switch, teardown, clean-teardown verification;
* plain Mininet: ``mn --topo torus,N,N --switch ovs,datapath=user,failMode=standalone
  --controller=none --twait 0 --test build`` (unshaped, unrouted build + teardown),
  timed as a whole.  mn's own clean-up-on-error (which kills processes by broad
  names) is disabled: it must never run on a shared machine.

Usage: ``.venv/bin/python -m experiments.bench_emulator [--sizes 5,10,15,20] [--json OUT]
[--no-mn] [--no-check] [--controller osken|ryu]``.  Root only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

from topo.config import ConfigError, from_dict
from topo import cli

MN_WRAPPER = (
    "import sys, runpy, mininet.clean as c\n"
    "c.cleanup = lambda *a, **k: print('mn cleanup suppressed', file=sys.stderr)\n"
    "sys.argv = ['mn'] + sys.argv[1:]\n"
    "runpy.run_path('/usr/bin/mn', run_name='__main__')\n")


def kernel_settle_s(limit_s: float = 180.0) -> float:
    """Seconds until the kernel has finished the network namespaces of the last run.

    Dead namespaces are cleaned up asynchronously (cleanup_net holds the pernet lock),
    so the *next* build would pay the previous run's debt: wait until creating and
    deleting a probe namespace is quick again, and report how long that took."""
    t0 = time.monotonic()
    name = f"spcprobe{os.getpid()}"
    while time.monotonic() - t0 < limit_s:
        t1 = time.monotonic()
        subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=limit_s)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=limit_s)
        if time.monotonic() - t1 < 0.2:
            break
        time.sleep(0.5)
    return round(time.monotonic() - t0, 2)


def plain_mininet(n: int, timeout_s: float = 900.0) -> dict:
    """Time mn's torus build+teardown cycle; verify it left no bridge behind."""
    from topo.testbed import testbed_lock
    args = [sys.executable, "-c", MN_WRAPPER, "--topo", f"torus,{n},{n}",
            "--switch", "ovs,datapath=user,failMode=standalone", "--controller=none",
            "--twait", "0", "--test", "build"]
    with testbed_lock():
        t0 = time.monotonic()
        res = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
        total = time.monotonic() - t0
    left = [b for b in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True,
                                      text=True).stdout.split() if re.fullmatch(r"s\d+x\d+", b)]
    m = re.search(r"completed in ([\d.]+) seconds", res.stderr + res.stdout)
    return {"cycle_s": round(total, 2), "ok": res.returncode == 0 and not left,
            "kernel_settle_after_s": kernel_settle_s(),
            "mn_reported_s": float(m.group(1)) if m else None, "left_bridges": len(left)}


def ours(n: int, controller: str, check: bool, outage_lat_deg: float | None) -> dict:
    from topo.run import run_check
    from topo.testbed import Testbed
    cfg = from_dict({"grid": f"{n}x{n}", "controller": controller,
                     "outage_lat_deg": outage_lat_deg, "controller_timeout_s": 300})
    tb = Testbed(cfg, echo=lambda m: None)
    out = {}
    try:
        tb.start()
        out["build_s"] = round(tb.metadata["build_s"], 2)
        out["routes_s"] = round(tb.metadata["routes_s"], 2)
        # (waiting for another network's lock is not part of it)
        out["build_to_routed_s"] = round(tb.metadata["build_s"] + tb.metadata["routes_s"], 2)
        out["lock_wait_s"] = tb.metadata.get("lock_wait_s")
        out["build_phases_s"] = tb.metadata.get("build_phases_s")
        st = tb.controller_state()
        flows = list(st["flows_per_switch"].values())
        out["flows_per_switch"] = {"min": min(flows), "max": max(flows),
                                   "mean": round(sum(flows) / len(flows), 1)}
        out["links_down_at_start"] = len(st["links_down"])
        out["shaping"] = tb.metadata["shaping"]
        if check:
            res = run_check(tb)
            out.update(pairs=res["pairs"], pairs_ok=res["pairs_ok"], paths_ok=res["paths_ok"],
                       ping_s=round(res["ping_s"], 2))
        t_step = 600.0  # ten minutes of orbit: every cross-plane link moves, outages shift
        rep = tb.dynamics.step(t_step)  # applies links, waits for the reroute, moves routes to t
        st2 = tb.controller_state()
        out["dynamics_step"] = {"t_s": t_step, "links": len(tb.shapes),
                                "rate_changes": rep.rate_changes,
                                "went_down": len(rep.went_down), "came_up": len(rep.came_up),
                                "commands": rep.commands,
                                "compute_s": round(rep.compute_s, 3),
                                "apply_s": round(rep.apply_s, 3),
                                "rerouted_s": round(rep.reroute_s, 3) if rep.went_down or rep.came_up else None,
                                "controller_recompute_s": round(st2.get("recompute_s", 0), 3),
                                "time_reroute_s": round(rep.route_s, 3),
                                "time_flows_changed": rep.flows_changed}
    finally:
        t2 = time.monotonic()
        clean = tb.stop()
        out["teardown_s"] = round(time.monotonic() - t2, 2)
        out["teardown_phases_s"] = tb.metadata.get("teardown_phases_s")
        out["teardown_clean"] = clean
        out["kernel_settle_after_s"] = kernel_settle_s()
    out["cycle_s"] = round(out.get("build_to_routed_s", 0) + out["teardown_s"], 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_emulator")
    p.add_argument("--sizes", default="5,10,15,20")
    p.add_argument("--controller", default="osken", choices=("osken", "ryu"))
    p.add_argument("--no-mn", action="store_true")
    p.add_argument("--no-check", action="store_true")
    p.add_argument("--outage-lat", type=float, default=75.0,
                   help="cross-over outage latitude (deg); 0 disables")
    p.add_argument("--json", help="also write all figures to this file")
    args = p.parse_args(argv)
    try:
        sizes = [int(x) for x in args.sizes.split(",")]
        if any(not 3 <= s <= 64 for s in sizes):
            raise ValueError
    except ValueError:
        print(f"error: --sizes {args.sizes!r}: comma-separated integers in [3, 64]",
              file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: bench_emulator needs root (builds networks)", file=sys.stderr)
        return 2
    outage = args.outage_lat or None
    rows = []
    kernel_settle_s()  # start from a quiet kernel
    for n in sizes:
        row = {"grid": f"{n}x{n}"}
        try:
            row["ours"] = ours(n, args.controller, not args.no_check, outage)
        except (ConfigError, RuntimeError) as exc:
            row["ours"] = {"error": str(exc)}
        if not args.no_mn:
            row["mn"] = plain_mininet(n)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"{'grid':>6} | {'ours build':>10} {'routed':>7} {'teardown':>9} {'cycle':>7} "
          f"{'pairs ok':>15} {'paths':>5} {'ping':>6} {'flows/sw':>8} {'dyn step':>9} "
          f"{'reroute':>8} | {'mn cycle':>8} {'speed-up':>8}")
    for r in rows:
        o, m = r["ours"], r.get("mn", {})
        if "error" in o:
            print(f"{r['grid']:>6} | error: {o['error']}")
            continue
        d = o["dynamics_step"]
        pairs = f"{o.get('pairs_ok', '-')}/{o.get('pairs', '-')}"
        speed = (f"{m['cycle_s'] / o['cycle_s']:.1f}x" if m.get("cycle_s") else "-")
        print(f"{r['grid']:>6} | {o['build_s']:>9.1f}s {o['build_to_routed_s']:>6.1f}s "
              f"{o['teardown_s']:>8.1f}s {o['cycle_s']:>6.1f}s {pairs:>15} "
              f"{str(o.get('paths_ok', '-')):>5} {o.get('ping_s', 0):>5.1f}s "
              f"{o['flows_per_switch']['mean']:>8} {d['apply_s']:>8.3f}s "
              f"{(str(d['rerouted_s']) + 's') if d['rerouted_s'] else '-':>8} | "
              f"{m.get('cycle_s', '-'):>7}s {speed:>8}")
    print("ours cycle = build + shape + route (controller synced) + teardown; "
          "mn cycle = unshaped, unrouted torus build + teardown")
    print("kernel settle after each run (async namespace clean-up, not in either cycle): " +
          ", ".join(f"{r['grid']} ours {r['ours'].get('kernel_settle_after_s')}s / mn "
                    f"{r.get('mn', {}).get('kernel_settle_after_s')}s" for r in rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
