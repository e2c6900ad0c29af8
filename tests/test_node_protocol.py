"""The LeoDOS wire format: golden bytes, round trips, and a decoder that never crashes."""

import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node_app import protocol as P

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))

GOLDEN_FIXED = P.SubmitFixed(ul_lat=45.5, ul_lon=-122.25, lr_lat=44.0, lr_lon=-121.0,
                             data_volume_bytes=10_000_000_000, map_processing_factor=1.0,
                             reduce_processing_factor=1.0, map_reduction_factor=1.0,
                             reduce_reduction_factor=5.0, ascending_only=True, solver="lapjv")
# worked by hand: 45.5 = 0x42360000, -122.25 = 0xC2F48000, 44.0 = 0x42300000,
# -121.0 = 0xC2F20000, 1e10 = 0x00000002540BE400, 1.0 = 0x3F800000, 5.0 = 0x40A00000,
# flags = ascending (bit 0) | LAPJV (1 << 1) = 0x03
GOLDEN_FIXED_HEX = ("42360000" "c2f48000" "42300000" "c2f20000" "00000002540be400"
                    "3f800000" "3f800000" "3f800000" "40a00000" "03")


def test_submit_fixed_part_is_41_bytes_bit_exact():
    raw = GOLDEN_FIXED.encode()
    assert len(raw) == 41
    assert raw.hex() == GOLDEN_FIXED_HEX
    assert P.SubmitFixed.decode(raw) == GOLDEN_FIXED


def test_submit_job_frame_golden_bytes():
    frame = P.encode_frame(P.SUBMIT_JOB, 0x1234, {}, GOLDEN_FIXED, key=KEY)
    # length (81 = version 1 + header 4 + fixed 41 + extension 3 + tag 32) | version 2 |
    # op | rsv | job | fixed part | extension | tag
    head = "00000051" "02" "00" "00" "1234" + GOLDEN_FIXED_HEX + "017b7d"
    tag = hmac.new(KEY, bytes.fromhex(head), hashlib.sha256).hexdigest()
    assert frame.hex() == head + tag
    msg, used = P.decode_frame(frame, key=KEY)
    assert used == len(frame)
    assert (msg.op, msg.job_id, msg.body, msg.fixed) == (P.SUBMIT_JOB, 0x1234, {}, GOLDEN_FIXED)


def test_header_is_op_reserved_job_id_big_endian():
    raw = P.encode_message(P.PHASE_DONE, 0xBEEF, b"")
    assert raw == bytes([0x04, 0x00, 0xBE, 0xEF])


def test_opcodes_are_the_leodos_ones():
    assert (P.SUBMIT_JOB, P.ASSIGN_COLLECTOR, P.ASSIGN_MAPPER, P.ASSIGN_REDUCER, P.PHASE_DONE,
            P.JOB_RESULT, P.DATA_CHUNK) == (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x10)


@pytest.mark.parametrize("solver, ascending, flags", [
    ("hungarian", False, 0), ("hungarian", True, 1), ("lapjv", False, 2), ("lapjv", True, 3)])
def test_flags_bits(solver, ascending, flags):
    f = P.SubmitFixed(solver=solver, ascending_only=ascending)
    assert f.encode()[-1] == flags
    assert P.SubmitFixed.decode(f.encode()) == f


@pytest.mark.parametrize("op", sorted(P.JSON_OPS))
def test_json_messages_round_trip(op):
    body = {"role": "mapper", "node": [2, 3], "nested": {"x": [1.5, None, "ü"]}}
    msg, _ = P.decode_frame(P.encode_frame(op, 65535, body, key=KEY), key=KEY)
    assert (msg.op, msg.job_id, msg.body) == (op, 65535, body)


@pytest.mark.parametrize("kind, payload", [
    (P.CHUNK_RECORDS, b'{"records":["a b"]}'), (P.CHUNK_FILE_BEGIN, b"\x00\x01tile.npy"),
    (P.CHUNK_FILE_DATA, b"\x00\x01" + bytes(range(256))), (P.CHUNK_FILE_END, P.FILE_SIZE.pack(1, 256))])
def test_data_chunk_round_trip(kind, payload):
    chunk = P.DataChunk(P.ROLE_REDUCER, kind, stream=7, seq=123456, payload=payload, end=True)
    msg, _ = P.decode_frame(P.encode_frame(P.DATA_CHUNK, 9, chunk, key=KEY), key=KEY)
    assert msg.body == chunk
    assert P.OVERHEAD_BYTES == 4 + 1 + 4 + 10 + 32  # length, version, header, chunk header, tag


