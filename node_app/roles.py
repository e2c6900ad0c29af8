"""The worker roles of a job on one node: collector, mapper, reducer.

Each role is built from its typed Assign (node_app.protocol: AssignCollector,
AssignMapper, AssignReducer) and reports to the coordinator with PhaseDone.

Records chunk payloads (DataChunk CHUNK_RECORDS JSON):
* collector -> mapper: ``{"records": [...], "files": [names], "index": chunk_no,
  "end": bool, "collector": [sat, orb], "rev": the collector's Assign revision}``; a chunk
  leaves every ``max_collect`` records.
* mapper -> reducer: ``{"data": output, "files": [names], "mapped_index": i,
  "end_map": bool, "mapper": [sat, orb]}`` per map output, then ``{"final": true}``
  flagged END.

Recovery: every stream is all-or-nothing.  A sender retains what it sent (records in
memory, files on disk: node_app.replay) until the receiver's PhaseDone ok, and re-sends it
all to a replacement the coordinator names.  The reducer acknowledges its mappers once the
JobResult is out, and a mapper acknowledges its collector only after the reducer's
acknowledgement, so data is released only when nothing downstream can still need it.  A
mapper runs one *attempt* per collector stream: a stream from a newer collector revision
(a replacement collector, or the same one moved to this mapper) supersedes the current
attempt, whose half-sent output stream is dropped; the reducer keeps, per mapper index,
the first stream that reached its END and discards broken ones.

PhaseDone to the coordinator: ``{"role", "node", "index", "status": "ok"|"failed"|
"peer_lost", "error"?, "peer_role"/"peer" (peer_lost), "t_start", "t_end" (epoch s),
"records", "bytes" (frame bytes sent, replays included), "replayed" [{"to", "bytes"}]}``.
"""

from __future__ import annotations

import asyncio
import time

from node_app import protocol as P
from node_app.replay import Downstream, RetainingFeed, Superseded
from node_app.role_base import Released, Role, StreamBroken, quiet
from node_app.streams import ChunkSender, Feed, emit, pump
from node_app.transport import Link


class Collector(Role):
    """Runs the collect task and streams its records to the mapper."""

    role, task_kind = "collector", "collect"

    def __init__(self, node, job_id, assign: P.AssignCollector):
        super().__init__(node, job_id, assign)
        self.partition = assign.partition
        self.index = assign.partition - 1
        self.max_collect = max(1, int(self.md.get("max_collect", 1024)))
        self.records = 0
        self.out: Downstream | None = None
        self.mapper, self.mapper_addr = assign.mapper, assign.mapper_addr

    def bytes_out(self) -> int:
        return self.out.bytes_sent() if self.out else 0

    def redirect(self, assign: P.AssignCollector) -> None:
        super().redirect(assign)
        self.mapper, self.mapper_addr = assign.mapper, assign.mapper_addr
        if self.out is not None:
            self.out.move(assign.mapper, assign.mapper_addr)

    def produce(self, feed: Feed) -> int:
        """Task thread: run collect(), cut chunks of max_collect records."""
        payload = {"meta_data": {**self.md, "data_id": self.partition},
                   "scratch_dir": self.dir, "data_dir": self.node.data_dir}
        batch, files, index = [], [], 0
        for record in self.user_task.collect(payload):
            value, names = emit(feed, record, self.dir, "sent-")
            batch.append(value)
            files += names
            self.records += 1
            if len(batch) >= self.max_collect:
                feed.put(("records", {"records": batch, "files": files, "index": index,
                                      "end": False, "collector": list(self.node.sat)}, False))
                batch, files, index = [], [], index + 1
        feed.put(("records", {"records": batch, "files": files, "index": index, "end": True,
                              "collector": list(self.node.sat)}, True))
        return self.records

    async def run(self) -> None:
        try:
            feed = self.track(RetainingFeed(asyncio.get_running_loop(),
                                                   self.node.quota(self.job_id)))
            self.out = Downstream(self, feed, P.ROLE_MAPPER, self.partition, "mapper",
                                  self.mapper, self.mapper_addr, "collect")
            await pump(feed, self.out, quiet(self.produce))
            await self.report("ok", records=self.records, bytes=self.out.bytes_sent(),
                              chunks=self.out.seq, mapper=list(self.out.peer),
                              replayed=self.out.replayed)
            n = len(self.out.items)
            await self.out.confirmed(self.idle_s * 10)
            self.log.log("recv", self.job_id, None, self.out.peer, self.node.sat,
                         what="PhaseDone", released=n)
            if self.out.replayed:  # the replays happened after the first report
                await self.report("ok", records=self.records, bytes=self.out.bytes_sent(),
                                  mapper=list(self.out.peer), replayed=self.out.replayed)
        except (asyncio.CancelledError, Released, Superseded):
            pass
        except Exception as e:  # noqa: BLE001 - reported to the coordinator, never raised
            await self.fail(e)
        finally:
            if self.out:
                self.out.close()
            self.finish()


