"""Socket buffers of the userspace datapath's packet sockets, per ISL instead of shared.

With ``datapath_type=netdev`` ovs-vswitchd sends every packet, out of every port, through
ONE non-blocking AF_PACKET socket (``af_packet_sock()`` in OVS's ``lib/netdev-linux.c``).
A packet waiting in a shaped port's htb queue stays charged to that socket's send buffer
(``net.core.wmem_default``, 208 KiB) until the veth takes it, so all the constellation's
link queues together hold at most about 90 full frames: once the ISLs a job saturates
hold that much, a send on ANY port fails with EAGAIN and OVS drops the packet (its log:
"error sending Ethernet packet ... Resource temporarily unavailable") -- SYNs included,
which then cost TCP's 1 s initial retransmission timeout.  A real ISL drops only when its
own queue is full.  Likewise each port's receive socket (one per port) overflows at 208 KiB
while vswitchd is off the CPU.

:func:`enlarge` raises the send buffer of that socket (and the receive buffers of the port
sockets) of a running ovs-vswitchd, from outside: ``pidfd_getfd`` (Linux >= 5.6) gives
this process a copy of the descriptor, ``SO_SNDBUFFORCE`` / ``SO_RCVBUFFORCE`` (root) set
the size on the socket both share.  The per-link queue limit is then the htb leaf's (the
veth's ``txqueuelen``, 1000 packets).  :func:`restore` puts the sizes back (the system
instance outlives the run).  Capabilities are detected: where the kernel refuses, the
result says why and nothing changes.

The send socket exists only once vswitchd has sent a packet; :func:`sockets` says whether
it is there.
"""

from __future__ import annotations

import ctypes
import os
import socket
from dataclasses import dataclass, field

SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SYS_PIDFD_GETFD = 438  # same number on every architecture (since Linux 5.6)
SEND_BUFFER_BYTES = 256 * 1024 * 1024  # the one send socket: every port's queued frames
RECV_BUFFER_BYTES = 8 * 1024 * 1024    # each port's receive socket


@dataclass(frozen=True)
class PacketSocket:
    """One AF_PACKET socket of a process: ``fd`` in that process, ``inode``, ``proto``
    (0: the send-only socket; 0x0003 ETH_P_ALL byte-swapped: a port's receive socket),
    ``ifindex`` (0: not bound)."""

    fd: int
    inode: int
    proto: int
    ifindex: int

    @property
    def sender(self) -> bool:
        return self.proto == 0 and self.ifindex == 0


@dataclass
class BufferChange:
    """What :func:`enlarge` did to one ovs-vswitchd: ``before`` holds every changed
    socket's (fd, SO_SNDBUF, SO_RCVBUF) as the kernel reported them first."""

    pid: int
    send_socket: bool = False
    sndbuf_bytes: int | None = None
    rcv_sockets: int = 0
    rcvbuf_bytes: int | None = None
    reason: str | None = None
    before: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"pid": self.pid, "send_socket": self.send_socket,
                "sndbuf_bytes": self.sndbuf_bytes, "rcv_sockets": self.rcv_sockets,
                "rcvbuf_bytes": self.rcvbuf_bytes, "reason": self.reason}


def parse_packet_table(text: str) -> dict[int, tuple[int, int]]:
    """``/proc/PID/net/packet`` -> {inode: (proto, ifindex)} (proto as the kernel prints
    it, hexadecimal, network byte order read as a host integer)."""
    out = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) >= 9:
            out[int(f[8])] = (int(f[3], 16), int(f[4]))
    return out


def sockets(pid: int) -> list[PacketSocket]:
    """The AF_PACKET sockets process ``pid`` holds (empty when it has none or is gone)."""
    try:
        with open(f"/proc/{pid}/net/packet") as fh:
            table = parse_packet_table(fh.read())
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    out = []
    for name in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in table:
            inode = int(target[8:-1])
            out.append(PacketSocket(int(name), inode, *table[inode]))
    return out


def _getfd(pidfd: int, fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def _apply(pid: int, targets: list[tuple[int, int | None, int | None]], record=None) -> None:
    """Set (fd, sndbuf, rcvbuf) on process ``pid``'s sockets (None: leave that one);
    ``record`` collects (fd, sndbuf, rcvbuf) as they were."""
    pidfd = os.pidfd_open(pid)
    try:
        for fd, snd, rcv in targets:
            mine = _getfd(pidfd, fd)
            try:
                s = socket.socket(fileno=mine)
                try:
                    if record is not None:
                        record.append((fd, s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                                       s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)))
                    # the kernel doubles what it is given (bookkeeping overhead): halve it
                    if snd is not None:
                        s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, max(snd // 2, 1))
                    if rcv is not None:
                        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, max(rcv // 2, 1))
                finally:
                    s.detach()
            finally:
                os.close(mine)
    finally:
        os.close(pidfd)


def _size(pid: int, fd: int, opt: int) -> int:
    pidfd = os.pidfd_open(pid)
    try:
        mine = _getfd(pidfd, fd)
    finally:
        os.close(pidfd)
    s = socket.socket(fileno=mine)
    try:
        return s.getsockopt(socket.SOL_SOCKET, opt)
    finally:
        s.close()


def enlarge(pid: int, sndbuf_bytes: int = SEND_BUFFER_BYTES,
            rcvbuf_bytes: int = RECV_BUFFER_BYTES) -> BufferChange:
    """Give ovs-vswitchd ``pid``'s send socket ``sndbuf_bytes`` and each port's receive
    socket ``rcvbuf_bytes`` (the kernel's accounting includes per-packet overhead, about
    2.3 KiB per full frame).  Never raises for a capability the kernel lacks: the
    result's ``reason`` says what was refused, and nothing was changed then."""
    ch = BufferChange(pid)
    socks = sockets(pid)
    if not socks:
        ch.reason = f"process {pid} holds no AF_PACKET socket"
        return ch
    send = [s for s in socks if s.sender]
    recv = [s for s in socks if not s.sender]
    targets = [(s.fd, sndbuf_bytes, None) for s in send] + [(s.fd, None, rcvbuf_bytes) for s in recv]
    try:
        _apply(pid, targets, ch.before)
    except OSError as e:
        ch.reason = f"cannot resize ovs-vswitchd's packet sockets: {e.strerror or e}"
        restore(ch)  # whatever was already changed
        return ch
    ch.send_socket = bool(send)
    if send:
        ch.sndbuf_bytes = _size(pid, send[0].fd, socket.SO_SNDBUF)
    else:
        ch.reason = "no send socket yet (vswitchd has sent no packet)"
    ch.rcv_sockets = len(recv)
    if recv:
        ch.rcvbuf_bytes = _size(pid, recv[0].fd, socket.SO_RCVBUF)
    return ch


def restore(ch: BufferChange) -> None:
    """Put back the sizes :func:`enlarge` found (what the kernel reported, halved again
    as the kernel doubles a set value); a process or socket gone meanwhile is skipped."""
    for fd, snd, rcv in ch.before:
        try:
            _apply(ch.pid, [(fd, snd, rcv)])
        except OSError:
            continue
    ch.before = []
