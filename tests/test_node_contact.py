"""Ground contact in the node application: results held (on disk) until a satellite is in
view, then delivered; the job records the wait and the gateway (no root: nodes on the
loopback, the ground segment's state file written by the test)."""

import asyncio
import json
import os
import time

import pytest

from node_app import ground
from node_app.addressing import AddressMap
from node_app.auth import new_key
from node_app.contact import Contact, NoContact
from node_app.daemon import Node
from node_app.loopback import pick_map
from node_app.tasks.wordcount import exact_word_count, resolve_data_file
from topo.constellation import Constellation

SAMPLE = resolve_data_file("data/sample.txt")


def write_state(path, sat, history=()):
    """What topo.ground_segment writes: station 1 is the loopback address the ground
    connects from."""
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"t_s": 0.0, "unix": time.time(), "history": list(history), "stations": [
            {"k": 1, "name": "test", "ip": "127.0.0.1", "sat": sat, "since_t_s": 0.0,
             "since_unix": time.time(), "handovers": 0}]}, fh)
    os.replace(tmp, path)


def test_contact_reads_gateways_and_tolerates_garbage(tmp_path):
    path = tmp_path / "ground.json"
    c = Contact(str(path))
    assert c.gateway(1) is True and c.station_of_ip("127.0.0.1") is None  # no file: in contact
    write_state(path, [2, 3], history=[{"k": 1, "unix": time.time(), "t_s": 5.0,
                                        "from": [1, 3], "to": [2, 3]}])
    assert c.station_of_ip("127.0.0.1") == 1 and c.gateway(1) == (2, 3)
    assert c.handovers(1, time.time() - 60) == [{"t_s": 5.0, "from": [1, 3], "to": [2, 3]}]
    assert not c.out_of_contact_within(1, 60)  # a satellite-to-satellite handover only
    write_state(path, [2, 3], history=[{"k": 1, "unix": time.time() - 5, "t_s": 9.0,
                                        "from": None, "to": [2, 3]}])
    assert c.out_of_contact_within(1, 10) and not c.out_of_contact_within(1, 2)
    write_state(path, None)
    assert c.gateway(1) is None and c.out_of_contact_within(1, 0.1)
    with pytest.raises(NoContact):
        c.wait_blocking(1, timeout_s=0.1)
    path.write_text("{not json")
    assert c.gateway(1) is None  # the last valid state stays
    path.write_text(json.dumps({"stations": [{"k": 1, "ip": "127.0.0.1", "sat": "x"}]}))
    assert c.gateway(1) is True  # a malformed gateway reads as unknown, never a crash


def test_result_is_held_until_contact_then_delivered_exact(tmp_path):
    state = tmp_path / "ground.json"
    write_state(state, [1, 1])
    amap: AddressMap = pick_map(3, 3)
    key = new_key()

    async def run():
        nodes = []
        for sat in Constellation(*amap.grid).satellites():
            n = Node(sat, amap, str(tmp_path / f"w{sat[0]}{sat[1]}"), str(tmp_path / "logs"),
                     key=key)
            n.contact = Contact(str(state))
            await n.start()
            nodes.append(n)
        seen = []

        def progress(body):  # lose contact as soon as the job is planned
            seen.append(body)
            if body.get("event") == "planned":
                write_state(state, None)
                loop.call_later(1.0, write_state, state, [2, 1])

        loop = asyncio.get_running_loop()
        try:
            ext = {"jobid": "held", "tasks": {"collect": "doccollector", "map": "wordcountmapper",
                                              "reduce": "sumreducer"},
                   "job_data": {"filename": "data/sample.txt"},
                   "aoi": {"kind": "grid", "minsat": 1, "maxsat": 3, "collectors": 4, "seed": 2},
                   "allocator": "bipartite", "reducetype": "center", "los": [1, 1],
                   "max_collect": 100, "phase_timeout_s": 10}
            t0 = time.time()
            body = await ground.submit(amap.addr((1, 1)), 7, ext, progress=progress,
                                       timeout_s=60, key=key)
            return body, time.time() - t0, seen
        finally:
            for n in nodes:
                await n.stop()

    os.makedirs(tmp_path / "logs")
    body, took, seen = asyncio.run(run())
    assert body["result"] == exact_word_count(SAMPLE)
    down = body["metrics"]["downlink"]
    assert down["station"] == 1 and down["gateway"] == [2, 1]
    assert took >= 1.0 and 0.1 <= down["contact_wait_s"] <= 1.0  # held until contact came back
    assert [e.get("event") for e in seen][0] == "planned" and len(seen) > 1  # progress kept
    held = [json.loads(line) for line in open(tmp_path / "logs" / "node-1-1.jsonl")
            if '"hold"' in line or '"contact"' in line]
    assert [(h["action"], h["what"]) for h in held] == [("hold", "result"), ("contact", "result")]
    assert down["held_result_bytes"] > 0  # it went to disk
    assert not any(p.name == "held_result.json" for p in tmp_path.rglob("*"))  # cleaned up
