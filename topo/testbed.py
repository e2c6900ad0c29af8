"""One emulated constellation: build, shape, route and tear down -- fast and exactly.

:class:`Testbed` is the front of the pieces that do the work, one job each:

* :mod:`topo.lock`            the machine-wide one-network lock;
* :mod:`topo.build`           hosts, veths, bridges in bulk (preflight checks first);
* :mod:`topo.mn_nodes`        the Mininet host/switch/link adapters it fills ``net`` with;
* :mod:`topo.controller_proc` the controller process and its HTTP/state client;
* :mod:`topo.shaping`         every link's rate/delay from the link model (ISLs and ground);
* :mod:`topo.loss`            lossy-band loss through nftables where netem is missing;
* :mod:`topo.dynamics`        the updater moving links with the orbit (started by the testbed);
* :mod:`topo.ground_segment`  placed ground stations handed over between satellites;
* :mod:`topo.teardown`        removing exactly what the run made, and verifying it;
* :mod:`topo.phases`          the phase timer both build and teardown report with.

The result is a real ``mininet.net.Mininet`` object (``testbed.net``) with Mininet
``Host`` objects, so ``CLI(testbed.net)``, ``host.cmd()``, ``host.popen()`` work.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from topo import controller_proc, ovs_buffers, shaping
from topo.addressing import ground_ip, sat_ip, station_ip, switch_name
from topo.bridges import auto_instances, connect
from topo.build import Network, build, preflight
from topo.config import TestbedConfig
from topo.dynamics import Dynamics
from topo.errors import TestbedError
from topo.ground_segment import GroundSegment
from topo.lock import LOCK_PATH, MachineLock, testbed_lock
from topo.loss import NftLoss
from topo.mn_nodes import SatHost, SatSwitch
from topo.phases import PhaseTimer
from topo.procs import free_port as _free_port
from topo.procs import kill
from topo.spec import LINK_STATE_FILE, SPEC_FILE
from topo.teardown import leftovers, teardown

__all__ = ["Testbed", "TestbedError", "testbed_lock", "LOCK_PATH", "SatHost", "SatSwitch",
           "_free_port"]


class Testbed:
    """One emulated constellation: ``start()`` builds, shapes and routes it (and, with
    ``dynamics: true``, starts the link updater), ``stop()`` removes exactly what it
    created.  Use as a context manager.

    After ``start()``:
      ``net``               the mininet.net.Mininet object (CLI, pingAll, ...)
      ``host_of(sat)``      Mininet host of satellite ``(sat, orb)``
      ``ip_of(sat)``        its address, e.g. ``10.<orb>.<sat>.1``
      ``ground_hosts``      ground-station hosts, in config order; ``ground_ip(k)``
      ``sat_hosts``         ``{(sat, orb): host}``
      ``metadata``          datapath, netem, shaping summary, timings, warnings
      ``controller_state()`` the controller's JSON view
      ``dynamics``          the link updater (``step(t_s)``; ``start_dynamics()`` runs it)
    """

    def __init__(self, cfg: TestbedConfig, echo=None):
        self.cfg = cfg
        self.echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.controller = None          # the controller's subprocess.Popen
        self.ctl_port = None
        self.http_port = None
        self.workdir = tempfile.mkdtemp(prefix="spacecomp-tb-")
        os.chmod(self.workdir, 0o711)  # node daemons that dropped root read the link state here
        self.state_path = os.path.join(self.workdir, "controller_state.json")
        # The run's constellation spec, written once; every process of the run reads it.
        self.spec = dataclasses.replace(
            cfg.spec(), link_state_path=os.path.join(self.workdir, LINK_STATE_FILE))
        self.spec_path = self.spec.save(os.path.join(self.workdir, SPEC_FILE))
        self.c = self.spec.constellation
        self.lm = self.spec.link
        self.ctl_log_path = os.path.join(self.workdir, "controller.log")
        # A link group private to this run: teardown deletes exactly these devices.
        self.network = Network(group=0x5C000000 | (os.getpid() & 0xFFFFFF))
        self.shapes = {}
        self.metadata: dict = {"grid": cfg.grid, "warnings": []}
        self.t_s = cfg.start_time_s
        self.dynamics: Dynamics | None = None
        # Placed ground stations (config ground_stations): handed over as the orbit moves;
        # their gateways go to ground_state_path for the node application.
        self.ground_state_path = os.path.join(self.workdir, "ground_state.json")
        self.ground_segment = (GroundSegment(self, self.ground_state_path,
                                             {k: g for k, g in enumerate(cfg.ground, start=1)})
                               if cfg.ground_stations else None)
        self._built = False
        self._stopped = False
        self._failed = False
        self._ovs_buffer_changes: list = []  # topo.ovs_buffers, undone at teardown
        self._lock = MachineLock()
        # Loss on lossy cross-over links without netem: an nftables table of this run.
        self.loss = NftLoss(f"spacecomp_{os.getpid()}")
        # Several servers (config servers): what is placed where, and the other servers.
        self.cluster = None
        if len(cfg.server_specs()) > 1:
            from topo.cluster import Cluster
            self.cluster = Cluster(cfg, self.c, self.workdir, self.network.group)

    # --- what exists (the network's state) -------------------------------------------------
    net = property(lambda self: self.network.net)
    sat_hosts = property(lambda self: self.network.sat_hosts)
    ground_hosts = property(lambda self: self.network.ground_hosts)
    switches = property(lambda self: self.network.switches)
    bridges = property(lambda self: self.network.bridges)
    group = property(lambda self: self.network.group)
    datapath_type = property(lambda self: self.network.datapath_type)
    nft_table = property(lambda self: self.loss.table)

    @property
    def hosts(self):
        return self.network.hosts

    # --- public API -----------------------------------------------------------------------
    def host_of(self, sat):
        return self.sat_hosts[tuple(sat)]

    @staticmethod
    def ip_of(sat) -> str:
        return sat_ip(tuple(sat))

    def ground_ip(self, k: int) -> str:
        """Address of ground station ``k`` (1-based); a placed station's never changes."""
        if self.ground_segment is not None:
            return station_ip(k)
        return ground_ip(k, tuple(self.cfg.ground[k - 1]))

    def gateway(self, k: int):
        """The satellite serving ground station ``k`` now (None: none in view)."""
        if self.ground_segment is not None:
            return self.ground_segment.current[k]
        return tuple(self.cfg.ground[k - 1])

    def controller_state(self) -> dict | None:
        return controller_proc.read_state(self.state_path)

    def controller_http(self, method: str, path: str, body: dict | None = None,
                        timeout_s: float = 60.0) -> dict:
        """Call the controller's endpoint: GET /state, GET /flows, POST /time {"t_s": x}."""
        return controller_proc.http(self.http_port, method, path, body, timeout_s)

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

    def wait_routed(self, timeout_s: float) -> dict:
        """Wait until the controller reports every switch connected and routed (bounded)."""
        return controller_proc.wait_routed(self.controller, self.state_path, self.ctl_log_path,
                                           self.c.size, timeout_s)

    def wait_generation(self, gen_above: int, timeout_s: float = 5.0) -> dict:
        """Wait until the controller has recomputed past ``gen_above`` and is synced."""
        return controller_proc.wait_generation(self.state_path, gen_above, timeout_s)

    def expect_links_down(self, down) -> None:
        """Announce that exactly ``down`` (frozensets of two satellites) will be down once
        the links now being changed settle: the controller routes once, not per event."""
        self.controller_http("POST", "/expect",
                             {"links_down": [[list(sat) for sat in link] for link in down]},
                             timeout_s=10.0)

    def wait_links_down(self, expected, timeout_s: float = 30.0) -> dict:
        """Wait until the controller's view has exactly ``expected`` links down (a set of
        frozensets) and is synced, i.e. it has rerouted around them."""
        return controller_proc.wait_links_down(self.state_path, expected, timeout_s)

    def start_dynamics(self, echo=None) -> Dynamics:
        """Run the link updater in the background (constellation time advancing at
        ``time_factor``); idempotent: returns the running updater.  ``echo``: callable
        given each step's log line (replaces the updater's, when given)."""
        if self.dynamics is None:
            raise TestbedError("start_dynamics: the testbed is not built")
        if echo is not None:
            self.dynamics.echo = echo
        if not self.dynamics.running:
            self.dynamics.start()
        return self.dynamics

    def stop_dynamics(self) -> None:
        """Stop the background updater (if it runs); the links keep their last state."""
        if self.dynamics is not None:
            self.dynamics.stop()

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
            if self.cfg.require_delay and not shaping.netem_available():
                # refused before waiting for the lock: the answer cannot change meanwhile
                raise TestbedError("require_delay: this kernel has no sch_netem, "
                                   "propagation delay cannot be emulated")
            # Waiting for another network is not part of the build time.
            self.metadata["lock_wait_s"] = round(self._lock.acquire(self.cfg.lock_wait_s), 3)
            t0 = time.monotonic()
            self.network.datapath_type = preflight(self.cfg, self.c, self.group, self.metadata,
                                                   self.echo)
            if self.cluster is not None:
                self.cluster.start()
                self.metadata.update(self.cluster.summary())
            k = self.cfg.ovs_instances
            if k == "auto":  # several servers (topo.cluster): each server's own OVS
                k = 0 if self.cluster else auto_instances(self.c.size, self.metadata["datapath"])
            self.network.ovs_instances = self.metadata["ovs_instances"] = k
            seg = self.ground_segment
            if seg is not None:  # who serves each station at the start (None: no one)
                seg.current = seg.serving_at(self.t_s)
            self._start_controller()
            phase = PhaseTimer(self.metadata.setdefault("build_phases_s", {}))
            # Bridges get their controller only once shaped and with the outage model's
            # links down: the controller then routes once (topo.bridges.connect); with
            # several servers topo.cluster sets the controller itself.
            build(self.network, self.c, self.cfg.ground_sats,
                  self.ctl_port if self.cluster is not None else None, phase,
                  placed=seg.plan_links() if seg is not None else None,
                  cluster=self.cluster)
            self._built = True
            if seg is not None:
                seg.start()  # the stations' namespaces, ground-link rates; write the state
                phase("ground_segment")
            self.apply_initial_shape()
            phase("shaping")
            if self.cluster is None:
                connect(self.network.ovs, self.network.bridges,
                        f"tcp:127.0.0.1:{self.ctl_port}")
                phase("controller_targets")
            self.dynamics = Dynamics(self)
            self.metadata["build_s"] = time.monotonic() - t0
            t1 = time.monotonic()
            self.wait_routed(self.cfg.controller_timeout_s)
            self.metadata["routes_s"] = time.monotonic() - t1
            if self.cfg.ovs_socket_buffers:
                self._enlarge_ovs_buffers()
            if self.cfg.dynamics:
                self.start_dynamics()
        except BaseException:
            self._failed = True  # its logs stay (the error names them)
            self.stop()
            raise
        return self

    def _enlarge_ovs_buffers(self) -> None:
        """Per-link queues instead of one shared send buffer (:mod:`topo.ovs_buffers`):
        userspace datapath, this server's instances only.  vswitchd opens its send socket
        at its first packet out: a ping from one of its bridges' hosts makes sure it has."""
        if self.cluster is not None or self.datapath_type != "netdev":
            return
        out = []
        for inst in self.network.ovs.instances():
            try:
                pid = int(Path(inst.rundir, "ovs-vswitchd.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                out.append({"instance": inst.name, "reason": "no ovs-vswitchd pid file"})
                continue
            mine = [sat for sat in self.sat_hosts if self.network.ovs.of(switch_name(sat)) is inst]
            if mine and not any(s.sender for s in ovs_buffers.sockets(pid)):
                s, o = mine[0]  # out of one of this instance's bridges, to its in-plane neighbour
                self.host_of(mine[0]).cmd(
                    f"ping -c 1 -W 1 {self.ip_of((s % self.c.sats_per_plane + 1, o))}")
            ch = ovs_buffers.enlarge(pid)
            self._ovs_buffer_changes.append(ch)
            out.append({"instance": inst.name, **ch.summary()})
            if ch.reason:
                self.echo(f"ovs socket buffers ({inst.name}): {ch.reason}")
        self.metadata["ovs_socket_buffers"] = out

    def _start_controller(self):
        ctl = controller_proc.launch(
            self.cfg.controller, self.spec_path, self.workdir, self.state_path,
            self.ground_segment.controller_config() if self.ground_segment else None,
            listen_host=self.ctl_listen_host)
        self.controller, self.ctl_port, self.http_port = ctl.proc, ctl.ctl_port, ctl.http_port
        self.ctl_log_path = ctl.log_path

    def apply_initial_shape(self):
        """Shape every ISL and ground link, apply lossy-band loss, take down the links
        the outage model has down at ``t_s``."""
        cfg = self.cfg
        self.shapes = shaping.plan(self.c, self.lm, self.t_s, cfg.rate_scale,
                                   cfg.rate_cap_mbps * 1e6, cfg.rate_floor_mbps * 1e6,
                                   cfg.lossy_loss_pct)
        if cfg.shaping:
            ground_bps = cfg.ground_rate_mbps * 1e6 if cfg.ground_rate_mbps else None
            shaping.apply_initial(self.shapes.values(), self.metadata["netem"],
                                  self.network.ground_links(), ground_bps, run=self.link_batch)
        self.apply_loss(self.shapes)
        shaping.set_down(self.shapes.values(), run=self.link_batch)
        summ = shaping.summary(self.shapes.values())
        summ["rate_cap_bps"] = cfg.rate_cap_mbps * 1e6
        summ["rate_scale"] = cfg.rate_scale
        summ["shaped"] = cfg.shaping
        self.metadata["shaping"] = summ
        if cfg.shaping and summ["capped_links"]:
            self.echo(f"rate cap {cfg.rate_cap_mbps:g} Mbit/s applied to {summ['capped_links']} "
                      f"of {summ['links']} links (model rate above the cap)")

    @property
    def ctl_listen_host(self) -> str:
        """Where the controller listens: the loopback, or the first server's underlay
        address when switches on other servers connect to it."""
        return self.cluster.ctl_host if self.cluster is not None else "127.0.0.1"

    def link_batch(self, tool: str, cmds: list[str], timeout_s: float = 120.0,
                   netns_pid: int | None = None) -> None:
        """An ``ip``/``tc`` batch, each command on the server holding its interface."""
        if self.cluster is not None:
            self.cluster.batch(tool, cmds, timeout_s, netns_pid)
        else:
            shaping.run_batch(tool, cmds, timeout_s, netns_pid)

    def apply_loss(self, shapes) -> int:
        """Bring nftables egress loss in line with the lossy links of ``shapes`` (no netem).

        Returns the number of interfaces changed."""
        if self.metadata.get("loss_emulated") != "nftables":
            return 0
        return self.loss.apply(shapes)

    # --- teardown --------------------------------------------------------------------------------
    def stop(self) -> bool:
        """Remove everything this run created; True when verifiably nothing is left."""
        if self._stopped:
            return self.metadata.get("teardown_clean", False)
        self._stopped = True
        phase = PhaseTimer(self.metadata.setdefault("teardown_phases_s", {}))
        self.stop_dynamics()
        for ch in self._ovs_buffer_changes:
            ovs_buffers.restore(ch)
        if self.ground_segment is not None:
            self.ground_segment.close()
        kill(self.controller)
        phase("controller")
        if self.cluster is not None:  # the other servers first: SSH runs over the underlay
            self.cluster.teardown(self.echo)
            phase("servers")
        if self.cfg.keep_logs or self._failed:   # private OVS logs go with their instance
            for inst in self.network.ovs.instances():
                inst.save_logs(self.workdir)
        teardown(self.network, self.loss, self.cfg.fast_teardown, phase, self.echo)
        self.metadata["teardown_s"] = phase.total_s()
        clean = self.verify_clean()
        self._lock.release()
        if clean and not self.cfg.keep_logs and not (self._failed and self._has_logs()):
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.metadata["teardown_clean"] = clean
        self._built = False
        return clean

    def _has_logs(self) -> bool:
        """Whether the run wrote anything to its directory beyond the spec (a run refused
        before building, e.g. for want of netem, has nothing worth keeping)."""
        try:
            return any(name != SPEC_FILE for name in os.listdir(self.workdir))
        except OSError:
            return False

    def leftovers(self) -> list[str]:
        """What of this run still exists (bridges, links, processes); [] when clean."""
        left = leftovers(self.network, self.loss,
                         self.controller.pid if self.controller is not None else None)
        return left + (self.cluster.leftovers() if self.cluster is not None else [])

    def verify_clean(self) -> bool:
        left = self.leftovers()
        if left:
            self.echo(f"teardown left {len(left)} objects: {', '.join(left[:5])}")
        return not left
