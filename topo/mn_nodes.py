"""Mininet adapters: real ``mininet.node`` objects over what the builder creates in bulk.

:class:`SatHost` spawns its shell now and is waited for later (all hosts start in
parallel); its interfaces are created inside its namespace already, never moved.
:class:`SatSwitch` has no shell until something interactive needs one (the CLI): a shell
per switch costs a process each and buys nothing in the root namespace.
:func:`mininet_link` mirrors an existing veth pair as a ``mininet.link.Link``.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time

from mininet.link import Link
from mininet.node import Host, Node, OVSSwitch

from topo.errors import TestbedError


class SatHost(Host):
    """A Mininet host whose shell is spawned now and waited for later (in parallel)."""

    def shell_argv(self, opts: str | None = None) -> list[str]:
        """The command that becomes this host's shell (a new network namespace);
        ``opts``: mnexec's (default ``-cdn``: close fds, detach, new namespace)."""
        opts = opts or ("-cdn" if self.inNamespace else "-cd")
        return ["mnexec", opts, "env", "PS1=" + chr(127), "bash", "--norc", "--noediting",
                "-is", "mininet:" + self.name]

    def startShell(self, mnopts=None):
        cmd = self.shell_argv()
        self.master, self.slave = pty.openpty()
        self.shell = self._popen(cmd, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                 close_fds=False)
        self.stdin = os.fdopen(self.master, "r")
        self.stdout = self.stdin
        self.pid = self.shell.pid
        self.pollOut = select.poll()
        self.pollOut.register(self.stdout)
        self.outToNode[self.stdout.fileno()] = self
        self.inToNode[self.stdin.fileno()] = self
        self.execed = False
        self.lastCmd = None
        self.lastPid = None
        self.readbuf = ""
        self.waiting = True  # until finish_shell() has seen the prompt

    def finish_shell(self, timeout_s: float = 30.0):
        """Wait for the prompt, then switch off echo and job control."""
        deadline = time.monotonic() + timeout_s
        data = ""
        while not data.endswith(chr(127)):
            if time.monotonic() > deadline:
                raise TestbedError(f"host {self.name}: shell did not start in {timeout_s:.0f} s")
            if self.shell.poll() is not None:
                raise TestbedError(f"host {self.name}: its shell exited ({data.strip()[-80:]!r})")
            self.pollOut.poll(200)
            data += self.read(1024) if self.pollOut.poll(0) else ""
        self.waiting = False
        self.sendCmd("unset HISTFILE; stty -echo; set +m")

    def addIntf(self, intf, port=None, moveIntfFn=None):
        # Our veths are created inside the namespace already: never move them.
        return Node.addIntf(self, intf, port=port, moveIntfFn=lambda *a, **k: True)


class SatSwitch(OVSSwitch):
    """An OVSSwitch without a shell until one is needed (root namespace: subprocess will do)."""

    def startShell(self, mnopts=None):
        self.shell = None
        self.pid = None
        self.stdin = self.stdout = None
        self.execed = False
        self.lastCmd = None
        self.lastPid = None
        self.readbuf = ""
        self.waiting = False

    def cmd(self, *args, **kwargs):
        if self.shell is not None:
            return OVSSwitch.cmd(self, *args, **kwargs)
        line = " ".join(str(a) for a in args) if len(args) > 1 else str(args[0])
        res = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=60)
        return res.stdout + res.stderr

    def sendCmd(self, *args, **kwargs):
        if self.shell is None:  # interactive use (the CLI): start a real shell now
            Node.startShell(self)
        return OVSSwitch.sendCmd(self, *args, **kwargs)

    def popen(self, *args, **kwargs):
        cmd = args[0] if len(args) == 1 else list(args)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(cmd, shell=isinstance(cmd, str), **kwargs)

    def start(self, controllers):  # built by the Testbed in one transaction
        pass

    def stop(self, deleteIntfs=True):  # torn down by the Testbed
        self.terminate()

    def terminate(self):
        if self.shell is not None:
            Node.terminate(self)


def mininet_link(i1, i2) -> Link:
    """A Mininet Link object over two existing interfaces (no creation)."""
    link = Link.__new__(Link)
    link.intf1, link.intf2 = i1, i2
    i1.link = i2.link = link
    link.fast = True
    return link
