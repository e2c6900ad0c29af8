"""The coordinator plans on the routes the controller installed (root, one 5x5 network).

A Walker-star seam (``seam: false``) and cross-plane links taken down during the run
both change hop distances; the job's reported distances must be those of the installed
paths (walked through the controller's next-hop tables), not of a torus the coordinator
assumes."""

import subprocess

import pytest

from controller.routing import Router
from node_app.planner import plan_grid_job
from node_app.tasks.wordcount import exact_word_count, resolve_data_file
from topo.constellation import Constellation

pytestmark = pytest.mark.root

JOB = ["-mi", "1", "-ma", "5", "-c", "6", "-s", "1", "-a", "bipartite", "-r", "center",
       "--timeout", "60"]


def installed_hops(tb, state, a, b) -> int:
    """Hops from ``a`` to ``b`` along the next hops the controller installed."""
    c = tb.c
    hops, cur = 0, c.node_id(tuple(a))
    target = c.node_id(tuple(b))
    while cur != target:
        cur = state["next_hops"][str(cur)][target - 1]
        assert cur > 0, f"no installed route {a} -> {b}"
        hops += 1
        assert hops <= c.size
    return hops


def check_against_installed(tb, out):
    state = tb.controller_state()
    plan = out["plan"]
    pairs = [installed_hops(tb, state, col, mapper) for col, mapper in plan["allocations"]]
    assert plan["pair_hops"] == pairs
    assert out["distance"] == sum(pairs)
    mappers = [m for _, m in plan["allocations"]]
    assert out["reduce_distance"] == sum(installed_hops(tb, state, m, plan["reducer"])
                                         for m in mappers)
    assert out["result"] == exact_word_count(resolve_data_file("data/sample.txt"))


def test_jobs_report_the_distances_of_the_installed_routes(tmp_path):
    from node_app.emulated import EmulatedNodes
    from topo.config import from_dict
    from topo.testbed import Testbed
    cfg = from_dict({"grid": "5x5", "seam": False})
    torus = plan_grid_job(Constellation(5, 5), minsat=1, maxsat=5,
                          collectors=6, seed=1)
    with Testbed(cfg, echo=lambda m: None) as tb, EmulatedNodes(tb, str(tmp_path)) as nodes:
        out = nodes.run_job(JOB)
        check_against_installed(tb, out)
        assert out["distance"] != torus.distance  # the seam matters for this job
        assert out["plan"]["link_state"] == "controller" and out["plan"]["links_down"] == 0

        # The cross-plane links between planes 1 and 2 down but the one of satellite 3:
        # every crossing detours through it.  A planner blind to the outage would report
        # 12 hops for a job whose installed routes are 16 hops long; the coordinator plans
        # on the controller's rerouted tables instead.
        down = {frozenset({(s, 1), (s, 2)}) for s in (1, 2, 4, 5)}
        for s in (1, 2, 4, 5):
            subprocess.run(["ip", "link", "set", f"s{s}_1-eth4", "down"], check=True)
            subprocess.run(["ip", "link", "set", f"s{s}_2-eth5", "down"], check=True)
        state = tb.wait_links_down(down)
        blind = plan_grid_job(tb.c, minsat=1, maxsat=5, collectors=6, seed=1)
        assert blind.distance != sum(installed_hops(tb, state, a, b)
                                     for a, b in blind.allocations)
        out2 = nodes.run_job(JOB)
        check_against_installed(tb, out2)
        assert out2["plan"]["links_down"] == 4
        rerouted = plan_grid_job(tb.c, minsat=1, maxsat=5, collectors=6, seed=1,
                                 router=Router(tb.c, 0.0, down))
        assert out2["distance"] == rerouted.distance
