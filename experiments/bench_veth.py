"""Veth creation: one ``ip -batch`` process against pyroute2 netlink calls, same veths.

The build creates every veth of a run in one ``ip -force -batch`` (``topo.build``).  This
benchmark creates ``--pairs`` veth pairs (default 1800: a 30x30 grid's ISLs) in the root
namespace both ways, brings them up, and deletes them again, in alternating order over
``--rounds`` rounds, and prints each method's creation time per round and the median.

    python3 -m experiments.bench_veth [--pairs 1800] [--rounds 3] [--json]

Root; it holds the machine's network lock (``topo.lock``) for the whole run, tags its
veths with a link group private to this process and deletes only that group.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from topo.lock import testbed_lock
from topo.shaping import run_batch


def _group() -> int:
    return 0x5C800000 | (os.getpid() & 0x7FFFFF)


def _names(pairs: int, tag: str) -> list[tuple[str, str]]:
    return [(f"vb{tag}{i}a", f"vb{tag}{i}b") for i in range(pairs)]


def create_ip_batch(names: list[tuple[str, str]], group: int) -> None:
    """What ``topo.build`` does: one ``ip -batch`` adding every pair, then the group up."""
    cmds = [f"link add name {a} group {group} type veth peer name {b} group {group}"
            for a, b in names]
    run_batch("ip", cmds + [f"link set group {group} up"])


def create_pyroute2(names: list[tuple[str, str]], group: int) -> None:
    """One netlink request per pair over one pyroute2 socket, then the group up by ip."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        for a, b in names:
            ipr.link("add", ifname=a, kind="veth", group=group,
                     peer={"ifname": b, "group": group})
    run_batch("ip", [f"link set group {group} up"])


def count_group(group: int) -> int:
    res = subprocess.run(["ip", "-o", "link", "show", "group", str(group)],
                         capture_output=True, text=True, timeout=60)
    return len(res.stdout.splitlines())


def delete_group(group: int) -> None:
    subprocess.run(["ip", "link", "delete", "group", str(group)], capture_output=True,
                   timeout=300)


METHODS = {"ip -batch": create_ip_batch, "pyroute2": create_pyroute2}


def run(pairs: int, rounds: int, echo=print) -> dict:
    """Creation seconds per method and round: {method: [s, ...]}."""
    group = _group()
    if count_group(group):
        raise RuntimeError(f"link group {group} is in use")
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    try:
        for r in range(rounds):
            order = list(METHODS) if r % 2 == 0 else list(METHODS)[::-1]
            for method in order:
                names = _names(pairs, "p" if method == "pyroute2" else "i")
                t0 = time.monotonic()
                METHODS[method](names, group)
                dt = time.monotonic() - t0
                made = count_group(group)
                delete_group(group)
                if made != 2 * pairs:
                    raise RuntimeError(f"{method}: {made} devices made, {2 * pairs} expected")
                times[method].append(dt)
                echo(f"round {r + 1}: {method}: {pairs} veth pairs in {dt:.2f} s")
    finally:
        delete_group(group)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m experiments.bench_veth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=1800, help="veth pairs per method (1..20000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each method once (1..20)")
    p.add_argument("--lock-wait-s", type=float, default=1800.0,
                   help="longest wait for the machine's network lock")
    p.add_argument("--json", action="store_true", help="one JSON line of the figures")
    args = p.parse_args(argv)
    if not 1 <= args.pairs <= 20000 or not 1 <= args.rounds <= 20:
        print("error: --pairs must be in 1..20000 and --rounds in 1..20", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: bench_veth creates network devices: run as root", file=sys.stderr)
        return 2
    try:
        with testbed_lock(args.lock_wait_s):
            times = run(args.pairs, args.rounds,
                        echo=(lambda m: print(m, file=sys.stderr)) if args.json else print)
    except Exception as exc:  # noqa: BLE001 -- one line, never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    med = {m: statistics.median(v) for m, v in times.items()}
    anchor = med["ip -batch"]
    if args.json:
        print(json.dumps({"pairs": args.pairs, "rounds": args.rounds,
                          "seconds": times, "median_s": med}))
    else:
        for m, v in med.items():
            print(f"{m:10s} median {v:.2f} s for {args.pairs} veth pairs "
                  f"({v / anchor:.2f}x ip -batch, the anchor)")
        print(f"faster: {min(med, key=med.get)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
