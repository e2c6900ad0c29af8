"""The task registry: collect, map and reduce tasks by name.

A task name that arrives over the network only ever selects an entry of this registry;
nothing is imported from a name.  Built-in tasks are listed below as ``module:Class``
(modules of this package, imported on first use so that a daemon that never runs, say,
the Earth-observation workload never loads numpy).  User code running in the same
process adds its own with :func:`register`.

The programming model: a collect task has ``collect(payload)``, a
generator of records; a map task ``run_map(payload)``, a generator of outputs; a reduce
task ``reduce(payloads)``, returning the result.  Records, outputs and results are JSON
values, or ``{"value": v, "_COMP_FILE": {"name": fname, "stream": binary_stream}}``
(``_COMP_FILE_`` is accepted too) to ship a binary file alongside, streamed in segments.

Payload keys: ``meta_data`` (``data_id``, ``data_size``, ``job_start``, ``jobid``,
``max_collect``, ``job_data``, and the SubmitJob fields), ``scratch_dir`` (a node-local
directory the task may write temporary files to); for run_map ``data`` (the list of
records of one DataChunk, as in the reference implementation), ``files`` (name ->
readable binary stream), ``end_collect``, ``collected_index``, ``collector``, ``node`` (the
mapper's own satellite, [sat, orb]: the key for state a task keeps across jobs); each payload
given to reduce has ``data`` (one map output), ``files``, ``end_map``, ``mapped_index``,
``mapper``.
"""

from __future__ import annotations

import importlib
import json
import os

DEFAULT_DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
MAX_JOB_DATA_BYTES = 64 * 1024       # job_data travels in every Assign
MAX_COLLECT_RECORDS = 100_000        # records per DataChunk

KINDS = ("collect", "map", "reduce")
METHODS = {"collect": "collect", "map": "run_map", "reduce": "reduce"}

_BUILTIN: dict[str, dict[str, str]] = {
    "collect": {
        "doccollector": "node_app.tasks.wordcount:DocCollector",
        "thermalcollector": "node_app.tasks.eo:ThermalCollector",
        "syntheticcollector": "node_app.tasks.synthetic:SyntheticCollector",
        "fedcollector": "node_app.tasks.fedavg:FedCollector",
    },
    "map": {
        "wordcountmapper": "node_app.tasks.wordcount:WordCountMapper",
        "anomalymapper": "node_app.tasks.eo:AnomalyMapper",
        "syntheticmapper": "node_app.tasks.synthetic:SyntheticMapper",
        "passmapper": "node_app.tasks.synthetic:PassMapper",
        "fedmapper": "node_app.tasks.fedavg:FedMapper",
    },
    "reduce": {
        "sumreducer": "node_app.tasks.wordcount:SumReducer",
        "maskreducer": "node_app.tasks.eo:MaskReducer",
        "syntheticreducer": "node_app.tasks.synthetic:SyntheticReducer",
        "digestreducer": "node_app.tasks.synthetic:DigestReducer",
        "fedavgreducer": "node_app.tasks.fedavg:FedAvgReducer",
    },
}
_registered: dict[str, dict[str, object]] = {k: {} for k in KINDS}
_loaded: dict[tuple[str, str], object] = {}


class UnknownTask(KeyError):
    """A task name that is not in the registry."""

    def __str__(self):
        return self.args[0]


def names(kind: str) -> list[str]:
    return sorted({*_BUILTIN[kind], *_registered[kind]})


def known(kind: str, name: str) -> bool:
    return isinstance(name, str) and (name in _BUILTIN[kind] or name in _registered[kind])


def register(kind: str, name: str, task: object) -> None:
    """Add a task object (with the method for ``kind``) under ``name``."""
    if kind not in KINDS:
        raise ValueError(f"task kind {kind!r}: choose from {', '.join(KINDS)}")
    if not callable(getattr(task, METHODS[kind], None)):
        raise TypeError(f"{kind} task {name!r} has no {METHODS[kind]}() method")
    _registered[kind][name] = task


TASKS_MODULE_ENV = "SPACECOMP_TASKS_MODULE"  # modules every process of a run loads


