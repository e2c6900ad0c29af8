"""A small typed API for scripts and notebooks: a job as a dataclass, run on a loopback or an
emulated constellation, a result object back.

    from node_app.api import JobSpec, run
    spec = JobSpec(grid="5x5", minsat=1, maxsat=5, collectors=6, seed=3)
    res = run(spec)                               # a loopback constellation, started for it
    res.job_time, res.distance, res.result        # typed fields; res.metrics: all of them
    with Testbed(cfg) as tb, EmulatedNodes(tb, run_dir) as nodes:
        res = run(spec, on=nodes)                 # the emulated constellation

:class:`JobSpec` is the job CLI (``python3 -m node_app.job``) as a value: its defaults are
the CLI's own, :meth:`JobSpec.to_args` gives the flags and :meth:`JobSpec.from_args` reads
them back, so a spec, a shell command and a result's record say the same thing.  A user's
own tasks (a module calling :func:`node_app.tasks.register`) are loaded by every node with
``tasks_modules``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli_defaults():
    from node_app.job import build_parser
    return build_parser().parse_args([])


_D = _cli_defaults()

# field name -> the job CLI's flag (the fields the spec covers)
FLAGS = {"grid": "--grid", "minsat": "--minsat", "maxsat": "--maxsat",
         "collectors": "--collectors", "seed": "--seed", "allocator": "--allocator",
         "reducetype": "--reducetype", "cost": "--cost", "collecttask": "--collecttask",
         "maptask": "--maptask", "reducetask": "--reducetask", "maxrecords": "--maxrecords",
         "timeout_s": "--timeout", "data_volume": "--data-volume", "los": "--los"}


class JobFailed(RuntimeError):
    """The job did not complete (the message says why)."""


@dataclass
class JobSpec:
    """One SpaceCoMP job; every field is a job CLI flag with the CLI's default.

    grid: ``PLANESxSATS``; minsat/maxsat: the grid AOI; collectors: collectors (= mappers);
    seed: AOI shuffle seed (-1: random, reported); allocator/reducetype/cost: the plan;
    collecttask/maptask/reducetask: task names (built-in or a tasks module's);
    job_data: JSON value handed to every task (``--job-data``); maxrecords: records per
    DataChunk; timeout_s: phase timeout; data_volume: SubmitJob's V in bytes;
    los: ``SAT,ORB`` of the line-of-sight satellite (None: the run's first ground station);
    tasks_modules: user task modules every node imports (``--tasks-module``).
    """

    grid: str = "5x5"
    minsat: int = 1
    maxsat: int = 5
    collectors: int = 6
    seed: int = 1
    allocator: str = _D.allocator
    reducetype: str = _D.reducetype
    cost: str = _D.cost
    collecttask: str = _D.collecttask
    maptask: str = _D.maptask
    reducetask: str = _D.reducetask
    job_data: object = None
    maxrecords: int = _D.maxrecords
    timeout_s: float = _D.timeout
    data_volume: int = _D.data_volume
    los: str | None = None
    tasks_modules: tuple = ()

    def to_args(self) -> list[str]:
        """The job CLI flags of this spec (every covered field, explicitly)."""
        out = []
        for name, flag in FLAGS.items():
            value = getattr(self, name)
            if value is not None:
                out += [flag, str(value)]
        if self.job_data is not None:
            out += ["--job-data", json.dumps(self.job_data)]
        for m in self.tasks_modules:
            out += ["--tasks-module", m]
        return out

    @classmethod
    def from_args(cls, argv: list[str]) -> "JobSpec":
        """A spec from job CLI flags (ValueError naming a flag the spec does not cover)."""
        from node_app.job import UsageError, build_parser
        try:
            a = build_parser().parse_args(list(argv))
        except UsageError as e:
            raise ValueError(str(e)) from None
        dest = {"timeout_s": "timeout"}
        kw = {f: getattr(a, dest.get(f, f)) for f in FLAGS}
        if a.job_data is not None:
            kw["job_data"] = json.loads(a.job_data)
        kw["tasks_modules"] = tuple(a.tasks_module)
        covered = set(FLAGS) | {"job_data", "tasks_module", "timeout"}
        for k, v in vars(a).items():
            if k not in covered and v != getattr(_D, k, v):
                raise ValueError(f"--{k.replace('_', '-')}: not part of a JobSpec")
        return cls(**kw)

    def replace(self, **changes) -> "JobSpec":
        return dataclasses.replace(self, **changes)


@dataclass
class JobResult:
    """What a finished job reports (the job CLI's metrics, typed).

    result: the reducer's result; distance/reduce_distance: hops; job_time: submission to
    reducer completion (s); end_to_end_s: including delivery to the ground; bytes: per phase;
    plan: the coordinator's plan; metrics: every field the run reported; results_dir:
    where ``metrics.json``, ``result.json`` and the timeline were written.
    """

    jobid: str
    job_id: int
    result: object
    distance: int
    reduce_distance: int
    job_time: float
    end_to_end_s: float | None
    bytes: dict
    plan: dict
    metrics: dict = field(repr=False)
    results_dir: str | None = None

    @classmethod
    def from_metrics(cls, out: dict, results_root: str | None = None) -> "JobResult":
        if out.get("status") not in (None, "ok"):
            raise JobFailed(f"job {out.get('jobid')}: {out.get('error', out.get('status'))}")
        rdir = _results_dir_of(results_root, out["jobid"]) if results_root else None
        return cls(jobid=out["jobid"], job_id=out["job_id"], result=out.get("result"),
                   distance=out["distance"], reduce_distance=out["reduce_distance"],
                   job_time=out["job_time"], end_to_end_s=out.get("end_to_end_s"),
                   bytes=out.get("bytes", {}), plan=out.get("plan", {}), metrics=out,
                   results_dir=rdir)


def _results_dir_of(root: str, jobid: str) -> str | None:
    """The directory under ``root`` whose ``metrics.json`` is job ``jobid``'s."""
    import glob
    for path in sorted(glob.glob(os.path.join(root, "**", "metrics.json"), recursive=True)):
        try:
            with open(path, encoding="utf-8") as f:
                if json.load(f).get("jobid") == jobid:
                    return os.path.dirname(path)
        except (OSError, ValueError):
            continue
    return None


def run(spec: JobSpec, on="loopback", results: str | None = None,
        timeout_s: float = 600.0) -> JobResult:
    """Run ``spec`` and return its :class:`JobResult` (:class:`JobFailed` when it failed).

    on: ``"loopback"`` (a loopback constellation of ``spec.grid`` started for the job and
        stopped after it; no root needed) or a started
        :class:`node_app.emulated.EmulatedNodes` (the job goes from its ground station 1
        over the emulated network; its daemons must have been started with the same
        ``tasks_modules``).
    results: results root for the loopback run (default: a new temporary directory)."""
    if on == "loopback":
        results = results or tempfile.mkdtemp(prefix="spacecomp-api-")
        cmd = [sys.executable, "-m", "node_app.job", "--loopback", "--json",
               "--results", results, *spec.to_args()]
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout_s)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            err = proc.stderr.strip().splitlines()
            raise JobFailed(err[-1] if err else f"job CLI exited {proc.returncode}")
        return JobResult.from_metrics(json.loads(lines[-1]), results)
    if hasattr(on, "run_job"):
        grid = f"{on.tb.c.planes}x{on.tb.c.sats_per_plane}"
        if spec.grid != grid:
            spec = spec.replace(grid=grid)
        args = [a for a in spec.to_args()]
        try:
            out = on.run_job(args, timeout_s=timeout_s)
        except RuntimeError as e:
            raise JobFailed(str(e)) from None
        return JobResult.from_metrics(out, os.path.join(on.run_dir, "results"))
    raise ValueError(f"on={on!r}: 'loopback' or a started EmulatedNodes")
