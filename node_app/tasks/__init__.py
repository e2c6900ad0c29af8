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
readable binary stream), ``end_collect``, ``collected_index``, ``collector``; each payload
given to reduce has ``data`` (one map output), ``files``, ``end_map``, ``mapped_index``,
``mapper``.
"""

from __future__ import annotations

import importlib

KINDS = ("collect", "map", "reduce")
METHODS = {"collect": "collect", "map": "run_map", "reduce": "reduce"}

_BUILTIN: dict[str, dict[str, str]] = {
    "collect": {
        "doccollector": "node_app.tasks.wordcount:DocCollector",
        "thermalcollector": "node_app.tasks.eo:ThermalCollector",
        "syntheticcollector": "node_app.tasks.synthetic:SyntheticCollector",
    },
    "map": {
        "wordcountmapper": "node_app.tasks.wordcount:WordCountMapper",
        "anomalymapper": "node_app.tasks.eo:AnomalyMapper",
        "syntheticmapper": "node_app.tasks.synthetic:SyntheticMapper",
        "passmapper": "node_app.tasks.synthetic:PassMapper",
    },
    "reduce": {
        "sumreducer": "node_app.tasks.wordcount:SumReducer",
        "maskreducer": "node_app.tasks.eo:MaskReducer",
        "syntheticreducer": "node_app.tasks.synthetic:SyntheticReducer",
        "digestreducer": "node_app.tasks.synthetic:DigestReducer",
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
