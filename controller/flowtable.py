"""Compressed IPv4 flow tables: what one satellite switch needs to route like :class:`Router`.

The address plan gives satellite ``[s, o]`` the /24 ``10.<o>.<s>.0``, so one
masked match covers a whole plane (``10.<o>.0.0/16``) or the same in-plane index in
every plane (``10.0.<s>.0/255.0.255.0``, a non-contiguous mask OpenFlow 1.3 and OVS
accept).  The Manhattan rule needs little more than that: from ``[s, o]`` a target in
another plane is reached by the plane's cross-plane direction, except for the
in-plane indices where the rule moves in-plane first (a whole column, any plane);
the own plane splits into an east and a west half.  Outages add per-target
exceptions.  A table therefore has, by priority (highest wins):

==========  ===============================  ======================================
priority    match on ``ipv4_dst``            purpose
==========  ===============================  ======================================
300 LOCAL   host / ground /32                deliver (rewrite the Ethernet dst)
(250        placed stations' /32             ``controller.stations``: 10.0.0.<100+k>)
245 OUTSIDE second or third octet off-plan   drop addresses outside the grid at once
240 TARGET  one satellite's /24              exceptions (outages, own-plane half)
235 PLANE_  ``10.<o>.0.0/16``                a plane overriding the columns (an outage
    OVER                                     turns a block of targets another way)
230 SAT     ``10.0.<s>.0/255.0.255.0``       a column: same next hop in every plane
220 PLANE   ``10.<o>.0.0/16``                a plane's usual next hop
==========  ===============================  ======================================

Nothing matching means drop (the switches have no table-miss flow), so "drop" needs
no entry unless a broader one would forward.  :func:`compress` picks the plane and
column entries that keep the table small (alternating majority choices) and adds
exceptions for every target they would send the wrong way; :func:`forward` is the
OpenFlow priority lookup, used by the tests (every pair against
``Router.next_hop``) and by ``topo.check`` on the tables dumped from OVS.

Pure: numpy only, no I/O (the controller imports it under eventlet).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from topo.addressing import (EAST_PORT, HOST_PORT, NORTH_PORT, SOUTH_PORT, WEST_PORT,
                             ground_ip, ground_ports, mac_of, sat_ip)
from topo.constellation import Constellation, Sat

PRIO_LOCAL, PRIO_OUTSIDE, PRIO_TARGET = 300, 245, 240
PRIO_PLANE_OVER, PRIO_SAT, PRIO_PLANE = 235, 230, 220
DROP = 0  # "port" of a drop entry (no actions)
_ALL = 0xFFFFFFFF
_TEN = 10 << 24


@dataclass(frozen=True, order=True)
class FlowEntry:
    """One IPv4 flow: packets with ``dst & mask == value`` go to ``port`` (0: dropped),
    with the Ethernet destination rewritten to ``eth_dst`` when set."""

    priority: int
    value: int
    mask: int
    port: int
    eth_dst: str | None = None

    @property
    def match(self) -> str:
        """``ipv4_dst`` as ovs-ofctl prints it: ``a.b.c.d``, ``a.b.c.d/len`` or ``a.b.c.d/mask``."""
        addr = str(ipaddress.IPv4Address(self.value))
        if self.mask == _ALL:
            return addr
        inv = ~self.mask & _ALL
        if inv & (inv + 1) == 0:  # contiguous
            return f"{addr}/{32 - inv.bit_length()}"
        return f"{addr}/{ipaddress.IPv4Address(self.mask)}"

    @property
    def mask_str(self) -> str:
        return str(ipaddress.IPv4Address(self.mask))

    @property
    def value_str(self) -> str:
        return str(ipaddress.IPv4Address(self.value))


def ip_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def parse_match(text: str) -> tuple[int, int]:
    """``(value, mask)`` of an ``ipv4_dst`` written as :attr:`FlowEntry.match` writes it."""
    addr, _, mask = text.partition("/")
    if not mask:
        m = _ALL
    elif "." in mask:
        m = ip_int(mask)
    else:
        m = (_ALL << (32 - int(mask))) & _ALL
    return ip_int(addr) & m, m


def _plane(o: int) -> tuple[int, int]:
    return _TEN | int(o) << 16, 0xFFFF0000


def _column(s: int) -> tuple[int, int]:
    return _TEN | int(s) << 8, 0xFF00FF00


def _target(s: int, o: int) -> tuple[int, int]:
    return _TEN | int(o) << 16 | int(s) << 8, 0xFFFFFF00


def _outside_blocks(n: int) -> list[tuple[int, int]]:
    """Prefix blocks ``(value, mask)`` of one octet covering 0 and n+1..255."""
    blocks, lo = [(0, 0xFF)], n + 1
    while lo <= 255:
        size = lo & -lo if lo else 256
        while lo + size - 1 > 255:
            size //= 2
        blocks.append((lo, (0xFF & ~(size - 1))))
        lo += size
    return blocks


def outside_entries(c: Constellation) -> list[FlowEntry]:
    """Drops for ``10.x.y.*`` with plane ``x`` or in-plane index ``y`` outside the grid."""
    out = [FlowEntry(PRIO_OUTSIDE, _TEN | v << 16, 0xFF000000 | m << 16, DROP)
           for v, m in _outside_blocks(c.planes)]
    out += [FlowEntry(PRIO_OUTSIDE, _TEN | v << 8, 0xFF000000 | m << 8, DROP)
            for v, m in _outside_blocks(c.sats_per_plane)]
    return out


def port_grid(c: Constellation, sat: Sat, next_hops: np.ndarray) -> np.ndarray:
    """Output port toward every target as a planes x sats grid (``[o-1, s-1]``):
    the port facing the next hop, 0 where unreachable, -1 at ``sat`` itself.

    next_hops: ``Router.next_hops_from(sat)`` (next-hop node ids, 0 self, -1 unreachable)."""
    s, o = sat
    lut = np.zeros(c.size + 2, dtype=np.int64)  # index next-hop id + 1
    lut[1] = -1  # next hop 0: this switch
    for port, (ds, do) in ((EAST_PORT, (1, 0)), (WEST_PORT, (-1, 0)),
                           (SOUTH_PORT, (0, 1)), (NORTH_PORT, (0, -1))):
        lut[c.node_id(c.wrap(s + ds, o + do)) + 1] = port
    return lut[np.asarray(next_hops) + 1].reshape(c.planes, c.sats_per_plane)


def compress(c: Constellation, sat: Sat, ports: np.ndarray, rounds: int = 6) -> list[FlowEntry]:
    """The route entries (TARGET, PLANE_OVER, SAT, PLANE) forwarding every target like ``ports``.

    ports: :func:`port_grid` of ``sat``.  A plane (row) entry sits below the column
    entries (PLANE) or above them (PLANE_OVER, when an outage turns a block of a plane
    another way); row and column entries take the majority port of what they decide,
    and exist only where they save exceptions (coordinate descent from a few starts,
    smallest table kept).  ``sat``'s own /24 resolves to drop (its /32s are LOCAL)."""
    n, m = c.planes, c.sats_per_plane
    k = 6  # ports 0 (drop) .. 5
    valid = ports >= 0
    flat = np.where(valid, ports, 0).reshape(-1)
    # Port counts per row / column over a set of cells: one bincount each (a one-hot
    # cube summed per call cost most of a 72x22 recompute).
    row_key = np.repeat(np.arange(n), m) * k + flat
    col_key = np.tile(np.arange(m), n) * k + flat

    def row_counts(cells):
        return np.bincount(row_key[cells.reshape(-1)], minlength=n * k).reshape(n, k)

    def col_counts_of(cells):
        return np.bincount(col_key[cells.reshape(-1)], minlength=m * k).reshape(m, k)

    rows, cols = np.arange(n), np.arange(m)
    all_counts = row_counts(valid)  # n x k
    all_best = all_counts.argmax(axis=1)
    high_cost = 1 + valid.sum(axis=1) - all_counts[rows, all_best]

    def rows_given(col_rule):
        """Per row: tier (0 none, 1 below the columns, 2 above) and port."""
        by_rows = valid & (col_rule[None, :] < 0)
        under_col = valid & (col_rule[None, :] >= 0)
        col_wrong = (under_col & (ports != col_rule[None, :])).sum(axis=1)
        low_counts = row_counts(by_rows)
        low_best = low_counts.argmax(axis=1)
        low_n = by_rows.sum(axis=1)
        costs = np.stack([low_n - low_counts[:, DROP] + col_wrong,
                          1 + low_n - low_counts[rows, low_best] + col_wrong, high_cost])
        tier = costs.argmin(axis=0)
        return tier, np.where(tier == 2, all_best, np.where(tier == 1, low_best, DROP))

    def cols_given(tier, row_port):
        free = valid & (tier[:, None] < 2)  # cells a column entry can decide
        counts = col_counts_of(free)
        best = counts.argmax(axis=1)
        with_rule = 1 + free.sum(axis=0) - counts[cols, best]
        without = (free & (ports != row_port[:, None])).sum(axis=0)
        return np.where(with_rule < without, best, -1)

    def effective(tier, row_port, col_rule):
        eff = np.where(col_rule[None, :] >= 0, col_rule[None, :], row_port[:, None])
        return np.where(tier[:, None] == 2, row_port[:, None], eff)

    def descend(col_rule):
        best_cost, best = None, None
        for _ in range(rounds):
            tier, row_port = rows_given(col_rule)
            col_rule = cols_given(tier, row_port)
            tier, row_port = rows_given(col_rule)
            eff = effective(tier, row_port, col_rule)
            exceptions = valid & (eff != ports)
            cost = int((tier > 0).sum() + (col_rule >= 0).sum() + exceptions.sum())
            if best_cost is not None and cost >= best_cost:
                break
            best_cost, best = cost, (tier, row_port, col_rule, eff, exceptions)
        return best_cost, best

    # Starts: no columns; the uniform columns (the rule's in-plane-first indices); any
    # column with a strict majority.
    col_counts = col_counts_of(valid)
    col_best = col_counts.argmax(axis=1)
    col_agree, col_valid = col_counts[cols, col_best], valid.sum(axis=0)
    starts = [np.full(m, -1), np.where((col_agree == col_valid) & (col_valid > 1), col_best, -1),
              np.where(2 * col_agree > col_valid, col_best, -1)]
    _cost, (tier, row_port, col_rule, eff, exceptions) = min(
        (descend(st) for st in starts), key=lambda r: r[0])
    s, o = sat
    exceptions = exceptions.copy()
    if eff[o - 1, s - 1] != DROP:  # own /24: only the LOCAL /32s deliver
        exceptions[o - 1, s - 1] = True
    target_port = np.where(valid, ports, DROP)
    prio = {1: PRIO_PLANE, 2: PRIO_PLANE_OVER}
    out = [FlowEntry(prio[int(t)], *_plane(r + 1), int(a))
           for r, (t, a) in enumerate(zip(tier, row_port)) if t > 0]
    out += [FlowEntry(PRIO_SAT, *_column(j + 1), int(a)) for j, a in enumerate(col_rule) if a >= 0]
    for r, j in zip(*np.nonzero(exceptions)):
        out.append(FlowEntry(PRIO_TARGET, *_target(j + 1, r + 1), int(target_port[r, j])))
    return out


