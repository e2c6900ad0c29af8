"""The datapath's forwarding capacity, measured independently of any job (the ``forwarding``
part of ``experiments.fidelity``).

On a testbed of the same grid whose ISLs are shaped far above what the datapath forwards
(``forwarding_testbed``: every link at the htb ceiling, 10 Gbit/s by default), TCP goodput
(iperf3, receiver side) of:

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


def check_forwarding(cfg: dict) -> None:
    """The forwarding calibration's keys and the geographic AOI boxes (UsageError)."""
    from node_app.job_model import FORWARD_SCOPES
    hops = cfg["forwarding_hops"]
    if (not isinstance(hops, list) or not hops
            or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in hops)):
        raise UsageError(f"forwarding_hops: {hops!r} must be a list of positive integers")
    common.check_ints(cfg, ("forwarding_seconds",))
    if not isinstance(cfg["forwarding_testbed"], dict):
        raise UsageError("forwarding_testbed: must be a mapping of topo.config keys")
    fwd = cfg["forward_bps"]
    if fwd is not None and (isinstance(fwd, bool) or not isinstance(fwd, (int, float))
                            or not 0 < fwd < float("inf")):
        raise UsageError(f"forward_bps: {fwd!r} must be null or a positive number (bit/s)")
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


def measure(tb, router, hops: list[int], seconds: int, omit_s: int, progress=None) -> dict:
    """The calibration (module doc): rows per measurement and the fitted budget."""
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
