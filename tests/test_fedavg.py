"""Federated averaging: compression codecs, error feedback, FedAvg aggregation (pure), the
workload's tasks, a real round through a loopback constellation, the experiment on the
loopback, and one short run on the emulated network (root)."""

import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments import fedavg_report as R
from node_app import fedlearn as F
from node_app import ground
from node_app import tasks as T
from node_app.tasks import fedavg as FT

ROOT = Path(__file__).resolve().parent.parent
FEDAVG = {"collect": "fedcollector", "map": "fedmapper", "reduce": "fedavgreducer"}
vectors = st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=1,
                   max_size=F.N_PARAMS).map(np.array)


# --- codecs -----------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(vectors, st.sampled_from(F.CODECS), st.floats(0.001, 1.0))
def test_every_codec_decodes_to_what_the_sender_accounts_for(v, codec, ratio):
    wire, sent = F.compress(v, codec, ratio, seed=[1, 2])
    got = F.decompress(wire, seed=[1, 2])
    assert np.array_equal(got, sent)
    if codec in ("topk", "randk"):
        assert np.count_nonzero(sent) <= F.k_of(ratio, len(v))


def test_codec_sizes_are_what_they_promise():
    v = np.random.default_rng(0).normal(size=F.N_PARAMS)
    n, k, head = F.N_PARAMS, F.k_of(0.01, F.N_PARAMS), 13
    assert len(F.compress(v, "none")[0]) == head + 4 * n
    assert len(F.compress(v, "topk", 0.01)[0]) == head + 6 * k     # uint16 index + float32
    assert len(F.compress(v, "randk", 0.01, seed=1)[0]) == head + 4 * k   # values only
    assert len(F.compress(v, "q8")[0]) == head + 8 + n


def test_topk_keeps_the_largest_magnitudes_and_q8_error_is_half_a_step():
    v = np.random.default_rng(1).normal(size=1000)
    _, sent = F.compress(v, "topk", 0.01)
    kept = np.flatnonzero(sent)
    assert set(kept) == set(np.argsort(-np.abs(v))[:10])
    _, q = F.compress(v, "q8")
    step = (v.max() - v.min()) / 255
    assert np.max(np.abs(q - v)) <= step / 2 + 1e-6


@pytest.mark.parametrize("bad", [b"", b"XXXX" + bytes(9), F.compress(np.ones(10), "topk", 0.5)[0][:-1],
                                 F.compress(np.ones(10), "none")[0] + b"\0"])
def test_malformed_updates_are_refused(bad):
    with pytest.raises(ValueError):
        F.decompress(bad)


def test_topk_indices_must_be_in_range_and_increasing():
    wire = bytearray(F.compress(np.arange(10.0), "topk", 0.2)[0])
    wire[13:15] = (500).to_bytes(2, "little")    # first index beyond n
    with pytest.raises(ValueError):
        F.decompress(bytes(wire))


def test_error_feedback_sends_everything_eventually():
    """What error feedback keeps back is sent later: sent + residual == sum of updates."""
    rng = np.random.default_rng(2)
    residual, total_sent, total = None, np.zeros(200), np.zeros(200)
    for _ in range(30):
        delta = rng.normal(size=200)
        total += delta
        acc = delta + (residual if residual is not None else 0)
        _, sent = F.compress(acc, "topk", 0.02)
        residual = acc - sent
        total_sent += sent
    assert np.allclose(total_sent + residual, total)


# --- aggregation ------------------------------------------------------------------------------
def test_aggregate_is_the_sample_weighted_mean():
    g = np.ones(4)
    new = F.aggregate(g, [(np.array([1.0, 0, 0, 0]), 1), (np.array([0, 3.0, 0, 0]), 3)])
    assert np.allclose(new, [1.25, 3.25, 1, 1])
    assert np.array_equal(F.aggregate(g, []), g)


def test_uncompressed_round_equals_central_fedavg_of_the_same_local_updates():
    tp = F.TrainParams(local_epochs=1)
    theta = F.zeros()
    deltas, wires = [], []
    for i in range(1, 5):
        X, y = F.shard(i, 4)
        up = F.client_update(theta, X, y, tp, "none", 1.0, None, True, 0, i)
        deltas.append((up["delta"], len(y)))
        wires.append((F.decompress(up["wire"]), len(y)))
        assert up["residual"] is None
    central = F.aggregate(theta, deltas)
    assert np.allclose(F.aggregate(theta, wires), central, rtol=1e-6, atol=1e-7)
    assert F.accuracy(central) > 0.5


