"""Private Open vSwitch instances (topo.ovs_instance): two run side by side, each with its
own database and bridges; a bridge written by one direct OVSDB transaction
(topo.ovsdb_ops) gets its port numbers and datapath id and forwards; a packet crosses from
one instance's bridge to the other's over a plain kernel veth; deleting the bridge takes
its ports; stop() leaves no process, device or directory behind."""

import os
import subprocess
import time

import pytest

from topo.lock import testbed_lock
from topo import ovsdb_ops
from topo.ovs_instance import SYSTEM, OVSError, OvsInstance
from topo.procs import alive

pytestmark = pytest.mark.root


def sh(cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)


def test_two_private_instances_forward_across_a_veth(tmp_path):
    tag = f"zo{os.getpid() % 10000}"
    with testbed_lock():
        a = OvsInstance.private_instance("a", parent="/run")
        b = OvsInstance.private_instance("b", parent="/run")
        try:
            a.start()
            b.start()
            assert a.db_sock != b.db_sock and a.running() and b.running()
            for ns in ("A", "B"):
                assert sh(f"ip netns add {tag}{ns}").returncode == 0
            for x, ns, ip in (("a", "A", "10.254.0.1"), ("b", "B", "10.254.0.2")):
                assert sh(f"ip link add {tag}{x}h type veth peer name {tag}{x}s").returncode == 0
                assert sh(f"ip link set {tag}{x}h netns {tag}{ns}").returncode == 0
                sh(f"ip -n {tag}{ns} addr add {ip}/24 dev {tag}{x}h")
                sh(f"ip -n {tag}{ns} link set {tag}{x}h up")
                sh(f"ip netns exec {tag}{ns} ethtool -K {tag}{x}h tx off")
            assert sh(f"ip link add {tag}ax type veth peer name {tag}bx").returncode == 0
            for dev in ("as", "bs", "ax", "bx"):
                sh(f"ip link set {tag}{dev} up")
            # instance a: one direct OVSDB transaction (ports 7 and 9, a controller target
            # nobody listens on: secure mode, so a NORMAL flow is added); b: ovs-vsctl
            row = ovsdb_ops.BridgeRow(f"{tag}ba", 0xABC, ((7, f"{tag}as"), (9, f"{tag}ax")),
                                      "tcp:127.0.0.1:1", "dummy")
            res = a.transact(ovsdb_ops.add_bridges([row]))
            a.wait_applied(res[-1]["rows"][0]["next_cfg"], timeout_s=30)
            assert a.vsctl("get", "Interface", f"{tag}ax", "ofport").strip() == "9"
            assert "dpid:0000000000000abc" in a.run(["ovs-ofctl", "-O", "OpenFlow13", "show",
                                                     f"{tag}ba"], check=True).stdout
            a.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flow", f"{tag}ba", "actions=NORMAL"],
                  check=True)
            b.vsctl("add-br", f"{tag}bb", "--", "set", "bridge", f"{tag}bb",
                    "datapath_type=dummy", "--", "add-port", f"{tag}bb", f"{tag}bs",
                    "--", "add-port", f"{tag}bb", f"{tag}bx")
            assert a.bridges() == [f"{tag}ba"] and b.bridges() == [f"{tag}bb"]
            assert f"{tag}ba" not in SYSTEM.bridges()
            ping = sh(f"ip netns exec {tag}A ping -c2 -W2 10.254.0.2")
            assert ping.returncode == 0, ping.stdout
            flows = a.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"{tag}ba"],
                          check=True).stdout
            assert "n_packets=0," not in flows  # the NORMAL flow of instance a forwarded
            with pytest.raises(OVSError):  # one clear error from a bad transaction
                a.transact([{"op": "insert", "table": "NoSuchTable", "row": {}}])
            sel = a.transact(ovsdb_ops.select_bridges())
            res = a.transact(ovsdb_ops.delete_bridges(ovsdb_ops.bridge_uuids(sel[0], [f"{tag}ba"])))
            a.wait_applied(res[-1]["rows"][0]["next_cfg"], timeout_s=30)
            assert a.bridges() == []
            assert a.vsctl("--columns=name", "list", "Port").strip() == ""  # collected
            pids = list(a.pids.values()) + list(b.pids.values())
            kept = a.save_logs(str(tmp_path))   # what keep_logs copies before teardown
            assert [os.path.basename(k) for k in kept] == ["ovs-a-ovs-vswitchd.log",
                                                           "ovs-a-ovsdb-server.log"]
            assert "ovs-vswitchd" in open(kept[0]).read()
            assert SYSTEM.save_logs(str(tmp_path)) == []   # the system instance keeps its own
        finally:
            a.stop()
            b.stop()
            sh(f"ip link del {tag}as; ip link del {tag}bs; ip link del {tag}ax")
            sh(f"ip netns del {tag}A; ip netns del {tag}B")
        assert not any(alive(p) for p in pids)
        assert not os.path.exists(a.rundir) and not os.path.exists(b.rundir)
        deadline = time.monotonic() + 10  # namespaces are cleaned up asynchronously
        while tag in sh("ip -o link").stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tag not in sh("ip -o link").stdout
