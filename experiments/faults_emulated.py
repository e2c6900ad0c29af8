"""The fault schedule of :mod:`experiments.faults` on an emulated network.

    python3 -m experiments.faults TESTBED_CONFIG [--config experiments/faults.yaml] [--json]

Builds the testbed of ``TESTBED_CONFIG`` (``topo.config``; 5x5 unless it says otherwise)
and starts **one node daemon per satellite host** (``EmulatedNodes(per_process=1)``), so
killing a role's node (SIGKILL to that satellite's daemon, by PID) takes out exactly one
satellite, as on the loopback; a killed daemon is restarted inside its host between
jobs.  (The per-plane processes of ``node_app.multi`` are not used here: killing one
would take out a whole plane.)  The jobs are submitted from the first ground station's
host, so every frame crosses the emulated ISLs.  The schedule's ``emulated:`` section
replaces its keys (a 5x5 cannot hold 11 collectors).  After the fault jobs, two more
fault kinds, each in jobs of its own, at a random moment of the job (the same window as
the role kills):

* ``kill_controller``: the controller process SIGKILLed and started again on the same
  ports (:func:`topo.faults.restart_controller`); the bridges keep forwarding on their
  flows (``fail_mode=secure``) and the new controller re-syncs without a wipe.
  ``recovery_s``: kill to every switch re-synced.
* ``flap_link``: a random ISL (not one already down) down on both ends for ``flap_s``,
  then up (:func:`topo.faults.flap_link`).  ``recovery_s``: down to rerouted.

The controller and the links are changed from a worker thread in the root network
namespace; the jobs' event loop runs in the ground host's namespace.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import queue
import random
import threading

from experiments import common, faults
from experiments.common import UsageError

EMULATED_DEFAULTS = {"controller_kills": 2, "link_flaps": 2, "flap_s": 1.0}


def load(tb_path, schedule_path, overrides: dict):
    """(testbed config, schedule) for an emulated run; UsageError on bad input."""
    from topo import config as tc
    tb_cfg = tc.load(str(tb_path))
    if tb_cfg.ground_stations:
        raise UsageError("ground_stations: the fault run needs pinned ground stations "
                         "(ground: [[sat, orb]]), not placed ones")
    given = {k: v for k, v in overrides.items() if v is not None and k != "grid"}
    cfg = faults.load(schedule_path, {**given, "grid": tb_cfg.grid})
    emu = cfg.pop("emulated") or {}
    if not isinstance(emu, dict):
        raise UsageError("emulated: must be a mapping of schedule keys")
    known = (set(faults.DEFAULTS) - {"grid", "emulated", "per_process"}) | set(EMULATED_DEFAULTS)
    unknown = sorted(set(emu) - known)
    if unknown:
        raise UsageError(f"emulated: unknown key {unknown[0]!r}")
    cfg = {**cfg, **EMULATED_DEFAULTS, **emu, **given}
    common.check_ints(cfg, ["minsat", "maxsat", "collectors", "phase_timeout_s",
                            "job_timeout_s", "max_collect"])
    common.check_ints(cfg, ["jobs", "stall_every", "concurrent", "seed", "controller_kills",
                            "link_flaps"], minimum=0)
    flap = cfg["flap_s"]
    if isinstance(flap, bool) or not isinstance(flap, (int, float)) or not 0 < flap <= 60:
        raise UsageError(f"flap_s: {flap!r} must be a number in (0, 60]")
    if cfg["maxsat"] > min(tb_cfg.planes, tb_cfg.sats_per_plane):
        raise UsageError(f"maxsat: {cfg['maxsat']} is outside the {tb_cfg.grid} grid")
    return tb_cfg, cfg


class RootWorker:
    """A thread of the root network namespace running blocking calls (controller
    restarts, ``ip link``) for an event loop that runs in a host's namespace (threads
    inherit the namespace of the thread that starts them, so it is started here)."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="root-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            fut, fn, args = item
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args))
                except BaseException as e:  # handed to the awaiting job
                    fut.set_exception(e)

    def call(self, fn, *args) -> asyncio.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self.q.put((fut, fn, args))
        return asyncio.wrap_future(fut)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(60)


