"""Predictions of a finished job's time from its plan and the bytes it moved (the job part
of ``experiments.fidelity``), and their rank correlation with the measured times.  Pure."""

from __future__ import annotations

PREDICTORS = {
    "link_load_s": "per phase (collect, map, result) the most loaded ISL's bytes / its shaped rate, "
                   "phases added; the bytes each flow really moved, routes of the controller's Router",
    "paper_scaled_s": "paper S(d, V) = d/c + 8V / (rate_scale * Shannon rate of the path length) summed "
                      "over every transfer at the bytes really moved; no processing or hop overheads",
    "per_hop_s": "node_app.job_model: each phase's streams share every ISL max-min fairly (rates "
                 "re-shared as streams finish), a stream's rate is its slowest hop's share, plus "
                 "per-hop propagation delay where netem emulates it; phases added",
    "per_hop_pipelined_s": "per_hop_s with collect and map streams running at once (collectors "
                           "stream chunks while mappers forward theirs), sharing links",
    "per_hop_fwd_s": "per_hop_s plus the datapath's forwarding budget (forward_bps, forward_scope) "
                     "measured by the forwarding part (or given in the config), not fitted to jobs",
    "per_hop_fwd_pipelined_s": "per_hop_pipelined_s plus the same forwarding budget",
    "per_hop_chained_s": "node_app.job_model chained_s: streams run as the daemons run them (a map "
                         "stream starts when the collect stream into its mapper ended, the result "
                         "when every map stream ended), each after its connection set-up (a "
                         "round trip of the path delay), sharing links max-min with whatever "
                         "moves at the same time",
    "per_hop_queue_s": "per_hop_chained_s with each set-up also waiting behind the standing queue "
                       "(queue_bytes, measured by the queueing part or given) of every hop busy "
                       "with another stream",
    "per_hop_latency_s": "per_hop_chained_s with each stream's rate also at most hop_rate_bps / "
                         "its hops (TCP's window per round trip, which every switch crossed "
                         "lengthens), hop_rate_bps measured by the hoprate part or given",
    "cost": "the plan's paper cost, Eq. 5-7 at V = 10 GB, K = 1 s, t_h = 3 s (what the planner optimises)",
    "distance": "the plan's collector->mapper hop sum"}


def _role_bytes(out: dict, role: str) -> dict:
    return {tuple(r["node"]): r.get("bytes", 0) for r in out.get("roles", []) if r["role"] == role}


def _links_of(router, a, b) -> list:
    path = router.route(tuple(a), tuple(b)).path
    return [frozenset((x, y)) for x, y in zip(path, path[1:])]


def transfers(out: dict) -> list[tuple[str, tuple, tuple, int]]:
    """(phase, source, destination, bytes) of every network transfer of a finished job."""
    plan = out["plan"]
    col, mapb = _role_bytes(out, "collector"), _role_bytes(out, "mapper")
    reducer, los = tuple(plan["reducer"]), tuple(plan["los"])
    flows = [("collect", tuple(c), tuple(m), col.get(tuple(c), 0)) for c, m in plan["allocations"]]
    flows += [("map", tuple(m), reducer, mapb.get(tuple(m), 0)) for _c, m in plan["allocations"]]
    flows.append(("result", reducer, los, out.get("bytes", {}).get("result", 0)))
    return flows


def predictions(out: dict, router, shapes: dict, rate_scale: float, lm, netem: bool = False,
                forward_bps: float | None = None, forward_scope: str = "global",
                queue_bytes: float | None = None, hop_rate_bps: float | None = None) -> dict:
    """Every predictor of :data:`PREDICTORS` for one finished job (``per_hop_fwd_*`` only
    with ``forward_bps``, ``per_hop_queue_s`` only with ``queue_bytes``,
    ``per_hop_latency_s`` only with ``hop_rate_bps``)."""
    from node_app.job_model import JobTimeModel, Stream
    loads: dict = {}
    paper = 0.0
    streams, chain = [], []
    for phase, a, b, nbytes in transfers(out):
        if a == b or nbytes <= 0:
            chain.append(Stream(phase, (), max(nbytes, 0), a, b))
            continue
        route = router.route(a, b)
        paper += route.length_m / 299_792_458.0 + 8 * nbytes / (rate_scale * float(lm.shannon_rate_bps(route.length_m)))
        links = _links_of(router, a, b)
        streams.append(Stream(phase, tuple(links), nbytes))
        chain.append(Stream(phase, tuple(links), nbytes, a, b))
        for link in links:
            loads.setdefault(phase, {}).setdefault(link, 0)
            loads[phase][link] += nbytes
    phase_s = {ph: max(8 * n / shapes[link].rate_bps for link, n in per.items()) for ph, per in loads.items()}
    rates = {k: s.rate_bps for k, s in shapes.items()}
    delays = {k: s.delay_s for k, s in shapes.items()} if netem else {}
    phased = JobTimeModel(rates, delay_s=delays)
    piped = JobTimeModel(rates, delay_s=delays, pipelined=(("collect", "map"),))
    fwd = {}
    if forward_bps:
        fwd_phased = JobTimeModel(rates, delay_s=delays, forward_bps=forward_bps,
                                  forward_scope=forward_scope)
        fwd_piped = JobTimeModel(rates, delay_s=delays, forward_bps=forward_bps,
                                 forward_scope=forward_scope, pipelined=(("collect", "map"),))
        fwd = {"per_hop_fwd_s": fwd_phased.job_s(streams)["job_s"],
               "per_hop_fwd_pipelined_s": fwd_piped.job_s(streams)["job_s"]}
    chained = {"per_hop_chained_s": JobTimeModel(rates, delay_s=delays).chained_s(chain)["job_s"]}
    if queue_bytes is not None:
        chained["per_hop_queue_s"] = JobTimeModel(rates, delay_s=delays, queue_bytes=queue_bytes
                                                  ).chained_s(chain)["job_s"]
    if hop_rate_bps is not None:
        chained["per_hop_latency_s"] = JobTimeModel(rates, delay_s=delays, hop_rate_bps=hop_rate_bps
                                                    ).chained_s(chain)["job_s"]
    return {"link_load_s": sum(phase_s.values()), "paper_scaled_s": paper, **chained,
            "per_hop_s": phased.job_s(streams)["job_s"],
            "per_hop_pipelined_s": piped.job_s(streams)["job_s"], **fwd,
            **{f"{ph}_load_s": phase_s.get(ph, 0.0) for ph in ("collect", "map", "result")}}


def diagnostics(out: dict) -> dict:
    """Where a job's time went that no predictor models: ``reassignments`` (roles the
    coordinator replaced: a probe unanswered within its timeout) and ``start_lag_s`` (the
    last role's start after the first's)."""
    starts = [r["t_start"] for r in out.get("roles", []) if "t_start" in r]
    return {"reassignments": len(out.get("reassignments") or []),
            "start_lag_s": max(starts) - min(starts) if starts else None}


def spearman(x: list, y: list) -> dict:
    from scipy.stats import spearmanr
    if len(x) < 3:
        return {"rho": None, "p": None, "n": len(x)}
    res = spearmanr(x, y)
    return {"rho": float(res.statistic if hasattr(res, "statistic") else res[0]),
            "p": float(res.pvalue if hasattr(res, "pvalue") else res[1]), "n": len(x)}


