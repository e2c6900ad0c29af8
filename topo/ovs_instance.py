"""One Open vSwitch instance (ovsdb-server + ovs-vswitchd), the system one or a private one.

Everything that talks to OVS goes through an :class:`OvsInstance`: its ``env`` points the
OVS tools (``ovs-vsctl``, ``ovs-ofctl``, ``ovs-appctl``) at the instance's run directory,
where its database socket, pid files, control sockets and bridges' ``.mgmt`` sockets live,
and :meth:`OvsInstance.transact` writes to its database directly (OVSDB JSON-RPC, RFC 7047,
over its unix socket): one transaction of any size, without
``ovs-vsctl``, whose client re-scans its cache for every command of a transaction and so
grows quadratically in the commands (minutes for a 72x22 build).

``SYSTEM`` is the machine's instance (``/var/run/openvswitch``, started by ``ovs-ctl``).
:meth:`OvsInstance.private` makes one under a directory of its own; :meth:`start` runs its
ovsdb-server and ovs-vswitchd as child processes (optionally in a network namespace) and
:meth:`stop` ends exactly those PIDs and removes the directory.  Several private instances
may run at once; a veth between bridges of two instances is an ordinary kernel veth.
With the kernel datapath all instances would share the kernel's datapaths: private
instances are for the userspace datapath (``datapath_type=netdev``).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

SYSTEM_RUNDIR = "/var/run/openvswitch"
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


class OVSError(RuntimeError):
    """Open vSwitch is missing, cannot be started, or refused a request."""


@dataclass(eq=False)
class OvsInstance:
    """An OVS instance.  ``rundir``: where its db socket (``db.sock``), pid files and control
    sockets live; ``private``: started and stopped by this object (its ``rundir`` is also
    its database and log directory); ``netns``: path of the network namespace its
    ovs-vswitchd runs in (None: the caller's); ``name``: for messages."""

    rundir: str = SYSTEM_RUNDIR
    private: bool = False
    netns: str | None = None
    name: str = "system"
    pids: dict = field(default_factory=dict)  # process name -> PID (private; kept after stop)
    _procs: list = field(default_factory=list, repr=False)

    @classmethod
    def private_instance(cls, name: str, parent: str | None = None,
                         netns: str | None = None) -> "OvsInstance":
        """A private instance in a new directory under ``parent`` (default: the system's
        temporary directory); nothing runs until :meth:`start`.  Unix socket paths are
        limited to 107 bytes: keep ``parent`` short."""
        rundir = tempfile.mkdtemp(prefix=f"ovs-{name}-", dir=parent)
        return cls(rundir=rundir, private=True, netns=netns, name=name)

    @property
    def db_sock(self) -> str:
        """Path of the database's unix socket."""
        return os.path.join(self.rundir, "db.sock")

    @property
    def db_target(self) -> str:
        """``unix:<db.sock>``: what ovs-vsctl's ``--db`` and ovs-vswitchd take."""
        return f"unix:{self.db_sock}"

    @property
    def env(self) -> dict:
        """Environment for an OVS tool to address this instance (the system's: unchanged)."""
        env = dict(os.environ)
        if self.private:
            for var in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"):
                env[var] = self.rundir
        return env

    def run(self, args: list[str], timeout_s: float = 10.0,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run an OVS tool (``args[0]``: ``ovs-vsctl``, ``ovs-ofctl``, ``ovs-appctl``...)
        against this instance; ``check``: raise OVSError with its last line on failure."""
        try:
            res = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s,
                                 env=self.env)
        except FileNotFoundError as exc:
            raise OVSError(f"{args[0]} not found: install openvswitch-switch (setup.sh)") from exc
        except subprocess.TimeoutExpired as exc:
            raise OVSError(f"{' '.join(args[:3])} ({self.name} OVS) did not answer within "
                           f"{timeout_s:.0f} s") from exc
        if check and res.returncode != 0:
            last = ((res.stderr or res.stdout).strip().splitlines() or ["no message"])[-1]
            raise OVSError(f"{args[0]} ({self.name} OVS) failed: {last}")
        return res

    def vsctl(self, *args: str, timeout_s: float = 120.0) -> str:
        """One ``ovs-vsctl`` transaction (``args`` already split, ``--`` separated)."""
        return self.run(["ovs-vsctl", f"--timeout={int(timeout_s)}", *args],
                        timeout_s=timeout_s + 5, check=True).stdout

    def bridges(self) -> list[str]:
        """Names of this instance's bridges."""
        return self.vsctl("list-br", timeout_s=10).split()

    def running(self) -> bool:
        """True when its ovsdb-server and ovs-vswitchd both answer."""
        try:
            db = self.run(["ovs-vsctl", "--timeout=2", "show"], timeout_s=4)
            sw = self.run(["ovs-appctl", "--timeout=2", "-t", "ovs-vswitchd", "version"],
                          timeout_s=4)
        except OVSError:
            return False
        return db.returncode == 0 and sw.returncode == 0

    def transact(self, ops: list[dict], timeout_s: float = 600.0) -> list:
        """One OVSDB transaction on database ``Open_vSwitch`` (``ops``: RFC 7047 operations,
        e.g. ``{"op": "insert", ...}``); returns the per-operation results.  Raises
        OVSError with the server's message when the transaction or any operation fails,
        or when no answer comes within ``timeout_s``."""
        req = {"method": "transact", "params": ["Open_vSwitch", *ops], "id": 0}
        deadline = time.monotonic() + timeout_s
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.settimeout(timeout_s)
                sock.connect(self.db_sock)
                sock.sendall(json.dumps(req).encode())
                reply = self._reply(sock, deadline)
            except (OSError, ValueError) as exc:
                raise OVSError(f"OVSDB transaction ({self.name} OVS, {self.db_sock}) "
                               f"failed: {exc}") from exc
        if reply.get("error"):
            raise OVSError(f"OVSDB transaction ({self.name}) failed: {reply['error']}")
        results = reply.get("result") or []
        for r in results:
            if isinstance(r, dict) and "error" in r:
                raise OVSError(f"OVSDB transaction ({self.name}) failed: {r['error']}: "
                               f"{r.get('details', '')}".rstrip(": "))
        return results

    @staticmethod
    def _reply(sock: socket.socket, deadline: float) -> dict:
        """Read JSON-RPC messages until the reply to request id 0 (answering the
        server's echo probes meanwhile); bounded by ``deadline``."""
        buf, dec = "", json.JSONDecoder()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError("no answer in time")
            sock.settimeout(left)
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise OSError("the database closed the connection")
            buf += chunk.decode()
            while buf and buf.rstrip().endswith("}"):  # maybe whole messages: parse them
                try:
                    msg, end = dec.raw_decode(buf.lstrip())
                except ValueError:
                    break
                buf = buf.lstrip()[end:]
                if msg.get("method") == "echo":
                    sock.sendall(json.dumps({"id": msg.get("id"), "result": msg.get("params"),
                                             "error": None}).encode())
                elif msg.get("id") == 0:
                    return msg

    def wait_applied(self, cfg: int, timeout_s: float = 600.0) -> None:
        """Wait until ovs-vswitchd has applied database configuration ``cfg`` (its
        ``cur_cfg`` reached it), as ``ovs-vsctl`` waits after a transaction."""
        deadline = time.monotonic() + timeout_s
        while True:
            out = self.run(["ovs-vsctl", "--timeout=10", "get", "Open_vSwitch", ".",
                            "cur_cfg"], timeout_s=15)
            if out.returncode == 0 and int(out.stdout.strip() or -1) >= cfg:
                return
            if time.monotonic() > deadline:
                raise OVSError(f"{self.name} ovs-vswitchd did not apply configuration {cfg} "
                               f"within {timeout_s:.0f} s")
            time.sleep(0.05)

    # ---- private instances: started and stopped by PID -------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        """Create the database and start ovsdb-server, then ovs-vswitchd (in ``netns`` if
        set) as this process's children; bounded by ``timeout_s``."""
        if not self.private:
            raise OVSError("the system OVS instance is started by ovs-ctl, not here")
        db = os.path.join(self.rundir, "conf.db")
        self.run(["ovsdb-tool", "create", db, SCHEMA], timeout_s=timeout_s, check=True)
        self._spawn("ovsdb-server", [
            "ovsdb-server", db, f"--remote=punix:{self.db_sock}",
            f"--pidfile={self.rundir}/ovsdb-server.pid",
            "-vconsole:off", "-vsyslog:off",
            f"--log-file={self.rundir}/ovsdb-server.log"], None)
        self._wait(lambda: os.path.exists(self.db_sock), "ovsdb-server", timeout_s)
        self.vsctl("--no-wait", "init", timeout_s=timeout_s)
        self._spawn("ovs-vswitchd", [
            "ovs-vswitchd", self.db_target, "--enable-dummy",
            f"--pidfile={self.rundir}/ovs-vswitchd.pid",
            "-vconsole:off", "-vsyslog:off",
            f"--log-file={self.rundir}/ovs-vswitchd.log"], self.netns)
        self._wait(self.running, "ovs-vswitchd", timeout_s)

    def _spawn(self, name: str, args: list[str], netns: str | None) -> None:
        def enter():
            if netns:
                from topo.netns import enter as enter_ns
                enter_ns(netns)
        try:
            p = subprocess.Popen(args, env=self.env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 preexec_fn=enter if netns else None)
        except (OSError, subprocess.SubprocessError) as exc:
            raise OVSError(f"cannot start {name} ({self.name} OVS): {exc}") from exc
        self._procs.append(p)
        self.pids[name] = p.pid

    def _wait(self, ready, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [n for n, p in zip(self.pids, self._procs) if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                why = f"{dead[0]} exited" if dead else f"not ready within {timeout_s:.0f} s"
                raise OVSError(f"private OVS {self.name}: {what} {why}")
            time.sleep(0.02)

    def save_logs(self, dest_dir: str) -> list[str]:
        """Copy a private instance's logs (they go with its directory at :meth:`stop`) to
        ``dest_dir`` as ``ovs-NAME-FILE.log``; the paths written."""
        if not self.private:
            return []
        out = []
        for path in sorted(glob.glob(os.path.join(self.rundir, "*.log"))):
            dest = os.path.join(dest_dir, f"ovs-{self.name}-{os.path.basename(path)}")
            try:
                shutil.copyfile(path, dest)
            except OSError:
                continue
            out.append(dest)
        return out

    def stop(self, timeout_s: float = 30.0) -> None:
        """End this instance's ovs-vswitchd, then its ovsdb-server (by PID: SIGTERM, then
        SIGKILL after ``timeout_s``), and remove its directory.  Idempotent."""
        if not self.private:
            return
        for p in reversed(self._procs):  # vswitchd first: it deletes its ports on exit
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self._procs.clear()
        shutil.rmtree(self.rundir, ignore_errors=True)


SYSTEM = OvsInstance()
