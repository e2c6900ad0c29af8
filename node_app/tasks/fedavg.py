"""Federated averaging: one job is one FedAvg round (node_app.fedlearn holds the maths).

* ``fedcollector``: collector ``data_id`` of ``data_size`` ships its local shard of the
  bundled digits (client ``data_id``) as one file of uint8 rows ``[label, 64 pixels 0..16]``.
* ``fedmapper``: trains the global model of the job data on the shard it received
  (``local_epochs`` of minibatch SGD), compresses its update with ``codec`` (error
  feedback from the residual it keeps, see below) and ships it as ``update-<shard>.bin``.
* ``fedavgreducer``: decodes every update, aggregates the sample-weighted mean (FedAvg)
  and returns the new global model (base64 float64, ``model``) with its accuracy on the
  held-out test split and what the round shipped.

Several rounds are several jobs: the ground passes each round's returned ``model`` in the
next round's ``job_data`` (absent: the zero model).

Error feedback: a mapper keeps each client's residual in memory, keyed by (its own
satellite, ``federation``, shard), bounded to :data:`MAX_RESIDUALS` entries (least
recently used dropped).  A round that is run again (a replay after a fault) starts from
the residual the round began with, so it is not applied twice.  When a shard's mapper
changes between rounds, or a daemon restarts, the residual is not found: the update is
compressed without it and the output says ``"residual": "missing"`` (counted by the
experiment).

job_data keys (defaults): ``federation`` "default" (1-64 of ``[A-Za-z0-9_.-]``), ``round``
0, ``model`` (absent: zeros), ``codec`` "none" (none, topk, randk, q8), ``ratio`` 0.01
(top-k/random-k fraction kept), ``error_feedback`` true, ``local_epochs`` 5, ``batch`` 16,
``lr`` 0.5, ``l2`` 1e-4, ``seed`` 1, ``partition`` "iid" (iid, label).
"""

from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict

DEFAULTS = {"federation": "default", "round": 0, "codec": "none", "ratio": 0.01,
            "error_feedback": True, "local_epochs": 5, "batch": 16, "lr": 0.5, "l2": 1e-4,
            "seed": 1, "partition": "iid"}
MAX_RESIDUALS = 256          # per daemon process: (satellite, federation, shard) entries
MAX_ROUND = 1_000_000
MAX_SHARD_ROWS = 4096        # the digits have 1797 samples
ROW_BYTES = 65               # label + 8x8 pixels
_FEDERATION = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_params(job_data: dict | None, data_volume_bytes: int = 0, data_dir: str = "") -> None:
    """Bounds (BadTaskInput): codec and partition known, ratio in (0, 1], local_epochs
    1..100, batch 1..4096, lr in (0, 10], l2 in [0, 1], round 0..1e6, a federation name,
    a model of the right size with finite parameters."""
    from node_app import fedlearn as F
    from node_app.tasks import BadTaskInput, _number
    jd = job_data or {}
    for key, choices in (("codec", F.CODECS), ("partition", F.PARTITIONS)):
        if key in jd and jd[key] not in choices:
            raise BadTaskInput(f"job_data.{key} = {jd[key]!r}: choose from {', '.join(choices)}")
    _number(jd, "ratio", 1e-6, 1.0)
    if jd.get("ratio") == 0:
        raise BadTaskInput("job_data.ratio must be above 0")
    _number(jd, "local_epochs", 1, 100, integer=True)
    _number(jd, "batch", 1, 4096, integer=True)
    _number(jd, "lr", 1e-9, 10.0)
    _number(jd, "l2", 0.0, 1.0)
    _number(jd, "round", 0, MAX_ROUND, integer=True)
    _number(jd, "seed", 0, 2 ** 32 - 1, integer=True)
    if "error_feedback" in jd and not isinstance(jd["error_feedback"], bool):
        raise BadTaskInput("job_data.error_feedback: expected true or false")
    fed = jd.get("federation", DEFAULTS["federation"])
    if not isinstance(fed, str) or not _FEDERATION.fullmatch(fed):
        raise BadTaskInput("job_data.federation: expected 1-64 characters of A-Z a-z 0-9 _ . -")
    if jd.get("model") is not None:
        try:
            F.decode_model(jd["model"])
        except ValueError as e:
            raise BadTaskInput(f"job_data.{e}") from None


def params(job_data: dict | None) -> dict:
    """The round's parameters with defaults (checked: BadTaskInput)."""
    check_params(job_data)
    return {**DEFAULTS, **{k: v for k, v in (job_data or {}).items() if k in DEFAULTS}}


def global_model(job_data: dict | None):
    from node_app import fedlearn as F
    model = (job_data or {}).get("model")
    return F.zeros() if model is None else F.decode_model(model)


def train_params(p: dict):
    from node_app.fedlearn import TrainParams
    return TrainParams(local_epochs=p["local_epochs"], batch=p["batch"], lr=float(p["lr"]),
                       l2=float(p["l2"]), seed=p["seed"])


def encode_shard(X, y) -> bytes:
    """uint8 rows ``[label, pixels*16]`` (the digits' pixels are integers 0..16)."""
    import numpy as np
    rows = np.concatenate([y.reshape(-1, 1), np.rint(X * 16.0)], axis=1)
    return rows.astype(np.uint8).tobytes()


