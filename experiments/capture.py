"""Packet captures on a running testbed: ``--pcap`` of every emulated experiment.

A capture spec is a comma-separated list of what Mininet users see:
``h<sat>_<orb>`` (a satellite computer's interface, inside its namespace), ``g<k>``
(ground station k), ``s<sat>_<orb>-eth<port>`` (a switch port, i.e. one end of an ISL)
or ``auto`` (ground station 1 and its line-of-sight satellite).  One tcpdump per item
writes ``<name>.pcap``; each is stopped by PID.  Decode them with
``python3 -m experiments.pcap.report FILE.pcap``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

from topo.addressing import host_name

_HOST = re.compile(r"[hg]\d+(_\d+)?")
_PORT = re.compile(r"s\d+_\d+-eth\d+")


class CaptureError(ValueError):
    """A capture spec names nothing in this testbed."""


def parse_spec(spec: str, testbed) -> list[str]:
    """Interface owners to capture on, validated against ``testbed`` (CaptureError)."""
    hosts = {h.name for h in testbed.hosts}
    items = []
    for item in (x.strip() for x in spec.split(",")):
        if item == "auto":
            items += ["g1", host_name(tuple(testbed.cfg.ground[0]))]
        elif _HOST.fullmatch(item):
            if item not in hosts:
                raise CaptureError(f"--pcap {item}: no such host in this testbed")
            items.append(item)
        elif _PORT.fullmatch(item):
            if not os.path.exists(f"/sys/class/net/{item}"):
                raise CaptureError(f"--pcap {item}: no such switch port in this testbed")
            items.append(item)
        else:
            raise CaptureError(f"--pcap {item!r}: expected h<sat>_<orb>, g<k>, "
                               f"s<sat>_<orb>-eth<port> or auto")
    return list(dict.fromkeys(items))


class Capture:
    """tcpdump on the given items of ``testbed`` while the context is open.

    snaplen_bytes: bytes kept per packet (headers and the protocol's frame header are
        in the first 128; 0 keeps whole packets).
    """

    def __init__(self, testbed, spec: str, out_dir: str, snaplen_bytes: int = 0):
        if not shutil.which("tcpdump"):
            raise CaptureError("--pcap: tcpdump is not installed (run ./setup.sh)")
        self.testbed = testbed
        self.items = parse_spec(spec, testbed)
        self.out_dir = out_dir
        self.snaplen_bytes = snaplen_bytes
        self.procs: dict[str, subprocess.Popen] = {}

    def _popen(self, item: str, argv: list[str]):
        hosts = {h.name: h for h in self.testbed.hosts}
        if item in hosts:
            return hosts[item].popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> "Capture":
        os.makedirs(self.out_dir, exist_ok=True)
        for item in self.items:
            intf = f"{item}-eth0" if _HOST.fullmatch(item) else item
            path = os.path.join(self.out_dir, f"{item}.pcap")
            # A large buffer and immediate mode: with the defaults tcpdump drops packets
            # of fast local transfers.
            argv = ["tcpdump", "-i", intf, "-s", str(self.snaplen_bytes), "-B", "65536",
                    "-U", "--immediate-mode", "-w", path]
            self.procs[item] = self._popen(item, argv)
        # tcpdump needs a moment to open its socket; packets before that are lost.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(
                os.path.exists(os.path.join(self.out_dir, f"{i}.pcap")) for i in self.items):
            time.sleep(0.05)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return False

    @property
    def files(self) -> list[str]:
        return [os.path.join(self.out_dir, f"{i}.pcap") for i in self.items]
