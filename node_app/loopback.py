"""A constellation of node daemons on the loopback: no Mininet, no root.

    python3 -m node_app.loopback --grid 3x3 --dir DIR [--spawn | --per-process K] [--port N]

starts the daemons of every satellite, each on its own address (``127.0.<orb>.<sat>``,
one port for all; by default one process per plane), writes ``DIR/addrs.json`` (the address map), ``DIR/testbed.key`` (a new
testbed key, mode 0600, unless ``--key-file`` names one), reads the run's constellation spec from
``--spec`` (default: the default constellation on ``--grid``, written to ``DIR/spec.json``) and, once every daemon
listens, ``DIR/ready.json`` (``{"pids": {"SAT,ORB": pid}, "startup_s", "addr_map"}``),
then waits; SIGTERM stops every daemon (by PID) and exits.

Processes: by default the launcher forks each daemon from itself after importing the node
code once (start-up in well under a second for 121 nodes); ``--spawn`` starts each as
``python3 -m node_app.daemon ...`` (one process per satellite).  Forked processes serve
``--per-process K`` satellites each (default: a plane's worth, as in the emulator; 1: a
process per satellite, what fault tests that stop one satellite need), every satellite
still on its own address with the same :class:`node_app.daemon.Node`, in one event loop.  Forked daemons poll their parent and exit when the
launcher is gone; spawned ones get PR_SET_PDEATHSIG.

:class:`LoopbackConstellation` drives the launcher from Python (tests, the CLI's
``--loopback``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

from node_app import protocol as P
from node_app.addressing import AddressMap, sat_key
from topo.spec import SPEC_FILE, ConstellationSpec, parse_grid, write_json_atomic
from node_app.auth import KEY_FILE_NAME, load_key, write_key
from topo import cli

PR_SET_PDEATHSIG = 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _die_with_parent() -> None:
    """Spawned daemons (pre-exec): the kernel signals them when the launcher dies."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _port_free(addr_map: AddressMap) -> bool:
    for host, port in addr_map.nodes.values():
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def pick_map(planes: int, sats: int, port: int = 0) -> AddressMap:
    """The loopback map on ``port``, or (port 0) on a random free port."""
    if port:
        return AddressMap.loopback_ips(planes, sats, port)
    rng = random.SystemRandom()
    for _ in range(50):
        m = AddressMap.loopback_ips(planes, sats, rng.randrange(20000, 60000))
        if _port_free(m):
            return m
    raise RuntimeError("no free loopback port found")


def _child(sats, addr_map, args) -> None:
    """In a forked child: become the daemons of ``sats``, each on its own address (it
    exits when the launcher is gone)."""
    parent = os.getppid()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from node_app.daemon import Node, serve_all
    nodes = [Node(sat, addr_map, os.path.join(args.dir, "work", f"{sat[0]}-{sat[1]}"),
                  args.log_dir, args.max_frame, gateway=sat in args.gateways, spec=args.spec,
                  max_roles=args.max_roles, key=args.key, **_limits(args))
             for sat in sats]
    ready = [os.path.join(args.dir, "ready", f"{sat[0]}-{sat[1]}") for sat in sats]
    try:
        asyncio.run(serve_all(nodes, ready, parent, getattr(args, "user", None)))
    finally:
        os._exit(0)


def _limits(args) -> dict:
    """The daemons' resource limits given on the command line (else their defaults)."""
    return {k: getattr(args, k) for k in ("max_buffered", "job_disk_quota")
            if getattr(args, k, None) is not None}


