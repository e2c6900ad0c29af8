"""Run the node application inside the Mininet emulator (topo.testbed.Testbed).

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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


class EmulatedNodes:
    """The node daemons of one testbed (started by :meth:`start`, stopped by PID)."""

    def __init__(self, testbed, run_dir: str, port: int = DEFAULT_PORT,
                 gateways=None, log: bool = True, user: str | None = "nobody"):
        """user: the daemons drop root to this user once listening (None: keep root)."""
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
        self.procs: dict = {}
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
        work_root = self.work_root or os.path.join(self.run_dir, "work")
        from view.live import attach
        self.view = attach(self.tb, self.run_dir, self.log_dir)
        t0 = time.time()
        for sat in self.addr_map.nodes:
            cmd = [PYTHON, "-m", "node_app.daemon", "--node", sat_key(sat),
                   "--addr-map", self.map_path, "--key-file", self.key_file, "--spec", self.tb.spec_path,
                   "--work-dir", os.path.join(work_root, f"{sat[0]}-{sat[1]}"),
                   "--ready-file", os.path.join(self.run_dir, "ready", f"{sat[0]}-{sat[1]}")]
            if self.user:
                cmd += ["--user", self.user]
            if self.log_dir:
                cmd += ["--log-dir", self.log_dir]
            if sat in self.gateways:
                cmd.append("--gateway")
            if self.tb.ground_segment is not None:  # placed stations: hold for contact
                cmd += ["--ground-state", self.tb.ground_state_path]
            self.procs[sat] = self.tb.host_of(sat).popen(
                cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(self.run_dir, f"daemon-{sat[0]}-{sat[1]}.err"), "w"))
        ready = os.path.join(self.run_dir, "ready")
        while len(os.listdir(ready)) < len(self.procs):
            dead = [s for s, p in self.procs.items() if p.poll() is not None]
            if dead or time.time() - t0 > timeout_s:
                self.stop()
                raise RuntimeError(f"node daemons failed to start (exited: {dead[:5]})")
            time.sleep(0.05)
        self.startup_s = time.time() - t0
        return self

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
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 5
        for p in self.procs.values():
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