def test_shards_partition_the_training_set():
    X, y, Xt, yt = F.dataset()
    for part in F.PARTITIONS:
        idx = np.concatenate([F.shard_indices(len(y), y, i, 7, part) for i in range(1, 8)])
        assert sorted(idx) == list(range(len(y)))
    assert len(Xt) == round(F.TEST_FRACTION * (len(X) + len(Xt)))
    labels = [len(set(y[F.shard_indices(len(y), y, i, 10, "label")])) for i in range(1, 11)]
    assert max(labels) <= 3


def test_model_encoding_is_exact_and_bounded():
    theta = np.random.default_rng(3).normal(size=F.N_PARAMS)
    assert np.array_equal(F.decode_model(F.encode_model(theta)), theta)
    for bad in ("", "@@@", F.encode_model(theta[:-1]), 5, F.encode_model(np.full(F.N_PARAMS, np.inf))):
        with pytest.raises(ValueError):
            F.decode_model(bad)


# --- the tasks, in process --------------------------------------------------------------------
@pytest.mark.parametrize("jd, needle", [({"codec": "zip"}, "codec"), ({"ratio": 0}, "ratio"),
                                        ({"ratio": 2}, "ratio"), ({"local_epochs": 0}, "local_epochs"),
                                        ({"federation": "../x"}, "federation"),
                                        ({"model": "AAAA"}, "model"), ({"error_feedback": 1}, "error_feedback"),
                                        ({"partition": "dirichlet"}, "partition")])
def test_bad_job_data_is_one_line_naming_the_key(jd, needle):
    with pytest.raises(T.BadTaskInput, match=needle):
        T.check_job(FEDAVG, jd)


def _round_in_process(mapper, jd, node=(1, 1), shards=3):
    outs = []
    for i in range(1, shards + 1):
        rec = next(FT.FedCollector().collect({"meta_data": {"data_id": i, "data_size": shards,
                                                            "job_data": jd}}))
        files = {rec["_COMP_FILE"]["name"]: rec["_COMP_FILE"]["stream"]}
        out = next(mapper.run_map({"meta_data": {"job_data": jd}, "data": [rec["value"]],
                                   "files": files, "node": list(node)}))
        outs.append(out)
    return FT.FedAvgReducer().reduce([
        {"meta_data": {"job_data": jd}, "data": o["value"],
         "files": {o["_COMP_FILE"]["name"]: o["_COMP_FILE"]["stream"]}} for o in outs]), outs


def test_residuals_persist_per_federation_and_a_replayed_round_is_not_applied_twice():
    mapper = FT.FedMapper()
    jd = {"codec": "topk", "federation": "a", "local_epochs": 1}
    r0, outs = _round_in_process(mapper, jd)
    assert r0["residuals"]["new"] == 3
    jd1 = {**jd, "round": 1, "model": r0["model"]}
    r1, _ = _round_in_process(mapper, jd1)
    assert r1["residuals"]["used"] == 3
    again, _ = _round_in_process(mapper, jd1)            # round 1 replayed
    assert again["model"] == r1["model"]
    other, _ = _round_in_process(mapper, {**jd1, "federation": "b"})   # another federation
    assert other["residuals"]["missing"] == 3
    moved, _ = _round_in_process(mapper, {**jd1, "round": 2}, node=(2, 2))  # another mapper
    assert moved["residuals"]["missing"] == 3


@pytest.mark.parametrize("field, value", [("shard", "1"), ("samples", 0), ("samples", 10 ** 9),
                                          ("loss", "x"), ("shard", True)])
def test_the_reducer_refuses_malformed_update_records(field, value):
    jd = {"codec": "none", "local_epochs": 1}
    _, outs = _round_in_process(FT.FedMapper(), jd, shards=2)
    outs[0]["value"][field] = value
    with pytest.raises(ValueError):
        FT.FedAvgReducer().reduce([
            {"meta_data": {"job_data": jd}, "data": o["value"],
             "files": {o["_COMP_FILE"]["name"]: io.BytesIO(o["_COMP_FILE"]["stream"].getvalue())}}
            for o in outs])


def test_residual_store_is_bounded():
    store = FT.ResidualStore(capacity=4)
    for i in range(10):
        store.finish(("n", "f", i), 0, None, np.zeros(3))
    assert len(store) == 4
    assert store.start(("n", "f", 0), 1) == (None, False)
    assert store.start(("n", "f", 9), 1)[1]


