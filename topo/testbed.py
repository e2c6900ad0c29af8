"""Build, shape, route and tear down an emulated constellation -- fast and exactly.

:class:`Testbed` builds the network of :class:`topo.topology.ConstellationTopo`
(same names, ports, addresses) without Mininet's one-subprocess-per-object
build, because that build and especially its teardown grow quadratically here:

* host shells are spawned all at once, then waited for (they start in parallel);
* every veth is created by one ``ip -batch`` (host ends directly inside the host's
  namespace) and tagged with a link *group* private to this run;
* all bridges, ports, controller targets and port numbers go into one
  ``ovs-vsctl`` transaction;
* each host is configured by one command line sent to all shells in parallel;
* teardown deletes the run's veths (and the userspace datapath's tap devices) by
  group in one kernel batch, all bridges in one transaction (with kernel RCU
  expedited meanwhile: each AF_PACKET socket OVS closes otherwise waits a full
  grace period), kills the run's processes by PID and verifies nothing is left.

The result is a real ``mininet.net.Mininet`` object (``testbed.net``) with Mininet
``Host`` objects, so ``CLI(testbed.net)``, ``host.cmd()``, ``host.popen()`` work.
Switch nodes have no shell until something needs one (the CLI), because a shell
per switch costs a process each and buys nothing in the root namespace.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from mininet.link import Intf, Link
from mininet.net import Mininet
from mininet.node import Host, Node, OVSSwitch

from topo import ovs, shaping
from topo.addressing import (GATEWAY_IP, GATEWAY_MAC, HOST_PORT, dpid_of, ground_ip,
                             ground_name, ground_ports, host_name, isl_ports, mac_of,
                             sat_ip, switch_name)
from topo.config import TestbedConfig
from topo.spec import LINK_STATE_FILE, SPEC_FILE

log = logging.getLogger("topo.testbed")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RYU_PYTHON = os.path.join(ROOT, ".venv-ryu", "bin", "python")
# One network at a time per machine: every Testbed holds this lock while it exists.
LOCK_PATH = "/run/spacecomp-testbed.lock"


class TestbedError(RuntimeError):
    """The testbed cannot be built or routed; the message is one line for the user."""


class testbed_lock:
    """Hold the machine-wide one-network lock (for code that builds networks without a
    Testbed, e.g. the plain-Mininet benchmark); bounded wait."""

    def __init__(self, wait_s: float = 600.0):
        self.wait_s = wait_s

    def __enter__(self):
        self.fh = open(LOCK_PATH, "a+")
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.fh.close()
                    raise TestbedError(f"another network holds {LOCK_PATH}")
                time.sleep(0.2)

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
        return False


# --- nodes --------------------------------------------------------------------------------------
class SatHost(Host):
    """A Mininet host whose shell is spawned now and waited for later (in parallel)."""

    def startShell(self, mnopts=None):
        opts = "-cdn" if self.inNamespace else "-cd"
        cmd = ["mnexec", opts, "env", "PS1=" + chr(127), "bash", "--norc", "--noediting",
               "-is", "mininet:" + self.name]
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


# --- helpers --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _kill(proc: subprocess.Popen | None, timeout_s: float = 5.0) -> None:
    """Terminate one process we started (TERM, then KILL), bounded."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


def _rcu_expedited(value: str | None) -> str | None:
    """Set /sys/kernel/rcu_expedited; return the old value (None when unavailable)."""
    path = "/sys/kernel/rcu_expedited"
    try:
        with open(path) as fh:
            old = fh.read().strip()
        if value is not None:
            with open(path, "w") as fh:
                fh.write(value)
        return old
    except OSError:
        return None


