"""One constellation on several servers: hosts, links and bridges placed per server.

The plan is :mod:`topo.servers` (pure): contiguous blocks of planes per server, every
cross-server ISL a VXLAN tunnel with a key of its own.  :class:`Cluster` carries it out:

* servers ``local:N`` are made on this machine by :mod:`topo.server_ns` (namespace, sshd,
  private Open vSwitch); real servers are reached over SSH (:class:`topo.remote.Remote`),
  their system Open vSwitch used;
* each server gets its planes' host shells (spawned over SSH: ``mnexec`` in a pty, as
  Mininet Cluster Edition's ``RemoteHost``), veths, bridges, and its ends of the tunnels:
  a kernel ``vxlan`` device named like the veth end it replaces (``s<sat>_<orb>-eth<p>``),
  so htb shaping, outages (link down) and the controller's port numbers are the same as
  for a local ISL;
* every bridge on every server connects to the one controller on the first server's
  underlay address; ``ip``/``tc`` batches go to the server holding each interface
  (:meth:`Cluster.batch`).

Known limits: the reachability check opens its ICMP sockets in the hosts' namespaces from
this process, and nftables loss and placed ground stations are single-server only, so
``--check`` and lossy bands work with ``local:N`` (one kernel) and not yet across real
servers; ``ground_stations`` (handed over between satellites) and lossy bands are refused
with servers (``topo.config``).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
from collections import defaultdict

from topo import ovs, servers as srv
from topo.addressing import GATEWAY_IP, GATEWAY_MAC
from topo.errors import TestbedError
from topo.mn_nodes import SatHost
from topo.remote import Remote, ServerLost
from topo.server_ns import NetnsRig, underlay_ip

VXLAN_MTU = 1500  # the tunnel carries the hosts' full 1500-byte frames (underlay: 1550+)


class RemoteSatHost(SatHost):
    """A satellite host on another server: its shell is ``mnexec`` run over SSH in a pty
    (Cluster Edition's ``RemoteHost``); ``pid`` is the shell's PID on that server."""

    remote: Remote = None  # set per run by Cluster.host_class()

    def shell_argv(self) -> list[str]:
        """``mnexec`` on the host's server, in a pty there (``ssh -tt``); not detached
        (Cluster Edition's ``-c``): the SSH session lasts as long as the shell."""
        return self.remote.argv(shlex.join(SatHost.shell_argv(self, "-cn")), tty=True)

    def popen(self, *args, **kwargs):
        """A process in this host's namespace on its server, over SSH in a pty there and
        not detached from it: ending the local ``ssh`` (by PID) hangs it up."""
        cmd = args[0] if len(args) == 1 else list(args)
        if isinstance(cmd, str):
            cmd = cmd.split()
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("stdin", subprocess.DEVNULL)  # ssh -tt would read ours
        if kwargs["stdout"] is subprocess.DEVNULL and kwargs["stderr"] not in (
                subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT):
            kwargs["stdout"] = kwargs["stderr"]  # a pty merges both onto ssh's stdout
        kwargs.pop("mncmd", None)
        cwd = kwargs.pop("cwd", None)  # a directory on the host's server
        line = f"exec mnexec -a {int(self.pid)} {shlex.join(cmd)}"
        if cwd:
            line = f"cd {shlex.quote(str(cwd))} && {line}"
        return subprocess.Popen(self.remote.argv(line, tty=True), start_new_session=True,
                                **kwargs)

    def terminate(self):
        if self.shell is not None and self.shell.poll() is None:
            self.shell.kill()
            self.shell.wait()
        self.cleanup()


class Cluster:
    """The servers of one run and what is placed on each (``cfg.servers``, ``cfg.placement``).

    ``plane_server``: ``{orb: server index}``; ``tunnels``: the cross-server ISLs;
    ``remotes``: ``{index: Remote}`` for every server but the first; ``addresses``:
    ``{index: underlay IPv4}`` (the controller listens on ``addresses[0]``)."""

    def __init__(self, cfg, c, workdir: str, group: int):
        self.specs = cfg.server_specs()
        self.plane_server = cfg.plane_servers()
        self.tunnels = srv.tunnels(c, self.plane_server)
        self.group = group
        self.workdir = workdir
        netns = [s.index for s in self.specs if s.is_netns]
        self.rig = NetnsRig(workdir, netns, os.getpid()) if netns else None
        self.remotes: dict[int, Remote] = {}
        self.addresses: dict[int, str] = {}
        self.bridges: dict[int, list[str]] = defaultdict(list)
        self.remote_hosts: list[RemoteSatHost] = []

    def server_of(self, sat) -> int:
        return self.plane_server[sat[1]]

    @property
    def ctl_host(self) -> str:
        return self.addresses[0]

    def summary(self) -> dict:
        """What a run reports: servers, cross-server links (per server pair)."""
        return {"servers": len(self.specs), "cross_server_links": len(self.tunnels),
                "cross_server_links_per_pair": {f"{a}-{b}": n for (a, b), n in
                                                sorted(srv.boundary_links(self.tunnels).items())},
                "planes_per_server": [sum(1 for k in self.plane_server.values() if k == i)
                                      for i in range(len(self.specs))]}

    # --- servers ---------------------------------------------------------------------------
    def start(self) -> None:
        """Make or reach every server; refuse to build over bridges that exist there."""
        if self.rig is not None:
            self.rig.start()
            self.addresses[0] = underlay_ip(0)
            for s in self.rig.servers:
                self.remotes[s.index], self.addresses[s.index] = s.remote, s.address
        for spec in self.specs[1:]:
            if spec.is_netns:
                continue
            r = Remote(spec.name, spec.dest, [], self.workdir)
            r.connect()
            self.remotes[spec.index] = r
            self.addresses[spec.index] = spec.address or _resolve(spec.dest)
        if 0 not in self.addresses:
            first = self.specs[0].address
            self.addresses[0] = first or _source_address(self.addresses[min(self.remotes)])
        for k, r in self.remotes.items():
            have = set(r.run("ovs-vsctl --timeout=10 list-br").stdout.split())
            if have:
                mine = {f"s{s}_{o}" for o, kk in self.plane_server.items() if kk == k
                        for s in range(1, 256)}
                clash = sorted(have & mine)
                if clash:
                    raise TestbedError(f"server srv{k}: OVS bridge {clash[0]} already exists")

    def host_class(self, k: int):
        """The host class for server ``k`` (0: this machine's :class:`SatHost`)."""
        if k == 0:
            return SatHost
        return type(f"RemoteSatHost{k}", (RemoteSatHost,), {"remote": self.remotes[k]})

    def read_remote_pids(self, hosts) -> None:
        """Each remote host's shell PID on its server (asked once its prompt is there)."""
        for h in hosts:
            h.sendCmd("echo $$")
        for h in hosts:
            out = h.waitOutput()
            m = re.search(r"(\d+)", out)
            if not m:
                raise ServerLost(f"host {h.name}: no shell on its server ({out.strip()[:60]!r})")
            h.pid = int(m.group(1))
        self.remote_hosts = list(hosts)

    # --- links -----------------------------------------------------------------------------
    def tunnel_commands(self, k: int) -> list[tuple[str, str]]:
        """``(interface, ip-batch 'link add' line)`` for server ``k``'s tunnel ends."""
        out = []
        for t in self.tunnels:
            for end, intf, peer in ((t.server_a, t.intf_a, t.server_b),
                                    (t.server_b, t.intf_b, t.server_a)):
                if end == k:
                    out.append((intf, f"link add name {intf} mtu {VXLAN_MTU} group {self.group} "
                                      f"type vxlan id {t.vni} local {self.addresses[k]} remote "
                                      f"{self.addresses[peer]} dstport {srv.VXLAN_PORT}"))
        return out

    def split(self, cmds: list[str]) -> dict[int, list[str]]:
        """Commands of an ``ip``/``tc`` batch grouped by the server holding the interface
        each names (``dev X`` or ``link set X``); others stay on the first server."""
        out: dict[int, list[str]] = defaultdict(list)
        for line in cmds:
            words = line.split()
            name = words[words.index("dev") + 1] if "dev" in words else (
                words[2] if words[:2] == ["link", "set"] and len(words) > 2 else "")
            k = srv.server_of_intf(name, self.plane_server)
            out[0 if k is None else k].append(line)
        return out

    def batch(self, tool: str, cmds: list[str], timeout_s: float = 120.0,
              netns_pid: int | None = None) -> None:
        """``shaping.run_batch`` across servers: each command where its interface is."""
        from topo import shaping
        for k, part in self.split(cmds).items():
            if k == 0:
                shaping.run_batch(tool, part, timeout_s, netns_pid)
            else:
                self.remotes[k].batch(tool, part, timeout_s)

    def run_batches(self, tool: str, per_server: dict[int, list[str]]) -> None:
        """One batch per server (``{server: commands}``)."""
        from topo import shaping
        for k, cmds in per_server.items():
            if k == 0:
                shaping.run_batch(tool, cmds)
            else:
                self.remotes[k].batch(tool, cmds)

    def configure_remote_hosts(self, links) -> None:
        """Address, gateway, no IPv6, tx checksum off for ``links`` ``(host, ip)`` on other
        servers: one shell script per server over SSH (``nsenter`` into each host)."""
        per: dict = defaultdict(list)
        for h, ip in links:
            i = f"{h.name}-eth0"
            per[h.remote].append(
                f"nsenter -t {int(h.pid)} -n sh -ec '"
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1;"
                f" ip link set lo up; ip addr add {ip}/32 dev {i}; ip link set {i} up;"
                f" ip route add {GATEWAY_IP}/32 dev {i} scope link;"
                f" ip route add 10.0.0.0/8 via {GATEWAY_IP} dev {i};"
                f" ip neigh replace {GATEWAY_IP} lladdr {GATEWAY_MAC} dev {i} nud permanent;"
                f" ethtool -K {i} tx off >/dev/null'")
        for r, lines in per.items():
            r.run("sh -e", input="\n".join(lines) + "\n", timeout_s=120)

    def vsctl(self, k: int, args: list[str], timeout_s: float = 600) -> None:
        """One ``ovs-vsctl`` transaction on server ``k`` (the first: this machine's OVS)."""
        if k == 0:
            ovs.vsctl(*args, timeout_s=timeout_s)
        else:
            self.remotes[k].run(shlex.join(["ovs-vsctl", f"--timeout={int(timeout_s)}", *args]),
                                timeout_s=timeout_s + 10)

    def ofctl_argv(self, bridge: str, args: list[str]) -> list[str]:
        """argv running ``ovs-ofctl ARGS`` for ``bridge`` wherever it is."""
        k = int(self._bridge_server(bridge))
        if k == 0:
            return ["ovs-ofctl", *args]
        return self.remotes[k].argv(shlex.join(["ovs-ofctl", *args]))

    def _bridge_server(self, bridge: str) -> int:
        m = re.fullmatch(r"s\d+_(\d+)", bridge)
        return self.plane_server.get(int(m.group(1)), 0) if m else 0

    def revalidate(self) -> None:
        """``revalidator/wait`` on every server's ovs-vswitchd (the first's too)."""
        subprocess.run(["ovs-appctl", "-t", "ovs-vswitchd", "revalidator/wait"],
                       capture_output=True, timeout=30)
        for r in self.remotes.values():
            r.run("ovs-appctl -t ovs-vswitchd revalidator/wait", timeout_s=30, check=False)

    def check_alive(self) -> None:
        """ServerLost naming the first server that stopped answering."""
        for k, r in self.remotes.items():
            if not r.alive():
                raise ServerLost(f"server srv{k} ({r.dest}) stopped answering: the run fails")

    # --- teardown --------------------------------------------------------------------------
    def teardown(self, echo) -> None:
        """Remove what the run made on every other server (bridges, links, host shells),
        then the namespace servers themselves.  A lost server is reported, not waited for."""
        for k, r in self.remotes.items():
            pids = [h.pid for h in self.remote_hosts if h.remote is r and h.pid]
            brs = self.bridges.get(k, [])
            script = []
            if brs:
                script.append(shlex.join(["ovs-vsctl", "--timeout=300", *[
                    a for b in brs for a in ("--", "--if-exists", "del-br", b)]]))
            script.append(f"ip link del group {self.group} 2>/dev/null || true")
            if pids:
                script.append("kill -9 " + " ".join(map(str, pids)) + " 2>/dev/null || true")
            try:
                r.run("sh", input="\n".join(script) + "\n", timeout_s=330)
            except ServerLost as exc:
                echo(f"teardown: {exc}")
        for h in self.remote_hosts:
            h.terminate()
        if self.rig is not None:
            self.rig.stop()
        else:
            for r in self.remotes.values():
                r.close()

    def leftovers(self) -> list[str]:
        """What of the run is left on the other servers (and of the namespace rig)."""
        left = []
        for k, r in self.remotes.items():
            if self.rig is not None and k in {s.index for s in self.rig.servers}:
                continue  # its namespace is gone (checked by the rig) or named below
            try:
                res = r.run(f"ovs-vsctl --timeout=10 list-br; ip -o link show group {self.group}",
                            timeout_s=30, check=False)
            except ServerLost as exc:
                left.append(f"server srv{k}: unreachable ({exc})")
                continue
            mine = set(self.bridges.get(k, []))
            for ln in res.stdout.splitlines():
                if ln.strip() in mine:
                    left.append(f"srv{k} bridge {ln.strip()}")
                elif ":" in ln:
                    left.append(f"srv{k} link {ln.split(':')[1].strip()}")
        if self.rig is not None:
            left += self.rig.leftovers()
        for h in self.remote_hosts:
            if h.shell is not None and h.shell.poll() is None:
                left.append(f"process {h.shell.pid} (ssh shell of {h.name})")
        return left


def _resolve(dest: str) -> str:
    host = dest.rpartition("@")[2]
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
    except OSError:
        raise TestbedError(f"servers: cannot resolve {host}: give its address") from None


def _source_address(peer: str) -> str:
    """This machine's address on the way to ``peer`` (the first server's underlay one)."""
    res = subprocess.run(["ip", "-o", "route", "get", peer], capture_output=True, text=True,
                         timeout=10)
    m = re.search(r"\bsrc (\S+)", res.stdout)
    if not m:
        raise TestbedError(f"servers: no route to {peer}: give servers[0] an address")
    return m.group(1)
