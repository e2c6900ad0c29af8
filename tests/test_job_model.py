"""The per-hop job time model (node_app.job_model): bottleneck rates, max-min sharing
among concurrent streams, per-hop delay, processing; checked against hand-computed cases."""

import pytest

from node_app.job_model import JobTimeModel, Stream

A, B, C = frozenset({1, 2}), frozenset({2, 3}), frozenset({3, 4})


def L(a, b):
    return frozenset({a, b})


def test_one_stream_gets_its_slowest_hop_plus_path_delay():
    model = JobTimeModel({A: 8e6, B: 2e6}, delay_s={A: 0.01, B: 0.02})
    t = model.phase_s([Stream("collect", (A, B), 1e6)])  # 8 Mbit at 2 Mbit/s
    assert t == pytest.approx(4.0 + 0.03)


def test_streams_sharing_a_link_split_it_and_the_survivor_speeds_up():
    model = JobTimeModel({A: 8e6})
    equal = model.phase_s([Stream("map", (A,), 1e6), Stream("map", (A,), 1e6)])
    assert equal == pytest.approx(2.0)  # each 4 Mbit/s for 8 Mbit
    unequal = model.phase_s([Stream("map", (A,), 1e6), Stream("map", (A,), 3e6)])
    assert unequal == pytest.approx(4.0)  # the link is busy for all 32 Mbit


def test_max_min_rates_textbook_case():
    # link A (10) carries streams 0 and 1; link B (4) carries streams 1 and 2.
    model = JobTimeModel({A: 10.0, B: 4.0})
    rates = model.max_min_rates([Stream("p", (A,), 1), Stream("p", (A, B), 1),
                                 Stream("p", (B,), 1)])
    assert rates == pytest.approx([8.0, 2.0, 2.0])


def test_job_is_its_phases_in_order_with_processing():
    model = JobTimeModel({A: 8e6, B: 8e6, C: 8e6}, processing_s={"map": 0.5})
    out = model.job_s([Stream("collect", (A,), 1e6), Stream("collect", (C,), 1e6),
                       Stream("map", (A, B), 2e6), Stream("result", (), 10)])
    assert out["collect_s"] == pytest.approx(1.0)   # disjoint links: in parallel
    assert out["map_s"] == pytest.approx(2.5)
    assert out["result_s"] == 0.0                   # reducer is the LOS: no network
    assert out["job_s"] == pytest.approx(3.5)


def test_more_sharing_never_makes_a_phase_faster():
    model = JobTimeModel({A: 5e6, B: 7e6, C: 3e6})
    base = [Stream("c", (A, B), 1e6), Stream("c", (C,), 2e6)]
    extra = base + [Stream("c", (B, C), 1e6)]
    assert model.phase_s(extra) >= model.phase_s(base)


def test_pipelined_phases_share_links_at_once():
    streams = [Stream("collect", (A,), 1e6), Stream("map", (A, B), 1e6), Stream("map", (C,), 1e6)]
    phased = JobTimeModel({A: 8e6, B: 8e6, C: 8e6}).job_s(streams)
    piped = JobTimeModel({A: 8e6, B: 8e6, C: 8e6}, pipelined=(("collect", "map"),)).job_s(streams)
    assert phased["job_s"] == pytest.approx(2.0)            # 1 s, then 1 s
    assert piped["collect+map_s"] == pytest.approx(2.0)      # A shared by two streams
    assert piped["job_s"] == pytest.approx(2.0)
    quick = JobTimeModel({A: 8e6, B: 8e6, C: 8e6}, pipelined=(("collect", "map"),)).job_s(
        [Stream("collect", (A,), 1e6), Stream("map", (C,), 1e6)])
    assert quick["job_s"] == pytest.approx(1.0)              # disjoint: overlap fully


def test_forwarding_budget_global_charges_every_switch_a_stream_crosses():
    # one stream over 3 links (4 switches) on fast links: rate = forward_bps / 4
    rates = {L(1, 2): 1e9, L(2, 3): 1e9, L(3, 4): 1e9, L(5, 6): 1e9}
    m = JobTimeModel(rates, forward_bps=400e6)
    long = Stream("collect", (L(1, 2), L(2, 3), L(3, 4)), 1)
    short = Stream("collect", (L(5, 6),), 1)
    assert m.max_min_rates([long]) == pytest.approx([100e6])
    assert m.max_min_rates([short]) == pytest.approx([200e6])
    # together, disjoint paths: one budget, weights 4 and 2 -> equal rates 400/6 each
    assert m.max_min_rates([long, short]) == pytest.approx([400e6 / 6] * 2)
    # per switch: disjoint paths do not share; each stream limited by its links only
    per_switch = JobTimeModel(rates, forward_bps=400e6, forward_scope="switch")
    assert per_switch.max_min_rates([long, short]) == pytest.approx([400e6, 400e6])
    # a slow link still wins when it is the tighter constraint
    slow = JobTimeModel({**rates, L(5, 6): 50e6}, forward_bps=400e6)
    assert slow.max_min_rates([long, short]) == pytest.approx([(400e6 - 2 * 50e6) / 4, 50e6])


def test_forwarding_budget_default_is_the_link_model_and_bad_values_are_refused():
    rates = {L(1, 2): 8e6}
    s = [Stream("collect", (L(1, 2),), 1e6)]
    assert JobTimeModel(rates).job_s(s)["job_s"] == pytest.approx(1.0)
    assert JobTimeModel(rates, forward_bps=8e6).job_s(s)["job_s"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="forward_scope"):
        JobTimeModel(rates, forward_scope="bus")
    with pytest.raises(ValueError, match="forward_bps"):
        JobTimeModel(rates, forward_bps=0)


