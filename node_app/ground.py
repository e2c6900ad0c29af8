"""The ground side: submit a job to a coordinator and wait for its result.

:func:`submit` sends a SubmitJob, reports each progress message, saves result files
(streamed to disk as they arrive) and returns the coordinator's JobResult body with the
ground's own ``end_to_end_s`` (submission to result at the ground, seconds) added to its
metrics.  A failed job raises :class:`JobFailed` (:class:`CoordinatorLost` when the
coordinator died or fell silent mid-job).

:func:`submit_failover` survives the coordinator's death: it remembers every satellite
the progress names as a role holder (the plan, then each reassignment), and when the
coordinator is lost it first tells each of them to drop its roles of the job (the
``released`` PhaseDone a coordinator sends when a job ends, under the testbed key) and
then submits the same job -- same job id, same job name -- to the next candidate
coordinator, which plans and runs it afresh.  Releasing first is what makes this safe:
without it the old roles live on under the same id until their own timeouts and the new
coordinator's job stalls on them (tried).
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


class CoordinatorLost(JobFailed):
    """The coordinator died (its connection closed or broke) or fell silent mid-job."""


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
                raise CoordinatorLost(f"job {job_id}: {who} lost mid-job (silent for "
                                f"{silence_s:g} s: stopped or cut off); no result") from None
            except P.ProtocolError as e:
                if not answered:  # never a valid frame: not a node, or not this testbed's key
                    raise NotANode(f"job {job_id}: {addr[0]}:{addr[1]} is not a node of this "
                                   f"testbed: {e}") from None
                raise CoordinatorLost(f"job {job_id}: {who} lost mid-job ({e}); no result") from None
            except ConnectionError as e:
                raise CoordinatorLost(f"job {job_id}: {who} lost mid-job "
                                f"({str(e) or type(e).__name__}); no result") from None
            answered = answered or (msg is not None and msg.op != P.ERROR)
            if msg is None:
                raise CoordinatorLost(f"job {job_id}: {who} lost mid-job (it closed the "
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


def role_holders(body: dict) -> set:
    """The satellites a progress body names as holding a role of the job: the plan's
    collectors, mappers and reducer, or the replacements of a reassignment."""
    out = set()
    plan = body.get("plan") if body.get("event") == "planned" else None
    if isinstance(plan, dict):
        for pair in plan.get("allocations") or []:
            out.update(tuple(s) for s in pair)
        if plan.get("reducer"):
            out.add(tuple(plan["reducer"]))
    if body.get("event") == "reassigned":
        for m in body.get("reassignments") or []:
            if m.get("new"):
                out.add(tuple(m["new"]))
    return {s for s in out if len(s) == 2 and all(isinstance(v, int) for v in s)}


async def release_roles(addr_of, job_id: int, uid: str, sats, coordinator, *, key: bytes,
                        timeout_s: float = 2.0) -> list:
    """Tell each of ``sats`` to drop its roles of job ``job_id`` named ``uid``, as the
    (dead) ``coordinator`` would at the end of a job; waits until each has closed the
    connection after it (the release is done then).  Returns the satellites reached."""
    body = P.PhaseDone("coordinator", tuple(coordinator), P.ST_RELEASED,
                       extra={"jobid": uid}).body()

    async def one(sat):
        link = await asyncio.wait_for(Link.connect(tuple(addr_of(sat)), key=key), timeout_s)
        try:
            await link.send(P.PHASE_DONE, job_id, body)
            link.writer.write_eof()   # the node closes its end once it has handled the frame
            if await asyncio.wait_for(link.read(), timeout_s) is not None:
                raise P.ProtocolError("unexpected answer to a release")
        finally:
            await link.close()
        return sat
    done = await asyncio.gather(*(one(s) for s in sorted(sats)), return_exceptions=True)
    return [s for s in done if isinstance(s, tuple)]


async def submit_failover(candidates: list, job_id: int, ext: dict, addr_of, fixed=None,
                          progress=None, **kw) -> dict:
    """:func:`submit` to the first of ``candidates`` (``[(sat, addr), ...]``, coordinators
    in the order the ground can reach them); if that coordinator is lost mid-job, release
    the job's roles everywhere the progress named them and submit the same job (same id
    and name, ``los`` the new coordinator) to the next.  ``addr_of(sat)``: a satellite's
    address.  The result's ``metrics.failover`` lists each lost coordinator, the error and
    the satellites released; the last loss, or any other failure, is raised."""
    if not candidates:
        raise ValueError("submit_failover: no candidate coordinator")
    holders: set = set()
    failover = []

    def track(body):
        holders.update(role_holders(body))
        if progress:
            progress(body)
    uid = str(ext.get("jobid", job_id))
    for i, (sat, addr) in enumerate(candidates):
        try:
            body = await submit(addr, job_id, {**ext, "los": list(sat)}, fixed,
                                progress=track, **kw)
            body.setdefault("metrics", {})["failover"] = failover
            return body
        except CoordinatorLost as e:
            if i == len(candidates) - 1:
                e.body["failover"] = failover
                raise
            t0 = time.time()
            reached = await release_roles(addr_of, job_id, uid, holders, sat, key=kw["key"])
            failover.append({"coordinator": list(sat), "error": str(e),
                             "released": [list(s) for s in sorted(holders)],
                             "reached": len(reached), "release_s": round(time.time() - t0, 3),
                             "next": list(candidates[i + 1][0])})
            holders.clear()
    raise JobFailed(f"job {job_id}: no coordinator left")  # not reached: the last raises
