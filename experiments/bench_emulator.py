"""Benchmark the emulator against plain Mininet, in the same run (printed figures).

For each grid (``N`` for N x N, or ``PxS`` such as 72x22; default 5, 10, 15, 20):

* ours: build (hosts, veths, OVS, tc shaping) -> fully routed (controller synced),
  all-pairs reachability with the path check (grids up to ``--check-max`` satellites),
  flows per switch, a word-count job on node daemons (one process per plane) with its
  time, exactness and the daemons' memory, then one dynamics step over every link (rates
  + moving cross-over outages) and the controller's reroute after it, teardown,
  clean-teardown verification; the whole cycle; peak memory: the machine's used memory
  above what it was before the build (sampled every 0.5 s, so other work on the machine
  counts too) and the RSS of Open vSwitch, the controller, the host shells and the daemons;
* plain Mininet: ``mn --topo torus,P,S --switch ovs,datapath=user,failMode=standalone
  --controller=none --twait 0 --test build`` (unshaped, unrouted build + teardown),
  timed as a whole, given at most ``--mn-timeout`` seconds (default 900).  mn's own
  clean-up-on-error (which kills processes by broad names) is disabled: it must never
  run on a shared machine.

Plain mn on grids it would take too long on (above ``--mn-max`` satellites): with plain mn
measured in the same run at two or more grids (those of ``--sizes`` up to ``--mn-max``, and
``--mn-anchors`` run for mn only), its cycle there is extrapolated by a power law fitted to
those measurements and printed as ``~X s (extrap.)``: an estimate, labelled as one.

Usage: ``.venv/bin/python -m experiments.bench_emulator [--sizes 5,10,15,20,72x22]
[--json OUT] [--no-mn] [--mn-max N] [--mn-anchors 5,10] [--no-check] [--check-max N]
[--check-grids 72x22]
[--no-job] [--controller osken|ryu]``.
Root only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
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


def plain_mininet(planes: int, sats: int, timeout_s: float = 900.0) -> dict:
    """Time mn's torus build+teardown cycle; verify it left no bridge behind."""
    from topo.lock import testbed_lock
    args = [sys.executable, "-c", MN_WRAPPER, "--topo", f"torus,{planes},{sats}",
            "--switch", "ovs,datapath=user,failMode=standalone", "--controller=none",
            "--twait", "0", "--test", "build"]
    with testbed_lock():
        t0 = time.monotonic()
        try:
            res = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"cycle_s": None, "ok": False, "timeout_s": timeout_s,
                    "note": f"did not finish within {timeout_s:.0f} s (mn left running "
                            "objects: clean them by hand, never with mn -c)"}
        total = time.monotonic() - t0
    left = [b for b in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True,
                                      text=True).stdout.split() if re.fullmatch(r"s\d+x\d+", b)]
    m = re.search(r"completed in ([\d.]+) seconds", res.stderr + res.stdout)
    return {"cycle_s": round(total, 2), "ok": res.returncode == 0 and not left,
            "kernel_settle_after_s": kernel_settle_s(),
            "mn_reported_s": float(m.group(1)) if m else None, "left_bridges": len(left)}


class MemorySampler:
    """Peak of the machine's used memory (MemTotal - MemAvailable) above its value at
    start, sampled every ``period_s`` in a thread."""

    def __init__(self, period_s: float = 0.5):
        self.period_s = period_s
        self.base_mb = self.peak_mb = _used_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.period_s):
            self.peak_mb = max(self.peak_mb, _used_mb())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_above_base_mb(self) -> float:
        return round(self.peak_mb - self.base_mb, 1)


