"""Jobs as the view shows them, rebuilt from the node logs (pure: fed events, no I/O).

Every node daemon logs one JSON line per event (:mod:`node_app.nodelog`).  From those
alone :class:`JobTracker` follows each job: the coordinator's ``SubmitJob``; its
``AssignCollector``/``AssignMapper``/``AssignReducer`` sends name the plan's roles; data
sends (``collect`` collector->mapper, ``map`` mapper->reducer) pair them and count bytes,
which are also added to every ISL on the route the network takes; a role's ``PhaseDone``
to the coordinator marks it done, the reducer's ``JobResult`` marks the reducer done and
the coordinator's ``JobResult`` to the ground ends the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Job:
    """One job as seen in the logs.  Satellites are ``(sat, orb)`` tuples.

    collectors/mappers: node -> its partner (mapper/reducer) once data flowed, else None.
    done: nodes per role (``collector``/``mapper``/``reducer``) that finished.
    link_bytes: ISL index -> bytes of this job's data that crossed it.
    """

    job: int
    coordinator: tuple
    t_submit: float
    status: str = "running"
    collectors: dict = field(default_factory=dict)
    mappers: dict = field(default_factory=dict)
    reducer: tuple | None = None
    done: dict = field(default_factory=lambda: {"collector": set(), "mapper": set(),
                                                "reducer": set()})
    bytes: dict = field(default_factory=lambda: {"collect": 0, "map": 0})
    link_bytes: dict = field(default_factory=dict)
    t_end: float | None = None
    error: str | None = None

    def to_json(self, index: dict) -> dict:
        """JSON for the page: satellites as node indices (``index``: sat -> index)."""
        def idx(s):
            return index.get(tuple(s)) if s is not None else None
        return {"job": self.job, "status": self.status, "coordinator": idx(self.coordinator),
                "t_submit": round(self.t_submit, 3),
                "t_end": None if self.t_end is None else round(self.t_end, 3),
                "collectors": [[idx(c), idx(m)] for c, m in sorted(self.collectors.items())],
                "mappers": [[idx(m), idx(r)] for m, r in sorted(self.mappers.items())],
                "reducer": idx(self.reducer),
                "done": {k: sorted(idx(s) for s in v) for k, v in self.done.items()},
                "bytes": dict(self.bytes),
                "link_bytes": sorted([k, v] for k, v in self.link_bytes.items()),
                "error": self.error}


class JobTracker:
    """Jobs rebuilt from node-log events (see the module docstring).

    route: callable ``(a, b) -> [sat, ...]`` giving the path data takes from a to b
        (None: bytes are not spread over ISLs).
    link_index: ``frozenset({a, b}) -> ISL index`` of the view's topology.
    keep: how many finished jobs to keep (oldest dropped first).
    """

    def __init__(self, route=None, link_index: dict | None = None, keep: int = 20):
        self.route = route
        self.link_index = link_index or {}
        self.keep = keep
        self.jobs: dict[int, Job] = {}
        self.changed = False

    def feed(self, e: dict) -> None:
        """One node-log event (bad or irrelevant events are ignored)."""
        try:
            self._feed(e)
        except (TypeError, ValueError, KeyError, IndexError):
            pass  # a log line of another shape: never break the view

    def _feed(self, e: dict) -> None:
        job_id, action, what = e.get("job"), e.get("action"), e.get("what")
        if not isinstance(job_id, int):
            return
        t = float(e.get("time", 0.0))
        node = _sat(e.get("node"))
        frm, to = _sat(e.get("from")), _sat(e.get("to"))
        if action == "recv" and what == "SubmitJob":
            old = self.jobs.get(job_id)
            if old is None or old.status != "running" or old.coordinator != node:
                self.jobs[job_id] = Job(job_id, node, t)
                self._trim()
                self.changed = True
            return
        job = self.jobs.get(job_id)
        if job is None:
            return
        if action == "send":
            if what == "AssignCollector":
                job.collectors.setdefault(to, None)
            elif what == "AssignMapper":
                job.mappers.setdefault(to, None)
            elif what == "AssignReducer":
                job.reducer = to
            elif what in ("collect", "map"):
                (job.collectors if what == "collect" else job.mappers)[frm] = to
                n = int(e.get("bytes") or 0)
                job.bytes[what] += n
                self._spread(job, frm, to, n)
            elif what == "PhaseDone" and to == job.coordinator and e.get("msgid"):
                # (a mapper's confirmation to its collector has no msgid)
                if frm in job.collectors:
                    job.done["collector"].add(frm)
                elif frm in job.mappers:
                    job.done["mapper"].add(frm)
            elif what == "JobResult":
                if node == job.coordinator and to is None:
                    job.status, job.t_end = "done", t
                else:
                    job.done["reducer"].add(frm)
            else:
                return
            self.changed = True
        elif action in ("job_failed", "role_failed") and job.status == "running":
            if action == "job_failed":
                job.status, job.t_end, job.error = "failed", t, str(e.get("error"))[:200]
            self.changed = True

    def _spread(self, job: Job, a, b, nbytes: int) -> None:
        if self.route is None or a is None or b is None or a == b or nbytes <= 0:
            return
        path = self.route(a, b)
        for u, v in zip(path, path[1:]):
            k = self.link_index.get(frozenset((tuple(u), tuple(v))))
            if k is not None:
                job.link_bytes[k] = job.link_bytes.get(k, 0) + nbytes

    def _trim(self) -> None:
        finished = [j for j in self.jobs.values() if j.status != "running"]
        for j in sorted(finished, key=lambda j: j.t_submit)[:max(0, len(finished) - self.keep)]:
            del self.jobs[j.job]

    def to_json(self, index: dict) -> list[dict]:
        return [j.to_json(index) for j in sorted(self.jobs.values(), key=lambda j: j.t_submit)]


def _sat(v):
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return (int(v[0]), int(v[1]))
    return None
