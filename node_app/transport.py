"""Frames over asyncio TCP streams: one :class:`Link` per connection, counting bytes.

The network (Mininet's routed ISLs, or the loopback) carries each connection hop by hop;
this module only reads and writes whole, authenticated frames (node_app.protocol).

Memory: a frame is read only once its declared length fits in the receiver's
:class:`ByteBudget` (shared by every connection of a daemon), so however many connections
announce large frames, the frame bytes a daemon holds stay under that budget (a decoded
DataChunk briefly holds a second copy of its payload); the frame is streamed into its own
buffer a piece at a time, and the asyncio reader buffers at most ``2 * STREAM_LIMIT`` more
per connection before it stops reading the socket.
"""

from __future__ import annotations

import asyncio
import collections
import socket

from node_app import protocol as P

CONNECT_TIMEOUT_S = 5.0
STREAM_LIMIT = 256 * 1024       # asyncio reader buffer, bytes (paused beyond twice this)
DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024   # frame bytes a daemon reads at once, all connections


class ByteBudget:
    """A byte count shared by the connections of one daemon: a frame's bytes are held
    from its length field until it is decoded.  Waiters are served first come, first
    served; a cancelled waiter (idle timeout, closed connection) leaves the queue."""

    def __init__(self, total: int = DEFAULT_BUDGET_BYTES):
        self.total = int(total)
        self.used = 0
        self.peak = 0
        self._waiters: collections.deque = collections.deque()

    async def acquire(self, n: int) -> None:
        if n > self.total:
            raise P.FrameTooLarge(f"frame of {n} bytes exceeds this node's receive budget "
                                  f"of {self.total}")
        if not self._waiters and self.used + n <= self.total:
            self._take(n)
            return
        fut = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)          # granted just as we were cancelled
            else:
                try:
                    self._waiters.remove(entry)
                except ValueError:
                    pass
                self._wake()
            raise

    def _take(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.total:
            n, fut = self._waiters.popleft()
            if not fut.done():
                self._take(n)
                fut.set_result(None)


class Link:
    """A framed TCP connection.  ``sent``/``received`` count frame bytes.

    key: the testbed key (every frame sent is tagged, every frame read must verify);
    budget: the daemon's receive budget (None: unbounded, for one-connection clients)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_frame: int = P.DEFAULT_MAX_FRAME, *, key: bytes,
                 budget: ByteBudget | None = None):
        self.reader = reader
        self.writer = writer
        self.max_frame = max_frame
        self.key = P.check_key(key)
        self.budget = budget
        self.sent = 0
        self.received = 0
        self.peer = writer.get_extra_info("peername")

    @classmethod
    async def connect(cls, addr: tuple[str, int], max_frame: int = P.DEFAULT_MAX_FRAME,
                      timeout: float = CONNECT_TIMEOUT_S, *, key: bytes,
                      budget: ByteBudget | None = None) -> "Link":
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(addr[0], addr[1], limit=STREAM_LIMIT), timeout)
        sock = writer.get_extra_info("socket")
        if sock is not None:  # chunks are large; small control frames must not wait (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, max_frame, key=key, budget=budget)

    async def read(self) -> P.Message | None:
        """The next frame, or None at a clean end of stream.  Raises ProtocolError for a
        malformed or unauthenticated frame, or for a stream that ends inside a frame."""
        try:
            prefix = await self.reader.readexactly(4)
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return None
            raise P.ProtocolError(f"frame truncated: stream ended after {len(e.partial)} "
                                  f"of 4 length bytes") from None
        length = P.check_prefix(prefix, self.max_frame)
        if self.budget is not None:
            await self.budget.acquire(length)
        try:
            # Streamed into one buffer of the frame's size, a reader-sized piece at a time:
            # the asyncio buffer never grows beyond STREAM_LIMIT for a large frame.
            rest = bytearray(length)
            view = memoryview(rest)
            got = 0
            while got < length:
                piece = await self.reader.read(min(length - got, STREAM_LIMIT))
                if not piece:
                    raise P.ProtocolError(f"frame truncated: stream ended after {got} "
                                          f"of {length} bytes")
                view[got:got + len(piece)] = piece
                got += len(piece)
            error = None
            try:
                msg = P.decode_frame_body(prefix, view, self.key)
            except P.ProtocolError as e:
                # A rejected frame's traceback (the decoder's frames, their views of the
                # buffer) would live in a reference cycle (wait_for's task holds it) until
                # the garbage collector runs: 40 rejected 16 MiB frames pinned 640 MB.
                e.__traceback__ = None
                error = e
            view.release()
            rest = piece = view = None  # noqa: F841
            if error is not None:
                raise error
        finally:
            if self.budget is not None:
                self.budget.release(length)
        self.received += msg.wire_bytes
        return msg

    def encode(self, op: int, job_id: int, body=None, fixed=None) -> bytes:
        """One frame, tagged with this link's key."""
        return P.encode_frame(op, job_id, body, fixed, key=self.key)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        self.sent += len(data)
        await self.writer.drain()

    async def send(self, op: int, job_id: int, body=None, fixed=None) -> int:
        """Encode and send one frame; returns its size in bytes."""
        data = self.encode(op, job_id, body, fixed)
        await self.send_raw(data)
        return len(data)

    async def error(self, job_id: int, text: str) -> None:
        """Best-effort Error reply (the caller closes the connection next)."""
        try:
            await asyncio.wait_for(self.send(P.ERROR, job_id, {"error": text}), 1.0)
        except (OSError, asyncio.TimeoutError, ConnectionError):
            pass

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError, ConnectionError):
            pass
