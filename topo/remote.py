"""Commands on another server of the run, over one SSH connection (Cluster Edition's model).

:class:`Remote` opens one OpenSSH master connection per server (``ssh -M -N``, started and
ended by its PID) and runs every command through it (``ssh -S``), so a command costs a
channel, not a handshake.  ``env`` is put in front of every command (a netns server's private
Open vSwitch is found through ``OVS_RUNDIR``).  Every wait is bounded; a server that does not
answer raises :class:`ServerLost` naming it, which fails the run (the testbed then tears
down what it made everywhere else).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time

from topo.errors import TestbedError
from topo.procs import kill


class ServerLost(TestbedError):
    """A server of the run stopped answering (or refused a command)."""


class Remote:
    """One server reached over SSH.

    name: how messages name it (``srv1``); dest: ``user@host``; ssh_options: extra ``ssh``
    options (identity, known-hosts file); workdir: local directory for the control socket;
    env: variables set for every remote command.
    """

    def __init__(self, name: str, dest: str, ssh_options: list[str], workdir: str,
                 env: dict | None = None):
        self.name, self.dest = name, dest
        self.control = os.path.join(workdir, f"ssh-{name}.sock")
        self.base = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
                     "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
                     "-o", "ServerAliveCountMax=3", *ssh_options]
        self.env = dict(env or {})
        self.master: subprocess.Popen | None = None

    def connect(self, timeout_s: float = 20.0) -> None:
        """Open the master connection (retrying while the server's sshd is not listening
        yet) and wait until a command goes through it."""
        deadline = time.monotonic() + timeout_s
        err = ["no message"]
        while time.monotonic() < deadline:
            if self.master is None or self.master.poll() is not None:
                if self.master is not None:
                    err = (self.master.stderr.read().decode(errors="replace").strip()
                           .splitlines() or ["no message"])
                    if "refused" not in err[-1]:
                        break
                    time.sleep(0.1)
                self.master = subprocess.Popen(
                    [*self.base, "-M", "-N", "-S", self.control, self.dest],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    start_new_session=True)
            elif os.path.exists(self.control):
                if self.run("true", timeout_s=10, check=False).returncode == 0:
                    return
            time.sleep(0.05)
        kill(self.master)
        raise ServerLost(f"server {self.name} ({self.dest}): no SSH connection within "
                         f"{timeout_s:.0f} s: {err[-1]}")

    def argv(self, command: str, tty: bool = False) -> list[str]:
        """Local argv running shell ``command`` on the server (through the master)."""
        prefix = "".join(f"export {k}={shlex.quote(v)}; " for k, v in self.env.items())
        return [*self.base, "-S", self.control, *(["-tt"] if tty else ["-T"]), self.dest,
                prefix + command]

    def run(self, command: str, input: str | None = None, timeout_s: float = 60.0,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run shell ``command`` on the server; ServerLost (one line) when it fails."""
        try:
            res = subprocess.run(self.argv(command), input=input, capture_output=True,
                                 text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ServerLost(f"server {self.name} ({self.dest}): '{command[:60]}' did not "
                             f"finish within {timeout_s:.0f} s") from None
        if check and res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["no message"])[-1]
            what = "connection lost" if res.returncode == 255 else f"exit {res.returncode}"
            raise ServerLost(f"server {self.name} ({self.dest}): '{command[:60]}' failed "
                             f"({what}): {last}")
        return res

    def batch(self, tool: str, cmds: list[str], timeout_s: float = 120.0,
              netns_pid: int | None = None) -> None:
        """``tool -force -batch -`` (tool: ip or tc) on the server, commands on stdin;
        with ``netns_pid`` in that process's network namespace there."""
        if cmds:
            prefix = f"nsenter -t {int(netns_pid)} -n " if netns_pid else ""
            self.run(f"{prefix}{tool} -force -batch -", input="\n".join(cmds) + "\n",
                     timeout_s=timeout_s)

    def alive(self) -> bool:
        """True while the master connection stands and the server answers."""
        return (self.master is not None and self.master.poll() is None
                and self.run("true", timeout_s=10, check=False).returncode == 0)

    def close(self) -> None:
        """End the master connection (by its PID)."""
        kill(self.master)
        self.master = None
        try:
            os.unlink(self.control)
        except OSError:
            pass
