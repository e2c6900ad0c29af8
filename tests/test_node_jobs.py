"""Real jobs on loopback constellations: one daemon process per satellite, real sockets."""

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from node_app import ground
from node_app.loopback import LoopbackConstellation
from node_app.planner import plan_grid_job
from node_app.tasks import eo
from node_app.tasks.synthetic import PatternStream
from node_app.tasks.wordcount import exact_word_count, resolve_data_file

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = resolve_data_file("data/sample.txt")
WORDCOUNT = {"collect": "doccollector", "map": "wordcountmapper", "reduce": "sumreducer"}
EO = {"collect": "thermalcollector", "map": "anomalymapper", "reduce": "maskreducer"}


def ext(tasks=WORDCOUNT, minsat=1, maxsat=3, collectors=4, seed=1, los=(1, 1), **kw):
    e = {"jobid": f"test-{time.time_ns()}", "tasks": tasks,
         "job_data": {"filename": "data/sample.txt"} if tasks is WORDCOUNT else None,
         "aoi": {"kind": "grid", "minsat": minsat, "maxsat": maxsat, "collectors": collectors,
                 "seed": seed},
         "allocator": "bipartite", "reducetype": "center", "los": list(los),
         "max_collect": 100, "phase_timeout_s": 10}
    e.update(kw)
    return e


@pytest.fixture(scope="module")
def c3(tmp_path_factory):
    lc = LoopbackConstellation(3, 3, str(tmp_path_factory.mktemp("c3")),
                               gateways=[(1, 1), (3, 3)])
    lc.start()
    yield lc
    lc.stop()


@pytest.fixture(scope="module")
def exact():
    return exact_word_count(SAMPLE)


def test_word_count_3x3_is_exact(c3, exact):
    body = ground.run(c3.addr_map.addr((1, 1)), 101, ext(), timeout_s=60, key=c3.key)
    assert body["result"] == exact
    m = body["metrics"]
    assert m["records"]["collected"] == sum(1 for _ in open(SAMPLE, "rb"))
    plan = m["plan"]
    assert len(plan["allocations"]) == 4
    for key in ("distance", "reduce_distance", "job_time", "end_to_end_s", "bytes", "roles"):
        assert key in m
    assert 0 < m["job_time"] <= m["end_to_end_s"]
    assert m["bytes"]["collect"] > os.path.getsize(SAMPLE)  # every byte, plus framing
    assert {r["role"] for r in m["roles"]} == {"collector", "mapper", "reducer"}


def test_word_count_5x5_is_exact(tmp_path, exact):
    with LoopbackConstellation(5, 5, str(tmp_path)) as lc:
        # by default one process per plane, each satellite on its own address
        assert len(lc.pids) == 25 and len(set(lc.addr_map.nodes.values())) == 25
        assert {frozenset(s for s, p in lc.pids.items() if p == pid)
                for pid in set(lc.pids.values())} == \
            {frozenset((s, o) for s in range(1, 6)) for o in range(1, 6)}
        e = ext(minsat=1, maxsat=5, collectors=12, seed=3, max_collect=37)
        body = ground.run(lc.addr_map.addr((1, 1)), 102, e, timeout_s=60, key=lc.key)
    assert body["result"] == exact
    assert len(body["metrics"]["plan"]["allocations"]) == 12


