"""Controller and switch faults on a built testbed: kill and restart the controller, flap
a bridge's controller connection, flap ISLs, and watch that flows survive.

The bridges run in ``fail_mode=secure``: while their controller is away they keep
forwarding on the flows they hold, and when it is back the controller reads each table
back and sends only the difference (``controller/app.py``, :mod:`controller.resync`),
so a running job's traffic never meets an empty table.

* :func:`restart_controller` kills the controller process by PID (SIGKILL: no goodbye)
  and starts a new one on the same OpenFlow and HTTP ports; the switches reconnect by
  themselves (OVS's reconnect backoff decides how soon);
* :func:`flap_bridge_controller` cuts a bridge's controller connection: its target is
  pointed at a loopback port where nothing listens, then back (removing the target
  instead, ``ovs-vsctl del-controller``, makes OVS itself flush the bridge's flows when
  its last controller goes: that is not a controller fault);
* :func:`flap_link` takes both ends of an ISL down and up again (``ip link``): the
  controller routes around it and back;
* :class:`FlowWatch` samples the flow counts of some bridges (``ovs-ofctl``) in a
  background thread: the smallest count seen says whether a table was ever emptied;
  :func:`flow_ages_s` gives the age of every IPv4 flow of a bridge (a flow re-added
  is young again).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

from topo import controller_proc
from topo.ovs_instance import SYSTEM, OVSError
from topo.addressing import EAST_PORT, NORTH_PORT, SOUTH_PORT, WEST_PORT, port_towards, switch_name
from topo.errors import TestbedError

ISL_PORTS = (EAST_PORT, WEST_PORT, SOUTH_PORT, NORTH_PORT)
_DURATION = re.compile(r"duration=([0-9.]+)s")


def restart_controller(tb, down_s: float = 0.0, timeout_s: float = 60.0) -> dict:
    """Kill ``tb``'s controller (SIGKILL, by PID), leave the switches without one for
    ``down_s``, start a new one on the same ports and wait until it has read back and
    re-synced every switch.  Returns figures: ``old_pid``, ``new_pid``, ``absent_s``
    (kill to new process started), ``resync_s`` (new process started to re-synced),
    ``flow_mods`` and ``tables_read`` from the new controller's view."""
    if tb.controller is None or tb.controller.poll() is not None:
        raise TestbedError("restart_controller: no controller running")
    old = tb.controller
    t0 = time.monotonic()
    os.kill(old.pid, signal.SIGKILL)
    old.wait(10)
    time.sleep(down_s)
    tb.restarts = getattr(tb, "restarts", 0) + 1
    seg = tb.ground_segment
    ctl = controller_proc.launch(tb.cfg.controller, tb.spec_path, tb.workdir, tb.state_path,
                                 seg.controller_config() if seg else None,
                                 ctl_port=tb.ctl_port, http_port=tb.http_port,
                                 log_name=f"controller-restart{tb.restarts}.log",
                                 listen_host=tb.ctl_listen_host)
    t1 = time.monotonic()
    tb.controller, tb.ctl_log_path = ctl.proc, ctl.log_path
    state = controller_proc.wait_resynced(ctl.proc, tb.state_path, ctl.log_path, timeout_s)
    return {"old_pid": old.pid, "new_pid": ctl.proc.pid, "absent_s": round(t1 - t0, 3),
            "resync_s": round(time.monotonic() - t1, 3), "flow_mods": state["flow_mods"],
            "tables_read": state["tables_read"]}


