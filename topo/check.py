"""Network checks: all-pairs reachability and "packets follow the controller's routes".

Reachability: one process opens a raw ICMP socket inside every host's network
namespace (``setns``), sends one echo request for every ordered pair of hosts,
paced in waves (host i pings host i+k in wave k) and collects the replies;
pairs that got no reply are retried.  That is one process for any grid instead
of one ``ping`` per pair.

On big grids all pairs take too long: :func:`sample_pairs` draws a random sample
and :func:`all_pairs` probes just those.

Path check: every IPv4 packet hits exactly one flow on each switch it crosses (the
compressed tables of ``controller.flowtable``: a plane, a column, a per-target
exception, or the target's local /32).  The per-flow packet counters after the
probe must therefore equal, for every switch X and flow F, the number of echo
packets whose Manhattan route (``Router.route``) crosses X and hits F there.  A
single packet on a wrong switch shows up as a mismatch.

Table check (scales to every switch): :func:`dump_tables` reads every bridge's
IPv4 flows from OVS (``ovs-ofctl dump-flows``, in parallel) and
:func:`verify_tables` looks up every satellite's address (and every ground
station's) in each dumped table with OpenFlow priority semantics and compares the
port with what ``Router.next_hop`` gives -- independent of how the controller
chose its entries.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import re
import select
import socket
import struct
import subprocess
import time
from collections import Counter

import numpy as np

from controller import flowtable as F
from controller.routing import Router
from topo import netns
from topo.addressing import ground_ip, ground_ports, mac_of, sat_ip, sat_of_ip, switch_name
from topo.ovs_instance import SYSTEM


def icmp_socket_in(pid: int) -> socket.socket:
    """A raw ICMP socket living in the network namespace of process ``pid``."""
    s = netns.run_in(f"/proc/{pid}/ns/net", socket.socket, socket.AF_INET, socket.SOCK_RAW,
                     socket.IPPROTO_ICMP)
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _echo(ident: int, seq: int) -> bytes:
    payload = b"spacecomp-check!" * 2
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _checksum(hdr + payload), ident, seq) + payload


def sample_pairs(n: int, k: int, seed: int = 0) -> list[tuple[int, int]]:
    """``k`` distinct ordered pairs ``(i, j)``, ``i != j``, of ``n`` hosts, drawn at random."""
    idx = random.Random(seed).sample(range(n * (n - 1)), min(k, n * (n - 1)))
    return [(x // (n - 1), (x % (n - 1) + 1 + x // (n - 1)) % n) for x in idx]


def all_pairs(hosts, ips, window: int = 2048, timeout_s: float = 4.0, retries: int = 3,
              pairs=None) -> dict:
    """Ping every ordered pair of ``hosts`` (Mininet hosts; ``ips`` their addresses), or
    only ``pairs`` (index pairs ``(i, j)``, e.g. from :func:`sample_pairs`).

    At most ``window`` requests are outstanding at once, so the (userspace) datapath
    is never flooded: the send rate adapts to what the network forwards.  A request
    unanswered after ``timeout_s`` is retried up to ``retries`` times, each retry round
    with a quarter of the window (at least 64): on a datapath that dropped requests
    under the full window the retries go gently.

    Returns ``{"pairs", "pairs_ok", "attempts", "sent": Counter((i, j) -> requests),
    "answered": set of (i, j), "failed": [(name, ip)...]}``."""
    n = len(hosts)
    socks = [icmp_socket_in(h.pid) for h in hosts]
    fd_index = {s.fileno(): i for i, s in enumerate(socks)}
    ip_index = {ip: i for i, ip in enumerate(ips)}
    base_id = os.getpid() & 0x7FFF
    sent = Counter()
    answered = set()
    outstanding: dict = {}  # (i, j) -> send time
    poller = select.epoll()
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)

    def drain(wait_s: float):
        for fd, _ev in poller.poll(wait_s):
            i = fd_index[fd]
            s = socks[i]
            while True:
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    break
                ihl = (data[0] & 0x0F) * 4
                typ, _code, _ck, ident, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if typ == 0 and ident == (base_id + i) & 0xFFFF and seq < n:
                    src = socket.inet_ntoa(data[12:16])
                    if ip_index.get(src) == seq:
                        answered.add((i, seq))
                        outstanding.pop((i, seq), None)

    # Wave k: host i pings host i+k, which spreads the load over the whole torus.
    queue = ([(i, (i + k) % n) for k in range(1, n) for i in range(n)] if pairs is None
             else list(pairs))
    queue.reverse()  # pop() from the end keeps the wave order
    retry = []
    attempts = 1
    try:
        while True:
            while queue and len(outstanding) < window:
                i, j = queue.pop()
                if (i, j) in answered:
                    continue
                try:
                    socks[i].sendto(_echo((base_id + i) & 0xFFFF, j), (ips[j], 0))
                    sent[(i, j)] += 1
                except OSError:
                    pass
                outstanding[(i, j)] = time.monotonic()
            drain(0.002 if queue else 0.05)
            now = time.monotonic()
            for pair, t in list(outstanding.items()):
                if now - t > timeout_s:
                    del outstanding[pair]
                    retry.append(pair)
            if not queue and not outstanding:
                if not retry or attempts > retries:
                    break
                attempts += 1
                window = max(64, window // 4)
                queue, retry = list(reversed(retry)), []
    finally:
        poller.close()
        for s in socks:
            s.close()
    failed = sorted(set(retry) - answered)
    return {"pairs": n * (n - 1) if pairs is None else len(pairs), "pairs_ok": len(answered),
            "attempts": attempts,
            "sent": sent, "answered": answered,
            "failed": [(hosts[i].name, ips[j]) for i, j in failed]}


_FLOW_RE = re.compile(r"n_packets=(\d+).*?priority=(\d+),ip,nw_dst=([\d./]+)")


def flow_counters(bridges: list[str], workers: int = 8, ovs_of=None) -> dict:
    """``{(bridge, nw_dst): n_packets}`` for every IPv4 flow of ``bridges``; ``ovs_of``:
    bridge -> the OvsInstance holding it (default: the system instance)."""
    ovs_of = ovs_of or (lambda _br: SYSTEM)

    def dump(br):
        res = ovs_of(br).run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", br, "ip"],
                             timeout_s=60)
        return br, res.stdout

    out = {}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for br, text in pool.map(dump, bridges):
            for m in _FLOW_RE.finditer(text):
                out[(br, m.group(3))] = int(m.group(1))
    return out


def settled_flow_counters(bridges: list[str], timeout_s: float = 15.0, read=None,
                          revalidate=None, instances=None) -> dict:
    """Flow counters once the datapath has pushed its statistics up.

    The userspace datapath counts packets in its megaflows; OpenFlow rule counters
    catch up only when the revalidators run.  Wait for revalidation rounds and read
    until two reads agree (bounded).  ``read``: counter reader (default ovs-ofctl);
    ``revalidate``: waits for one revalidation round (default: the revalidators of
    ``instances``, the OVS instances holding the bridges; default the system's)."""
    read = read or flow_counters
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        for _ in range(2):
            if revalidate is not None:
                revalidate()
            else:
                for inst in instances or [SYSTEM]:
                    inst.run(["ovs-appctl", "-t", "ovs-vswitchd", "revalidator/wait"],
                             timeout_s=30)
        cur = read(bridges)
        if cur == last or time.monotonic() > deadline:
            return cur
        last = cur


class FlowKeys:
    """The flow (its ``nw_dst`` as OVS writes it) a packet to each address hits on each
    switch, under the tables ``router`` implies (computed once per switch)."""

    def __init__(self, router: Router, ips, ground=()):
        self.router, self.ground = router, list(ground)
        self.ips = list(ips)
        self.addrs = np.array([F.ip_int(ip) for ip in self.ips], dtype=np.int64)
        self.index = {ip: i for i, ip in enumerate(self.ips)}
        self.keys: dict = {}

    def __call__(self, sat, ip: str) -> str:
        if sat not in self.keys:
            table = F.switch_table(self.router, sat, self.ground)
            names = [e.match for e in table] + [None]
            self.keys[sat] = [names[h] for h in F.forward(table, self.addrs)]
        return self.keys[sat][self.index[ip]]


def expected_counters(router: Router, ips, sent_ok, ground=(), stations=None) -> Counter:
    """Packets per (bridge, nw_dst) if every request in ``sent_ok`` (pairs i, j) and its
    reply followed the router's routes through the tables it implies.  stations:
    ``{ip: gateway}`` of placed ground stations among ``ips`` (their traffic enters and
    leaves the torus at the gateway's switch, and their /32 is its own flow)."""
    stations = stations or {}
    exp = Counter()
    key = FlowKeys(router, ips, ground)
    for i, j in sent_ok:
        for src, dst in ((ips[i], ips[j]), (ips[j], ips[i])):
            a, b = stations.get(src) or sat_of_ip(src), stations.get(dst) or sat_of_ip(dst)
            for sat in router.route(a, b).path:
                exp[(switch_name(sat), dst if dst in stations else key(sat, dst))] += 1
    return exp


def check_paths(router: Router, bridges, ips, before: dict, after: dict, result: dict,
                deficit_tolerance: float = 0.001, ground=(), stations=None) -> dict:
    """Compare counter deltas with the routes.

    A packet forwarded off its route adds a packet where the routes predict none
    (a surplus), so any surplus fails the check.  The userspace datapath
    occasionally loses the statistics of a packet handled while its megaflow was
    being installed (a deficit of one, on the route, with no surplus anywhere);
    deficits up to ``deficit_tolerance`` of all counted packets are reported, not
    failed.  Retried pairs may add surplus only on their own route's switches."""
    delta = Counter({k: after.get(k, 0) - before.get(k, 0) for k in after})
    delta = +delta
    first_try = all(result["sent"][p] == 1 for p in result["sent"])
    exp = expected_counters(router, ips, result["answered"], ground, stations)
    surplus = [k for k in set(exp) | set(delta) if delta.get(k, 0) > exp.get(k, 0)]
    if not first_try:
        surplus = [k for k in surplus if exp.get(k, 0) == 0]
    deficit = {k: exp[k] - delta.get(k, 0) for k in exp if delta.get(k, 0) < exp[k]}
    total = sum(exp.values())
    lost_stats = sum(deficit.values())
    ok = bool(exp) and not surplus and lost_stats <= max(2, deficit_tolerance * total)
    return {"paths_ok": ok, "mismatches": len(surplus) + len(deficit),
            "surplus_flows": len(surplus), "deficit_packets": lost_stats,
            "packets_counted": total, "examples": sorted(surplus or list(deficit))[:5],
            "exact": first_try and not deficit, "flows_checked": len(exp)}


# --- every switch's table, from OVS ---------------------------------------------------------------
_ENTRY_RE = re.compile(r"priority=(\d+),ip,nw_dst=([\d./]+) actions=(\S+)")
_MAC_RE = re.compile(r"(?:set_field:|mod_dl_dst:)([0-9a-f:]{17})(?:->eth_dst)?")


def parse_flows(text: str) -> tuple[list[F.FlowEntry], int]:
    """IPv4 flows of one ``ovs-ofctl dump-flows`` output as FlowEntry, and the number of
    flows of any kind."""
    entries, total = [], 0
    for line in text.splitlines():
        if "priority=" not in line and "actions=" not in line:
            continue
        total += 1
        m = _ENTRY_RE.search(line)
        if not m:
            continue
        value, mask = F.parse_match(m.group(2))
        actions = m.group(3)
        out = re.search(r"output:(\d+)", actions)
        mac = _MAC_RE.search(actions)
        entries.append(F.FlowEntry(int(m.group(1)), value, mask,
                                   int(out.group(1)) if out else F.DROP,
                                   mac.group(1) if mac else None))
    return entries, total


def dump_tables(bridges: list[str], workers: int = 8, argv_of=None, ovs_of=None) -> dict:
    """``{bridge: (ipv4 entries, flows in all)}`` read from OVS, ``workers`` dumps at once.
    argv_of(bridge, args): the ``ovs-ofctl`` argv for a bridge on another server;
    ``ovs_of``: bridge -> the OvsInstance holding it here (default: the system instance)."""
    ovs_of = ovs_of or (lambda _br: SYSTEM)

    def dump(br):
        args = ["-O", "OpenFlow13", "--no-names", "dump-flows", br]
        if argv_of:
            res = subprocess.run(argv_of(br, args), capture_output=True, text=True,
                                 timeout=120)
        else:
            res = ovs_of(br).run(["ovs-ofctl", *args], timeout_s=120)
        return br, parse_flows(res.stdout)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(dump, bridges))