def test_satellites_sharing_a_process_still_run_exact_jobs(tmp_path, exact):
    """--per-process: 25 satellites in 3 processes, each on its own address; two jobs at
    once so collector, mapper and reducer task threads of many nodes overlap in a process."""
    import threading

    with LoopbackConstellation(5, 5, str(tmp_path), per_process=9) as lc:
        assert len(set(lc.pids.values())) == 3 and len(lc.pids) == 25
        assert len(set(lc.addr_map.nodes.values())) == 25
        bodies = {}

        def run(job_id, seed):
            e = ext(minsat=1, maxsat=5, collectors=12, seed=seed, max_collect=37)
            bodies[job_id] = ground.run(lc.addr_map.addr((1, 1)), job_id, e, timeout_s=90, key=lc.key)

        threads = [threading.Thread(target=run, args=(110 + k, k)) for k in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert sorted(bodies) == [111, 112]
    assert all(b["result"] == exact for b in bodies.values())


def test_eo_workload_end_to_end(c3, tmp_path):
    job_data = {"tile": 256, "tiles": 2, "seed": 5, "hotspots": 4, "threshold_k": 330.0, "block": 8}
    body = ground.run(c3.addr_map.addr((1, 1)), 103, ext(EO, job_data=job_data),
                      files_dir=str(tmp_path), timeout_s=60, key=c3.key)
    stats = body["result"]
    # what the constellation computed equals a direct computation over the same rasters
    hot = [eo.anomaly_mask(eo.thermal_tile(5, i, k, 256, 4), 330.0)
           for i in range(1, 5) for k in range(2)]
    assert stats["tiles"] == 8
    assert stats["hot_pixels"] == sum(int(h.sum()) for h in hot) > 0
    mask = np.load(body["paths"]["anomaly_mask.npy"])
    assert mask.dtype == bool and list(mask.shape) == stats["mask_shape"]
    assert int(mask.sum()) == stats["hot_blocks"] > 0
    # large binary in, small result out
    assert body["metrics"]["bytes"]["collect"] > 2_000_000
    assert body["metrics"]["bytes"]["result"] < body["metrics"]["bytes"]["collect"] / 10


def test_two_concurrent_jobs_from_two_ground_stations(c3, exact):
    async def both():
        a = ground.submit(c3.addr_map.addr((1, 1)), 201, ext(seed=2, los=(1, 1)), timeout_s=60, key=c3.key)
        b = ground.submit(c3.addr_map.addr((3, 3)), 202,
                          ext(EO, seed=4, los=(3, 3), job_data={"tile": 128, "tiles": 1}),
                          timeout_s=60, key=c3.key)
        return await asyncio.gather(a, b)
    wc, eo_body = asyncio.run(both())
    assert wc["result"] == exact
    assert eo_body["result"]["tiles"] == 4
    assert wc["metrics"]["plan"]["los"] == [1, 1] and eo_body["metrics"]["plan"]["los"] == [3, 3]


def test_same_job_id_twice_at_once_is_refused_not_mixed(c3, exact):
    async def both():
        return await asyncio.gather(
            ground.submit(c3.addr_map.addr((1, 1)), 301, ext(seed=5), timeout_s=60, key=c3.key),
            ground.submit(c3.addr_map.addr((1, 1)), 301, ext(seed=5), timeout_s=60, key=c3.key),
            return_exceptions=True)
    results = asyncio.run(both())
    ok = [r for r in results if isinstance(r, dict)]
    failed = [r for r in results if isinstance(r, ground.JobFailed)]
    assert len(ok) == 1 and len(failed) == 1
    assert ok[0]["result"] == exact
    assert "already in use" in str(failed[0])


def _peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test_a_200_mb_file_streams_through_with_bounded_memory(tmp_path):
    size = 200 * 1024 * 1024
    with LoopbackConstellation(3, 3, str(tmp_path), log=False, per_process=1) as lc:
        e = ext({"collect": "syntheticcollector", "map": "passmapper", "reduce": "digestreducer"},
                collectors=1, seed=1)
        from node_app import protocol as P
        body = ground.run(lc.addr_map.addr((1, 1)), 105, e, P.SubmitFixed(data_volume_bytes=size),
                          timeout_s=120, key=lc.key)
        peaks = {sat: _peak_rss_kb(pid) for sat, pid in lc.pids.items()}
    h = hashlib.sha256()
    stream = PatternStream(size, seed=1)
    while seg := stream.read(1 << 20):
        h.update(seg)
    assert body["result"] == {"synthetic-1.bin": {"bytes": size, "sha256": h.hexdigest()}}
    assert body["metrics"]["bytes"]["collect"] > size and body["metrics"]["bytes"]["map"] > size
    assert max(peaks.values()) < 100 * 1024, peaks  # KB: far below the 200 MB that passed


def test_cli_loopback_json_and_results(tmp_path, exact):
    out = subprocess.run([sys.executable, "-m", "node_app.job", "--loopback", "--grid", "3x3",
                          "-mi", "1", "-ma", "3", "-c", "4", "-s", "2", "--json",
                          "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    metrics = json.loads(lines[0])
    assert metrics["result"] == exact
    for key in ("distance", "reduce_distance", "job_time", "end_to_end_s", "bytes", "roles"):
        assert key in metrics
    assert "done" in out.stderr  # progress while waiting
    (job_dir,) = (tmp_path / "job").iterdir()  # results/job/<UTC timestamp>/
    assert str(job_dir) == metrics["results_dir"]
    saved = json.loads((job_dir / "metrics.json").read_text())
    assert saved["distance"] == metrics["distance"]
    assert json.loads((job_dir / "result.json").read_text()) == exact
    timeline = [json.loads(x) for x in (job_dir / "timeline.jsonl").read_text().splitlines()]
    assert timeline == sorted(timeline, key=lambda e: e["time"])
    assert {tuple(e["node"]) for e in timeline} >= {tuple(c) for c, _ in metrics["plan"]["allocations"]}
    for e in timeline[:50]:
        assert {"time", "node", "action", "msgid", "from", "to"} <= set(e)
    viz = [json.loads(x) for x in (job_dir / "logviz.jsonl").read_text().splitlines()]
    assert viz and all(set(v) == {"timestamp", "from", "to", "action", "msgid"} for v in viz)
    assert {"collect", "map", "reduce"} <= {v["action"] for v in viz}


def test_cli_job_failure_is_exit_1_with_one_line(tmp_path):
    from node_app.auth import write_key
    write_key(str(tmp_path / "testbed.key"))
    out = subprocess.run([sys.executable, "-m", "node_app.job", "--grid", "3x3", "-mi", "1",
                          "-ma", "3", "-c", "2", "--coordinator", "127.0.0.1:1",
                          "--key-file", str(tmp_path / "testbed.key"),
                          "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and out.stderr.strip().startswith("error:")


@pytest.mark.parametrize("args, needle", [
    (["-ct", "os:system"], "unknown collect task"),
    (["-mr", "0"], "maxrecords"),
    ([], "no testbed"),
    (["--coordinator", "nohostport"], "HOST:PORT"),
    (["--job-data", "{bad"], "--job-data"),
])
def test_cli_run_bad_input_is_exit_2(args, needle):
    out = subprocess.run([sys.executable, "-m", "node_app.job", "--grid", "3x3", "-mi", "1",
                          "-ma", "3", "-c", "2", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SPACECOMP_ADDR_MAP": ""})
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr
