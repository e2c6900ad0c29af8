"""Open vSwitch daemon control: make sure OVS runs and choose its datapath.

There is no systemd on the target machines, so OVS is started with Debian's
``ovs-ctl start`` when ``ovs-vsctl`` cannot reach the database.  The kernel
datapath is used when the ``openvswitch`` module is (or can be) loaded; otherwise
the userspace datapath (``datapath_type=netdev``, Mininet's ``datapath=user``).
Every wait here is bounded; failures raise :class:`OVSError` with one line.
"""

from __future__ import annotations

import os
import subprocess
import time

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


class OVSError(RuntimeError):
    """Open vSwitch is missing or cannot be started."""


def _run(args, timeout_s: float = 10.0) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError as exc:
        raise OVSError(f"{args[0]} not found: install openvswitch-switch (setup.sh)") from exc
    except subprocess.TimeoutExpired as exc:
        raise OVSError(f"{' '.join(args[:3])} did not answer within {timeout_s:.0f} s") from exc


def running() -> bool:
    """True when ovsdb-server and ovs-vswitchd both answer."""
    try:
        db = _run(["ovs-vsctl", "--timeout=2", "show"], timeout_s=4)
        sw = _run(["ovs-appctl", "--timeout=2", "-t", "ovs-vswitchd", "version"], timeout_s=4)
    except OVSError:
        return False
    return db.returncode == 0 and sw.returncode == 0


def kernel_datapath_available() -> bool:
    """True when the openvswitch kernel module is loaded or loads now."""
    if os.path.isdir("/sys/module/openvswitch"):
        return True
    try:
        return _run(["modprobe", "-q", "openvswitch"], timeout_s=10).returncode == 0
    except OVSError:
        return False


def datapath() -> str:
    """``"kernel"`` or ``"user"``: the datapath this machine supports."""
    return "kernel" if kernel_datapath_available() else "user"


def ensure_running(timeout_s: float = 30.0) -> bool:
    """Start OVS with ``ovs-ctl start`` unless it already runs; bounded by ``timeout_s``.

    Returns True when this call started it.  ovs-ctl only warns when the kernel
    module is missing; the userspace datapath does not need it."""
    if running():
        return False
    if not os.path.exists(OVS_CTL):
        raise OVSError(f"{OVS_CTL} missing: install openvswitch-switch (setup.sh)")
    args = [OVS_CTL, "start", "--system-id=random"]
    res = _run(args, timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if running():
            return True
        time.sleep(0.2)
    tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
    raise OVSError(f"Open vSwitch did not start within {timeout_s:.0f} s: {tail[0]}")


def vsctl(*args: str, timeout_s: float = 120.0) -> str:
    """Run one ``ovs-vsctl`` transaction (``args`` already split, ``--`` separated)."""
    res = _run(["ovs-vsctl", f"--timeout={int(timeout_s)}", *args], timeout_s=timeout_s + 5)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no message"])[-1]
        raise OVSError(f"ovs-vsctl failed: {last}")
    return res.stdout


def bridges() -> list[str]:
    """Names of all OVS bridges."""
    return vsctl("list-br", timeout_s=10).split()
