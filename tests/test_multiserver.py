"""Two servers on this machine (``servers: local:2``): the second a network namespace with
its own sshd and Open vSwitch, cross-server ISLs as VXLAN tunnels (root, builds networks)."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

pytestmark = pytest.mark.root


def _netns_left() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if re.match(r"spc\d+-srv\d+", ln)]


def test_two_servers_check_command(tmp_path):
    cfg = tmp_path / "wait.yaml"  # other engineers' networks may hold the machine lock
    cfg.write_text("lock_wait_s: 3600\n")
    res = subprocess.run([PY, "-m", "topo.run", str(cfg), "--grid", "6x6", "--servers",
                          "local:2", "--check", "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=4000)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout + res.stderr
    out = json.loads(lines[0])
    # Two block boundaries (planes 3|4 and the torus wrap 6|1), 6 cross-plane links each.
    assert out["servers"] == 2 and out["cross_server_links"] == 12
    assert out["pairs"] == 37 * 36 and out["pairs_ok"] == out["pairs"], out
    assert out["paths_ok"] and out["tables_verified"] == 36 and out["teardown_clean"], out
    assert res.returncode == 0, res.stderr
    assert _netns_left() == []


@pytest.fixture
def two_servers():
    from topo.config import from_dict
    from topo.testbed import Testbed
    # Every link capped at the same rate: a local and a cross-server ISL must carry the same.
    tb = Testbed(from_dict({"grid": "6x6", "servers": "local:2", "rate_scale": 1000,
                            "rate_cap_mbps": 20, "lock_wait_s": 3600}), echo=lambda m: None)
    tb.start()
    yield tb
    tb.stop()
    assert tb.leftovers() == []
    assert _netns_left() == []


def test_cross_server_isl_is_a_shaped_tunnel_like_a_local_one(two_servers):
    from experiments.fidelity import iperf_bps
    tb = two_servers
    assert tb.metadata["cross_server_links"] == 12
    r = tb.cluster.remotes[1]
    # s2_4-eth5 (NORTH of [2, 4]) is the far end of the ISL [2, 3]-[2, 4]: a VXLAN device
    # on the second server with the same htb as the local end of a local ISL.
    link = r.run("ip -d -o link show s2_4-eth5").stdout
    assert "vxlan id" in link and "remote 100.100.0.1" in link
    tc_remote = r.run("tc class show dev s2_4-eth5").stdout
    tc_local = subprocess.run(["tc", "class", "show", "dev", "s2_2-eth5"], capture_output=True,
                              text=True).stdout
    assert "rate 20Mbit" in tc_remote and "rate 20Mbit" in tc_local
    local = iperf_bps(tb.host_of((2, 2)), tb.host_of((2, 1)), tb.ip_of((2, 2)), 4, 1)
    cross = iperf_bps(tb.host_of((2, 4)), tb.host_of((2, 3)), tb.ip_of((2, 4)), 4, 1)
    assert 0.5 * 20e6 < local < 1.1 * 20e6, local
    assert abs(cross - local) <= 0.1 * local, (cross, local)
    # An outage on a cross-server ISL: both ends down, the controller sees it and reroutes.
    key = frozenset({(2, 3), (2, 4)})
    tb.link_batch("ip", ["link set s2_3-eth4 down", "link set s2_4-eth5 down"])
    tb.wait_links_down({key}, timeout_s=30)
    out = tb.host_of((2, 3)).cmd(f"ping -c1 -W2 {tb.ip_of((2, 4))}")
    assert " 0% packet loss" in out, out  # around the outage, over three hops
    tb.link_batch("ip", ["link set s2_3-eth4 up", "link set s2_4-eth5 up"])
    tb.wait_links_down(set(), timeout_s=30)


def test_a_word_count_job_is_exact_with_daemons_started_over_ssh(two_servers, tmp_path):
    from node_app.api import JobSpec, run
    from node_app.emulated import EmulatedNodes
    from node_app.tasks.wordcount import exact_word_count, resolve_data_file
    tb = two_servers
    # A daemon per satellite, started by its host: over SSH for the second server's 18.
    with EmulatedNodes(tb, str(tmp_path), per_process=1) as nodes:
        assert all(p.args[0] == "ssh" for s, p in nodes.procs.items() if s[1] >= 4)
        res = run(JobSpec(grid="6x6", minsat=1, maxsat=6, collectors=4, seed=1), on=nodes)
    assert res.result == exact_word_count(resolve_data_file("data/sample.txt"))


def test_a_server_dropping_out_fails_with_its_name_and_teardown_is_clean(two_servers):
    from topo.remote import ServerLost
    tb = two_servers
    srv1 = tb.cluster.rig.servers[0]
    srv1.sshd.kill()  # the second server's sshd dies: every SSH channel to it with it
    srv1.sshd.wait(5)
    srv1.remote.master.kill()
    srv1.remote.master.wait(5)
    with pytest.raises(ServerLost, match="srv1"):
        tb.cluster.check_alive()
    t0 = time.monotonic()
    assert tb.stop()  # what the run made here and the namespace server are gone
    assert time.monotonic() - t0 < 60
