"""Checks run inside the full-kernel guest (sch_netem and the openvswitch module exist there).

Prints one line ``SPACECOMP-VM-RESULT {json}`` with a result per check and exits 0 only
when every check passed.  Run by tests/vm/guest_init.sh as the guest's PID 1 child.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

# Neighbour RTT must be twice the model's one-way delay d/c within this tolerance
# (relative, plus an absolute allowance for software-emulated CPUs forwarding pings).
RTT_REL_TOL = 0.10
RTT_ABS_TOL_S = 0.005
# A TCP transfer over one shaped ISL: goodput against the model's Shannon rate (TCP/IP
# headers take about 4%; slow start on a 300 kB transfer a little more).
TCP_MIN_RATIO, TCP_MAX_RATIO = 0.80, 1.05


def check_modules() -> dict:
    """The two kernel features this machine lacks and the guest must have."""
    out = {}
    for module in ("sch_netem", "openvswitch"):
        r = subprocess.run(["modprobe", module], capture_output=True, text=True)
        out[module] = r.returncode == 0
    return {"ok": all(out.values()), **out}


def check_datapath() -> dict:
    """``topo.run --check`` with defaults: the kernel datapath chosen by itself, netem on,
    all pairs reachable along the controller's routes, nothing left after teardown."""
    out = subprocess.run([sys.executable, "-m", "topo.run", "--grid", "3x3", "--check", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    lines = out.stdout.strip().splitlines()
    if not lines:
        return {"ok": False, "error": out.stderr.strip()[-500:]}
    res = json.loads(lines[-1])
    ok = (out.returncode == 0 and res["datapath"] == "kernel" and res["netem"] is True
          and res["pairs_ok"] == res["pairs"] and res["paths_ok"] and res["teardown_clean"])
    return {"ok": ok, **res}


def ping_rtt_s(host, ip: str, count: int = 6) -> float:
    """Median RTT of ``count`` pings after a warm-up one (ARP, flow set-up)."""
    host.cmd(f"ping -c 1 -W 2 {ip}")
    text = host.cmd(f"ping -c {count} -i 0.2 -W 2 {ip}")
    rtts = [float(x) for x in re.findall(r"time=([0-9.]+) ms", text)]
    if not rtts:
        raise RuntimeError(f"no reply from {ip}: {text.strip()[-200:]}")
    return statistics.median(rtts) / 1000.0


def _sub(name: str, fn, results: dict) -> None:
    """Run one sub-check; a failure is recorded, never stops the others."""
    try:
        results[name] = fn()
    except Exception as e:  # report it and go on with the next check
        results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[-1500:]}


def check_on_testbed() -> dict:
    """On one 3x3 testbed: neighbour RTT against twice the model delay of the ISL between
    them (in-plane and cross-plane links differ in length), one TCP transfer over an ISL,
    then a word-count job."""
    from node_app.emulated import EmulatedNodes
    from node_app.tasks.wordcount import exact_word_count, resolve_data_file
    from topo.config import from_dict
    from topo.testbed import Testbed

    cfg = from_dict({"grid": "3x3", "require_delay": True})
    c = cfg.constellation()
    lm = cfg.link_model()
    results: dict = {}
    with Testbed(cfg) as tb:
        def delay():
            links = []
            for a, b in [((1, 1), (2, 1)), ((1, 1), (1, 2)), ((3, 2), (3, 3)), ((2, 3), (3, 3))]:
                model_rtt = 2 * lm.delay_s(c.link_length_m(a, b, cfg.start_time_s))
                rtt = ping_rtt_s(tb.host_of(a), tb.ip_of(b))
                ok = abs(rtt - model_rtt) <= RTT_REL_TOL * model_rtt + RTT_ABS_TOL_S
                links.append({"a": a, "b": b, "model_rtt_ms": round(model_rtt * 1e3, 2),
                              "rtt_ms": round(rtt * 1e3, 2), "ok": ok})
            return {"ok": all(x["ok"] for x in links), "links": links,
                    "tolerance": f"|rtt - 2d/c| <= {RTT_REL_TOL:.0%} + {RTT_ABS_TOL_S * 1e3:.0f} ms"}

        def tcp():
            server = tb.host_of((2, 1)).popen(["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)
            time.sleep(1)
            out = tb.host_of((1, 1)).cmd(f"timeout 90 iperf3 -c {tb.ip_of((2, 1))} -n 300K -J")
            server.kill()
            server.wait()
            try:
                sent = json.loads(out)["end"]["sum_received"]
            except (ValueError, KeyError):
                return {"ok": False, "iperf3": out[-800:],
                        "qdisc": tb.net.get("s1_1").cmd("tc -s qdisc show dev s1_1-eth2")[-800:]}
            model = lm.shannon_rate_bps(c.link_length_m((1, 1), (2, 1)))
            ratio = sent["bits_per_second"] / model
            return {"ok": TCP_MIN_RATIO <= ratio <= TCP_MAX_RATIO, "ratio": round(ratio, 3),
                    "throughput_bps": round(sent["bits_per_second"]),
                    "model_rate_bps": round(model), "seconds": round(sent["seconds"], 2)}

        def job():
            run_dir = tempfile.mkdtemp(prefix="guest-job-")
            with EmulatedNodes(tb, run_dir) as nodes:
                try:
                    out = nodes.run_job(["-mi", "1", "-ma", "3", "-c", "4", "-s", "1",
                                         "--timeout", "120"], timeout_s=600)
                except RuntimeError as e:
                    errs = {f: open(os.path.join(run_dir, f)).read()[-300:]
                            for f in os.listdir(run_dir) if f.endswith(".err")}
                    return {"ok": False, "error": str(e)[-800:],
                            "daemon_errors": {k: v for k, v in errs.items() if v}}
            exact = out.get("result") == exact_word_count(resolve_data_file("data/sample.txt"))
            return {"ok": exact, "wordcount_exact": exact, "job_time_s": out.get("job_time")}

        _sub("delay", delay, results)
        _sub("tcp", tcp, results)
        _sub("job", job, results)
        results["datapath"] = tb.metadata.get("datapath")
    results["ok"] = all(v.get("ok") for v in results.values() if isinstance(v, dict))
    return results


def check_demo() -> dict:
    """The README's main command, as a user runs it inside the Vagrant VM."""
    out = subprocess.run(["./testbed", "demo"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    exact = "exact (equals a straightforward count of the file): True" in out.stdout
    kernel = "datapath=kernel netem=True" in out.stdout
    return {"ok": out.returncode == 0 and exact and kernel, "exit": out.returncode,
            "stdout_tail": out.stdout[-600:], "stderr_tail": out.stderr[-400:]}


def check_fidelity() -> dict:
    """Opt-in (``run_check.py --checks fidelity``): experiments.fidelity on a 3x3 grid with
    netem (tests/vm/guest_fidelity.yaml): the standing queue, RTT against 2d/c and real
    jobs against the models, Spearman per predictor; every job's row comes back too."""
    import csv
    res_dir = tempfile.mkdtemp(prefix="guest-fidelity-")
    out = subprocess.run([sys.executable, "-m", "experiments.fidelity", "--config",
                          os.path.join(ROOT, "tests/vm/guest_fidelity.yaml"), "--json",
                          "--results", res_dir], cwd=ROOT, capture_output=True, text=True,
                         timeout=2400)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return {"ok": False, "exit": out.returncode, "stderr_tail": out.stderr[-1500:]}
    metrics = json.loads(lines[-1])
    with open(os.path.join(metrics["results_dir"], "environment.json")) as f:
        env = json.load(f)
    with open(os.path.join(metrics["results_dir"], "jobs.csv")) as f:
        rows = list(csv.DictReader(f))
    jobs = metrics.get("jobs", {})
    ok = bool(env.get("netem")) and jobs.get("n", 0) > 0 and jobs.get("all_exact", True)
    return {"ok": ok, "netem": env.get("netem"), "datapath": env.get("datapath"),
            "metrics": metrics, "jobs_csv": rows}


CHECKS = {"modules": check_modules, "datapath": check_datapath, "testbed": check_on_testbed,
          "demo": check_demo}
OPTIONAL = {"fidelity": check_fidelity}


def selected() -> dict:
    """The checks named by ``spacecomp.checks=a,b`` on the kernel command line (what
    run_check.py --checks passes), else the default ones."""
    try:
        with open("/proc/cmdline") as f:
            words = f.read().split()
    except OSError:
        words = []
    names = [w.split("=", 1)[1] for w in words if w.startswith("spacecomp.checks=")]
    if not names:
        return CHECKS
    every = {**CHECKS, **OPTIONAL}
    return {n: every[n] for n in names[-1].split(",") if n in every}


def main() -> int:
    results = {"kernel": platform.release()}
    ok = True
    for name, check in selected().items():
        t0 = time.monotonic()
        try:
            result = check()
        except Exception as e:  # report every check, whatever one of them does
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        result["seconds"] = round(time.monotonic() - t0, 1)
        results[name] = result
        ok = ok and result["ok"]
        print(f"guest check {name}: {'ok' if result['ok'] else 'FAILED'} {result}", flush=True)
    results["ok"] = ok
    print("SPACECOMP-VM-RESULT " + json.dumps(results), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