def launch(args) -> int:
    t0 = time.time()
    os.makedirs(os.path.join(args.dir, "ready"), exist_ok=True)
    if args.spec_path:
        args.spec = ConstellationSpec.load(args.spec_path)
    else:
        args.spec = ConstellationSpec.for_grid(*parse_grid(args.grid))
        args.spec_path = args.spec.save(os.path.join(args.dir, SPEC_FILE))
    addr_map = pick_map(*args.spec.grid, args.port)
    map_path = os.path.join(args.dir, "addrs.json")
    addr_map.save(map_path)
    key_file = args.key_file or os.path.join(args.dir, KEY_FILE_NAME)
    args.key = load_key(key_file) if args.key_file else write_key(key_file)
    pids: dict = {}
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not args.spawn:
        import node_app.daemon  # noqa: F401  (imported once, shared by every fork)
    sats = args.spec.constellation.satellites()  # plane by plane
    per_process = args.per_process or args.spec.grid[1]
    for sat in sats if args.spawn else []:
        ready = os.path.join(args.dir, "ready", f"{sat[0]}-{sat[1]}")
        if args.spawn:
            cmd = [sys.executable, "-m", "node_app.daemon", "--node", sat_key(sat),
                   "--addr-map", map_path, "--spec", args.spec_path, "--key-file", key_file,
                   "--work-dir",
                   os.path.join(args.dir, "work", f"{sat[0]}-{sat[1]}"),
                   "--max-frame", str(args.max_frame), "--ready-file", ready,
                   "--max-roles", str(args.max_roles)]
            if args.log_dir:
                cmd += ["--log-dir", args.log_dir]
            for k, v in _limits(args).items():
                cmd += [f"--{k.replace('_', '-')}", str(v)]
            if args.user:
                cmd += ["--user", args.user]
            if sat in args.gateways:
                cmd.append("--gateway")
            pids[sat] = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_die_with_parent).pid
    for k in range(0, 0 if args.spawn else len(sats), per_process):
        group = sats[k:k + per_process]
        pid = os.fork()
        if pid == 0:
            _child(group, addr_map, args)
        pids.update(dict.fromkeys(group, pid))
    deadline = time.time() + args.start_timeout
    while not stopping and len(os.listdir(os.path.join(args.dir, "ready"))) < len(sats):
        if time.time() > deadline:
            print("error: daemons did not all start", file=sys.stderr)
            stopping = True
            break
        time.sleep(0.01)
    if not stopping:
        info = {"pids": {sat_key(s): p for s, p in pids.items()}, "launcher": os.getpid(),
                "startup_s": time.time() - t0, "addr_map": map_path,
                "grid": args.spec.grid_text, "log_dir": args.log_dir, "spec": args.spec_path,
                "key_file": key_file}
        write_json_atomic(os.path.join(args.dir, "ready.json"), info)
    while not stopping:
        time.sleep(0.2)
    processes = set(pids.values())
    for pid in processes:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.time() + 5
    for pid in processes:
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.time() > end:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
    return 0


