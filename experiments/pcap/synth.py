"""A synthetic capture of one SpaceCoMP job, for tests and for trying the tools offline.

    python3 -m experiments.pcap.synth OUT.pcap [--job-id N]

Every frame is encoded by :mod:`node_app.protocol`; the IP/TCP around it is built with
scapy (Ethernet, proper handshakes and sequence numbers).  The capture deliberately holds
the cases a decoder must survive: a DataChunk split over several segments (MSS), two
frames in one segment, a retransmitted segment and an out-of-order segment.  (tshark
needs ``-o tcp.reassemble_out_of_order:TRUE`` for the latter.)

The job (2 collectors, 2 mappers, 1 reducer; addresses 10.0.<role>.<n>, daemons on
node_app.addressing.DEFAULT_PORT):
ground -SubmitJob-> coordinator -Assign*-> roles; collectors -DataChunk-> mappers
-DataChunk-> reducer; PhaseDone to the upstream sender and to the coordinator; reducer
-DataChunk(ground)/JobResult-> coordinator -JobResult-> ground.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from node_app import protocol as P
from node_app.addressing import DEFAULT_PORT
from topo import cli

# The synthetic testbed's key (the capture is a fixture, not a secret).
KEY = b"spacecomp synthetic capture key!"
MSS = 1448  # bytes of TCP payload per segment (Ethernet MTU 1500, TCP timestamps)
STEP_S = 0.001  # spacing of consecutive packets, s

GROUND, COORD = "10.0.0.100", "10.0.1.1"
COLLECTORS = ["10.0.2.1", "10.0.2.2"]
MAPPERS = ["10.0.3.1", "10.0.3.2"]
REDUCER = "10.0.4.1"


@dataclass
class Sent:
    """One frame as the synthesizer sent it (the ground truth a decoder must recover)."""

    op: int
    job_id: int
    wire_bytes: int
    src: str
    dst: str
    role: int | None = None  # DataChunk receiving role


@dataclass
class Capture:
    """Packets (time-ordered) and the frames in the order their last byte was sent."""

    packets: list = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    t: float = 1_700_000_000.0
    _next_port: int = 40000

    def tick(self) -> float:
        self.t += STEP_S
        return self.t

    def emit(self, pkt) -> None:
        pkt.time = self.tick()
        self.packets.append(pkt)

    def connect(self, client: str, server: str, port: int = DEFAULT_PORT) -> "Conn":
        self._next_port += 1
        conn = Conn(self, client, self._next_port, server, port)
        conn.handshake()
        return conn


class Conn:
    """One TCP connection; ``send`` writes frames as segments of at most MSS bytes."""

    def __init__(self, cap: Capture, client: str, cport: int, server: str, sport: int):
        self.cap = cap
        self.ends = {True: (client, cport), False: (server, sport)}
        self.seq = {True: 1000 + cport, False: 5000 + cport}

    def _seg(self, from_client: bool, flags: str, data: bytes = b"", seq: int | None = None):
        (src, sp), (dst, dp) = self.ends[from_client], self.ends[not from_client]
        s = self.seq[from_client] if seq is None else seq
        return (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst=dst)
                / TCP(sport=sp, dport=dp, flags=flags, seq=s, ack=self.seq[not from_client])
                / data)

    def handshake(self) -> None:
        self.cap.emit(self._seg(True, "S"))
        self.seq[True] += 1
        self.cap.emit(self._seg(False, "SA"))
        self.seq[False] += 1
        self.cap.emit(self._seg(True, "A"))

    def send(self, from_client: bool, *frames: tuple[bytes, Sent], retransmit: bool = False,
             reorder: bool = False) -> None:
        """Send frames back to back on one side of the connection.

        retransmit: repeat the first segment; reorder: emit the last two segments swapped."""
        data = b"".join(raw for raw, _ in frames)
        segs = []
        for off in range(0, len(data), MSS):
            segs.append(self._seg(from_client, "PA", data[off:off + MSS], self.seq[from_client] + off))
        if reorder and len(segs) >= 2:
            segs[-2], segs[-1] = segs[-1], segs[-2]
        if retransmit:
            segs.insert(1, segs[0].copy())
        for s in segs:
            self.cap.emit(s)
        self.seq[from_client] += len(data)
        self.cap.sent.extend(s for _, s in frames)

    def close(self) -> None:
        self.cap.emit(self._seg(True, "FA"))
        self.cap.emit(self._seg(False, "FA"))


def _frame(op: int, job_id: int, src: str, dst: str, body=None, fixed=None) -> tuple[bytes, Sent]:
    raw = P.encode_frame(op, job_id, body, fixed, key=KEY)
    role = body.role if isinstance(body, P.DataChunk) else None
    return raw, Sent(op, job_id, len(raw), src, dst, role)


def _records(job_id, src, dst, role, stream, seq, n_words, end=False):
    payload = ('{"words":{' + ",".join(f'"w{i}":{i}' for i in range(n_words)) + "}}").encode()
    return _frame(P.DATA_CHUNK, job_id, src, dst, P.DataChunk(role, P.CHUNK_RECORDS, stream, seq,
                                                              payload, end))


def job_capture(job_id: int = 7) -> Capture:
    """The packets of one synthetic job, with the frames sent (see the module docstring)."""
    cap = Capture()
    j = job_id
    ground = cap.connect(GROUND, COORD)
    ground.send(True, _frame(P.SUBMIT_JOB, j, GROUND, COORD,
                             {"jobid": "synthetic", "grid": "5x5",
                              "tasks": {"collect": "doccollector", "map": "wordcountmapper",
                                        "reduce": "sumreducer"}},
                             P.SubmitFixed(10.0, -20.0, 5.0, -10.0, 123456789, 1.5, 2.0, 0.5,
                                           5.0, True, "lapjv")))
    for i, host in enumerate(COLLECTORS):
        c = cap.connect(COORD, host)
        c.send(True, _frame(P.ASSIGN_COLLECTOR, j, COORD, host, {"mapper": [MAPPERS[i], DEFAULT_PORT],
                                                                  "data_id": i}))
        c.close()
    for host in MAPPERS:
        c = cap.connect(COORD, host)
        c.send(True, _frame(P.ASSIGN_MAPPER, j, COORD, host, {"reducer": [REDUCER, DEFAULT_PORT],
                                                               "collectors": 1}))
        c.close()
    c = cap.connect(COORD, REDUCER)
    c.send(True, _frame(P.ASSIGN_REDUCER, j, COORD, REDUCER, {"los": [COORD, DEFAULT_PORT],
                                                               "mappers": 2}))
    c.close()

    # collect: collector 0 sends two small chunks in one segment; collector 1 sends a file
    # whose data segment spans three TCP segments (one retransmitted, two swapped).
    c0 = cap.connect(COLLECTORS[0], MAPPERS[0])
    c0.send(True, _records(j, COLLECTORS[0], MAPPERS[0], P.ROLE_MAPPER, 0, 0, 3),
            _records(j, COLLECTORS[0], MAPPERS[0], P.ROLE_MAPPER, 0, 1, 2, end=True))
    c1 = cap.connect(COLLECTORS[1], MAPPERS[1])
    fb = P.DataChunk(P.ROLE_MAPPER, P.CHUNK_FILE_BEGIN, 1, 0, P.FILE_NO.pack(0) + b"scene.tif")
    c1.send(True, _frame(P.DATA_CHUNK, j, COLLECTORS[1], MAPPERS[1], fb))
    blob = bytes(range(256)) * 15  # 3840 bytes: three segments
    fd = P.DataChunk(P.ROLE_MAPPER, P.CHUNK_FILE_DATA, 1, 1, P.FILE_NO.pack(0) + blob)
    c1.send(True, _frame(P.DATA_CHUNK, j, COLLECTORS[1], MAPPERS[1], fd), retransmit=True,
            reorder=True)
    fe = P.DataChunk(P.ROLE_MAPPER, P.CHUNK_FILE_END, 1, 2, P.FILE_SIZE.pack(0, len(blob)), True)
    c1.send(True, _frame(P.DATA_CHUNK, j, COLLECTORS[1], MAPPERS[1], fe))
    for conn, (col, mapper) in zip((c0, c1), zip(COLLECTORS, MAPPERS)):
        conn.send(False, _frame(P.PHASE_DONE, j, mapper, col, {"role": "mapper", "status": "ok"}))
        conn.close()
    for col in COLLECTORS:
        c = cap.connect(col, COORD)
        c.send(True, _frame(P.PHASE_DONE, j, col, COORD, {"role": "collector", "status": "ok"}))
        c.close()

    # map: each mapper streams its partial counts to the reducer.
    for i, mapper in enumerate(MAPPERS):
        c = cap.connect(mapper, REDUCER)
        # 200 records: about 2 kB, split over two in-order segments
        c.send(True, _records(j, mapper, REDUCER, P.ROLE_REDUCER, i, 0, 200, end=True))
        c.send(False, _frame(P.PHASE_DONE, j, REDUCER, mapper, {"role": "reducer", "status": "ok"}))
        c.close()
        c = cap.connect(mapper, COORD)
        c.send(True, _frame(P.PHASE_DONE, j, mapper, COORD, {"role": "mapper", "status": "ok"}))
        c.close()

    # result: the reducer hands its output to the coordinator, which answers the ground.
    c = cap.connect(REDUCER, COORD)
    c.send(True, _records(j, REDUCER, COORD, P.ROLE_GROUND, 0, 0, 5, end=True))
    c.send(True, _frame(P.JOB_RESULT, j, REDUCER, COORD, {"status": "ok", "records": 5}))
    c.close()
    ground.send(False, _frame(P.JOB_RESULT, j, COORD, GROUND, {"status": "ok", "records": 5}))
    ground.close()
    return cap


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m experiments.pcap.synth", description=__doc__.split("\n")[0])
    p.add_argument("out", help="pcap file to write")
    p.add_argument("--job-id", type=int, default=7)
    args = p.parse_args(argv)
    cap = job_capture(args.job_id)
    wrpcap(args.out, cap.packets)
    print(f"{args.out}: {len(cap.packets)} packets, {len(cap.sent)} frames", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
