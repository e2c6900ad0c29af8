"""Scapy layers for SpaceCoMP frames and a TCP stream reassembler for captures.

Layers (one frame, as :mod:`node_app.protocol` encodes it)::

    SpaceCoMP      length u32 | version u8 ... tag[32]   (length counts the bytes after it;
                   the HMAC-SHA256 tag trails the message, shown as this layer's ``tag``)
    LeoDOS         op u8 | reserved u8 | job_id u16
    SubmitJobBody  the 41-byte fixed part | ext_version u8 | ext (JSON)
    JsonBody       ext_version u8 | json                (Assign*, PhaseDone, JobResult, Error)
    DataChunkBody  role u8 | kind u8 | flags u8 | reserved u8 | stream u16 | seq u32 | payload

The field lists are generated from :mod:`node_app.protocol`'s ``struct`` formats so the
byte layout has one definition; only the field names are written here.  Frames are
decoded without the testbed key (tags are shown, not verified) unless one is given to
:func:`read_frames`; ``SpaceCoMP.key`` signs frames built by hand with scapy.

A TCP segment need not hold exactly one frame (a DataChunk spans many segments, small
control frames may share one), so a capture is decoded by :func:`read_frames`, which
reassembles each direction of each TCP connection by sequence number and cuts the byte
stream at the length fields.  ``SpaceCoMP`` is also bound to the daemons' default TCP port
for interactive use (``rdpcap(...)[i].show()``, ``sniff(session=TCPSession)``).
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

from scapy.config import conf
from scapy.fields import ByteEnumField, ByteField, IEEEFloatField, IntField, LongField, \
    ShortField, StrField, StrFixedLenField
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, Ether, Loopback
from scapy.packet import Packet, bind_layers
from scapy.utils import PcapReader

from node_app import protocol as P
from node_app.addressing import DEFAULT_PORT

try:  # Linux "any" interface captures in newer libpcap (SLL2)
    from scapy.layers.l2 import CookedLinuxV2
except ImportError:  # pragma: no cover - older scapy
    CookedLinuxV2 = None

ROLE_NAMES = {P.ROLE_MAPPER: "mapper", P.ROLE_REDUCER: "reducer", P.ROLE_GROUND: "ground"}
CHUNK_KIND_NAMES = {P.CHUNK_RECORDS: "records", P.CHUNK_FILE_BEGIN: "file_begin",
                    P.CHUNK_FILE_DATA: "file_data", P.CHUNK_FILE_END: "file_end"}

_FIELD_FOR_CODE = {"B": ByteField, "H": ShortField, "I": IntField, "Q": LongField,
                   "f": IEEEFloatField}


def _fields(layout: struct.Struct, names: list[str], enums: dict | None = None,
            defaults: dict | None = None) -> list:
    """Scapy fields for a big-endian ``struct`` layout, one name per member.

    enums: name -> {value: label}, shown by scapy instead of the number (u8 only);
    defaults: name -> default value (otherwise 0)."""
    codes = layout.format.lstrip(">!")
    if len(codes) != len(names):
        raise ValueError(f"{layout.format}: {len(codes)} members, {len(names)} names")
    enums, defaults = enums or {}, defaults or {}
    out = []
    for code, name in zip(codes, names):
        default = defaults.get(name, 0)
        if name in enums:
            out.append(ByteEnumField(name, default, enums[name]))
        else:
            out.append(_FIELD_FOR_CODE[code](name, default))
    return out


# SubmitFixed's dataclass fields are the fixed part's members in wire order, except that
# the two flag views (ascending_only, solver) travel as one flags byte.
_SUBMIT_NAMES = [f.name for f in dataclasses.fields(P.SubmitFixed)][:9] + ["flags"]


class SpaceCoMP(Packet):
    """The TCP framing: ``length u32 | version u8``, a LeoDOS message, then the 32-byte
    ``tag`` (on the wire it trails the message; scapy shows it as this layer's field)."""

    name = "SpaceCoMP"
    fields_desc = _fields(P.FRAME_PREFIX, ["length", "version"],
                          defaults={"length": None, "version": P.PROTOCOL_VERSION}) + [
        StrFixedLenField("tag", None, P.TAG_BYTES)]
    key: bytes | None = None  # signs frames built by hand whose tag is left unset

    def post_build(self, pkt, pay):
        prefix, tag = pkt[:P.FRAME_PREFIX.size], pkt[P.FRAME_PREFIX.size:]
        if self.length is None:  # built by hand: count version + message + tag
            prefix = P.FRAME_PREFIX.pack(len(pay) + 1 + P.TAG_BYTES, self.version)
        if self.tag is None:
            tag = P.tag(self.key, prefix, pay) if self.key else bytes(P.TAG_BYTES)
        return prefix + pay + tag

    def do_dissect(self, s):
        # length | version | message | tag | (next frame ...): the tag is cut from the end
        # of the frame; the message becomes the payload, anything after the frame padding.
        if len(s) < P.FRAME_PREFIX.size:
            return super().do_dissect(s)
        length, version = P.FRAME_PREFIX.unpack_from(s)
        end = min(len(s), 4 + length)
        tag_at = max(P.FRAME_PREFIX.size, end - P.TAG_BYTES)
        self.fields.update(length=length, version=version, tag=s[tag_at:end])
        self._message_bytes = tag_at - P.FRAME_PREFIX.size
        return s[P.FRAME_PREFIX.size:tag_at] + s[end:]

    def extract_padding(self, s):
        n = getattr(self, "_message_bytes", len(s))
        return s[:n], s[n:]

    @classmethod
    def tcp_reassemble(cls, data, metadata, session):
        """For ``sniff(session=TCPSession)``: a packet once a whole frame is buffered."""
        if len(data) < 4:
            return None
        (length,) = struct.unpack(">I", data[:4])
        return cls(data) if len(data) >= 4 + length else None


class LeoDOS(Packet):
    """The LeoDOS message header, ``op u8 | reserved u8 | job_id u16``."""

    name = "LeoDOS"
    fields_desc = _fields(P.HEADER, ["op", "reserved", "job_id"], {"op": P.OP_NAMES})

    def guess_payload_class(self, payload):
        if self.op == P.SUBMIT_JOB:
            return SubmitJobBody
        if self.op == P.DATA_CHUNK:
            return DataChunkBody
        if self.op in P.JSON_OPS:
            return JsonBody
        return Packet.guess_payload_class(self, payload)


class SubmitJobBody(Packet):
    """SubmitJob: the 41-byte fixed part (angles in degrees, volume in bytes), then the
    versioned JSON extension."""

    name = "SubmitJob"
    fields_desc = _fields(P.SUBMIT_FIXED, _SUBMIT_NAMES) + [ByteField("ext_version", P.EXTENSION_VERSION),
                                                           StrField("ext", b"")]


class JsonBody(Packet):
    """Assign*, PhaseDone, JobResult, Error: ``ext_version u8 | JSON object``."""

    name = "LeoDOS JSON body"
    fields_desc = [ByteField("ext_version", P.EXTENSION_VERSION), StrField("json", b"")]


class DataChunkBody(Packet):
    """DataChunk: the 10-byte chunk header, then the payload (records JSON or file bytes)."""

    name = "DataChunk"
    fields_desc = _fields(P.CHUNK_HEADER, ["role", "kind", "flags", "reserved", "stream", "seq"],
                          {"role": ROLE_NAMES, "kind": CHUNK_KIND_NAMES}) + [StrField("data", b"")]  # not "payload": that name is scapy's next layer


bind_layers(SpaceCoMP, LeoDOS)
bind_layers(TCP, SpaceCoMP, dport=DEFAULT_PORT)
bind_layers(TCP, SpaceCoMP, sport=DEFAULT_PORT)


# --- stream reassembly ------------------------------------------------------------------------
@dataclass
class CapturedFrame:
    """One frame found in a capture.

    time: capture time (s since the epoch) of the segment that completed the frame;
    first_time: of the segment that carried its first byte.  wire_bytes: the whole frame
    including its length field (what node_app.transport counts), not TCP/IP headers.
    message: node_app.protocol's decoding, None when it rejected the frame (``error``).
    packet: the scapy view (``SpaceCoMP`` / ``LeoDOS`` / body).
    conn: index of the TCP connection, in order of first appearance.
    """

    time: float
    first_time: float
    src: str
    sport: int
    dst: str
    dport: int
    op: int
    job_id: int
    wire_bytes: int
    conn: int
    packet: Packet
    message: P.Message | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return P.OP_NAMES.get(self.op, f"0x{self.op:02x}")


class _Direction:
    """One direction of one TCP connection: in-order bytes, cut into frames."""

    def __init__(self, conn: int, ours: bool | None):
        self.conn = conn
        self.ours = ours          # None: not yet known (heuristic mode)
        self.next_seq: int | None = None
        self.pending: dict[int, tuple[bytes, float]] = {}   # out-of-order segments by seq
        self.buf = bytearray()
        self.base = 0             # stream offset of buf[0]
        self.times: list[tuple[int, float]] = []  # (stream offset after a segment, its time)
        self.dead = False         # a bad length field: the stream cannot be resynchronised

    def add(self, seq: int, data: bytes, t: float, syn: bool) -> None:
        if syn:
            self.next_seq = (seq + 1) & 0xFFFFFFFF
            return
        if not data or self.dead:
            return
        if self.next_seq is None:  # capture started mid-connection
            self.next_seq = seq
        ahead = (seq - self.next_seq) & 0xFFFFFFFF
        if ahead >= 1 << 31:       # (partly) old data: a retransmission
            overlap = (self.next_seq - seq) & 0xFFFFFFFF
            if overlap >= len(data):
                return
            data, ahead = data[overlap:], 0
        if ahead:
            self.pending.setdefault((self.next_seq + ahead) & 0xFFFFFFFF, (data, t))
            return
        self._append(data, t)
        while self.next_seq in self.pending:
            d, pt = self.pending.pop(self.next_seq)
            self._append(d, max(t, pt))

    def _append(self, data: bytes, t: float) -> None:
        self.buf += data
        self.next_seq = (self.next_seq + len(data)) & 0xFFFFFFFF
        self.times.append((self.base + len(self.buf), t))

    def _time_at(self, offset: int) -> float:
        """Time of the segment holding stream byte ``offset``."""
        for end, t in self.times:
            if end > offset:
                return t
        return self.times[-1][1]

    def frames(self) -> Iterator[tuple[bytes, float, float]]:
        """Whole frames now buffered: (frame bytes, first_time, time)."""
        while not self.dead and len(self.buf) >= 4:
            try:
                length = P.check_prefix(bytes(self.buf[:4]))
            except P.ProtocolError:
                self.dead = True
                return
            if self.ours is None:  # heuristic mode: is this stream SpaceCoMP at all?
                if len(self.buf) < 6:
                    return
                self.ours = self.buf[4] == P.PROTOCOL_VERSION and self.buf[5] in P.OP_NAMES
                if not self.ours:
                    self.dead = True
                    return
            end = 4 + length
            if len(self.buf) < end:
                return
            raw = bytes(self.buf[:end])
            first, last = self._time_at(self.base), self._time_at(self.base + end - 1)
            del self.buf[:end]
            self.base += end
            self.times = [(e, t) for e, t in self.times if e > self.base]
            yield raw, first, last


def _tcp_of(pkt: Packet):
    """(src, dst, TCP layer, TCP payload bytes) of an IPv4/IPv6 TCP packet, else None."""
    if TCP not in pkt:
        return None
    ip = pkt[IP] if IP in pkt else pkt[IPv6] if IPv6 in pkt else None
    if ip is None:
        return None
    tcp = pkt[TCP]
    data = bytes(tcp.payload)
    # Cut at the IP length: Ethernet pads short frames, and scapy keeps that padding
    # behind the TCP payload.  (A zero length, as in TSO captures, means "all of it".)
    ip_len = ip.len - ip.ihl * 4 if isinstance(ip, IP) else ip.plen
    if ip_len:
        data = data[:max(0, ip_len - tcp.dataofs * 4)]
    return ip.src, ip.dst, tcp, data


def decode_frame(raw: bytes, key: bytes | None = None) -> tuple[P.Message | None, str | None]:
    """node_app.protocol's decoding of one whole frame: (message, None) or (None, error).
    key: the testbed key to verify the tag with (None: not verified)."""
    try:
        msg, _used = P.decode_frame(raw, key=key)
        return msg, None
    except P.ProtocolError as e:
        return None, str(e)


def reassemble(packets: Iterable[Packet], ports: Iterable[int] | None = None,
               testbed_key: bytes | None = None) -> Iterator[CapturedFrame]:
    """Decoded SpaceCoMP frames from captured packets, in the order they completed.

    testbed_key: given, a frame whose tag does not verify under it is an ``error``.
    ports: TCP ports that carry the protocol (either end of a connection).  None guesses
    per connection from its first bytes (a plausible length, protocol version, known
    opcode), which also finds daemons on per-satellite ports (loopback port scheme).
    """
    port_set = None if ports is None else frozenset(ports)
    dirs: dict[tuple, _Direction] = {}
    conns: dict[frozenset, int] = {}
    for pkt in packets:
        found = _tcp_of(pkt)
        if found is None:
            continue
        src, dst, tcp, data = found
        key = (src, tcp.sport, dst, tcp.dport)
        d = dirs.get(key)
        if d is None:
            if port_set is not None and tcp.sport not in port_set and tcp.dport not in port_set:
                continue
            ends = frozenset([(src, tcp.sport), (dst, tcp.dport)])
            conn = conns.setdefault(ends, len(conns))
            d = dirs[key] = _Direction(conn, True if port_set is not None else None)
        syn = bool(tcp.flags & 0x02)
        if syn and key in dirs and d.next_seq is not None and d.buf:
            # A new connection reusing the 4-tuple: start over.
            d = dirs[key] = _Direction(d.conn, d.ours if port_set is not None else None)
        d.add(tcp.seq, data, float(pkt.time), syn)
        for raw, first, last in d.frames():
            msg, err = decode_frame(raw, testbed_key)
            view = SpaceCoMP(raw)
            yield CapturedFrame(time=last, first_time=first, src=src, sport=tcp.sport,
                                dst=dst, dport=tcp.dport, op=view[LeoDOS].op,
                                job_id=view[LeoDOS].job_id, wire_bytes=len(raw), conn=d.conn,
                                packet=view, message=msg, error=err)


# Layers dissected while reading.  SpaceCoMP is left out on purpose: a lone segment's
# payload is not a frame (frames are cut from the reassembled stream and dissected then);
# LeoDOS stays in so that an explicit SpaceCoMP(raw) still decodes its header.
_READ_LAYERS = [x for x in (Ether, CookedLinux, CookedLinuxV2, Loopback, IP, IPv6, TCP, LeoDOS) if x]


MAX_CAPLEN = 4 * 0xFFFF  # bytes; scapy's own upper bound per record (tcpdump snaps 262144)


def _all_packets(reader) -> Iterator[Packet]:
    """Packets of a reader, whole: iterating a scapy reader cuts each record at 65535
    bytes, and on lo (MTU 65536) or with GSO a TCP segment can be longer."""
    while True:
        try:
            pkt = reader.read_packet(size=MAX_CAPLEN)
        except EOFError:
            return
        if pkt is not None:
            yield pkt


def read_frames(path: str, ports: Iterable[int] | None = None,
                key: bytes | None = None) -> Iterator[CapturedFrame]:
    """Decoded frames of a pcap or pcapng file (see :func:`reassemble`).

    Raises OSError for an unreadable file and scapy's Scapy_Exception for one that is not
    a capture."""
    # Dissect only link/IP/TCP while reading: several times faster on big captures.  The
    # filter is process-wide, so it is skipped if someone else set one.
    mine = not conf.layers.filtered
    if mine:
        conf.layers.filter(_READ_LAYERS)
    try:
        with PcapReader(path) as reader:
            yield from reassemble(_all_packets(reader), ports, key)
    finally:
        if mine:
            conf.layers.unfilter()
