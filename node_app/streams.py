"""Streaming records and files between user code (threads) and the network (asyncio).

User tasks are ordinary blocking generators; they run in a worker thread and hand their
output to the event loop through a :class:`Feed` (a bounded queue: when the network is
slow the task blocks, so memory stays bounded).  :func:`pump` turns feed items into
DataChunk frames.  On the receiving side :class:`Spool` writes incoming file segments to
disk, so a file of any size passes with memory bounded by a few segments.
"""

from __future__ import annotations

import asyncio
import os

from node_app import protocol as P
from node_app.tasks import file_of

FEED_DEPTH = 4  # items in flight between a task thread and the network, each <= a segment


class Cancelled(Exception):
    """The consumer of a feed gave up (the job failed); the producing thread stops."""


class Released(Exception):
    """The coordinator released the role (the job is over)."""


class Feed:
    """Thread -> event loop queue of ``("records", obj)``, ``("begin", no, name)``,
    ``("data", no, bytes)``, ``("end", no, size)`` items, then ``None``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = FEED_DEPTH,
                 quota: DiskQuota | None = None):
        self.loop = loop
        self.quota = quota  # charged for retained copies written to disk
        self.queue: asyncio.Queue = asyncio.Queue(depth)
        self.cancelled = False
        self.files = 0
        self.worker: asyncio.Future | None = None   # the producer thread, set by pump()

    def put(self, item) -> None:
        """Blocking put, from the task thread."""
        if self.cancelled:
            raise Cancelled()
        asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop).result()
        if self.cancelled:
            raise Cancelled()

    def file(self, name: str, stream, retain_path: str | None = None,
             segment: int = P.SEGMENT_BYTES) -> None:
        """Stream a readable binary stream as one file (and close it).  ``retain_path``:
        also keep a copy on disk (so the data survives until the receiver acknowledges)."""
        no = self.files
        self.files += 1
        self.put(("begin", no, name))
        size = 0
        keep = open(retain_path, "wb") if retain_path else None
        ok = False
        try:
            while True:
                seg = stream.read(segment)
                if not seg:
                    break
                seg = bytes(seg)
                size += len(seg)
                if keep:
                    if self.quota is not None:
                        self.quota.charge(len(seg))
                    keep.write(seg)
                self.put(("data", no, seg))
            ok = True
        finally:
            if keep:
                keep.close()
                if not ok:   # cut off (the job ended): a partial copy is worth nothing
                    unlink_quiet(retain_path)
            close = getattr(stream, "close", None)
            if close:
                close()
        self.put(("end", no, size))

    def cancel(self) -> None:
        """From the loop: stop the producer (unblocks a pending put)."""
        self.cancelled = True
        while not self.queue.empty():
            self.queue.get_nowait()


class ChunkSender:
    """Numbered DataChunks of one stream (job, receiving role, sender partition).

    link: an open Link, or None with ``connect`` (a coroutine function returning one): the
    connection is then opened when the first chunk is ready, so a receiver never holds an
    idle connection (and times it out) while the sender's task is still working."""

    def __init__(self, link, job_id: int, role: int, stream: int, log=None, frm=None, to=None,
                 what: str = "chunk", connect=None, max_frame: int = P.DEFAULT_MAX_FRAME):
        self.link, self.job_id, self.role, self.stream = link, job_id, role, stream
        self.connect = connect
        self.max_frame = link.max_frame if link else max_frame
        self.seq = 0
        self.log, self.frm, self.to, self.what = log, frm, to, what
        self.records = 0

    def msgid(self, seq: int) -> str:
        return f"{self.job_id}:{self.role}:{self.stream}:{seq}"

    async def send(self, kind: int, payload: bytes, end: bool = False) -> None:
        chunk = P.DataChunk(self.role, kind, self.stream, self.seq, payload, end)
        if len(payload) + P.OVERHEAD_BYTES - 4 > self.max_frame:
            raise P.FrameTooLarge(f"a DataChunk of {len(payload) + P.OVERHEAD_BYTES} bytes "
                                  f"exceeds the frame limit {self.max_frame}; lower max_collect")
        if self.link is None:
            self.link = await self.connect()
        data = self.link.encode(P.DATA_CHUNK, self.job_id, chunk)
        if self.log and kind in (P.CHUNK_RECORDS, P.CHUNK_FILE_BEGIN):
            self.log.log("send", self.job_id, self.msgid(self.seq), self.frm, self.to,
                         what=self.what, kind=kind, bytes=len(data))
        self.seq += 1
        await self.link.send_raw(data)

    async def send_json(self, obj: dict, end: bool = False) -> None:
        import json
        await self.send(P.CHUNK_RECORDS, json.dumps(obj, separators=(",", ":")).encode(), end)

    async def item(self, item) -> None:
        """Send one Feed item."""
        kind = item[0]
        if kind == "records":
            await self.send_json(item[1], end=bool(item[2]) if len(item) > 2 else False)
        elif kind == "begin":
            await self.send(P.CHUNK_FILE_BEGIN, P.FILE_NO.pack(item[1]) + item[2].encode())
        elif kind == "data":
            await self.send(P.CHUNK_FILE_DATA, P.FILE_NO.pack(item[1]) + item[2])
        elif kind == "end":
            await self.send(P.CHUNK_FILE_END, P.FILE_SIZE.pack(item[1], item[2]))