def load_module(name: str):
    """Import a user's tasks module (``pkg.mod`` or a ``.py`` file path); it registers its
    tasks with :func:`register` when imported.  ValueError (one line) when it cannot be
    imported.  ``--tasks-module`` of the daemon, the loopback launcher and the job CLI."""
    import importlib.util
    import sys
    try:
        if name.endswith(".py"):
            path = os.path.abspath(name)
            mod_name = "spacecomp_user_tasks_" + os.path.splitext(os.path.basename(path))[0]
            if mod_name in sys.modules:
                return sys.modules[mod_name]
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or not os.path.isfile(path):
                raise ImportError(f"no such file {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001  user code: any error is the user's, one line
        sys.modules.pop("spacecomp_user_tasks_" + os.path.basename(name)[:-3], None)
        raise ValueError(f"--tasks-module {name}: cannot import it ({type(e).__name__}: "
                         f"{e})") from None


def use_modules(names) -> list[str]:
    """Load ``names`` here and hand them to every process started from here (the env
    variable ``SPACECOMP_TASKS_MODULE``, file paths made absolute).  Returns what is set."""
    names = [n for n in names if n]
    for n in names:
        load_module(n)
    value = [os.path.abspath(n) if n.endswith(".py") else n for n in names]
    if value:
        os.environ[TASKS_MODULE_ENV] = ",".join(value)
    return value


def load_from_env() -> None:
    """Load the modules named by ``SPACECOMP_TASKS_MODULE`` (a daemon started by a run)."""
    for n in os.environ.get(TASKS_MODULE_ENV, "").split(","):
        if n:
            load_module(n)


def get(kind: str, name: str) -> object:
    """The task object registered as ``name`` (raises UnknownTask)."""
    if name in _registered.get(kind, {}):
        return _registered[kind][name]
    target = _BUILTIN.get(kind, {}).get(name) if isinstance(name, str) else None
    if target is None:
        raise UnknownTask(f"unknown {kind} task {name!r} (known: {', '.join(names(kind))})")
    if (kind, name) not in _loaded:
        module, cls = target.split(":")
        _loaded[(kind, name)] = getattr(importlib.import_module(module), cls)()
    return _loaded[(kind, name)]


def file_of(item) -> tuple[object, str | None, object | None]:
    """Split a record/output/result into (value, file name, stream); plain values have no
    file."""
    if isinstance(item, dict):
        spec = item.get("_COMP_FILE", item.get("_COMP_FILE_"))
        if isinstance(spec, dict) and "stream" in spec:
            return item.get("value"), str(spec["name"]), spec["stream"]
    return item, None, None


# --- files and parameter bounds -------------------------------------------------------------
class BadTaskInput(ValueError):
    """Job data or a parameter a task refuses (one line, says which and why)."""


def resolve_data_file(name, data_dir: str = DEFAULT_DATA_DIR) -> str:
    """The path of job data file ``name`` inside ``data_dir``.

    Names are relative to the data directory (the reference's ``data/`` prefix names the
    directory itself: ``data/sample.txt`` is ``<data_dir>/sample.txt``).  Absolute names,
    ``..`` components and names that resolve outside the directory (symbolic links) are
    refused with :class:`BadTaskInput`."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise BadTaskInput(f"job data file name {name!r}: expected a file name")
    if os.path.isabs(name):
        raise BadTaskInput(f"job data file {name!r}: absolute paths are refused; name a file "
                           f"inside the data directory")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise BadTaskInput(f"job data file {name!r}: '..' is refused; name a file inside the "
                           f"data directory")
    if parts[0] == "data" and len(parts) > 1:
        parts = parts[1:]
    root = os.path.realpath(data_dir)
    path = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, path]) != root:
        raise BadTaskInput(f"job data file {name!r} resolves outside the data directory")
    return path


def _number(params: dict, key: str, lo: float, hi: float, integer: bool = False):
    v = params.get(key)
    if v is None:
        return
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not lo <= v <= hi:
        kind = "an integer" if integer else "a number"
        raise BadTaskInput(f"job_data.{key} = {v!r}: expected {kind} in [{lo:g}, {hi:g}]")


def check_job(tasks: dict, job_data, *, data_volume_bytes: int = 0, max_collect: int = 1,
              data_dir: str = DEFAULT_DATA_DIR) -> None:
    """Bounds every shipped task's parameters before a job is admitted (BadTaskInput).

    A task object may add its own check as ``check_params(job_data, data_volume_bytes)``."""
    try:
        size = len(json.dumps(job_data))
    except (TypeError, ValueError):
        raise BadTaskInput("job_data is not JSON") from None
    if size > MAX_JOB_DATA_BYTES:
        raise BadTaskInput(f"job_data of {size} bytes exceeds {MAX_JOB_DATA_BYTES}")
    if job_data is not None and not isinstance(job_data, dict):
        raise BadTaskInput(f"job_data must be a JSON object, got {type(job_data).__name__}")
    if isinstance(max_collect, bool) or not isinstance(max_collect, int) or not (
            1 <= max_collect <= MAX_COLLECT_RECORDS):
        raise BadTaskInput(f"max_collect {max_collect!r}: expected 1..{MAX_COLLECT_RECORDS} "
                           f"records per chunk")
    for kind in KINDS:
        task = get(kind, tasks.get(kind))
        check = getattr(task, "check_params", None)
        if check is not None:
            check(job_data or {}, data_volume_bytes, data_dir)