class Attempt:
    """One run of the map task over one collector stream (revision ``rev``)."""

    def __init__(self, mapper: "Mapper", rev: int):
        self.rev = rev
        self.work: asyncio.Queue = asyncio.Queue(4)   # chunks waiting for the map task
        self.feed = mapper.track(RetainingFeed(asyncio.get_running_loop(),
                                                   mapper.node.quota(mapper.job_id)))
        self.out = Downstream(mapper, self.feed, P.ROLE_REDUCER, mapper.index, "reducer",
                              mapper.reducer, mapper.reducer_addr, "map")
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.outputs = 0
        self.task: asyncio.Task | None = None

    def abort(self) -> None:
        self.feed.cancel()
        self.out.close()
        try:
            self.work.put_nowait(None)
        except asyncio.QueueFull:
            pass
        if self.task is not None:
            self.task.cancel()
        if not self.done.done():
            self.done.set_result(False)


class Mapper(Role):
    """Maps chunks as they arrive from its collector; streams outputs to the reducer."""

    role, task_kind = "mapper", "map"

    def __init__(self, node, job_id, assign: P.AssignMapper):
        super().__init__(node, job_id, assign)
        self.reducer, self.reducer_addr = assign.reducer, assign.reducer_addr
        self.index = assign.index
        self.current: Attempt | None = None
        self.records_in = 0

    def bytes_out(self) -> int:
        return self.current.out.bytes_sent() if self.current else 0

    def redirect(self, assign: P.AssignMapper) -> None:
        super().redirect(assign)
        self.reducer, self.reducer_addr = assign.reducer, assign.reducer_addr
        if self.current is not None:
            self.current.out.move(assign.reducer, assign.reducer_addr)

    def _begin(self, rev: int) -> Attempt:
        if self.current is not None:
            if rev < self.current.rev:
                raise Superseded()
            self.log.log("attempt_superseded", self.job_id, None, self.node.sat, self.node.sat,
                         old=self.current.rev, new=rev)
            self.current.abort()
        a = self.current = Attempt(self, rev)
        a.task = self.node.spawn(self._attempt(a))
        return a

    async def handle_stream(self, link: Link, msg: P.Message) -> None:
        """One collector's stream: one attempt; the collector is acked once the reducer
        has confirmed this attempt's outputs."""
        mine: list[Attempt] = []
        sender: list = []

        async def on_records(obj, files):
            if not mine:
                sender.append(obj.get("collector"))
                mine.append(self._begin(int(obj.get("rev", 0))))
            if self.current is not mine[0]:
                raise Superseded()
            records = obj.get("records")
            if not isinstance(records, list):
                raise P.ProtocolError("records chunk without a records list")
            self.records_in += len(records)
            await mine[0].work.put((obj, files))

        try:
            collector = await self.receive(link, msg, P.ROLE_MAPPER, on_records)
        except Superseded:
            await self.ack(link, None, P.ST_SUPERSEDED)
            return
        except StreamBroken as e:
            self.log.log("stream_broken", self.job_id, None, None, self.node.sat, error=str(e))
            if mine and self.current is mine[0]:
                mine[0].abort()
                self.current = None
                try:
                    peer = P.sat_field(sender[0], "collector")
                except P.ProtocolError:
                    return
                await self.report_peer_lost("collector", peer, e)
            return
        if not mine:
            raise P.ProtocolError("collector stream without a records chunk")
        await mine[0].work.put(None)
        if not await asyncio.shield(mine[0].done):
            return
        await self.ack(link, collector, P.ST_OK if self.current is mine[0] else P.ST_SUPERSEDED)
        if self.current is mine[0]:
            self.closed.set()

    def produce(self, a: Attempt, feed: Feed) -> int:
        """Task thread: run_map over each chunk as it comes; feed outputs."""
        loop = feed.loop
        while True:
            item = asyncio.run_coroutine_threadsafe(a.work.get(), loop).result(self.idle_s * 10)
            if item is None or feed.cancelled:
                break
            obj, paths = item
            files = {name: open(path, "rb") for name, path in paths.items()}
            payload = {"meta_data": self.md, "scratch_dir": self.dir,
                       "data": obj["records"], "files": files,
                       "end_collect": bool(obj.get("end")),
                       "collected_index": obj.get("index"), "collector": obj.get("collector"),
                       "node": list(self.node.sat)}
            try:
                for out in self.user_task.run_map(payload):
                    value, names = emit(feed, out, self.dir, f"out{a.rev}-")
                    feed.put(("records", {"data": value, "files": names,
                                          "mapped_index": a.outputs,
                                          "end_map": bool(obj.get("end")),
                                          "mapper": list(self.node.sat)}, False))
                    a.outputs += 1
            finally:
                for f in files.values():
                    f.close()
        feed.put(("records", {"final": True, "mapper": list(self.node.sat)}, True))
        return a.outputs

    async def _attempt(self, a: Attempt) -> None:
        ok = False
        try:
            await pump(a.feed, a.out, quiet(lambda feed: self.produce(a, feed)))
            await self.report("ok", records=self.records_in, outputs=a.outputs,
                              bytes=a.out.bytes_sent(), bytes_in=self.bytes_in,
                              chunks=a.out.seq, reducer=list(a.out.peer),
                              replayed=a.out.replayed)
            await a.out.confirmed(self.idle_s * 10)
            if a.out.replayed:
                await self.report("ok", records=self.records_in, outputs=a.outputs,
                                  bytes=a.out.bytes_sent(), reducer=list(a.out.peer),
                                  replayed=a.out.replayed)
            ok = True
        except Superseded:  # the reducer already holds a complete stream for this index
            ok = True
        except (asyncio.CancelledError, Released):
            pass
        except Exception as e:  # noqa: BLE001
            if self.current is a:
                await self.fail(e)
        finally:
            a.out.close()
            if not a.done.done():
                a.done.set_result(ok)

    async def run(self) -> None:
        try:
            await asyncio.wait_for(self.closed.wait(), self.idle_s * 10)
        except asyncio.CancelledError:
            pass
        except asyncio.TimeoutError:
            await self.fail(TimeoutError(f"no complete collector stream in {self.idle_s * 10:g} s"))
        finally:
            if self.current is not None and not self.current.done.done():
                self.current.abort()
            self.finish()


