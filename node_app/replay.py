"""A role's output stream that survives the death of the role it feeds.

A collector's stream to its mapper and a mapper's stream to its reducer are each a
:class:`Downstream`: everything it sends is retained (records in memory, files on disk)
until the receiving role's PhaseDone ok comes back on the stream.  When the receiver dies
or stalls, the coordinator assigns a replacement and re-sends this role's Assign with a
higher revision naming it; :meth:`Downstream.move` then re-sends everything retained to
the replacement, in order, and carries on.  A send that fails before the coordinator has
moved the stream is reported (PhaseDone ``peer_lost`` naming the peer) and waits for the
move, up to the role's idle limit.
"""

from __future__ import annotations

import asyncio

from node_app import protocol as P
from node_app.streams import Cancelled, ChunkSender, Feed, Released, unlink_quiet

LINK_ERRORS = (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError,
               P.ProtocolError)


async def send_file(send, no: int, name: str, path: str) -> int:
    """Stream the file at ``path`` as file ``no`` called ``name``: ``await send(item)`` for
    its begin, data segment and end items (a ChunkSender's ``item``).  Returns its size."""
    await send(("begin", no, name))
    size = 0
    with open(path, "rb") as f:
        while seg := f.read(P.SEGMENT_BYTES):
            size += len(seg)
            await send(("data", no, seg))
    await send(("end", no, size))
    return size


class PeerGone(Exception):
    """The receiving role is gone and no replacement arrived in time."""


class Superseded(Exception):
    """The receiver acknowledged with ``superseded``: a newer stream replaced this one."""


class RetainingFeed(Feed):
    """A Feed that keeps a complete on-disk copy of every file it streams (``paths``: file
    number -> path), so the file can be sent again to a replacement receiver."""

    def __init__(self, loop: asyncio.AbstractEventLoop, quota=None):
        super().__init__(loop, quota=quota)
        self.paths: dict[int, str] = {}

    def file(self, name: str, stream, retain_path: str | None = None,
             segment: int = P.SEGMENT_BYTES) -> None:
        if retain_path is not None:  # copy first: the retained copy is whole before it is sent
            if self.cancelled:       # the job ended: write nothing more to its directory
                raise Cancelled()
            try:
                with open(retain_path, "wb") as out:
                    while seg := stream.read(segment):
                        if self.quota is not None:  # the job's disk quota on this node
                            self.quota.charge(len(seg))
                        out.write(seg)
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()
            stream = open(retain_path, "rb")
        self.paths[self.files] = retain_path or stream.name
        try:
            super().file(name, stream, None, segment)
        except Cancelled:
            if retain_path is not None:   # nobody will replay it: the feed is dead
                unlink_quiet(retain_path)
            raise