def local_entries(sat: Sat, ground: list[Sat]) -> list[FlowEntry]:
    """Delivery /32s on ``sat``'s switch: its host, and the ground stations it serves."""
    locals_ = [(sat_ip(sat), HOST_PORT)]
    locals_ += [(ground_ip(k, los), port) for k, los, port in ground_ports(ground) if los == sat]
    return [FlowEntry(PRIO_LOCAL, ip_int(ip), _ALL, port, mac_of(ip)) for ip, port in locals_]


def switch_table(router, sat: Sat, ground: list[Sat] = ()) -> list[FlowEntry]:
    """Every IPv4 flow of ``sat``'s switch under ``router`` (a ``controller.routing.Router``,
    with its links down), sorted: local delivery, off-grid drops, compressed routes."""
    c = router.constellation
    routes = compress(c, sat, port_grid(c, sat, router.next_hops_from(sat)))
    return sorted(local_entries(sat, list(ground)) + outside_entries(c) + routes, reverse=True)


def forward(table: list[FlowEntry], addrs: np.ndarray) -> np.ndarray:
    """Index into ``table`` of the entry each address (uint32 array) hits; -1 for none.

    OpenFlow semantics: the highest priority matching entry wins."""
    addrs = np.asarray(addrs, dtype=np.int64)
    hit = np.full(addrs.shape, -1, dtype=np.int64)
    order = sorted(range(len(table)), key=lambda i: -table[i].priority)
    for i in order:
        e = table[i]
        free = hit < 0
        hit[free & ((addrs & e.mask) == e.value)] = i
    return hit


