"""topo.ovs_buffers: another process's packet socket resized from outside and restored;
on a network, one link's full queue no longer costs packets on other links (and did with
the shared buffer); every private instance's vswitchd gets its buffers."""

import os
import socket
import subprocess
import sys
import time

import pytest

from topo import ovs_buffers

CHILD = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)   # like ovs-vswitchd's send socket
print("ready", flush=True)
for line in sys.stdin:
    print(s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF), flush=True)
"""


def test_parse_packet_table():
    text = ("sk               RefCnt Type Proto  Iface R Rmem   User   Inode\n"
            "000000004bd94b68 3      3    0003   183684 1 0      0      286791498\n"
            "00000000446cb85b 2      3    0000   0     0 0      0      286834979\n")
    assert ovs_buffers.parse_packet_table(text) == {286791498: (3, 183684), 286834979: (0, 0)}


def test_no_packet_socket_says_why():
    ch = ovs_buffers.enlarge(os.getpid())
    assert not ch.send_socket and "no AF_PACKET socket" in ch.reason


@pytest.mark.skipif(os.geteuid() != 0, reason="AF_PACKET sockets and SO_SNDBUFFORCE need root")
def test_enlarge_and_restore_another_process_send_buffer():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"

        def sndbuf():
            child.stdin.write("?\n")
            child.stdin.flush()
            return int(child.stdout.readline())

        before = sndbuf()
        socks = ovs_buffers.sockets(child.pid)
        assert [s.sender for s in socks] == [True]
        ch = ovs_buffers.enlarge(child.pid, sndbuf_bytes=64 << 20)
        assert ch.reason is None and ch.send_socket, ch.reason
        assert sndbuf() == ch.sndbuf_bytes == 64 << 20 > before
        ovs_buffers.restore(ch)
        assert sndbuf() == before
    finally:
        child.kill()
        child.wait()


# --- on a network (root, the machine lock) --------------------------------------------------

def _testbed(**raw):
    from tests.test_emulator_network import _ovs_or_skip
    _ovs_or_skip()
    from topo.config import from_dict
    from topo.testbed import Testbed
    return Testbed(from_dict({"lock_wait_s": 1800, **raw}), echo=lambda m: None)


def _ping_loss_while_flooded(tb) -> tuple[int, int]:
    """(lost, sent) of pings over ISL (1,3)-(2,3) while UDP floods ISL (1,1)-(2,1) far
    above its shaped rate (its htb queue full: 1000 frames)."""
    import re
    dst, src = tb.host_of((2, 1)), tb.host_of((1, 1))
    server = dst.popen(["iperf3", "-s", "-1", "-p", "5398"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    client = None
    try:
        time.sleep(0.5)
        client = src.popen(["iperf3", "-c", tb.ip_of((2, 1)), "-p", "5398", "-u", "-b", "200M",
                            "-t", "8"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # the flooded link's queue is full
        out = tb.host_of((1, 3)).cmd(f"ping -c 20 -i 0.1 -W 1 {tb.ip_of((2, 3))}")
    finally:
        for p in (client, server):
            if p is not None:
                p.kill()
                p.wait(5)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)) - int(m.group(2)), int(m.group(1))


@pytest.mark.root
@pytest.mark.parametrize("enlarged", [False, True])
def test_a_full_link_queue_drops_nothing_on_other_links(enlarged):
    """One ISL's full queue (UDP far above its 2 Mbit/s) and pings over another, idle ISL:
    with the shared 208 KiB send buffer (``ovs_socket_buffers: false``) OVS fails sends on
    every port and pings are lost; with the buffers enlarged none is."""
    from topo.constellation import Constellation
    from topo.link_model import LinkModel
    model = LinkModel().shannon_rate_bps(Constellation(planes=3, sats_per_plane=3).in_plane_length_m)
    tb = _testbed(grid="3x3", rate_scale=2e6 / model, ovs_socket_buffers=enlarged)
    with tb:
        if tb.datapath_type != "netdev":
            pytest.skip("the shared send socket is the userspace datapath's")
        info = tb.metadata.get("ovs_socket_buffers")
        if enlarged:
            assert info and all(i["send_socket"] and i["reason"] is None for i in info), info
            assert info[0]["sndbuf_bytes"] == ovs_buffers.SEND_BUFFER_BYTES
        else:
            assert info is None
        lost, sent = _ping_loss_while_flooded(tb)
    print(f"enlarged={enlarged}: {lost} of {sent} pings lost on an idle link")
    if enlarged:
        assert lost == 0
    else:
        assert lost > 0


@pytest.mark.root
def test_every_private_instance_gets_its_buffers_and_the_system_one_is_restored():
    """Two private instances (4x4 in two blocks of planes): each vswitchd's send socket is
    enlarged (one of them opened by the testbed's ping); on the system instance the send
    buffer is back to what it was after teardown."""
    tb = _testbed(grid="4x4", ovs_instances=2)
    with tb:
        if tb.datapath_type != "netdev":
            pytest.skip("userspace datapath only")
        info = tb.metadata["ovs_socket_buffers"]
        assert len(info) == 2 and all(i["send_socket"] for i in info), info
        assert {i["sndbuf_bytes"] for i in info} == {ovs_buffers.SEND_BUFFER_BYTES}
        assert all(i["rcv_sockets"] >= 8 for i in info), info
    tb = _testbed(grid="3x3", ovs_instances=0)
    with tb:
        pid = tb.metadata["ovs_socket_buffers"][0]["pid"]
        before = tb._ovs_buffer_changes[0].before
        assert tb.metadata["ovs_socket_buffers"][0]["sndbuf_bytes"] == ovs_buffers.SEND_BUFFER_BYTES
    send = [s for s in ovs_buffers.sockets(pid) if s.sender]
    was = [snd for fd, snd, _rcv in before if send and fd == send[0].fd]
    assert was and ovs_buffers._size(pid, send[0].fd, socket.SO_SNDBUF) == was[0]