class Testbed:
    """One emulated constellation: ``start()`` builds, shapes and routes it, ``stop()``
    removes exactly what it created.  Use as a context manager.

    After ``start()``:
      ``net``               the mininet.net.Mininet object (CLI, pingAll, ...)
      ``host_of(sat)``      Mininet host of satellite ``(sat, orb)``
      ``ip_of(sat)``        its address, e.g. ``10.<orb>.<sat>.1``
      ``ground_hosts``      ground-station hosts, in config order; ``ground_ip(k)``
      ``sat_hosts``         ``{(sat, orb): host}``
      ``metadata``          datapath, netem, shaping summary, timings, warnings
      ``controller_state()`` the controller's JSON view
    """

    def __init__(self, cfg: TestbedConfig, echo=None):
        self.cfg = cfg
        self.echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.net = None
        self.sat_hosts: dict = {}
        self.ground_hosts: list = []
        self.switches: dict = {}
        self.controller: subprocess.Popen | None = None
        self.ctl_port = None
        self.workdir = tempfile.mkdtemp(prefix="spacecomp-tb-")
        self.state_path = os.path.join(self.workdir, "controller_state.json")
        # The run's constellation spec, written once; every process of the run reads it.
        self.spec = dataclasses.replace(
            cfg.spec(), link_state_path=os.path.join(self.workdir, LINK_STATE_FILE))
        self.spec_path = self.spec.save(os.path.join(self.workdir, SPEC_FILE))
        self.c = self.spec.constellation
        self.lm = self.spec.link
        self.ctl_log_path = os.path.join(self.workdir, "controller.log")
        # A link group private to this run: teardown deletes exactly these devices.
        self.group = 0x5C000000 | (os.getpid() & 0xFFFFFF)
        self.bridges: list[str] = []
        self.shapes = {}
        self.metadata: dict = {"grid": cfg.grid, "warnings": []}
        self.t_s = cfg.start_time_s
        self.dynamics = None
        self.datapath_type = None
        self.http_port = None
        self._built = False
        # Loss on lossy cross-over links without netem: an nftables table of this run.
        self.nft_table = f"spacecomp_{os.getpid()}"
        self.nft_created = False
        self.lossy_intfs: dict = {}  # intf -> loss % now applied

    # --- public API -----------------------------------------------------------------------
    def host_of(self, sat):
        return self.sat_hosts[tuple(sat)]

    @staticmethod
    def ip_of(sat) -> str:
        return sat_ip(tuple(sat))

    def ground_ip(self, k: int) -> str:
        """Address of ground station ``k`` (1-based)."""
        return ground_ip(k, tuple(self.cfg.ground[k - 1]))

    @property
    def hosts(self):
        return list(self.sat_hosts.values()) + list(self.ground_hosts)

    def controller_state(self) -> dict | None:
        try:
            with open(self.state_path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def controller_http(self, method: str, path: str, body: dict | None = None,
                        timeout_s: float = 60.0) -> dict:
        """Call the controller's endpoint: GET /state, GET /flows, POST /time {"t_s": x}."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data,
                                     method=method)
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read())

    def flow_counters(self) -> dict:
        """``{(bridge, nw_dst): n_packets}`` of every IPv4 flow, read by the controller
        from all switches at once (ovs-ofctl per bridge is far slower on big grids)."""
        out = {}
        for dpid, table in self.controller_http("GET", "/flows").items():
            br = switch_name(self.c.sat_of(int(dpid)))
            for dst, n in table.items():
                out[(br, dst)] = n
        return out

    def set_time(self, t_s: float) -> int:
        """Tell the controller the constellation time (routes follow it); flows changed."""
        self.t_s = t_s
        res = self.controller_http("POST", "/time", {"t_s": t_s})
        self.wait_generation(res["generation"] - 1, timeout_s=60)
        return res["changed_flows"]

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # --- build ------------------------------------------------------------------------------------
    def start(self) -> "Testbed":
        """Build, shape and route; TestbedError (after a clean teardown) when it cannot."""
        try:
            if os.geteuid() != 0:
                raise TestbedError("building a network needs root")
            tl = time.monotonic()
            self._lock(self.cfg.lock_wait_s)  # not part of the build time
            self.metadata["lock_wait_s"] = round(time.monotonic() - tl, 3)
            t0 = time.monotonic()
            self._preflight()
            self._start_controller()
            self._build()
            self.metadata["build_s"] = time.monotonic() - t0
            t1 = time.monotonic()
            self.wait_routed(self.cfg.controller_timeout_s)
            self.metadata["routes_s"] = time.monotonic() - t1
        except BaseException:
            self.stop()
            raise
        return self

    def _lock(self, wait_s: float):
        """Take the machine-wide testbed lock, waiting at most ``wait_s``."""
        self._lock_fh = open(LOCK_PATH, "a+")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock_fh.close()
                    self._lock_fh = None
                    raise TestbedError(f"another testbed holds {LOCK_PATH} (waited {wait_s:.0f} s)")
                time.sleep(0.2)
        self._lock_fh.seek(0)
        self._lock_fh.truncate()
        self._lock_fh.write(f"{os.getpid()}\n")
        self._lock_fh.flush()

    def _unlock(self):
        if getattr(self, "_lock_fh", None) is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def _preflight(self):
        started = ovs.ensure_running()
        dp = ovs.datapath()
        netem = shaping.netem_available()
        self.metadata.update(datapath=dp, ovs_started_by_run=started, netem=netem,
                             delay_emulated=netem and self.cfg.shaping,
                             controller=self.cfg.controller)
        if not netem:
            msg = ("WARNING: this kernel has no sch_netem: propagation delay (d/c) is NOT "
                   "emulated (rates, outages and, via nftables, lossy-band loss are)")
            if self.cfg.require_delay:
                raise TestbedError("require_delay: this kernel has no sch_netem, "
                                   "propagation delay cannot be emulated")
            self.metadata["warnings"].append(msg)
            self.echo(msg)
        if netem:
            self.metadata["loss_emulated"] = "netem"
        elif self.c.lossy_band_deg > 0 and shaping.nft_available():
            self.metadata["loss_emulated"] = "nftables"
        else:
            self.metadata["loss_emulated"] = None if self.c.lossy_band_deg > 0 else "not needed"
        self.datapath_type = "netdev" if dp == "user" else "system"
        names = {switch_name(s) for s in self.c.satellites()}
        clash = names & set(ovs.bridges())
        if clash:
            raise TestbedError(f"OVS bridge {sorted(clash)[0]} already exists (another testbed "
                               f"running, or a crashed one: remove its bridges first)")
        res = subprocess.run(["ip", "-o", "link", "show", "group", str(self.group)],
                             capture_output=True, text=True, timeout=10)
        if res.stdout.strip():
            raise TestbedError(f"link group {self.group} is in use")

    def _start_controller(self):
        cfg = self.cfg
        self.ctl_port = _free_port()
        self.http_port = _free_port()
        ctl_cfg = {"http_port": self.http_port, "spec": self.spec_path,
                   "state_path": self.state_path}
        cfg_path = os.path.join(self.workdir, "controller.json")
        with open(cfg_path, "w") as fh:
            json.dump(ctl_cfg, fh)
        app = os.path.join(ROOT, "controller", "app.py")
        if cfg.controller == "ryu":
            if not os.path.exists(RYU_PYTHON):
                raise TestbedError(f"controller ryu: {RYU_PYTHON} missing (run ./setup.sh)")
            argv = [RYU_PYTHON, os.path.join(ROOT, "controller", "ryu_launcher.py")]
        else:
            argv = ["/usr/bin/osken-manager"]
            if not os.path.exists(argv[0]):
                raise TestbedError("controller osken: /usr/bin/osken-manager missing "
                                   "(python3-os-ken, run ./setup.sh)")
        argv += [app, "--ofp-tcp-listen-port", str(self.ctl_port),
                 "--ofp-listen-host", "127.0.0.1"]
        env = dict(os.environ, SPACECOMP_CTL_CONFIG=cfg_path,
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.ctl_log = open(self.ctl_log_path, "w")
        self.controller = subprocess.Popen(argv, env=env, stdout=self.ctl_log,
                                           stderr=subprocess.STDOUT, start_new_session=True)

    def _build(self):
        cfg, c = self.cfg, self.c
        sats = c.satellites()
        phases = self.metadata.setdefault("build_phases_s", {})
        mark = [time.monotonic()]

        def phase(name):
            now = time.monotonic()
            phases[name] = round(now - mark[0], 3)
            mark[0] = now

        grounds = ground_ports(cfg.ground_sats)
        # Mininet's own object, filled with our nodes (no build, no controller).
        self.net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False,
                           waitConnected=False)
        # 1. hosts: spawn every shell, then wait for them (they start in parallel).
        for sat in sats:
            self.sat_hosts[sat] = SatHost(host_name(sat))
        for k, _los, _port in grounds:
            self.ground_hosts.append(SatHost(ground_name(k)))
        for h in self.hosts:
            h.finish_shell()
        for h in self.hosts:
            h.waitOutput()
        phase("host_shells")
        # 2. switches (Mininet objects only; OVS gets them in one transaction below).
        for sat in sats:
            sw = SatSwitch(switch_name(sat), dpid=f"{dpid_of(c, sat):016x}",
                           datapath="user" if self.datapath_type == "netdev" else "kernel",
                           failMode="secure", protocols="OpenFlow13", inNamespace=False)
            self.switches[sat] = sw
        # 3. veths: one ip -batch, host ends created inside their namespace.
        g = self.group
        cmds = []
        host_links = []  # (host, host_intf, ip, switch, port)
        for sat in sats:
            host_links.append((self.sat_hosts[sat], sat_ip(sat), self.switches[sat], HOST_PORT))
        for (k, los, port), h in zip(grounds, self.ground_hosts):
            host_links.append((h, ground_ip(k, los), self.switches[los], port))
        for h, ip, sw, port in host_links:
            cmds.append(f"link add name {sw.name}-eth{port} group {g} type veth peer name "
                        f"{h.name}-eth0 address {mac_of(ip)} netns {h.pid}")
        for a, pa, b, pb, _kind in isl_ports(c):
            cmds.append(f"link add name {switch_name(a)}-eth{pa} group {g} type veth peer name "
                        f"{switch_name(b)}-eth{pb} group {g}")
        # No IPv6 link-local addresses on the root-side ends: addrconf/DAD on thousands
        # of new devices holds the RTNL lock for seconds and nothing here speaks IPv6.
        for line in list(cmds):
            cmds.append(f"link set dev {line.split()[3]} addrgenmode none")
        for a, pa, b, pb, _kind in isl_ports(c):
            cmds.append(f"link set dev {switch_name(b)}-eth{pb} addrgenmode none")
        cmds.append(f"link set group {g} up")
        shaping.run_batch("ip", cmds)
        phase("veths")
        # 4. Mininet Intf/Link objects mirroring what exists.
        for h, ip, sw, port in host_links:
            hi = Intf(f"{h.name}-eth0", node=h, port=0, up=None)  # (mac=, up= run ifconfig)
            hi.ip, hi.prefixLen, hi.mac = ip, 32, mac_of(ip)
            si = Intf(f"{sw.name}-eth{port}", node=sw, port=port, up=None)
            self.net.links.append(_link(hi, si))
        for a, pa, b, pb, _kind in isl_ports(c):
            ia = Intf(f"{switch_name(a)}-eth{pa}", node=self.switches[a], port=pa, up=None)
            ib = Intf(f"{switch_name(b)}-eth{pb}", node=self.switches[b], port=pb, up=None)
            self.net.links.append(_link(ia, ib))
        phase("intf_objects")
        # 5. host addressing: /32 + a virtual gateway with a permanent neighbour entry,
        # so hosts never ARP across the torus; tx checksum offload off (the userspace
        # datapath does not complete partial checksums, TCP would hang).
        for h, ip, _sw, _port in host_links:
            intf = f"{h.name}-eth0"
            ipb = (f"link set lo up\\naddr add {ip}/32 dev {intf}\\nlink set {intf} up\\n"
                   f"route add {GATEWAY_IP} dev {intf} scope link\\n"
                   f"route add 10.0.0.0/8 via {GATEWAY_IP} dev {intf}\\n"
                   f"neigh replace {GATEWAY_IP} lladdr {GATEWAY_MAC} dev {intf} nud permanent\\n")
            h.sendCmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                      "net.ipv6.conf.default.disable_ipv6=1; "
                      f"printf '{ipb}' | ip -batch -; ethtool -K {intf} tx off >/dev/null 2>&1; "
                      "echo done")
        phase("host_config_send")
        for h, *_ in host_links:
            out = h.waitOutput()
            if "done" not in out or "rror" in out:
                raise TestbedError(f"host {h.name}: configuration failed: {out.strip()[:200]}")
        phase("host_config")
        # 6. bridges: one ovs-vsctl transaction (chunked only to respect ARG_MAX).
        ctl = f"tcp:127.0.0.1:{self.ctl_port}"
        args, chunks = [], []
        for sat in sats:
            br = switch_name(sat)
            self.bridges.append(br)
            args += ["--", "add-br", br, "--", "set", "bridge", br,
                     f"datapath_type={self.datapath_type}", "fail_mode=secure",
                     "protocols=OpenFlow13", f"other-config:datapath-id={dpid_of(c, sat):016x}",
                     "other-config:disable-in-band=true"]
            for port in sorted(self.switches[sat].intfs):
                intf = self.switches[sat].intfs[port].name
                if port < 1 or intf == "lo":  # Mininet's loopback placeholder
                    continue
                args += ["--", "add-port", br, intf, "--", "set", "interface", intf,
                         f"ofport_request={port}"]
            args += ["--", "set-controller", br, ctl]
            if len(args) > 20000:
                chunks.append(args)
                args = []
        if args:
            chunks.append(args)
        for chunk in chunks:
            ovs.vsctl(*chunk, timeout_s=300)
        phase("ovs_bridges")
        for sw in self.switches.values():
            self.net.switches.append(sw)
            self.net.nameToNode[sw.name] = sw
        for h in self.hosts:
            self.net.hosts.append(h)
            self.net.nameToNode[h.name] = h
        self._built = True
        # 7. shaping and the initial outage state.
        self.apply_initial_shape()
        phase("shaping")

    def apply_initial_shape(self):
        cfg = self.cfg
        self.shapes = shaping.plan(self.c, self.lm, self.t_s, cfg.rate_scale,
                                   cfg.rate_cap_mbps * 1e6, cfg.rate_floor_mbps * 1e6,
                                   cfg.lossy_loss_pct)
        if cfg.shaping:
            cmds = shaping.shape_commands(self.shapes.values(), self.metadata["netem"])
            if cfg.ground_rate_mbps:
                for k, los, port in ground_ports(cfg.ground_sats):
                    cmds += shaping.htb_add(f"{switch_name(los)}-eth{port}",
                                            cfg.ground_rate_mbps * 1e6)
                # The uplink end lives in the ground host's namespace: shape it there.
                for (k, _los, _port), h in zip(ground_ports(cfg.ground_sats), self.ground_hosts):
                    h.cmd(f"tc qdisc replace dev {h.name}-eth0 root handle 1: htb default 1 && "
                          f"tc class replace dev {h.name}-eth0 parent 1: classid 1:1 htb rate "
                          f"{int(cfg.ground_rate_mbps * 1e6)}bit ceil "
                          f"{int(cfg.ground_rate_mbps * 1e6)}bit")
            shaping.run_batch("tc", cmds)
        self.apply_loss(self.shapes)
        down = [s for s in self.shapes.values() if s.state == "down"]
        shaping.run_batch("ip", [f"link set {i} down" for s in down for i in (s.intf_a, s.intf_b)])
        summ = shaping.summary(self.shapes.values())
        summ["rate_cap_bps"] = cfg.rate_cap_mbps * 1e6
        summ["rate_scale"] = cfg.rate_scale
        summ["shaped"] = cfg.shaping
        self.metadata["shaping"] = summ
        if cfg.shaping and summ["capped_links"]:
            self.echo(f"rate cap {cfg.rate_cap_mbps:g} Mbit/s applied to {summ['capped_links']} "
                      f"of {summ['links']} links (model rate above the cap)")

    def apply_loss(self, shapes) -> int:
        """Bring nftables egress loss in line with the lossy links of ``shapes`` (no netem).

        Returns the number of interfaces changed."""
        if self.metadata.get("loss_emulated") != "nftables":
            return 0
        want = {}
        for s in shapes.values():
            if s.state == "lossy" and s.loss_pct > 0:
                want[s.intf_a] = want[s.intf_b] = s.loss_pct
        add = {i: p for i, p in want.items() if self.lossy_intfs.get(i) != p}
        remove = set(self.lossy_intfs) - set(want)
        if not add and not remove:
            return 0
        shaping.run_nft(shaping.nft_loss_script(self.nft_table, add, remove,
                                                not self.nft_created))
        self.nft_created = True
        self.lossy_intfs = want
        return len(add) + len(remove)

    def wait_routed(self, timeout_s: float) -> dict:
        """Wait until the controller reports every switch connected and routed (bounded)."""
        deadline = time.monotonic() + timeout_s
        state = None
        while time.monotonic() < deadline:
            if self.controller is not None and self.controller.poll() is not None:
                tail = _tail(self.ctl_log_path)
                raise TestbedError(f"controller exited with {self.controller.returncode}: {tail}")
            state = self.controller_state()
            if state and state.get("synced"):
                return state
            time.sleep(0.05)
        got = len(state["connected"]) if state else 0
        raise TestbedError(f"controller did not route the network within {timeout_s:.0f} s "
                           f"({got} of {self.c.size} switches connected; log "
                           f"{self.ctl_log_path})")

    def wait_generation(self, gen_above: int, timeout_s: float = 5.0) -> dict:
        """Wait until the controller has recomputed past ``gen_above`` and is synced."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st = self.controller_state()
            if st and st["generation"] > gen_above and st["synced"]:
                return st
            time.sleep(0.01)
        raise TestbedError(f"controller did not recompute within {timeout_s} s")

    def wait_links_down(self, expected, timeout_s: float = 30.0) -> dict:
        """Wait until the controller's view has exactly ``expected`` links down (a set of
        frozensets) and is synced, i.e. it has rerouted around them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st = self.controller_state()
            if st and st["synced"] and not st.get("recompute_pending") and \
                    {frozenset(map(tuple, l)) for l in st["links_down"]} == set(expected):
                return st
            time.sleep(0.01)
        raise TestbedError(f"controller did not reroute around {len(expected)} links "
                           f"within {timeout_s} s")

    # --- teardown --------------------------------------------------------------------------------
    def stop(self) -> bool:
        """Remove everything this run created; True when verifiably nothing is left."""
        if getattr(self, "_stopped", False):
            return self.metadata.get("teardown_clean", False)
        self._stopped = True
        t0 = time.monotonic()
        phases = self.metadata.setdefault("teardown_phases_s", {})
        mark = [t0]

        def phase(name):
            now = time.monotonic()
            phases[name] = round(now - mark[0], 3)
            mark[0] = now

        if self.dynamics is not None:
            self.dynamics.stop()
        _kill(self.controller)
        phase("controller")
        old = _rcu_expedited("1") if self.cfg.fast_teardown else None
        try:
            if self.bridges and self.datapath_type == "netdev":
                # The userspace datapath's bridge ports are tap devices named like the
                # bridge: tag them so the group delete below removes them in one batch.
                try:
                    shaping.run_batch("ip", [f"link set {b} group {self.group}"
                                             for b in self.bridges])
                except shaping.TcError:
                    pass  # some never existed (failed build): deleted by del-br instead
            if self.group:
                subprocess.run(["ip", "link", "del", "group", str(self.group)],
                               capture_output=True, timeout=120)
            phase("links")
            if self.nft_created:
                subprocess.run(["nft", "delete", "table", "netdev", self.nft_table],
                               capture_output=True, timeout=60)
            if self.bridges:
                args = []
                for b in self.bridges:
                    args += ["--", "--if-exists", "del-br", b]
                try:
                    ovs.vsctl(*args, timeout_s=300)
                except ovs.OVSError as exc:
                    self.echo(f"teardown: {exc}")
            phase("bridges")
            for h in self.hosts:
                h.terminate()
            for sw in self.switches.values():
                sw.terminate()
            deadline = time.monotonic() + 10
            for h in self.hosts:
                while _alive(h.pid) and time.monotonic() < deadline:
                    time.sleep(0.01)
                if _alive(h.pid):
                    os.kill(h.pid, signal.SIGKILL)
            phase("hosts")
        finally:
            if old is not None:
                _rcu_expedited(old)
        self.metadata["teardown_s"] = time.monotonic() - t0
        clean = self.verify_clean()
        self._unlock()
        if clean and not self.cfg.keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.metadata["teardown_clean"] = clean
        self._built = False
        return clean

    def leftovers(self) -> list[str]:
        """What of this run still exists (bridges, links, processes); [] when clean."""
        left = []
        if self.bridges:
            try:
                left += [f"bridge {b}" for b in set(self.bridges) & set(ovs.bridges())]
            except ovs.OVSError:
                pass
        res = subprocess.run(["ip", "-o", "link", "show", "group", str(self.group)],
                             capture_output=True, text=True, timeout=10)
        left += [f"link {ln.split(':')[1].strip()}" for ln in res.stdout.splitlines() if ln]
        names = {f"{sw}-eth" for sw in self.bridges}
        res = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10)
        for ln in res.stdout.splitlines():
            name = ln.split(":")[1].strip().split("@")[0]
            if any(name.startswith(n) for n in names):
                left.append(f"link {name}")
        for h in self.hosts:
            if _alive(h.pid):
                left.append(f"process {h.pid} ({h.name})")
        if self.nft_created and subprocess.run(
                ["nft", "list", "table", "netdev", self.nft_table], capture_output=True,
                timeout=10).returncode == 0:
            left.append(f"nftables table netdev {self.nft_table}")
        if self.controller is not None and _alive(self.controller.pid):
            left.append(f"process {self.controller.pid} (controller)")
        return sorted(set(left))

    def verify_clean(self) -> bool:
        left = self.leftovers()
        if left:
            self.echo(f"teardown left {len(left)} objects: {', '.join(left[:5])}")
        return not left


def _link(i1, i2) -> Link:
    """A Mininet Link object over two existing interfaces (no creation)."""
    link = Link.__new__(Link)
    link.intf1, link.intf2 = i1, i2
    i1.link = i2.link = link
    link.fast = True
    return link


def _tail(path: str, n: int = 1) -> str:
    try:
        with open(path) as fh:
            lines = [ln.strip() for ln in fh if ln.strip()]
        return " | ".join(lines[-n:]) or "no output"
    except OSError:
        return "no log"
