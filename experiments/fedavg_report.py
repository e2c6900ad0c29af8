"""The federated-learning experiment's accounting, pure: which ISLs each phase's bytes
crossed, per-round rows, the per-codec summary and the one-line result; and its plots.

Bytes per link and phase are the frame bytes each role reports (DataChunk frames, replays
included) laid on the Manhattan route the controller installs between the two
satellites: a collector's bytes on every ISL from it to its mapper (``collect``), a
mapper's to its reducer (``update``), the reducer's result to the line-of-sight
satellite (``result``).  ``isl_bytes`` of a phase is the sum over its links (a byte that
crosses three ISLs counts three times).  On the emulated network the veth counters of
every ISL are read too (``isl_bytes_measured``: everything that crossed, TCP/IP headers,
control frames and the model broadcast in every Assign included).
"""

from __future__ import annotations

import statistics
from collections import Counter

PHASES = ("collect", "update", "result")


def link_name(a, b) -> str:
    """``"s,o>s,o"``: the direction a->b of the ISL between satellites a and b."""
    return f"{a[0]},{a[1]}>{b[0]},{b[1]}"


def phase_links(metrics: dict, route) -> dict[str, Counter]:
    """``{phase: Counter(link -> bytes)}`` of one job's metrics; ``route(a, b)`` gives
    the satellites of the path from a to b (both ends included)."""
    plan = metrics["plan"]
    mapper_of = {tuple(c): tuple(m) for c, m in plan["allocations"]}
    reducer, los = tuple(plan["reducer"]), tuple(plan["los"])
    out = {p: Counter() for p in PHASES}

    def lay(phase, a, b, nbytes):
        path = route(a, b)
        for u, v in zip(path, path[1:]):
            out[phase][link_name(u, v)] += nbytes

    for r in metrics.get("roles", []):
        node, nbytes = tuple(r.get("node") or ()), r.get("bytes", 0) or 0
        if r.get("role") == "collector" and node in mapper_of:
            lay("collect", node, mapper_of[node], nbytes)
        elif r.get("role") == "mapper":
            lay("update", node, reducer, nbytes)
    lay("result", reducer, los, metrics.get("bytes", {}).get("result", 0) or 0)
    return out


def round_row(codec: str, round_no: int, metrics: dict, result: dict, accuracy: float,
              wall_s: float, links: dict[str, Counter], measured: int | None) -> dict:
    """One row of rounds.csv."""
    return {"codec": codec, "round": round_no, "accuracy": accuracy,
            "reducer_accuracy": result.get("test_accuracy"), "round_s": wall_s,
            "job_time_s": metrics.get("job_time"), "end_to_end_s": metrics.get("end_to_end_s"),
            "clients": len(result.get("clients", [])), "samples": result.get("samples"),
            "update_payload_bytes": result.get("update_bytes"),
            "bytes_collect": metrics["bytes"]["collect"], "bytes_update": metrics["bytes"]["map"],
            "bytes_result": metrics["bytes"]["result"], "control_bytes": metrics.get("control_bytes"),
            **{f"isl_bytes_{p}": sum(links[p].values()) for p in PHASES},
            "isl_links_update": len(links["update"]),
            "isl_bytes_measured": measured, "mean_loss": result.get("mean_loss"),
            "residual_missing": (result.get("residuals") or {}).get("missing", 0),
            "reassignments": len(metrics.get("reassignments") or []),
            "distance": metrics.get("distance"), "reduce_distance": metrics.get("reduce_distance")}


def summarise(rows: list[dict], codecs: list[str]) -> dict:
    """Per codec: final accuracy, ISL bytes per phase over all rounds, round times."""
    out = {}
    for codec in codecs:
        rs = sorted((r for r in rows if r["codec"] == codec), key=lambda r: r["round"])
        if not rs:
            continue
        measured = [r["isl_bytes_measured"] for r in rs if r["isl_bytes_measured"] is not None]
        out[codec] = {
            "rounds": len(rs), "final_accuracy": rs[-1]["accuracy"],
            "best_accuracy": max(r["accuracy"] for r in rs),
            **{f"isl_bytes_{p}": sum(r[f"isl_bytes_{p}"] for r in rs) for p in PHASES},
            "update_bytes": sum(r["bytes_update"] for r in rs),
            "update_payload_bytes": sum(r["update_payload_bytes"] or 0 for r in rs),
            "control_bytes": sum(r["control_bytes"] or 0 for r in rs),
            "isl_bytes_measured": sum(measured) if measured else None,
            "round_s_median": statistics.median(r["round_s"] for r in rs),
            "wall_s": sum(r["round_s"] for r in rs),
            "residual_missing": sum(r["residual_missing"] for r in rs),
            "reassignments": sum(r["reassignments"] for r in rs)}
    return out


def ratio(a, b):
    return a / b if a and b else None


def headline(summary: dict, baseline: str = "none", compressed: str = "topk") -> dict:
    """The one-line result: ``bytes_ratio`` (update-phase ISL bytes, uncompressed over
    top-k), ``accuracy_uncompressed``, ``accuracy_compressed`` (final round, in [0, 1]),
    ``accuracy_gap_pts`` (percentage points, uncompressed minus compressed) and more."""
    b, c = summary.get(baseline), summary.get(compressed)
    if not b or not c:
        return {}
    return {"bytes_ratio": ratio(b["isl_bytes_update"], c["isl_bytes_update"]),
            "bytes_ratio_all_phases": ratio(sum(b[f"isl_bytes_{p}"] for p in PHASES),
                                            sum(c[f"isl_bytes_{p}"] for p in PHASES)),
            "bytes_ratio_measured": ratio(b["isl_bytes_measured"], c["isl_bytes_measured"]),
            "payload_ratio": ratio(b["update_payload_bytes"], c["update_payload_bytes"]),
            "accuracy_uncompressed": b["final_accuracy"],
            "accuracy_compressed": c["final_accuracy"],
            "accuracy_gap_pts": 100.0 * (b["final_accuracy"] - c["final_accuracy"]),
            "rounds": min(b["rounds"], c["rounds"])}


def plot(rows: list[dict], codecs: list[str], out_dir) -> list:
    """accuracy.png/.svg: test accuracy against rounds and against cumulative wall time,
    one line per codec."""
    from experiments.paper_plots import plt, save_png_svg
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for codec in codecs:
        rs = sorted((r for r in rows if r["codec"] == codec), key=lambda r: r["round"])
        if not rs:
            continue
        acc = [100 * r["accuracy"] for r in rs]
        wall, t = [], 0.0
        for r in rs:
            t += r["round_s"]
            wall.append(t)
        ax1.plot([r["round"] + 1 for r in rs], acc, marker=".", label=codec)
        ax2.plot(wall, acc, marker=".", label=codec)
    ax1.set_xlabel("round")
    ax2.set_xlabel("wall time of the rounds (s)")
    for ax in (ax1, ax2):
        ax.set_ylabel("held-out accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("FedAvg over the constellation: accuracy per compression")
    fig.tight_layout()
    return save_png_svg(fig, out_dir, "accuracy")
