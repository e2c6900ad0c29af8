"""The node application on the Mininet emulator: one daemon per satellite host, the
ground CLI on a ground-station host, every byte over the emulated (shaped, routed) ISLs.

Root only (builds a network); run alone: ``pytest tests/test_node_mininet.py -m root``.
"""

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