class Downstream:
    """The retained, movable output stream of ``role`` (a node_app.role_base.Role) to its peer.

    chunk_role: the receiving role code (P.ROLE_MAPPER / P.ROLE_REDUCER); stream: this
    sender's stream number; peer_role / peer / addr: who receives it now; what: log label.
    Used as :func:`node_app.streams.pump`'s sender (``item``), then :meth:`confirmed`.
    """

    def __init__(self, role, feed: RetainingFeed, chunk_role: int, stream: int,
                 peer_role: str, peer, addr, what: str):
        self.role, self.feed = role, feed
        self.chunk_role, self.stream, self.what = chunk_role, stream, what
        self.peer_role, self.peer, self.addr = peer_role, tuple(peer), tuple(addr)
        self.items: list[tuple] = []    # ("records", obj, end) | ("file", no, name, path)
        self.sender: ChunkSender | None = None
        self.started = False            # a link was opened once: later ones start with a replay
        self.rev = 0                    # bumped by move()
        self.link_rev = 0               # the rev the current link was opened for
        self.moved = asyncio.Event()
        self.live_file: int | None = None   # file being streamed by the pump right now
        self.skip: set[int] = set()          # files already re-sent whole on this link
        self.sent = 0                   # frame bytes over every link, replays included
        self.replayed: list[dict] = []  # {"to": [sat, orb], "bytes": n} per replay

    # --- moving ------------------------------------------------------------------------
    def move(self, peer, addr) -> None:
        """The coordinator assigned a replacement receiver: re-send everything to it."""
        self.peer, self.addr = tuple(peer), tuple(addr)
        self.rev += 1
        self.moved.set()
        self._abort()

    def _abort(self) -> None:
        """Drop the current link at once (unblocks a send stuck on a stalled peer)."""
        if self.sender is not None and self.sender.link is not None:
            self.sender.link.writer.transport.abort()
            self.sent += self.sender.link.sent
            self.sender.link = None
        self.sender = None

    def close(self) -> None:
        self._abort()

    def _open(self) -> None:
        self.started = True
        self.link_rev = self.rev
        self.skip = set()
        self.sender = self.role.downstream(self.chunk_role, self.stream, self.peer,
                                           self.addr, self.what)

    async def _recover(self, error: BaseException) -> None:
        """The link failed: wait for a move (reporting the peer lost if none came yet),
        then re-send everything retained to the new receiver."""
        self._abort()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.role.idle_s
        reported = False
        while True:
            if self.rev == self.link_rev and not reported:
                reported = True
                await self.role.report_peer_lost(self.peer_role, self.peer, error)
            if self.rev == self.link_rev:  # (checked again: a move may come during the report)
                self.moved.clear()
                try:   # Released if the job ends meanwhile
                    await self.role.until(self.moved, max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    raise PeerGone(f"{self.peer_role} {list(self.peer)} lost "
                                   f"({str(error) or type(error).__name__}) and no "
                                   f"replacement was assigned") from None
            try:
                await self._replay()
                return
            except LINK_ERRORS as e:  # the replacement failed too: report it in turn
                self._abort()
                error, reported = e, False

    async def _replay(self) -> None:
        self._open()
        for it in self.items:
            if it[0] == "records":
                await self._send(it)
            else:
                _kind, no, name, path = it
                await send_file(self._send, no, name, path)
        if self.live_file is not None:
            self.skip.add(self.live_file)
        n = self.sender.link.sent if self.sender and self.sender.link else 0
        self.replayed.append({"to": list(self.peer), "bytes": n})
        self.role.log.log("replayed", self.role.job_id, None, self.role.node.sat, self.peer,
                          what=self.what, items=len(self.items), bytes=n)

    async def _send(self, item) -> None:
        if self.sender is None or self.rev != self.link_rev:
            # moved again while a send or a replay was in flight: re-send all to the newest
            raise ConnectionError(f"{self.peer_role} moved")
        if item[0] == "records":
            item = ("records", {**item[1], "rev": self.role.revision}, *item[2:])
        await self.sender.item(item)

    # --- the pump's sender ---------------------------------------------------------------
    async def item(self, item) -> None:
        kind = item[0]
        if kind == "records":
            self.items.append(item)
        elif kind == "begin":
            self.items.append(("file", item[1], item[2], self.feed.paths[item[1]]))
            self.live_file = item[1]
        elif item[1] in self.skip:  # data/end of a file the replay already sent whole
            if kind == "end":
                self.live_file = None
            return
        if kind == "end":
            self.live_file = None
        try:
            if self.sender is None and not self.started:
                self._open()
            if self.sender is None or self.rev != self.link_rev:
                raise ConnectionError(f"{self.peer_role} moved")  # re-send all on a new link
            await self._send(item)
        except LINK_ERRORS as e:
            await self._recover(e)  # the replay covers this item

    @property
    def link(self):
        return self.sender.link if self.sender else None

    @property
    def seq(self) -> int:
        return self.sender.seq if self.sender else 0

    def bytes_sent(self) -> int:
        return self.sent + (self.link.sent if self.link else 0)

    # --- the end -------------------------------------------------------------------------
    async def confirmed(self, timeout_s: float) -> P.PhaseDone:
        """Wait for the receiver's PhaseDone ok, re-sending to a replacement as often as
        the coordinator moves the stream.  Raises Superseded, PeerGone, TimeoutError, or
        ProtocolError when the receiver reports a failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self.link is None or self.rev != self.link_rev:
                await self._recover(ConnectionError(f"{self.peer_role} moved"))
                continue
            if self.rev == self.link_rev:
                self.moved.clear()
            read = asyncio.ensure_future(self.link.read())
            moved = asyncio.ensure_future(self.moved.wait())
            closed = asyncio.ensure_future(self.role.closed.wait())
            done, _ = await asyncio.wait({read, moved, closed},
                                         timeout=max(0.0, deadline - loop.time()),
                                         return_when=asyncio.FIRST_COMPLETED)
            for t in (read, moved, closed):
                if t not in done:
                    t.cancel()
            if closed in done:   # released (a cancellation can be lost in a finishing await)
                raise Released()
            if read in done:
                moved.cancel()
                try:
                    ack = read.result()
                except LINK_ERRORS as e:
                    await self._recover(e)
                    continue
                if ack is None:
                    await self._recover(ConnectionError("connection closed before PhaseDone"))
                    continue
                if ack.op != P.PHASE_DONE:
                    raise P.ProtocolError(f"{self.peer_role} {list(self.peer)} answered "
                                          f"{ack.name}: {str(ack.body.get('error'))[:200]}")
                done_msg = P.PhaseDone.parse(ack.body)
                if done_msg.status == P.ST_SUPERSEDED:
                    raise Superseded(f"{self.peer_role} {list(self.peer)} uses a newer stream")
                if not done_msg.ok:
                    raise P.ProtocolError(f"{self.peer_role} {list(self.peer)} did not confirm "
                                          f"({done_msg.status})")
                return done_msg
            if moved not in done:
                raise asyncio.TimeoutError(f"no PhaseDone from {self.peer_role} "
                                           f"{list(self.peer)} in {timeout_s:g} s")