class Reducer(Role):
    """Gathers every mapper's outputs, reduces, sends the JobResult to the coordinator."""

    role, task_kind = "reducer", "reduce"

    def __init__(self, node, job_id, assign: P.AssignReducer):
        super().__init__(node, job_id, assign)
        self.los, self.los_addr = assign.los, assign.los_addr
        self.expected = assign.mappers
        self.committed: dict[int, list[dict]] = {}   # mapper index -> its outputs
        self.all_in = asyncio.Event()
        self.finished = asyncio.Event()

    @property
    def payloads(self) -> list[dict]:
        return [p for i in sorted(self.committed) for p in self.committed[i]]

    async def handle_stream(self, link: Link, msg: P.Message) -> None:
        """One mapper's stream: kept if it is the first complete one for its index."""
        index = msg.body.stream if msg.op == P.DATA_CHUNK else -1
        if not 0 <= index < self.expected:
            raise P.ProtocolError(f"map stream {index} outside 0..{self.expected - 1}")
        payloads: list[dict] = []

        async def on_records(obj, files):
            if not obj.get("final"):
                payloads.append({"meta_data": self.md, "data": obj.get("data"), "files": files,
                                 "end_map": bool(obj.get("end_map")),
                                 "mapped_index": obj.get("mapped_index"),
                                 "mapper": obj.get("mapper")})

        try:
            mapper = await self.receive(link, msg, P.ROLE_REDUCER, on_records)
        except StreamBroken as e:  # a mapper died or restarted: its replacement re-sends
            self.log.log("stream_broken", self.job_id, None, None, self.node.sat, error=str(e))
            return
        fresh = index not in self.committed
        if fresh:
            self.committed[index] = payloads
            if len(self.committed) == self.expected:
                self.all_in.set()
        try:
            await self.until(self.finished, self.idle_s * 10)
        except (Released, asyncio.TimeoutError):
            return
        await self.ack(link, mapper, self.status if fresh else P.ST_SUPERSEDED)

    def reduce(self):
        """Task thread: call reduce() with each payload's files opened."""
        opened = []
        payloads = self.payloads
        try:
            for p in payloads:
                p["files"] = {name: open(path, "rb") for name, path in p["files"].items()}
                opened += p["files"].values()
            return self.user_task.reduce(payloads)
        finally:
            for f in opened:
                f.close()

    async def _wait_inputs(self) -> None:
        """Until every mapper index has a complete stream.  The coordinator decides when a
        silent mapper is dead (and replaces it); this only gives up after ten idle limits
        without data, should the coordinator be gone."""
        limit = self.idle_s * 10
        while not self.all_in.is_set():
            try:
                await self.until(self.all_in, limit)
            except asyncio.TimeoutError:
                if time.monotonic() - self.last_activity >= limit:
                    raise TimeoutError(f"{len(self.committed)} of {self.expected} mappers "
                                       f"finished, then nothing for {limit:.0f} s") from None

    async def run(self) -> None:
        link = None
        try:
            await self._wait_inputs()
            t_reduce = time.time()
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(None, self.reduce)
            t_done = time.time()
            link = await self.node.connect(self.los_addr)
            sender = ChunkSender(link, self.job_id, P.ROLE_GROUND, 0, self.log, self.node.sat,
                                 self.los, what="result")
            state = {}

            def produce(feed):
                state["value"], state["files"] = emit(feed, result, None)
            await pump(Feed(loop), sender, quiet(produce))
            phase = P.PhaseDone("reducer", self.node.sat, P.ST_OK, index=0, extra={
                "t_start": self.t_start, "t_reduce": t_reduce, "t_end": t_done,
                "payloads": len(self.payloads), "bytes_in": self.bytes_in,
                "msgid": self.node.msgid(self.job_id), "from": list(self.node.sat)})
            await link.send(P.PHASE_DONE, self.job_id, phase.body())
            msgid = self.node.msgid(self.job_id)
            await link.send(P.JOB_RESULT, self.job_id, {
                "status": "ok", "result": state["value"], "files": state["files"],
                "reducer": list(self.node.sat), "t_done": t_done, "msgid": msgid,
                "from": list(self.node.sat), "bytes": link.sent})
            self.log.log("send", self.job_id, msgid, self.node.sat, self.los, what="JobResult")
        except (asyncio.CancelledError, Released):
            pass
        except Exception as e:  # noqa: BLE001
            await self.fail(e)
        finally:
            self.finished.set()
            if link:
                await link.close()
            self.finish()


ROLE_TYPES = {P.ASSIGN_COLLECTOR: Collector, P.ASSIGN_MAPPER: Mapper, P.ASSIGN_REDUCER: Reducer}