def ports_of(table: list[FlowEntry], addrs: np.ndarray) -> np.ndarray:
    """Output port each address gets from ``table`` (0: dropped or unmatched)."""
    hit = forward(table, addrs)
    ports = np.array([e.port for e in table] + [DROP], dtype=np.int64)
    return ports[hit]  # -1 indexes the trailing DROP


def target_addrs(c: Constellation, host: int = 1) -> np.ndarray:
    """``10.<o>.<s>.<host>`` of every satellite, indexed by node id - 1."""
    ids = np.arange(c.size)
    s, o = ids % c.sats_per_plane + 1, ids // c.sats_per_plane + 1
    return _TEN | o << 16 | s << 8 | host


def expected_ports(router, sat: Sat) -> np.ndarray:
    """The port ``Router.next_hop`` implies toward every satellite (index node id - 1):
    the neighbour's port, HOST_PORT at ``sat`` itself, 0 where unreachable."""
    c = router.constellation
    ports = port_grid(c, sat, router.next_hops_from(sat)).reshape(-1)
    return np.where(ports < 0, HOST_PORT, ports)


def next_hop_ids(c: Constellation, sat: Sat, ports: np.ndarray) -> np.ndarray:
    """Ports toward every target (as :func:`ports_of` on :func:`target_addrs`) back to the
    view's next-hop node ids: 0 at ``sat`` itself, -1 where dropped."""
    s, o = sat
    lut = np.full(max(6, HOST_PORT + 1), -1, dtype=np.int64)
    for port, (ds, do) in ((EAST_PORT, (1, 0)), (WEST_PORT, (-1, 0)),
                           (SOUTH_PORT, (0, 1)), (NORTH_PORT, (0, -1))):
        lut[port] = c.node_id(c.wrap(s + ds, o + do))
    lut[HOST_PORT] = 0
    out = lut[np.clip(ports, 0, len(lut) - 1)]
    out[c.node_id(sat) - 1] = 0
    return out
