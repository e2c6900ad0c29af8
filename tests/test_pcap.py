"""Packet-capture tools: scapy layer + reassembler, Lua dissector, per-phase report.

No Mininet: the captures are synthesized with scapy (experiments.pcap.synth) or, as root,
recorded with tcpdump on the loopback during a small TCP exchange of protocol frames.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from scapy.utils import wrpcap

from experiments.pcap import LUA_DISSECTOR, report
from experiments.pcap.scapy_layer import (DataChunkBody, JsonBody, LeoDOS, SpaceCoMP,
                                          SubmitJobBody, read_frames)
from experiments.pcap.synth import KEY, job_capture
from node_app import protocol as P

JOB = 7
# The synthetic job's frames in the order their last byte is sent.
EXPECTED_OPS = ([P.SUBMIT_JOB] + [P.ASSIGN_COLLECTOR] * 2 + [P.ASSIGN_MAPPER] * 2 + [P.ASSIGN_REDUCER]
                + [P.DATA_CHUNK] * 5 + [P.PHASE_DONE] * 4
                + [P.DATA_CHUNK, P.PHASE_DONE, P.PHASE_DONE] * 2
                + [P.DATA_CHUNK, P.JOB_RESULT, P.JOB_RESULT])


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """(pcap path, Capture) of the synthetic job."""
    cap = job_capture(JOB)
    path = tmp_path_factory.mktemp("pcap") / "job.pcap"
    wrpcap(str(path), cap.packets)
    return str(path), cap


# --- scapy layer ---------------------------------------------------------------------------
def test_scapy_layer_decodes_expected_opcodes_in_order(synth):
    path, cap = synth
    frames = list(read_frames(path))
    assert [f.op for f in frames] == EXPECTED_OPS
    assert [f.op for f in frames] == [s.op for s in cap.sent]
    assert [(f.src, f.dst, f.wire_bytes) for f in frames] == [(s.src, s.dst, s.wire_bytes)
                                                              for s in cap.sent]
    assert {f.job_id for f in frames} == {JOB}
    for f in frames:  # the scapy view and node_app.protocol's decoder agree
        assert f.error is None and f.message is not None
        assert (f.packet[LeoDOS].op, f.packet[LeoDOS].job_id) == (f.message.op, f.message.job_id)
        assert f.packet.length + 4 == f.wire_bytes == f.message.wire_bytes
    assert [f.time for f in frames] == sorted(f.time for f in frames)


def test_reassembly_cases_present_in_the_synthetic_capture(synth):
    """The capture really has a split frame, two frames in a segment, a retransmission and
    reordering; the reassembler recovers the 3.8 kB file segment byte for byte."""
    path, _cap = synth
    frames = list(read_frames(path))
    big = [f for f in frames if f.op == P.DATA_CHUNK and f.message.body.kind == P.CHUNK_FILE_DATA]
    assert len(big) == 1 and bytes(big[0].message.body.file_data()) == bytes(range(256)) * 15
    assert big[0].first_time < big[0].time  # first and last byte in different segments
    same_segment = [f for f in frames if f.time == frames[6].time]
    assert len(same_segment) == 2 and all(f.op == P.DATA_CHUNK for f in same_segment)


def test_port_filter(synth):
    path, _cap = synth
    assert len(list(read_frames(path, ports=[4700]))) == len(EXPECTED_OPS)
    assert list(read_frames(path, ports=[4701])) == []


def test_scapy_fields_follow_protocol_layout():
    fixed = P.SubmitFixed(1.5, -2.5, 3.0, 4.0, 2 ** 40 + 3, 1.25, 2.0, 0.5, 8.0, True, "hungarian")
    raw = P.encode_frame(P.SUBMIT_JOB, 513, {"tasks": {"collect": "c"}}, fixed, key=KEY)
    pkt = SpaceCoMP(raw)
    body = pkt[SubmitJobBody]
    assert (body.ul_lat, body.ul_lon, body.lr_lat, body.lr_lon) == (1.5, -2.5, 3.0, 4.0)
    assert body.data_volume_bytes == 2 ** 40 + 3 and body.flags == fixed.flags()
    assert body.reduce_reduction_factor == 8.0
    assert json.loads(body.ext) == {"tasks": {"collect": "c"}}
    # Built by scapy, decoded by node_app.protocol.
    SpaceCoMP.key = KEY
    try:
        built = bytes(SpaceCoMP() / LeoDOS(op=P.PHASE_DONE, job_id=9) / JsonBody(json=b'{"a":1}'))
    finally:
        SpaceCoMP.key = None
    msg, used = P.decode_frame(built, key=KEY)
    assert (msg.op, msg.job_id, msg.body, used) == (P.PHASE_DONE, 9, {"a": 1}, len(built))
    chunk = P.DataChunk(P.ROLE_REDUCER, P.CHUNK_RECORDS, 3, 77, b"{}", end=True)
    raw = P.encode_frame(P.DATA_CHUNK, 1, chunk, key=KEY)
    pkt = SpaceCoMP(raw)
    c = pkt[DataChunkBody]
    assert (c.role, c.kind, c.flags & P.FLAG_END, c.stream, c.seq, c.data) == \
        (P.ROLE_REDUCER, P.CHUNK_RECORDS, 1, 3, 77, b"{}")
    # the tag trails the frame: scapy shows it, and rebuilds the frame byte for byte
    assert pkt.tag == raw[-P.TAG_BYTES:] and bytes(pkt) == raw


def test_frames_are_verified_when_the_key_is_given(synth):
    path, cap = synth
    assert all(f.error is None for f in read_frames(path, key=KEY))
    bad = list(read_frames(path, key=bytes(32)))
    assert len(bad) == len(cap.sent) and all("authentication failed" in f.error for f in bad)


# --- Lua dissector -------------------------------------------------------------------------
def _tshark(path, *fields):
    out = subprocess.run(
        ["tshark", "-n", "-X", f"lua_script:{LUA_DISSECTOR}", "-o", "tcp.reassemble_out_of_order:TRUE",
         "-r", path, "-Y", "spacecomp", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"]
        + [a for f in fields for a in ("-e", f)],
        capture_output=True, text=True, timeout=60, check=True).stdout
    rows = []
    for line in out.splitlines():  # one line per packet; frames sharing one joined by "|"
        cols = [c.split("|") if c else [] for c in line.split("\t")]
        rows.append(cols)
    return rows


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (setup.sh installs it)")
def test_tshark_lua_dissector_matches_protocol(synth):
    path, cap = synth
    rows = _tshark(path, "spacecomp.op", "spacecomp.job_id", "spacecomp.length", "spacecomp.version")
    ops = [int(v, 16) for r in rows for v in r[0]]
    assert ops == [s.op for s in cap.sent] == EXPECTED_OPS
    assert {int(v) for r in rows for v in r[1]} == {JOB}
    assert [int(v) + 4 for r in rows for v in r[2]] == [s.wire_bytes for s in cap.sent]
    assert {int(v) for r in rows for v in r[3]} == {P.PROTOCOL_VERSION}
    # Names in the summary line, SubmitJob fields as protocol.py encoded them.
    info = subprocess.run(["tshark", "-n", "-X", f"lua_script:{LUA_DISSECTOR}", "-r", path,
                           "-Y", "spacecomp.op == 0", "-T", "fields", "-e", "_ws.col.Info"],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert info.strip() == f"SubmitJob job={JOB}"
    names = ["ul_lat", "ul_lon", "lr_lat", "lr_lon", "data_volume_bytes", "map_processing_factor",
             "reduce_processing_factor", "map_reduction_factor", "reduce_reduction_factor",
             "ascending_only", "solver"]
    (row,) = [r for r in _tshark(path, *[f"spacecomp.submit.{n}" for n in names]) if r[0]]
    sent = next(f.message.fixed for f in read_frames(path) if f.op == P.SUBMIT_JOB)
    got = dict(zip(names, (r[0] for r in row)))
    for n in names[:9]:
        assert float(got[n]) == pytest.approx(float(getattr(sent, n)), rel=1e-6), n
    assert got["ascending_only"] in ("1", "True") and sent.ascending_only
    assert int(got["solver"]) == P.SOLVER_CODES[sent.solver]


# --- report -------------------------------------------------------------------------------
def _expected_phases(cap):
    phase = {P.SUBMIT_JOB: "submit/assign", P.ASSIGN_COLLECTOR: "submit/assign",
             P.ASSIGN_MAPPER: "submit/assign", P.ASSIGN_REDUCER: "submit/assign",
             P.PHASE_DONE: "done", P.JOB_RESULT: "result"}
    chunk = {P.ROLE_MAPPER: "collect", P.ROLE_REDUCER: "map", P.ROLE_GROUND: "result"}
    out = {}
    for s in cap.sent:
        name = chunk[s.role] if s.op == P.DATA_CHUNK else phase[s.op]
        m, b = out.get(name, (0, 0))
        out[name] = (m + 1, b + s.wire_bytes)
    return out


def test_report_numbers_match_what_was_sent(synth, capsys, tmp_path):
    path, cap = synth
    png = tmp_path / "seq.png"
    assert report.main([path, "--json", "--plot", str(png)]) == 0
    s = json.loads(capsys.readouterr().out)
    expected = _expected_phases(cap)
    for name in report.PHASES:
        p = s["phases"][name]
        assert (p["messages"], p["bytes"]) == expected.get(name, (0, 0)), name
    assert s["frames"] == len(cap.sent) and s["bytes"] == sum(x.wire_bytes for x in cap.sent)
    assert s["jobs"] == [JOB] and s["opcodes"]["PhaseDone"]["messages"] == 8
    ph = s["phases"]
    assert ph["submit/assign"]["first_s"] == 0.0
    assert ph["submit/assign"]["last_s"] < ph["collect"]["first_s"] <= ph["collect"]["last_s"] \
        < ph["map"]["first_s"] <= ph["map"]["last_s"] < ph["result"]["first_s"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The table: same numbers, one row per phase.
    assert report.main([path, "--job", str(JOB)]) == 0
    table = capsys.readouterr().out.splitlines()
    row = next(line for line in table if line.startswith("collect"))
    assert row.split()[1:3] == [str(expected["collect"][0]), str(expected["collect"][1])]
    assert report.main([path, "--json", "--job", str(JOB + 1)]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 0


@pytest.mark.parametrize("content", [None, b"not a capture at all\n", b""])
def test_report_bad_input_exit_2(tmp_path, capsys, content):
    path = tmp_path / "bad.pcap"
    if content is not None:
        path.write_bytes(content)
    assert report.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_report_cli_exit_2():
    r = subprocess.run([sys.executable, "-m", "experiments.pcap.report", "/nonexistent/x.pcap"],
                       capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1


# --- a real capture on the loopback ----------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tcpdump") is None,
                    reason="needs root and tcpdump to capture on lo")
def test_live_loopback_capture(tmp_path):
    """Frames encoded by node_app.protocol, sent over a real TCP connection on lo while
    tcpdump records; the layer recovers them in order (a 200 kB frame spans segments)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    pcap = tmp_path / "lo.pcap"
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-n", "-w", str(pcap), f"tcp port {port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in dump.stderr.readline()
        frames = [P.encode_frame(P.SUBMIT_JOB, 3, {"tasks": {}}, P.SubmitFixed(), key=KEY),
                  P.encode_frame(P.DATA_CHUNK, 3, P.DataChunk(P.ROLE_MAPPER, P.CHUNK_RECORDS, 0, 0,
                                                              b'{"x":"' + b"y" * 200_000 + b'"}'), key=KEY),
                  P.encode_frame(P.PHASE_DONE, 3, {"status": "ok"}, key=KEY)]
        reply = P.encode_frame(P.JOB_RESULT, 3, {"status": "ok"}, key=KEY)

        def serve():
            conn, _ = srv.accept()
            with conn:
                want, got = sum(map(len, frames)), 0
                while got < want:
                    got += len(conn.recv(1 << 16))
                conn.sendall(reply)
        t = threading.Thread(target=serve)
        t.start()
        with socket.create_connection(("127.0.0.1", port)) as c:
            for f in frames:
                c.sendall(f)
            assert c.recv(1 << 16)
        t.join(10)
        # tcpdump writes each packet as it sees it, but a loaded machine delays it: wait
        # (bounded) until the reply is in the file before stopping it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if len(list(read_frames(str(pcap), ports=[port]))) >= len(frames) + 1:
                    break
            except Exception:  # a record half written: read again
                pass
            time.sleep(0.1)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
        srv.close()
    got = list(read_frames(str(pcap), ports=[port]))
    assert [f.op for f in got] == [P.SUBMIT_JOB, P.DATA_CHUNK, P.PHASE_DONE, P.JOB_RESULT]
    assert [f.wire_bytes for f in got] == [len(f) for f in frames] + [len(reply)]
    assert all(f.error is None for f in got)


def test_lua_tables_match_protocol():
    """The constants the Lua dissector restates (opcodes, roles, kinds, version, limits,
    port) are node_app.protocol's / node_app.addressing's."""
    import re

    from experiments.pcap.scapy_layer import CHUNK_KIND_NAMES, ROLE_NAMES
    from node_app.addressing import DEFAULT_PORT

    lua = LUA_DISSECTOR.read_text()

    def table(name):
        body = re.search(rf"local {name} = \{{(.*?)\}}\n", lua, re.S).group(1)
        return {int(k, 0): v for k, v in re.findall(r'\[(0x[0-9A-Fa-f]+|\d+)\] = "(\w+)"', body)}
    assert table("OPS") == P.OP_NAMES
    assert table("ROLES") == ROLE_NAMES
    assert table("KINDS") == CHUNK_KIND_NAMES
    assert table("SOLVERS") == P.SOLVER_NAMES
    assert f"local PROTOCOL_VERSION = {P.PROTOCOL_VERSION}\n" in lua
    assert P.DEFAULT_MAX_FRAME == 16 * 1024 * 1024 and "MAX_FRAME = 16 * 1024 * 1024" in lua
    assert f'Pref.uint("TCP port", {DEFAULT_PORT},' in lua
    assert P.SUBMIT_FIXED.size == 41 and P.CHUNK_HEADER.size == 10  # offsets used in the Lua


def test_segment_longer_than_65535_byte_record(tmp_path):
    """On lo (MTU 65536) a captured record can exceed 65535 bytes with its Ethernet
    header; scapy's readers cut records there unless told otherwise."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    raw = P.encode_frame(P.DATA_CHUNK, 5, P.DataChunk(P.ROLE_REDUCER, P.CHUNK_FILE_DATA, 0, 0,
                                                      P.FILE_NO.pack(0) + b"x" * (65474 - P.TAG_BYTES)), key=KEY)
    assert len(raw) == 65495  # the largest TCP payload an IPv4 packet holds
    pkt = Ether() / IP(src="127.0.0.1", dst="127.0.0.2") / TCP(sport=40000, dport=4700, flags="PA",
                                                               seq=1) / raw
    assert len(pkt) > 65535
    path = tmp_path / "big.pcap"
    wrpcap(str(path), [pkt], snaplen=262144)
    (f,) = list(read_frames(str(path)))
    assert f.error is None and f.wire_bytes == len(raw)
