"""Fault injection: real jobs while role nodes die or stall, under overload, and against
bad input.

    python3 -m experiments.faults --loopback [--config experiments/faults.yaml] [--json]

Runs on a loopback constellation (one daemon process per satellite, real sockets; see
experiments/faults.yaml for the schedule).  Every job's result is compared with the exact
word count of its input.  Output (one JSON line with ``--json``; also
``results/faults/<UTC>/metrics.json`` and ``jobs.csv``):

* ``jobs_attempted``, ``jobs_exact``, ``jobs_failed_clean`` (a failed JobResult with a
  reason, or refused), ``jobs_wrong`` (a result that is not exact: must be 0),
  ``jobs_hung`` (no answer within ``job_timeout_s``: must be 0)
* ``faults_injected`` (total) and ``faults_by_kind``; ``recovery_s`` per fault kind
  (``kill_collector``, ``kill_mapper``, ``kill_reducer``, ``stall_mapper``): median and
  max of detection-to-replacement-done times from the jobs' reassignment records
* ``bad_inputs_rejected`` of ``bad_inputs_sent`` (malformed frames answered with an
  Error and closed, bad command lines exiting 2 with one line)
* ``anchor_job_s`` (the clean job beside which fault-job times read), ``overload``
  (exact / refused / queued / wrong / hung of the concurrent jobs, their wall time, the
  time of one job straight after), ``daemon_rss_max_mb`` (largest daemon RSS sampled
  through the run)

    python3 -m experiments.faults TESTBED_CONFIG [--config experiments/faults.yaml] [--json]

runs the same schedule on an emulated network (root; see experiments/faults_emulated.py):
a daemon per satellite host, the jobs submitted from the ground station's host, and
after the fault jobs the controller killed and restarted mid-job (``kill_controller``)
and ISLs flapped mid-job (``flap_link``).

Exit codes: 0 ran and no job was wrong or hung, 1 otherwise, 2 bad input.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from experiments import common
from experiments.common import UsageError
from experiments.output import json_safe, new_result_dir, write_csv, write_json, write_yaml

DEFAULT_CONFIG = Path(__file__).with_name("faults.yaml")
DEFAULTS = {"grid": "11x11", "minsat": 3, "maxsat": 8, "collectors": 11, "jobs": 20,
            "stall_every": 4, "concurrent": 150, "phase_timeout_s": 30, "job_timeout_s": 300,
            "seed": 1, "per_process": 1, "max_collect": 20, "emulated": {}}
WORDCOUNT = {"collect": "doccollector", "map": "wordcountmapper", "reduce": "sumreducer"}
LOS = (1, 1)
KILL_WINDOW = 0.8   # kill moments fall in this share of the anchor job's execution


def load(path: Path, overrides: dict) -> dict:
    cfg = common.load_config(path, DEFAULTS, overrides)
    common.check_ints(cfg, ["minsat", "maxsat", "collectors", "phase_timeout_s",
                            "job_timeout_s", "per_process", "max_collect"])
    common.check_ints(cfg, ["jobs", "stall_every", "concurrent", "seed"], minimum=0)
    from topo.spec import parse_grid
    try:
        cfg["_grid"] = parse_grid(str(cfg["grid"]))
    except ValueError as e:
        raise UsageError(f"grid: {e}") from None
    return cfg


# --- jobs ----------------------------------------------------------------------------------
def submit_ext(cfg: dict, seed: int, los=LOS) -> dict:
    return {"jobid": f"faults-{seed}-{time.time_ns()}", "tasks": WORDCOUNT,
            "job_data": {"filename": "data/sample.txt"},
            "aoi": {"kind": "grid", "minsat": cfg["minsat"], "maxsat": cfg["maxsat"],
                    "collectors": cfg["collectors"], "seed": seed},
            "allocator": "bipartite", "reducetype": "center", "los": list(los),
            "max_collect": cfg["max_collect"], "phase_timeout_s": cfg["phase_timeout_s"]}


async def one_job(addr, job_id: int, ext: dict, exact: dict, timeout_s: float, key: bytes,
                  on_plan=None):
    """Run a job; a row {outcome: exact|wrong|failed|refused|hung, ...}."""
    from node_app import ground
    t0 = time.time()
    row = {"job_id": job_id, "seed": ext["aoi"]["seed"], "queued": False}

    def progress(body):
        if body.get("event") == "planned":
            row["t_planned"] = time.time() - t0
            if on_plan:
                on_plan(body["plan"])
        if body.get("event") == "queued":
            row["queued"] = True
    try:
        body = await asyncio.wait_for(ground.submit(addr, job_id, ext, progress=progress,
                                                    timeout_s=timeout_s, key=key),
                                      timeout_s + 5)
        m = body.get("metrics", {})
        row.update(outcome="exact" if body.get("result") == exact else "wrong",
                   job_time=m.get("job_time"), reassignments=m.get("reassignments", []))
    except ground.JobFailed as e:
        hung = "no result within" in str(e)
        row.update(outcome="hung" if hung else "refused" if e.body.get("refused") else "failed",
                   error=str(e)[:300], reassignments=e.body.get("reassignments", []))
    except (asyncio.TimeoutError, OSError) as e:
        row.update(outcome="hung", error=f"{type(e).__name__}: {e}"[:300])
    row["wall_s"] = time.time() - t0
    return row


# --- the constellation ----------------------------------------------------------------------
class DaemonSet:
    """What the schedule does to daemons: signal one by PID (a SIGKILLed one is noted
    ``dead``) and sample the largest RSS.  Subclasses give ``pid(sat)`` and ``all_pids()``."""

    dead: set
    rss_max_kb: int

    def signal(self, sat, sig) -> None:
        try:
            os.kill(self.pid(sat), sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGKILL:
            self.dead.add(sat)

    def sample_rss(self) -> None:
        for pid in self.all_pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.rss_max_kb = max(self.rss_max_kb, int(line.split()[1]))
            except OSError:
                pass


class Nodes(DaemonSet):
    """The loopback constellation plus the daemons this run restarted (by PID)."""

    def __init__(self, cfg: dict, directory: str):
        from node_app.loopback import LoopbackConstellation
        self.lc = LoopbackConstellation(*cfg["_grid"], directory, gateways=[LOS],
                                        per_process=cfg["per_process"])
        self.restarted: dict = {}
        self.dead: set = set()
        self.rss_max_kb = 0
        self.los = LOS

    key = property(lambda self: self.lc.key)

    def addr(self, sat):
        return self.lc.addr_map.addr(sat)

    def describe(self) -> str:
        return f"{len(self.lc.pids)} daemons up in {self.lc.startup_s:.1f} s"

    def start(self):
        self.lc.start(timeout=180)
        return self

    def pid(self, sat) -> int:
        return self.restarted.get(sat) or self.lc.pids[sat]

    def all_pids(self) -> set:
        return set(self.lc.pids.values()) | set(self.restarted.values())

    def restart_dead(self) -> None:
        """Start a fresh daemon for every killed satellite (same address, same files)."""
        from node_app.addressing import sat_key
        from node_app.loopback import ROOT, _die_with_parent
        from topo.spec import SPEC_FILE
        lc = self.lc
        for sat in sorted(self.dead):
            ready = os.path.join(lc.dir, "ready", f"re-{sat[0]}-{sat[1]}")
            if os.path.exists(ready):
                os.remove(ready)
            cmd = [sys.executable, "-m", "node_app.daemon", "--node", sat_key(sat),
                   "--addr-map", os.path.join(lc.dir, "addrs.json"),
                   "--spec", os.path.join(lc.dir, SPEC_FILE),
                   "--work-dir", os.path.join(lc.dir, "work", f"{sat[0]}-{sat[1]}"),
                   "--ready-file", ready, "--key-file", lc.key_file]
            if lc.log_dir:
                cmd += ["--log-dir", lc.log_dir]
            self.restarted[sat] = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_die_with_parent,
                                                   stdin=subprocess.DEVNULL).pid
            deadline = time.time() + 30
            while not os.path.exists(ready) and time.time() < deadline:
                time.sleep(0.02)
        self.dead.clear()

    def stop(self) -> None:
        for pid in self.restarted.values():
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.lc.stop()


async def sampler(nodes: Nodes, every_s: float = 0.5) -> None:
    while True:
        nodes.sample_rss()
        await asyncio.sleep(every_s)


# --- the schedule ----------------------------------------------------------------------------
def pick_victims(plan: dict, rng: random.Random, los=LOS) -> dict:
    """One satellite per role, never the coordinator ``los``, distinct where the plan allows."""
    collectors = [tuple(c) for c, _ in plan["allocations"]]
    mappers = [tuple(m) for _, m in plan["allocations"]]
    taken = {tuple(los)}
    out = {}
    for role, pool in (("reducer", [tuple(plan["reducer"])]), ("mapper", mappers),
                       ("collector", collectors)):
        choices = [s for s in pool if s not in taken]
        if choices:
            out[role] = rng.choice(choices)
            taken.add(out[role])
    return out


async def fault_job(nodes: Nodes, cfg, k: int, rng, exact, window_s: float, faults: list):
    addr = nodes.addr(nodes.los)
    seed = cfg["seed"] * 1000 + k
    stall = cfg["stall_every"] and (k + 1) % cfg["stall_every"] == 0
    loop = asyncio.get_running_loop()
    timers, stopped = [], []

    def on_plan(plan):
        for role, sat in pick_victims(plan, rng, nodes.los).items():
            kind = "stall_mapper" if stall and role == "mapper" else f"kill_{role}"
            sig = signal.SIGSTOP if kind == "stall_mapper" else signal.SIGKILL

            def fire(sat=sat, sig=sig, kind=kind, role=role):
                nodes.signal(sat, sig)
                faults.append({"job": k, "kind": kind, "role": role, "sat": list(sat)})
                if sig == signal.SIGSTOP:
                    stopped.append(sat)
            timers.append(loop.call_later(rng.uniform(0, window_s), fire))
    row = await one_job(addr, 40000 + k, submit_ext(cfg, seed, nodes.los), exact,
                        cfg["job_timeout_s"], nodes.key, on_plan)
    for t in timers:
        t.cancel()
    for sat in stopped:
        nodes.signal(sat, signal.SIGCONT)
    row["faults"] = [f["kind"] for f in faults if f["job"] == k]
    await asyncio.sleep(0.5)
    nodes.restart_dead()
    return row


def recovery_by_kind(rows: list, faults: list) -> dict:
    """Median/max time_s of the reassignments that answered each fault (or the fault's
    own ``recovery_s``: controller restarts, link flaps)."""
    times: dict[str, list] = {}
    for f in faults:
        if f.get("recovery_s") is not None:
            times.setdefault(f["kind"], []).append(f["recovery_s"])
            continue
        row = next((r for r in rows if r.get("k") == f["job"]), None)
        for m in (row or {}).get("reassignments", []):
            if m["role"] == f["role"] and m["old"] == f["sat"] and m.get("time_s") is not None:
                times.setdefault(f["kind"], []).append(m["time_s"])
    return {kind: {"n": len(v), "median": statistics.median(v), "max": max(v)}
            for kind, v in sorted(times.items())}


async def overload(nodes: Nodes, cfg, exact) -> dict:
    n = cfg["concurrent"]
    addr = nodes.addr(nodes.los)
    t0 = time.time()
    rows = await asyncio.gather(*(one_job(addr, 50000 + i, submit_ext(cfg, 7000 + i, nodes.los),
                                          exact, cfg["job_timeout_s"], nodes.key)
                                  for i in range(n)))
    wall = time.time() - t0
    after = await one_job(addr, 60000, submit_ext(cfg, 9999, nodes.los), exact,
                          cfg["job_timeout_s"], nodes.key)
    count = lambda o: sum(r["outcome"] == o for r in rows)  # noqa: E731
    return {"jobs": n, "exact": count("exact"), "refused": count("refused"),
            "failed": count("failed"), "wrong": count("wrong"), "hung": count("hung"),
            "queued": sum(r["queued"] for r in rows), "wall_s": round(wall, 2),
            "after_outcome": after["outcome"], "after_wall_s": round(after["wall_s"], 3),
            "errors": sorted({r.get("error", "")[:120] for r in rows if r.get("error")})[:5]}, rows


def bad_inputs(nodes: Nodes) -> tuple[int, int]:
    """Malformed frames (tagged with the testbed key), forged frames (another key) and bad
    command lines: (sent, rejected).  A frame counts as rejected when the daemon answers
    with an Error or closes without answering; a command line when it exits 2 with one
    line and no traceback."""
    import socket
    import struct
    from node_app import protocol as P
    key, forged = nodes.key, os.urandom(32)
    frames = [b"\x00\x00\x00\x02\x01", struct.pack(">I", 1 << 30) + b"\x02",
              P.frame(b"\x77\x00\x00\x01", key),
              P.frame(P.encode_message(P.ASSIGN_MAPPER, 3, b"\x01{"), key),
              P.encode_frame(P.ASSIGN_COLLECTOR, 3, {"jobid": "x", "meta_data": {}}, key=key),
              P.encode_frame(P.PHASE_DONE, 4242, {"role": "mapper", "status": "failed"}, key=key),
              P.encode_frame(P.JOB_RESULT, 4242, {"status": "ok", "result": {"FORGED": 1}},
                             key=forged),
              P.encode_frame(P.PHASE_DONE, 4242, {"role": "mapper", "status": "failed"},
                             key=forged)]
    rejected = 0
    addr = nodes.addr((2, 2))
    for data in frames:
        s = socket.create_connection(addr, timeout=5)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reply = s.recv(65536)
            if not reply:
                rejected += 1
            else:
                msg, _ = P.decode_frame(reply, key=key)
                rejected += msg.op == P.ERROR
        except (OSError, P.ProtocolError):
            pass
        finally:
            s.close()
    cli = [["--coordinator", "127.0.0.1:99999"], ["--timeout", "inf"], ["-mr", "0"],
           ["--job-data", "{bad"], ["-ct", "os:system"], ["--grid", "0x0"],
           ["--job-data", '{"filename": "/etc/shadow"}', "--loopback"]]
    for args in cli:
        out = subprocess.run([sys.executable, "-m", "node_app.job", "-mi", "1", "-ma", "3",
                              "-c", "2", "--grid", "3x3", *args], capture_output=True, text=True,
                             timeout=120, cwd=str(Path(__file__).resolve().parent.parent),
                             env={**os.environ, "SPACECOMP_ADDR_MAP": ""})
        rejected += (out.returncode in (1, 2) and len(out.stderr.strip().splitlines()) >= 1
                     and "Traceback" not in out.stderr and not out.stdout.strip())
    return len(frames) + len(cli), rejected


async def run(cfg: dict, out_dir: Path, echo, nodes=None, extra=None) -> tuple[dict, list]:
    """The schedule on ``nodes`` (started; default: a loopback constellation started and
    stopped here).  extra: ``async extra(nodes, cfg, rng, exact, window, rows, faults)``
    run after the fault jobs (the emulated run's controller and link faults)."""
    from node_app.tasks.wordcount import exact_word_count, resolve_data_file
    exact = exact_word_count(resolve_data_file("data/sample.txt"))
    rng = random.Random(cfg["seed"])
    work = str(out_dir / "loopback")   # node logs stay there; spooled data is removed
    if nodes is None:
        nodes = Nodes(cfg, work).start()
    watch = asyncio.get_running_loop().create_task(sampler(nodes))
    rows, faults = [], []
    try:
        echo(nodes.describe())
        addr = nodes.addr(nodes.los)
        anchors = []  # the first loads the planner; the fastest of the next three is the anchor
        for warm in (39996, 39997, 39998, 39999):
            anchors.append(await one_job(addr, warm,
                                         submit_ext(cfg, cfg["seed"] * 1000 - 1, nodes.los),
                                         exact, cfg["job_timeout_s"], nodes.key))
        anchor = min(anchors[1:], key=lambda r: r["wall_s"] - r.get("t_planned", 0.0))
        # kill moments: uniform over the first 80% of the anchor's execution (planned ->
        # result at the ground), so that a fault job, a little faster, is still running
        window = KILL_WINDOW * (anchor["wall_s"] - anchor.get("t_planned", 0.0))
        echo(f"anchor job: {anchor['outcome']} in {anchor['wall_s']:.2f} s "
             f"({window:.2f} s after planning)")
        for k in range(cfg["jobs"]):
            row = await fault_job(nodes, cfg, k, rng, exact, window, faults)
            row["k"] = k
            rows.append(row)
            echo(f"job {k + 1}/{cfg['jobs']}: {row['outcome']} in {row['wall_s']:.2f} s, "
                 f"faults {row['faults']}, reassigned {len(row.get('reassignments', []))}"
                 + (f" ({row.get('error')})" if row.get("error") else ""))
        if extra is not None:
            await extra(nodes, cfg, rng, exact, window, rows, faults)
        over, over_rows = ({}, [])
        if cfg["concurrent"]:
            over, over_rows = await overload(nodes, cfg, exact)
            faults.append({"job": None, "kind": "overload", "role": None, "sat": None})
            echo(f"overload: {json.dumps(over)}")
        sent, rejected = await asyncio.get_running_loop().run_in_executor(None, bad_inputs, nodes)
        faults.append({"job": None, "kind": "bad_inputs", "role": None, "sat": None})
        nodes.sample_rss()
    finally:
        watch.cancel()
        nodes.stop()
        import shutil
        shutil.rmtree(os.path.join(work, "work"), ignore_errors=True)
    everything = rows + over_rows
    count = lambda o: sum(r["outcome"] == o for r in everything)  # noqa: E731
    kinds: dict[str, int] = {}
    for f in faults:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    metrics = {
        "grid": cfg["grid"], "jobs_attempted": len(everything), "jobs_exact": count("exact"),
        "jobs_failed_clean": count("failed") + count("refused"), "jobs_wrong": count("wrong"),
        "jobs_hung": count("hung"), "faults_injected": len(faults), "faults_by_kind": kinds,
        "recovery_s": recovery_by_kind(rows, faults), "bad_inputs_sent": sent,
        "bad_inputs_rejected": rejected, "anchor_job_s": anchor["wall_s"],
        "kill_window_s": window,
        "fault_jobs": {"jobs": len(rows), "exact": sum(r["outcome"] == "exact" for r in rows),
                       "reassignments": sum(len(r.get("reassignments", [])) for r in rows),
                       "with_every_role_hit": sum(len(set(r["faults"])) == 3 for r in rows),
                       "median_wall_s": statistics.median([r["wall_s"] for r in rows])
                       if rows else None},
        "overload": over, "daemon_rss_max_mb": round(nodes.rss_max_kb / 1024, 1),
    }
    return metrics, rows


def main(argv=None) -> int:
    p = common.parser("python3 -m experiments.faults", __doc__)
    p.add_argument("config_path", nargs="?", type=Path,
                   help="a testbed config (topo/README.md): run on an emulated network "
                        "(root; the schedule's emulated: section applies)")
    p.add_argument("--loopback", action="store_true", help="run on a loopback constellation")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="fault schedule (YAML)")
    p.add_argument("--grid", help="PLANESxSATS (overrides the config)")
    p.add_argument("--jobs", type=int, help="fault jobs")
    p.add_argument("--concurrent", type=int, help="jobs at once in the overload phase (0: skip)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--results", default="results", help="results root (default results)")
    try:
        args = p.parse_args(argv)
        if (args.config_path is None) == (not args.loopback):
            raise UsageError("give --loopback or a testbed config (not both)")
        overrides = {"grid": args.grid, "jobs": args.jobs, "concurrent": args.concurrent}
        tb_cfg = None
        if args.config_path is not None:
            from experiments import faults_emulated
            if args.grid:
                raise UsageError("--grid: the testbed config sets the grid of an emulated run")
            tb_cfg, cfg = faults_emulated.load(args.config_path, args.config, overrides)
        else:
            cfg = load(args.config, overrides)
    except (UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = new_result_dir(args.results, "faults")
    write_yaml(out_dir / "config.yaml", {k: v for k, v in cfg.items() if not k.startswith("_")})
    try:
        if tb_cfg is not None:
            metrics, rows = faults_emulated.run_emulated(tb_cfg, cfg, out_dir,
                                                         common.echo_stderr)
        else:
            metrics, rows = asyncio.run(run(cfg, out_dir, common.echo_stderr))
    except (RuntimeError, OSError) as e:
        print(f"error: fault run failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    metrics["results_dir"] = str(out_dir)
    write_json(out_dir / "metrics.json", metrics)
    write_csv(out_dir / "jobs.csv", [{k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                                      for k, v in r.items()} for r in rows])
    if args.json:
        print(json.dumps(json_safe(metrics)))
    else:
        for k, v in metrics.items():
            print(f"{k}: {json.dumps(json_safe(v))}")
    return 0 if metrics["jobs_wrong"] == 0 and metrics["jobs_hung"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
