"""Open vSwitch daemon control: make sure OVS runs and choose its datapath.

There is no systemd on the target machines, so OVS is started with Debian's
``ovs-ctl start`` when ``ovs-vsctl`` cannot reach the database.  The kernel
datapath is used when the ``openvswitch`` module is (or can be) loaded; otherwise
the userspace datapath (``datapath_type=netdev``, Mininet's ``datapath=user``).
Every wait here is bounded; failures raise :class:`OVSError` with one line.  Private
instances and direct database transactions: :mod:`topo.ovs_instance`.
"""

from __future__ import annotations

import os
import subprocess
import time

from topo.ovs_instance import SYSTEM, OVSError  # noqa: F401  (OVSError: part of this API)

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


def _run(args, timeout_s: float = 10.0) -> subprocess.CompletedProcess:
    return SYSTEM.run(list(args), timeout_s=timeout_s)


def running() -> bool:
    """True when the system instance's ovsdb-server and ovs-vswitchd both answer."""
    return SYSTEM.running()


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
    """Run one ``ovs-vsctl`` transaction on the system instance (``args`` already split,
    ``--`` separated)."""
    return SYSTEM.vsctl(*args, timeout_s=timeout_s)


def bridges() -> list[str]:
    """Names of all bridges of the system instance."""
    return SYSTEM.bridges()