def verify_tables(router: Router, tables: dict, ground=(), stations=()) -> dict:
    """Check each switch's dumped table (``{bridge: (entries, total)}``) against the
    routing rule: every satellite's address goes out of the port ``Router.next_hop``
    gives (delivered to the host port, Ethernet destination rewritten, at its own
    switch), every ground station's address likewise, addresses outside the grid drop.
    stations: placed ground stations ``(ip, gateway | None, port)``: their /32 goes out of
    ``port`` (Ethernet destination rewritten) at the gateway, toward it elsewhere, and is
    dropped everywhere while the station has no gateway.

    Returns ``tables_verified`` (switches whose table held), ``tables_failed`` (a few
    examples: switch and what differed) and flows per switch (max, mean)."""
    c = router.constellation
    ground = list(ground)
    addrs = F.target_addrs(c)
    gaddrs = np.array([F.ip_int(ground_ip(k, los)) for k, los, _p in ground_ports(ground)],
                      dtype=np.int64)
    outside = np.array([F.ip_int(ip) for ip in (f"10.{c.planes + 1}.1.1", "10.0.1.1", "10.1.0.1",
                                                 f"10.1.{c.sats_per_plane + 1}.1")
                        if all(int(b) <= 255 for b in ip.split("."))], dtype=np.int64)
    ok, failed, flows = 0, [], []
    for sat in c.satellites():
        br = switch_name(sat)
        entries, total = tables.get(br, ([], 0))
        flows.append(total)
        exp = F.expected_ports(router, sat)
        got = F.ports_of(entries, addrs)
        why = []
        if not np.array_equal(got, exp):
            bad = np.nonzero(got != exp)[0]
            why.append(f"{len(bad)} targets, e.g. {c.sat_of(int(bad[0]) + 1)} via "
                       f"{int(got[bad[0]])} not {int(exp[bad[0]])}")
        host = F.forward(entries, np.array([F.ip_int(sat_ip(sat))]))[0]
        if host < 0 or entries[host].eth_dst != mac_of(sat_ip(sat)):
            why.append("host delivery does not rewrite the Ethernet destination")
        if len(gaddrs):
            gports = F.ports_of(entries, gaddrs)
            want = [port if los == sat else int(exp[c.node_id(los) - 1])
                    for _k, los, port in ground_ports(ground)]
            if gports.tolist() != want:
                why.append(f"ground stations via {gports.tolist()} not {want}")
        if stations:
            got_st = F.ports_of(entries, np.array([F.ip_int(ip) for ip, _g, _p in stations]))
            want = [F.DROP if gw is None else port if gw == sat else int(exp[c.node_id(gw) - 1])
                    for _ip, gw, port in stations]
            if got_st.tolist() != want:
                why.append(f"placed stations via {got_st.tolist()} not {want}")
            for ip, gw, _port in stations:
                hit = F.forward(entries, np.array([F.ip_int(ip)]))[0]
                if gw == sat and (hit < 0 or entries[hit].eth_dst != mac_of(ip)):
                    why.append(f"station {ip} delivery does not rewrite the Ethernet destination")
        if F.ports_of(entries, outside).any():
            why.append("forwards addresses outside the grid")
        if why:
            failed.append(f"{br}: {'; '.join(why)}")
        else:
            ok += 1
    return {"tables_verified": ok, "tables_failed": failed[:5], "tables_failed_n": len(failed),
            "flows_per_switch_max": max(flows, default=0),
            "flows_per_switch_mean": round(float(np.mean(flows)), 1) if flows else 0.0}