async def pump(feed: Feed, sender: ChunkSender, producer) -> object:
    """Run ``producer(feed)`` in a worker thread and send everything it feeds; returns
    the producer's return value.  A send failure cancels the producer."""
    loop = asyncio.get_running_loop()

    def run():
        try:
            return producer(feed)
        finally:
            if not feed.cancelled:
                asyncio.run_coroutine_threadsafe(feed.queue.put(None), loop).result()

    fut = feed.worker = loop.run_in_executor(None, run)
    try:
        while True:
            item = await feed.queue.get()
            if item is None:
                break
            await sender.item(item)
    except BaseException:
        feed.cancel()
        raise
    return await fut


def emit(feed: Feed, item, retain_dir: str | None, name_prefix: str = "") -> tuple[object, list[str]]:
    """Feed the file of a record/output (if any); returns (value, [file names])."""
    value, name, stream = file_of(item)
    if name is None:
        return value, []
    retain = os.path.join(retain_dir, f"{name_prefix}{feed.files}-{name}") if retain_dir else None
    # a named regular file is its own retained copy; anything else is teed to disk
    if retain and isinstance(getattr(stream, "name", None), str) and os.path.isfile(stream.name):
        retain = None
    feed.file(name, stream, retain)
    return value, [name]


class QuotaExceeded(P.ProtocolError):
    """A job wrote more to this node's disk than its quota allows."""


class DiskQuota:
    """Bytes one job may write to one node's disk (spooled input, retained copies);
    shared by the job's roles and task threads (thread-safe)."""

    def __init__(self, limit_bytes: int, what: str = "job"):
        import threading
        self.limit_bytes = int(limit_bytes)
        self.used_bytes = 0
        self.what = what
        self._lock = threading.Lock()

    def charge(self, n: int) -> None:
        with self._lock:
            if self.used_bytes + n > self.limit_bytes:
                raise QuotaExceeded(f"{self.what}: disk quota of {self.limit_bytes} bytes on "
                                    f"this node exceeded")
            self.used_bytes += n


class Spool:
    """Incoming files of one stream, written to ``directory`` as they arrive.

    quota: the job's :class:`DiskQuota` on this node (None: unlimited)."""

    def __init__(self, directory: str, quota: DiskQuota | None = None):
        self.directory = directory
        self.quota = quota
        self.open: dict[int, tuple[str, object, str, int]] = {}  # no -> (name, f, path, size)
        self.ready: dict[str, str] = {}  # name -> path, complete files not yet claimed
        self.bytes = 0
        self.count = 0

    def handle(self, chunk: P.DataChunk) -> None:
        """Apply one FILE_* chunk (raises ProtocolError on inconsistencies)."""
        if chunk.kind == P.CHUNK_FILE_BEGIN:
            no, name = chunk.file_no(), chunk.file_name()
            if no in self.open:
                raise P.ProtocolError(f"file {no} begun twice")
            os.makedirs(self.directory, exist_ok=True)
            path = os.path.join(self.directory, f"{self.count}-{name}")
            self.count += 1
            self.open[no] = (name, open(path, "wb"), path, 0)
        elif chunk.kind == P.CHUNK_FILE_DATA:
            no = chunk.file_no()
            if no not in self.open:
                raise P.ProtocolError(f"data for file {no} that was not begun")
            name, f, path, size = self.open[no]
            data = chunk.file_data()
            if self.quota is not None:
                self.quota.charge(len(data))
            f.write(data)
            self.open[no] = (name, f, path, size + len(data))
            self.bytes += len(data)
        elif chunk.kind == P.CHUNK_FILE_END:
            no = chunk.file_no()
            if no not in self.open:
                raise P.ProtocolError(f"end of file {no} that was not begun")
            name, f, path, size = self.open.pop(no)
            f.close()
            if chunk.file_size() != size:
                raise P.ProtocolError(f"file {name}: {size} bytes received, sender says "
                                      f"{chunk.file_size()}")
            self.ready[name] = path

    def claim(self, names: list[str]) -> dict[str, str]:
        """Paths of the named complete files (removed from ``ready``)."""
        out = {}
        for name in names:
            if name not in self.ready:
                raise P.ProtocolError(f"records refer to file {name!r} that did not arrive")
            out[name] = self.ready.pop(name)
        return out

    def close(self) -> None:
        """Close the stream's files and delete what nobody claimed: files cut off by a
        failed stream, and complete ones no record named (claimed files stay, their
        claimer owns them)."""
        for _name, f, path, _size in self.open.values():
            f.close()
            unlink_quiet(path)
        self.open.clear()
        for path in self.ready.values():
            unlink_quiet(path)
        self.ready.clear()


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_tree(path: str | None) -> None:
    if path:
        import shutil
        shutil.rmtree(path, ignore_errors=True)
