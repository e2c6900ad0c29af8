"""Tear down exactly what one run created, and verify nothing of it is left.

The run's veths go by link group in one kernel batch; its bridges in one OVSDB
transaction (system instance) or by ending its private OVS instances (with kernel RCU
expedited meanwhile: each AF_PACKET socket OVS closes otherwise waits a full grace period); the
nftables loss table by name, and the run's processes by PID.  Never ``mn -c``, never
anything by a broad name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from topo import bridges as ovs_bridges
from topo import shaping
from topo.build import Network
from topo.loss import NftLoss
from topo.ovs_instance import OVSError
from topo.phases import PhaseTimer
from topo.procs import alive


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


def teardown(nw: Network, loss: NftLoss, fast: bool, phase: PhaseTimer, echo) -> None:
    """Delete the run's links, loss table, bridges and host processes (``fast``: with
    kernel RCU expedited, restored afterwards)."""
    old = _rcu_expedited("1") if fast else None
    try:
        if nw.ovs.private:
            # Private instances first: ending ovs-vswitchd drops all its bridges at once
            # (nothing of them is in the kernel), before it would see every veth vanish.
            _remove_bridges(nw, echo)
            phase("bridges")
        elif nw.bridges and nw.datapath_type == "netdev":
            # Bridges made by ovs-vsctl add-br (several servers) have tap devices named
            # like the bridge: tag them so the group delete below removes them in one batch.
            try:
                shaping.run_batch("ip", [f"link set {b} group {nw.group}" for b in nw.bridges])
            except shaping.TcError:
                pass  # none or some never existed: deleted with their bridge instead
        if nw.group:
            subprocess.run(["ip", "link", "del", "group", str(nw.group)],
                           capture_output=True, timeout=120)
        phase("links")
        loss.delete()
        if not nw.ovs.private:
            _remove_bridges(nw, echo)
            phase("bridges")
        here = _local_hosts(nw)  # another server's hosts: its Cluster removes them
        for h in here:
            h.terminate()
        for sw in nw.switches.values():
            sw.terminate()
        deadline = time.monotonic() + 10
        for h in here:
            while alive(h.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            if alive(h.pid):
                os.kill(h.pid, signal.SIGKILL)
        phase("hosts")
    finally:
        if old is not None:
            _rcu_expedited(old)


def _local_hosts(nw: Network) -> list:
    """The hosts whose PIDs are this machine's (not another server's)."""
    return [h for h in nw.hosts if getattr(h, "remote", None) is None]


def _remove_bridges(nw: Network, echo) -> None:
    if nw.bridges or nw.ovs.private:
        try:
            ovs_bridges.remove(nw.ovs, nw.bridges)
        except OVSError as exc:
            echo(f"teardown: {exc}")


def leftovers(nw: Network, loss: NftLoss, controller_pid: int | None) -> list[str]:
    """What of this run still exists (bridges, links, processes, nft table); [] when clean."""
    left = ovs_bridges.leftovers(nw.ovs, nw.bridges)
    res = subprocess.run(["ip", "-o", "link", "show", "group", str(nw.group)],
                         capture_output=True, text=True, timeout=10)
    left += [f"link {ln.split(':')[1].strip()}" for ln in res.stdout.splitlines() if ln]
    bridges = set(nw.bridges)
    res = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10)
    for ln in res.stdout.splitlines():
        name = ln.split(":")[1].strip().split("@")[0]
        if name.rpartition("-eth")[0] in bridges:
            left.append(f"link {name}")
    for h in _local_hosts(nw):
        if alive(h.pid):
            left.append(f"process {h.pid} ({h.name})")
    if loss.exists():
        left.append(f"nftables table netdev {loss.table}")
    if alive(controller_pid):
        left.append(f"process {controller_pid} (controller)")
    return sorted(set(left))