def test_submit_extension_round_trip():
    ext = {"jobid": "j", "tasks": {"collect": "doccollector", "map": "wordcountmapper",
                                   "reduce": "sumreducer"},
           "aoi": {"kind": "grid", "minsat": 1, "maxsat": 3, "collectors": 4, "seed": 1}}
    msg, _ = P.decode_frame(P.encode_frame(P.SUBMIT_JOB, 1, ext, GOLDEN_FIXED, key=KEY), key=KEY)
    assert msg.body == ext


def _raw_frame(message: bytes, version: int = P.PROTOCOL_VERSION, key: bytes = KEY) -> bytes:
    """A frame around any message bytes, tagged with ``key`` (as a node would)."""
    prefix = struct.pack(">IB", len(message) + 1 + P.TAG_BYTES, version)
    return prefix + message + P.tag(key, prefix, message)


@pytest.mark.parametrize("data, needle", [
    (b"", "truncated"),
    (b"\x00\x00", "truncated"),
    (_raw_frame(b"\x04\x00\x00\x01" + b"\x01{}")[:-1], "truncated"),
    (_raw_frame(b"\x42\x00\x00\x01"), "unknown opcode 0x42"),
    (_raw_frame(b"\x04\x00\x00\x01" + b"\x01{}", version=9), "version 9"),
    (_raw_frame(b"\x04\x00\x00\x01" + b"\x01{not json"), "invalid JSON"),
    (_raw_frame(b"\x04\x00\x00\x01" + b"\x01[1, 2]"), "JSON object"),
    (_raw_frame(b"\x04\x00\x00\x01" + b"\x07{}"), "extension version 7"),
    (_raw_frame(b"\x04\x00\x00\x01"), "missing extension"),
    (_raw_frame(b"\x00\x00\x00\x01" + b"\x00" * 20), "fixed part truncated"),
    (_raw_frame(b"\x00\x00\x00\x01" + b"\x00" * 40 + b"\x80" + b"\x01{}"), "reserved bits"),
    (_raw_frame(b"\x00\x00\x00\x01" + b"\x7f\xc0\x00\x00" + b"\x00" * 37 + b"\x01{}"), "finite"),
    (_raw_frame(b"\x10\x00\x00\x01" + b"\x02\x00"), "DataChunk truncated"),
    (_raw_frame(b"\x10\x00\x00\x01" + bytes([9, 0, 0, 0, 0, 0, 0, 0, 0, 0])), "unknown role"),
    (_raw_frame(b"\x10\x00\x00\x01" + bytes([2, 9, 0, 0, 0, 0, 0, 0, 0, 0])), "unknown kind"),
    (struct.pack(">IB", 2, 2) + b"\x04", "too short"),
    (_raw_frame(b"\x04\x00\x00\x01" + b"\x01{}", key=OTHER_KEY), "authentication failed"),
    (_raw_frame(b"\x04\x00\x00\x01" + b"\x01" + b"[" * 100000), "invalid JSON"),
])
def test_bad_frames_raise_protocol_error(data, needle):
    with pytest.raises(P.ProtocolError, match=needle):
        P.decode_frame(data, key=KEY)


def test_oversized_frame_is_refused_before_reading_it():
    header = struct.pack(">I", 1 << 20)
    with pytest.raises(P.FrameTooLarge, match="exceeds the limit"):
        P.check_prefix(header, max_frame=1000)
    with pytest.raises(P.FrameTooLarge):
        P.decode_frame(header + b"\x01" * 10, max_frame=1000, key=KEY)


def test_file_names_must_be_plain():
    for bad in (b"../etc/passwd", b"a/b", b"", b".."):
        chunk = P.DataChunk(P.ROLE_MAPPER, P.CHUNK_FILE_BEGIN, 0, 0, b"\x00\x00" + bad)
        with pytest.raises(P.ProtocolError):
            chunk.file_name()


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_no_byte_string_crashes_the_decoder(data):
    try:
        msg, used = P.decode_frame(data, max_frame=1 << 16, key=KEY)
        assert 0 < used <= len(data)
    except P.ProtocolError:
        pass


@settings(max_examples=3000, deadline=None)
@given(op=st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x10, 0x11, 0x7F, 0xFF]),
       job=st.integers(0, 0xFFFF), body=st.binary(max_size=120), version=st.sampled_from([2, 2, 2, 1]))
