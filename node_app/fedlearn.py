"""Federated averaging, pure: the data shards, the model, local training, update
compression and weighted aggregation (no I/O beyond reading a dataset the installed
scikit-learn ships; no network, no root).

The data are scikit-learn's bundled handwritten digits (``load_digits``: 1797 8x8
images, 10 classes, nothing downloaded), pixels scaled to [0, 1].  The model is a
random-features network: a fixed (seeded, never trained, never sent) ReLU layer of
``N_FEATURES = 512`` units, then multinomial logistic (softmax) regression, the trained
part, whose parameters are one float64 vector ``theta`` of ``(512 + 1) * 10 = 5130``
values (weights then biases).  Training stays convex and exact to reproduce; the update
is large enough (20.5 kB as float32) that compressing it is worth measuring.

One round (McMahan et al., FedAvg): every client starts from the global model, runs
``local_epochs`` epochs of minibatch SGD on its shard and sends its *update*
``delta = theta_local - theta_global``, compressed by a codec:

* ``none``  float32 values (the uncompressed baseline: 4 bytes a parameter);
* ``topk``  the ``k = ceil(ratio * n)`` largest-magnitude entries: uint16/uint32 indices
  and float32 values;
* ``randk`` ``k`` entries at indices drawn from a seed both ends know (only the values
  travel);
* ``q8``    8-bit uniform quantisation: float32 offset and step, one byte a parameter.

With error feedback (Seide et al. 2014; Stich et al. 2018) the client adds what earlier
rounds' compression left out (its *residual*) to the update before compressing and keeps
the new remainder: ``acc = delta + residual; sent = C(acc); residual = acc - sent``.

The aggregate is the sample-weighted mean of the decoded updates added to the global
model: ``theta' = theta + sum_i n_i * delta_i / sum_i n_i``.  With codec ``none`` that is a
central FedAvg of the same local updates up to float32 rounding of the deltas.
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CODECS = ("none", "topk", "randk", "q8")
PARTITIONS = ("iid", "label")
N_PIXELS, N_FEATURES, N_CLASSES = 64, 512, 10
N_PARAMS = (N_FEATURES + 1) * N_CLASSES
TEST_FRACTION = 0.3            # of the dataset, held out for evaluation (never trained on)
SPLIT_SEED = 20260117          # the fixed train/test split
FEATURE_SEED = 7               # the fixed random-feature layer
_HEADER = struct.Struct("<4sBII")   # magic, codec number, n params, k entries


@dataclass(frozen=True)
class TrainParams:
    """Local training: ``local_epochs`` passes of minibatch SGD (``batch`` samples,
    learning rate ``lr``, L2 weight decay ``l2``), shuffled from ``seed``."""
    local_epochs: int = 2
    batch: int = 16
    lr: float = 0.5
    l2: float = 1e-4
    seed: int = 1


# --- data -------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test): the bundled digits, pixels in [0, 1], split once
    with a fixed seed (the test part is the held-out set)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    X = (d.data / 16.0).astype(np.float64)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_test = int(round(TEST_FRACTION * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], y[tr], X[te], y[te]


def shard_indices(n_train: int, y_train: np.ndarray, shard: int, shards: int,
                  partition: str = "iid") -> np.ndarray:
    """Training-set indices of client ``shard`` (1-based) of ``shards``: ``iid`` deals the
    (already shuffled) samples round-robin; ``label`` sorts them by class and cuts
    contiguous blocks (with ten clients each sees one to three digits: strongly non-IID)."""
    if not 1 <= shard <= shards:
        raise ValueError(f"shard {shard} outside 1..{shards}")
    if partition == "iid":
        return np.arange(shard - 1, n_train, shards)
    if partition == "label":
        order = np.argsort(y_train, kind="stable")
        lo, hi = n_train * (shard - 1) // shards, n_train * shard // shards
        return np.sort(order[lo:hi])
    raise ValueError(f"partition {partition!r}: choose from {', '.join(PARTITIONS)}")


def shard(shard_no: int, shards: int, partition: str = "iid") -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of client ``shard_no`` (1-based) of ``shards``."""
    X, y, _, _ = dataset()
    idx = shard_indices(len(y), y, shard_no, shards, partition)
    return X[idx], y[idx]


