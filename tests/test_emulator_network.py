"""The emulated constellation on a real Mininet/OVS network (root only; one network at a time).

Run: ``.venv/bin/python -m pytest tests/test_emulator_network.py -x -q``.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

pytestmark = pytest.mark.root


def _ovs_or_skip():
    if os.geteuid() != 0:
        pytest.skip("needs root (builds a Mininet/OVS network)")
    from topo import ovs
    try:
        ovs.ensure_running()
    except ovs.OVSError as exc:
        pytest.skip(f"Open vSwitch unavailable: {exc}")


@pytest.fixture
def testbed_factory():
    """Build testbeds; every one is torn down and checked for leftovers."""
    _ovs_or_skip()
    from topo.config import from_dict
    from topo.testbed import Testbed
    made = []

    def make(**raw):
        tb = Testbed(from_dict(raw), echo=lambda m: None)
        made.append(tb)
        return tb.start()

    yield make
    for tb in made:
        if tb._built:
            assert tb.stop(), tb.leftovers()


def _assert_nothing_left(tb):
    assert tb.leftovers() == []
    brs = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
    assert not set(tb.bridges) & set(brs)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not re.search(r"\bs\d+_\d+-eth\d+", links)
    for h in tb.hosts:
        assert not os.path.exists(f"/proc/{h.pid}") or \
            open(f"/proc/{h.pid}/stat").read().split(")")[-1].split()[0] == "Z"


def _check(tb):
    from topo.run import run_check
    return run_check(tb)


def test_3x3_all_pairs_paths_and_clean_teardown(testbed_factory):
    tb = testbed_factory(grid="3x3")
    st = tb.controller_state()
    assert st["framework"] == "os_ken" and st["synced"] and len(st["connected"]) == 9
    res = _check(tb)
    assert res["pairs"] == 10 * 9 and res["pairs_ok"] == res["pairs"], res["failed"]
    assert res["paths_ok"], res
    assert tb.stop()
    _assert_nothing_left(tb)


def test_5x5_check_command_prints_one_json_line():
    _ovs_or_skip()
    res = subprocess.run([PY, "-m", "topo.run", "--grid", "5x5", "--check", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout + res.stderr
    out = json.loads(lines[0])
    assert set(out) >= {"grid", "datapath", "netem", "build_s", "routes_s", "teardown_s",
                        "pairs", "pairs_ok", "paths_ok", "teardown_clean", "tables_verified",
                        "pairs_sampled", "flows_per_switch_max", "servers",
                        "cross_server_links", "ovs_instances", "tables_s",
                        "ping_s", "attempts", "build_phases_s", "teardown_phases_s"}
    assert out["ovs_instances"] == 0  # auto: a small grid stays on the system instance
    assert out["build_phases_s"]["ovs_bridges"] > 0 and out["teardown_phases_s"]["bridges"] >= 0
    assert out["grid"] == "5x5" and out["pairs"] == 26 * 25 and out["pairs_ok"] == out["pairs"]
    assert out["tables_verified"] == 25 and out["pairs_sampled"] == 0  # small: every pair
    assert 0 < out["flows_per_switch_max"] <= 25 + 2  # never more than one per destination
    assert out["paths_ok"] and out["teardown_clean"] and res.returncode == 0
    assert out["datapath"] in ("user", "kernel")
    assert out["servers"] == 1 and out["cross_server_links"] == 0


def test_private_ovs_instances_route_a_grid_split_in_blocks_of_planes(testbed_factory):
    """ovs_instances: 2 -- two private OVS instances, planes 1-2 and 3-4: every table
    verified, every pair answers on its Manhattan route (across the blocks too), the
    bridges are in no other instance, and teardown ends the instances' processes."""
    from topo import check
    from topo.ovs_instance import SYSTEM
    from topo.run import run_check
    tb = testbed_factory(grid="4x4", ovs_instances=2, keep_logs=True)
    place = tb.network.ovs
    assert len(place.private) == 2 and tb.metadata["ovs_instances"] == 2
    assert place.of("s1_1") is place.private[0] and place.of("s4_4") is place.private[1]
    assert sorted(place.private[0].bridges()) == sorted(f"s{s}_{o}" for s in range(1, 5)
                                                        for o in (1, 2))
    assert not set(tb.bridges) & set(SYSTEM.bridges())
    res = run_check(tb)
    assert res["tables_verified"] == 16, res["tables_failed"]
    assert res["pairs_ok"] == res["pairs"] == 17 * 16 and res["paths_ok"], res
    counters = check.flow_counters(tb.bridges, ovs_of=place.of)
    assert {br for br, _dst in counters} == set(tb.bridges)
    pids = [p for inst in place.private for p in inst.pids.values()]
    assert tb.stop(), tb.leftovers()
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)
    assert not any(os.path.exists(inst.rundir) for inst in place.private)
    # keep_logs: the instances' logs were copied to the kept run directory first
    kept = sorted(f for f in os.listdir(tb.workdir) if f.startswith("ovs-"))
    shutil.rmtree(tb.workdir)
    assert kept == [f"ovs-{inst.name}-{log}" for inst in place.private
                    for log in ("ovs-vswitchd.log", "ovsdb-server.log")]


