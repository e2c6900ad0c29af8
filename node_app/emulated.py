"""Run the node application inside the Mininet emulator (topo.testbed.Testbed).

By default one daemon process per plane (``python3 -m node_app.multi``): each of the
plane's satellites gets a thread that enters its host's network namespace before it
opens a socket, so every satellite still listens on its own host's address inside that
host and every byte crosses the emulated ISLs, for a fraction of the memory of a process
per satellite; ``per_process=1`` starts one ``python3 -m node_app.daemon`` inside each
satellite host instead (``per_process=K``: K satellites a process).

One ``python3 -m node_app.daemon`` per satellite host, started in that host's network
namespace, listening on the host's own address (``10.<orb>.<sat>.1:4700``, the
emulator's plan); the ground CLI runs on a ground-station host and submits to the
coordinator on its line-of-sight satellite, so every byte crosses the emulated ISLs.

    with Testbed(cfg) as tb, EmulatedNodes(tb, run_dir) as nodes:
        out = nodes.run_job(["-mi", "1", "-ma", "3", "-c", "4", "-s", "1"])

Hosts share the file system, so the address map, the testbed key (``testbed.key``, mode
0600, new for every start), the node logs and the results are plain files under
``run_dir``.  Started as root, the daemons continue as ``nobody`` once listening
(``--user``; node_app.privileges): their scratch directories are then under a new
``/tmp/spacecomp-work-*`` (removed at stop), which that user can reach wherever
``run_dir`` is.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from node_app.addressing import DEFAULT_PORT, AddressMap, sat_key
from node_app.auth import KEY_FILE_NAME, write_key
from node_app.memory import memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


class EmulatedNodes:
    """The node daemons of one testbed (started by :meth:`start`, stopped by PID)."""

    def __init__(self, testbed, run_dir: str, port: int = DEFAULT_PORT,
                 gateways=None, log: bool = True, user: str | None = "nobody",
                 per_process: int | None = None, tasks_modules=()):
        """user: the daemons drop root to this user once listening (None: keep root).
        per_process: satellites per daemon process; None (default) a process per plane;
        1 a ``node_app.daemon`` started inside each satellite host.
        tasks_modules: user task modules (``pkg.mod`` or ``.py`` paths) every daemon and
        the job CLI import (``--tasks-module``)."""
        self.tasks_modules = [os.path.abspath(m) if m.endswith(".py") else m
                              for m in tasks_modules]
        self.tb = testbed
        self.user = user if os.geteuid() == 0 else None
        self.work_root: str | None = None
        self.run_dir = os.path.abspath(run_dir)
        c = testbed.c
        self.addr_map = AddressMap.emulated(c.planes, c.sats_per_plane, port)
        self.map_path = os.path.join(self.run_dir, "addrs.json")
        self.key_file = os.path.join(self.run_dir, KEY_FILE_NAME)
        self.key: bytes | None = None
        self.log_dir = os.path.join(self.run_dir, "logs") if log else None
        self.gateways = set(gateways or [tuple(g) for g in testbed.cfg.ground])
        self.per_process = per_process or c.sats_per_plane
        if self.per_process < 1:
            raise ValueError("per_process: at least one satellite a process")
        self.procs: dict = {}          # satellite -> its daemon's Popen (shared in a group)
        self.startup_s = None
        self.view = None  # the run's view (recording; served with --view), see view.live

    def start(self, timeout_s: float = 60.0) -> "EmulatedNodes":
        os.makedirs(os.path.join(self.run_dir, "ready"), exist_ok=True)
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
        self.addr_map.save(self.map_path)
        self.key = write_key(self.key_file)
        if self.user:  # scratch the unprivileged daemons can reach (run_dir's parents may not)
            self.work_root = tempfile.mkdtemp(prefix="spacecomp-work-")
            os.chmod(self.work_root, 0o711)
        from view.live import attach
        self.view = attach(self.tb, self.run_dir, self.log_dir)
        t0 = time.time()
        if self.per_process == 1:
            self._start_in_hosts()
        else:
            self._start_groups()
        ready = os.path.join(self.run_dir, "ready")
        while len([f for f in os.listdir(ready) if not f.endswith(".tmp")]) < len(self.procs):
            dead = sorted({s for s, p in self.procs.items() if p.poll() is not None})
            if dead or time.time() - t0 > timeout_s:
                self.stop()
                raise RuntimeError(f"node daemons failed to start (exited: {dead[:5]}; see "
                                   f"{self.run_dir}/daemon-*.err)")
            time.sleep(0.05)
        self.startup_s = time.time() - t0
        return self

    def _common_args(self) -> list[str]:
        args = ["--addr-map", self.map_path, "--key-file", self.key_file,
                "--spec", self.tb.spec_path]
        args += ["--user", self.user] if self.user else []
        for m in self.tasks_modules:
            args += ["--tasks-module", m]
        if self.tb.ground_segment is not None:  # placed stations: hold for contact
            args += ["--ground-state", self.tb.ground_state_path]
        return args + (["--log-dir", self.log_dir] if self.log_dir else [])

    def _start_in_hosts(self) -> None:
        """One ``node_app.daemon`` per satellite, started by the satellite's host shell."""
        for sat in self.addr_map.nodes:
            self._start_in_host(sat)

    def _start_in_host(self, sat) -> None:
        work_root = self.work_root or os.path.join(self.run_dir, "work")
        cmd = [PYTHON, "-m", "node_app.daemon", "--node", sat_key(sat), *self._common_args(),
               "--work-dir", os.path.join(work_root, f"{sat[0]}-{sat[1]}"),
               "--ready-file", self._ready_file(sat)]
        if sat in self.gateways:
            cmd.append("--gateway")
        with open(os.path.join(self.run_dir, f"daemon-{sat[0]}-{sat[1]}.err"), "a") as err:
            self.procs[sat] = self.tb.host_of(sat).popen(
                cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    def _ready_file(self, sat) -> str:
        return os.path.join(self.run_dir, "ready", f"{sat[0]}-{sat[1]}")

    def restart(self, sat, timeout_s: float = 30.0) -> int:
        """Start a fresh daemon for satellite ``sat`` whose daemon was killed (one daemon
        per satellite only: ``per_process=1``); waits until it listens.  Its new PID."""
        if self.per_process != 1:
            raise ValueError("restart: only with a daemon per satellite (per_process=1)")
        old = self.procs.get(sat)
        if old is not None and old.poll() is None:
            raise ValueError(f"restart: the daemon of {list(sat)} is still running")
        if old is not None:
            old.wait()
        ready = self._ready_file(sat)
        if os.path.exists(ready):
            os.remove(ready)
        self._start_in_host(sat)
        deadline = time.time() + timeout_s
        while not os.path.exists(ready):
            if self.procs[sat].poll() is not None or time.time() > deadline:
                raise RuntimeError(f"daemon of {list(sat)} did not restart (see "
                                   f"{self.run_dir}/daemon-{sat[0]}-{sat[1]}.err)")
            time.sleep(0.02)
        return self.procs[sat].pid

    def _start_groups(self) -> None:
        """``node_app.multi`` processes of ``per_process`` satellites each (plane by
        plane), every satellite's thread in its host's network namespace."""
        sats = self.tb.c.satellites()  # plane by plane
        gw = ";".join(sat_key(g) for g in sorted(self.gateways))
        for k in range(0, len(sats), self.per_process):
            group = sats[k:k + self.per_process]
            cmd = [PYTHON, "-m", "node_app.multi", *self._common_args(),
                   "--run-dir", self.run_dir, "--gateway", gw, "--parent", str(os.getpid())]
            if self.work_root:
                cmd += ["--work-root", self.work_root]
            for sat in group:
                cmd += ["--node", f"{sat_key(sat)}@/proc/{self.tb.host_of(sat).pid}/ns/net"]
            err = open(os.path.join(self.run_dir, f"daemon-{group[0][0]}-{group[0][1]}.err"), "w")
            proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err)
            err.close()
            self.procs.update(dict.fromkeys(group, proc))

    def pids(self) -> set[int]:
        """PIDs of the daemon processes."""
        return {p.pid for p in self.procs.values()}

    def memory(self) -> dict:
        """RSS/PSS summed over the daemon processes (MB) and the number of processes."""
        return memory(self.pids())

    def run_job(self, args: list[str], ground: int = 1, timeout_s: float = 300.0,
                show_progress: bool = False) -> dict:
        """Run ``python3 -m node_app.job ARGS --json`` on ground station ``ground``
        (1-based); returns its one-line JSON (the metrics with the result).

        show_progress: let the CLI's progress lines through to our stderr."""
        host = self.tb.ground_hosts[ground - 1]
        c = self.tb.c
        if self.tb.ground_segment is not None:  # a placed station: its gateway at submission
            where = ["--ground-state", self.tb.ground_state_path, "--station", str(ground)]
        else:
            los = self.tb.cfg.ground[ground - 1]
            where = ["--los", f"{los[0]},{los[1]}"]
        cmd = [PYTHON, "-m", "node_app.job", "--grid", f"{c.planes}x{c.sats_per_plane}",
               "--addr-map", self.map_path, "--key-file", self.key_file, "--spec", self.tb.spec_path,
               *where,
               "--results", os.path.join(self.run_dir, "results"), "--json", *args]
        for m in self.tasks_modules:
            cmd += ["--tasks-module", m]
        if self.log_dir:
            cmd += ["--log-dir", self.log_dir]
        proc = host.popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=None if show_progress else subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        text = out.decode() if isinstance(out, bytes) else out
        if proc.returncode != 0:
            raise RuntimeError(f"job failed (exit {proc.returncode}): "
                               f"{(err.decode() if isinstance(err, bytes) else err or '')[-500:]}")
        return json.loads(text.strip().splitlines()[-1])

    def stop(self) -> None:
        """Stop the daemons (by PID); write the run's replay, ``run_dir/view.html``."""
        procs = {p.pid: p for p in self.procs.values()}.values()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.work_root:
            shutil.rmtree(self.work_root, ignore_errors=True)
        if self.view is not None:
            self.view.close(replay_html=os.path.join(self.run_dir, "view.html"))
            self.tb.view = self.view = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