class LoopbackConstellation:
    """Start/stop a loopback constellation from Python (a context manager).

    ``pids`` maps each satellite to its daemon's PID; ``addr_map`` is the address map;
    ``key`` the testbed key (``key_file`` its file, in ``directory``).
    per_process: satellites per forked process (default None: one process per plane, as
        in the emulator; 1: a process per satellite); they share one event loop, each still
        on its own address.
    max_buffered, job_disk_quota: the daemons' limits (node_app.daemon; None: defaults).
    user: started as root, the daemons continue as this user once listening, where it can
        reach ``directory`` (node_app.privileges; None: keep the caller's user).
    """

    def __init__(self, planes: int, sats: int, directory: str, spawn: bool = False,
                 log: bool = True, max_frame: int = P.DEFAULT_MAX_FRAME,
                 gateways=((1, 1),), port: int = 0, per_process: int | None = None,
                 spec: ConstellationSpec | None = None, max_roles: int | None = None,
                 max_buffered: int | None = None, job_disk_quota: int | None = None,
                 user: str | None = None):
        self.user = user
        self.spec = spec or ConstellationSpec.for_grid(planes, sats)
        if self.spec.grid != (planes, sats):
            raise ValueError(f"spec grid {self.spec.grid_text} differs from {planes}x{sats}")
        self.grid = (planes, sats)
        self.per_process = per_process or sats
        self.max_roles = max_roles
        self.dir = directory
        self.spawn, self.log, self.max_frame = spawn, log, max_frame
        self.gateways, self.port = list(gateways), port
        self.limits = {"max_buffered": max_buffered, "job_disk_quota": job_disk_quota}
        self.proc: subprocess.Popen | None = None
        self.pids: dict = {}
        self.addr_map: AddressMap | None = None
        self.startup_s = None
        self.log_dir = os.path.join(directory, "logs") if log else None
        self.key_file = os.path.join(directory, KEY_FILE_NAME)
        self.key: bytes | None = None

    def start(self, timeout: float = 60.0) -> "LoopbackConstellation":
        os.makedirs(self.dir, exist_ok=True)
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
        spec_path = self.spec.save(os.path.join(self.dir, SPEC_FILE))
        self.key = write_key(self.key_file)
        cmd = [sys.executable, "-m", "node_app.loopback", "--spec", spec_path,
               "--dir", self.dir, "--port", str(self.port), "--key-file", self.key_file,
               "--max-frame", str(self.max_frame), "--start-timeout", str(timeout)]
        cmd += ["--gateway", ";".join(sat_key(g) for g in self.gateways)]
        if self.spawn:
            cmd.append("--spawn")
        cmd += ["--per-process", str(self.per_process)]
        if self.user:
            cmd += ["--user", self.user]
        if self.max_roles:
            cmd += ["--max-roles", str(self.max_roles)]
        for k, v in self.limits.items():
            if v is not None:
                cmd += [f"--{k.replace('_', '-')}", str(v)]
        if self.log_dir:
            cmd += ["--log-dir", self.log_dir]
        t0 = time.time()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
        ready = os.path.join(self.dir, "ready.json")
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.time() - t0 > timeout:
                self.stop()
                raise RuntimeError("loopback constellation failed to start")
            time.sleep(0.02)
        with open(ready) as f:
            info = json.load(f)
        self.startup_s = time.time() - t0
        self.pids = {tuple(int(x) for x in k.split(",")): p for k, p in info["pids"].items()}
        self.addr_map = AddressMap.load(info["addr_map"])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in set(self.pids.values()):  # belt and braces: only our own daemons, by PID
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m node_app.loopback")
    p.add_argument("--grid", default="3x3")
    p.add_argument("--spec", dest="spec_path", help="the run's spec.json (instead of --grid)")
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, default=0, help="0: a random free port")
    p.add_argument("--spawn", action="store_true", help="one python3 -m node_app.daemon each")
    p.add_argument("--per-process", type=int, default=0,
                   help="satellites per forked process, each on its own address "
                        "(default 0: a plane's worth)")
    p.add_argument("--log-dir")
    p.add_argument("--key-file", help="the testbed key (default: a new DIR/testbed.key)")
    p.add_argument("--user", help="as root: the daemons continue as this user once listening")
    p.add_argument("--max-buffered", type=int, help="per daemon (node_app.daemon's default)")
    p.add_argument("--job-disk-quota", type=int, help="per job and daemon (node_app.daemon's default)")
    p.add_argument("--max-frame", type=int, default=P.DEFAULT_MAX_FRAME)
    p.add_argument("--gateway", default="1,1", help="line-of-sight satellites, 'S,O;S,O'")
    p.add_argument("--start-timeout", type=float, default=60.0)
    p.add_argument("--tasks-module", action="append", default=[], metavar="MODULE",
                   help="every daemon imports MODULE (pkg.mod or a .py file) for its own tasks")
    p.add_argument("--max-roles", type=int, default=None,
                   help="concurrent roles per satellite before it refuses more (daemon default)")
    a = p.parse_args(argv)
    a.gateways = [tuple(int(x) for x in g.split(",")) for g in a.gateway.split(";") if g]
    if a.max_roles is None:
        from node_app.daemon import MAX_ROLES
        a.max_roles = MAX_ROLES
    from node_app import tasks as user_tasks
    try:  # forked daemons inherit the registry; spawned ones the environment
        user_tasks.load_from_env()
        user_tasks.use_modules(a.tasks_module)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return launch(a)


if __name__ == "__main__":
    sys.exit(cli.run(main))
