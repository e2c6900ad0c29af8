"""Servers made on this machine for ``servers: local:N``: a test rig for the multi-server path.

Each extra "server" is a network namespace of this run with, like a real server:

* an underlay address on a private subnet, reached over a veth pair whose root end is on
  a Linux bridge of the run (the first server's underlay address is on that bridge; MTU
  1600 so a VXLAN-encapsulated 1500-byte frame fits);
* its own ``sshd`` (config, host key and authorized key generated per run under the run
  directory, listening on its underlay address only, started and stopped by PID);
* its own Open vSwitch: a private :class:`topo.ovs_instance.OvsInstance` (own database, run
  directory and sockets under the run directory; ovs-vswitchd inside the namespace; both
  started and stopped by PID), which commands over SSH reach through ``OVS_RUNDIR``.

Everything the rig made is removed by :meth:`NetnsRig.stop`; :meth:`NetnsRig.leftovers`
names what is still there.  Nothing here is used for a real remote server (there the
system's sshd and Open vSwitch serve).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass

from topo.errors import TestbedError
from topo.ovs_instance import OvsInstance, OVSError
from topo.procs import alive, kill
from topo.remote import Remote

UNDERLAY = ipaddress.ip_network("100.100.0.0/24")  # shared-address space: never routed here
UNDERLAY_MTU = 1600
OVS_DIRS = ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR")  # a private OVS's
SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"


def underlay_ip(index: int) -> str:
    """Underlay address of server ``index`` (0: this machine, on the rig's bridge)."""
    return str(UNDERLAY.network_address + 1 + index)


def _run(args: list[str], timeout_s: float = 30.0, input: str | None = None) -> str:
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, input=input)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no message"])[-1]
        raise TestbedError(f"{' '.join(args[:4])} failed: {last}")
    return res.stdout


@dataclass
class NetnsServer:
    """One namespace server: ``index`` in the servers list, its namespace, directory,
    sshd process and the :class:`Remote` that reaches it."""

    index: int
    netns: str
    dir: str
    sshd: subprocess.Popen | None = None
    remote: Remote | None = None
    ovs: OvsInstance | None = None

    @property
    def address(self) -> str:
        return underlay_ip(self.index)