def test_well_framed_garbage_never_crashes_the_decoder(op, job, body, version):
    """Valid length and header, random bodies: reaches every body decoder."""
    data = _raw_frame(bytes([op, 0]) + job.to_bytes(2, "big") + body, version)
    try:
        msg, _ = P.decode_frame(data, key=KEY)
        if msg.op == P.DATA_CHUNK:  # typed payload views fail cleanly too
            for view in (msg.body.json, msg.body.file_no, msg.body.file_name, msg.body.file_size):
                try:
                    view()
                except P.ProtocolError:
                    pass
    except P.ProtocolError:
        pass


# --- role messages ---------------------------------------------------------------------------
def _common():
    return dict(jobid="j", meta_data={"a": 1}, tasks={"map": "wordcountmapper"},
                coordinator=(1, 1), coordinator_addr=("127.0.0.1", 7000), timeout_s=5.0)


@pytest.mark.parametrize("msg", [
    P.AssignCollector(**_common(), mapper=(2, 3), mapper_addr=("h", 1), partition=4, revision=3),
    P.AssignMapper(**_common(), reducer=(2, 2), reducer_addr=("h", 2), index=7, probe=True),
    P.AssignReducer(**_common(), los=(1, 1), los_addr=("h", 3), mappers=5),
])
def test_assign_messages_round_trip_through_a_frame(msg):
    decoded, _ = P.decode_frame(P.encode_frame(msg.op, 9, msg.body(), key=KEY), key=KEY)
    assert P.parse_assign(decoded) == msg


@pytest.mark.parametrize("field, value, needle", [
    ("mapper", [1], "mapper: expected [sat, orb]"),
    ("mapper_addr", ["h", 70000], "mapper_addr"),
    ("partition", 0, "partition"),
    ("revision", -1, "revision"),
    ("timeout_s", float("inf"), "timeout_s"),
    ("meta_data", [], "meta_data"),
])
def test_a_bad_assign_field_is_refused_by_name(field, value, needle):
    body = P.AssignCollector(**_common(), mapper=(2, 3), mapper_addr=("h", 1)).body()
    body[field] = value
    with pytest.raises(P.ProtocolError, match=needle.replace("[", r"\[")):
        P.AssignCollector.parse(body)


def test_phase_done_round_trip_and_unknown_status():
    d = P.PhaseDone("mapper", (1, 2), P.ST_PEER_LOST, error="reducer [3, 3]: gone", index=2,
                    peer_role="reducer", peer=(3, 3), extra={"bytes": 10})
    assert P.PhaseDone.parse(d.body()) == d
    with pytest.raises(P.ProtocolError, match="status"):
        P.PhaseDone.parse({"role": "mapper", "status": "maybe"})


# --- authentication ----------------------------------------------------------------------------
@pytest.mark.parametrize("op", [P.JOB_RESULT, P.PHASE_DONE, P.ASSIGN_COLLECTOR, P.SUBMIT_JOB])
def test_frames_made_without_the_key_are_refused(op):
    """A stranger's frame (another key), or a real frame with any byte changed (job id,
    body, tag), never decodes."""
    body = {"status": "ok", "result": {"FORGED": 1}}
    with pytest.raises(P.Unauthenticated):
        P.decode_frame(P.encode_frame(op, 77, body, key=OTHER_KEY), key=KEY)
    good = P.encode_frame(op, 77, body, key=KEY)
    assert P.decode_frame(good, key=KEY)[0].job_id == 77
    for i in range(4, len(good)):  # the version byte, header, body and tag are all covered
        bad = bytearray(good)
        bad[i] ^= 0x01
        with pytest.raises(P.ProtocolError):
            P.decode_frame(bytes(bad), key=KEY)


def test_version_1_frames_are_refused_with_the_reason():
    old = struct.pack(">IB", 40, 1) + b"\x04\x00\x00\x01\x01{}" + bytes(32)
    with pytest.raises(P.ProtocolError, match="version 1"):
        P.decode_frame(old, key=KEY)


def test_a_key_is_required_to_encode():
    with pytest.raises(ValueError, match="key"):
        P.encode_frame(P.PHASE_DONE, 1, {}, key=b"short")
    with pytest.raises(TypeError):
        P.encode_frame(P.PHASE_DONE, 1, {})  # noqa - no silent unauthenticated default
