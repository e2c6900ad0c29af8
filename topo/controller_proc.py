"""The controller process of one run and its HTTP/state client.

:func:`launch` starts ``controller/app.py`` under os-ken (``osken-manager``) or Ryu
(``.venv-ryu``) listening for OpenFlow on a free loopback port, with an HTTP endpoint on
another; the app rewrites ``state_path`` (JSON, atomically) with its view.  The waits
here poll that file and are all bounded; failures raise :class:`TestbedError` in one
line naming the log.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass

from topo.errors import TestbedError
from topo.procs import free_port, tail

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RYU_PYTHON = os.path.join(ROOT, ".venv-ryu", "bin", "python")
OSKEN_MANAGER = "/usr/bin/osken-manager"
SETTLE_MAX_S = 5.0
"""The controller routes a step's port events once none came for a quiet moment, but at
most this long after the first (``controller/app.py``)."""
EXPECT_S_PER_LINK = 0.02
"""An announced step (``POST /expect``) may take this much longer per link it changes."""
REROUTE_BASE_S = 30.0
"""A dynamics step's reroute wait: this, plus EXPECT_S_PER_LINK a changing link, plus
ROUTE_S_PER_SWITCH a switch."""
ROUTE_S_PER_SWITCH = 0.005
"""Allowance per switch for routing and installing one step (72x22: 2.3-2.8 s in all)."""


def _per_link_s(changing_links: int) -> float:
    """EXPECT_S_PER_LINK for each link a step changes."""
    return EXPECT_S_PER_LINK * max(0, int(changing_links))


def expect_window_s(changing_links: int) -> float:
    """Longest wait of the controller for an announced step's port events: SETTLE_MAX_S
    plus EXPECT_S_PER_LINK per link going down or up.  One 72x22 step (288 down, 288 up)
    took 6.2 s to apply, more than SETTLE_MAX_S alone: the controller routed a partial set
    (308 links down) and again once the rest came (45 580 + 86 567 FlowMods where routing
    once changes 56 856).  The window is 16.5 s there, 9.8 s for a 30x30 step (120 + 120)."""
    return SETTLE_MAX_S + _per_link_s(changing_links)


def reroute_timeout_s(changing_links: int, switches: int) -> float:
    """How long a dynamics step waits for the controller to reroute: REROUTE_BASE_S, plus
    the per-link part of the controller's own window (:func:`expect_window_s`), plus
    ROUTE_S_PER_SWITCH per switch; grows with the grid (72x22, 576 links changing: 49.4 s;
    10x10, 40 links: 31.3 s)."""
    return (REROUTE_BASE_S + _per_link_s(changing_links)
            + ROUTE_S_PER_SWITCH * max(0, int(switches)))


@dataclass
class Launched:
    """A started controller: its process, OpenFlow port, HTTP port and log file."""

    proc: subprocess.Popen
    ctl_port: int
    http_port: int
    log_path: str


def launch(runtime: str, spec_path: str, workdir: str, state_path: str,
           stations: list | None = None, ctl_port: int | None = None,
           http_port: int | None = None, log_name: str = "controller.log",
           listen_host: str = "127.0.0.1") -> Launched:
    """Start the controller (``runtime``: "osken" or "ryu") for the constellation spec at
    ``spec_path``; its files go into ``workdir``, its view into ``state_path``.
    stations: the placed ground stations (``topo.ground_segment``), if any.
    ctl_port / http_port: the OpenFlow and HTTP ports (a restart keeps the switches'
    target); free loopback ports when None.  log_name: the log file in ``workdir``.
    listen_host: address the OpenFlow listener binds (another server's switches need the
    first server's underlay address; the port is still chosen free on the loopback)."""
    ctl_port, http_port = ctl_port or free_port(), http_port or free_port()
    ctl_cfg = {"http_port": http_port, "spec": spec_path, "state_path": state_path}
    if stations:
        ctl_cfg["stations"] = stations
    cfg_path = os.path.join(workdir, "controller.json")
    with open(cfg_path, "w") as fh:
        json.dump(ctl_cfg, fh)
    app = os.path.join(ROOT, "controller", "app.py")
    if runtime == "ryu":
        if not os.path.exists(RYU_PYTHON):
            raise TestbedError(f"controller ryu: {RYU_PYTHON} missing (run ./setup.sh)")
        argv = [RYU_PYTHON, os.path.join(ROOT, "controller", "ryu_launcher.py")]
    else:
        argv = [OSKEN_MANAGER]
        if not os.path.exists(argv[0]):
            raise TestbedError("controller osken: /usr/bin/osken-manager missing "
                               "(python3-os-ken, run ./setup.sh)")
    argv += [app, "--ofp-tcp-listen-port", str(ctl_port), "--ofp-listen-host", listen_host]
    env = dict(os.environ, SPACECOMP_CTL_CONFIG=cfg_path,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log_path = os.path.join(workdir, log_name)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Launched(proc, ctl_port, http_port, log_path)


def read_state(state_path: str) -> dict | None:
    """The controller's last written view, or None (not written yet / unreadable)."""
    try:
        with open(state_path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def http(port: int, method: str, path: str, body: dict | None = None,
         timeout_s: float = 60.0) -> dict:
    """Call the controller's endpoint: GET /state, GET /flows, POST /time {"t_s": x},
    POST /expect {"links_down": [[[sat, orb], [sat, orb]], ...]}."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def wait_routed(proc, state_path: str, log_path: str, n_switches: int,
                timeout_s: float) -> dict:
    """Wait until the controller reports every switch connected and routed (bounded)."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TestbedError(f"controller exited with {proc.returncode}: {tail(log_path)}")
        state = read_state(state_path)
        if state and state.get("synced"):
            return state
        time.sleep(0.05)
    got = len(state["connected"]) if state else 0
    why = f"; {state['error']}" if state and state.get("error") else ""
    raise TestbedError(f"controller did not route the network within {timeout_s:.0f} s "
                       f"({got} of {n_switches} switches connected{why}; log {log_path})")


def wait_resynced(proc, state_path: str, log_path: str, timeout_s: float) -> dict:
    """Wait until the controller process ``proc`` (a restarted one) reports every switch
    connected, read back and in line (its own view, not its predecessor's)."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TestbedError(f"controller exited with {proc.returncode}: {tail(log_path)}")
        state = read_state(state_path)
        if state and state.get("pid") == proc.pid and state.get("synced"):
            return state
        time.sleep(0.02)
    got = len(state["connected"]) if state and state.get("pid") == proc.pid else 0
    raise TestbedError(f"restarted controller did not re-sync within {timeout_s:.0f} s "
                       f"({got} switches connected; log {log_path})")


def wait_generation(state_path: str, gen_above: int, timeout_s: float = 5.0) -> dict:
    """Wait until the controller has recomputed past ``gen_above`` and is synced."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = read_state(state_path)
        if st and st["generation"] > gen_above and st["synced"]:
            return st
        time.sleep(0.01)
    raise TestbedError(f"controller did not recompute within {timeout_s} s")


def wait_links_down(state_path: str, expected, timeout_s: float = 30.0) -> dict:
    """Wait until the controller's view has exactly ``expected`` links down (a set of
    frozensets) and is synced, i.e. it has rerouted around them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = read_state(state_path)
        if st and st["synced"] and not st.get("recompute_pending") and \
                {frozenset(map(tuple, l)) for l in st["links_down"]} == set(expected):
            return st
        time.sleep(0.01)
    raise TestbedError(f"controller did not reroute around {len(expected)} links "
                       f"within {timeout_s} s")
