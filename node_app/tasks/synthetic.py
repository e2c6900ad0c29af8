"""Synthetic workload for paper-style measurements (the paper's cost model, Eq. 5-7), and generic file
pass-through/digest tasks.

* ``syntheticcollector``: each of the n collectors ships ``data_volume_bytes / n`` bytes
  (the SubmitJob fixed part's volume V) as one streamed file.
* ``syntheticmapper``: reads its input and emits ``input / map_reduction_factor`` bytes
  (F_M), after an emulated processing time of ``map_processing_factor * input / rate``.
* ``syntheticreducer``: reads every input, emits a summary of ``inputs / F_R`` bytes
  worth of output (the bytes a reducer would ship to the LOS), after
  ``reduce_processing_factor * input / rate`` of emulated processing.
  ``rate`` is ``job_data.compute_bytes_per_s`` (default 0: no emulated processing).
* ``passmapper``: forwards every input file unchanged; ``digestreducer``: size and
  SHA-256 of every file it receives (to check a large file crossed intact).

Content is a deterministic pattern generated on the fly (:class:`PatternStream`), so a
gigabyte job never holds more than one segment in memory.
"""

from __future__ import annotations

import hashlib
import io
import random
import time

READ_BYTES = 256 * 1024
MAX_VOLUME_BYTES = 16 * 1024 ** 3   # V of one synthetic job
MAX_EMULATED_S = 3600.0             # emulated processing time of one phase


def check_params(job_data: dict, data_volume_bytes: int = 0, data_dir: str = "") -> None:
    """Bounds (BadTaskInput): V <= 16 GiB; ``compute_bytes_per_s`` 0 (none) or a rate
    at which processing all of V takes at most an hour."""
    from node_app.tasks import BadTaskInput, _number
    if data_volume_bytes > MAX_VOLUME_BYTES:
        raise BadTaskInput(f"data_volume_bytes {data_volume_bytes} exceeds the synthetic "
                           f"workload's limit of {MAX_VOLUME_BYTES}")
    _number(job_data or {}, "compute_bytes_per_s", 0, 1e15)
    rate = float((job_data or {}).get("compute_bytes_per_s", 0) or 0)
    if rate > 0 and data_volume_bytes / rate > MAX_EMULATED_S:
        raise BadTaskInput(f"job_data.compute_bytes_per_s {rate:g}: processing "
                           f"{data_volume_bytes} bytes would take over {MAX_EMULATED_S:g} s")


class PatternStream(io.RawIOBase):
    """``size`` bytes of a repeating pseudo-random 64 KiB block (seeded), generated as read."""

    def __init__(self, size: int, seed: int = 0):
        self.size = int(size)
        self.pos = 0
        self.block = random.Random(seed).randbytes(65536)

    def readable(self):
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.size - self.pos)
        view = memoryview(buf)
        done = 0
        while done < n:
            off = (self.pos + done) % len(self.block)
            k = min(n - done, len(self.block) - off)
            view[done:done + k] = self.block[off:off + k]
            done += k
        self.pos += n
        return n


def drain(stream, digest=None) -> int:
    """Read a stream to its end in segments; returns the byte count."""
    total = 0
    while True:
        seg = stream.read(READ_BYTES)
        if not seg:
            return total
        total += len(seg)
        if digest is not None:
            digest.update(seg)


def _emulate(factor: float, nbytes: int, job_data: dict) -> None:
    rate = float((job_data or {}).get("compute_bytes_per_s", 0) or 0)
    if rate > 0 and factor > 0:
        time.sleep(factor * nbytes / rate)


class SyntheticCollector:
    check_params = staticmethod(check_params)

    def collect(self, payload):
        md = payload["meta_data"]
        volume, n, i = int(md.get("data_volume_bytes", 0)), md["data_size"], md["data_id"]
        share = volume * i // n - volume * (i - 1) // n
        yield {"value": {"bytes": share, "partition": i},
               "_COMP_FILE": {"name": f"synthetic-{i}.bin", "stream": PatternStream(share, seed=i)}}


class SyntheticMapper:
    check_params = staticmethod(check_params)

    def run_map(self, payload):
        md = payload["meta_data"]
        factor = float(md.get("map_reduction_factor", 1.0)) or 1.0
        for name, stream in payload["files"].items():
            nbytes = drain(stream)
            _emulate(float(md.get("map_processing_factor", 0)), nbytes, md.get("job_data"))
            out = int(nbytes / factor)
            yield {"value": {"bytes_in": nbytes, "bytes_out": out},
                   "_COMP_FILE": {"name": f"mapped-{name}", "stream": PatternStream(out, seed=7)}}


class SyntheticReducer:
    check_params = staticmethod(check_params)

    def reduce(self, payloads):
        md = payloads[0]["meta_data"] if payloads and "meta_data" in payloads[0] else {}
        total = sum(drain(s) for p in payloads for s in p["files"].values())
        _emulate(float(md.get("reduce_processing_factor", 0)), total, md.get("job_data"))
        factor = float(md.get("reduce_reduction_factor", 5.0)) or 1.0
        return {"bytes_in": total, "bytes_out": int(total / factor), "outputs": len(payloads)}


class PassMapper:
    def run_map(self, payload):
        for name, stream in payload["files"].items():
            yield {"value": {"forwarded": name}, "_COMP_FILE": {"name": name, "stream": stream}}


class DigestReducer:
    def reduce(self, payloads):
        out = {}
        for p in payloads:
            for name, stream in p["files"].items():
                h = hashlib.sha256()
                out[name] = {"bytes": drain(stream, h), "sha256": h.hexdigest()}
        return out
