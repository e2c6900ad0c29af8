"""The node application on the Mininet emulator: one daemon per satellite host, the
ground CLI on a ground-station host, every byte over the emulated (shaped, routed) ISLs.

Root only (builds a network); run alone: ``pytest tests/test_node_mininet.py -m root``.
"""

import json
import time

import pytest

from node_app.tasks.wordcount import exact_word_count, resolve_data_file

pytestmark = pytest.mark.root


def test_word_count_on_a_mininet_3x3_testbed(tmp_path):
    from node_app.emulated import EmulatedNodes
    from topo.config import from_dict
    from topo.testbed import Testbed
    cfg = from_dict({"grid": "3x3", "ground": [[1, 1]]})
    with Testbed(cfg) as tb:
        with EmulatedNodes(tb, str(tmp_path)) as nodes:
            out = nodes.run_job(["-mi", "1", "-ma", "3", "-c", "4", "-s", "1",
                                 "-a", "bipartite", "-r", "center", "--timeout", "60"])
    assert out["status"] == "ok"
    assert out["result"] == exact_word_count(resolve_data_file("data/sample.txt"))
    assert out["distance"] > 0 and out["job_time"] > 0
    assert out["timeline_events"] > 0
    # the daemons dropped root once listening (and still served the job)
    logs = [json.loads(x) for x in open(tmp_path / "logs" / "node-1-1.jsonl")]
    priv = [e for e in logs if e["action"] == "privileges"]
    assert priv and priv[0]["dropped"], priv


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
