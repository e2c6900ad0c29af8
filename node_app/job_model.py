"""A per-hop model of a job's time on the emulator.  Pure, no I/O.

The paper's S(d, V) treats a routed path of length d as one link with the Shannon rate
of d.  On the emulator every ISL is its own shaped link: a stream gets the rate of the
slowest hop on its installed path, shared with the job's other streams that cross the
same hop, and each hop adds its propagation delay where the kernel emulates it.  This
model predicts a job's time that way:

- the job's transfers run in phases (collect -> map, map -> reduce, reduce -> LOS), one
  after the other; a phase's streams run concurrently;
- within a phase, links share their rate max-min fairly among the streams crossing them
  (TCP's long-run share on a shaped bottleneck); as streams finish, the others speed up
  (a fluid simulation, event by event);
- a stream also takes its path's propagation delay (the sum of per-hop delays);
- each phase adds a fixed processing time (what the tasks themselves take);
- ``chained_s`` instead runs the streams as the daemons do: store-and-forward per stream
  (a mapper maps a whole collected record, so its map stream starts when the collect
  stream into it ends; the reducer starts the result stream when every map stream into
  it ended), every stream first setting up its TCP connection over its path;
- connection set-up (``chained_s``): a handshake crosses the path and back (twice the
  per-hop delays) and, on every hop that is already carrying another stream when the
  handshake starts, waits behind that link's standing queue: ``queue_bytes`` (measured on
  a saturated shaped link, e.g. by ``experiments.fidelity``'s ``queueing`` part: ping RTT
  under one saturating TCP stream minus idle RTT, times the rate) drained at the link's rate;
- optionally, the datapath's forwarding capacity ``forward_bps``: a software switch
  (OVS's userspace datapath here) forwards a bounded number of bytes per second, whatever
  the links' shaped rates.  With ``forward_scope="global"`` one budget is shared by every
  switch traversal of every stream (one forwarding process on shared cores: a stream
  crossing k links passes k + 1 switches and uses k + 1 times its rate of the budget);
  with ``"switch"`` each switch has its own budget, shared by the streams crossing it.
  The value is measured independently of any job (``experiments.fidelity``'s
  ``forwarding`` part: TCP goodput over k-hop paths with shaping far above it).
- optionally, a latency bound ``hop_rate_bps``: a TCP stream moves at most a window per
  round trip, and on a software datapath under load every switch a packet crosses adds to
  that round trip, so a stream crossing h ISLs moves at most ``hop_rate_bps / h`` however
  fast its links are.  The value (bit/s x hops) is measured independently of any job
  (``experiments.fidelity``'s ``hoprate`` part: concurrent TCP streams over paths of many
  lengths on the shaped network, goodput x hops of those their links did not limit).

Units: bytes, bit/s, seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FORWARD_SCOPES = ("global", "switch")
Link = frozenset  # an ISL: frozenset({a, b}) of its two satellites


@dataclass(frozen=True)
class Stream:
    """One transfer: ``nbytes`` over the ISLs ``links`` (in path order), in ``phase``, from
    satellite ``src`` to ``dst`` (only :meth:`JobTimeModel.chained_s` needs those two: a
    stream waits for the earlier phases' streams into its ``src``)."""

    phase: str
    links: tuple
    nbytes: float
    src: tuple | None = None
    dst: tuple | None = None


@dataclass(frozen=True)
class JobTimeModel:
    """Per-hop job time model.

    rate_bps: link -> shaped rate (bit/s) of every ISL a stream may cross.
    delay_s: link -> propagation delay (s) per hop; empty where delay is not emulated.
    processing_s: phase -> fixed processing time added to that phase (default none).
    phases: the order phases run in; streams of an unlisted phase run after them.
    pipelined: phases that stream into each other run at once, sharing links (collectors
        send chunks while mappers already forward theirs): a tuple of phase-name tuples,
        each simulated as one phase named by its members joined with ``+``.
    forward_bps: the datapath's forwarding capacity, bit/s of payload (default infinite:
        no forwarding limit, the links alone); measured, not fitted to jobs.
    forward_scope: ``global`` (one budget for all switch traversals) or ``switch`` (a
        budget per switch), see the module doc.
    queue_bytes: standing queue (bytes) of a shaped link saturated by TCP, which a new
        connection's handshake waits behind on every busy hop (:meth:`chained_s`; default
        0: no queueing); measured, not fitted to jobs.
    hop_rate_bps: latency bound, bit/s x hops: a stream over h ISLs moves at most
        ``hop_rate_bps / h`` (default infinite: no bound); measured, not fitted to jobs.
    """

    rate_bps: dict
    delay_s: dict = field(default_factory=dict)
    processing_s: dict = field(default_factory=dict)
    phases: tuple = ("collect", "map", "result")
    pipelined: tuple = ()
    forward_bps: float = float("inf")
    forward_scope: str = "global"
    queue_bytes: float = 0.0
    hop_rate_bps: float = float("inf")

    def __post_init__(self):
        if self.forward_scope not in FORWARD_SCOPES:
            raise ValueError(f"forward_scope {self.forward_scope!r}: choose from "
                             f"{', '.join(FORWARD_SCOPES)}")
        if not self.forward_bps > 0:
            raise ValueError(f"forward_bps {self.forward_bps!r} must be positive")
        if not 0 <= self.queue_bytes < float("inf"):
            raise ValueError(f"queue_bytes {self.queue_bytes!r} must be >= 0 and finite")
        if not self.hop_rate_bps > 0:
            raise ValueError(f"hop_rate_bps {self.hop_rate_bps!r} must be positive")

    def _resources(self, streams: list[Stream]) -> dict:
        """resource -> (capacity bit/s, {stream index: weight}): every ISL (weight 1 per
        stream crossing it), with a finite ``hop_rate_bps`` each stream's own latency bound,
        and with a finite ``forward_bps`` the forwarding budget."""
        res = {}
        for k, s in enumerate(streams):
            for link in s.links:
                res.setdefault(("link", link), (self.rate_bps[link], {}))[1][k] = 1.0
            if s.links and self.hop_rate_bps != float("inf"):
                res[("latency", k)] = (self.hop_rate_bps / len(s.links), {k: 1.0})
        if self.forward_bps != float("inf"):
            for k, s in enumerate(streams):
                if not s.links:
                    continue
                switches = {sat for link in s.links for sat in link}
                if self.forward_scope == "global":
                    res.setdefault(("forward",), (self.forward_bps, {}))[1][k] = float(len(switches))
                else:
                    for sat in switches:
                        res.setdefault(("switch", sat), (self.forward_bps, {}))[1][k] = 1.0
        return res

    def max_min_rates(self, streams: list[Stream]) -> list[float]:
        """Max-min fair rates (bit/s) of concurrent ``streams`` (progressive filling):
        raise every unfrozen stream's rate together until a resource (a link, a stream's
        latency bound, or the forwarding budget) is full, freeze the streams using it, repeat.  A stream with no links gets infinity."""
        rates = [float("inf")] * len(streams)
        active = {k for k, s in enumerate(streams) if s.links}
        resources = self._resources(streams)
        capacity = {r: cap for r, (cap, _w) in resources.items()}
        while active:
            share, bottleneck = min(
                (capacity[r] / sum(w for k, w in users.items() if k in active), r)
                for r, (_cap, users) in resources.items() if active & users.keys())
            frozen = {k for k in active if k in resources[bottleneck][1]}
            for k in frozen:
                rates[k] = share
                for r, (_cap, users) in resources.items():
                    if k in users:
                        capacity[r] = max(0.0, capacity[r] - share * users[k])
            active -= frozen
        return rates

    def phase_s(self, streams: list[Stream]) -> float:
        """How long concurrent ``streams`` take: a fluid simulation where rates are
        re-shared max-min each time a stream finishes, plus each stream's path delay."""
        left = {k: 8.0 * s.nbytes for k, s in enumerate(streams) if s.nbytes > 0 and s.links}
        done_at = {}
        now = 0.0
        while left:
            keys = sorted(left)
            rates = self.max_min_rates([streams[k] for k in keys])
            step = min(left[k] / r for k, r in zip(keys, rates))
            now += step
            for k, r in zip(keys, rates):
                left[k] -= r * step
                if left[k] <= 1e-9 * 8.0 * streams[k].nbytes:
                    done_at[k] = now
                    del left[k]
        ends = [done_at.get(k, 0.0) + sum(self.delay_s.get(link, 0.0) for link in s.links)
                for k, s in enumerate(streams)]
        return max(ends, default=0.0)

    def job_s(self, streams: list[Stream]) -> dict:
        """``{"job_s": total, "<phase>_s": ...}``: the phases one after the other, each
        its streams' time plus its processing time."""
        order = list(self.phases) + sorted({s.phase for s in streams} - set(self.phases))
        groups, seen = [], set()
        for phase in order:
            if phase in seen:
                continue
            group = next((g for g in self.pipelined if phase in g), (phase,))
            groups.append(tuple(group))
            seen.update(group)
        out = {}
        for group in groups:
            mine = [s for s in streams if s.phase in group]
            out["+".join(group) + "_s"] = (self.phase_s(mine)
                                          + sum(self.processing_s.get(p, 0.0) for p in group))
        out["job_s"] = sum(out.values())
        return out

    def setup_s(self, stream: Stream, busy: set) -> float:
        """Connection set-up of ``stream`` when the ISLs in ``busy`` carry other streams:
        the handshake's round trip (twice the path delay) plus, per busy hop, the standing
        queue drained at that hop's rate."""
        delay = sum(self.delay_s.get(link, 0.0) for link in stream.links)
        queue = sum(8.0 * self.queue_bytes / self.rate_bps[link]
                    for link in stream.links if link in busy)
        return 2.0 * delay + queue

    def chained_s(self, streams: list[Stream]) -> dict:
        """``{"job_s": total, "starts": [...], "ends": [...]}`` with streams chained as the
        daemons run them (module doc): a stream becomes due when every stream of an earlier
        phase (in ``phases`` order) into its ``src`` has ended (at once when none does),
        then sets up its connection (:meth:`setup_s`, the links busy at that moment), then
        shares links max-min with every stream moving at the same time (fluid, re-shared
        at each start and end); it ends after its last bit plus its path delay.  Each
        phase's ``processing_s`` is added before its streams become due."""
        order = {p: k for k, p in enumerate(self.phases)}
        rank = [order.get(s.phase, len(order)) for s in streams]
        deps = [[j for j, t in enumerate(streams) if rank[j] < rank[k] and t.dst == s.src
                 and s.src is not None] for k, s in enumerate(streams)]
        left = {k: 8.0 * s.nbytes for k, s in enumerate(streams)}
        due, start, ends = {}, [None] * len(streams), [None] * len(streams)
        moving: set = set()
        now = 0.0

        def release():
            for k in range(len(streams)):
                if k in due or start[k] is not None or any(ends[j] is None for j in deps[k]):
                    continue
                t = max([now] + [ends[j] for j in deps[k]])
                t += self.processing_s.get(streams[k].phase, 0.0)
                busy = {link for j in moving for link in streams[j].links}
                due[k] = t + (self.setup_s(streams[k], busy) if streams[k].links else 0.0)

        release()
        while len([e for e in ends if e is not None]) < len(streams):
            for k in [k for k, t in due.items() if t <= now + 1e-12]:
                del due[k]
                start[k] = now
                if left[k] <= 0 or not streams[k].links:
                    ends[k] = now
                else:
                    moving.add(k)
            if any(e is None for e in ends) and not moving and not due:
                release()
                if not due:  # cannot happen: dependencies only point to earlier phases
                    raise RuntimeError("chained_s: streams wait for each other")
                continue
            keys = sorted(moving)
            rates = self.max_min_rates([streams[k] for k in keys]) if keys else []
            step = min([left[k] / r for k, r in zip(keys, rates)]
                       + [t - now for t in due.values()], default=0.0)
            now += max(step, 0.0)
            for k, r in zip(keys, rates):
                left[k] -= r * step
                if left[k] <= 1e-9 * 8.0 * streams[k].nbytes:
                    moving.discard(k)
                    ends[k] = now + sum(self.delay_s.get(link, 0.0) for link in streams[k].links)
            release()
        return {"job_s": max(ends, default=0.0), "starts": start, "ends": ends}
