"""The SpaceCoMP wire format: LeoDOS messages framed for TCP.  Pure codec, no I/O.

Every LeoDOS message starts with the 4-byte header (network byte order)::

    op u8 | reserved u8 | job_id u16

Over TCP each message travels in a frame that adds an explicit length and a protocol
version in front of it::

    length u32 | version u8 | op u8 | reserved u8 | job_id u16 | body ...
    `length` counts every byte after the length field itself (version + message).

Bodies by opcode (version 1):

* ``SubmitJob`` (0x00): the 41-byte fixed part, bit-exact (big-endian)::

      ul_lat f32 | ul_lon f32 | lr_lat f32 | lr_lon f32 | data_volume_bytes u64 |
      map_processing_factor f32 | reduce_processing_factor f32 |
      map_reduction_factor f32 | reduce_reduction_factor f32 | flags u8
      flags: bit 0 ascending-only; bits 1-2 solver (0 Hungarian, 1 LAPJV); others 0.

  followed by the *extension*: ``ext_version u8 | JSON object (UTF-8)``.  Extension
  version 1 keys (all optional unless noted): ``jobid`` (str, the ground's job name),
  ``grid`` ("PxS"), ``tasks`` ({"collect", "map", "reduce"}: registry names, required),
  ``job_data`` (any JSON, handed to the tasks), ``aoi`` (``{"kind": "grid", "minsat",
  "maxsat", "collectors", "seed"}`` or ``{"kind": "geo", "t_s", "count"}``, the latter
  using the fixed part's box), ``allocator``, ``reducetype``, ``cost``, ``los`` ([sat, orb]),
  ``max_collect`` (records per DataChunk), ``phase_timeout_s``.
* ``AssignCollector`` / ``AssignMapper`` / ``AssignReducer`` / ``PhaseDone`` /
  ``JobResult`` / ``Error``: ``ext_version u8 | JSON object``.  Contents are documented
  where they are built (node_app.coordinator and the role modules).
* ``DataChunk`` (0x10): a 10-byte chunk header, then the payload::

      role u8 | kind u8 | flags u8 | reserved u8 | stream u16 | seq u32 | payload
      role: the receiving role (ROLE_MAPPER, ROLE_REDUCER, ROLE_GROUND)
      kind: CHUNK_RECORDS (payload: JSON object), CHUNK_FILE_BEGIN (file u16 | name UTF-8),
            CHUNK_FILE_DATA (file u16 | raw bytes), CHUNK_FILE_END (file u16 | size u64)
      flags: bit 0 END (the sender's last chunk on this stream)
      stream: the sender's partition (collector data_id, mapper index)
      seq: chunk sequence number within the stream, from 0

  Binary files travel as FILE_BEGIN, any number of FILE_DATA segments, FILE_END, so a
  file of any size crosses the network with memory bounded by the segment size.

``Error`` (0x7F) is this project's extension: the reply to a frame the receiver rejects
(the connection is closed after it).

:func:`decode_frame` never raises anything but :class:`ProtocolError`, whatever bytes
it is given.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
EXTENSION_VERSION = 1

SUBMIT_JOB = 0x00
ASSIGN_COLLECTOR = 0x01
ASSIGN_MAPPER = 0x02
ASSIGN_REDUCER = 0x03
PHASE_DONE = 0x04
JOB_RESULT = 0x05
DATA_CHUNK = 0x10
ERROR = 0x7F

OP_NAMES = {SUBMIT_JOB: "SubmitJob", ASSIGN_COLLECTOR: "AssignCollector",
            ASSIGN_MAPPER: "AssignMapper", ASSIGN_REDUCER: "AssignReducer",
            PHASE_DONE: "PhaseDone", JOB_RESULT: "JobResult", DATA_CHUNK: "DataChunk",
            ERROR: "Error"}
JSON_OPS = frozenset({ASSIGN_COLLECTOR, ASSIGN_MAPPER, ASSIGN_REDUCER, PHASE_DONE,
                      JOB_RESULT, ERROR})

ROLE_MAPPER, ROLE_REDUCER, ROLE_GROUND = 2, 3, 4
ROLES = frozenset({ROLE_MAPPER, ROLE_REDUCER, ROLE_GROUND})
CHUNK_RECORDS, CHUNK_FILE_BEGIN, CHUNK_FILE_DATA, CHUNK_FILE_END = 0, 1, 2, 3
CHUNK_KINDS = frozenset({CHUNK_RECORDS, CHUNK_FILE_BEGIN, CHUNK_FILE_DATA, CHUNK_FILE_END})
FLAG_END = 0x01

HEADER = struct.Struct(">BBH")                      # op, reserved, job_id
FRAME_PREFIX = struct.Struct(">IB")                 # length, version
SUBMIT_FIXED = struct.Struct(">ffffQffffB")         # 41 bytes
CHUNK_HEADER = struct.Struct(">BBBBHI")             # role, kind, flags, reserved, stream, seq
FILE_NO = struct.Struct(">H")
FILE_SIZE = struct.Struct(">HQ")

DEFAULT_MAX_FRAME = 16 * 1024 * 1024                # bytes after the length field
SEGMENT_BYTES = 256 * 1024                          # file segment payload size
OVERHEAD_BYTES = FRAME_PREFIX.size + HEADER.size + CHUNK_HEADER.size  # per DataChunk

SOLVER_CODES = {"hungarian": 0, "lapjv": 1}
SOLVER_NAMES = {v: k for k, v in SOLVER_CODES.items()}

assert SUBMIT_FIXED.size == 41


class ProtocolError(ValueError):
    """A frame or message that does not follow this format (the connection is closed)."""


class FrameTooLarge(ProtocolError):
    """A frame whose declared length exceeds the receiver's limit."""