def test_traffic_crosses_exactly_the_manhattan_route(testbed_factory):
    from controller.routing import Router
    from topo import check
    from topo.addressing import switch_name
    tb = testbed_factory(grid="5x5")
    src, dst = (1, 1), (4, 3)
    router = Router(tb.c, 0.0)
    route = router.route(src, dst)
    on_route = {switch_name(s) for s in route.path}
    # The flow a packet to dst hits on each switch (a plane, column, exception or the /32).
    key = check.FlowKeys(router, [tb.ip_of(dst)], tb.cfg.ground_sats)
    key_of = {switch_name(s): key(s, tb.ip_of(dst)) for s in tb.c.satellites()}
    assert key_of[switch_name(dst)] == tb.ip_of(dst)
    before = check.flow_counters(tb.bridges)
    out = tb.host_of(src).cmd(f"ping -c 20 -i 0.01 -W 1 {tb.ip_of(dst)}")
    assert " 0% packet loss" in out, out
    after = check.settled_flow_counters(tb.bridges)
    crossed = {sw for sw in tb.bridges
               if after.get((sw, key_of[sw]), 0) - before.get((sw, key_of[sw]), 0) > 0}
    assert crossed == on_route
    for sw in on_route:
        assert after[(sw, key_of[sw])] - before.get((sw, key_of[sw]), 0) == 20


