"""The SpaceCoMP wire format: LeoDOS messages framed for TCP.  Pure codec, no I/O.

Every LeoDOS message starts with the 4-byte header (network byte order)::

    op u8 | reserved u8 | job_id u16

Over TCP each message travels in a frame that adds an explicit length and a protocol
version in front of it and an authentication tag behind it::

    length u32 | version u8 | op u8 | reserved u8 | job_id u16 | body ... | tag [32]
    `length` counts every byte after the length field itself (version + message + tag).
    `tag` = HMAC-SHA256(testbed key, every frame byte before the tag: length, version,
    header, body).

Version 2 added the tag (version 1 frames had none and are refused).  The key is the
testbed's shared secret (:mod:`node_app.auth`); a frame whose tag does not verify is
:class:`Unauthenticated` and is never decoded further, so nobody without the key can
submit, assign, report or forge a result, whatever job id they try.

Bodies by opcode:

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

import hashlib
import hmac
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 2                                # 2: HMAC-SHA256 trailer
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

TAG_BYTES = 32                                      # HMAC-SHA256 trailer
MIN_KEY_BYTES = 16
DEFAULT_MAX_FRAME = 16 * 1024 * 1024                # bytes after the length field
SEGMENT_BYTES = 256 * 1024                          # file segment payload size
OVERHEAD_BYTES = FRAME_PREFIX.size + HEADER.size + CHUNK_HEADER.size + TAG_BYTES  # per DataChunk

SOLVER_CODES = {"hungarian": 0, "lapjv": 1}
SOLVER_NAMES = {v: k for k, v in SOLVER_CODES.items()}

assert SUBMIT_FIXED.size == 41


class ProtocolError(ValueError):
    """A frame or message that does not follow this format (the connection is closed)."""


class FrameTooLarge(ProtocolError):
    """A frame whose declared length exceeds the receiver's limit."""


class Unauthenticated(ProtocolError):
    """A frame whose tag does not verify under the testbed key (forged, or another key)."""


# The Error text a node answers an unauthenticated frame with (fixed: nothing of the
# stranger's frame is echoed, and it carries job id 0).
AUTH_ERROR = "frame authentication failed: wrong or missing testbed key"


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


def check_key(key) -> bytes:
    """The testbed key as bytes (ValueError if it is not one)."""
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a testbed key of at least {MIN_KEY_BYTES} bytes is required")
    return bytes(key)


def tag(key: bytes, *parts) -> bytes:
    """HMAC-SHA256 of the concatenated ``parts`` (bytes-like) under ``key``."""
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        h.update(part)
    return h.digest()


def frame(message: bytes, key: bytes) -> bytes:
    """Wrap a LeoDOS message for TCP: length + version + message + tag."""
    prefix = FRAME_PREFIX.pack(len(message) + 1 + TAG_BYTES, PROTOCOL_VERSION)
    return prefix + message + tag(check_key(key), prefix, message)


def encode_frame(op: int, job_id: int, body: Any = None, fixed: SubmitFixed | None = None,
                 *, key: bytes) -> bytes:
    """A whole TCP frame, tagged with the testbed ``key``.  ``body`` is a dict (JSON ops,
    SubmitJob extension) or a :class:`DataChunk`."""
    if op == SUBMIT_JOB:
        raw = (fixed or SubmitFixed()).encode() + encode_json(body or {})
    elif op == DATA_CHUNK:
        raw = body.encode()
    elif op in JSON_OPS:
        raw = encode_json(body or {})
    else:
        raise ProtocolError(f"cannot encode unknown opcode 0x{op:02x}")
    return frame(encode_message(op, job_id, raw), key)


def decode_message(raw: bytes | memoryview) -> Message:
    """Decode a bare LeoDOS message (header + body); nothing decoded refers to ``raw``."""
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
    if length < 1 + HEADER.size + TAG_BYTES:
        raise ProtocolError(f"frame length {length} too short for version, header and tag")
    return length