class EmuNodes(faults.DaemonSet):
    """The fault run's view of the emulated daemons (the interface of faults.Nodes)."""

    def __init__(self, tb, en):
        self.tb, self.en = tb, en
        self.los = tuple(tb.cfg.ground[0])
        self.dead: set = set()
        self.rss_max_kb = 0
        self.restarts = 0

    key = property(lambda self: self.en.key)

    def addr(self, sat):
        return self.en.addr_map.addr(sat)

    def describe(self) -> str:
        return (f"{len(self.en.pids())} daemons (one per satellite host) up in "
                f"{self.en.startup_s:.1f} s on an emulated {self.tb.cfg.grid}")

    def pid(self, sat) -> int:
        """The PID the daemon wrote to its ready file (the process that listens), else
        the PID its host started."""
        try:
            with open(os.path.join(self.en.run_dir, "ready", f"{sat[0]}-{sat[1]}")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return self.en.procs[sat].pid

    def all_pids(self) -> set:
        return {self.pid(sat) for sat in self.en.procs}

    def restart_dead(self) -> None:
        for sat in sorted(self.dead):
            self.en.restart(sat)
            self.restarts += 1
        self.dead.clear()

    def stop(self) -> None:
        """Nothing here: the daemons and the network are stopped by :func:`run_emulated`."""


def pick_link(tb, rng: random.Random, los) -> tuple:
    """A random ISL that is up and does not touch the coordinator ``los``."""
    from topo import controller_proc
    st = controller_proc.read_state(tb.state_path) or {}
    down = {frozenset(map(tuple, link)) for link in st.get("links_down", [])}
    links = [(a, b) for a, b, _kind in tb.c.isls()
             if los not in (a, b) and frozenset((a, b)) not in down]
    return rng.choice(links)


async def network_faults(tb, root: RootWorker, echo, nodes, cfg, rng, exact, window,
                         rows, fault_log) -> None:
    """Jobs with the controller killed and restarted, then jobs with an ISL flapped, each
    at a random moment of the job's first ``window`` seconds after planning."""
    from topo import faults as tf
    addr = nodes.addr(nodes.los)
    kinds = ["kill_controller"] * cfg["controller_kills"] + ["flap_link"] * cfg["link_flaps"]
    loop = asyncio.get_running_loop()
    for kind in kinds:
        k = len(rows)
        pending = []

        def fire(kind=kind):
            if kind == "kill_controller":
                pending.append((kind, None, root.call(tf.restart_controller, tb, 0.0, 60.0)))
            else:
                a, b = pick_link(tb, rng, nodes.los)
                pending.append((kind, [list(a), list(b)],
                                root.call(tf.flap_link, tb, a, b, cfg["flap_s"])))
        moment = rng.uniform(0, window)
        timer = []

        def planned(_plan):
            timer.append(loop.call_later(moment, fire))
        row = await faults.one_job(addr, 40000 + k,
                                   faults.submit_ext(cfg, cfg["seed"] * 1000 + k, nodes.los),
                                   exact, cfg["job_timeout_s"], nodes.key, planned)
        for t in timer:
            t.cancel()
        for what_kind, what, fut in pending:
            try:
                res = await fut
                rec = (res["absent_s"] + res["resync_s"] if what_kind == "kill_controller"
                       else res["reroute_down_s"])
                fault_log.append({"job": k, "kind": what_kind, "role": None, "sat": what,
                                  "recovery_s": round(rec, 3), "detail": res})
            except Exception as e:  # noqa: BLE001  (TestbedError or any other: recorded, the run goes on)
                fault_log.append({"job": k, "kind": what_kind, "role": None, "sat": what,
                                  "recovery_s": None, "error": str(e)})
                row["fault_error"] = str(e)
        row["faults"] = [p[0] for p in pending]
        row["k"] = k
        rows.append(row)
        echo(f"job {k + 1} ({kind}): {row['outcome']} in {row['wall_s']:.2f} s, faults "
             f"{row['faults']}" + (f" ({row.get('error') or row.get('fault_error')})"
                                   if row.get("error") or row.get("fault_error") else ""))
        await asyncio.sleep(0.5)


def run_emulated(tb_cfg, cfg: dict, out_dir, echo) -> tuple[dict, list]:
    """Build the testbed, start a daemon per satellite host, run the schedule from the
    ground host's namespace; (metrics, job rows).  TestbedError when it cannot build."""
    from node_app.emulated import EmulatedNodes
    from topo import netns
    from topo.testbed import Testbed
    root = RootWorker()
    try:
        with Testbed(tb_cfg, echo=echo) as tb:
            with EmulatedNodes(tb, str(out_dir / "emulated"), per_process=1) as en:
                nodes = EmuNodes(tb, en)
                ground_ns = f"/proc/{tb.ground_hosts[0].pid}/ns/net"
                extra = functools.partial(network_faults, tb, root, echo)
                metrics, rows = netns.run_in(ground_ns, asyncio.run,
                                             faults.run(cfg, out_dir, echo, nodes, extra))
                metrics["emulated"] = {
                    "daemons": "one per satellite host (a kill takes out one satellite)",
                    "daemon_restarts": nodes.restarts,
                    "netem": tb.metadata.get("netem"), "build_s": tb.metadata.get("build_s"),
                    "controller": tb_cfg.controller}
    finally:
        root.close()
    return metrics, rows
