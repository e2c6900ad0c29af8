"""OVSDB operations (RFC 7047) that add or delete many bridges in one transaction (pure).

What ``ovs-vsctl add-br BR -- set bridge BR ... -- add-port BR P -- set interface P
ofport_request=N -- set-controller BR TARGET`` writes, as rows: one Interface and one Port
per port, one Controller, one Bridge referring to them, a mutation inserting the Bridge
into ``Open_vSwitch.bridges`` and a ``next_cfg`` increment (ovs-vswitchd reports the value
back in ``cur_cfg`` once it has applied the change).  Ports, Interfaces and Controllers are
not root tables: deleting a Bridge from ``Open_vSwitch.bridges`` garbage-collects them.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTROLLER_PROBE_MS = 60_000
"""Inactivity probe of each bridge's controller connection.  OVS's default (5 s) drops a
switch whose controller does not answer an echo within it; an os-ken controller busy
routing 1 600 switches for longer then sees hundreds of switches reconnect, each read back
and synced again (measured at 40x40: 129 probe disconnects in one build).  A controller
that exits is still noticed at once (the TCP connection closes)."""


@dataclass(frozen=True)
class BridgeRow:
    """One bridge to create.  ``dpid``: OpenFlow datapath id; ``ports``: (OpenFlow port
    number, interface name) pairs; ``controller``: target such as ``tcp:127.0.0.1:6653``;
    ``datapath_type``: ``netdev``, ``system`` or ``dummy``; ``local_port``: also create the
    internal port named like the bridge (what ``add-br`` does; the netdev datapath makes a
    tap device of it, nothing here uses it)."""

    name: str
    dpid: int
    ports: tuple
    controller: str
    datapath_type: str
    local_port: bool = False


def _set(items: list) -> list:
    return ["set", items]


def add_bridges(rows: list[BridgeRow]) -> list[dict]:
    """Operations creating ``rows``; the last one selects the new ``next_cfg``."""
    ops: list[dict] = []
    bridge_refs = []
    for b, row in enumerate(rows):
        port_refs = []
        ports = [(p, name, "") for p, name in row.ports]
        if row.local_port:
            ports.append((65534, row.name, "internal"))
        for p, intf, kind in ports:
            iname, pname = f"i{b}_{p}", f"p{b}_{p}"
            irow = {"name": intf}
            if kind:
                irow["type"] = kind
            else:
                irow["ofport_request"] = p
            ops.append({"op": "insert", "table": "Interface", "row": irow, "uuid-name": iname})
            ops.append({"op": "insert", "table": "Port", "uuid-name": pname,
                        "row": {"name": intf, "interfaces": ["named-uuid", iname]}})
            port_refs.append(["named-uuid", pname])
        bridge = {"name": row.name, "datapath_type": row.datapath_type, "fail_mode": "secure",
                  "protocols": _set(["OpenFlow13"]), "ports": _set(port_refs),
                  "other_config": ["map", [["datapath-id", f"{row.dpid:016x}"],
                                           ["disable-in-band", "true"]]]}
        if row.controller:
            ops.append({"op": "insert", "table": "Controller", "uuid-name": f"c{b}",
                        "row": {"target": row.controller,
                                "inactivity_probe": CONTROLLER_PROBE_MS}})
            bridge["controller"] = ["named-uuid", f"c{b}"]
        ops.append({"op": "insert", "table": "Bridge", "uuid-name": f"b{b}", "row": bridge})
        bridge_refs.append(["named-uuid", f"b{b}"])
    ops.append({"op": "mutate", "table": "Open_vSwitch", "where": [],
                "mutations": [["bridges", "insert", _set(bridge_refs)], ["next_cfg", "+=", 1]]})
    ops.append({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]})
    return ops


def set_controllers(names: list[str], target: str) -> list[dict]:
    """Operations giving each bridge of ``names`` the controller ``target`` (one Controller
    row each); the last one selects the new ``next_cfg``."""
    ops: list[dict] = []
    for i, name in enumerate(names):
        ops.append({"op": "insert", "table": "Controller", "uuid-name": f"c{i}",
                    "row": {"target": target, "inactivity_probe": CONTROLLER_PROBE_MS}})
        ops.append({"op": "update", "table": "Bridge", "where": [["name", "==", name]],
                    "row": {"controller": ["named-uuid", f"c{i}"]}})
    ops.append({"op": "mutate", "table": "Open_vSwitch", "where": [],
                "mutations": [["next_cfg", "+=", 1]]})
    ops.append({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]})
    return ops


def select_bridges() -> list[dict]:
    """Operation reading every bridge's uuid and name."""
    return [{"op": "select", "table": "Bridge", "where": [], "columns": ["_uuid", "name"]}]


def bridge_uuids(select_result: dict, names) -> list[str]:
    """UUIDs of the bridges called ``names`` in the result of :func:`select_bridges`."""
    wanted = set(names)
    return [r["_uuid"][1] for r in select_result["rows"] if r["name"] in wanted]


def delete_bridges(uuids: list[str]) -> list[dict]:
    """Operations removing the bridges ``uuids`` (their ports go with them); the last one
    selects the new ``next_cfg``."""
    return [{"op": "mutate", "table": "Open_vSwitch", "where": [],
             "mutations": [["bridges", "delete", _set([["uuid", u] for u in uuids])],
                           ["next_cfg", "+=", 1]]},
            {"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]}]