def test_chained_map_starts_when_its_own_collect_stream_ends():
    # collector 1 -> mapper 2 over A (8 Mbit/s); mapper 2 -> reducer 4 over B, C.
    # A second pair, collector 5 -> mapper 6 over a slow link, does not hold mapper 2 back.
    D, E = L(5, 6), L(6, 4)
    m = JobTimeModel({A: 8e6, B: 8e6, C: 8e6, D: 1e6, E: 8e6})
    streams = [Stream("collect", (A,), 1e6, 1, 2), Stream("collect", (D,), 1e6, 5, 6),
               Stream("map", (B, C), 1e6, 2, 4), Stream("map", (E,), 1e6, 6, 4),
               Stream("result", (), 10, 4, 4)]
    out = m.chained_s(streams)
    assert out["ends"][0] == pytest.approx(1.0)
    assert out["starts"][2] == pytest.approx(1.0)     # not after the slow collect (8 s)
    assert out["ends"][2] == pytest.approx(2.0)
    assert out["ends"][1] == pytest.approx(8.0)
    assert out["ends"][3] == pytest.approx(9.0)
    assert out["job_s"] == pytest.approx(9.0)
    # the phased model waits for the slow collect before any map stream: 8 + 1
    assert m.job_s(streams)["job_s"] == pytest.approx(9.0)
    # ... and is slower when the slow pair's map stream is the short one
    fast_second = [Stream("collect", (A,), 1e6, 1, 2), Stream("collect", (D,), 1e6, 5, 6),
                   Stream("map", (B, C), 4e6, 2, 4), Stream("map", (E,), 1e5, 6, 4)]
    assert m.chained_s(fast_second)["job_s"] == pytest.approx(8.1)
    assert m.job_s(fast_second)["job_s"] == pytest.approx(8.0 + 4.0)


def test_chained_streams_share_links_with_whatever_moves_at_the_same_time():
    # the map stream 2 -> 3 (B) starts at 1 s while the long collect 5 -> 3 still uses B
    m = JobTimeModel({A: 8e6, B: 8e6})
    streams = [Stream("collect", (A,), 1e6, 1, 2), Stream("collect", (B,), 3e6, 5, 3),
               Stream("map", (B,), 1e6, 2, 3)]
    out = m.chained_s(streams)
    # 0..1 s: collect 2 alone on B moves 8 Mbit (16 left); then B shared 4+4 Mbit/s:
    # the map stream's 8 Mbit take 2 s, then the rest (8 Mbit) alone 1 s
    assert out["ends"][2] == pytest.approx(3.0)
    assert out["ends"][1] == pytest.approx(4.0)


def test_chained_setup_waits_behind_the_queue_of_busy_hops_only():
    rates = {A: 8e6, B: 2e6}
    streams = [Stream("collect", (B,), 1e6, 1, 3), Stream("collect", (A,), 0.5e6, 1, 2),
               Stream("map", (A, B), 1e5, 2, 4)]
    plain = JobTimeModel(rates, delay_s={A: 0.01, B: 0.02}).chained_s(streams)
    queued = JobTimeModel(rates, delay_s={A: 0.01, B: 0.02}, queue_bytes=250e3).chained_s(streams)
    # the collect over A sets up in 2 x 0.01 s (nothing busy yet), moves 4 Mbit in 0.5 s
    # and lands 0.01 s later: 0.53 s.  The map stream's handshake: 2 x 0.03 s, plus, with
    # a queue, B's 250 kB (2 Mbit at 2 Mbit/s: 1 s): B still carries the first collect
    # stream, A no longer carries anything
    assert plain["starts"][1] == pytest.approx(0.02)
    assert plain["starts"][2] == pytest.approx(0.53 + 0.06)
    assert queued["starts"][2] == pytest.approx(0.53 + 0.06 + 1.0)
    assert queued["ends"][2] == pytest.approx(plain["ends"][2] + 1.0)
    with pytest.raises(ValueError):
        JobTimeModel(rates, queue_bytes=-1)


def test_latency_bound_caps_a_long_stream_not_a_short_one():
    # fast links (1 Gbit/s), hop_rate 40 Mbit/s x hops: a 4-hop stream moves at most
    # 10 Mbit/s, a 1-hop one 40 Mbit/s; slower links still win where they are tighter
    path = (L(1, 2), L(2, 3), L(3, 4), L(4, 5))
    rates = {link: 1e9 for link in path + (L(6, 7),)}
    m = JobTimeModel(rates, hop_rate_bps=40e6)
    long, short = Stream("collect", path, 1e6), Stream("collect", (L(6, 7),), 1e6)
    assert m.max_min_rates([long, short]) == pytest.approx([10e6, 40e6])
    assert m.phase_s([long]) == pytest.approx(0.8)          # 8 Mbit at 10 Mbit/s
    slow = JobTimeModel({**rates, L(6, 7): 5e6}, hop_rate_bps=40e6)
    assert slow.max_min_rates([short]) == pytest.approx([5e6])
    # the bound is each stream's own: two long streams sharing links split them only
    # when the links, not the bound, are the tighter constraint
    both = JobTimeModel({link: 12e6 for link in path}, hop_rate_bps=40e6)
    assert both.max_min_rates([long, long]) == pytest.approx([6e6, 6e6])
    assert JobTimeModel(rates).max_min_rates([long]) == pytest.approx([1e9])
    with pytest.raises(ValueError, match="hop_rate_bps"):
        JobTimeModel(rates, hop_rate_bps=0)
