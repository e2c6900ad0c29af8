"""The running half of the ground CLI (``python3 -m node_app.job`` without ``--dry-run``):
submit to a testbed or a loopback constellation, show progress, save and print results.

Files written to ``results/job/<UTC timestamp>/`` (``--results`` sets the root): ``result.json`` (the reduce result), any result
files, ``metrics.json`` (``distance``, ``reduce_distance``, ``job_time``,
``end_to_end_s``, ``bytes`` per phase, per-role timings, the plan, ...),
``timeline.jsonl`` (every node's events for this job, merged, time-ordered) and
``logviz.jsonl`` (the same in the reference log viewer's format).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time

from node_app import protocol as P
from node_app import tasks as T


def check_run_args(args, job_data=None, grid: tuple[int, int] | None = None) -> None:
    """Bad input for a real run: ValueError (one line, exit 2) before anything starts.
    (Not job.UsageError: under ``python -m`` that module is ``__main__``.)"""
    UsageError = ValueError  # noqa: N806
    for kind, name in (("collect", args.collecttask), ("map", args.maptask),
                       ("reduce", args.reducetask)):
        if not T.known(kind, name):
            raise UsageError(f"unknown {kind} task {name!r} (known: {', '.join(T.names(kind))})")
    if args.maxrecords < 1:
        raise UsageError("-mr/--maxrecords must be at least 1")
    if not 0 < args.timeout <= MAX_TIMEOUT_S:  # also refuses nan and inf
        raise UsageError(f"--timeout {args.timeout}: expected seconds in (0, {MAX_TIMEOUT_S:g}]")
    if not args.loopback and not args.coordinator and not args.addr_map:
        raise UsageError("no testbed to submit to: give --loopback, --addr-map FILE or "
                         "--coordinator HOST:PORT (or --dry-run)")
    if args.coordinator:
        parse_host_port(args.coordinator)
    args.amap = None
    if args.addr_map and not args.loopback:
        args.amap = load_addr_map(args.addr_map)
    if not 0 <= args.data_volume < 2 ** 64:
        raise UsageError("--data-volume must fit in 64 bits")
    for name in ("map_reduction", "reduce_reduction", "map_processing", "reduce_processing"):
        if not math.isfinite(getattr(args, name)):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number")
    tasks = {"collect": args.collecttask, "map": args.maptask, "reduce": args.reducetask}
    try:
        T.check_job(tasks, job_data, data_volume_bytes=args.data_volume,
                    max_collect=args.maxrecords)
    except T.BadTaskInput as e:
        raise UsageError(str(e)) from None
    try:
        os.makedirs(args.results, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--results {args.results}: {e.strerror}") from None
    if not os.access(args.results, os.W_OK | os.X_OK):
        raise UsageError(f"--results {args.results}: not writable")
    if args.loopback:
        if grid is not None:
            check_loopback_memory(*grid)
        args.key = None                      # the loopback constellation makes its own
    else:
        from node_app.auth import find_key_file, load_key
        path = find_key_file(args.key_file, args.addr_map)
        if path is None:
            raise UsageError("no testbed key: give --key-file FILE (the testbed's testbed.key) "
                             "or set SPACECOMP_KEY_FILE")
        args.key = load_key(path)            # ValueError, one line


MAX_TIMEOUT_S = 86400.0
# Memory of one loopback daemon process (a forked satellite, pages shared with its
# siblings counted by share, PSS), bytes: 4.2 MB idle measured on an 11x11 loopback, 6.0
# on a 5x5; twice that leaves room for a job.  A constellation whose estimate exceeds the
# memory the machine has available is refused before anything is forked.
LOOPBACK_BYTES_PER_DAEMON = 8 * 1024 ** 2


def parse_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--coordinator {text!r}: expected HOST:PORT with a port in 1..65535")
    return host.strip("[]"), int(port)


def load_addr_map(path: str):
    """The address map at ``path``; ValueError (one line) for anything that is not one."""
    from node_app.addressing import AddressMap
    if not os.path.isfile(path):
        raise ValueError(f"--addr-map {path}: no such file")
    try:
        amap = AddressMap.load(path)
        for host, port in amap.nodes.values():
            if not 0 < port < 65536:
                raise ValueError(f"port {port} out of range")
        return amap
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--addr-map {path}: not a JSON address map ({type(e).__name__})") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"--addr-map {path}: not an address map "
                         f"({type(e).__name__}: {str(e)[:80]})") from None


def available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_loopback_memory(planes: int, sats: int) -> None:
    """Refuse a loopback constellation that would not fit in memory, before forking."""
    grid_text = f"{planes}x{sats}"
    if planes > 255 or sats > 255:
        raise ValueError(f"--loopback --grid {grid_text}: the loopback addresses "
                         f"127.0.<orb>.<sat> allow at most 255x255")
    need = planes * sats * LOOPBACK_BYTES_PER_DAEMON
    have = available_memory_bytes()
    if have is not None and need > have:
        raise ValueError(f"--loopback --grid {grid_text}: {planes * sats} daemons need about "
                         f"{need / 1e9:.1f} GB of memory, {have / 1e9:.1f} GB is available")


def build_submit(args, job_data, jobid: str) -> tuple[dict, P.SubmitFixed]:
    """The SubmitJob extension and fixed part for the CLI's flags."""
    if job_data is None and args.collecttask == "doccollector":
        job_data = {"filename": "data/sample.txt"}
    box = getattr(args, "aoi_box", None)
    if box:                                  # validated by job.parse_aoi_box
        aoi = {"kind": "geo"}
        if getattr(args, "aoi_count", None) is not None:
            aoi["count"] = args.aoi_count
        corners = dict(zip(("ul_lat", "ul_lon", "lr_lat", "lr_lon"),
                           (float(v) for v in box.split(","))))
    else:
        aoi = {"kind": "grid", "minsat": args.minsat, "maxsat": args.maxsat,
               "collectors": args.collectors, "seed": args.seed}
        corners = {}
    ext = {"jobid": jobid, "grid": args.grid,
           "tasks": {"collect": args.collecttask, "map": args.maptask, "reduce": args.reducetask},
           "job_data": job_data,
           "aoi": aoi,
           "allocator": args.allocator, "reducetype": args.reducetype, "cost": args.cost,
           "los": list(los_of(args)), "max_collect": args.maxrecords,
           "phase_timeout_s": args.timeout}
    fixed = P.SubmitFixed(**corners, data_volume_bytes=args.data_volume,
                          map_processing_factor=args.map_processing,
                          reduce_processing_factor=args.reduce_processing,
                          map_reduction_factor=args.map_reduction,
                          reduce_reduction_factor=args.reduce_reduction,
                          ascending_only=args.ascending_only, solver=args.solver)
    return ext, fixed