def decode_shard(data: bytes):
    """(X in [0, 1], y) of a shard file (ValueError for anything malformed)."""
    import numpy as np
    if not data or len(data) % ROW_BYTES or len(data) // ROW_BYTES > MAX_SHARD_ROWS:
        raise ValueError(f"shard of {len(data)} bytes: expected 1..{MAX_SHARD_ROWS} rows of "
                         f"{ROW_BYTES} bytes")
    rows = np.frombuffer(data, np.uint8).reshape(-1, ROW_BYTES)
    y, X = rows[:, 0].astype(np.int64), rows[:, 1:].astype(np.float64)
    if y.max() >= 10 or X.max() > 16:
        raise ValueError("shard rows out of range (label 0..9, pixels 0..16)")
    return X / 16.0, y


def _int_in(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


class ResidualStore:
    """Error-feedback residuals, bounded (LRU), thread-safe.  An entry is
    ``(round, residual the round started from, residual after it)``."""

    def __init__(self, capacity: int = MAX_RESIDUALS):
        self.capacity = capacity
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def start(self, key, round_no: int):
        """The residual round ``round_no`` starts from and whether it was found
        (a replayed round gets the same one)."""
        with self._lock:
            entry = self._d.get(key)
            if entry is None:
                return None, False
            self._d.move_to_end(key)
            r, before, after = entry
            if r == round_no:
                return before, True
            return (after, True) if r < round_no else (None, False)

    def finish(self, key, round_no: int, before, after) -> None:
        with self._lock:
            self._d[key] = (round_no, before, after)
            self._d.move_to_end(key)
            while len(self._d) > self.capacity:
                self._d.popitem(last=False)

    def __len__(self):
        return len(self._d)


class FedCollector:
    check_params = staticmethod(check_params)

    def collect(self, payload):
        from node_app import fedlearn as F
        md = payload["meta_data"]
        p = params(md.get("job_data"))
        X, y = F.shard(md["data_id"], md["data_size"], p["partition"])
        yield {"value": {"shard": md["data_id"], "samples": int(len(y))},
               "_COMP_FILE": {"name": f"shard-{md['data_id']}.bin",
                              "stream": io.BytesIO(encode_shard(X, y))}}


class FedMapper:
    check_params = staticmethod(check_params)

    def __init__(self):
        self.residuals = ResidualStore()

    def run_map(self, payload):
        from node_app import fedlearn as F
        p = params(payload["meta_data"].get("job_data"))
        theta = global_model(payload["meta_data"].get("job_data"))
        tp = train_params(p)
        ef = p["error_feedback"] and p["codec"] != "none"
        for record in payload["data"]:
            shard_no = int(record["shard"])
            X, y = decode_shard(payload["files"][f"shard-{shard_no}.bin"].read())
            key = (tuple(payload.get("node") or ()), p["federation"], shard_no)
            residual, found = self.residuals.start(key, p["round"]) if ef else (None, False)
            up = F.client_update(theta, X, y, tp, p["codec"], float(p["ratio"]), residual, ef,
                                 p["round"], shard_no)
            if ef:
                self.residuals.finish(key, p["round"], residual, up["residual"])
            state = "none" if not ef else ("used" if found else
                                           ("new" if p["round"] == 0 else "missing"))
            yield {"value": {"shard": shard_no, "samples": int(len(y)), "codec": p["codec"],
                             "round": p["round"], "loss": up["loss"], "residual": state,
                             "update_bytes": len(up["wire"])},
                   "_COMP_FILE": {"name": f"update-{shard_no}.bin",
                                  "stream": io.BytesIO(up["wire"])}}


class FedAvgReducer:
    check_params = staticmethod(check_params)

    def reduce(self, payloads):
        from node_app import fedlearn as F
        md = payloads[0]["meta_data"] if payloads else {}
        p = params(md.get("job_data"))
        theta = global_model(md.get("job_data"))
        updates: dict[int, tuple] = {}
        for pl in payloads:
            d = pl["data"]
            if not isinstance(d, dict) or "shard" not in d:
                continue
            shard_no, samples, loss = d["shard"], d.get("samples"), d.get("loss")
            if not (_int_in(shard_no, 1, MAX_SHARD_ROWS) and _int_in(samples, 1, MAX_SHARD_ROWS)
                    and isinstance(loss, (int, float)) and not isinstance(loss, bool)):
                raise ValueError(f"update of shard {shard_no!r}: shard, samples or loss out of range")
            wire = pl["files"][f"update-{shard_no}.bin"].read()
            delta = F.decompress(wire, seed=F.randk_seed(p["seed"], p["round"], shard_no))
            updates[shard_no] = (delta, samples, len(wire), d)
        new = F.aggregate(theta, [(u[0], u[1]) for u in updates.values()])
        infos = [u[3] for u in updates.values()]
        return {"model": F.encode_model(new), "round": p["round"], "codec": p["codec"],
                "federation": p["federation"], "clients": sorted(updates),
                "samples": sum(u[1] for u in updates.values()),
                "update_bytes": sum(u[2] for u in updates.values()),
                "mean_loss": (sum(i["loss"] * i["samples"] for i in infos)
                              / max(1, sum(i["samples"] for i in infos))),
                "residuals": {s: sum(1 for i in infos if i.get("residual") == s)
                              for s in ("used", "new", "missing", "none")},
                "test_accuracy": F.accuracy(new)}
