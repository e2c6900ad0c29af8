"""The cost models against measured jobs, for ``headline.md`` (``experiments.paper
--jobs-from DIR``): reads result directories of ``python3 -m experiments.fidelity`` (or of
``tests/vm/run_check.py --checks fidelity --results DIR``, the full-kernel guest with
netem) and tabulates, per run, Spearman's rank correlation between measured job time and
the paper's model and the per-hop models.  Reads files only; no network."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.common import UsageError

# predictor key -> what the table calls it
COLUMNS = {"paper_scaled_s": "paper S(d, V)", "per_hop_s": "per-hop, phased",
           "per_hop_chained_s": "per-hop, chained", "per_hop_queue_s": "per-hop, chained + queue",
           "per_hop_latency_s": "per-hop, chained + latency bound"}

WHY = [
    "The paper's S(d, V) gives a multi-hop path the Shannon rate of its whole length d, as if "
    "it were one link: at low SNR that rate falls as 1/d^2, far below any of the path's hops. "
    "On the emulator every ISL is its own shaped link: a stream runs at its slowest hop's "
    "share, and the job's streams share links and run at the same time, which S(d, V) summed "
    "transfer by transfer does not model.",
    "The per-hop models follow the installed routes' shaped rates.  `chained` runs the streams "
    "as the daemons do (a mapper maps a whole collected record, so its output starts when its "
    "own input ended; each stream first sets up its TCP connection); `queue` adds, per busy hop, "
    "the standing queue measured on a saturated shaped link (the `queueing` part).",
    "What the emulator itself cost, until fixed: with OVS's userspace datapath every port's "
    "frames leave through one AF_PACKET socket of ovs-vswitchd, and every shaped link's "
    "queued frames counted against its 208 KiB send buffer; once the saturated ISLs' queues "
    "held that much, a send on any port failed and OVS dropped the frame (over 20 000 "
    "logged in half an 11x11 run): SYNs (connection set-ups late by TCP's 1 s or 3 s "
    "retransmission timeout), data (retransmission timeouts) and, most likely, the probes "
    "whose loss had healthy roles replaced in earlier runs.  A real ISL drops only when its own queue is full; the testbed now gives "
    "that socket room (`ovs_socket_buffers`), and the last column shows what remains: "
    "at 11x11 SYN retransmissions fell from 256 to 1 in 36 jobs.",
    "`latency bound` adds to `chained` what a CPU-starved software datapath does to TCP: a "
    "window per round trip, and every switch crossed lengthens the round trip, so a stream "
    "over h hops moves at most hop_rate_bps / h (the `hoprate` part measures hop_rate_bps "
    "with concurrent streams over many path lengths before the jobs).",
    "What no model here has: CPU shared with every daemon and the software datapath on 2 "
    "cores (other users' load varies run to run), and roles replaced after a probe went "
    "unanswered (`reassignments`).",
]


def load(dirs: list) -> list[dict]:
    """One summary per directory (UsageError naming a directory that is not a fidelity
    result with jobs)."""
    out = []
    for d in dirs:
        path = Path(d)
        try:
            metrics = json.loads((path / "metrics.json").read_text())
            env = json.loads((path / "environment.json").read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"--jobs-from {d}: not a fidelity result directory "
                             f"({type(e).__name__}: {e})") from None
        jobs = metrics.get("jobs") if isinstance(metrics, dict) else None
        if not isinstance(jobs, dict) or not isinstance(jobs.get("spearman"), dict):
            raise UsageError(f"--jobs-from {d}: metrics.json has no measured jobs")
        calm = jobs.get("without_reassignments") or {}
        repeats = jobs.get("repeats") or {}
        try:  # which AOI the jobs ran on (a guest's saved run has no config.yaml)
            import yaml
            cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
            aoi = "geographic AOI" if cfg.get("aoi_boxes") else "grid AOI"
        except (OSError, ValueError, AttributeError, yaml.YAMLError):
            aoi = None
        bufs = env.get("ovs_socket_buffers")
        out.append({"dir": str(path), "grid": metrics.get("grid"),
                    "where": env.get("where", "this machine"),
                    "datapath": env.get("datapath"), "netem": bool(env.get("netem")),
                    "n": jobs.get("n"), "job_time_min": jobs.get("job_time_min"),
                    "job_time_max": jobs.get("job_time_max"),
                    "queue_bytes": (metrics.get("queueing") or {}).get("queue_bytes"),
                    "spearman": {k: (jobs["spearman"].get(k) or {}).get("rho") for k in COLUMNS},
                    "totals": jobs.get("totals"), "aoi": aoi,
                    "ovs_buffers_enlarged": (None if not isinstance(bufs, list) else
                                             all(b.get("send_socket") for b in bufs)),
                    "repeat_plans": repeats.get("plans"),
                    "test_retest_rho": (repeats.get("test_retest_rho") or {}).get("rho"),
                    "median_spearman": {k: ((repeats.get("spearman_plan_median") or {}).get(k)
                                            or {}).get("rho") for k in COLUMNS},
                    "calm_n": calm.get("n"),
                    "calm_spearman": {k: ((calm.get("spearman") or {}).get(k) or {}).get("rho")
                                      for k in COLUMNS}})
    return out


def _rho(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def section(runs: list[dict]) -> list[str]:
    """The headline.md section: one table row per run, then why the models depart."""
    if not runs:
        return ["No measured jobs given (`--jobs-from DIR`: a result directory of "
                "`python3 -m experiments.fidelity`)."]
    head = ["run", "where", "jobs", "job_time (s)", *COLUMNS.values(),
            "without reassignments (n: chained)", "replaced roles / SYN retr. / RTOs",
            "repeated plans: test-retest"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        where = (f"{r['grid']}, {r['where']}, datapath {r['datapath']}, "
                 + ("netem: per-hop delay emulated" if r["netem"] else "no netem: no delay")
                 + (f", {r['aoi']}" if r.get("aoi") else "")
                 + (", OVS send buffer enlarged" if r.get("ovs_buffers_enlarged") else ""))
        times = (f"{r['job_time_min']:.1f}-{r['job_time_max']:.1f}"
                 if r["job_time_min"] is not None else "n/a")
        calm = (f"{r['calm_n']}: {_rho(r['calm_spearman']['per_hop_chained_s'])}"
                if r["calm_n"] is not None else "n/a")
        tot = r.get("totals")
        tot = ("n/a" if not tot else
               " / ".join("n/a" if tot.get(k) is None else str(tot[k])
                          for k in ("reassignments", "syn_retrans", "tcp_timeouts")))
        retest = "n/a"
        if r.get("repeat_plans"):
            med = r["median_spearman"]
            shown = [k for k in ("per_hop_chained_s", "per_hop_latency_s", "paper_scaled_s")
                     if med.get(k) is not None]
            retest = (f"{r['repeat_plans']}: {_rho(r['test_retest_rho'])}; on the median times "
                      + ", ".join(f"{COLUMNS[k]} {_rho(med[k])}" for k in shown))
        lines.append("| " + " | ".join([Path(r["dir"]).name, where, str(r["n"]), times,
                                         *(_rho(r["spearman"][k]) for k in COLUMNS), calm,
                                         tot, retest]) + " |")
    lines += ["", "Spearman's rank correlation between measured job time and each model "
              "(goal >= 0.9 for a per-hop model).  The last column: where the same plans "
              "ran twice, how their two measured times rank against each other (the most a "
              "model can reach against one run's times).", ""]
    lines += [f"- {w}" for w in WHY]
    return lines