class NetnsRig:
    """The namespace servers of one run (indices 1..n-1), their underlay bridge and keys."""

    def __init__(self, workdir: str, indices: list[int], tag: int):
        self.workdir = os.path.join(workdir, "servers")
        self.tag = tag
        self.bridge = f"spcul{tag % 1000000}"
        self.servers = [NetnsServer(i, f"spc{tag}-srv{i}", os.path.join(self.workdir, f"srv{i}"))
                        for i in indices]
        self.made_privsep = False
        self.made: list[str] = []  # links and namespaces created, for stop()/leftovers()

    def _veth(self, s: NetnsServer) -> str:
        return f"spcu{s.index}p{self.tag % 100000}"

    def start(self) -> None:
        """Create every namespace server, its sshd, SSH connection and Open vSwitch."""
        if not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen")):
            raise TestbedError("servers local:N needs openssh-server and openssh-client "
                               "(run ./setup.sh)")
        os.makedirs(self.workdir, mode=0o700, exist_ok=True)
        self._underlay()
        key = os.path.join(self.workdir, "id_ed25519")
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "spacecomp-run", "-f", key])
        if not os.path.isdir(PRIVSEP_DIR):  # sshd's privilege-separation directory
            os.makedirs(PRIVSEP_DIR, mode=0o755)
            self.made_privsep = True
        for s in self.servers:
            os.makedirs(s.dir, mode=0o700, exist_ok=True)
            s.ovs = OvsInstance.private_instance(f"srv{s.index}", parent=s.dir,
                                                 netns=f"/run/netns/{s.netns}")
            try:
                s.ovs.start()
            except OVSError as exc:
                raise TestbedError(f"server srv{s.index}: {exc}") from None
            self._sshd(s, key)

    def _underlay(self) -> None:
        br = self.bridge
        cmds = [f"link add name {br} type bridge", f"link set {br} mtu {UNDERLAY_MTU}",
                f"addr add {underlay_ip(0)}/{UNDERLAY.prefixlen} dev {br}", f"link set {br} up"]
        self.made.append(f"link {br}")
        for s in self.servers:
            _run(["ip", "netns", "add", s.netns])
            self.made.append(f"netns {s.netns}")
            v = self._veth(s)
            cmds += [f"link add name {v} mtu {UNDERLAY_MTU} type veth peer name u0 "
                     f"mtu {UNDERLAY_MTU} netns {s.netns}",
                     f"link set {v} master {br}", f"link set {v} up"]
            self.made.append(f"link {v}")
        _run(["ip", "-force", "-batch", "-"], input="\n".join(cmds) + "\n")
        for s in self.servers:
            _run(["ip", "-n", s.netns, "-batch", "-"], input=(
                f"addr add {s.address}/{UNDERLAY.prefixlen} dev u0\nlink set u0 up\n"
                "link set lo up\n"))

    def _sshd(self, s: NetnsServer, client_key: str) -> None:
        host_key = os.path.join(s.dir, "ssh_host_ed25519_key")
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", s.netns, "-f", host_key])
        auth = os.path.join(s.dir, "authorized_keys")
        shutil.copyfile(client_key + ".pub", auth)
        with open(host_key + ".pub") as fh:
            host_pub = " ".join(fh.read().split()[:2])
        known = os.path.join(s.dir, "known_hosts")
        with open(known, "w") as fh:
            fh.write(f"{s.address} {host_pub}\n")
        conf = os.path.join(s.dir, "sshd_config")
        with open(conf, "w") as fh:
            fh.write(f"ListenAddress {s.address}\nPort 22\nHostKey {host_key}\n"
                     f"AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\n"
                     "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                     "StrictModes no\nPidFile none\nX11Forwarding no\nAllowTcpForwarding no\n"
                     "MaxSessions 100\nMaxStartups 100\nAcceptEnv none\n")
        log = open(os.path.join(s.dir, "sshd.log"), "w")
        s.sshd = subprocess.Popen(["ip", "netns", "exec", s.netns, SSHD, "-D", "-e", "-f", conf],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                  start_new_session=True)
        log.close()
        s.remote = Remote(f"srv{s.index}", f"root@{s.address}",
                          ["-i", client_key, "-o", "IdentitiesOnly=yes",
                           "-o", f"UserKnownHostsFile={known}",
                           "-o", "StrictHostKeyChecking=yes"], self.workdir,
                          env={k: s.ovs.rundir for k in OVS_DIRS})
        s.remote.connect()

    def stop(self) -> None:
        """Stop every server's Open vSwitch and sshd (by PID), remove namespaces and links."""
        for s in self.servers:
            if s.remote is not None:
                s.remote.close()
            if s.ovs is not None:
                s.ovs.stop()
            kill(s.sshd)
        for item in reversed(self.made):
            kind, name = item.split(" ", 1)
            args = ["ip", "netns", "del", name] if kind == "netns" else ["ip", "link", "del", name]
            subprocess.run(args, capture_output=True, timeout=60)
        self.made = [m for m in self.made if m in self._existing()]
        if self.made_privsep:
            try:
                os.rmdir(PRIVSEP_DIR)
            except OSError:
                pass
            self.made_privsep = False

    def _existing(self) -> set[str]:
        out = set()
        res = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10)
        out |= {f"link {ln.split(':')[1].strip().split('@')[0]}" for ln in res.stdout.splitlines()}
        res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
        out |= {f"netns {ln.split()[0]}" for ln in res.stdout.splitlines() if ln.strip()}
        return out

    def leftovers(self) -> list[str]:
        """What of the rig still exists: namespaces, links, processes."""
        names = {f"link {self.bridge}"} | {f"link {self._veth(s)}" for s in self.servers}
        names |= {f"netns {s.netns}" for s in self.servers}
        left = sorted(names & self._existing())
        for s in self.servers:
            if s.sshd is not None and s.sshd.poll() is None:
                left.append(f"process {s.sshd.pid} (sshd of srv{s.index})")
            if s.ovs is not None:
                left += [f"process {p} ({n} of srv{s.index})" for n, p in s.ovs.pids.items()
                         if alive(p)]
        return left

