"""Reading a connecting switch's flow table back, so the controller re-syncs without a wipe.

A switch in ``fail_mode=secure`` keeps forwarding on its installed flows while its
controller is away (killed, restarted, or its connection flapped).  When it connects
again the controller asks for its whole table (an OpenFlow 1.3 flow stats request over
all tables) and :func:`classify` sorts the reply into what the controller knows how to
diff against the table it would install:

* ``routes``: IPv4 flows matching only ``eth_type=0x0800, ipv4_dst`` (the compressed
  route, delivery and off-grid tables of :mod:`controller.flowtable`, keyed like
  :meth:`ManhattanRouting._table`), each as a :class:`controller.flowtable.FlowEntry`
  (an entry whose actions are not "output, perhaps after setting eth_dst" gets port
  ``-1``, so it never equals a wanted entry and is modified);
* ``stations``: the placed ground stations' /32 flows at their priority, as the action
  keys :class:`controller.stations.StationFlows` keeps (``("local", port)``,
  ``("via", node id)``, ``("drop",)``);
* ``arp_ok``: the ARP-to-controller flow is there as the app installs it;
* ``extras``: everything else (other tables, other matches): deleted one by one
  (``OFPFC_DELETE_STRICT`` on its own match), never by a delete-all.

Pure: works on the parsed ``OFPFlowStats`` of os-ken or Ryu alike; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller import flowtable as F
from topo import addressing as T

ETH_IPV4, ETH_ARP = 0x0800, 0x0806


@dataclass
class ReadTable:
    """One switch's table as read back, sorted for diffing (see the module docstring)."""

    routes: dict = field(default_factory=dict)    # (priority, value, mask) -> FlowEntry
    stations: dict = field(default_factory=dict)  # station k -> action key
    arp_ok: bool = False
    extras: list = field(default_factory=list)    # OFPFlowStats to delete strictly
    flows: int = 0                                # flows read in all


def _fields(match) -> dict:
    """The match's OXM fields as {name: value} (value or (value, mask))."""
    return {k: v for k, v in match.items()}


def _actions(stats) -> list | None:
    """The apply-actions of a flow, or None when it has any other instruction."""
    out = []
    for inst in stats.instructions:
        acts = getattr(inst, "actions", None)
        if acts is None or getattr(inst, "type", None) != 4:  # OFPIT_APPLY_ACTIONS
            return None
        out += acts
    return out


def _output_and_eth_dst(actions) -> tuple[int, str | None] | None:
    """(output port, eth_dst set first or None) of "[set eth_dst,] output", DROP for no
    actions; None for anything else."""
    if not actions:
        return F.DROP, None
    eth_dst = None
    *sets, last = actions
    if type(last).__name__ != "OFPActionOutput":
        return None
    for a in sets:
        if type(a).__name__ != "OFPActionSetField" or a.key != "eth_dst":
            return None
        eth_dst = str(a.value).lower()
    return int(last.port), eth_dst


def classify(stats: list, c, sat, station_ips: dict, prio_station: int, prio_arp: int,
             controller_port: int) -> ReadTable:
    """Sort the flow stats read from ``sat``'s switch.

    station_ips: ``{ip: k}`` of the placed ground stations; prio_station / prio_arp:
    the priorities the app gives station and ARP flows; controller_port: OFPP_CONTROLLER."""
    read = ReadTable(flows=len(stats))
    for st in stats:
        fields = _fields(st.match)
        acts = _actions(st)
        out = _output_and_eth_dst(acts) if acts is not None else None
        if st.table_id != 0:
            read.extras.append(st)
            continue
        if set(fields) == {"eth_type"} and fields["eth_type"] == ETH_ARP \
                and st.priority == prio_arp:
            read.arp_ok = out == (controller_port, None)
            continue  # a wrong one is replaced by an ADD of the right one
        if set(fields) != {"eth_type", "ipv4_dst"} or fields["eth_type"] != ETH_IPV4:
            read.extras.append(st)
            continue
        dst = fields["ipv4_dst"]
        if isinstance(dst, tuple):
            value, mask = F.ip_int(dst[0]), F.ip_int(dst[1])
        else:
            value, mask = F.ip_int(dst), 0xFFFFFFFF
        ip = F.FlowEntry(0, value, 0xFFFFFFFF, 0).value_str
        if st.priority == prio_station and mask == 0xFFFFFFFF and ip in station_ips:
            k = station_ips[ip]
            if out is None:
                read.stations[k] = ("unknown",)
            elif out[0] == F.DROP:
                read.stations[k] = ("drop",)
            elif out[1] is not None:
                read.stations[k] = ("local", out[0])
            else:
                nbr = T.neighbour_on_port(c, sat, out[0])
                read.stations[k] = ("via", c.node_id(nbr)) if nbr else ("unknown",)
            continue
        port, eth_dst = out if out is not None else (-1, None)
        read.routes[(st.priority, value & mask, mask)] = F.FlowEntry(
            st.priority, value & mask, mask, port, eth_dst)
    return read