class Progress:
    """One stderr line per progress event, with the time since submission."""

    def __init__(self, quiet: bool = False):
        self.t0 = time.time()
        self.quiet = quiet

    def __call__(self, body: dict) -> None:
        if self.quiet:
            return
        t = time.time() - self.t0
        if body.get("event") == "planned":
            plan = body.get("plan", {})
            line = (f"planned: {len(plan.get('allocations', []))} collectors, reducer "
                    f"{plan.get('reducer')}, distance {plan.get('distance')}, reduce_distance "
                    f"{plan.get('reduce_distance')}")
        elif body.get("event") == "queued":
            line = (f"queued at the coordinator: position {body.get('position')} "
                    f"({body.get('running')} jobs running)")
        elif body.get("event") == "reassigned":
            line = "; ".join(f"{m['role']} {m['old']} -> {m['new']} ({m['reason']})"
                             for m in body.get("reassignments", [])[-3:])
            line = f"reassigned: {line}"
        else:
            left = body.get("remaining", {})
            line = (f"{body.get('role')} {body.get('node')} done"
                    + (f", {body['records']} records" if "records" in body else "")
                    + (f", {body['bytes']} B sent" if "bytes" in body else "")
                    + f"  (left: collect {left.get('collect')}, map {left.get('map')}, "
                      f"reduce {left.get('reduce')})")
        print(f"[{t:7.3f} s] {line}", file=sys.stderr, flush=True)


