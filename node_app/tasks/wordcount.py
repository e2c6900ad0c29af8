"""Word count: document collector -> word-count mapper -> sum reducer (the reference
workload), exact.

The collector of partition ``data_id`` (1..data_size) owns the byte range
``[size*(i-1)//n, size*i//n)`` of the file and emits exactly the lines that *start* in its
range, so every line is counted once whatever the chunk borders.  Words are
``str.split()`` tokens (runs of non-whitespace), so the total equals
``collections.Counter(text.split())`` over the whole file.
"""

from __future__ import annotations

import os
from collections import Counter

from node_app.tasks import DEFAULT_DATA_DIR, resolve_data_file  # noqa: F401 (re-exported)

DATA_DIR = DEFAULT_DATA_DIR
DEFAULT_FILE = "data/sample.txt"


def byte_range(size: int, data_id: int, data_size: int) -> tuple[int, int]:
    """Partition ``data_id`` (1-based) of ``data_size`` over ``size`` bytes."""
    return size * (data_id - 1) // data_size, size * data_id // data_size


def exact_word_count(path: str) -> dict[str, int]:
    """The straightforward count of the whole file (what a job must reproduce)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return dict(Counter(f.read().split()))


class DocCollector:
    """Yields the lines (str, newline stripped) of its partition of ``job_data.filename``
    (a file inside the node's data directory, ``payload["data_dir"]``)."""

    @staticmethod
    def check_params(job_data: dict, data_volume_bytes: int, data_dir: str) -> None:
        resolve_data_file(job_data.get("filename", DEFAULT_FILE), data_dir)

    def collect(self, payload):
        md = payload["meta_data"]
        path = resolve_data_file((md.get("job_data") or {}).get("filename", DEFAULT_FILE),
                                 payload.get("data_dir", DEFAULT_DATA_DIR))
        start, end = byte_range(os.path.getsize(path), md["data_id"], md["data_size"])
        with open(path, "rb") as f:
            if start > 0:
                f.seek(start - 1)
                if f.read(1) != b"\n":
                    f.readline()  # this line started before `start`: the previous partition's
            pos = f.tell()
            while pos < end:
                line = f.readline()
                if not line:
                    break
                pos += len(line)
                yield line.rstrip(b"\n").decode("utf-8", errors="replace")


class WordCountMapper:
    """One ``{word: count}`` per chunk of lines."""

    def run_map(self, payload):
        counts = Counter()
        for line in payload["data"]:
            counts.update(line.split())
        yield dict(counts)


class SumReducer:
    """Sums the per-chunk counts."""

    def reduce(self, payloads):
        total = Counter()
        for p in payloads:
            total.update(p["data"])
        return dict(total)
