"""The fault experiment on an emulated 5x5 (short schedule): role kills, a stalled
mapper, the controller killed and restarted mid-job, an ISL flapped mid-job, overload,
bad input.  Root only (builds a network)."""

import json
import time

import pytest

pytestmark = pytest.mark.root


def test_emulated_fault_run_reports_every_field_and_no_job_is_wrong(tmp_path, capsys):
    from experiments import faults
    tb = tmp_path / "testbed.yaml"   # (in-process: waiting for the network lock is no failure)
    tb.write_text("grid: 5x5\nground: [[1, 1]]\nlock_wait_s: 3600\n")
    sched = tmp_path / "faults.yaml"
    sched.write_text("jobs: 2\nstall_every: 2\nphase_timeout_s: 6\njob_timeout_s: 120\n"
                     "emulated:\n  minsat: 1\n  maxsat: 4\n  collectors: 4\n  concurrent: 4\n"
                     "  controller_kills: 1\n  link_flaps: 1\n  flap_s: 0.5\n")
    t0 = time.monotonic()
    code = faults.main([str(tb), "--config", str(sched), "--json", "--results", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    m = json.loads(out.out.strip().splitlines()[-1])
    with capsys.disabled():
        print(f"emulated fault run: {time.monotonic() - t0:.1f} s (lock wait included); "
              f"{json.dumps({k: m[k] for k in ('jobs_attempted', 'jobs_exact', 'recovery_s')})}")
    for key in ("jobs_attempted", "jobs_exact", "jobs_failed_clean", "jobs_wrong", "jobs_hung",
                "faults_injected", "recovery_s", "bad_inputs_rejected"):
        assert key in m
    # 2 role-fault jobs + 1 controller kill + 1 link flap + 4 at once
    assert m["jobs_attempted"] == 2 + 1 + 1 + 4
    assert m["jobs_wrong"] == 0 and m["jobs_hung"] == 0
    assert m["jobs_exact"] + m["jobs_failed_clean"] == m["jobs_attempted"]
    assert m["jobs_exact"] >= m["jobs_attempted"] - 1, out.err[-2000:]
    kinds = m["faults_by_kind"]
    assert sum(v for k, v in kinds.items() if k.startswith(("kill_c", "kill_m", "kill_r",
                                                           "stall"))) >= 1, kinds
    assert kinds.get("kill_controller") == 1 and kinds.get("flap_link") == 1, kinds
    # the restarted controller re-synced every switch; the flap was routed around
    assert m["recovery_s"]["kill_controller"]["max"] < 30
    assert m["recovery_s"]["flap_link"]["max"] < 10
    assert m["bad_inputs_rejected"] == m["bad_inputs_sent"]
    assert m["overload"]["after_outcome"] == "exact"
    assert m["emulated"]["daemons"].startswith("one per satellite host")
