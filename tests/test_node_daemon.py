"""Bad input against live daemons: each bad frame gets a clear error and costs only its
own connection; the daemon goes on serving every other job."""

import json
import socket
import struct
import time

import pytest

from node_app import ground
from node_app import protocol as P
from node_app import tasks as T
from node_app.loopback import LoopbackConstellation
from node_app.nodelog import job_timeline, to_logviz
from node_app.tasks.wordcount import byte_range, exact_word_count, resolve_data_file

MAX_FRAME = 1 << 20
WORDCOUNT = {"collect": "doccollector", "map": "wordcountmapper", "reduce": "sumreducer"}


@pytest.fixture(scope="module")
def c3(tmp_path_factory):
    lc = LoopbackConstellation(3, 3, str(tmp_path_factory.mktemp("bad")), max_frame=MAX_FRAME)
    lc.start()
    yield lc
    lc.stop()


def exchange(addr, data: bytes, key: bytes, shut: bool = True, timeout: float = 5.0) -> list[P.Message]:
    """Send raw bytes, read frames (which must verify under ``key``) until the daemon
    closes the connection."""
    s = socket.create_connection(addr, timeout=timeout)
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        while True:
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            buf += got
    finally:
        s.close()
    out = []
    while buf:
        msg, used = P.decode_frame(buf, key=key)
        out.append(msg)
        buf = buf[used:]
    return out


def raw_frame(message: bytes, key: bytes, version=P.PROTOCOL_VERSION) -> bytes:
    prefix = struct.pack(">IB", len(message) + 1 + P.TAG_BYTES, version)
    return prefix + message + P.tag(key, prefix, message)


# (name, frame made with the testbed key, the reason in the Error reply)
BAD = [
    ("truncated", lambda k: struct.pack(">I", 100) + b"\x02\x04\x00\x00", "truncated"),
    ("oversized", lambda k: struct.pack(">I", MAX_FRAME + 1) + b"\x02", "exceeds the limit"),
    ("unknown opcode", lambda k: raw_frame(b"\x42\x00\x00\x07", k), "unknown opcode 0x42"),
    ("bad version", lambda k: raw_frame(b"\x04\x00\x00\x07\x01{}", k, version=3), "version 3"),
    ("invalid JSON", lambda k: raw_frame(b"\x02\x00\x00\x07\x01{\"jobid\": oops", k), "invalid JSON"),
    ("assign without meta_data", lambda k: P.encode_frame(P.ASSIGN_MAPPER, 7, {"jobid": "x"}, key=k),
     "meta_data"),
    ("data for no job", lambda k: P.encode_frame(P.DATA_CHUNK, 7, P.DataChunk(
        P.ROLE_GROUND, P.CHUNK_RECORDS, 0, 0, b"{}"), key=k), "does not coordinate"),
    ("another key", lambda k: P.encode_frame(P.PHASE_DONE, 7, {"status": "failed"}, key=bytes(32)),
     P.AUTH_ERROR),
]


