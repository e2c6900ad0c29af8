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


SILENCE_S = 10.0   # no frame from the coordinator for this long: it is lost


class JobFailed(Exception):
    """The job failed (the message names the reason and, for a stall, the node)."""

    def __init__(self, message: str, body: dict | None = None):
        super().__init__(message)
        self.body = body or {}


class NotANode(JobFailed):
    """The peer is not a node of this testbed (not the protocol, or not this key)."""


def new_job_id() -> int:
    """A random 16-bit job id (jobs are keyed by it on every node)."""
    return random.SystemRandom().randrange(1, 0x10000)


def job_name(job_id: int) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{job_id:05d}"


async def submit(addr, job_id: int, ext: dict, fixed: P.SubmitFixed | None = None,
                 files_dir: str | None = None, progress=None, timeout_s: float = 600.0,
                 max_frame: int = P.DEFAULT_MAX_FRAME, *, key: bytes,
                 silence_s: float = SILENCE_S, silence_explained=None) -> dict:
    """Run one job through the coordinator at ``addr``; returns the JobResult body.

    key: the testbed key (node_app.auth): frames are tagged with it and every reply must
    verify under it, so only the coordinator (nothing else on the network) can report.
    progress: called with each progress body (PhaseDone frames the coordinator forwards).
    files_dir: where result files go (default: not kept).
    timeout_s: overall limit; the coordinator's own phase timeout normally fires first.
    silence_s: the coordinator sends "alive" every 2 s while the job is queued or runs; this
        long without any frame from it and it is reported lost (stopped or cut off).
    silence_explained: called when that happens; True (e.g. the ground station was out of
        contact meanwhile, node_app.contact) keeps waiting instead.
    """
    t0 = time.time()
    los = ext.get("los")
    who = f"coordinator {list(los)}" if isinstance(los, (list, tuple)) else "the coordinator"
    link = await Link.connect(tuple(addr), max_frame, key=key)
    answered = False  # a frame that verified has come back
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
                msg = await asyncio.wait_for(link.read(), min(remaining, silence_s))
            except asyncio.TimeoutError:
                if remaining <= silence_s:
                    raise
                if silence_explained is not None and silence_explained(silence_s):
                    continue
                raise JobFailed(f"job {job_id}: {who} lost mid-job (silent for "
                                f"{silence_s:g} s: stopped or cut off); no result") from None
            except P.ProtocolError as e:
                if not answered:  # never a valid frame: not a node, or not this testbed's key
                    raise NotANode(f"job {job_id}: {addr[0]}:{addr[1]} is not a node of this "
                                   f"testbed: {e}") from None
                raise JobFailed(f"job {job_id}: {who} lost mid-job ({e}); no result") from None
            except ConnectionError as e:
                raise JobFailed(f"job {job_id}: {who} lost mid-job "
                                f"({str(e) or type(e).__name__}); no result") from None
            answered = answered or (msg is not None and msg.op != P.ERROR)
            if msg is None:
                raise JobFailed(f"job {job_id}: {who} lost mid-job (it closed the "
                                f"connection without a result)")
            if msg.op == P.PHASE_DONE:
                if progress and msg.body.get("event") != "alive":
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
                error = str(msg.body.get("error"))
                cls = NotANode if error == P.AUTH_ERROR and not answered else JobFailed
                raise cls(f"job {job_id}: coordinator error: {error}")
    except asyncio.TimeoutError:
        raise JobFailed(f"job {job_id}: no result within {timeout_s:g} s") from None
    except P.ProtocolError as e:  # a result file the coordinator sent out of order
        raise JobFailed(f"job {job_id}: bad result stream from {who}: {e}") from None
    finally:
        if spool:
            spool.close()
        await link.close()


def run(addr, job_id, ext, fixed=None, **kw) -> dict:
    """Blocking :func:`submit`."""
    return asyncio.run(submit(addr, job_id, ext, fixed, **kw))