def _used_mb() -> float:
    info = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            k, v = line.split(":", 1)
            info[k] = int(v.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


def process_memory(tb, nodes=None) -> dict:
    """RSS (MB) of what the emulation runs: Open vSwitch, the controller (its peak), the
    host shells and, given ``nodes``, the node daemons."""
    from node_app.memory import memory, proc_kb
    private = [i.pids["ovs-vswitchd"] for i in tb.network.ovs.private]
    vs = private or ([ovs_pid()] if ovs_pid() else [])
    out = {"ovs_vswitchd_rss_mb": round(sum(proc_kb(p, "VmRSS") for p in vs) / 1024, 1)
           if vs else None, "ovs_vswitchd_processes": len(vs),
           "controller_peak_rss_mb": round(proc_kb(tb.controller.pid, "VmHWM") / 1024, 1),
           "host_shells": memory(h.pid for h in tb.hosts)}
    if nodes is not None:
        out["node_daemons"] = nodes.memory()
    return out


def ovs_pid() -> int | None:
    """PID of the system instance's ovs-vswitchd."""
    try:
        with open("/var/run/openvswitch/ovs-vswitchd.pid") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def wordcount_job(tb, run_dir: str) -> dict:
    """One word-count job (4 collectors in a 3x3 AOI next to the ground station's
    satellite) on node daemons, one process per plane; its time, exactness, memory."""
    from node_app.emulated import EmulatedNodes
    from node_app.tasks.wordcount import exact_word_count, resolve_data_file
    exact = exact_word_count(resolve_data_file("data/sample.txt"))
    out = {}
    t0 = time.monotonic()
    with EmulatedNodes(tb, run_dir, log=False) as nodes:
        out["daemons_start_s"] = round(time.monotonic() - t0, 2)
        t1 = time.monotonic()
        res = nodes.run_job(["-mi", "1", "-ma", "3", "-c", "4", "-s", "1", "-a", "bipartite",
                             "-r", "center", "--timeout", "120"], timeout_s=600)
        out["job_wall_s"] = round(time.monotonic() - t1, 2)
        out["job_time_s"] = res.get("job_time")
        out["exact"] = res.get("result") == exact
        out["memory"] = process_memory(tb, nodes)
    return out


def ours(planes: int, sats: int, controller: str, check: bool, job: bool,
         outage_lat_deg: float | None, controller_timeout_s: float = 900.0) -> dict:
    from topo.run import run_check
    from topo.testbed import Testbed, TestbedError
    cfg = from_dict({"grid": f"{planes}x{sats}", "controller": controller,
                     "outage_lat_deg": outage_lat_deg,
                     "controller_timeout_s": controller_timeout_s})
    tb = Testbed(cfg, echo=lambda m: None)
    out = {}
    mem = MemorySampler()
    try:
        with mem:
            _ours_started(tb, out, check, job, run_check)
    except TestbedError as exc:  # e.g. not routed in time: the build figures still count
        out["error"] = str(exc)
        out["build_s"] = round(tb.metadata.get("build_s") or 0, 2)
        out["build_phases_s"] = tb.metadata.get("build_phases_s")
    finally:
        t2 = time.monotonic()
        clean = tb.stop()
        out["teardown_s"] = round(time.monotonic() - t2, 2)
        out["teardown_phases_s"] = tb.metadata.get("teardown_phases_s")
        out["teardown_clean"] = clean
        out["mem_peak_above_base_mb"] = mem.peak_above_base_mb
        out["kernel_settle_after_s"] = kernel_settle_s()
    out["cycle_s"] = round(out.get("build_to_routed_s", 0) + out["teardown_s"], 2)
    return out


def _ours_started(tb, out: dict, check: bool, job: bool, run_check) -> None:
    tb.start()
    out["build_s"] = round(tb.metadata["build_s"], 2)
    out["routes_s"] = round(tb.metadata["routes_s"], 2)
    # (waiting for another network's lock is not part of it)
    out["build_to_routed_s"] = round(tb.metadata["build_s"] + tb.metadata["routes_s"], 2)
    out["lock_wait_s"] = tb.metadata.get("lock_wait_s")
    out["build_phases_s"] = tb.metadata.get("build_phases_s")
    out["ovs_instances"] = tb.metadata.get("ovs_instances")
    st = tb.controller_state()
    flows = list(st["flows_per_switch"].values())
    out["flows_per_switch"] = {"min": min(flows), "max": max(flows),
                               "mean": round(sum(flows) / len(flows), 1)}
    out["links_down_at_start"] = len(st["links_down"])
    out["shaping"] = tb.metadata["shaping"]
    out["memory_routed"] = process_memory(tb)
    if check:
        res = run_check(tb)
        out.update(pairs=res["pairs"], pairs_ok=res["pairs_ok"], paths_ok=res["paths_ok"],
                   ping_s=round(res["ping_s"], 2), tables_verified=res["tables_verified"],
                   tables_s=res["tables_s"], pairs_sampled=res["pairs_sampled"],
                   check_attempts=res["attempts"], check_failed=res["failed"])
    if job:  # on the routed network, before the dynamics step moves it
        with tempfile.TemporaryDirectory(prefix="bench-emu-job-") as d:
            try:
                out["wordcount"] = wordcount_job(tb, d)
            except RuntimeError as exc:
                out["wordcount"] = {"error": str(exc)[-300:]}
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


def mn_extrapolation(points: list[tuple[int, float]], satellites: int) -> dict | None:
    """Plain mn's cycle at ``satellites`` extrapolated from measured (satellites, cycle_s)
    ``points`` by a power law fitted in log-log space (None: fewer than two points).  An
    estimate, not a measurement: it is printed and stored as such."""
    import numpy as np
    pts = sorted(set(points))
    if len({n for n, _ in pts}) < 2:
        return None
    k, c = np.polyfit(np.log([n for n, _ in pts]), np.log([t for _, t in pts]), 1)
    return {"cycle_s": round(float(np.exp(c) * satellites ** k), 1),
            "exponent": round(float(k), 2), "from_satellites": [n for n, _ in pts],
            "note": "extrapolated, not measured"}


def parse_size(text: str) -> tuple[int, int]:
    """``N`` (N x N) or ``PxS`` (ValueError when not a torus grid)."""
    from topo.spec import parse_grid
    return parse_grid(text if "x" in text.lower() else f"{int(text)}x{int(text)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_emulator")
    p.add_argument("--sizes", default="5,10,15,20", help="grids: N (N x N) or PxS, e.g. 20,72x22")
    p.add_argument("--controller", default="osken", choices=("osken", "ryu"))
    p.add_argument("--no-mn", action="store_true")
    p.add_argument("--mn-max", type=int, default=900,
                   help="plain mn only for grids up to this many satellites (default 900)")
    p.add_argument("--mn-timeout", type=float, default=900.0,
                   help="give plain mn at most this many seconds (default 900)")
    p.add_argument("--no-check", action="store_true")
    p.add_argument("--check-max", type=int, default=400,
                   help="all-pairs check only up to this many satellites (default 400)")
    p.add_argument("--check-grids", default="",
                   help="grids checked whatever --check-max says (tables of every switch, "
                        "a sample of pairs beyond 200 000), e.g. 72x22")
    p.add_argument("--no-job", action="store_true", help="skip the word-count job")
    p.add_argument("--controller-timeout", type=float, default=900.0,
                   help="seconds to wait for the controller to route (default 900)")
    p.add_argument("--outage-lat", type=float, default=75.0,
                   help="cross-over outage latitude (deg); 0 disables")
    p.add_argument("--mn-anchors", default="",
                   help="grids to run plain mn on only (no testbed), e.g. 5,10: with the "
                        "grids mn ran on, they anchor an extrapolation of mn's cycle to the "
                        "grids it did not run on (printed as such)")
    p.add_argument("--json", help="also write all figures to this file")
    args = p.parse_args(argv)
    try:
        sizes = [parse_size(x) for x in args.sizes.split(",")]
        anchors = [parse_size(x) for x in args.mn_anchors.split(",") if x.strip()]
        checked = {parse_size(x) for x in args.check_grids.split(",") if x.strip()}
    except ValueError:
        print(f"error: --sizes {args.sizes!r} / --mn-anchors {args.mn_anchors!r}: "
              "comma-separated N or PxS (each axis >= 3)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: bench_emulator needs root (builds networks)", file=sys.stderr)
        return 2
    outage = args.outage_lat or None
    rows = []
    kernel_settle_s()  # start from a quiet kernel
    mn_points = []
    for planes, sats in sizes:
        n_sats = planes * sats
        row = {"grid": f"{planes}x{sats}", "satellites": n_sats,
               "load_avg_1min_before": os.getloadavg()[0]}
        try:
            row["ours"] = ours(planes, sats, args.controller,
                               not args.no_check and (n_sats <= args.check_max
                                                      or (planes, sats) in checked),
                               not args.no_job, outage, args.controller_timeout)
        except (ConfigError, RuntimeError) as exc:
            row["ours"] = {"error": str(exc)}
        if not args.no_mn and n_sats <= args.mn_max:
            row["mn"] = plain_mininet(planes, sats, args.mn_timeout)
            if row["mn"].get("ok"):
                mn_points.append((n_sats, row["mn"]["cycle_s"]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    for planes, sats in anchors:  # after our grids: the big ones come first
        m = plain_mininet(planes, sats, args.mn_timeout)
        print(json.dumps({"grid": f"{planes}x{sats}", "mn_anchor": m}), flush=True)
        if m.get("ok"):
            mn_points.append((planes * sats, m["cycle_s"]))
    for r in rows:
        if not r.get("mn", {}).get("cycle_s"):
            est = mn_extrapolation(mn_points, r["satellites"])
            if est:
                r["mn_extrapolated"] = est
    print()
    print(f"{'grid':>6} | {'ours build':>10} {'routed':>7} {'teardown':>9} {'cycle':>7} "
          f"{'pairs ok':>15} {'paths':>5} {'ping':>6} {'flows/sw':>8} {'dyn step':>9} "
          f"{'reroute':>8} {'job':>6} {'exact':>5} {'mem peak':>8} | {'mn cycle':>8} "
          f"{'speed-up':>8}")
    for r in rows:
        o, m = r["ours"], r.get("mn", {})
        if "error" in o:
            print(f"{r['grid']:>6} | built in {o.get('build_s', '-')} s, teardown "
                  f"{o.get('teardown_s', '-')} s; error: {o['error']}")
            continue
        d = o["dynamics_step"]
        pairs = f"{o.get('pairs_ok', '-')}/{o.get('pairs', '-')}"
        speed = (f"{m['cycle_s'] / o['cycle_s']:.1f}x" if m.get("cycle_s") else "-")
        mn_txt = f"{m.get('cycle_s') or m.get('note', '-')!s:>7}s"
        if not m.get("cycle_s") and r.get("mn_extrapolated"):
            est = r["mn_extrapolated"]["cycle_s"]
            mn_txt, speed = f"~{est:.0f}s (extrap.)", f"~{est / o['cycle_s']:.0f}x"
        wc = o.get("wordcount", {})
        job = f"{wc['job_wall_s']:.1f}s" if "job_wall_s" in wc else "-"
        print(f"{r['grid']:>6} | {o['build_s']:>9.1f}s {o['build_to_routed_s']:>6.1f}s "
              f"{o['teardown_s']:>8.1f}s {o['cycle_s']:>6.1f}s {pairs:>15} "
              f"{str(o.get('paths_ok', '-')):>5} {o.get('ping_s', 0):>5.1f}s "
              f"{o['flows_per_switch']['mean']:>8} {d['apply_s']:>8.3f}s "
              f"{(str(d['rerouted_s']) + 's') if d['rerouted_s'] else '-':>8} "
              f"{job:>6} {str(wc.get('exact', '-')):>5} "
              f"{o['mem_peak_above_base_mb'] / 1024:>6.2f}GB | "
              f"{mn_txt} {speed:>8}")
    print("ours cycle = build + shape + route (controller synced) + teardown; "
          "mn cycle = unshaped, unrouted torus build + teardown; job = word count on node "
          "daemons (a process per plane), wall time from the ground CLI; mem peak = the "
          "machine's used memory above its value before the build")
    if any(r.get("mn_extrapolated") for r in rows):
        e = next(r["mn_extrapolated"] for r in rows if r.get("mn_extrapolated"))
        print(f"(extrap.) = plain mn NOT run at that grid: its cycle extrapolated by a power "
              f"law (exponent {e['exponent']}) through plain mn measured in this run at "
              f"{', '.join(map(str, e['from_satellites']))} satellites")
    print("kernel settle after each run (async namespace clean-up, not in either cycle): " +
          ", ".join(f"{r['grid']} ours {r['ours'].get('kernel_settle_after_s')}s / mn "
                    f"{r.get('mn', {}).get('kernel_settle_after_s')}s" for r in rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