def summarize(result, limit: int = 10) -> str:
    """A short human view of a result (a big word count shows its top words)."""
    if isinstance(result, dict) and len(result) > limit and all(
            isinstance(v, (int, float)) for v in result.values()):
        top = sorted(result.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        total = sum(result.values())
        return (f"{len(result)} keys, total {total}; top {limit}: "
                + ", ".join(f"{k!r}: {v}" for k, v in top))
    text = json.dumps(result)
    return text if len(text) < 2000 else text[:2000] + " ..."


def save_timeline(out_dir: str, log_dir: str | None, job_id: int, since: float,
                  spec) -> int:
    """Merge the nodes' logs for this job into timeline.jsonl and logviz.jsonl."""
    if not log_dir or not os.path.isdir(log_dir):
        return 0
    from node_app.nodelog import job_timeline, to_logviz
    events = job_timeline(log_dir, job_id, since)
    with open(os.path.join(out_dir, "timeline.jsonl"), "w") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
    router = spec.router()
    with open(os.path.join(out_dir, "logviz.jsonl"), "w") as f:
        for e in to_logviz(events, hops=True, router=router):
            f.write(json.dumps(e) + "\n")
    return len(events)


def resolve_gateway(args) -> dict:
    """``--ground-state``: wait (bounded by ``--timeout`` x 20) until station
    ``--station`` has a satellite in view and make that gateway the LOS (unless ``--los``
    names one); returns the uplink record ``{station, gateway, contact_wait_s}``."""
    from node_app.contact import Contact
    contact = Contact(args.ground_state)
    if not contact.state():
        raise ValueError(f"--ground-state {args.ground_state}: no readable ground-segment state")
    k = args.station
    if contact.gateway(k) is True:
        raise ValueError(f"--station {k}: not a placed ground station of {args.ground_state}")
    if contact.gateway(k) is None:
        print(f"station {k}: no satellite in view, waiting for contact ...", file=sys.stderr,
              flush=True)
    waited = contact.wait_blocking(k, args.timeout * 20)  # NoContact: exit 1
    gw = contact.gateway(k)
    if args.los is None:
        args.los = f"{gw[0]},{gw[1]}"
    return {"station": k, "gateway": list(gw), "contact_wait_s": round(waited, 4),
            "t_unix": time.time()}


def ground_record(args, body: dict, since: float) -> dict:
    """What a job on a placed station records about its ground contact: the gateways it
    used (uplink at submission, downlink when the result went down), the handovers of its
    station while it ran and how long it waited for contact each way."""
    if not getattr(args, "uplink", None):
        return {}
    from node_app.contact import Contact
    down = (body.get("metrics") or {}).get("downlink") or {}
    k = args.uplink["station"]
    return {"station": k,
            "gateways": {"uplink": args.uplink["gateway"], "downlink": down.get("gateway")},
            "handovers": Contact(args.ground_state).handovers(k, args.uplink["t_unix"]),
            "contact_wait_s": {"uplink": args.uplink["contact_wait_s"],
                               "downlink": down.get("contact_wait_s", 0.0)}}


def los_of(args) -> tuple[int, int]:
    return tuple(int(v) for v in args.los.split(","))


def contact_explains(args):
    """For a placed station: a coordinator silent while the station was out of contact is
    not lost (None otherwise)."""
    if not getattr(args, "uplink", None):
        return None
    from node_app.contact import Contact
    contact, k = Contact(args.ground_state), args.uplink["station"]
    return lambda silence_s: contact.out_of_contact_within(k, silence_s)


def run_job(args, spec, job_data) -> int:
    """Submit the job the flags describe to the run of ``spec`` (its coordinator plans
    it); save and print what the coordinator reports."""
    from node_app import ground
    grid = spec.grid
    los = los_of(args)
    job_id = ground.new_job_id()
    jobid = ground.job_name(job_id)
    from topo.cli import results_dir
    out_dir = str(results_dir(args.results, "job"))
    ext, fixed = build_submit(args, job_data, jobid)
    loop_c = loop_dir = None
    key = getattr(args, "key", None)
    progress = Progress()
    log_dir = args.log_dir
    extra = {}
    failover = []
    if getattr(args, "failover", None):
        from node_app.job import parse_sat
        try:
            failover = [parse_sat(t.strip(), "--failover") for t in args.failover.split(";")]
        except Exception as e:  # UsageError or ValueError: one line, exit 2
            print(f"error: {e}", file=sys.stderr)
            return 2
        bad = [f for f in failover if not spec.constellation.contains(f) or f == los]
        if args.coordinator:
            print("error: --failover needs the address map or --loopback, not --coordinator",
                  file=sys.stderr)
            return 2
        if bad:
            print(f"error: --failover {list(bad[0])}: outside the {spec.grid_text} grid, or "
                  f"the coordinator itself", file=sys.stderr)
            return 2
    addr_of = None
    try:
        if args.loopback:
            from node_app.loopback import LoopbackConstellation
            print(f"starting a {args.grid} loopback constellation ...", file=sys.stderr, flush=True)
            loop_dir = tempfile.mkdtemp(prefix="spacecomp-loopback-")
            root = os.geteuid() == 0
            if root:  # the daemons drop to nobody once listening: let them reach their files
                os.chmod(loop_dir, 0o711)
            loop_c = LoopbackConstellation(*grid, loop_dir, spawn=args.spawn,
                                           gateways=[los, *failover],
                                           spec=spec, user="nobody" if root else None).start()
            key = loop_c.key
            extra["loopback_startup_s"] = loop_c.startup_s
            print(f"{len(loop_c.pids)} node daemons up in {loop_c.startup_s:.2f} s",
                  file=sys.stderr, flush=True)
            addr = loop_c.addr_map.addr(los)
            addr_of = loop_c.addr_map.addr
            log_dir = loop_c.log_dir
        elif args.coordinator:
            addr = parse_host_port(args.coordinator)
        else:
            amap = args.amap
            if amap.grid != grid:
                print(f"error: --grid {args.grid} but the testbed is "
                      f"{amap.grid[0]}x{amap.grid[1]}", file=sys.stderr)
                return 2
            addr = amap.addr(los)
            addr_of = amap.addr
        since = time.time()
        progress.t0 = since
        try:
            kw = dict(files_dir=out_dir, progress=progress, timeout_s=args.timeout * 20, key=key,
                      silence_explained=contact_explains(args))
            if failover:
                import asyncio
                body = asyncio.run(ground.submit_failover(
                    [(los, addr)] + [(f, addr_of(f)) for f in failover], job_id, ext, addr_of,
                    fixed, **kw))
            else:
                body = ground.run(addr, job_id, ext, fixed, **kw)
        except ground.NotANode as e:  # bad input: a wrong address or key, nothing ran
            shutil.rmtree(out_dir, ignore_errors=True)
            print(f"error: {e}", file=sys.stderr)
            return 2
        except (ground.JobFailed, OSError) as e:
            failed = {"jobid": jobid, "job_id": job_id, "status": "failed", "error": str(e),
                      "results_dir": out_dir,
                      **getattr(e, "body", {}), **extra}
            with open(os.path.join(out_dir, "metrics.json"), "w") as f:
                json.dump(failed, f, indent=1)
            print(f"error: {e}", file=sys.stderr)
            if args.json:
                print(json.dumps(failed))
            return 1
        metrics = {**body["metrics"], "status": "ok", "grid": args.grid, "tasks": ext["tasks"],
                   "results_dir": out_dir,
                   "result_files": sorted(body.get("paths", {})), **extra,
                   **ground_record(args, body, since)}
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump(body.get("result"), f)
        time.sleep(0.05)  # let the nodes' last log lines (acks) land before merging
        metrics["timeline_events"] = save_timeline(out_dir, log_dir, job_id, since, spec)
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        if args.json:
            print(json.dumps({**metrics, "result": body.get("result")}))
        else:
            print(f"job {jobid}: {summarize(body.get('result'))}")
            print(f"distance={metrics['distance']} reduce_distance={metrics['reduce_distance']} "
                  f"job_time={metrics['job_time']:.3f} s end_to_end={metrics['end_to_end_s']:.3f} s "
                  f"bytes collect={metrics['bytes']['collect']} map={metrics['bytes']['map']} "
                  f"result={metrics['bytes']['result']}")
            print(f"saved to {out_dir}/")
        return 0
    finally:
        if loop_c is not None:
            loop_c.stop()
        if loop_dir is not None:
            shutil.rmtree(loop_dir, ignore_errors=True)