# --- model ------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _feature_layer() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(FEATURE_SEED)
    return (rng.normal(0.0, 1.0 / math.sqrt(N_PIXELS), (N_PIXELS, N_FEATURES)),
            rng.normal(0.0, 0.5, N_FEATURES))


def features(X: np.ndarray) -> np.ndarray:
    """The fixed ReLU random features of pixel rows ``X`` (n x 64, values in [0, 1])."""
    R, c = _feature_layer()
    return np.maximum(X @ R + c, 0.0)


def zeros() -> np.ndarray:
    return np.zeros(N_PARAMS, dtype=np.float64)


def _split(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    W = theta[:N_FEATURES * N_CLASSES].reshape(N_FEATURES, N_CLASSES)
    return W, theta[N_FEATURES * N_CLASSES:]


def predict(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Classes of pixel rows ``X``."""
    W, b = _split(theta)
    return np.argmax(features(X) @ W + b, axis=1)


def accuracy(theta: np.ndarray, X: np.ndarray | None = None, y: np.ndarray | None = None) -> float:
    """Fraction of correct predictions (default: on the held-out test set)."""
    if X is None:
        _, _, X, y = dataset()
    return float(np.mean(predict(theta, X) == y))


def local_train(theta: np.ndarray, X: np.ndarray, y: np.ndarray, tp: TrainParams,
                round_no: int = 0, shard_no: int = 0) -> tuple[np.ndarray, float]:
    """The client's model after local SGD from ``theta`` on pixel rows ``X`` and its mean
    cross-entropy over the last epoch; deterministic for (tp.seed, round_no, shard_no)."""
    theta = theta.astype(np.float64, copy=True)
    X = features(X)
    W, b = _split(theta)      # views: updating them updates theta
    rng = np.random.default_rng([tp.seed, round_no, shard_no])
    onehot = np.eye(N_CLASSES)[y]
    loss = 0.0
    for _ in range(tp.local_epochs):
        order = rng.permutation(len(y))
        loss = 0.0
        for s in range(0, len(y), tp.batch):
            i = order[s:s + tp.batch]
            z = X[i] @ W + b
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            loss += float(-np.log(p[np.arange(len(i)), y[i]] + 1e-12).sum())
            g = (p - onehot[i]) / len(i)
            W -= tp.lr * (X[i].T @ g + tp.l2 * W)
            b -= tp.lr * g.sum(axis=0)
    return theta, loss / max(1, len(y))


# --- compression ------------------------------------------------------------------------------
def k_of(ratio: float, n: int) -> int:
    """Entries kept by top-k / random-k at ``ratio`` of ``n`` (at least one)."""
    return max(1, min(n, math.ceil(ratio * n)))


def randk_indices(n: int, k: int, seed) -> np.ndarray:
    """The ``k`` indices random-k keeps, from a seed sender and receiver share."""
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def compress(acc: np.ndarray, codec: str, ratio: float = 0.01, seed=0) -> tuple[bytes, np.ndarray]:
    """``(wire bytes, what the receiver will decode)`` of vector ``acc``.  The decoded
    vector is what error feedback subtracts: ``residual = acc - decoded``."""
    n = len(acc)
    if codec == "none":
        vals = acc.astype("<f4")
        return _HEADER.pack(b"FAv1", 0, n, n) + vals.tobytes(), vals.astype(np.float64)
    if codec in ("topk", "randk"):
        k = k_of(ratio, n)
        if codec == "topk":
            idx = np.sort(np.argpartition(-np.abs(acc), k - 1)[:k])
        else:
            idx = randk_indices(n, k, seed)
        vals = acc[idx].astype("<f4")
        out = np.zeros(n)
        out[idx] = vals
        head = _HEADER.pack(b"FAv1", CODECS.index(codec), n, k)
        if codec == "randk":
            return head + vals.tobytes(), out
        return head + idx.astype("<u2" if n <= 65536 else "<u4").tobytes() + vals.tobytes(), out
    if codec == "q8":
        lo, hi = float(acc.min()), float(acc.max())
        step = np.float32((hi - lo) / 255.0) if hi > lo else np.float32(1.0)
        lo32 = np.float32(lo)
        codes = np.clip(np.rint((acc - lo32) / step), 0, 255).astype(np.uint8)
        out = lo32.astype(np.float64) + codes.astype(np.float64) * float(step)
        return (_HEADER.pack(b"FAv1", 3, n, n) + struct.pack("<ff", lo32, step)
                + codes.tobytes()), out
    raise ValueError(f"codec {codec!r}: choose from {', '.join(CODECS)}")


def decompress(data: bytes, seed=0, max_params: int = N_PARAMS) -> np.ndarray:
    """The vector ``compress`` sent (ValueError for anything malformed: the bytes come
    from the network)."""
    if len(data) < _HEADER.size:
        raise ValueError("update too short")
    magic, codec_no, n, k = _HEADER.unpack_from(data)
    if magic != b"FAv1" or codec_no >= len(CODECS) or not 0 < n <= max_params or not 0 < k <= n:
        raise ValueError("not a fedavg update")
    body = data[_HEADER.size:]
    codec = CODECS[codec_no]
    if codec == "none":
        if len(body) != 4 * n:
            raise ValueError("update length does not match its header")
        return np.frombuffer(body, "<f4").astype(np.float64)
    if codec in ("topk", "randk"):
        isize = 0 if codec == "randk" else (2 if n <= 65536 else 4)
        if len(body) != k * (isize + 4):
            raise ValueError("update length does not match its header")
        if codec == "randk":
            idx = randk_indices(n, k, seed)
        else:
            idx = np.frombuffer(body[:k * isize], "<u2" if isize == 2 else "<u4").astype(np.int64)
            if np.any(idx >= n) or np.any(np.diff(idx) <= 0):
                raise ValueError("update indices out of range or not increasing")
        out = np.zeros(n)
        out[idx] = np.frombuffer(body[k * isize:], "<f4")
        return out
    if len(body) != 8 + n:  # q8
        raise ValueError("update length does not match its header")
    lo, step = struct.unpack_from("<ff", body)
    if not (math.isfinite(lo) and math.isfinite(step)):
        raise ValueError("update quantiser is not finite")
    return float(lo) + np.frombuffer(body[8:], np.uint8).astype(np.float64) * float(step)


def client_update(theta_global: np.ndarray, X: np.ndarray, y: np.ndarray, tp: TrainParams,
                  codec: str, ratio: float, residual: np.ndarray | None, error_feedback: bool,
                  round_no: int, shard_no: int) -> dict:
    """One client's round: train, add the residual, compress.  Returns ``wire`` (bytes),
    ``delta`` (the exact local update), ``residual`` (the new one, or None without error
    feedback), ``loss``."""
    local, loss = local_train(theta_global, X, y, tp, round_no, shard_no)
    delta = local - theta_global
    acc = delta + residual if (error_feedback and residual is not None) else delta
    wire, sent = compress(acc, codec, ratio, seed=randk_seed(tp.seed, round_no, shard_no))
    return {"wire": wire, "delta": delta, "loss": loss,
            "residual": (acc - sent) if error_feedback and codec != "none" else None}


def randk_seed(seed: int, round_no: int, shard_no: int) -> list[int]:
    return [int(seed), 0x52414E44, int(round_no), int(shard_no)]


def aggregate(theta_global: np.ndarray, updates: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """FedAvg: ``theta + sum n_i delta_i / sum n_i`` over (delta_i, n_i)."""
    total = sum(n for _, n in updates)
    if not updates or total <= 0:
        return theta_global.copy()
    acc = np.zeros_like(theta_global, dtype=np.float64)
    for delta, n in updates:
        acc += n * np.asarray(delta, dtype=np.float64)
    return theta_global + acc / total


# --- the model on the wire (job data, results) -----------------------------------------------
def encode_model(theta: np.ndarray) -> str:
    """Base64 of the float64 little-endian parameters (exact)."""
    return base64.b64encode(np.asarray(theta, "<f8").tobytes()).decode("ascii")


def decode_model(text) -> np.ndarray:
    """The parameters ``encode_model`` wrote (ValueError for anything else)."""
    if not isinstance(text, str) or len(text) > 4 * (8 * N_PARAMS + 2) // 3 + 4:
        raise ValueError("model: expected the base64 of the model's parameters")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ValueError("model: not base64") from None
    if len(raw) != 8 * N_PARAMS:
        raise ValueError(f"model: {len(raw)} bytes, expected {8 * N_PARAMS}")
    theta = np.frombuffer(raw, "<f8").astype(np.float64)
    if not np.all(np.isfinite(theta)):
        raise ValueError("model: parameters are not finite")
    return theta
