"""The worker roles of a job on one node: collector, mapper, reducer.

Assign bodies (extension JSON; all carry ``jobid`` the job's unique name, ``meta_data``,
``tasks`` {collect, map, reduce}, ``coordinator`` [sat, orb] and ``coordinator_addr``
[host, port], ``timeout_s`` the idle limit, ``msgid``, ``from``):

* AssignCollector: ``mapper``, ``mapper_addr``, ``partition`` (data_id, 1-based).
* AssignMapper: ``reducer``, ``reducer_addr``, ``collectors`` (expected count),
  ``index`` (this mapper's stream number).
* AssignReducer: ``los``, ``los_addr`` (where the JobResult goes: the coordinator),
  ``mappers`` (expected count).

Records chunk payloads (DataChunk CHUNK_RECORDS JSON):
* collector -> mapper: ``{"records": [...], "files": [names], "index": chunk_no,
  "end": bool, "collector": [sat, orb]}``; a chunk leaves every ``max_collect`` records.
* mapper -> reducer: ``{"data": output, "files": [names], "mapped_index": i,
  "end_map": bool, "mapper": [sat, orb]}`` per map output, then ``{"final": true}``
  flagged END.

Fault tolerance hooks: a collector keeps every chunk it sent (records in memory, files on
disk) until its mapper's PhaseDone comes back on the stream; a mapper keeps its outputs
until the reducer's PhaseDone.  A later issue can replay them to a new partner.

PhaseDone body: ``{"role", "node", "status": "ok"|"failed", "error"?, "t_start",
"t_end" (epoch s), "records", "bytes" (frame bytes sent in this phase), ...}``.
"""

from __future__ import annotations

import asyncio
import os
import time

from node_app import protocol as P
from node_app import tasks as T
from node_app.streams import ChunkSender, Feed, Spool, emit, pump, remove_tree
from node_app.transport import Link


def _sat(v, what: str):
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(x, int) for x in v)):
        raise P.ProtocolError(f"{what}: expected [sat, orb], got {v!r}")
    return tuple(v)


def _addr(v, what: str):
    if (not isinstance(v, (list, tuple)) or len(v) != 2 or not isinstance(v[0], str)
            or not isinstance(v[1], int)):
        raise P.ProtocolError(f"{what}: expected [host, port], got {v!r}")
    return (v[0], v[1])


class Role:
    """Common parsing and reporting of one role of one job on one node."""

    role = "?"
    task_kind = "?"

    def __init__(self, node, job_id: int, body: dict):
        self.node, self.job_id, self.body = node, job_id, body
        self.uid = str(body.get("jobid", job_id))
        md = body.get("meta_data")
        if not isinstance(md, dict):
            raise P.ProtocolError(f"{type(self).__name__}: meta_data missing")
        self.md = md
        self.coordinator = _sat(body.get("coordinator"), "coordinator")
        self.coordinator_addr = _addr(body.get("coordinator_addr"), "coordinator_addr")
        self.idle_s = float(body.get("timeout_s", 30.0)) * 2
        names = body.get("tasks") or {}
        try:
            self.user_task = T.get(self.task_kind, names.get(self.task_kind))
        except T.UnknownTask as e:
            raise P.ProtocolError(str(e)) from None
        self.t_start = time.time()
        self.dir = node.job_dir(job_id, self.role)
        self.task = None
        self.status = "ok"   # "failed" once the role fails (acks then say so)

    @property
    def log(self):
        return self.node.log

    async def report(self, status: str = "ok", **extra) -> None:
        await self.node.phase_done(self.coordinator_addr, self.coordinator, self.job_id, {
            "role": self.role, "status": status, "t_start": self.t_start,
            "t_end": time.time(), **extra})

    async def fail(self, e: BaseException) -> None:
        self.status = "failed"
        text = str(e) or type(e).__name__
        self.log.log("role_failed", self.job_id, None, self.node.sat, self.node.sat,
                     role=self.role, error=text)
        await self.report("failed", error=f"{self.role} {list(self.node.sat)}: {text}")

    def finish(self) -> None:
        remove_tree(self.dir)
        self.node.drop_role(self.job_id, self.role)

    def downstream(self, role: int, stream: int, peer, addr, what: str) -> ChunkSender:
        """The DataChunk stream to ``peer``, connected when its first chunk is ready."""
        return ChunkSender(None, self.job_id, role, stream, self.log, self.node.sat, peer,
                           what=what, connect=lambda: Link.connect(addr, self.node.max_frame),
                           max_frame=self.node.max_frame)

    async def confirmed(self, link: Link, peer, timeout_s: float, refusal: str, **log) -> None:
        """Wait for ``peer``'s PhaseDone ok on ``link``; ProtocolError(refusal) otherwise."""
        ack = await asyncio.wait_for(link.read(), timeout_s)
        if ack is None or ack.op != P.PHASE_DONE or ack.body.get("status") != "ok":
            raise P.ProtocolError(refusal)
        self.log.log("recv", self.job_id, ack.body.get("msgid"), peer, self.node.sat,
                     what="PhaseDone", **log)


