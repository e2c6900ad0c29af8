"""Node logs: one JSON line per event, per node; merged job timelines; and the reference
log viewer's format.

A node's log line: ``{"time": epoch_s, "node": [sat, orb], "action": str, "msgid": str,
"from": [sat, orb], "to": [sat, orb], "job": job_id, ...extra}``.  A message carries the
same ``msgid`` in the sender's ``send`` line and the receiver's ``recv`` line.

The reference viewer (leopymr ``logviz``) reads ``{"timestamp", "from", "to", "action",
"msgid"}`` per line and groups lines by msgid into routes; :func:`to_logviz` emits one
line per message (its send event), or with ``hops=True`` one line per ISL hop along the
Manhattan route the network takes (controller.routing), so the viewer animates the path.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time

from topo import cli
from topo.spec import parse_grid

# LeoDOS message -> the reference viewer's action names
VIEWER_ACTIONS = {"SubmitJob": "submit", "AssignCollector": "set_map_count",
                  "AssignMapper": "set_map_count", "AssignReducer": "set_map_count",
                  "collect": "collect", "map": "map", "JobResult": "reduce",
                  "PhaseDone": "phase_done"}


class NodeLog:
    """Append-only JSON-lines log of one node (``path`` None: discard)."""

    def __init__(self, node, path: str | None):
        self.node = list(node)
        self.f = open(path, "a", encoding="utf-8", buffering=1) if path else None

    def log(self, action: str, job: int | None = None, msgid: str | None = None,
            frm=None, to=None, **extra) -> None:
        if self.f is None:
            return
        rec = {"time": time.time(), "node": self.node, "action": action, "job": job,
               "msgid": msgid, "from": list(frm) if frm is not None else None,
               "to": list(to) if to is not None else None}
        rec.update(extra)
        try:
            self.f.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
        except (OSError, ValueError):
            pass  # logging must never take a node down

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def read_logs(log_dir: str) -> list[dict]:
    """Every line of every ``*.jsonl`` node log in ``log_dir`` (bad lines skipped)."""
    out = []
    for path in sorted(glob.glob(os.path.join(log_dir, "node-*.jsonl"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    return out


def job_timeline(log_dir: str, job_id: int, since: float | None = None) -> list[dict]:
    """One job's events from all nodes, in time order.  ``since`` drops older lines (a
    16-bit job id is reused across runs)."""
    events = [e for e in read_logs(log_dir) if e.get("job") == job_id
              and (since is None or e.get("time", 0) >= since)]
    events.sort(key=lambda e: (e.get("time", 0), e.get("action", "")))
    return events


def to_logviz(events: list[dict], hops: bool = False, router=None) -> list[dict]:
    """Convert timeline events to the reference viewer's records (send events only)."""
    out = []
    for e in events:
        if e.get("action") != "send" or e.get("from") is None or e.get("to") is None:
            continue
        action = VIEWER_ACTIONS.get(e.get("what", ""), e.get("what", "send"))
        frm, to = tuple(e["from"]), tuple(e["to"])
        if hops and router is not None and frm != to:
            path = router.route(frm, to).path
            for i, (a, b) in enumerate(zip(path, path[1:])):
                out.append({"timestamp": e["time"] + i * 1e-6, "from": list(a), "to": list(b),
                            "action": action, "msgid": e.get("msgid")})
        else:
            out.append({"timestamp": e["time"], "from": list(frm), "to": list(to),
                        "action": action, "msgid": e.get("msgid")})
    return out


def main(argv=None) -> int:
    """``python3 -m node_app.nodelog LOG_DIR JOB_ID [--viewer] [--hops GRID]``: print a
    job's merged timeline (or the viewer format) as JSON lines."""
    import argparse
    p = argparse.ArgumentParser(prog="python3 -m node_app.nodelog")
    p.add_argument("log_dir")
    p.add_argument("job_id", type=int)
    p.add_argument("--viewer", action="store_true", help="reference logviz format")
    p.add_argument("--hops", metavar="PxS", help="expand each message along its route")
    a = p.parse_args(argv)
    events = job_timeline(a.log_dir, a.job_id)
    if a.viewer:
        router = None
        if a.hops:
            from controller.routing import Router
            from topo.constellation import Constellation
            planes, sats = parse_grid(a.hops)
            router = Router(Constellation(planes=planes, sats_per_plane=sats))
        events = to_logviz(events, hops=bool(a.hops), router=router)
    for e in events:
        print(json.dumps(e))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
