"""The ground side: submit a job to a coordinator and wait for its result.

:func:`submit` sends a SubmitJob, reports each progress message, saves result files
(streamed to disk as they arrive) and returns the coordinator's JobResult body with the
ground's own ``end_to_end_s`` (submission to result at the ground, seconds) added to its
metrics.  A failed job raises :class:`JobFailed`.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

from node_app import protocol as P
from node_app.streams import Spool
from node_app.transport import Link


class JobFailed(Exception):
    """The job failed (the message names the reason and, for a stall, the node)."""

    def __init__(self, message: str, body: dict | None = None):
        super().__init__(message)
        self.body = body or {}


def new_job_id() -> int:
    """A random 16-bit job id (jobs are keyed by it on every node)."""
    return random.SystemRandom().randrange(1, 0x10000)


def job_name(job_id: int) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{job_id:05d}"


async def submit(addr, job_id: int, ext: dict, fixed: P.SubmitFixed | None = None,
                 files_dir: str | None = None, progress=None, timeout_s: float = 600.0,
                 max_frame: int = P.DEFAULT_MAX_FRAME) -> dict:
    """Run one job through the coordinator at ``addr``; returns the JobResult body.

    progress: called with each progress body (PhaseDone frames the coordinator forwards).
    files_dir: where result files go (default: not kept).
    timeout_s: overall limit; the coordinator's own phase timeout normally fires first.
    """
    t0 = time.time()
    los = ext.get("los")
    who = f"coordinator {list(los)}" if isinstance(los, (list, tuple)) else "the coordinator"
    link = await Link.connect(tuple(addr), max_frame)
    spool = Spool(files_dir) if files_dir else None
    try:
        ext = {"msgid": f"{job_id}-ground-{int(t0 * 1000) % 100000}", **ext}
        await link.send(P.SUBMIT_JOB, job_id, ext, fixed)
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobFailed(f"job {job_id}: no result within {timeout_s:g} s")
            try:
                msg = await asyncio.wait_for(link.read(), remaining)
            except (ConnectionError, P.ProtocolError) as e:
                raise JobFailed(f"job {job_id}: {who} lost mid-job "
                                f"({str(e) or type(e).__name__}); no result") from None
            if msg is None:
                raise JobFailed(f"job {job_id}: {who} lost mid-job (it closed the "
                                f"connection without a result)")
            if msg.op == P.PHASE_DONE:
                if progress:
                    progress(msg.body)
            elif msg.op == P.DATA_CHUNK and msg.body.role == P.ROLE_GROUND:
                if spool:
                    spool.handle(msg.body)
            elif msg.op == P.JOB_RESULT:
                body = msg.body
                if body.get("status") != "ok":
                    raise JobFailed(str(body.get("error", "job failed")), body)
                t_end = time.time()
                body.setdefault("metrics", {})["end_to_end_s"] = t_end - t0
                paths = {}
                if spool:
                    for name, path in spool.claim(list(body.get("files") or [])).items():
                        final = os.path.join(files_dir, name)
                        os.replace(path, final)
                        paths[name] = final
                body["paths"] = paths
                return body
            elif msg.op == P.ERROR:
                raise JobFailed(f"job {job_id}: coordinator error: {msg.body.get('error')}")
    except asyncio.TimeoutError:
        raise JobFailed(f"job {job_id}: no result within {timeout_s:g} s") from None
    finally:
        if spool:
            spool.close()
        await link.close()


def run(addr, job_id, ext, fixed=None, **kw) -> dict:
    """Blocking :func:`submit`."""
    return asyncio.run(submit(addr, job_id, ext, fixed, **kw))
