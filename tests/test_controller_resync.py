"""A restarted controller, or a switch reconnecting, re-syncs without wiping flows.

Fake OpenFlow switches (:mod:`controller.fakeswitch`) keep their tables across
connections, as OVS bridges in ``fail_mode=secure`` do; the controller app (os-ken, and
Ryu where its venv exists) must read each table back and send only the difference.
"""

import asyncio
import os
import signal

import pytest

from controller import flowtable as F
from controller.routing import Router
from topo.addressing import EAST_PORT, NORTH_PORT, SOUTH_PORT, WEST_PORT, neighbour_on_port
from topo.constellation import Constellation

from tests.test_controller_scale import (FRAMEWORKS, OSKEN, Controller,
                                         _assert_tables_route_like, _fleet)

fakeswitch = pytest.importorskip("controller.fakeswitch")
DOWN = ((2, 2), (2, 3))   # one cross-plane link down on both ends


def _take_down(c, by_sat, link):
    for x, y in (link, link[::-1]):
        port = next(p for p in (EAST_PORT, WEST_PORT, SOUTH_PORT, NORTH_PORT) if neighbour_on_port(c, x, p) == y)
        by_sat[x].down.add(port)


def _connect_until_synced(ctl, switches, timeout_s=60.0):
    async def script():
        while not (ctl.state().get("synced") and ctl.state().get("pid") == ctl.proc.pid):
            assert ctl.proc.poll() is None, ctl.failure("controller exited")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)   # anything sent after the barriers would show up now
        return ctl.state()
    return asyncio.run(fakeswitch.run(switches, ctl.port, script, timeout_s))


def _skip_missing(framework):
    if framework == "osken" and not os.path.exists(OSKEN):
        pytest.skip("osken-manager missing (python3-os-ken)")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_restarted_controller_keeps_every_flow(framework, tmp_path):
    _skip_missing(framework)
    c = Constellation(5, 5)
    switches = _fleet(c)
    by_sat = {c.sat_of(sw.dpid): sw for sw in switches}
    _take_down(c, by_sat, DOWN)
    router = Router(c, 0.0, {frozenset(DOWN)})
    (tmp_path / "a").mkdir()
    first = Controller(framework, 5, 5, tmp_path / "a")
    try:
        first.listening()
        st = _connect_until_synced(first, switches)
        _assert_tables_route_like(router, switches)
        assert st["flow_mods"]["add"] > 0 and st["tables_read"] == c.size
    finally:
        os.kill(first.proc.pid, signal.SIGKILL)   # killed, not stopped: no goodbye
        first.proc.wait(10)
    before = {sw.dpid: (dict(sw.flows), sw.flow_mods) for sw in switches}
    (tmp_path / "b").mkdir()
    second = Controller(framework, 5, 5, tmp_path / "b")
    try:
        second.listening()
        st = _connect_until_synced(second, switches)
    finally:
        second.stop()
    assert st["tables_read"] == c.size
    # Nothing to change: not one FlowMod, no wipe, the same tables, still routing around
    # the link that is down.
    assert st["flow_mods"] == {"add": 0, "modify": 0, "delete": 0}, st["flow_mods"]
    for sw in switches:
        assert sw.delete_all == 0
        assert (sw.flows, sw.flow_mods) == before[sw.dpid], sw.dpid
    _assert_tables_route_like(router, switches)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_stale_tables_get_only_their_difference(framework, tmp_path):
    _skip_missing(framework)
    c = Constellation(5, 5)
    switches = _fleet(c)
    # Stale: every switch holds the tables of a time when another link was down, one
    # flow the app never installs (IPv6), no ARP flow...
    stale = Router(c, 0.0, {frozenset(((4, 4), (5, 4)))})
    wanted = Router(c, 0.0)
    expected = {}
    for sw in switches:
        sat = c.sat_of(sw.dpid)
        old = {(e.priority, e.value, e.mask): e for e in F.switch_table(stale, sat, [(1, 1)])}
        new = {(e.priority, e.value, e.mask): e for e in F.switch_table(wanted, sat, [(1, 1)])}
        # ... and one route pointing the wrong way (as if a FlowMod had been lost).
        k = next(k for k in sorted(old) if k in new and k[0] < F.PRIO_LOCAL)
        old[k] = F.FlowEntry(*k, F.DROP if old[k].port else 2)
        sw.flows = {(e.priority, 0x0800, e.value, e.mask): (0x0800, e) for e in old.values()}
        sw.flows[(50, 0x86DD, 0, 0)] = (0x86DD, F.FlowEntry(50, 0, 0, 3))
        adds = sum(k not in old for k in new) + 1            # + the ARP flow
        mods = sum(k in old and old[k] != new[k] for k in new)
        dels = sum(k not in new for k in old) + 1            # + the IPv6 flow
        expected[sw.dpid] = (adds, mods, dels)
    ctl = Controller(framework, 5, 5, tmp_path)
    try:
        ctl.listening()
        st = _connect_until_synced(ctl, switches)
    finally:
        ctl.stop()
    _assert_tables_route_like(wanted, switches)
    ofp = fakeswitch.ofp
    changed = 0
    for sw in switches:
        by = sw.flow_mods_by_command
        got = (by.get(ofp.OFPFC_ADD, 0), by.get(ofp.OFPFC_MODIFY_STRICT, 0),
               by.get(ofp.OFPFC_DELETE_STRICT, 0))
        assert got == expected[sw.dpid], (c.sat_of(sw.dpid), got, expected[sw.dpid])
        assert sw.delete_all == 0 and by.get(ofp.OFPFC_DELETE, 0) == 0
        assert (0x86DD, F.FlowEntry(50, 0, 0, 3)) not in sw.flows.values()
        assert any(k[1] == 0x0806 for k in sw.flows)
        changed += sum(got)
    assert changed == sum(st["flow_mods"].values())
    assert all(m >= 1 for _a, m, _d in expected.values())


