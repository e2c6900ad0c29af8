"""The typed job API and a user's tasks module on the emulated network (root, one 3x3)."""

import os

import pytest

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUSTOM = os.path.join(ROOT, "examples", "custom_task.py")


def test_api_run_with_user_tasks_on_emulated_nodes(tmp_path):
    from node_app.api import JobResult, JobSpec, run
    from node_app.emulated import EmulatedNodes
    from node_app.tasks.wordcount import exact_word_count, resolve_data_file
    from topo.config import from_dict
    from topo.testbed import Testbed
    n = 3000
    primes = [k for k in range(n) if all(k % f for f in range(2, int(k ** 0.5) + 1)) and k > 1]
    spec = JobSpec(grid="3x3", minsat=1, maxsat=3, collectors=3, seed=2,
                   collecttask="rangecollector", maptask="primemapper", reducetask="primereducer",
                   job_data={"n": n}, tasks_modules=(CUSTOM,), timeout_s=60)
    with Testbed(from_dict({"grid": "3x3"}), echo=lambda m: None) as tb, \
            EmulatedNodes(tb, str(tmp_path), tasks_modules=[CUSTOM]) as nodes:
        res = run(spec, on=nodes)                       # the daemons loaded the user's tasks
        words = run(JobSpec(grid="3x3", minsat=1, maxsat=3, collectors=4, seed=1), on=nodes)
    assert isinstance(res, JobResult)
    assert res.result == {"count": len(primes), "sum": sum(primes)}
    assert res.distance >= 0 and res.job_time > 0
    assert words.result == exact_word_count(resolve_data_file("data/sample.txt"))