class Collector(Role):
    """Runs the collect task and streams its records to the mapper."""

    role, task_kind = "collector", "collect"

    def __init__(self, node, job_id, body):
        super().__init__(node, job_id, body)
        self.mapper = _sat(body.get("mapper"), "mapper")
        self.mapper_addr = _addr(body.get("mapper_addr"), "mapper_addr")
        self.partition = int(body.get("partition", 1))
        self.max_collect = max(1, int(self.md.get("max_collect", 1024)))
        self.retained: list[list] = []   # every chunk sent, until the mapper's PhaseDone
        self.records = 0

    def produce(self, feed: Feed) -> int:
        """Task thread: run collect(), cut chunks of max_collect records."""
        payload = {"meta_data": {**self.md, "data_id": self.partition},
                   "scratch_dir": self.dir}
        batch, files, index = [], [], 0
        for record in self.user_task.collect(payload):
            value, names = emit(feed, record, self.dir, "sent-")
            batch.append(value)
            files += names
            self.records += 1
            if len(batch) >= self.max_collect:
                feed.put(("records", {"records": batch, "files": files, "index": index,
                                      "end": False, "collector": list(self.node.sat)}, False))
                self.retained.append(batch)
                batch, files, index = [], [], index + 1
        feed.put(("records", {"records": batch, "files": files, "index": index, "end": True,
                              "collector": list(self.node.sat)}, True))
        self.retained.append(batch)
        return self.records

    async def run(self) -> None:
        sender = None
        try:
            sender = self.downstream(P.ROLE_MAPPER, self.partition, self.mapper,
                                     self.mapper_addr, "collect")
            await pump(Feed(asyncio.get_running_loop()), sender, self.produce)
            await self.report("ok", records=self.records, bytes=sender.link.sent,
                              chunks=sender.seq, mapper=list(self.mapper))
            await self.confirmed(sender.link, self.mapper, self.idle_s,
                                 "mapper did not confirm the partition (no PhaseDone ok); "
                                 "its data is kept for a replay", released=len(self.retained))
            self.retained.clear()
        except Exception as e:  # noqa: BLE001 - reported to the coordinator, never raised
            await self.fail(e)
        finally:
            if sender and sender.link:
                await sender.link.close()
            self.finish()


