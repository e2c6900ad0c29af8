"""Placed ground stations in the emulator: the ground link moves at handovers, the routes
follow in the same step, the station keeps its address; jobs spanning handovers are exact
(root: builds networks, one at a time)."""

import json
import subprocess
import time

import pytest

from topo import ground_stations as gs
from topo.config import from_dict

pytestmark = pytest.mark.root

# A 5x5 at 2000 km seen from the equator above 15 degrees: passes overlap (satellite to
# satellite handovers) and leave gaps (contact lost and regained).
BASE = {"grid": "5x5", "altitude_km": 2000, "min_elevation_deg": 15,
        "ground_stations": [{"name": "equator", "lat_deg": 0.0, "lon_deg": 0.0}]}


def timeline(start_s=0.0, span_s=20_000.0):
    cfg = from_dict(BASE)
    c, st = cfg.constellation(), cfg.stations()[0]
    windows = gs.contact_windows(c, st, start_s, start_s + span_s, 15.0)
    return gs.serving_timeline(c, st, windows, start_s, start_s + span_s, 15.0)


def carrier(intf):
    """True when root-namespace interface ``intf`` has a carrier (its peer is up)."""
    res = subprocess.run(["ip", "-o", "link", "show", "dev", intf], capture_output=True,
                         text=True)
    return "LOWER_UP" in res.stdout


def serving_links(tb):
    """The satellites whose link to station 1 is up: its end in the station's namespace
    admin-up and the switch end (port 6 of that satellite's switch) with carrier."""
    out = tb.ground_hosts[0].cmd("ip -o link show up")
    up = {tuple(int(v) for v in ln.split(":")[1].strip().split("@")[0][3:].split("_"))
          for ln in out.splitlines() if ln.split(":")[1].strip().startswith("g1-")
          and not ln.split(":")[1].strip().startswith("g1-eth0")}
    assert {s for s in tb.c.satellites() if carrier("s{}_{}-eth6".format(*s))} == up
    return up


def pings(host, ip, n=3):
    out = host.cmd(f"ping -c{n} -i0.2 -W1 {ip}")
    return f"{n} received" in out or f" {n} packets received" in out


def htb_rate_bps(out):
    """The rate of the htb class in ``tc class show`` output, in bit/s."""
    import re
    m = re.search(r"rate (\d+(?:\.\d+)?)([KMG]?)bit", out)
    return float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]