def test_http_endpoint_answers_and_survives_bad_requests(tmp_path):
    import json
    import urllib.error
    import urllib.request
    _skip_missing("osken")
    c = Constellation(5, 5)
    switches = _fleet(c)
    ctl = Controller("osken", 5, 5, tmp_path)

    def call(method, path, body=None):
        port = ctl.state()["http_port"]
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def oversized():
        """A request announcing a body far beyond the endpoint's bound (none is sent)."""
        import socket
        with socket.create_connection(("127.0.0.1", ctl.state()["http_port"]), 30) as s:
            s.sendall(b"POST /expect HTTP/1.0\r\nContent-Length: 999999999999\r\n\r\n")
            head, _, body = s.makefile("rb").read().partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)

    async def script():
        while not ctl.state().get("synced"):
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        answers = [await loop.run_in_executor(None, call, *a) for a in
                   (("GET", "/state"), ("GET", "/flows"), ("POST", "/time", {"t_s": 900.0}),
                    ("POST", "/time", {"nope": 1}), ("GET", "/nowhere"),
                    ("POST", "/expect", {"links_down": [[[1, 1], "x"]]}))]
        answers.append(await loop.run_in_executor(None, oversized))
        answers.append(await loop.run_in_executor(None, call, "GET", "/state"))
        return answers
    try:
        ctl.listening()
        state, flows, moved, bad, missing, bad_expect, too_big, after = asyncio.run(
            fakeswitch.run(switches, ctl.port, script, 60))
    finally:
        ctl.stop()
    assert state[0] == 200 and len(state[1]["next_hops"]) == c.size
    assert flows[0] == 200 and len(flows[1]) == c.size     # counters of every switch
    assert moved[0] == 200 and moved[1]["t_s"] == 900.0
    assert bad[0] == 400 and "t_s" in bad[1]["error"]
    assert missing[0] == 404
    assert bad_expect[0] == 400
    assert too_big[0] == 400 and "at most" in too_big[1]["error"]
    assert after[0] == 200 and after[1]["t_s"] == 900.0     # still serving
    _assert_tables_route_like(Router(c, 900.0), switches)