class Mapper(Role):
    """Maps chunks as they arrive from its collector(s); streams outputs to the reducer."""

    role, task_kind = "mapper", "map"

    def __init__(self, node, job_id, body):
        super().__init__(node, job_id, body)
        self.reducer = _sat(body.get("reducer"), "reducer")
        self.reducer_addr = _addr(body.get("reducer_addr"), "reducer_addr")
        self.expected = int(body.get("collectors", 1))
        self.index = int(body.get("index", 0))
        self.work: asyncio.Queue = asyncio.Queue(4)  # chunks waiting for the map task
        self.collectors_done = 0
        self.finished = asyncio.Event()              # outputs all sent: ack the collectors
        self.outputs = 0
        self.records_in = 0
        self.bytes_in = 0
        self.streams = 0

    async def handle_stream(self, link: Link, msg: P.Message) -> None:
        """One collector's stream: spool files, queue record chunks, ack at the end."""
        self.streams += 1
        spool = Spool(os.path.join(self.dir, f"in-{self.streams}"))
        collector = None
        try:
            while True:
                chunk = msg.body
                if msg.op != P.DATA_CHUNK or chunk.role != P.ROLE_MAPPER or msg.job_id != self.job_id:
                    raise P.ProtocolError(f"unexpected {msg.name} in a collector stream")
                self.bytes_in += msg.wire_bytes
                if chunk.kind == P.CHUNK_RECORDS:
                    obj = chunk.json()
                    collector = obj.get("collector")
                    records = obj.get("records")
                    if not isinstance(records, list):
                        raise P.ProtocolError("records chunk without a records list")
                    files = spool.claim(list(obj.get("files") or []))
                    self.log.log("recv", self.job_id, f"{self.job_id}:{chunk.role}:{chunk.stream}:{chunk.seq}",
                                 collector, self.node.sat, what="collect", records=len(records))
                    self.records_in += len(records)
                    await self.work.put((obj, files))
                else:
                    spool.handle(chunk)
                if chunk.end:
                    break
                msg = await asyncio.wait_for(link.read(), self.idle_s)
                if msg is None:
                    raise P.ProtocolError("collector stream ended before its last chunk")
        finally:
            spool.close()
        self.collectors_done += 1
        if self.collectors_done == self.expected:
            await self.work.put(None)
        await asyncio.wait_for(self.finished.wait(), self.idle_s * 10)
        await link.send(P.PHASE_DONE, self.job_id, {
            "role": "mapper", "node": list(self.node.sat), "status": self.status,
            "msgid": self.node.msgid(self.job_id)})
        self.log.log("send", self.job_id, None, self.node.sat, collector, what="PhaseDone")

    def produce(self, feed: Feed) -> int:
        """Task thread: run_map over each chunk as it comes; feed outputs."""
        loop = feed.loop
        while True:
            item = asyncio.run_coroutine_threadsafe(self.work.get(), loop).result(self.idle_s * 10)
            if item is None:
                break
            obj, paths = item
            files = {name: open(path, "rb") for name, path in paths.items()}
            payload = {"meta_data": self.md, "scratch_dir": self.dir,
                       "data": obj["records"], "files": files,
                       "end_collect": bool(obj.get("end")),
                       "collected_index": obj.get("index"), "collector": obj.get("collector")}
            try:
                for out in self.user_task.run_map(payload):
                    value, names = emit(feed, out, self.dir, "out-")
                    feed.put(("records", {"data": value, "files": names,
                                          "mapped_index": self.outputs,
                                          "end_map": bool(obj.get("end")),
                                          "mapper": list(self.node.sat)}, False))
                    self.outputs += 1
            finally:
                for f in files.values():
                    f.close()
        feed.put(("records", {"final": True, "mapper": list(self.node.sat)}, True))
        return self.outputs

    async def run(self) -> None:
        sender = None
        try:
            sender = self.downstream(P.ROLE_REDUCER, self.index, self.reducer,
                                     self.reducer_addr, "map")
            await pump(Feed(asyncio.get_running_loop()), sender, self.produce)
            await self.report("ok", records=self.records_in, outputs=self.outputs,
                              bytes=sender.link.sent, bytes_in=self.bytes_in, chunks=sender.seq,
                              reducer=list(self.reducer))
            self.finished.set()
            await self.confirmed(sender.link, self.reducer, self.idle_s * 10,
                                 "reducer did not confirm the map outputs (no PhaseDone ok)")
        except Exception as e:  # noqa: BLE001
            await self.fail(e)
        finally:
            self.finished.set()
            if sender and sender.link:
                await sender.link.close()
            self.finish()


