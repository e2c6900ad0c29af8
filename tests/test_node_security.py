"""Daemons that trust no one: frames without the testbed key, peers outside the address
map, files outside the data directory, oversized parameters and buffers are all refused
with a reason, and jobs in flight are untouched."""

import asyncio
import json
import os
import socket
import struct
import threading
import time

import pytest

from node_app import ground
from node_app import protocol as P
from node_app import tasks as T
from node_app.loopback import LoopbackConstellation
from node_app.streams import DiskQuota, QuotaExceeded, Spool
from node_app.transport import ByteBudget

SYNTH = {"collect": "syntheticcollector", "map": "syntheticmapper", "reduce": "syntheticreducer"}
WORDCOUNT = {"collect": "doccollector", "map": "wordcountmapper", "reduce": "sumreducer"}
STRANGER = bytes(range(32))


@pytest.fixture(scope="module")
def c3(tmp_path_factory):
    lc = LoopbackConstellation(3, 3, str(tmp_path_factory.mktemp("sec")),
                               job_disk_quota=20_000_000)
    lc.start()
    yield lc
    lc.stop()


def exchange(addr, data: bytes, key: bytes, timeout: float = 5.0) -> list[P.Message]:
    """Send raw bytes, read the reply frames (verified under ``key``) until closed."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while got := s.recv(65536):
            buf += got
    out = []
    while buf:
        msg, used = P.decode_frame(buf, key=key)
        out.append(msg)
        buf = buf[used:]
    return out


def ext(tasks=SYNTH, **kw):
    e = {"jobid": f"sec-{time.time_ns()}", "tasks": dict(tasks),
         "aoi": {"kind": "grid", "minsat": 1, "maxsat": 3, "collectors": 2, "seed": 1},
         "los": [1, 1], "phase_timeout_s": 5}
    e.update(kw)
    return e


def events(lc, sat):
    with open(f"{lc.log_dir}/node-{sat[0]}-{sat[1]}.jsonl") as f:
        return [json.loads(line) for line in f]


def test_forged_result_and_phase_done_from_a_stranger_leave_the_job_exact(c3):
    """The attacks that worked before frames were authenticated: a JobResult with a
    made-up result, a PhaseDone(failed) and a result chunk, sent to the coordinator for
    the running job's id.  Each is refused (fixed Error, counted, logged); the job's
    result is the real one."""
    coord = c3.addr_map.addr((1, 1))
    job_id = 401
    forged = [P.encode_frame(P.JOB_RESULT, job_id, {"status": "ok", "result": {"FORGED": 1},
                                                    "files": []}, key=STRANGER),
              P.encode_frame(P.PHASE_DONE, job_id, {"role": "mapper", "status": "failed",
                                                    "error": "forged"}, key=STRANGER),
              P.encode_frame(P.DATA_CHUNK, job_id, P.DataChunk(P.ROLE_GROUND, P.CHUNK_RECORDS,
                                                               0, 0, b"{}"), key=STRANGER)]
    volume = 2_000_000

    async def scenario():
        job = asyncio.create_task(ground.submit(
            coord, job_id, ext(job_data={"compute_bytes_per_s": 1_000_000}),
            P.SubmitFixed(data_volume_bytes=volume), timeout_s=60, key=c3.key))
        await asyncio.sleep(0.5)  # the job is planned and running (about 1 s of mapping)
        replies = await asyncio.get_running_loop().run_in_executor(
            None, lambda: [exchange(coord, f, c3.key) for f in forged])
        return await job, replies

    body, replies = asyncio.run(scenario())
    assert all(len(r) == 1 and r[0].op == P.ERROR and r[0].body["error"] == P.AUTH_ERROR
               and r[0].job_id == 0 for r in replies)
    assert body["status"] == "ok" and body["result"]["bytes_in"] == volume
    assert "FORGED" not in json.dumps(body["result"])
    fails = [e for e in events(c3, (1, 1)) if e["action"] == "auth_failed"]
    assert len(fails) >= 3 and fails[-1]["auth_failures"] >= 3


def test_a_ground_with_another_key_is_refused_in_one_line(c3):
    with pytest.raises(ground.NotANode, match="authentication failed"):
        ground.run(c3.addr_map.addr((1, 1)), 402, ext(), timeout_s=10, key=STRANGER)


@pytest.mark.parametrize("field, value, needle", [
    ("mapper_addr", ["10.66.0.1", 4700], "mapper_addr"),        # anywhere
    ("mapper_addr", "SAT_AT_3_3", "mapper_addr"),                # another satellite's address
    ("coordinator_addr", ["127.0.0.1", 22], "coordinator_addr"),
])
def test_assign_naming_an_address_outside_the_map_is_refused(c3, field, value, needle):
    if value == "SAT_AT_3_3":
        value = list(c3.addr_map.addr((3, 3)))
    body = {"jobid": "x", "meta_data": {}, "tasks": SYNTH, "coordinator": [1, 1],
            "coordinator_addr": list(c3.addr_map.addr((1, 1))), "mapper": [2, 2],
            "mapper_addr": list(c3.addr_map.addr((2, 2))), "partition": 1, field: value}
    (reply,) = exchange(c3.addr_map.addr((2, 1)), P.encode_frame(P.ASSIGN_COLLECTOR, 403, body,
                                                                 key=c3.key), c3.key)
    assert reply.op == P.ERROR and needle in reply.body["error"]
    assert "address map" in reply.body["error"]


@pytest.mark.parametrize("name, needle", [
    ("/etc/shadow", "absolute paths are refused"),
    ("../../../../etc/passwd", "'..' is refused"),
    ("data/../../README.md", "'..' is refused"),
])
def test_job_data_files_outside_the_data_directory_are_refused(c3, name, needle):
    with pytest.raises(ground.JobFailed, match=needle):
        ground.run(c3.addr_map.addr((1, 1)), 404, ext(WORDCOUNT, job_data={"filename": name}),
                   timeout_s=20, key=c3.key)


def test_symlinks_out_of_the_data_directory_are_refused(tmp_path):
    (tmp_path / "ok.txt").write_text("a b\n")
    (tmp_path / "escape").symlink_to("/etc/passwd")
    assert T.resolve_data_file("ok.txt", str(tmp_path)) == str(tmp_path / "ok.txt")
    assert T.resolve_data_file("data/ok.txt", str(tmp_path)) == str(tmp_path / "ok.txt")
    with pytest.raises(T.BadTaskInput, match="outside the data directory"):
        T.resolve_data_file("escape", str(tmp_path))
    for bad in ("", None, 7, "a\0b"):
        with pytest.raises(T.BadTaskInput):
            T.resolve_data_file(bad, str(tmp_path))


@pytest.mark.parametrize("tasks, job_data, volume, options, needle", [
    ({"collect": "thermalcollector", "map": "anomalymapper", "reduce": "maskreducer"},
     {"tile": 4096}, 0, {}, "job_data.tile = 4096"),
    ({"collect": "thermalcollector", "map": "anomalymapper", "reduce": "maskreducer"},
     {"tiles": 10_000}, 0, {}, "job_data.tiles"),
    (SYNTH, None, 10 ** 12, {}, "data_volume_bytes"),
    (SYNTH, {"compute_bytes_per_s": 1e-6}, 1_000_000, {}, "compute_bytes_per_s"),
    (SYNTH, None, 0, {"max_collect": 10 ** 7}, "max_collect"),
    (SYNTH, [1, 2], 0, {}, "job_data must be a JSON object"),
    (SYNTH, None, 0, {"aoi": [1, 2]}, "aoi must be a JSON object"),
    (SYNTH, None, 0, {"los": "1,1"}, "los must be a JSON array"),
    (SYNTH, None, 0, {"phase_timeout_s": 1e300}, "phase_timeout_s"),
])
def test_task_parameters_are_bounded_with_a_reason(c3, tasks, job_data, volume, options, needle):
    e = ext(tasks, job_data=job_data, **options)
    with pytest.raises(ground.JobFailed, match=needle):
        ground.run(c3.addr_map.addr((1, 1)), 405, e, P.SubmitFixed(data_volume_bytes=volume),
                   timeout_s=20, key=c3.key)


def test_spooling_beyond_the_job_disk_quota_fails_the_job_and_removes_its_files(c3):
    """Quota 20 MB per job and node: a 2-collector job of 50 MB spools 25 MB on a mapper."""
    with pytest.raises(ground.JobFailed, match="disk quota"):
        ground.run(c3.addr_map.addr((1, 1)), 406, ext(), P.SubmitFixed(data_volume_bytes=50_000_000),
                   timeout_s=30, key=c3.key)
    # what was spooled is deleted as soon as the stream fails (the roles' empty
    # directories go when the roles end)
    work = os.path.join(c3.dir, "work")
    deadline = time.time() + 10
    while time.time() < deadline:
        left = sum(os.path.getsize(os.path.join(root, f)) for root, _dirs, files in os.walk(work)
                   if "/job-406-" in root + "/" for f in files)
        if left == 0:
            break
        time.sleep(0.2)
    assert left == 0
    # and the constellation is usable at once
    body = ground.run(c3.addr_map.addr((1, 1)), 407, ext(), P.SubmitFixed(data_volume_bytes=100_000),
                      timeout_s=30, key=c3.key)
    assert body["result"]["bytes_in"] == 100_000


def test_disk_quota_and_spool_unit(tmp_path):
    quota = DiskQuota(1000)
    spool = Spool(str(tmp_path / "s"), quota)
    spool.handle(P.DataChunk(P.ROLE_MAPPER, P.CHUNK_FILE_BEGIN, 0, 0, P.FILE_NO.pack(0) + b"f"))
    spool.handle(P.DataChunk(P.ROLE_MAPPER, P.CHUNK_FILE_DATA, 0, 1, P.FILE_NO.pack(0) + b"x" * 600))
    with pytest.raises(QuotaExceeded, match="disk quota of 1000 bytes"):
        spool.handle(P.DataChunk(P.ROLE_MAPPER, P.CHUNK_FILE_DATA, 0, 2, P.FILE_NO.pack(0) + b"x" * 600))
    spool.close()
    assert quota.used_bytes == 600


def test_byte_budget_is_first_come_first_served_and_survives_cancellation():
    async def scenario():
        b = ByteBudget(100)
        await b.acquire(60)
        order = []

        async def take(n, name):
            await b.acquire(n)
            order.append(name)

        big = asyncio.create_task(take(50, "big"))
        small = asyncio.create_task(take(10, "small"))
        gone = asyncio.create_task(take(30, "gone"))
        await asyncio.sleep(0.01)
        assert order == [] and b.used == 60   # small waits behind big (no starvation)
        gone.cancel()
        b.release(60)
        await asyncio.sleep(0.01)
        assert order == ["big", "small"] and b.used == 60
        with pytest.raises(P.FrameTooLarge):
            await b.acquire(101)
        return b
    assert asyncio.run(scenario()).peak == 60


def _rss_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def test_forty_connections_announcing_huge_frames_stay_under_the_memory_cap(tmp_path):
    """Each of 40 connections announces a 16 MiB frame and sends it (unauthenticated
    garbage).  Frames are read only within the daemon's 64 MiB receive budget, so its
    peak RSS grows by far less than the 640 MB the frames add up to."""
    with LoopbackConstellation(3, 3, str(tmp_path), log=False, per_process=1) as lc:
        # a satellite that is not a gateway (a gateway loads the planner meanwhile)
        addr, pid = lc.addr_map.addr((2, 2)), lc.pids[(2, 2)]
        time.sleep(0.5)
        before = _rss_kb(pid, "VmRSS")
        length = P.DEFAULT_MAX_FRAME
        replies = []

        def attack():
            try:
                with socket.create_connection(addr, timeout=60) as s:
                    s.sendall(struct.pack(">IB", length, P.PROTOCOL_VERSION))
                    block = b"\x10" * (1 << 20)
                    for _ in range(16):
                        s.sendall(block)
                    replies.append(s.recv(1 << 16))
            except OSError as e:
                replies.append(e)
        threads = [threading.Thread(target=attack) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        peak = _rss_kb(pid, "VmHWM")
        # every connection ended: answered with the fixed Error, or (waiting for the budget
        # longer than the idle limit on a busy machine) closed; none hangs
        assert len(replies) == 40 and not any(t.is_alive() for t in threads)
        answered = [r for r in replies if isinstance(r, bytes) and P.AUTH_ERROR.encode() in r]
        assert len(answered) >= 4, replies[:3]
        body = ground.run(lc.addr_map.addr((1, 1)), 1, ext(aoi={
            "kind": "grid", "minsat": 1, "maxsat": 3, "collectors": 4, "seed": 1}),
            P.SubmitFixed(data_volume_bytes=1000), timeout_s=30, key=lc.key)
        assert body["status"] == "ok"
    growth_mb = (peak - before) / 1024
    print(f"daemon RSS {before / 1024:.0f} MB, peak {peak / 1024:.0f} MB under 40 x 16 MiB frames "
          f"(640 MiB announced; receive budget 64 MiB); {len(answered)} answered")
    # 64 MiB of frames at once, at most as much again in allocator churn (socket reads,
    # freed buffers not yet reused): 97 MB measured; the goal is a daemon under 200 MB
    assert growth_mb < 2 * 64 * 1.048 and peak / 1024 < 200, (before, peak)


def test_privilege_drop_keeps_root_when_the_user_could_not_reach_its_files():
    """The checks made before dropping root: an unreachable work or data directory keeps
    root (with the reason) rather than break the node."""
    import pwd
    import shutil
    import tempfile
    from pathlib import Path

    from node_app.privileges import R, X, unreachable
    nobody = pwd.getpwnam("nobody")
    uid, gid = nobody.pw_uid, nobody.pw_gid
    tmp_path = Path(tempfile.mkdtemp(prefix="spacecomp-privtest-", dir="/tmp"))
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(0o700)
    opened = tmp_path / "open"
    opened.mkdir()
    opened.chmod(0o755)
    tmp_path.chmod(0o711)
    try:
        assert "not traversable" in unreachable(str(closed / "inner"), uid, gid, R)
        assert unreachable(str(opened), uid, gid, R) is None
        assert unreachable(str(opened), uid, gid, X) is None
        opened.chmod(0o711)
        assert "not accessible" in unreachable(str(opened), uid, gid, R)  # no listing
        assert unreachable(str(opened), uid, gid, X) is None
    finally:
        closed.chmod(0o755)
        shutil.rmtree(tmp_path)


def test_loopback_daemons_started_as_root_serve_as_nobody(tmp_path):
    """Where the user can reach its files the daemons drop root once listening and still
    run jobs exactly; where it cannot (pytest's 0700 directories) they keep root and log
    why."""
    import pwd
    import shutil
    import tempfile
    if os.geteuid() != 0:
        pytest.skip("needs root to drop it")
    nobody = pwd.getpwnam("nobody").pw_uid
    d = tempfile.mkdtemp(prefix="spacecomp-privtest-", dir="/tmp")
    os.chmod(d, 0o711)
    try:
        with LoopbackConstellation(3, 3, d, user="nobody") as lc:
            def uids():
                out = set()
                for pid in set(lc.pids.values()):
                    with open(f"/proc/{pid}/status") as f:
                        out.add(int(next(x for x in f if x.startswith("Uid:")).split()[1]))
                return out
            deadline = time.time() + 10  # a daemon drops root just after its ready file
            while uids() != {nobody} and time.time() < deadline:
                time.sleep(0.05)
            assert uids() == {nobody}
            body = ground.run(lc.addr_map.addr((1, 1)), 410, ext(WORDCOUNT), timeout_s=30,
                              key=lc.key)
            from node_app.tasks.wordcount import exact_word_count
            assert body["result"] == exact_word_count(T.resolve_data_file("data/sample.txt"))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    with LoopbackConstellation(3, 3, str(tmp_path), user="nobody") as lc:
        time.sleep(0.2)
        (priv,) = [e for e in events(lc, (2, 2)) if e["action"] == "privileges"]
        assert priv["dropped"] is False and "not traversable" in priv["detail"]


def test_a_job_abandoned_by_the_ground_is_released_and_its_spool_removed(c3):
    """The ground gives up on a large job mid-way: the coordinator notices (its heartbeat to
    the ground fails), releases every role, and nothing of the job stays on disk."""
    async def abandon():
        task = asyncio.create_task(ground.submit(
            c3.addr_map.addr((1, 1)), 411, ext(job_data={"compute_bytes_per_s": 4_000_000}),
            P.SubmitFixed(data_volume_bytes=16_000_000), timeout_s=60, key=c3.key))
        await asyncio.sleep(1.5)   # collecting and mapping: files spooled and retained
        seen.extend(job_files())
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    work = os.path.join(c3.dir, "work")

    def job_files():
        return [os.path.join(root, f) for root, _dirs, files in os.walk(work)
                if "/job-411-" in root + "/" for f in files]
    seen = []
    asyncio.run(abandon())
    assert seen                 # the job had files on disk when the ground left
    deadline = time.time() + 20
    while time.time() < deadline and job_files():
        time.sleep(0.2)
    assert job_files() == []
    dirs = [d for sat in os.listdir(work) for d in os.listdir(os.path.join(work, sat))
            if d.startswith("job-411-")]
    assert dirs == []
    # it was the failed heartbeat that ended the job, not its end
    with open(os.path.join(c3.dir, "logs", "node-1-1.jsonl")) as f:
        lost = [json.loads(line) for line in f if '"ground_lost"' in line]
    assert any(e["job"] == 411 and e["error"].startswith("ground lost:") for e in lost)