def decode_frame_body(prefix: bytes, rest: bytes, key: bytes | None) -> Message:
    """Decode what follows the length field (version + message + tag); ``prefix`` is the
    length field itself (the tag covers it).

    key: the testbed key; the tag must verify (:class:`Unauthenticated` otherwise) before
    anything else is decoded.  ``None`` skips the check: only for reading captures."""
    if rest[0] != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {rest[0]} (this node speaks "
                            f"{PROTOCOL_VERSION})")
    view = memoryview(rest)
    body, got = view[:-TAG_BYTES], view[-TAG_BYTES:]
    if key is not None and not hmac.compare_digest(tag(check_key(key), prefix, body), got):
        raise Unauthenticated("frame authentication failed (forged, or not this testbed's key)")
    msg = decode_message(body[1:])
    msg.wire_bytes = len(rest) + 4
    return msg


def decode_frame(data: bytes, max_frame: int = DEFAULT_MAX_FRAME, *,
                 key: bytes | None) -> tuple[Message, int]:
    """Decode one frame from the start of ``data``; returns (message, bytes used).

    key: the testbed key (``None``: do not verify the tag, for capture analysis only).
    Raises :class:`ProtocolError` for anything malformed or unauthenticated, including a
    truncated frame."""
    if len(data) < 4:
        raise ProtocolError(f"frame truncated: {len(data)} bytes, length field needs 4")
    prefix = bytes(data[:4])
    length = check_prefix(prefix, max_frame)
    if len(data) < 4 + length:
        raise ProtocolError(f"frame truncated: {len(data) - 4} of {length} bytes")
    return decode_frame_body(prefix, bytes(data[4:4 + length]), key), 4 + length


# --- role messages: Assign* and PhaseDone, typed; built and parsed only here ---------------
MAX_TEXT = 2000                 # longest free-text field (error, jobid) accepted, characters
ST_OK, ST_FAILED = "ok", "failed"
ST_PEER_LOST = "peer_lost"      # a role lost its downstream/upstream peer: the coordinator checks it
ST_ACCEPTED, ST_REFUSED = "accepted", "refused"          # replies to an Assign
ST_SUPERSEDED = "superseded"    # ack of a stream that a newer one replaced (its data is unused)
ST_RELEASED = "released"        # coordinator -> role: the job is over, drop everything
STATUSES = frozenset({ST_OK, ST_FAILED, ST_PEER_LOST, ST_ACCEPTED, ST_REFUSED, ST_SUPERSEDED,
                      ST_RELEASED})


def sat_field(v, what: str) -> tuple[int, int]:
    """[sat, orb] -> (sat, orb); ProtocolError otherwise."""
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 0xFFFF
                       for x in v)):
        raise ProtocolError(f"{what}: expected [sat, orb], got {str(v)[:60]}")
    return (v[0], v[1])


def addr_field(v, what: str) -> tuple[str, int]:
    """[host, port] -> (host, port); ProtocolError otherwise."""
    if (not isinstance(v, (list, tuple)) or len(v) != 2 or not isinstance(v[0], str)
            or len(v[0]) > 255 or not isinstance(v[1], int) or not 0 < v[1] < 65536):
        raise ProtocolError(f"{what}: expected [host, port], got {str(v)[:60]}")
    return (v[0], v[1])