# --- SubmitJob fixed part ----------------------------------------------------------------
@dataclass(frozen=True)
class SubmitFixed:
    """The 41-byte SubmitJob fixed part.  Angles in degrees, volume in bytes."""

    ul_lat: float = 0.0
    ul_lon: float = 0.0
    lr_lat: float = 0.0
    lr_lon: float = 0.0
    data_volume_bytes: int = 0
    map_processing_factor: float = 1.0
    reduce_processing_factor: float = 1.0
    map_reduction_factor: float = 1.0
    reduce_reduction_factor: float = 5.0
    ascending_only: bool = False
    solver: str = "lapjv"

    def flags(self) -> int:
        return (1 if self.ascending_only else 0) | (SOLVER_CODES[self.solver] << 1)

    def encode(self) -> bytes:
        if not 0 <= self.data_volume_bytes < 2 ** 64:
            raise ProtocolError(f"data_volume_bytes {self.data_volume_bytes} outside u64")
        return SUBMIT_FIXED.pack(self.ul_lat, self.ul_lon, self.lr_lat, self.lr_lon,
                                 self.data_volume_bytes, self.map_processing_factor,
                                 self.reduce_processing_factor, self.map_reduction_factor,
                                 self.reduce_reduction_factor, self.flags())

    @classmethod
    def decode(cls, raw: bytes) -> "SubmitFixed":
        if len(raw) < SUBMIT_FIXED.size:
            raise ProtocolError(f"SubmitJob fixed part truncated: {len(raw)} of 41 bytes")
        (ul_lat, ul_lon, lr_lat, lr_lon, volume, mpf, rpf, mrf, rrf,
         flags) = SUBMIT_FIXED.unpack_from(raw)
        solver_code = (flags >> 1) & 0x3
        if solver_code not in SOLVER_NAMES:
            raise ProtocolError(f"SubmitJob flags 0x{flags:02x}: unknown solver code {solver_code}")
        if flags & ~0x07:
            raise ProtocolError(f"SubmitJob flags 0x{flags:02x}: reserved bits set")
        for name, v in (("ul_lat", ul_lat), ("ul_lon", ul_lon), ("lr_lat", lr_lat),
                        ("lr_lon", lr_lon), ("map_processing_factor", mpf),
                        ("reduce_processing_factor", rpf), ("map_reduction_factor", mrf),
                        ("reduce_reduction_factor", rrf)):
            if not math.isfinite(v):
                raise ProtocolError(f"SubmitJob {name} is not a finite number")
        return cls(ul_lat, ul_lon, lr_lat, lr_lon, volume, mpf, rpf, mrf, rrf,
                   bool(flags & 1), SOLVER_NAMES[solver_code])


# --- messages ------------------------------------------------------------------------------
@dataclass
class DataChunk:
    """One DataChunk body (see the module docstring for the layout)."""

    role: int
    kind: int
    stream: int
    seq: int
    payload: bytes = b""
    end: bool = False

    def encode(self) -> bytes:
        return CHUNK_HEADER.pack(self.role, self.kind, FLAG_END if self.end else 0, 0,
                                 self.stream, self.seq) + self.payload

    # typed views of the payload
    def json(self) -> dict:
        return _json_object(self.payload, "DataChunk records")

    def file_no(self) -> int:
        if len(self.payload) < FILE_NO.size:
            raise ProtocolError("DataChunk file segment truncated")
        return FILE_NO.unpack_from(self.payload)[0]

    def file_name(self) -> str:
        try:
            name = self.payload[FILE_NO.size:].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("DataChunk file name is not UTF-8") from None
        if not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
            raise ProtocolError(f"DataChunk file name {name!r} is not a plain file name")
        return name

    def file_data(self) -> memoryview:
        return memoryview(self.payload)[FILE_NO.size:]

    def file_size(self) -> int:
        if len(self.payload) < FILE_SIZE.size:
            raise ProtocolError("DataChunk FILE_END truncated")
        return FILE_SIZE.unpack_from(self.payload)[1]


