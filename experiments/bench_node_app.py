"""Benchmark of the node application on the loopback (no root needed).

    python3 -m experiments.bench_node_app [--grid 11x11] [--seeds 3] [--spawn]
        [--volume-gb 1] [--json]

Prints, beside the reference implementation's anchors (run natively on this machine's
loopback: 19-25 s to start 122 processes, 4.5 GB RSS, 1.0-1.4 s per job, word count 1.2 %
off):

* start-up: wall time until every daemon of an 11x11 loopback constellation listens;
* memory: total RSS of the 121 node processes (and PSS, which shares pages fairly);
* job time of the reference CI word count (AOI 3..8, 15 collectors) in the four
  allocator/reducer cells, over seeds: ``job_time`` (submission to reduce done) and
  end-to-end (to the result at the ground); exactness against a direct count;
* protocol overhead per DataChunk (fixed framing bytes, and measured on the word count);
* a synthetic job of ``--volume-gb`` on 5x5: time and throughput;
* frame authentication: decoding a 256 KiB file-segment DataChunk with its HMAC-SHA256 tag
  verified, beside decoding the same frame unverified (the anchor).

Goodput over one *shaped* link needs the emulator (root): see tests/test_node_mininet.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from node_app import ground
from node_app import protocol as P
from node_app.loopback import LoopbackConstellation
from node_app.memory import mem_available_mb, memory, proc_kb
from node_app.tasks.wordcount import exact_word_count, resolve_data_file
from topo import cli
from topo.spec import parse_grid

REFERENCE = {"startup_s": (19, 25), "rss_gb": 4.5, "job_s": (1.0, 1.4), "wordcount_error_pct": 1.2}
WORDCOUNT = {"collect": "doccollector", "map": "wordcountmapper", "reduce": "sumreducer"}


def wordcount_ext(allocator, reducetype, seed, grid):
    return {"jobid": f"bench-{allocator}-{reducetype}-{seed}", "grid": grid, "tasks": WORDCOUNT,
            "job_data": {"filename": "data/sample.txt"},
            "aoi": {"kind": "grid", "minsat": 3, "maxsat": 8, "collectors": 15, "seed": seed},
            "allocator": allocator, "reducetype": reducetype, "los": [1, 1],
            "max_collect": 1024, "phase_timeout_s": 30}


def bench_constellation(grid: str, seeds: int, spawn: bool, per_process: int = 1) -> dict:
    planes, sats = parse_grid(grid)
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-node-") as d:
        lc = LoopbackConstellation(planes, sats, d, spawn=spawn, log=False, per_process=per_process)
        avail0 = mem_available_mb()
        t0 = time.time()
        lc.start(timeout=120)
        out["startup_s"] = time.time() - t0
        out["startup_s_launcher"] = lc.startup_s
        try:
            time.sleep(1.0)  # the gateway's planner preload settles
            out["memory_idle"] = memory(set(lc.pids.values()))
            out["memory_idle"]["system_mb_used"] = avail0 - mem_available_mb()
            exact = exact_word_count(resolve_data_file("data/sample.txt"))
            addr = lc.addr_map.addr((1, 1))
            ground.run(addr, 1, wordcount_ext("bipartite", "center", 0, grid), timeout_s=60, key=lc.key)  # warm-up
            cells, job_id = {}, 2
            for allocator in ("random", "bipartite"):
                for reducetype in ("los", "center"):
                    rows = []
                    for seed in range(1, seeds + 1):
                        body = ground.run(addr, job_id, wordcount_ext(allocator, reducetype, seed, grid),
                                          timeout_s=60, key=lc.key)
                        job_id += 1
                        m = body["metrics"]
                        rows.append({"seed": seed, "distance": m["distance"],
                                     "reduce_distance": m["reduce_distance"],
                                     "job_time": m["job_time"], "end_to_end_s": m["end_to_end_s"],
                                     "exact": body["result"] == exact,
                                     "collect_bytes": m["bytes"]["collect"],
                                     "chunks": sum(r.get("chunks", 0) for r in m["roles"]
                                                   if r["role"] == "collector")})
                    cells[f"{allocator}-{reducetype}"] = rows
            out["cells"] = cells
            out["memory_after_jobs"] = memory(set(lc.pids.values()))
        finally:
            lc.stop()
    return out


def bench_synthetic(volume: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-syn-") as d:
        with LoopbackConstellation(5, 5, d, log=False, per_process=1) as lc:
            ext = {"jobid": "bench-synthetic", "grid": "5x5",
                   "tasks": {"collect": "syntheticcollector", "map": "syntheticmapper",
                             "reduce": "syntheticreducer"},
                   "aoi": {"kind": "grid", "minsat": 1, "maxsat": 5, "collectors": 8, "seed": 1},
                   "los": [1, 1], "phase_timeout_s": 120}
            fixed = P.SubmitFixed(data_volume_bytes=volume, map_reduction_factor=1.0,
                                  reduce_reduction_factor=5.0)
            t0 = time.time()
            body = ground.run(lc.addr_map.addr((1, 1)), 7, ext, fixed, timeout_s=1200, key=lc.key)
            wall = time.time() - t0
            peak = max(proc_kb(p, "VmHWM") for p in lc.pids.values())
    m = body["metrics"]
    return {"volume_bytes": volume, "job_time": m["job_time"], "end_to_end_s": wall,
            "throughput_mb_s": volume / m["job_time"] / 1e6, "bytes": m["bytes"],
            "result": body["result"], "peak_rss_mb_per_node": peak / 1024}


def auth_cost(frames: int = 400) -> dict:
    """Seconds per 256 KiB DataChunk: encode (tag made), decode verified, and decode
    unverified (the anchor: everything but the tag check)."""
    key = os.urandom(32)
    chunk = P.DataChunk(P.ROLE_MAPPER, P.CHUNK_FILE_DATA, 0, 0,
                        P.FILE_NO.pack(0) + os.urandom(P.SEGMENT_BYTES))
    t0 = time.perf_counter()
    for _ in range(frames):
        raw = P.encode_frame(P.DATA_CHUNK, 1, chunk, key=key)
    t1 = time.perf_counter()
    for _ in range(frames):
        P.decode_frame(raw, key=key)
    t2 = time.perf_counter()
    for _ in range(frames):
        P.decode_frame(raw, key=None)
    t3 = time.perf_counter()
    n = len(raw)
    return {"frame_bytes": n, "encode_us": (t1 - t0) / frames * 1e6,
            "decode_verified_us": (t2 - t1) / frames * 1e6,
            "decode_unverified_us": (t3 - t2) / frames * 1e6,
            "verify_mb_s": n * frames / max(1e-9, (t2 - t1) - (t3 - t2)) / 1e6}


def overhead(cells: dict) -> dict:
    size = os.path.getsize(resolve_data_file("data/sample.txt"))
    row = next(iter(cells.values()))[0]
    return {"fixed_bytes_per_chunk": P.OVERHEAD_BYTES,
            "wordcount_bytes_per_chunk": (row["collect_bytes"] - size) / max(1, row["chunks"]),
            "wordcount_overhead_pct": 100.0 * (row["collect_bytes"] - size) / size,
            "chunks": row["chunks"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m experiments.bench_node_app")
    p.add_argument("--grid", default="11x11")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--spawn", action="store_true", help="one python3 -m node_app.daemon each")
    p.add_argument("--per-process", type=int, default=1,
                   help="satellites per process (forked mode; default 1, one process each)")
    p.add_argument("--volume-gb", type=float, default=1.0, help="synthetic job volume (0: skip)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--auth-only", action="store_true", help="only the frame authentication figures")
    a = p.parse_args(argv)
    if a.auth_only:
        c = auth_cost()
        print(json.dumps(c) if a.json else _auth_line(c))
        return 0
    res = {"reference": REFERENCE, "grid": a.grid, "per_process": a.per_process,
           "mode": "spawn" if a.spawn else "fork"}
    res.update(bench_constellation(a.grid, a.seeds, a.spawn, a.per_process))
    res["overhead"] = overhead(res["cells"])
    res["auth"] = auth_cost()
    if a.volume_gb > 0:
        res["synthetic"] = bench_synthetic(int(a.volume_gb * 1e9))
    if a.json:
        print(json.dumps(res))
        return 0
    mem = res["memory_idle"]
    print(f"loopback {a.grid} ({res['mode']}): start-up {res['startup_s']:.2f} s "
          f"(reference 19-25 s: {19 / res['startup_s']:.1f}x better at worst)")
    print(f"memory: {mem['processes']} node processes, RSS {mem['rss_mb']:.0f} MB "
          f"({mem['rss_mb_per_process']:.1f} MB each), PSS {mem['pss_mb']:.0f} MB, system memory "
          f"used {mem['system_mb_used']:.0f} MB; after jobs RSS "
          f"{res['memory_after_jobs']['rss_mb']:.0f} MB (reference 4.5 GB: "
          f"{4500 / res['memory_after_jobs']['rss_mb']:.1f}x better)")
    all_times = []
    for cell, rows in res["cells"].items():
        jt = [r["job_time"] for r in rows]
        e2e = [r["end_to_end_s"] for r in rows]
        all_times += jt
        print(f"  {cell:17s} job_time {statistics.mean(jt):.3f} s  end-to-end "
              f"{statistics.mean(e2e):.3f} s  distance {statistics.mean(r['distance'] for r in rows):.1f}"
              f"  reduce_distance {statistics.mean(r['reduce_distance'] for r in rows):.1f}"
              f"  exact {all(r['exact'] for r in rows)}")
    print(f"word count job_time mean {statistics.mean(all_times):.3f} s, max {max(all_times):.3f} s "
          f"(reference 1.0-1.4 s: {1.0 / statistics.mean(all_times):.1f}x better)")
    o = res["overhead"]
    print(f"protocol overhead: {o['fixed_bytes_per_chunk']} B fixed per DataChunk; word count "
          f"{o['wordcount_bytes_per_chunk']:.0f} B per chunk incl. JSON ({o['wordcount_overhead_pct']:.1f} % "
          f"of the text over {o['chunks']} chunks)")
    print(_auth_line(res["auth"]))
    if "synthetic" in res:
        s = res["synthetic"]
        print(f"synthetic {s['volume_bytes'] / 1e9:.1f} GB on 5x5: job_time {s['job_time']:.2f} s, "
              f"{s['throughput_mb_s']:.0f} MB/s, peak RSS per node {s['peak_rss_mb_per_node']:.0f} MB")
    return 0


def _auth_line(c: dict) -> str:
    return (f"authentication: a {c['frame_bytes'] / 1024:.0f} KiB DataChunk decodes verified in "
            f"{c['decode_verified_us']:.0f} us beside {c['decode_unverified_us']:.0f} us unverified "
            f"(tag check {c['verify_mb_s']:.0f} MB/s); encoding with its tag {c['encode_us']:.0f} us")


if __name__ == "__main__":
    sys.exit(cli.run(main))
