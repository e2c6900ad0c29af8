"""The datapath's forwarding capacity (the ``forwarding`` part of ``experiments.fidelity``),
a shaped link's standing queue (its ``queueing`` part, :func:`measure_queue`) and the
latency bound of TCP streams over many hops (its ``hoprate`` part, :func:`measure_hop_rate`),
all measured independently of any job.

On the jobs' own testbed, with the htb rate of every ISL on the calibration paths lifted far
above what the datapath forwards (``forwarding_lift_mbps``, 10 Gbit/s by default; restored
afterwards), TCP goodput (iperf3, receiver side) of:

* one stream over k in-plane hops, k = 1..4 (k ISLs, k + 1 switches);
* two streams at once over disjoint paths of the same length (different planes): their
  sum against the single stream's goodput says whether the budget is per switch (sum
  about twice the single) or one budget for the whole datapath (sum about the single).

A software switch has a budget of bytes x switch traversals per second: one stream over k
hops gets about ``forward_bps / (k + 1)``.  ``forward_bps`` is estimated as the median of
``goodput(k) x (k + 1)``; ``forward_scope`` is ``switch`` when two disjoint streams together
reach at least 1.5x one stream's goodput, else ``global``.  Both go to
:class:`node_app.job_model.JobTimeModel` (its ``forward_bps``/``forward_scope``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import time

from experiments import common
from experiments.common import UsageError

SCOPE_SWITCH_RATIO = 1.5  # pair sum / single at or above this: per-switch budgets
HOP_RATE_BOUND_SHARE = 0.8  # goodput below this share of its links' rate: latency-bound
TCP_GOODPUT_SHARE = 1448 / 1514  # payload of a full TCP/IPv4 Ethernet frame (timestamps on)


def check_forwarding(cfg: dict) -> None:
    """The forwarding calibration's keys and the geographic AOI boxes (UsageError)."""
    from node_app.job_model import FORWARD_SCOPES
    hops = cfg["forwarding_hops"]
    if (not isinstance(hops, list) or not hops
            or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in hops)):
        raise UsageError(f"forwarding_hops: {hops!r} must be a list of positive integers")
    common.check_ints(cfg, ("forwarding_seconds",))
    lift = cfg["forwarding_lift_mbps"]
    if isinstance(lift, bool) or not isinstance(lift, (int, float)) or not 0 < lift <= 100_000:
        raise UsageError(f"forwarding_lift_mbps: {lift!r} must be a number in (0, 100000]")
    _check_optional_positive(cfg, "forward_bps", "bit/s")
    _check_optional_positive(cfg, "hop_rate_bps", "bit/s x hops")
    queue = cfg["queue_bytes"]
    if queue is not None and (isinstance(queue, bool) or not isinstance(queue, (int, float))
                              or not 0 <= queue < 1e12):
        raise UsageError(f"queue_bytes: {queue!r} must be null or a number of bytes >= 0")
    if cfg["forward_scope"] not in FORWARD_SCOPES:
        raise UsageError(f"forward_scope: {cfg['forward_scope']!r} must be one of "
                         f"{', '.join(FORWARD_SCOPES)}")
    boxes = cfg["aoi_boxes"]
    if not isinstance(boxes, list):
        raise UsageError("aoi_boxes: must be a list of \"UL_LAT,UL_LON,LR_LAT,LR_LON\" strings")
    from node_app.planner import GeoBox, PlanError
    for k, box in enumerate(boxes):
        try:
            values = [float(v) for v in str(box).split(",")]
            if len(values) != 4 or not all(math.isfinite(v) for v in values):
                raise ValueError
            GeoBox(*values)
        except (ValueError, PlanError) as e:
            raise UsageError(f"aoi_boxes[{k}]: {box!r} is not a box UL_LAT,UL_LON,LR_LAT,LR_LON"
                             f"{': ' + str(e) if str(e) else ''}") from None


def _check_optional_positive(cfg: dict, key: str, unit: str) -> None:
    """``cfg[key]`` null (measure it) or a positive finite number of ``unit`` (UsageError)."""
    v = cfg[key]
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                          or not 0 < v < float("inf")):
        raise UsageError(f"{key}: {v!r} must be null or a positive number ({unit})")


def in_plane_path(tb, k: int, plane: int = 1, first_sat: int = 1) -> tuple:
    """(source, destination) satellites k in-plane hops apart on ``plane``."""
    n = tb.cfg.sats_per_plane
    return (first_sat, plane), ((first_sat - 1 + k) % n + 1, plane)


def goodputs_bps(tb, pairs: list[tuple], seconds: int, omit_s: int) -> list[float]:
    """TCP goodput (bit/s, receiver side) of iperf3 streams between ``pairs`` run at once."""
    servers, clients = [], []
    try:
        for k, (_src, dst) in enumerate(pairs):
            servers.append(tb.host_of(dst).popen(["iperf3", "-s", "-1", "-p", str(5301 + k)],
                                                 stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        for k, (src, dst) in enumerate(pairs):
            clients.append(tb.host_of(src).popen(
                ["iperf3", "-c", tb.ip_of(dst), "-p", str(5301 + k), "-t", str(seconds),
                 "-O", str(omit_s), "-J"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        out = []
        for c in clients:
            text, _ = c.communicate(timeout=seconds + omit_s + 30)
            text = text.decode(errors="replace")
            data = json.loads(text[text.index("{"):])
            if "error" in data:
                raise RuntimeError(f"iperf3: {data['error']}")
            out.append(float(data["end"]["sum_received"]["bits_per_second"]))
        return out
    finally:
        for p in servers + clients:
            if p.poll() is None:
                p.kill()
            p.wait(5)


def _links(router, pairs) -> set:
    out = set()
    for a, b in pairs:
        path = router.route(a, b).path
        out.update(frozenset(p) for p in zip(path, path[1:]))
    return out


def lift(tb, links, rate_bps: float | None) -> None:
    """Set the htb rate of ``links`` (both ends) to ``rate_bps``, or back to their shaped
    rates with None."""
    from topo import shaping
    cmds = []
    for link in links:
        s = tb.shapes[link]
        for intf in (s.intf_a, s.intf_b):
            cmds += shaping.htb_change(intf, rate_bps or s.rate_bps)
    shaping.run_batch("tc", cmds)


def measure(tb, router, hops: list[int], seconds: int, omit_s: int, lift_bps: float,
            progress=None) -> dict:
    """The calibration (module doc), links lifted to ``lift_bps`` and restored: rows per
    measurement and the fitted budget."""
    k = hops[len(hops) // 2]
    pairs = [in_plane_path(tb, h) for h in hops]
    pairs += [in_plane_path(tb, k, plane=tb.cfg.planes // 2 + 1)]
    links = _links(router, pairs)
    lift(tb, links, lift_bps)
    try:
        return _measure(tb, router, hops, seconds, omit_s, progress) | {
            "lift_mbps": lift_bps / 1e6, "lifted_links": len(links)}
    finally:
        lift(tb, links, None)


def _measure(tb, router, hops, seconds, omit_s, progress) -> dict:
    rows = []
    for k in hops:
        src, dst = in_plane_path(tb, k)
        routed = router.route(src, dst).hops
        (bps,) = goodputs_bps(tb, [(src, dst)], seconds, omit_s)
        rows.append({"kind": "single", "hops": routed, "switches": routed + 1,
                     "streams": 1, "goodput_mbps": bps / 1e6,
                     "budget_mbps": bps * (routed + 1) / 1e6})
        if progress:
            progress.advance()
    k = hops[len(hops) // 2]
    planes = tb.cfg.planes
    a = in_plane_path(tb, k, plane=1)
    b = in_plane_path(tb, k, plane=planes // 2 + 1)
    single = next(r["goodput_mbps"] for r in rows if r["hops"] == router.route(*a).hops)
    pair = goodputs_bps(tb, [a, b], seconds, omit_s)
    rows.append({"kind": "pair_disjoint", "hops": router.route(*a).hops,
                 "switches": router.route(*a).hops + 1, "streams": 2,
                 "goodput_mbps": sum(pair) / 1e6, "budget_mbps": None})
    if progress:
        progress.advance()
    ratio = sum(pair) / 1e6 / single
    budget = statistics.median(r["budget_mbps"] for r in rows if r["kind"] == "single")
    return {"rows": rows, "forward_bps": budget * 1e6, "loadavg_1m": os.getloadavg()[0],
            "forward_scope": "switch" if ratio >= SCOPE_SWITCH_RATIO else "global",
            "pair_over_single": ratio,
            "budget_spread": [min(r["budget_mbps"] for r in rows if r["kind"] == "single"),
                              max(r["budget_mbps"] for r in rows if r["kind"] == "single")]}


def _ping_median_s(tb, a, b, count: int) -> float:
    """Median RTT (s) of ``count`` pings a -> b, 0.2 s apart."""
    out = tb.host_of(a).cmd(f"ping -c {count} -i 0.2 -W 5 {tb.ip_of(b)}")
    rtts = [float(tok.split("=")[1]) for tok in out.split() if tok.startswith("time=")]
    if not rtts:
        raise RuntimeError(f"queueing: no ping reply from {list(b)}")
    return statistics.median(rtts) / 1e3


def measure_queue(tb, seconds: int, pings: int = 10) -> dict:
    """The standing queue of a shaped ISL saturated by TCP (the ``queueing`` part of
    ``experiments.fidelity``): the median ping RTT over one in-plane ISL idle, then while
    one iperf3 TCP stream saturates it in the same direction; ``queue_bytes`` =
    (loaded - idle RTT) x the link's shaped rate / 8: what a packet entering the busy
    link waits behind (:class:`node_app.job_model.JobTimeModel`'s ``queue_bytes``)."""
    a, b = in_plane_path(tb, 1)
    rate_bps = tb.shapes[frozenset((a, b))].rate_bps
    idle = _ping_median_s(tb, a, b, pings)
    server = tb.host_of(b).popen(["iperf3", "-s", "-1", "-p", "5399"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    client = None
    try:
        time.sleep(0.5)
        run_s = max(seconds, int(math.ceil(0.2 * pings)) + 3)
        client = tb.host_of(a).popen(["iperf3", "-c", tb.ip_of(b), "-p", "5399", "-t", str(run_s)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # past slow start: the queue is standing
        loaded = _ping_median_s(tb, a, b, pings)
        client.wait(run_s + 30)
    finally:
        for p in (client, server):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.wait(5)
    wait_s = max(0.0, loaded - idle)
    return {"link": f"{list(a)}-{list(b)}", "rate_mbps": rate_bps / 1e6,
            "idle_rtt_ms": idle * 1e3, "loaded_rtt_ms": loaded * 1e3, "queue_wait_s": wait_s,
            "queue_bytes": wait_s * rate_bps / 8}


def cpu_times(path: str = "/proc/stat") -> tuple[int, int] | None:
    """(busy, total) clock ticks of all the machine's CPUs since boot (the ``cpu`` line of
    ``/proc/stat``; idle and iowait are not busy); None when it cannot be read."""
    try:
        with open(path) as f:
            fields = f.readline().split()
        ticks = [int(v) for v in fields[1:]]
    except (OSError, ValueError):
        return None
    if fields[:1] != ["cpu"] or len(ticks) < 5:
        return None
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - ticks[3] - ticks[4], total


def cpu_busy_pct(before, after) -> float | None:
    """The share (%) of the machine's CPU time that was busy between two :func:`cpu_times`
    readings (``experiments.fidelity``'s ``cpu_busy_pct`` per job: near 100 the emulator
    itself, not the modelled links, set the job's pace); None when either is missing."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


TCP_COUNTERS = {"syn_retrans": "TCPSynRetrans", "listen_drops": "ListenDrops",
                "tcp_timeouts": "TCPTimeouts"}


def tcp_counters(tb) -> dict:
    """The kernel's TCP counters summed over every satellite host's network namespace (read
    from ``/proc/<host pid>/net/netstat``): SYN retransmissions, SYNs a listener dropped
    (its accept queue full or no memory), retransmission timeouts.  A job's share is the
    difference across it (``experiments.fidelity``'s ``syn_retrans`` etc. per job); None
    each when no host's counters could be read."""
    out = dict.fromkeys(TCP_COUNTERS, 0)
    read = 0
    for sat in tb.sat_hosts:
        try:
            with open(f"/proc/{tb.host_of(sat).pid}/net/netstat") as f:
                lines = f.read().splitlines()
        except (OSError, TypeError):
            continue
        read += 1
        for head, body in zip(lines[::2], lines[1::2]):
            if head.startswith("TcpExt:"):
                values = dict(zip(head.split()[1:], body.split()[1:]))
                for key, name in TCP_COUNTERS.items():
                    out[key] += int(values.get(name, 0))
    return out if read else dict.fromkeys(TCP_COUNTERS)  # None: not readable here


def hop_rate_pairs(tb, streams: int) -> list[tuple]:
    """(source, destination) of ``streams`` cross-plane paths whose lengths spread from 1 to
    half the planes, each on its own satellite index (row), so that, with the cross-plane
    links of those rows up, no two share an ISL."""
    planes, sats = tb.cfg.planes, tb.cfg.sats_per_plane
    far = max(1, planes // 2)
    out = []
    for k in range(streams):
        h = max(1, round(1 + k * (far - 1) / max(1, streams - 1)))
        row = 1 + (k * sats) // streams
        out.append(((row, 1), (row, 1 + h)))
    return out


def measure_hop_rate(tb, router, streams: int, seconds: int, omit_s: int,
                     bound_share: float = HOP_RATE_BOUND_SHARE) -> dict:
    """The latency bound of the per-hop model (the ``hoprate`` part): ``streams`` TCP streams
    at once over paths of many lengths (:func:`hop_rate_pairs`) on the shaped network, as a
    job's collect phase runs them.  A stream whose goodput stayed below ``bound_share`` of
    the rate its shaped links give it (max-min among these streams) was held back by
    something other than the links: its goodput x hops is a sample of ``hop_rate_bps``
    (:class:`node_app.job_model.JobTimeModel`), the median of the samples.  None when every
    stream ran at its links' rate (no latency bound seen)."""
    from node_app.job_model import JobTimeModel, Stream
    pairs = hop_rate_pairs(tb, streams)
    routes = [router.route(a, b) for a, b in pairs]
    paths = [tuple(frozenset(p) for p in zip(r.path, r.path[1:])) for r in routes]
    model = JobTimeModel({k: s.rate_bps for k, s in tb.shapes.items()})
    shares = model.max_min_rates([Stream("calibration", links, 1) for links in paths])
    goodputs = goodputs_bps(tb, pairs, seconds, omit_s)
    rows = [{"source": list(a), "destination": list(b), "hops": r.hops,
             "links_share_mbps": share / 1e6, "goodput_mbps": bps / 1e6,
             "bound": bps < bound_share * share * TCP_GOODPUT_SHARE,
             "goodput_x_hops_mbps": bps * r.hops / 1e6}
            for (a, b), r, share, bps in zip(pairs, routes, shares, goodputs)]
    samples = [r["goodput_x_hops_mbps"] for r in rows if r["bound"]]
    return {"rows": rows, "hop_rate_bps": statistics.median(samples) * 1e6 if samples else None,
            "bound_streams": len(samples), "streams": len(rows),
            "loadavg_1m": os.getloadavg()[0]}
