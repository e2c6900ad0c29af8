"""What every worker role of a job has in common (node_app.roles builds on it): parsing
its typed Assign, reporting PhaseDone to the coordinator (ok, failed, peer_lost), the
liveness state a probe is told, release by the coordinator, and :meth:`Role.receive`, the
one reader of an upstream DataChunk stream (the mapper's and the reducer's) with the part
that differs passed in.
"""

from __future__ import annotations

import asyncio
import os
import time

from node_app import protocol as P
from node_app import tasks as T
from node_app.replay import LINK_ERRORS
from node_app.streams import Cancelled, ChunkSender, Released, Spool, remove_tree
from node_app.transport import Link


def quiet(produce):
    """A producer that ends quietly when its feed is cancelled (the role was released,
    superseded or failed), so no thread result is left holding an exception."""
    def run(feed):
        try:
            return produce(feed)
        except Cancelled:
            return None
    return run


class StreamBroken(P.ProtocolError):
    """An upstream stream that ended before its last chunk."""


class Role:
    """Common parsing and reporting of one role of one job on one node."""

    role = "?"
    task_kind = "?"
    index = 0   # the role's stream number (collector: partition - 1; mapper: its index)

    def __init__(self, node, job_id: int, assign: P.Assign):
        self.node, self.job_id, self.assign = node, job_id, assign
        self.uid = assign.jobid or str(job_id)
        self.md = assign.meta_data
        self.coordinator, self.coordinator_addr = assign.coordinator, assign.coordinator_addr
        self.revision = assign.revision
        self.idle_s = assign.timeout_s * 2
        try:
            self.user_task = T.get(self.task_kind, assign.tasks.get(self.task_kind))
        except T.UnknownTask as e:
            raise P.ProtocolError(str(e)) from None
        self.t_start = time.time()
        self.dir = node.job_dir(job_id, self.role)
        self.task = None
        self.feeds: list = []   # feeds whose producer threads write to self.dir
        self.status = "ok"   # "failed" once the role fails (acks then say so)
        self.closed = asyncio.Event()   # released or finished
        self.bytes_in = 0
        self.streams = 0
        self.last_activity = time.monotonic()

    @property
    def log(self):
        return self.node.log

    def state(self) -> dict:
        """What a liveness probe (an Assign with the same revision) is told: ``bytes`` in
        and out so far, which the coordinator counts as progress."""
        return {"revision": self.revision, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out(), "status": self.status}

    def bytes_out(self) -> int:
        return 0

    async def report(self, status: str = P.ST_OK, **extra) -> None:
        await self.node.phase_done(self.coordinator_addr, self.coordinator, self.job_id,
                                   P.PhaseDone(self.role, self.node.sat, status, index=self.index,
                                               peer_role=extra.pop("peer_role", None),
                                               peer=extra.pop("peer", None),
                                               error=extra.pop("error", None),
                                               extra={"t_start": self.t_start,
                                                      "t_end": time.time(), **extra}))

    async def report_peer_lost(self, peer_role: str, peer, error: BaseException) -> None:
        text = str(error) or type(error).__name__
        self.log.log("peer_lost", self.job_id, None, self.node.sat, peer, role=self.role,
                     peer_role=peer_role, error=text)
        await self.report(P.ST_PEER_LOST, peer_role=peer_role, peer=tuple(peer),
                          error=f"{peer_role} {list(peer)}: {text}")

    async def fail(self, e: BaseException) -> None:
        self.status = "failed"
        text = str(e) or type(e).__name__
        self.log.log("role_failed", self.job_id, None, self.node.sat, self.node.sat,
                     role=self.role, error=text)
        await self.report(P.ST_FAILED, error=f"{self.role} {list(self.node.sat)}: {text}")

    def redirect(self, assign: P.Assign) -> None:
        """A newer Assign for this role: the peer it feeds was replaced."""
        self.revision = assign.revision

    def release(self) -> None:
        """The coordinator ended the job: stop whatever runs and drop everything."""
        self.status = P.ST_RELEASED
        self.closed.set()
        if self.task is not None:
            self.task.cancel()

    def track(self, feed):
        """Register a feed whose producer thread writes to this role's directory."""
        self.feeds.append(feed)
        return feed

    def finish(self) -> None:
        self.closed.set()
        remove_tree(self.dir)
        # a producer thread still running (cancelled, it stops at its next put) may have
        # created a file after the removal listed the directory: remove again when it ends
        for feed in self.feeds:
            if feed.worker is not None and not feed.worker.done():
                feed.worker.add_done_callback(lambda _f: remove_tree(self.dir))
        self.node.drop_role(self.job_id, self.role, self)

    async def until(self, event: asyncio.Event, timeout_s: float) -> None:
        """Wait for ``event``; Released if the role is released first."""
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.closed.wait())]
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if not event.is_set():
            if self.closed.is_set():
                raise Released()
            raise asyncio.TimeoutError(f"nothing for {timeout_s:g} s")

    def downstream(self, role: int, stream: int, peer, addr, what: str) -> ChunkSender:
        """The DataChunk stream to ``peer``, connected when its first chunk is ready."""
        return ChunkSender(None, self.job_id, role, stream, self.log, self.node.sat, peer,
                           what=what, connect=lambda: self.node.connect(addr),
                           max_frame=self.node.max_frame)

    async def receive(self, link: Link, msg: P.Message, chunk_role: int, on_records) -> object:
        """Read one upstream stream to its END chunk: spool its files, and hand every
        records chunk with its files to ``await on_records(obj, {name: path})``.  Returns
        the sender named in the chunks; StreamBroken if the stream breaks off."""
        self.streams += 1
        spool = Spool(os.path.join(self.dir, f"in-{self.streams}"), self.node.quota(self.job_id))
        sender = None
        what = {P.ROLE_MAPPER: "collect", P.ROLE_REDUCER: "map"}[chunk_role]
        try:
            while True:
                chunk = msg.body
                if (msg.op != P.DATA_CHUNK or chunk.role != chunk_role
                        or msg.job_id != self.job_id):
                    raise P.ProtocolError(f"unexpected {msg.name} in a {what} stream")
                self.bytes_in += msg.wire_bytes
                self.last_activity = time.monotonic()
                if chunk.kind == P.CHUNK_RECORDS:
                    obj = chunk.json()
                    sender = obj.get("collector", obj.get("mapper"))
                    files = spool.claim(list(obj.get("files") or []))
                    self.log.log("recv", self.job_id,
                                 f"{self.job_id}:{chunk.role}:{chunk.stream}:{chunk.seq}",
                                 sender, self.node.sat, what=what)
                    await on_records(obj, files)
                else:
                    spool.handle(chunk)
                if chunk.end:
                    return sender
                try:
                    msg = await asyncio.wait_for(link.read(), self.idle_s)
                except LINK_ERRORS as e:
                    raise StreamBroken(f"{what} stream from {sender} broke off: "
                                       f"{str(e) or type(e).__name__}") from None
                if msg is None:
                    raise StreamBroken(f"{what} stream from {sender} ended before its last chunk")
        finally:
            spool.close()

    async def ack(self, link: Link, peer, status: str) -> None:
        """PhaseDone back on an upstream stream (best effort: the sender may be gone)."""
        try:
            await asyncio.wait_for(link.send(P.PHASE_DONE, self.job_id, P.PhaseDone(
                self.role, self.node.sat, status, index=self.index,
                extra={"msgid": self.node.msgid(self.job_id)}).body()), 5.0)
            self.log.log("send", self.job_id, None, self.node.sat, peer, what="PhaseDone")
        except LINK_ERRORS:
            pass
