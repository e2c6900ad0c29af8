"""Several satellites in one process, each in its own network namespace (one per plane).

    python3 -m node_app.multi --addr-map addrs.json --key-file K --run-dir D
        --node SAT,ORB[@NETNS] ... [--gateway 'S,O;S,O'] [every option of node_app.daemon]

Each ``--node`` gets a thread that first enters ``NETNS`` (a namespace file such as
``/proc/PID/ns/net``, the satellite's Mininet host) and then runs its own asyncio loop
with the same :class:`node_app.daemon.Node` a one-satellite daemon runs.  Every socket
the node opens -- its listener and its outbound connections -- is created by that
thread (or by the executor threads it starts, which inherit its namespace), so it lives
in the satellite's namespace and its traffic crosses the emulated links exactly as a
daemon started inside the host would.  One process serves a whole plane for a fraction
of the memory of a process per satellite.

Once a node listens it writes ``D/ready/SAT-ORB`` (``PID NETNS_INODE``).  SIGTERM or
SIGINT stops every node and exits 0; the process also exits when ``--parent`` is gone.
Bad arguments: one line on stderr, exit 2.
"""

from __future__ import annotations

import sys

if "ssl" not in sys.modules:  # as node_app.daemon: plain TCP, no TLS module (RSS)
    sys.modules["ssl"] = None

import asyncio  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from topo import netns  # noqa: E402
from node_app.addressing import parse_sat_key  # noqa: E402
from node_app.daemon import (Node, TaskThreads, add_node_options, drop_to,  # noqa: E402
                             make_node, node_settings)
from topo import cli  # noqa: E402
from topo.spec import SpecError  # noqa: E402

PR_SET_PDEATHSIG = 1


@dataclass
class Member:
    """One satellite served here: ``netns`` its namespace file (None: this process's)."""

    node: Node
    netns: str | None
    ready_file: str
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    error: BaseException | None = None


def parse_node(text: str):
    """``SAT,ORB`` or ``SAT,ORB@/proc/PID/ns/net`` -> ((sat, orb), netns or None)."""
    key, _, path = text.partition("@")
    return parse_sat_key(key), (path or None)


def _serve_one(m: Member, started: threading.Event) -> None:
    """Thread body: enter the namespace, then run the node's loop until told to stop."""
    try:
        if m.netns:
            netns.enter(m.netns)
        asyncio.run(_node_main(m, started))
    except BaseException as e:  # reported by the main thread; never a silent thread death
        m.error = e
        started.set()


async def _node_main(m: Member, started: threading.Event) -> None:
    m.loop = asyncio.get_running_loop()
    # Task threads start from this thread, so they inherit its namespace.
    m.node.threads, m.node.threads_shared = TaskThreads(), 1
    m.loop.set_default_executor(m.node.threads)
    m.stop = asyncio.Event()
    await m.node.start()
    tmp = m.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()} {netns.current_inode()}\n")
    os.replace(tmp, m.ready_file)
    started.set()
    await m.stop.wait()
    await m.node.stop()


def serve(members: list[Member], parent: int | None = None, user: str | None = None) -> int:
    """Run every member in its own thread until SIGTERM/SIGINT or the parent is gone;
    returns 1 when a node failed to start, else 0.  user: once every member listens (and
    every thread has entered its namespace), the process continues as this user when
    feasible (node_app.daemon.drop_to)."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    threads = []
    for m in members:
        started = threading.Event()
        t = threading.Thread(target=_serve_one, args=(m, started), name=f"sat-{m.node.sat}",
                             daemon=True)
        t.start()
        started.wait()
        threads.append(t)
        if m.error is not None:
            print(f"error: node {m.node.sat[0]},{m.node.sat[1]}: {m.error}", file=sys.stderr)
            done.set()
    if user and not done.is_set():
        drop_to([m.node for m in members], user)
    while not done.wait(1.0):
        if parent is not None and os.getppid() != parent:
            break
    for m in members:
        if m.loop is not None and m.stop is not None and not m.loop.is_closed():
            try:
                m.loop.call_soon_threadsafe(m.stop.set)
            except RuntimeError:  # loop already closed
                pass
    for t in threads:
        t.join(5)
    return 1 if any(m.error for m in members) else 0


def main(argv=None) -> int:
    p = cli.parser("python3 -m node_app.multi",
                   "several satellites' node daemons in one process")
    p.add_argument("--node", action="append", required=True,
                   help="SAT,ORB or SAT,ORB@NETNS_FILE (repeat per satellite)")
    add_node_options(p)
    p.add_argument("--run-dir", required=True, help="ready/ goes here (and work/ by default)")
    p.add_argument("--work-root", help="the satellites' scratch directories go here "
                                       "(default RUN_DIR/work)")
    p.add_argument("--gateway", default="", help="line-of-sight satellites, 'S,O;S,O'")
    p.add_argument("--parent", type=int, help="exit when this process is gone")
    a = p.parse_args(argv)
    try:
        addr_map, settings = node_settings(a)
        gateways = {parse_sat_key(g) for g in a.gateway.split(";") if g}
        nodes = [parse_node(n) for n in a.node]
        for _sat, path in nodes:
            if path is not None and not os.path.exists(path):
                raise ValueError(f"network namespace {path} does not exist")
        os.makedirs(os.path.join(a.run_dir, "ready"), exist_ok=True)
        work_root = a.work_root or os.path.join(a.run_dir, "work")
        members = [Member(make_node(sat, addr_map, settings, a,
                                    work_dir=os.path.join(work_root, f"{sat[0]}-{sat[1]}"),
                                    gateway=sat in gateways),
                          path, os.path.join(a.run_dir, "ready", f"{sat[0]}-{sat[1]}"))
                   for sat, path in nodes]
    except (SpecError, ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        import ctypes
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    code = serve(members, a.parent, a.user)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # task threads still blocked in user code must not hold the exit


if __name__ == "__main__":
    sys.exit(cli.run(main))