def test_handover_moves_the_link_and_the_routes_in_one_step():
    """Step the emulator through the core's serving timeline: every gateway change is
    applied in the step that crosses it (link on the new gateway's switch, routes moved,
    address kept); out of view nothing reaches the station."""
    from topo.testbed import Testbed
    start = 1000.0
    segs = timeline(start, 6000.0)
    assert segs[0].sat is not None
    # a cap above the Ka-band model's rates: every ground link gets the model's own rate
    cfg = from_dict({**BASE, "start_time_s": start, "rate_cap_mbps": 10_000})
    checked = {"s2s": 0, "gap": 0}
    with Testbed(cfg, echo=lambda m: None) as tb:
        g1 = tb.ground_hosts[0]
        ip = tb.ground_ip(1)
        assert tb.gateway(1) == segs[0].sat and serving_links(tb) == {segs[0].sat}
        links = json.load(open(tb.ground_state_path))["stations"][0]["links"]
        assert links == len({s.sat for s in timeline(start, cfg.handover_horizon_s)
                             if s.sat} | {tuple(cfg.ground[0])})
        for prev, seg in zip(segs, segs[1:]):
            rep = tb.dynamics.step(seg.start_s + 5.0)  # the step that crosses the change
            assert [(h.old, h.new) for h in rep.handovers] == [(prev.sat, seg.sat)]
            h = rep.handovers[0]
            print(h.line())
            assert h.apply_s < 0.2, h.line()
            state = json.load(open(tb.ground_state_path))
            assert state["stations"][0]["sat"] == (list(seg.sat) if seg.sat else None)
            # the controller's state file is written at most every 0.1 s: it catches up
            assert eventually(lambda: tb.controller_state()["stations"]["1"]["sat"]
                              == state["stations"][0]["sat"])
            assert not h.created  # pre-created: the whole run lies within the horizon
            if seg.sat is None:
                assert serving_links(tb) == set()
                if not checked["gap"]:
                    far = tb.host_of(prev.sat)
                    assert not pings(far, ip, n=2)  # out of view: nothing gets through
                checked["gap"] += 1
                continue
            assert serving_links(tb) == {seg.sat}
            # the new link is shaped at the RF model's rate for this instant's slant range
            st = tb.cfg.stations()[0]
            d = float(gs.slant_range_m(tb.c, st, h.t_s, [seg.sat])[0])
            model = float(tb.cfg.ground_link_model().shannon_rate_bps(d))
            assert h.rate_bps == pytest.approx(model, rel=1e-9), h.line()
            for out in (subprocess.run(["tc", "class", "show", "dev", "s{}_{}-eth6".format(*seg.sat)],
                                       capture_output=True, text=True).stdout,
                        g1.cmd("tc class show dev g1-{}_{}".format(*seg.sat))):
                assert htb_rate_bps(out) == pytest.approx(model, rel=0.01), out
            assert ip in g1.cmd("ip -o -4 addr show dev g1-eth0")  # the address is kept
            if not checked["s2s"] or prev.sat is None:
                far = tb.host_of(far_sat(seg.sat))
                before = tb.flow_counters().get(("s{}_{}".format(*seg.sat), ip), 0)
                assert pings(far, ip) and pings(g1, tb.ip_of(far_sat(seg.sat)))
                # the packets enter the ground link at the new gateway (counters settle)
                key = ("s{}_{}".format(*seg.sat), ip)
                deadline = time.monotonic() + 5
                while tb.flow_counters()[key] < before + 3 and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert tb.flow_counters()[key] >= before + 3
                checked["s2s"] += prev.sat is not None
    assert checked["s2s"] >= 1 and checked["gap"] >= 1, checked
    assert tb.metadata["teardown_clean"]


def test_gateway_beyond_the_horizon_gets_its_link_at_the_handover():
    """With no horizon only the first gateway's link exists: each new gateway's link is
    created at its handover (logged ``created``), then used like a pre-created one."""
    from topo.testbed import Testbed
    start = 1000.0
    segs = [s for s in timeline(start, 6000.0)]
    cfg = from_dict({**BASE, "start_time_s": start, "handover_horizon_s": 0})
    with Testbed(cfg, echo=lambda m: None) as tb:
        g1, ip = tb.ground_hosts[0], tb.ground_ip(1)
        assert json.load(open(tb.ground_state_path))["stations"][0]["links"] == 1
        seen, done = {segs[0].sat}, 0
        for seg in segs[1:]:
            rep = tb.dynamics.step(seg.start_s + 5.0)
            h = rep.handovers[0]
            assert h.new == seg.sat and h.created == (seg.sat is not None and seg.sat not in seen)
            if seg.sat is None:
                assert serving_links(tb) == set()
                continue
            seen.add(seg.sat)
            assert serving_links(tb) == {seg.sat}
            far = tb.host_of(far_sat(seg.sat))
            assert pings(far, ip) and pings(g1, tb.ip_of(far_sat(seg.sat)))
            done += h.created
            if done >= 2:
                break
        assert done >= 2
    assert tb.metadata["teardown_clean"]


def eventually(check, within_s=2.0):
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def far_sat(sat):
    return ((sat[0] + 1) % 5 + 1, (sat[1] + 1) % 5 + 1)