def _iperf_bps(server, client, ip, seconds=6):
    srv = server.popen(["iperf3", "-s", "-1", "-p", "5201"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        out = client.cmd(f"iperf3 -c {ip} -p 5201 -t {seconds} -O 2 -J")
        data = json.loads(out[out.index("{"):])
        return data["end"]["sum_received"]["bits_per_second"]
    finally:
        srv.kill()
        srv.wait(5)


def test_tcp_over_one_shaped_link_matches_the_model_rate(testbed_factory):
    from topo.link_model import LinkModel
    from topo.constellation import Constellation
    c = Constellation(planes=3, sats_per_plane=3)
    model = LinkModel().shannon_rate_bps(c.in_plane_length_m)
    scale = 8e6 / model  # 8 Mbit/s: well inside what the userspace datapath forwards
    tb = testbed_factory(grid="3x3", rate_scale=scale)
    shape = tb.shapes[frozenset(((1, 1), (2, 1)))]
    assert shape.rate_bps == pytest.approx(model * scale)
    bps = _iperf_bps(tb.host_of((2, 1)), tb.host_of((1, 1)), tb.ip_of((2, 1)))
    print(f"TCP {bps / 1e6:.2f} Mbit/s over a link shaped to {shape.rate_bps / 1e6:.2f} Mbit/s")
    assert abs(bps - shape.rate_bps) / shape.rate_bps < 0.10, (bps, shape.rate_bps)


def test_cross_plane_link_down_reroutes_within_one_second(testbed_factory):
    tb = testbed_factory(grid="5x5")
    a, b, dst = (1, 1), (1, 2), (1, 3)
    st0 = tb.controller_state()
    assert st0["next_hops"][str(tb.c.node_id(a))][tb.c.node_id(dst) - 1] == tb.c.node_id(b)
    h = tb.host_of(a)
    assert " 0% packet loss" in h.cmd(f"ping -c 2 -W 1 {tb.ip_of(dst)}")
    t0 = time.monotonic()
    subprocess.run(["ip", "link", "set", "s1_1-eth4", "down"], check=True)
    subprocess.run(["ip", "link", "set", "s1_2-eth5", "down"], check=True)
    back = None
    while time.monotonic() - t0 < 3:
        if " 0% packet loss" in h.cmd(f"ping -c 1 -W 0.2 {tb.ip_of(dst)}"):
            back = time.monotonic() - t0
            break
    print(f"connectivity back {back} s after the link went down")
    assert back is not None and back < 1.0, back
    st = tb.wait_generation(st0["generation"])
    assert [[1, 1], [1, 2]] in st["links_down"]
    assert st["next_hops"][str(tb.c.node_id(a))][tb.c.node_id(dst) - 1] != tb.c.node_id(b)
    # Only flows whose next hop changed were touched, and the route avoids the link.
    assert 0 < st["changed_flows"] < 25 * 24
    subprocess.run(["ip", "link", "set", "s1_1-eth4", "up"], check=True)
    subprocess.run(["ip", "link", "set", "s1_2-eth5", "up"], check=True)
    st = tb.wait_generation(st["generation"])
    assert st["links_down"] == []
    assert st["next_hops"][str(tb.c.node_id(a))][tb.c.node_id(dst) - 1] == tb.c.node_id(b)


def test_dynamics_step_applies_outages_and_rates(testbed_factory):
    # 4x4 at 87 deg: satellites at 90/180/270/360 deg along orbit, |lat| 86.9/0/86.9/0 -> with
    # a 50 deg threshold the cross-plane links of sats 1 and 3 are down at t=0, and a
    # quarter orbit later those of sats 2 and 4.
    tb = testbed_factory(grid="4x4", outage_lat_deg=50.0, start_time_s=0.0)
    down0 = tb.c.down_links(0.0)
    st = tb.controller_state()
    assert {frozenset(map(tuple, l)) for l in st["links_down"]} == down0
    res = _check(tb)
    assert res["pairs_ok"] == res["pairs"] and res["paths_ok"], res
    dyn = tb.dynamics
    assert dyn is not None and not dyn.running  # made by the testbed, not started (dynamics: false)
    t1 = tb.c.period_s / 4
    down1 = tb.c.down_links(t1)
    assert down1 != down0
    gen = st["generation"]
    rep = dyn.step(t1)
    assert len(rep.went_down) == len(down1 - down0) and len(rep.came_up) == len(down0 - down1)
    assert rep.rate_changes > 0 and rep.apply_s < 2.0
    st = tb.wait_generation(gen)
    assert {frozenset(map(tuple, l)) for l in st["links_down"]} == down1
    for key in down1:
        s = tb.shapes[key]
        state = subprocess.run(["ip", "-o", "link", "show", s.intf_a], capture_output=True,
                               text=True).stdout
        assert "state DOWN" in state or "LOWER_UP" not in state
    # The controller routes for the new time and the new outages, exactly as the Router does.
    from controller.routing import Router
    assert st["t_s"] == pytest.approx(t1)
    router = Router(tb.c, t1, down1)
    for a in tb.c.satellites():
        hops = st["next_hops"][str(tb.c.node_id(a))]
        for b in tb.c.satellites():
            if a != b:
                assert hops[tb.c.node_id(b) - 1] == tb.c.node_id(router.next_hop(a, b))
    res = _check(tb)
    assert res["pairs_ok"] == res["pairs"] and res["paths_ok"], res
    # A second step at the same time changes nothing.
    rep2 = dyn.step(t1)
    assert rep2.commands == 0 and rep2.flows_changed == 0


def test_ryu_runtime_routes_all_pairs(testbed_factory):
    if not (ROOT / ".venv-ryu" / "bin" / "ryu-manager").exists():
        pytest.skip("Ryu venv missing (./setup.sh)")
    tb = testbed_factory(grid="3x3", controller="ryu")
    assert tb.controller_state()["framework"] == "ryu"
    res = _check(tb)
    assert res["pairs_ok"] == res["pairs"] and res["paths_ok"], res


def test_netem_delay_where_the_kernel_has_it(testbed_factory):
    from topo.shaping import netem_available
    if not netem_available():
        pytest.skip("kernel has no sch_netem: propagation delay cannot be emulated here")
    tb = testbed_factory(grid="3x3")
    shape = tb.shapes[frozenset(((1, 1), (2, 1)))]
    out = tb.host_of((1, 1)).cmd(f"ping -c 5 -i 0.2 {tb.ip_of((2, 1))}")
    avg_ms = float(re.search(r"= [\d.]+/([\d.]+)/", out).group(1))
    assert avg_ms >= 2 * shape.delay_s * 1e3 * 0.95


def test_require_delay_fails_cleanly_without_netem():
    _ovs_or_skip()
    from topo.shaping import netem_available
    if netem_available():
        pytest.skip("this kernel has netem")
    from topo.lock import testbed_lock
    runs = os.path.join(tempfile.gettempdir(), "spacecomp-tb-*")
    before = set(glob.glob(runs))
    # Refused before the lock is taken: with the lock held here it must not wait for it.
    with testbed_lock():
        t0 = time.monotonic()
        res = subprocess.run([PY, "-m", "topo.run", "--grid", "3x3", "--check",
                              "--require-delay"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        took_s = time.monotonic() - t0
    assert res.returncode != 0 and "netem" in res.stderr and "Traceback" not in res.stderr
    assert took_s < 20, f"waited {took_s:.1f} s: the lock was taken before the netem check"
    assert set(glob.glob(runs)) <= before, "a refused run left its directory behind"


def test_controller_that_never_comes_up_gives_a_clean_bounded_failure(monkeypatch):
    _ovs_or_skip()
    from topo.config import from_dict
    from topo.testbed import Testbed, TestbedError

    def fake_controller(self):  # a "controller" that listens nowhere
        self.ctl_port = 9  # discard: nothing answers OpenFlow there
        self.controller = subprocess.Popen(["sleep", "60"])

    monkeypatch.setattr(Testbed, "_start_controller", fake_controller)
    tb = Testbed(from_dict({"grid": "3x3", "controller_timeout_s": 2}), echo=lambda m: None)
    t0 = time.monotonic()
    with pytest.raises(TestbedError, match="did not route"):
        tb.start()
    assert time.monotonic() - t0 < 30
    _assert_nothing_left(tb)


def test_topo_class_under_plain_mn_custom_with_the_controller(tmp_path):
    """``mn --custom topo/topology.py --topo constellation,3,3`` routed by controller/app.py
    (hosts with /8 addresses: the controller answers their ARP).  mn's clean-up-on-error,
    which kills processes by broad names, is disabled in the wrapper."""
    _ovs_or_skip()
    from topo.testbed import _free_port, testbed_lock
    port = _free_port()
    cfg = tmp_path / "ctl.json"
    cfg.write_text(json.dumps({"planes": 3, "sats_per_plane": 3, "ground": [[1, 1]],
                               "state_path": str(tmp_path / "state.json")}))
    wrapper = ("import sys, runpy, mininet.clean as c\nc.cleanup = lambda *a, **k: None\n"
               "sys.argv = ['mn'] + sys.argv[1:]\nrunpy.run_path('/usr/bin/mn', run_name='__main__')\n")
    with testbed_lock():
        ctl = subprocess.Popen(["/usr/bin/osken-manager", str(ROOT / "controller" / "app.py"),
                                "--ofp-tcp-listen-port", str(port)],
                               env=dict(os.environ, SPACECOMP_CTL_CONFIG=str(cfg),
                                        PYTHONPATH=str(ROOT)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2)
            res = subprocess.run([PY, "-c", wrapper, "--custom", str(ROOT / "topo" / "topology.py"),
                                  "--topo", "constellation,3,3", "--switch",
                                  "ovs,datapath=user,protocols=OpenFlow13", "--controller",
                                  f"remote,ip=127.0.0.1,port={port}", "--test", "pingall"],
                                 capture_output=True, text=True, timeout=300)
        finally:
            ctl.terminate()
            ctl.wait(10)
    assert "0% dropped (90/90 received)" in res.stdout + res.stderr, res.stderr[-1000:]
    brs = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
    assert not [b for b in brs if re.fullmatch(r"s\d+_\d+", b)]


def test_lossy_crossover_band_drops_packets(testbed_factory):
    # 4x4: sats 1 and 3 sit at |lat| 86.9 deg, so with no outage below 89 deg and a
    # 10 deg lossy band their cross-plane links are lossy (30 % per direction).
    tb = testbed_factory(grid="4x4", outage_lat_deg=89.0, lossy_band_deg=10.0,
                         lossy_loss_pct=30.0)
    shape = tb.shapes[frozenset(((1, 1), (1, 2)))]
    assert shape.state == "lossy" and shape.loss_pct == 30.0
    assert tb.metadata["loss_emulated"] in ("netem", "nftables")
    out = tb.host_of((1, 1)).cmd(f"ping -c 200 -i 0.005 -W 1 -q {tb.ip_of((1, 2))}")
    received = int(re.search(r"(\d+) received", out).group(1))
    assert 0.30 * 200 < received < 0.70 * 200, out  # expected 0.7 * 0.7 = 49 %
    # A loss-free path (in-plane) is unaffected.
    out = tb.host_of((1, 1)).cmd(f"ping -c 50 -i 0.005 -W 1 -q {tb.ip_of((2, 1))}")
    assert " 0% packet loss" in out
    assert tb.stop()
    _assert_nothing_left(tb)


def test_dynamics_key_starts_the_updater_and_teardown_stops_it(testbed_factory):
    # dynamics: true -> the testbed runs its own updater from start(); stop() ends it.
    tb = testbed_factory(grid="3x3", dynamics=True, time_factor=600.0, step_s=0.2)
    dyn = tb.dynamics
    assert dyn.running
    deadline = time.monotonic() + 10
    while len(dyn.history) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(dyn.history) >= 2 and dyn.history[-1].t_s > dyn.history[0].t_s > 0
    assert tb.t_s == pytest.approx(dyn.history[-1].t_s)
    assert tb.start_dynamics() is dyn  # idempotent: one updater per testbed
    assert tb.stop()
    assert not dyn.running
