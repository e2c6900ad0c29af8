"""A retained stream moved again while a replay to the previous replacement is in flight
re-sends everything to the newest one (it once failed the role with
"'NoneType' object has no attribute 'item'" under overload)."""

import asyncio
from types import SimpleNamespace

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
