"""Controller and switch faults on an emulated 5x5 with word-count jobs running: the
controller killed (by PID) and restarted, a bridge's controller connection flapped, an
ISL flapped.  Every job exact; no table ever emptied, no flow re-installed.

Root only (builds a network): ``pytest tests/test_controller_faults.py -m root``.
"""

import threading
import time

import pytest

from node_app.tasks.wordcount import exact_word_count, resolve_data_file
from topo.addressing import switch_name

pytestmark = pytest.mark.root
EXACT = exact_word_count(resolve_data_file("data/sample.txt"))
JOB = ["-mi", "1", "-ma", "4", "-c", "5", "-a", "bipartite", "-r", "center", "--timeout", "60"]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    from node_app.emulated import EmulatedNodes
    from topo.config import from_dict
    from topo.testbed import Testbed
    cfg = from_dict({"grid": "5x5", "ground": [[1, 1]]})
    with Testbed(cfg) as tb:
        with EmulatedNodes(tb, str(tmp_path_factory.mktemp("ctlfault"))) as nodes:
            yield tb, nodes


class Jobs:
    """Word-count jobs back to back (seeds 1, 2, ...) in a thread until stopped."""

    def __init__(self, nodes):
        self.nodes, self.rows, self.stop = nodes, [], threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        seed = 0
        while not self.stop.is_set():
            seed += 1
            t0 = time.monotonic()
            try:
                out = self.nodes.run_job(JOB + ["-s", str(seed)], timeout_s=90)
                ok = out["status"] == "ok" and out["result"] == EXACT
            except RuntimeError as e:
                ok, out = False, {"error": str(e)}
            self.rows.append({"t0": t0, "t1": time.monotonic(), "exact": ok, "out": out})

    def __enter__(self):
        self.thread.start()
        while not self.rows:   # one clean job first (and the time one takes)
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(120)

    def around(self, t_a, t_b):
        """Jobs running at some moment of [t_a, t_b]."""
        return [r for r in self.rows if r["t0"] < t_b and r["t1"] > t_a]


def test_controller_killed_and_restarted_mid_job_keeps_every_flow(emulated):
    from topo import faults
    tb, nodes = emulated
    bridges = [switch_name(s) for s in tb.c.satellites()]
    with Jobs(nodes) as jobs, faults.FlowWatch(bridges[:5] + bridges[-5:]) as watch:
        time.sleep(0.3)   # mid-job
        t_kill = time.monotonic()
        res = faults.restart_controller(tb, down_s=1.0)
        t_back = time.monotonic()
        ages = {br: min(faults.flow_ages_s(br)) for br in bridges}
        time.sleep(1.0)   # a job after the restart, too
    print(f"controller restart: {res}; {len(jobs.rows)} jobs, "
          f"{watch.samples} flow samples, min flows {min(watch.min_flows.values())}")
    assert all(r["exact"] for r in jobs.rows), [r["out"] for r in jobs.rows if not r["exact"]]
    assert jobs.around(t_kill, t_back), "no job ran across the restart"
    assert res["new_pid"] != res["old_pid"] and res["tables_read"] == tb.c.size
    # Nothing to change after the restart: no FlowMod at all, so certainly no wipe ...
    assert res["flow_mods"] == {"add": 0, "modify": 0, "delete": 0}, res
    # ... every flow of every bridge is older than the kill (none re-added) ...
    since = time.monotonic() - t_kill
    young = {br: a for br, a in ages.items() if a < t_back - t_kill - 0.5}
    assert not young, (young, since)
    # ... and no watched table was ever empty (sampled all through).
    assert watch.samples >= 5 and min(watch.min_flows.values()) > 20, watch.min_flows


def test_bridge_and_link_flaps_mid_job(emulated):
    from topo import faults
    tb, nodes = emulated
    sat = (2, 2)
    br = switch_name(sat)
    with Jobs(nodes) as jobs, faults.FlowWatch([br]) as watch:
        time.sleep(0.3)
        t0 = time.monotonic()
        flap = faults.flap_bridge_controller(tb, sat, down_s=1.0)
        t1 = time.monotonic()
        age = min(faults.flow_ages_s(br))
        link = faults.flap_link(tb, (2, 2), (2, 3), down_s=1.0)
        t2 = time.monotonic()
        time.sleep(0.5)
    print(f"bridge flap: {flap}; link flap: {link}; {len(jobs.rows)} jobs")
    assert all(r["exact"] for r in jobs.rows), [r["out"] for r in jobs.rows if not r["exact"]]
    assert jobs.around(t0, t1) and jobs.around(t1, t2)
    assert flap["flow_mods_after"] == flap["flow_mods_before"]   # nothing re-sent
    assert age > t1 - t0 - 0.2 and min(watch.min_flows.values()) > 20, (age, watch.min_flows)
    assert link["reroute_down_s"] < 10 and link["reroute_up_s"] < 10
