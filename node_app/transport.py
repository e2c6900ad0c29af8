"""Frames over asyncio TCP streams: one :class:`Link` per connection, counting bytes.

The network (Mininet's routed ISLs, or the loopback) carries each connection hop by hop;
this module only reads and writes whole frames.
"""

from __future__ import annotations

import asyncio
import socket

from node_app import protocol as P

CONNECT_TIMEOUT_S = 5.0
STREAM_LIMIT = 1 << 20  # asyncio reader buffer, bytes


class Link:
    """A framed TCP connection.  ``sent``/``received`` count frame bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_frame: int = P.DEFAULT_MAX_FRAME):
        self.reader = reader
        self.writer = writer
        self.max_frame = max_frame
        self.sent = 0
        self.received = 0
        self.peer = writer.get_extra_info("peername")

    @classmethod
    async def connect(cls, addr: tuple[str, int], max_frame: int = P.DEFAULT_MAX_FRAME,
                      timeout: float = CONNECT_TIMEOUT_S) -> "Link":
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(addr[0], addr[1], limit=STREAM_LIMIT), timeout)
        sock = writer.get_extra_info("socket")
        if sock is not None:  # chunks are large; small control frames must not wait (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, max_frame)

    async def read(self) -> P.Message | None:
        """The next frame, or None at a clean end of stream.  Raises ProtocolError for a
        malformed frame, or for a stream that ends inside a frame."""
        try:
            prefix = await self.reader.readexactly(4)
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return None
            raise P.ProtocolError(f"frame truncated: stream ended after {len(e.partial)} "
                                  f"of 4 length bytes") from None
        length = P.check_prefix(prefix, self.max_frame)
        try:
            rest = await self.reader.readexactly(length)
        except asyncio.IncompleteReadError as e:
            raise P.ProtocolError(f"frame truncated: stream ended after {len(e.partial)} "
                                  f"of {length} bytes") from None
        msg = P.decode_frame_body(rest)
        self.received += msg.wire_bytes
        return msg

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        self.sent += len(data)
        await self.writer.drain()

    async def send(self, op: int, job_id: int, body=None, fixed=None) -> int:
        """Encode and send one frame; returns its size in bytes."""
        data = P.encode_frame(op, job_id, body, fixed)
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
