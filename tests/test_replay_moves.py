"""A retained stream moved again while a replay to the previous replacement is in flight
re-sends everything to the newest one (it once failed the role with
"'NoneType' object has no attribute 'item'" under overload)."""

import asyncio
import time
from types import SimpleNamespace

import pytest

from node_app import protocol as P
from node_app.replay import Downstream


class FakeSender:
    def __init__(self, peer, got, on_first=None):
        self.peer, self.got, self.on_first = peer, got, on_first
        self.link = SimpleNamespace(sent=0, writer=SimpleNamespace(
            transport=SimpleNamespace(abort=lambda: None)))

    async def item(self, item):
        if self.on_first:
            hook, self.on_first = self.on_first, None
            hook()                       # the coordinator moves the stream right now
            await asyncio.sleep(0)
        self.got.setdefault(self.peer, []).append(item[1]["n"])


def test_a_move_during_a_replay_replays_to_the_newest_receiver():
    got, lost = {}, []

    async def main():
        role = SimpleNamespace(revision=1, idle_s=5.0, job_id=7, node=SimpleNamespace(sat=(1, 1)),
                               log=SimpleNamespace(log=lambda *a, **k: None))

        async def report_peer_lost(*a):
            lost.append(a)
        role.report_peer_lost = report_peer_lost
        hooks = {(2, 2): lambda: ds.move((3, 3), ("127.0.0.1", 3))}
        role.downstream = lambda _r, _s, peer, _a, _w: FakeSender(peer, got, hooks.pop(peer, None))
        ds = Downstream(role, None, P.ROLE_MAPPER, 0, "mapper", (1, 2), ("127.0.0.1", 1), "collect")
        for n in range(3):
            await ds.item(("records", {"n": n}, False))
        ds.move((2, 2), ("127.0.0.1", 2))    # first replacement; it is moved on mid-replay
        await ds.item(("records", {"n": 3}, True))
    asyncio.run(main())
    assert got[(1, 2)] == [0, 1, 2]
    assert got[(3, 3)] == [0, 1, 2, 3]       # everything, in order, to the newest receiver
    assert not lost                           # moves, not losses: nothing reported


def _released_role():
    """A role whose release sets ``closed`` but whose task cancellation was lost (a
    cancellation can vanish inside an await that finishes at the same moment)."""
    from node_app.role_base import Role
    role = Role.__new__(Role)
    role.revision, role.idle_s, role.job_id = 1, 30.0, 7
    role.node = SimpleNamespace(sat=(1, 1), log=SimpleNamespace(log=lambda *a, **k: None))
    role.closed = asyncio.Event()
    lost = []

    async def report_peer_lost(*a):
        lost.append(a)
        asyncio.get_running_loop().call_later(0.1, role.closed.set)   # released meanwhile
    role.report_peer_lost = report_peer_lost
    return role, lost


def test_a_role_released_while_waiting_for_a_replacement_stops_at_once():
    from node_app.streams import Released

    async def main():
        role, lost = _released_role()
        ds = Downstream(role, None, P.ROLE_MAPPER, 0, "mapper", (1, 2), ("127.0.0.1", 1), "collect")
        t0 = time.monotonic()
        with pytest.raises(Released):
            await ds._recover(ConnectionError("connection closed before PhaseDone"))
        assert lost and time.monotonic() - t0 < 2.0    # not idle_s (30 s)
    asyncio.run(main())


def test_a_role_released_while_waiting_for_its_confirmation_stops_at_once():
    from node_app.streams import Released

    async def main():
        role, _lost = _released_role()
        ds = Downstream(role, None, P.ROLE_MAPPER, 0, "mapper", (1, 2), ("127.0.0.1", 1), "collect")
        never = asyncio.get_running_loop().create_future()
        ds.sender = SimpleNamespace(link=SimpleNamespace(read=lambda: never), seq=0)
        ds.started, ds.link_rev = True, ds.rev
        asyncio.get_running_loop().call_later(0.1, role.closed.set)
        t0 = time.monotonic()
        with pytest.raises(Released):
            await ds.confirmed(30.0)
        assert time.monotonic() - t0 < 2.0
    asyncio.run(main())
