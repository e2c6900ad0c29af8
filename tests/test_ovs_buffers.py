"""topo.ovs_buffers: another process's packet socket resized from outside (no network built)."""

import os
import subprocess
import sys

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