@pytest.mark.parametrize("name, make, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_frame_gets_error_reply_and_close(c3, name, make, needle):
    replies = exchange(c3.addr_map.addr((2, 2)), make(c3.key), c3.key)
    assert len(replies) == 1 and replies[0].op == P.ERROR
    assert needle in replies[0].body["error"]


def test_unknown_task_name_in_assign_is_refused_without_import(c3):
    body = {"jobid": "x", "meta_data": {}, "tasks": {"map": "os:system"},
            "coordinator": [1, 1], "coordinator_addr": list(c3.addr_map.addr((1, 1))),
            "reducer": [1, 1], "reducer_addr": list(c3.addr_map.addr((1, 1)))}
    replies = exchange(c3.addr_map.addr((2, 2)), P.encode_frame(P.ASSIGN_MAPPER, 8, body, key=c3.key),
                       c3.key)
    assert "unknown map task 'os:system'" in replies[0].body["error"]
    assert not T.known("map", "node_app.tasks.wordcount:WordCountMapper")


def submit_ext(**kw):
    e = {"jobid": f"bad-{time.time_ns()}", "tasks": dict(WORDCOUNT),
         "aoi": {"kind": "grid", "minsat": 1, "maxsat": 3, "collectors": 2, "seed": 1},
         "los": [1, 1], "phase_timeout_s": 5}
    e.update(kw)
    return e


@pytest.mark.parametrize("ext, needle", [
    (submit_ext(tasks={"collect": "nosuch", "map": "wordcountmapper", "reduce": "sumreducer"}),
     "unknown collect task 'nosuch'"),
    (submit_ext(tasks=None), "no tasks"),
    (submit_ext(aoi={"kind": "grid", "minsat": 1, "maxsat": 9, "collectors": 2}), "outside"),
    (submit_ext(aoi={"kind": "grid", "minsat": 1, "maxsat": 3, "collectors": 5}), "collectors"),
    (submit_ext(aoi={"kind": "hexagon"}), "unknown AOI kind"),
    (submit_ext(allocator="fastest"), "allocator"),
    (submit_ext(los=[7, 7]), "outside"),
    (submit_ext(max_collect=0), "max_collect"),
])
def test_bad_job_gets_a_failed_job_result(c3, ext, needle):
    with pytest.raises(ground.JobFailed, match=needle):
        ground.run(c3.addr_map.addr((1, 1)), 9, ext, timeout_s=10, key=c3.key)


def test_daemons_keep_serving_after_bad_input(c3):
    for _name, make, _needle in BAD:  # another round of abuse on every node ...
        for sat in c3.addr_map.nodes:
            exchange(c3.addr_map.addr(sat), make(c3.key), c3.key)
    # ... half-open connections that send nothing stay harmless, too
    idle = [socket.create_connection(c3.addr_map.addr((2, 2))) for _ in range(5)]
    try:
        body = ground.run(c3.addr_map.addr((1, 1)), 10,
                          submit_ext(job_data={"filename": "data/sample.txt"}), timeout_s=30,
                          key=c3.key)
    finally:
        for s in idle:
            s.close()
    assert body["result"] == exact_word_count(resolve_data_file("data/sample.txt"))
    # the bad frames were logged as such, with the reason
    events = [json.loads(x) for x in open(f"{c3.log_dir}/node-2-2.jsonl")]
    assert any(e["action"] == "bad_frame" and "unknown opcode" in e["error"] for e in events)


def test_timeline_and_viewer_format(c3):
    t0 = time.time()
    ground.run(c3.addr_map.addr((1, 1)), 11, submit_ext(job_data={"filename": "data/sample.txt"}),
               timeout_s=30, key=c3.key)
    time.sleep(0.1)
    events = job_timeline(c3.log_dir, 11, since=t0)
    actions = {(e["action"], e.get("what")) for e in events}
    assert {("recv", "SubmitJob"), ("send", "AssignCollector"), ("recv", "AssignMapper"),
            ("send", "collect"), ("recv", "collect"), ("send", "JobResult")} <= actions
    # a message has the same msgid at both ends
    sent = {e["msgid"] for e in events if e["action"] == "send" and e.get("what") == "collect"}
    recv = {e["msgid"] for e in events if e["action"] == "recv" and e.get("what") == "collect"}
    assert sent and sent == recv
    viz = to_logviz(events)
    assert all(set(v) == {"timestamp", "from", "to", "action", "msgid"} for v in viz)


@pytest.mark.parametrize("text", [b"", b"\n", b"a", b"a\n", b"one two\nthree\n\nfour  five\r\nsix",
                                  "naïve café\nübung ünd\n".encode() * 7])
def test_doc_partitions_cover_every_line_once(tmp_path, text):
    from collections import Counter
    from node_app.tasks.wordcount import DocCollector, WordCountMapper
    path = tmp_path / "t.txt"
    path.write_bytes(text)
    for n in range(1, 12):
        total = Counter()
        for i in range(1, n + 1):
            lines = list(DocCollector().collect(
                {"meta_data": {"data_id": i, "data_size": n, "job_data": {"filename": "t.txt"}},
                 "data_dir": str(tmp_path)}))
            for out in WordCountMapper().run_map({"data": lines}):
                total.update(out)
        assert dict(total) == exact_word_count(str(path)), n
    assert byte_range(10, 1, 3) == (0, 3) and byte_range(10, 3, 3) == (6, 10)


def test_streams_connect_only_when_the_first_chunk_is_ready():
    """A mapper that spends long on its input before its first output must not hold an
    idle connection to the reducer meanwhile: the receiving daemon drops connections
    that stay silent (seen with a 1 GB job on the emulator as a broken pipe)."""
    import asyncio

    from node_app.streams import ChunkSender

    class FakeLink:
        max_frame = P.DEFAULT_MAX_FRAME
        key = bytes(32)

        def __init__(self):
            self.frames = []

        def encode(self, op, job_id, body=None, fixed=None):
            return P.encode_frame(op, job_id, body, fixed, key=self.key)

        async def send_raw(self, data):
            self.frames.append(data)

    opened = []

    async def connect():
        opened.append(FakeLink())
        return opened[-1]

    async def scenario():
        sender = ChunkSender(None, 7, P.ROLE_REDUCER, 1, connect=connect)
        await asyncio.sleep(0.01)  # the task is still working: nothing is open yet
        assert opened == [] and sender.link is None
        await sender.send_json({"x": 1})
        await sender.send_json({"x": 2}, end=True)
        return sender

    sender = asyncio.run(scenario())
    assert len(opened) == 1 and sender.link is opened[0]
    msgs = [P.decode_frame(f, key=FakeLink.key)[0] for f in opened[0].frames]
    assert [m.body.seq for m in msgs] == [0, 1] and msgs[1].body.end
