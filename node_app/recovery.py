"""The coordinator's crew: which satellite holds each role of a job, and replacing one.

Every role of a job is a :class:`Slot` (the reducer, mapper i, collector i feeding mapper
i).  :class:`Crew` sends the Assigns (each answered ``accepted`` or ``refused``), probes a
slot whose node may be dead or stalled (an Assign with ``probe``: a node that does not
answer within the probe timeout is taken for dead), and replaces a dead, stalled or busy
one: the cheapest free satellite by the job's cost model (node_app.planner.
spare_satellites, anchored on the role's peers) gets the role, then the roles upstream of
it get their Assign again with a higher revision naming the replacement, so they re-send
what they retained.  A collector whose upstream is its data source can be replaced only
when the collect task can read its partition elsewhere (every built-in task can; a task
with ``node_local_data = True`` cannot, and the job then fails naming the lost partition).

Each replacement is recorded (:class:`Reassignment`) for the job's metrics.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from node_app import protocol as P

SPARE_TRIES = 6          # satellites tried for one role before the job fails
STALLED = "did not answer within"  # the start of the reason a probe gives for a silent node


class CrewFailed(Exception):
    """A role could not be placed or replaced (the message names it and why)."""


@dataclass
class Slot:
    """One role of the job: ``role`` collector/mapper/reducer, ``index`` its stream number
    (collector i feeds mapper i; the reducer is 0), ``sat`` who holds it now."""

    role: str
    index: int
    sat: tuple[int, int]
    revision: int = 0
    done: bool = False            # reported ok (its output is all sent)
    activity: int = 0             # bytes in + out its holder last reported to a probe
    report: dict | None = None    # its last ok PhaseDone
    former: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.role} {list(self.sat)}"


@dataclass
class Reassignment:
    """A role moved from ``old`` to ``new`` satellite because of ``reason``: detected at
    ``when_s`` after submission; ``time_s`` until the replacement reported its phase done;
    ``bytes``: control frames plus the data re-sent to (or re-collected by) it."""

    role: str
    index: int
    old: tuple[int, int]
    new: tuple[int, int]
    reason: str
    when_s: float
    t_detect: float
    time_s: float | None = None
    bytes: int = 0

    def to_json(self) -> dict:
        return {"role": self.role, "index": self.index, "old": list(self.old),
                "new": list(self.new), "reason": self.reason, "when_s": round(self.when_s, 3),
                "time_s": None if self.time_s is None else round(self.time_s, 3),
                "bytes": self.bytes}


class Crew:
    """The roles of one job and their satellites (see the module docstring).

    node: the coordinator's daemon Node; job_id; plan: node_app.planner.Plan; common: the
    fields every Assign carries (P.Assign keyword arguments); t_submit: epoch s;
    probe_timeout_s: how long a live node has to answer; cost_kind: the job's cost model;
    recollectable: whether a lost collector's partition can be collected elsewhere.
    """

    def __init__(self, node, job_id: int, plan, common: dict, t_submit: float,
                 probe_timeout_s: float, cost_kind: str = "hops", recollectable: bool = True):
        self.node, self.job_id, self.plan, self.common = node, job_id, plan, common
        self.t_submit, self.probe_timeout_s = t_submit, probe_timeout_s
        self.cost_kind, self.recollectable = cost_kind, recollectable
        self.reducer = Slot("reducer", 0, tuple(plan.reducer))
        self.mappers = [Slot("mapper", i, tuple(m)) for i, m in enumerate(plan.mappers)]
        self.collectors = [Slot("collector", i, tuple(c)) for i, c in enumerate(plan.collectors)]
        self.bad: dict[tuple, str] = {}      # satellites that failed this job: why
        self.moves: list[Reassignment] = []
        self.revision = 0
        self.control_bytes = 0
        self.moving = asyncio.Lock()         # replacements one at a time

    # --- lookup ----------------------------------------------------------------------------
    def slots(self) -> list[Slot]:
        return [self.reducer, *self.mappers, *self.collectors]

    def slot(self, role: str, index) -> Slot | None:
        if role == "reducer":
            return self.reducer
        group = {"mapper": self.mappers, "collector": self.collectors}.get(role)
        if group is None or not isinstance(index, int) or not 0 <= index < len(group):
            return None
        return group[index]

    def used(self) -> set:
        return {s.sat for s in self.slots()}

    def everyone(self) -> set:
        """Every satellite that held a role of this job (for the release)."""
        return self.used() | {sat for s in self.slots() for sat in s.former}

    # --- Assigns -----------------------------------------------------------------------------
    def assign_for(self, slot: Slot, probe: bool = False) -> P.Assign:
        addr = self.node.addr_map.addr
        if slot.role == "reducer":
            return P.AssignReducer(**self.common, revision=slot.revision, probe=probe,
                                   los=self.node.sat, los_addr=self.node.addr,
                                   mappers=len(self.mappers))
        if slot.role == "mapper":
            r = self.reducer.sat
            return P.AssignMapper(**self.common, revision=slot.revision, probe=probe,
                                  reducer=r, reducer_addr=addr(r), collectors=1,
                                  index=slot.index)
        m = self.mappers[slot.index].sat
        return P.AssignCollector(**self.common, revision=slot.revision, probe=probe,
                                 mapper=m, mapper_addr=addr(m), partition=slot.index + 1)

    async def send(self, slot: Slot, probe: bool = False, timeout_s: float | None = None) -> str | None:
        """Send the slot's Assign (or a probe); None if accepted, else why not."""
        a = self.assign_for(slot, probe)
        try:
            n, reply = await self.node.send_control(
                self.node.addr_map.addr(slot.sat), a.op, self.job_id, a.body(), to=slot.sat,
                reply=True, timeout_s=timeout_s or self.probe_timeout_s)
        except asyncio.TimeoutError:
            return f"{STALLED} {timeout_s or self.probe_timeout_s:g} s (stalled)"
        except OSError as e:  # the reason, never the address
            text = os.strerror(e.errno) if e.errno else type(e).__name__
            return f"unreachable ({text.lower()})"
        except P.ProtocolError as e:
            return f"unreachable ({e})"
        self.control_bytes += n
        if reply is None:
            return "closed the connection without answering"
        if reply.op == P.ERROR:
            return f"refused: {str(reply.body.get('error'))[:300]}"
        done = P.PhaseDone.parse(reply.body)
        if done.status != P.ST_ACCEPTED:
            return done.error or done.status
        state = done.get("state")
        if isinstance(state, dict):
            try:
                slot.activity = int(state.get("bytes_in", 0)) + int(state.get("bytes_out", 0))
            except (TypeError, ValueError):
                pass
        return None

    async def probe(self, slot: Slot) -> str | None:
        """None if the slot's node still holds the role and answers in time.  A probe that
        times out is sent once more with twice the time before the node is taken for
        stalled: on a congested path one lost SYN costs TCP 1 s and two cost 3 s, and a
        healthy node replaced for that redoes its work for nothing."""
        return await self._send_twice(slot, self.probe_timeout_s, probe=True)

    async def _send_twice(self, slot: Slot, timeout_s: float, probe: bool = False) -> str | None:
        """:meth:`send`; a node silent for ``timeout_s`` gets a second try with twice the
        time before the reason (stalled) is returned."""
        why = await self.send(slot, probe=probe, timeout_s=timeout_s)
        if why is not None and why.startswith(STALLED):
            why = await self.send(slot, probe=probe, timeout_s=2 * timeout_s)
        return why

    async def place(self, slot: Slot, reason: str | None = None) -> None:
        """Assign the slot to its planned satellite, or (refused, unreachable, or
        ``reason`` given: it died) to the cheapest spare."""
        if reason is None:
            self.revision += 1
            slot.revision = self.revision
            why = await self.send(slot, timeout_s=max(self.probe_timeout_s, 5.0))
            if why is None:
                return
            reason = why
        await self.replace(slot, reason)

    async def replace(self, slot: Slot, reason: str) -> None:
        """Move the slot to a spare satellite, then re-wire the roles upstream of it (one
        replacement at a time: two never pick the same spare)."""
        async with self.moving:
            await self._replace(slot, reason)

    async def _replace(self, slot: Slot, reason: str) -> None:
        old, t0 = slot.sat, time.time()
        self.bad[old] = reason
        if slot.role == "collector" and not self.recollectable:
            raise CrewFailed(f"{slot.name} {reason}: its partition {slot.index + 1} is lost "
                             f"(the collect task reads node-local data)")
        refusals = [f"{slot.name} {reason}"]
        spares = await asyncio.get_running_loop().run_in_executor(None, self._spares, slot)
        for sat in spares[:SPARE_TRIES]:
            self.revision += 1
            slot.revision, slot.sat = self.revision, sat
            why = await self.send(slot, timeout_s=max(self.probe_timeout_s, 5.0))
            if why is None:
                break
            self.bad[sat] = why
            refusals.append(f"[{sat[0]}, {sat[1]}] {why}")
        else:
            slot.sat = old
            raise CrewFailed(f"no satellite could take over {slot.role} "
                             f"{'' if slot.role == 'reducer' else slot.index}".rstrip()
                             + ": " + "; ".join(refusals))
        slot.former.append(old)
        slot.done, slot.report = False, None
        move = Reassignment(slot.role, slot.index, old, slot.sat, reason, t0 - self.t_submit, t0)
        self.moves.append(move)
        self.node.log.log("reassigned", self.job_id, None, old, slot.sat, role=slot.role,
                          index=slot.index, reason=reason)
        await self._rewire(slot)

    def _spares(self, slot: Slot) -> list:
        """Free satellites for ``slot``, cheapest first by the job's cost model on the
        network as it is now (runs in a worker thread: numpy)."""
        from node_app.cost_model import CostModel
        from node_app.planner import spare_satellites
        if slot.role == "reducer":
            anchors = [m.sat for m in self.mappers] + [self.node.sat]
        elif slot.role == "mapper":
            anchors = [self.collectors[slot.index].sat, self.reducer.sat]
        else:
            anchors = [self.mappers[slot.index].sat]
        spec = self.node.spec
        excluded = self.used() | set(self.bad)
        spares = spare_satellites(spec.constellation, anchors, excluded | {self.node.sat},
                                  cost_kind=self.cost_kind, cost_model=CostModel(link=spec.link),
                                  router=spec.router(spec.link_state(time.time())))
        return spares + [self.node.sat] * (self.node.sat not in excluded)  # the coordinator last

    async def rewire(self, slot: Slot) -> None:
        """Have the roles feeding ``slot`` re-send to it on fresh streams."""
        async with self.moving:
            await self._rewire(slot)

    async def _rewire(self, slot: Slot) -> None:
        """Tell the roles feeding ``slot`` where it is now (they re-send their data)."""
        upstream = (self.mappers if slot.role == "reducer" else
                    [self.collectors[slot.index]] if slot.role == "mapper" else [])
        for up in upstream:
            self.revision += 1
            up.revision = self.revision
        # all at once: a reducer's mappers told one by one, on a loaded machine, learnt
        # of the move tens of seconds late, some after the replaced reducer had let
        # them drop what they retained
        # An Assign's time, and a second try: a resent Assign of the same revision is a
        # probe, so a node that took the first one late only answers again.
        timeout_s = max(self.probe_timeout_s, 5.0)
        answers = await asyncio.gather(*(self._send_twice(up, timeout_s) for up in upstream))
        for up, why in zip(upstream, answers):
            if why is not None:   # the feeder is gone too: replace it (it re-sends or re-collects)
                await self._replace(up, why)

    # --- accounting ---------------------------------------------------------------------------
    def reported(self, slot: Slot, body: dict) -> None:
        """An ok PhaseDone from the slot's current holder.  A replacement's report gives
        its reassignment's time and bytes (what it was sent again, or re-collected)."""
        slot.done, slot.report = True, body
        now = time.time()
        for move in self.moves:
            if move.new == slot.sat and move.role == slot.role and move.index == slot.index:
                if move.time_s is None:
                    move.time_s = now - move.t_detect
                key = "bytes" if slot.role == "collector" else "bytes_in"
                move.bytes = max(move.bytes, int(body.get(key) or 0))

    def reassignments(self) -> list[dict]:
        return [m.to_json() for m in self.moves]