def test_shard_files_are_validated():
    X, y = F.shard(1, 5)
    X2, y2 = FT.decode_shard(FT.encode_shard(X, y))
    assert np.array_equal(X2, X) and np.array_equal(y2, y)
    for bad in (b"", b"\x01" * 64, bytes([11]) + bytes(64), bytes([1]) + bytes([17]) * 64):
        with pytest.raises(ValueError):
            FT.decode_shard(bad)


# --- accounting -------------------------------------------------------------------------------
def test_phase_bytes_are_laid_on_every_link_of_the_route():
    metrics = {"plan": {"allocations": [[[1, 1], [3, 1]]], "reducer": [3, 3], "los": [1, 1]},
               "roles": [{"role": "collector", "node": [1, 1], "bytes": 10},
                         {"role": "mapper", "node": [3, 1], "bytes": 5}],
               "bytes": {"result": 7}}

    def route(a, b):  # along sat, then orb
        path = [a]
        while path[-1][0] != b[0]:
            path.append((path[-1][0] + (1 if b[0] > path[-1][0] else -1), path[-1][1]))
        while path[-1][1] != b[1]:
            path.append((path[-1][0], path[-1][1] + (1 if b[1] > path[-1][1] else -1)))
        return path
    links = R.phase_links(metrics, route)
    assert links["collect"] == Counter({"1,1>2,1": 10, "2,1>3,1": 10})
    assert sum(links["update"].values()) == 10 and sum(links["result"].values()) == 28


# --- real jobs on the loopback ----------------------------------------------------------------
def test_a_loopback_round_equals_central_fedavg(tmp_path):
    from node_app.loopback import LoopbackConstellation
    jd = {"codec": "none", "federation": "exact", "local_epochs": 1}
    ext = {"jobid": f"fed-{time.time_ns()}", "tasks": FEDAVG, "job_data": jd,
           "aoi": {"kind": "grid", "minsat": 1, "maxsat": 3, "collectors": 4, "seed": 1},
           "allocator": "bipartite", "reducetype": "center", "los": [1, 1], "max_collect": 100,
           "phase_timeout_s": 60}
    with LoopbackConstellation(3, 3, str(tmp_path / "c")) as lc:
        body = ground.run(lc.addr_map.addr((1, 1)), 4242, ext, timeout_s=180, key=lc.key)
    result = body["result"]
    assert result["clients"] == [1, 2, 3, 4]
    tp = F.TrainParams(local_epochs=1)
    theta = F.zeros()
    deltas = []
    for i in range(1, 5):
        X, y = F.shard(i, 4)
        deltas.append((F.local_train(theta, X, y, tp, 0, i)[0] - theta, len(y)))
    central = F.aggregate(theta, deltas)
    got = F.decode_model(result["model"])
    assert np.allclose(got, central, rtol=1e-6, atol=1e-7)
    assert not np.array_equal(got, theta)
    assert result["test_accuracy"] == pytest.approx(F.accuracy(central), abs=0.01)


def test_experiment_on_the_loopback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "experiments.fedavg", "--loopback", "--grid", "3x3",
                          "--clients", "4", "--rounds", "2", "--codecs", "none,topk", "--results", str(tmp_path),
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-800:]
    m = json.loads(out.stdout)
    for key in ("bytes_ratio", "accuracy_uncompressed", "accuracy_compressed", "accuracy_gap_pts"):
        assert isinstance(m[key], float)
    assert m["rounds"] == 2 and m["bytes_ratio"] > 10
    d = Path(m["results_dir"])
    for name in ("rounds.csv", "links.csv", "summary.csv", "metrics.json", "accuracy.png",
                 "accuracy.svg", "config.yaml", "final_models.json"):
        assert (d / name).is_file(), name


@pytest.mark.parametrize("args, needle", [(["--codecs", "zip"], "codecs"),
                                          (["--rounds", "0"], "rounds"),
                                          (["--grid", "3x3"], "clients")])
def test_experiment_bad_input_is_exit_2(tmp_path, args, needle):
    out = subprocess.run([sys.executable, "-m", "experiments.fedavg", "--loopback",
                          "--results", str(tmp_path), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr


@pytest.mark.root
def test_emulated_round_counts_isl_bytes(tmp_path):
    out = subprocess.run([sys.executable, "-m", "experiments.fedavg", "--grid", "3x3",
                          "--clients", "4", "--rounds", "1", "--codecs", "none,topk", "--results", str(tmp_path),
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-800:]
    m = json.loads(out.stdout)
    assert m["mode"] == "emulated" and m["bytes_ratio"] > 10
    for codec in ("none", "topk"):
        s = m["summary"][codec]
        assert s["isl_bytes_measured"] >= s["isl_bytes_update"] > 0