class Reducer(Role):
    """Gathers every mapper's outputs, reduces, sends the JobResult to the coordinator."""

    role, task_kind = "reducer", "reduce"

    def __init__(self, node, job_id, body):
        super().__init__(node, job_id, body)
        self.los = _sat(body.get("los"), "los")
        self.los_addr = _addr(body.get("los_addr"), "los_addr")
        self.expected = int(body.get("mappers", 1))
        self.payloads: list[dict] = []
        self.mappers_done = 0
        self.all_in = asyncio.Event()
        self.finished = asyncio.Event()
        self.bytes_in = 0
        self.streams = 0
        self.last_activity = time.monotonic()

    async def handle_stream(self, link: Link, msg: P.Message) -> None:
        self.streams += 1
        spool = Spool(os.path.join(self.dir, f"in-{self.streams}"))
        mapper = None
        try:
            while True:
                chunk = msg.body
                if msg.op != P.DATA_CHUNK or chunk.role != P.ROLE_REDUCER or msg.job_id != self.job_id:
                    raise P.ProtocolError(f"unexpected {msg.name} in a mapper stream")
                self.bytes_in += msg.wire_bytes
                self.last_activity = time.monotonic()
                if chunk.kind == P.CHUNK_RECORDS:
                    obj = chunk.json()
                    mapper = obj.get("mapper")
                    if not obj.get("final"):
                        self.payloads.append({
                            "meta_data": self.md, "data": obj.get("data"),
                            "files": spool.claim(list(obj.get("files") or [])),
                            "end_map": bool(obj.get("end_map")),
                            "mapped_index": obj.get("mapped_index"), "mapper": mapper})
                    self.log.log("recv", self.job_id, f"{self.job_id}:{chunk.role}:{chunk.stream}:{chunk.seq}",
                                 mapper, self.node.sat, what="map")
                else:
                    spool.handle(chunk)
                if chunk.end:
                    break
                msg = await asyncio.wait_for(link.read(), self.idle_s)
                if msg is None:
                    raise P.ProtocolError("mapper stream ended before its last chunk")
        finally:
            spool.close()
        self.mappers_done += 1
        if self.mappers_done == self.expected:
            self.all_in.set()
        await asyncio.wait_for(self.finished.wait(), self.idle_s * 10)
        await link.send(P.PHASE_DONE, self.job_id, {
            "role": "reducer", "node": list(self.node.sat), "status": self.status,
            "msgid": self.node.msgid(self.job_id)})
        self.log.log("send", self.job_id, None, self.node.sat, mapper, what="PhaseDone")

    def reduce(self):
        """Task thread: call reduce() with each payload's files opened."""
        opened = []
        try:
            for p in self.payloads:
                p["files"] = {name: open(path, "rb") for name, path in p["files"].items()}
                opened += p["files"].values()
            return self.user_task.reduce(self.payloads)
        finally:
            for f in opened:
                f.close()

    async def _wait_inputs(self) -> None:
        """Until every mapper's last chunk is in; gives up after idle_s without data."""
        while not self.all_in.is_set():
            try:
                await asyncio.wait_for(self.all_in.wait(), self.idle_s)
            except asyncio.TimeoutError:
                if time.monotonic() - self.last_activity >= self.idle_s:
                    raise TimeoutError(f"{self.mappers_done} of {self.expected} mappers "
                                       f"finished, then nothing for {self.idle_s:.0f} s") from None

    async def run(self) -> None:
        link = None
        try:
            await self._wait_inputs()
            t_reduce = time.time()
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(None, self.reduce)
            t_done = time.time()
            link = await Link.connect(self.los_addr, self.node.max_frame)
            sender = ChunkSender(link, self.job_id, P.ROLE_GROUND, 0, self.log, self.node.sat,
                                 self.los, what="result")
            state = {}

            def produce(feed):
                state["value"], state["files"] = emit(feed, result, None)
            await pump(Feed(loop), sender, produce)
            phase = {"role": "reducer", "node": list(self.node.sat), "status": "ok",
                     "t_start": self.t_start, "t_reduce": t_reduce, "t_end": t_done,
                     "payloads": len(self.payloads), "bytes_in": self.bytes_in,
                     "msgid": self.node.msgid(self.job_id), "from": list(self.node.sat)}
            await link.send(P.PHASE_DONE, self.job_id, phase)
            msgid = self.node.msgid(self.job_id)
            await link.send(P.JOB_RESULT, self.job_id, {
                "status": "ok", "result": state["value"], "files": state["files"],
                "reducer": list(self.node.sat), "t_done": t_done, "msgid": msgid,
                "from": list(self.node.sat), "bytes": link.sent})
            self.log.log("send", self.job_id, msgid, self.node.sat, self.los, what="JobResult")
        except Exception as e:  # noqa: BLE001
            await self.fail(e)
        finally:
            self.finished.set()
            if link:
                await link.close()
            self.finish()
