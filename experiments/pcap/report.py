"""Per-phase report of a SpaceCoMP capture: a table and a sequence plot.

    python3 -m experiments.pcap.report FILE.pcap [--json] [--plot OUT.png] [--job ID]
        [--port PORT ...] [--addr-map addrs.json] [--key-file testbed.key]

Phases, by opcode (and for DataChunk by its receiving role, so no node roles need to be
known):

* ``submit/assign``: SubmitJob, AssignCollector, AssignMapper, AssignReducer
* ``collect``: DataChunk to a mapper (collector -> mapper)
* ``map``: DataChunk to a reducer (mapper -> reducer)
* ``done``: PhaseDone
* ``result``: JobResult and DataChunk to the ground (result data)
* ``error``: Error replies and frames node_app.protocol rejects (with ``--key-file``, also
  frames whose HMAC tag does not verify under the testbed key; without it tags are not
  checked)

Per phase: messages, bytes (whole frames including the 4-byte length field, as
node_app.transport counts them; TCP/IP headers excluded), and the first/last time in
seconds since the capture's first frame (first byte on the wire .. last byte).
Exit codes: 0 ok, 2 bad input (missing file, not a capture; one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from scapy.error import Scapy_Exception

from experiments.pcap.scapy_layer import CapturedFrame, DataChunkBody, read_frames
from node_app import protocol as P
from topo import cli

PHASES = ("submit/assign", "collect", "map", "done", "result", "error")
PHASE_COLORS = {"submit/assign": "tab:blue", "collect": "tab:green", "map": "tab:orange",
                "done": "tab:gray", "result": "tab:red", "error": "black"}
_CHUNK_PHASE = {P.ROLE_MAPPER: "collect", P.ROLE_REDUCER: "map", P.ROLE_GROUND: "result"}
_OP_PHASE = {P.SUBMIT_JOB: "submit/assign", P.ASSIGN_COLLECTOR: "submit/assign",
             P.ASSIGN_MAPPER: "submit/assign", P.ASSIGN_REDUCER: "submit/assign",
             P.PHASE_DONE: "done", P.JOB_RESULT: "result"}
MAX_PLOT_ARROWS = 20000  # beyond this the plot shows the first ones only (it says so)


class UsageError(Exception):
    """Bad input: one line on stderr, exit 2."""


def phase_of(frame: CapturedFrame) -> str:
    """The job phase a frame belongs to (see the module docstring)."""
    if frame.error is not None:
        return "error"
    if frame.op == P.DATA_CHUNK:
        return _CHUNK_PHASE.get(frame.packet[DataChunkBody].role, "error")
    return _OP_PHASE.get(frame.op, "error")


@dataclass
class Row:
    """One frame as the report keeps it (times in s since the epoch, size in bytes)."""

    first_time: float
    time: float
    src: str
    sport: int
    dst: str
    dport: int
    op: int
    job_id: int
    wire_bytes: int
    phase: str


def load(path: str, ports=None, job: int | None = None, key: bytes | None = None) -> list[Row]:
    """The frames of a capture as rows.  Raises UsageError for unreadable input."""
    try:
        rows = [Row(f.first_time, f.time, f.src, f.sport, f.dst, f.dport, f.op, f.job_id,
                    f.wire_bytes, phase_of(f))
                for f in read_frames(path, ports, key) if job is None or f.job_id == job]
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory") from None
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror or e}") from None
    except (Scapy_Exception, EOFError, ValueError) as e:
        raise UsageError(f"{path}: not a pcap/pcapng capture ({str(e).strip() or type(e).__name__})") from None
    return rows


def summarize(rows: list[Row]) -> dict:
    """Per-phase and per-opcode totals; times relative to the first frame's first byte."""
    t0 = min((r.first_time for r in rows), default=0.0)
    phases = {}
    for name in PHASES:
        sel = [r for r in rows if r.phase == name]
        phases[name] = {"messages": len(sel), "bytes": sum(r.wire_bytes for r in sel),
                        "first_s": round(min(r.first_time for r in sel) - t0, 6) if sel else None,
                        "last_s": round(max(r.time for r in sel) - t0, 6) if sel else None}
    opcodes = {}
    for r in rows:
        o = opcodes.setdefault(P.OP_NAMES.get(r.op, f"0x{r.op:02x}"), {"messages": 0, "bytes": 0})
        o["messages"] += 1
        o["bytes"] += r.wire_bytes
    return {"frames": len(rows), "bytes": sum(r.wire_bytes for r in rows),
            "jobs": sorted({r.job_id for r in rows}), "t0_epoch_s": t0,
            "span_s": round(max((r.time for r in rows), default=t0) - t0, 6),
            "nodes": len({r.src for r in rows} | {r.dst for r in rows}),
            "phases": phases, "opcodes": opcodes}