def _int_field(v, what: str, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError(f"{what}: expected an integer in [{lo}, {hi}], got {str(v)[:40]}")
    return v


def _text_field(v, what: str) -> str:
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise ProtocolError(f"{what}: expected text of at most {MAX_TEXT} characters")
    return v


@dataclass(frozen=True, kw_only=True)
class Assign:
    """What every Assign* carries (extension JSON, version 1).

    jobid: the job's unique name; meta_data: the job's parameters handed to the tasks;
    tasks: {collect, map, reduce} registry names; coordinator / coordinator_addr: where
    PhaseDone reports go; timeout_s: the job's phase timeout (roles idle out after twice
    it); revision: the coordinator's assignment counter: an Assign for a role this node
    already holds with a higher revision moves its peer (a replacement was assigned);
    probe: only ask whether the role is still held (a liveness probe, never creates it).
    Every Assign is answered with a PhaseDone: ``accepted`` or ``refused`` (``error``
    says why, e.g. the node is busy).
    """

    op = -1
    role = "?"
    jobid: str
    meta_data: dict
    tasks: dict
    coordinator: tuple[int, int]
    coordinator_addr: tuple[str, int]
    timeout_s: float = 30.0
    revision: int = 0
    probe: bool = False
    msgid: str | None = None
    frm: tuple[int, int] | None = None

    def own(self) -> dict:
        """The fields of the concrete Assign (JSON-ready)."""
        return {}

    def body(self) -> dict:
        b = {"jobid": self.jobid, "meta_data": self.meta_data, "tasks": self.tasks,
             "coordinator": list(self.coordinator),
             "coordinator_addr": list(self.coordinator_addr), "timeout_s": self.timeout_s,
             "revision": self.revision, **self.own()}
        if self.probe:
            b["probe"] = True
        if self.msgid is not None:
            b["msgid"] = self.msgid
        if self.frm is not None:
            b["from"] = list(self.frm)
        return b

    @staticmethod
    def common(body: dict) -> dict:
        md, tasks = body.get("meta_data"), body.get("tasks")
        if not isinstance(md, dict):
            raise ProtocolError("Assign: meta_data missing")
        if not isinstance(tasks, dict) or not all(isinstance(v, str) for v in tasks.values()):
            raise ProtocolError("Assign: tasks must map kinds to task names")
        timeout = body.get("timeout_s", 30.0)
        if not isinstance(timeout, (int, float)) or not 0 < timeout <= 86400:
            raise ProtocolError("Assign: timeout_s must be in (0, 86400]")
        frm = body.get("from")
        return {"jobid": _text_field(str(body.get("jobid", "")), "jobid"), "meta_data": md,
                "tasks": tasks, "coordinator": sat_field(body.get("coordinator"), "coordinator"),
                "coordinator_addr": addr_field(body.get("coordinator_addr"), "coordinator_addr"),
                "timeout_s": float(timeout),
                "revision": _int_field(body.get("revision", 0), "revision", 0, 2 ** 31),
                "probe": body.get("probe") is True,
                "msgid": None if body.get("msgid") is None else _text_field(body["msgid"], "msgid"),
                "frm": None if frm is None else sat_field(frm, "from")}


@dataclass(frozen=True, kw_only=True)
class AssignCollector(Assign):
    """Collect ``partition`` (data_id, 1-based) and stream it to ``mapper``."""

    op, role = ASSIGN_COLLECTOR, "collector"
    mapper: tuple[int, int]
    mapper_addr: tuple[str, int]
    partition: int = 1

    def own(self) -> dict:
        return {"mapper": list(self.mapper), "mapper_addr": list(self.mapper_addr),
                "partition": self.partition}

    @classmethod
    def parse(cls, body: dict) -> "AssignCollector":
        return cls(**cls.common(body), mapper=sat_field(body.get("mapper"), "mapper"),
                   mapper_addr=addr_field(body.get("mapper_addr"), "mapper_addr"),
                   partition=_int_field(body.get("partition", 1), "partition", 1, 0xFFFF))


@dataclass(frozen=True, kw_only=True)
class AssignMapper(Assign):
    """Map what ``collectors`` collector streams bring; stream outputs as ``index`` to
    ``reducer``."""

    op, role = ASSIGN_MAPPER, "mapper"
    reducer: tuple[int, int]
    reducer_addr: tuple[str, int]
    collectors: int = 1
    index: int = 0

    def own(self) -> dict:
        return {"reducer": list(self.reducer), "reducer_addr": list(self.reducer_addr),
                "collectors": self.collectors, "index": self.index}

    @classmethod
    def parse(cls, body: dict) -> "AssignMapper":
        return cls(**cls.common(body), reducer=sat_field(body.get("reducer"), "reducer"),
                   reducer_addr=addr_field(body.get("reducer_addr"), "reducer_addr"),
                   collectors=_int_field(body.get("collectors", 1), "collectors", 1, 1),
                   index=_int_field(body.get("index", 0), "index", 0, 0xFFFF))


@dataclass(frozen=True, kw_only=True)
class AssignReducer(Assign):
    """Reduce the streams of ``mappers`` mappers; the JobResult goes to ``los`` at
    ``los_addr`` (the coordinator)."""

    op, role = ASSIGN_REDUCER, "reducer"
    los: tuple[int, int]
    los_addr: tuple[str, int]
    mappers: int = 1

    def own(self) -> dict:
        return {"los": list(self.los), "los_addr": list(self.los_addr), "mappers": self.mappers}

    @classmethod
    def parse(cls, body: dict) -> "AssignReducer":
        return cls(**cls.common(body), los=sat_field(body.get("los"), "los"),
                   los_addr=addr_field(body.get("los_addr"), "los_addr"),
                   mappers=_int_field(body.get("mappers", 1), "mappers", 1, 0xFFFF))


ASSIGN_TYPES = {ASSIGN_COLLECTOR: AssignCollector, ASSIGN_MAPPER: AssignMapper,
                ASSIGN_REDUCER: AssignReducer}


def parse_assign(msg: Message) -> Assign:
    """The typed Assign* of a decoded message (ProtocolError if a field is bad)."""
    if msg.op not in ASSIGN_TYPES:
        raise ProtocolError(f"{msg.name} is not an Assign")
    return ASSIGN_TYPES[msg.op].parse(msg.body)


@dataclass(frozen=True)
class PhaseDone:
    """A PhaseDone body: a role's report to the coordinator, an ack on a data stream, the
    reply to an Assign, the coordinator's release of a role, or (``role`` "coordinator")
    progress forwarded to the ground.

    role: collector/mapper/reducer/coordinator; node: the reporting satellite; status: one
    of STATUSES; error: what went wrong (names the node that failed); index: the role's
    stream (partition - 1 for a collector, the mapper index); peer_role / peer: for
    ``peer_lost``, the role and satellite that stopped answering; extra: every other field
    (``records``, ``bytes``, ``t_start``, ``t_end``, ``replayed``, ``event``, ...).
    """

    role: str = "?"
    node: tuple[int, int] | None = None
    status: str = ST_OK
    error: str | None = None
    index: int | None = None
    peer_role: str | None = None
    peer: tuple[int, int] | None = None
    extra: dict = field(default_factory=dict)

    KEYS = ("role", "node", "status", "error", "index", "peer_role", "peer")

    def body(self) -> dict:
        b = {"role": self.role, "status": self.status, **self.extra}
        for k in ("node", "peer"):
            if getattr(self, k) is not None:
                b[k] = list(getattr(self, k))
        for k in ("error", "index", "peer_role"):
            if getattr(self, k) is not None:
                b[k] = getattr(self, k)
        return b

    @property
    def ok(self) -> bool:
        return self.status == ST_OK

    def get(self, key: str, default=None):
        return self.extra.get(key, default)

    @classmethod
    def parse(cls, body: dict) -> "PhaseDone":
        status = body.get("status", ST_OK)
        if status not in STATUSES:
            raise ProtocolError(f"PhaseDone: unknown status {str(status)[:40]!r}")
        node = body.get("node")
        peer = body.get("peer")
        index = body.get("index")
        error = body.get("error")
        return cls(role=_text_field(str(body.get("role", "?")), "role")[:40],
                   node=None if node is None else sat_field(node, "node"), status=status,
                   error=None if error is None else str(error)[:MAX_TEXT],
                   index=None if index is None else _int_field(index, "index", 0, 0xFFFF),
                   peer_role=None if body.get("peer_role") is None
                   else _text_field(body["peer_role"], "peer_role")[:40],
                   peer=None if peer is None else sat_field(peer, "peer"),
                   extra={k: v for k, v in body.items() if k not in cls.KEYS})
