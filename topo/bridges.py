"""The run's OVS bridges: on which Open vSwitch instance each lives, created and removed in
one direct OVSDB transaction per instance.

By default every bridge lives in the machine's (system) instance.  With ``ovs_instances:
k > 0`` the run starts k private instances (:class:`topo.ovs_instance.OvsInstance`, its
ovs-vswitchd with the dummy-class userspace datapath, so bridges make no tap devices and
instances never clash on the ``ovs-netdev`` device) and gives each a contiguous block of
planes; links between blocks are ordinary veths.  Teardown of a private instance is
ending its two processes (nothing of it lives in the kernel).

:class:`OvsPlacement` answers "which instance holds bridge X" for everything that talks to
OVS (build, teardown, check's flow dumps, faults).
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from dataclasses import dataclass, field

from topo import ovsdb_ops
from topo.ovs_instance import SYSTEM, OVSError, OvsInstance
from topo.procs import alive

AUTO_PRIVATE_ABOVE_SATS = 400
"""``ovs_instances: auto`` starts private instances above this many satellites."""

SATS_PER_INSTANCE = 100
"""``ovs_instances: auto``: about this many bridges per private instance.  A userspace
datapath's one forwarding thread polls every port of its instance on each wake-up, so a
packet waits about one such pass per hop: on an idle 72x22, 4 instances (396 bridges each)
gave 15-34 ms of ping RTT per hop (1.6 s over 47 hops), 16 instances (99 each) 3.5 ms
(0.17 s), with about the same build time (49.5-53 s)."""


def auto_instances(satellites: int, datapath: str) -> int:
    """Private instances ``ovs_instances: auto`` chooses: none (the system instance) for
    grids up to AUTO_PRIVATE_ABOVE_SATS satellites or with the kernel datapath, else one per
    SATS_PER_INSTANCE satellites."""
    if datapath != "user" or satellites <= AUTO_PRIVATE_ABOVE_SATS:
        return 0
    return -(-satellites // SATS_PER_INSTANCE)


@dataclass
class OvsPlacement:
    """Which OVS instance holds each bridge.  ``private``: the instances this run started
    (empty: all bridges are in the system instance)."""

    private: list = field(default_factory=list)
    by_bridge: dict = field(default_factory=dict)

    def of(self, bridge: str) -> OvsInstance:
        """The instance holding ``bridge`` (the system one unless placed elsewhere)."""
        return self.by_bridge.get(bridge, SYSTEM)

    def instances(self) -> list[OvsInstance]:
        """Every instance this run uses."""
        return list(self.private) or [SYSTEM]

    def grouped(self, bridges) -> dict:
        """``{instance: [bridge, ...]}`` in the order given."""
        out: dict = {}
        for b in bridges:
            out.setdefault(self.of(b), []).append(b)
        return out


def start_private(place: OvsPlacement, k: int, planes: int, bridge_plane: dict,
                  parent: str) -> None:
    """Start ``k`` private instances under ``parent`` and place each bridge (``bridge_plane``:
    ``{bridge: plane}``, planes 1-based) in the instance of its block of planes."""
    for i in range(k):
        inst = OvsInstance.private_instance(f"{i}", parent=parent)
        place.private.append(inst)  # recorded first: a failed start is still stopped
        inst.start()
    for br, orb in bridge_plane.items():
        place.by_bridge[br] = place.private[(orb - 1) * k // planes]


def create(place: OvsPlacement, rows: list, timeout_s: float = 600.0) -> dict:
    """Create ``rows`` (:class:`topo.ovsdb_ops.BridgeRow`): one transaction per instance, the
    instances in parallel; returns once every ovs-vswitchd has applied its bridges.
    Returns ``{instance name: seconds}``."""
    groups: dict = {}
    for row in rows:
        groups.setdefault(place.of(row.name), []).append(row)

    def one(inst: OvsInstance, its_rows: list):
        t0 = time.monotonic()
        res = inst.transact(ovsdb_ops.add_bridges(its_rows), timeout_s=timeout_s)
        inst.wait_applied(res[-1]["rows"][0]["next_cfg"], timeout_s=timeout_s)
        return inst.name, time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(max(1, len(groups))) as pool:
        futs = [pool.submit(one, inst, r) for inst, r in groups.items()]
        return dict(f.result() for f in futs)


def connect(place: OvsPlacement, bridges: list[str], target: str,
            timeout_s: float = 300.0) -> None:
    """Point every bridge of ``bridges`` at controller ``target``: one transaction per
    instance.  The build connects bridges only once their links are shaped and the
    outage model's links are down, so the controller reads every port's state when the
    switch connects and routes once, instead of rerouting for each port that goes down
    while thousands of switches are still connecting."""
    for inst, names in place.grouped(bridges).items():
        res = inst.transact(ovsdb_ops.set_controllers(names, target), timeout_s=timeout_s)
        inst.wait_applied(res[-1]["rows"][0]["next_cfg"], timeout_s=timeout_s)


def remove(place: OvsPlacement, bridges: list[str], timeout_s: float = 300.0) -> None:
    """Remove ``bridges``: private instances are stopped (their bridges go with them); in
    the system instance one transaction deletes them (ports, interfaces and controllers are
    garbage-collected with their bridge)."""
    errors = []
    for inst in place.private:
        try:
            inst.stop()
        except OSError as exc:
            errors.append(f"private OVS {inst.name}: {exc}")
    system = [b for b in bridges if place.of(b) is SYSTEM]
    if system:
        try:
            sel = SYSTEM.transact(ovsdb_ops.select_bridges(), timeout_s=60)
            uuids = ovsdb_ops.bridge_uuids(sel[0], system)
            if uuids:
                res = SYSTEM.transact(ovsdb_ops.delete_bridges(uuids), timeout_s=timeout_s)
                SYSTEM.wait_applied(res[-1]["rows"][0]["next_cfg"], timeout_s=timeout_s)
        except OVSError as exc:
            errors.append(str(exc))
    if errors:
        raise OVSError(errors[0])


def leftovers(place: OvsPlacement, bridges: list[str]) -> list[str]:
    """What of the run's bridges and private instances still exists."""
    left = []
    for inst in place.private:
        left += [f"process {pid} (ovs {inst.name} {name})" for name, pid in inst.pids.items()
                 if alive(pid)]
        if os.path.exists(inst.rundir):
            left.append(f"directory {inst.rundir}")
    system = {b for b in bridges if place.of(b) is SYSTEM}
    if system:
        try:
            left += [f"bridge {b}" for b in system & set(SYSTEM.bridges())]
        except OVSError:
            pass
    return left
