"""Time-stepped link dynamics: move every ISL with the orbit, apply only what changed.

Each step advances constellation time (``t = start + time_factor * wall elapsed``,
or an explicit ``t_s``), recomputes every link's shape with
:func:`topo.shaping.plan` (length -> Shannon rate, d/c delay, cross-over state)
and applies the difference to the running testbed:

* rate changes beyond ``rate_tolerance`` (relative) -> ``tc class change`` on both
  ends, all links in one ``tc -batch``;
* delay/loss changes -> ``tc qdisc change`` of the netem child (only with netem);
  without netem, loss on lossy links -> nftables egress drop chains (one ``nft -f``);
* cross-over outages -> ``ip link set down/up`` on both ends, one ``ip -batch``;
  the controller sees the port status and reroutes;
* with ``route_with_time`` the controller is told the new time (POST /time) and
  moves the plane changes of its Manhattan routes with the orbit;
* placed ground stations are handed over first (:mod:`topo.ground_segment`: the ground
  link to the new gateway up and the old one down, the controller's routes to the station moved).

Every step is logged as one line (and kept in ``history``) with what changed and
how long applying it took.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from topo import controller_proc, shaping


@dataclass
class StepReport:
    """What one step changed: t_s constellation time; counts; apply_s wall time to apply."""

    t_s: float
    rate_changes: int = 0
    delay_changes: int = 0
    loss_changes: int = 0
    flows_changed: int = 0
    reroute_s: float = 0.0
    route_s: float = 0.0
    went_down: list = field(default_factory=list)
    came_up: list = field(default_factory=list)
    compute_s: float = 0.0
    apply_s: float = 0.0
    commands: int = 0
    handovers: list = field(default_factory=list)  # topo.ground_segment.AppliedHandover

    def line(self) -> str:
        return (f"dynamics t={self.t_s:9.1f}s rate={self.rate_changes} delay={self.delay_changes} "
                f"loss={self.loss_changes} down+={len(self.went_down)} up+={len(self.came_up)} "
                f"cmds={self.commands} "
                f"compute={self.compute_s * 1e3:.1f}ms apply={self.apply_s * 1e3:.1f}ms "
                f"reroute={self.reroute_s * 1e3:.1f}ms flows={self.flows_changed} "
                f"route={self.route_s * 1e3:.1f}ms"
                + (f" handovers={len(self.handovers)} "
                   f"handover={max(h.apply_s for h in self.handovers) * 1e3:.1f}ms"
                   if self.handovers else ""))


class Dynamics:
    """Updater bound to a started :class:`topo.testbed.Testbed`, made by the testbed
    (``testbed.dynamics``): ``step(t_s)`` applies one instant; the testbed's
    ``start_dynamics()`` runs steps in the background and its teardown stops them.

    rate_tolerance: relative rate change below which a link is left alone (htb's
        own granularity is coarser than continuous orbital motion).
    echo: callable for the per-step log line (None: keep only ``history``).
    """

    def __init__(self, testbed, rate_tolerance: float = 0.01, echo=None):
        self.tb = testbed
        self.cfg = testbed.cfg
        self.rate_tolerance = rate_tolerance
        self.echo = echo
        self.applied = dict(testbed.shapes)  # what the kernel has now
        self.history: list[StepReport] = []
        self._thread = None
        self._stop = threading.Event()
        self._t0_wall = None

    def plan(self, t_s: float):
        cfg = self.cfg
        return shaping.plan(self.tb.c, self.tb.lm, t_s, cfg.rate_scale, cfg.rate_cap_mbps * 1e6,
                            cfg.rate_floor_mbps * 1e6, cfg.lossy_loss_pct)

    def step(self, t_s: float) -> StepReport:
        """Bring every link to its state at constellation time ``t_s``."""
        rep = StepReport(t_s)
        segment = getattr(self.tb, "ground_segment", None)
        if segment is not None:  # first: a station must not wait for the links' update
            rep.handovers = segment.step(t_s, self.tb.echo)
        t0 = time.monotonic()
        target = self.plan(t_s)
        netem = self.tb.metadata.get("netem", False) and self.cfg.shaping
        tc_cmds, ip_cmds = [], []
        for key, new in target.items():
            old = self.applied[key]
            if self.cfg.shaping and abs(new.rate_bps - old.rate_bps) > self.rate_tolerance * old.rate_bps:
                for intf in (new.intf_a, new.intf_b):
                    tc_cmds += shaping.htb_change(intf, new.rate_bps)
                rep.rate_changes += 1
            else:
                new = _replace_rate(new, old.rate_bps)  # remember what the kernel really has
            if netem and (abs(new.delay_s - old.delay_s) > 1e-6 or new.loss_pct != old.loss_pct):
                for intf in (new.intf_a, new.intf_b):
                    tc_cmds += shaping.netem_change(intf, new.delay_s, new.loss_pct)
                rep.delay_changes += 1
            if (new.state == "down") != (old.state == "down"):
                verb = "down" if new.state == "down" else "up"
                ip_cmds += [f"link set {new.intf_a} {verb}", f"link set {new.intf_b} {verb}"]
                (rep.went_down if verb == "down" else rep.came_up).append((new.a, new.b))
            target[key] = new
        rep.compute_s = time.monotonic() - t0
        t1 = time.monotonic()
        run = getattr(self.tb, "link_batch", shaping.run_batch)  # several servers: each its own
        run("tc", tc_cmds)
        loss_changes = self.tb.apply_loss(target)  # nftables loss where netem is missing
        moved = bool(rep.went_down or rep.came_up)
        down = {k for k, v in target.items() if v.state == "down"}
        if moved:  # the controller routes once all of them have taken effect
            self._announce(down)
        run("ip", ip_cmds)
        if moved:  # again, now that every change is made: the controller's window restarts
            self._announce(down)  # (a loaded 72x22 step's apply outlasted the first one)
        rep.apply_s = time.monotonic() - t1
        rep.loss_changes = loss_changes
        rep.commands = len(tc_cmds) + len(ip_cmds) + loss_changes
        if moved:
            t2 = time.monotonic()
            # Bounded by the grid and the step's size (controller_proc.reroute_timeout_s).
            self.tb.wait_links_down(down, timeout_s=controller_proc.reroute_timeout_s(
                len(rep.went_down) + len(rep.came_up), self.tb.c.size))
            rep.reroute_s = time.monotonic() - t2
        if self.cfg.route_with_time:
            t2 = time.monotonic()
            rep.flows_changed = self.tb.set_time(t_s)
            rep.route_s = time.monotonic() - t2
        self.applied = target
        self.tb.shapes = target
        self.tb.t_s = t_s
        self.history.append(rep)
        if self.echo:
            self.echo(rep.line())
        return rep

    def _announce(self, down) -> None:
        """Tell the controller which links will be down (best effort: without it the
        controller still routes, once the port events stop coming)."""
        expect = getattr(self.tb, "expect_links_down", None)
        if expect is None:
            return
        try:
            expect(down)
        except (OSError, ValueError) as exc:  # URLError, HTTPError, no endpoint
            if self.echo:
                self.echo(f"dynamics: controller not told the step's links ({exc})")

    # --- background updater ---------------------------------------------------------------
    def now_s(self) -> float:
        """Constellation time now: start + time_factor x wall time since start()."""
        return self.cfg.start_time_s + self.cfg.time_factor * (time.monotonic() - self._t0_wall)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self):
        if self.running:
            return
        self._t0_wall = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dynamics", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.cfg.step_s):
            try:
                self.step(self.now_s())
            except Exception as exc:  # keep the testbed alive; say what failed
                if self.echo:
                    self.echo(f"dynamics step failed: {exc}")

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def _replace_rate(shape, rate_bps):
    from dataclasses import replace
    return replace(shape, rate_bps=rate_bps)