def format_table(path: str, s: dict) -> str:
    """The human-readable table."""
    def t(v):
        return "-" if v is None else f"{v:.6f}"
    lines = [f"{path}: {s['frames']} frames, {s['bytes']} bytes, jobs {s['jobs']}, "
             f"{s['nodes']} addresses, span {s['span_s']:.6f} s",
             f"{'phase':<14} {'messages':>9} {'bytes':>12} {'first_s':>12} {'last_s':>12}"]
    for name in PHASES:
        p = s["phases"][name]
        lines.append(f"{name:<14} {p['messages']:>9} {p['bytes']:>12} {t(p['first_s']):>12} "
                     f"{t(p['last_s']):>12}")
    lines.append(f"{'total':<14} {s['frames']:>9} {s['bytes']:>12}")
    return "\n".join(lines)


def _labeler(addr_map_path: str | None):
    """address -> node label: the satellite from an address map, else the IP address."""
    if not addr_map_path:
        return lambda ip, port: ip
    from node_app.addressing import AddressMap
    try:
        amap = AddressMap.load(addr_map_path)
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"--addr-map {addr_map_path}: {e}") from None
    by_ip: dict[str, list] = {}
    for sat, (ip, _port) in amap.nodes.items():
        by_ip.setdefault(ip, []).append(sat)

    def label(ip, port):
        sat = amap.sat_at((ip, port))
        if sat is None and len(by_ip.get(ip, ())) == 1:  # client side: known by its IP only
            sat = by_ip[ip][0]
        return f"sat {sat[0]},{sat[1]}" if sat is not None else ip
    return label


def plot_sequence(rows: list[Row], out: str, title: str, label=lambda ip, port: ip) -> None:
    """Sequence plot: one lane per node, time downwards (ms), an arrow per message from
    its first byte at the sender to its last byte at the receiver, coloured by phase."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    nodes: dict[str, int] = {}
    for r in rows:  # lanes in order of first appearance
        for n in (label(r.src, r.sport), label(r.dst, r.dport)):
            nodes.setdefault(n, len(nodes))
    shown = rows[:MAX_PLOT_ARROWS]
    t0 = min((r.first_time for r in rows), default=0.0)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(nodes) + 2), 7))
    for x in range(len(nodes)):
        ax.axvline(x, color="0.85", lw=1, zorder=0)
    for phase in PHASES:
        sel = [r for r in shown if r.phase == phase]
        if not sel:
            continue
        x0 = [nodes[label(r.src, r.sport)] for r in sel]
        x1 = [nodes[label(r.dst, r.dport)] for r in sel]
        y0 = [(r.first_time - t0) * 1e3 for r in sel]
        y1 = [(r.time - t0) * 1e3 for r in sel]
        c = PHASE_COLORS[phase]
        ax.add_collection(LineCollection([[(a, b), (cc, d)] for a, b, cc, d in zip(x0, y0, x1, y1)],
                                         colors=c, lw=0.8, alpha=0.8))
        for marker, keep in ((">", lambda a, b: b > a), ("<", lambda a, b: b < a),
                             ("o", lambda a, b: b == a)):
            pts = [(b, d) for a, b, d in zip(x0, x1, y1) if keep(a, b)]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, s=18, color=c)
        ax.plot([], [], color=c, label=f"{phase} ({len(sel)})")
    ax.set_xticks(range(len(nodes)), list(nodes), rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.5, max(len(nodes) - 0.5, 0.5))
    ax.set_ylabel("time since the first frame (ms)")
    ax.invert_yaxis()
    note = "" if len(shown) == len(rows) else f" (first {len(shown)} of {len(rows)} messages)"
    ax.set_title(title + note, fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the arrows
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    class _Parser(argparse.ArgumentParser):
        def error(self, message):  # one line on stderr, exit 2
            raise UsageError(message)
    p = _Parser(prog="python3 -m experiments.pcap.report",
                description="Per-phase table and sequence plot of a SpaceCoMP capture.")
    p.add_argument("pcap", help="capture file (pcap or pcapng)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="OUT.png", help="write a sequence plot")
    p.add_argument("--job", type=int, help="only this job id")
    p.add_argument("--port", type=int, action="append",
                   help="TCP port of the daemons (repeatable; default: recognise any)")
    p.add_argument("--addr-map", help="address map JSON, to label nodes by satellite")
    p.add_argument("--key-file", help="the testbed key: verify every frame's tag")
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        label = _labeler(args.addr_map)
        key = None
        if args.key_file:
            from node_app.auth import load_key
            try:
                key = load_key(args.key_file)
            except ValueError as e:
                raise UsageError(str(e)) from None
        rows = load(args.pcap, args.port, args.job, key)
        summary = summarize(rows)
        if args.plot:
            try:
                plot_sequence(rows, args.plot, f"SpaceCoMP capture {args.pcap}", label)
            except OSError as e:
                raise UsageError(f"--plot {args.plot}: {e.strerror or e}") from None
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary["file"] = args.pcap
    if args.plot:
        summary["plot"] = args.plot
    print(json.dumps(summary) if args.json else format_table(args.pcap, summary))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