@dataclass
class Message:
    """A decoded LeoDOS message.

    body: ``dict`` for the JSON-bodied opcodes, :class:`DataChunk` for DataChunk, and for
    SubmitJob the extension dict with the fixed part in ``fixed``.
    """

    op: int
    job_id: int
    body: Any = None
    fixed: SubmitFixed | None = None
    wire_bytes: int = 0  # size of the whole frame as it travelled (for accounting)

    @property
    def name(self) -> str:
        return OP_NAMES.get(self.op, f"0x{self.op:02x}")


def _json_object(raw: bytes, what: str) -> dict:
    try:
        obj = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(f"{what}: invalid JSON ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _extension(raw: bytes, what: str) -> dict:
    if not raw:
        raise ProtocolError(f"{what}: missing extension")
    if raw[0] != EXTENSION_VERSION:
        raise ProtocolError(f"{what}: unsupported extension version {raw[0]}")
    return _json_object(raw[1:], what)


def encode_json(obj: dict) -> bytes:
    """An extension: version byte + compact JSON."""
    return bytes([EXTENSION_VERSION]) + json.dumps(obj, separators=(",", ":")).encode("utf-8")


def encode_message(op: int, job_id: int, body: bytes) -> bytes:
    """Header + body (a bare LeoDOS message, as it would travel over a space link)."""
    if not 0 <= job_id <= 0xFFFF:
        raise ProtocolError(f"job_id {job_id} outside u16")
    return HEADER.pack(op, 0, job_id) + body


def frame(message: bytes) -> bytes:
    """Wrap a LeoDOS message for TCP: length + version + message."""
    return FRAME_PREFIX.pack(len(message) + 1, PROTOCOL_VERSION) + message


def encode_frame(op: int, job_id: int, body: Any = None, fixed: SubmitFixed | None = None) -> bytes:
    """A whole TCP frame.  ``body`` is a dict (JSON ops, SubmitJob extension) or a
    :class:`DataChunk`."""
    if op == SUBMIT_JOB:
        raw = (fixed or SubmitFixed()).encode() + encode_json(body or {})
    elif op == DATA_CHUNK:
        raw = body.encode()
    elif op in JSON_OPS:
        raw = encode_json(body or {})
    else:
        raise ProtocolError(f"cannot encode unknown opcode 0x{op:02x}")
    return frame(encode_message(op, job_id, raw))


def decode_message(raw: bytes) -> Message:
    """Decode a bare LeoDOS message (header + body)."""
    if len(raw) < HEADER.size:
        raise ProtocolError(f"message truncated: {len(raw)} bytes, header needs {HEADER.size}")
    op, _reserved, job_id = HEADER.unpack_from(raw)
    body = raw[HEADER.size:]
    if op == SUBMIT_JOB:
        fixed = SubmitFixed.decode(body)
        ext = _extension(body[SUBMIT_FIXED.size:], "SubmitJob")
        return Message(op, job_id, ext, fixed)
    if op == DATA_CHUNK:
        if len(body) < CHUNK_HEADER.size:
            raise ProtocolError(f"DataChunk truncated: {len(body)} bytes, header needs "
                                f"{CHUNK_HEADER.size}")
        role, kind, flags, _r, stream, seq = CHUNK_HEADER.unpack_from(body)
        if role not in ROLES:
            raise ProtocolError(f"DataChunk: unknown role {role}")
        if kind not in CHUNK_KINDS:
            raise ProtocolError(f"DataChunk: unknown kind {kind}")
        return Message(op, job_id, DataChunk(role, kind, stream, seq,
                                             bytes(body[CHUNK_HEADER.size:]),
                                             bool(flags & FLAG_END)))
    if op in JSON_OPS:
        return Message(op, job_id, _extension(body, OP_NAMES[op]))
    raise ProtocolError(f"unknown opcode 0x{op:02x}")


def check_prefix(prefix: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> int:
    """Validate the 4-byte length prefix; return how many bytes follow it."""
    (length,) = struct.unpack(">I", prefix)
    if length > max_frame:
        raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {max_frame}")
    if length < 1 + HEADER.size:
        raise ProtocolError(f"frame length {length} too short for version and header")
    return length


def decode_frame_body(rest: bytes) -> Message:
    """Decode what follows the length field (version + message)."""
    if rest[0] != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {rest[0]} (this node speaks "
                            f"{PROTOCOL_VERSION})")
    msg = decode_message(rest[1:])
    msg.wire_bytes = len(rest) + 4
    return msg


def decode_frame(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[Message, int]:
    """Decode one frame from the start of ``data``; returns (message, bytes used).

    Raises :class:`ProtocolError` for anything malformed, including a truncated frame."""
    if len(data) < 4:
        raise ProtocolError(f"frame truncated: {len(data)} bytes, length field needs 4")
    length = check_prefix(bytes(data[:4]), max_frame)
    if len(data) < 4 + length:
        raise ProtocolError(f"frame truncated: {len(data) - 4} of {length} bytes")
    return decode_frame_body(bytes(data[4:4 + length])), 4 + length
