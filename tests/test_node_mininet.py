"""The node application on the Mininet emulator: a daemon process per plane (each
satellite's sockets in its own host's namespace) or per satellite host, the ground CLI on
a ground-station host, every byte over the emulated (shaped, routed) ISLs; daemons run as
nobody and refuse frames under another key.

Root only (builds a network); run alone: ``pytest tests/test_node_mininet.py -m root``.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from node_app.tasks.wordcount import exact_word_count, resolve_data_file

pytestmark = pytest.mark.root
JOB = ["-mi", "1", "-ma", "3", "-c", "4", "-s", "1", "-a", "bipartite", "-r", "center",
       "--timeout", "60"]


def _ready(run_dir, sat):
    pid, inode = open(os.path.join(run_dir, "ready", f"{sat[0]}-{sat[1]}")).read().split()
    return int(pid), int(inode)


def test_word_count_with_a_daemon_process_per_plane(tmp_path):
    from node_app.emulated import EmulatedNodes
    from topo.config import from_dict
    from topo.testbed import Testbed
    cfg = from_dict({"grid": "3x4", "ground": [[1, 1]]})
    with Testbed(cfg) as tb:
        with EmulatedNodes(tb, str(tmp_path)) as nodes:
            pids = nodes.pids()
            assert len(pids) == 3  # one process per plane, 4 satellites each
            for sat, host in tb.sat_hosts.items():
                pid, inode = _ready(str(tmp_path), sat)
                assert pid in pids and pid == nodes.procs[sat].pid
                # the satellite's loop runs in its host's namespace ...
                assert inode == os.stat(f"/proc/{host.pid}/ns/net").st_ino
                # ... and its listener is a socket of that namespace, owned by the plane
                ss = host.cmd("ss -Hltnp 'sport = :4700'")
                assert f"{tb.ip_of(sat)}:4700" in ss and f"pid={pid}," in ss, ss
            root_ss = subprocess.run(["ss", "-Hltnp", "sport = :4700"], capture_output=True,
                                     text=True).stdout
            assert not any(f"pid={p}," in root_ss for p in pids)
            mem = nodes.memory()
            assert mem["processes"] == 3 and mem["rss_mb"] > 0
            before = tb.flow_counters()
            out = nodes.run_job(JOB)
            after = tb.flow_counters()
    assert out["status"] == "ok"
    assert out["result"] == exact_word_count(resolve_data_file("data/sample.txt"))
    assert out["distance"] > 0 and out["job_time"] > 0
    # the job's traffic crossed the emulated switches towards satellites it used
    grew = {br for key, n in after.items() if n > before.get(key, 0) for br in [key[0]]}
    assert len(grew) >= 4, grew
    # the plane daemons dropped root once listening (and still served the job)
    logs = [json.loads(x) for x in open(tmp_path / "logs" / "node-1-1.jsonl")]
    priv = [e for e in logs if e["action"] == "privileges"]
    assert priv and priv[0]["dropped"], priv


def test_word_count_with_a_daemon_in_every_host(tmp_path):
    from node_app.emulated import EmulatedNodes
    from topo.config import from_dict
    from topo.testbed import Testbed
    cfg = from_dict({"grid": "3x3", "ground": [[1, 1]]})
    with Testbed(cfg) as tb:
        with EmulatedNodes(tb, str(tmp_path), per_process=1) as nodes:
            assert len(nodes.pids()) == 9
            out = nodes.run_job(JOB)
    assert out["status"] == "ok"
    assert out["result"] == exact_word_count(resolve_data_file("data/sample.txt"))
    assert out["timeline_events"] > 0


def _uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


def test_emulated_daemons_run_as_nobody_and_refuse_strangers(tmp_path):
    """On the emulator: every daemon serves as ``nobody``; a frame tagged with another key,
    sent from a ground host through the emulated network, is refused."""
    import pwd
    import subprocess
    import sys

    from node_app import protocol as P
    from node_app.emulated import EmulatedNodes
    from topo.config import from_dict
    from topo.testbed import Testbed
    cfg = from_dict({"grid": "3x3", "ground": [[1, 1]]})
    with Testbed(cfg) as tb, EmulatedNodes(tb, str(tmp_path)) as nodes:
        nobody = pwd.getpwnam("nobody").pw_uid
        deadline = time.time() + 10  # a daemon drops root just after its ready file
        while {_uid(p.pid) for p in nodes.procs.values()} != {nobody} and time.time() < deadline:
            time.sleep(0.05)
        assert {_uid(p.pid) for p in nodes.procs.values()} == {nobody}
        host, port = nodes.addr_map.addr((1, 1))
        forged = P.encode_frame(P.JOB_RESULT, 5, {"status": "ok", "result": {"FORGED": 1}},
                                key=bytes(32))
        probe = (f"import socket; s = socket.create_connection(({host!r}, {port}), 5); "
                 f"s.sendall(bytes.fromhex({forged.hex()!r})); s.shutdown(1); "
                 f"print(s.recv(4096).hex())")
        out = tb.ground_hosts[0].popen([sys.executable, "-c", probe], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE).communicate(timeout=30)[0]
        reply, _ = P.decode_frame(bytes.fromhex(out.decode().strip()), key=nodes.key)
        assert reply.op == P.ERROR and reply.body["error"] == P.AUTH_ERROR


def test_plane_daemon_bad_input_exits_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "node_app.multi", "--addr-map",
                          str(tmp_path / "none.json"), "--run-dir", str(tmp_path),
                          "--node", "1,1"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "node_app.multi", "--run-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