def flap_bridge_controller(tb, sat, down_s: float = 1.0, timeout_s: float = 30.0) -> dict:
    """Cut satellite ``sat``'s bridge from the controller for ``down_s`` (its target set to
    a loopback port where nothing listens), set it back and wait until the controller has
    read its table back and is synced again.  Returns ``reconnect_s`` and the view's
    ``flow_mods`` before and after."""
    from topo.procs import free_port
    br = switch_name(tuple(sat))
    before = controller_proc.read_state(tb.state_path) or {}
    inst = tb.network.ovs.of(br)  # the OVS instance holding the bridge
    target = inst.vsctl("get-controller", br, timeout_s=10).split()[0]  # set back as it was
    inst.vsctl("set-controller", br, f"tcp:127.0.0.1:{free_port()}", timeout_s=10)
    time.sleep(down_s)
    t0 = time.monotonic()
    inst.vsctl("set-controller", br, target, timeout_s=10)
    deadline = t0 + timeout_s
    while time.monotonic() < deadline:
        st = controller_proc.read_state(tb.state_path) or {}
        if st.get("tables_read", 0) > before.get("tables_read", 0) and st.get("synced"):
            return {"bridge": br, "reconnect_s": round(time.monotonic() - t0, 3),
                    "flow_mods_before": before.get("flow_mods"),
                    "flow_mods_after": st["flow_mods"]}
        time.sleep(0.02)
    raise TestbedError(f"bridge {br} was not re-synced within {timeout_s:.0f} s of "
                       f"reconnecting")


def _isl_intfs(tb, a, b) -> list[str]:
    """Both ends' interface names of the ISL between satellites ``a`` and ``b``."""
    c = tb.c
    return [tb.switches[x].intfs[port_towards(c, x, y)].name for x, y in ((a, b), (b, a))]


def flap_link(tb, a, b, down_s: float = 1.0, timeout_s: float = 30.0) -> dict:
    """Take the ISL ``a``-``b`` down on both ends for ``down_s`` and up again, waiting
    each time until the controller has rerouted (its synced view lists the link down,
    then no longer; other links may come and go meanwhile, e.g. with dynamics).  Returns
    ``reroute_down_s`` and ``reroute_up_s``."""
    a, b = tuple(a), tuple(b)
    intfs = _isl_intfs(tb, a, b)
    link = frozenset((a, b))
    out = {"link": [list(a), list(b)]}
    for state, want_down, key in (("down", True, "reroute_down_s"),
                                  ("up", False, "reroute_up_s")):
        t0 = time.monotonic()
        for intf in intfs:
            subprocess.run(["ip", "link", "set", "dev", intf, state], check=True,
                           capture_output=True, timeout=10)
        while True:
            st = controller_proc.read_state(tb.state_path) or {}
            down = {frozenset(map(tuple, x)) for x in st.get("links_down", [])}
            if st.get("synced") and not st.get("recompute_pending") and \
                    (link in down) == want_down:
                break
            if time.monotonic() - t0 > timeout_s:
                raise TestbedError(f"controller did not route {'around' if want_down else 'back over'} "
                                   f"{out['link']} within {timeout_s:.0f} s")
            time.sleep(0.01)
        out[key] = round(time.monotonic() - t0, 3)
        if state == "down":
            time.sleep(down_s)
    return out


def _dump(br: str, timeout_s: float = 10.0, ovs_of=None) -> str:
    inst = ovs_of(br) if ovs_of else SYSTEM
    try:
        res = inst.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", br], timeout_s=timeout_s)
    except OVSError:
        return ""
    return res.stdout if res.returncode == 0 else ""


def flow_ages_s(br: str, ovs_of=None) -> list[float]:
    """Age (``duration``) of every flow of bridge ``br`` now, in seconds; ``ovs_of``:
    bridge -> the OvsInstance holding it (``tb.network.ovs.of``; default the system's)."""
    return [float(m.group(1)) for m in _DURATION.finditer(_dump(br, ovs_of=ovs_of))]


class FlowWatch:
    """Sample how many flows each of ``bridges`` holds, every ``every_s``, until
    :meth:`stop`; ``min_flows`` is the smallest count seen per bridge (0: emptied);
    ``ovs_of``: bridge -> the OvsInstance holding it (default: the system's)."""

    def __init__(self, bridges: list[str], every_s: float = 0.05, ovs_of=None):
        self.bridges = list(bridges)
        self.ovs_of = ovs_of
        self.every_s = every_s
        self.min_flows = {br: None for br in self.bridges}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flowwatch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for br in self.bridges:
                n = len(_DURATION.findall(_dump(br, ovs_of=self.ovs_of)))
                old = self.min_flows[br]
                self.min_flows[br] = n if old is None else min(old, n)
            self.samples += 1
            self._stop.wait(self.every_s)

    def __enter__(self) -> "FlowWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