def test_jobs_spanning_handovers_are_exact_across_10_seeds(tmp_path):
    """At a high time factor, each word-count job is submitted just before a predicted
    gateway change; every result is exact and every record names the change."""
    from node_app.emulated import EmulatedNodes
    from node_app.tasks.wordcount import exact_word_count, resolve_data_file
    from topo.testbed import Testbed
    tf = 200.0
    segs = timeline(0.0, 200_000.0)
    # satellite-to-satellite changes: the ground CLI starts (about 1 s) in contact and the
    # job is under way when the gateway changes (contact losses and gaps come on top)
    changes = [b.start_s for a, b in zip(segs, segs[1:]) if a.sat and b.sat]
    cfg = from_dict({**BASE, "time_factor": tf, "step_s": 0.1, "dynamics": True,
                     "start_time_s": 0.0})
    exact = exact_word_count(resolve_data_file("data/sample.txt"))
    lines = []
    with Testbed(cfg, echo=lines.append) as tb, EmulatedNodes(tb, str(tmp_path)) as nodes:
        records = []
        for seed in range(10):
            now = tb.dynamics.now_s()
            nxt = next(t for t in changes if t > now + 1.5 * tf)  # >= 1.5 s of wall ahead
            time.sleep(max(0.0, (nxt - tb.dynamics.now_s()) / tf - 1.2))  # start 1.2 s before
            out = nodes.run_job(["-mi", "1", "-ma", "5", "-c", "6", "-s", str(seed),
                                 "--timeout", "60"], timeout_s=300)
            records.append(out)
            print(seed, round(now), out["gateways"], len(out["handovers"]), out["contact_wait_s"],
                  round(out["end_to_end_s"], 2), flush=True)
            assert out["result"] == exact, seed
            assert out["handovers"], (seed, out["gateways"])
            assert out["gateways"]["uplink"] is not None
            assert out["gateways"]["downlink"] is not None
    assert tb.metadata["teardown_clean"]
    handover_lines = [m for m in lines if m.startswith("handover g1")]
    assert handover_lines and all("applied in" in m for m in handover_lines)
    moved = {tuple(r["gateways"]["uplink"]) != tuple(r["gateways"]["downlink"]) for r in records}
    assert True in moved  # at least one result went down through another gateway
    waited = [r["contact_wait_s"]["downlink"] + r["contact_wait_s"]["uplink"] for r in records]
    print("jobs:", [(r["gateways"], len(r["handovers"]), round(w, 2))
                    for r, w in zip(records, waited)])


def test_check_holds_with_a_placed_station():
    """``topo.run --check`` with a placed station: its /32 flow is right on every switch,
    it reaches every satellite (and every satellite it) on the installed routes, and so
    again after the check forces the next handover; a wrong gateway fails the tables."""
    from controller.routing import Router
    from topo import check
    from topo.run import _held, run_check
    from topo.testbed import Testbed
    with Testbed(from_dict({**BASE, "start_time_s": 1000.0}), echo=lambda m: None) as tb:
        first = tb.gateway(1)
        assert first is not None
        shaped = tb.metadata["ground_shaping"]  # the model's 1.4 Gbit/s at 15 degrees, capped
        assert shaped["source"] == "model" and shaped["capped"], shaped
        assert shaped["contact_start_model_bps"] > shaped["rate_cap_bps"] == 1e9
        res = run_check(tb)
        assert res["tables_verified"] == 25, res
        assert res["stations_in_view"] == 1
        assert res["pairs"] == 26 * 25 and res["pairs_ok"] == res["pairs"], res
        assert res["station_pairs"] == 50 and res["station_pairs_ok"] == 50, res
        assert res["paths_ok"], res
        after = res["after_handover"]
        assert after["moved"] == 1 and tb.gateway(1) not in (None, first), after
        assert after["tables_verified"] == 25 and after["paths_ok"], after
        assert after["station_pairs"] == 50 and after["station_pairs_ok"] == 50, after
        assert _held(res, 25)
        # the table check sees a station flow pointing at the wrong gateway
        router = Router(tb.c, tb.t_s, tb.c.down_links(tb.t_s))
        wrong = next(s for s in tb.c.satellites() if s != tb.gateway(1))
        bad = check.verify_tables(router, check.dump_tables(tb.bridges), (),
                                  [(tb.ground_ip(1), wrong, 6)])
        assert bad["tables_verified"] < 25 and "placed stations" in bad["tables_failed"][0]
    assert tb.metadata["teardown_clean"]
