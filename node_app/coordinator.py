"""The coordinator role: runs on the line-of-sight satellite that received a SubmitJob.

It validates the job, plans it with the core planner (node_app.planner), assigns the
reducer, the mappers and then the collectors, forwards every PhaseDone to the ground as
progress, relays the reducer's JobResult (and result files) to the ground, and measures
the job.  Roles that fall silent are probed; a dead, stalled or busy one is replaced by a
spare satellite and fed again by the roles upstream of it (node_app.recovery).  A job that
makes no progress (no phase done, no byte moved by a role it waits for) for
``phase_timeout_s`` fails, naming the nodes it still waits for; the coordinator never
hangs.

JobResult to the ground: ``{"status": "ok"|"failed", "error"?, "result", "files",
"metrics": {...}}``; metrics has the reference names ``distance``, ``reduce_distance``,
``job_time`` (s, submission to reducer completion), plus ``coordinator_time`` (s, to the
result at the coordinator), ``bytes`` per phase, ``records`` per phase, per-role
``roles`` timings, ``reassignments`` (role, index, old, new, reason, when_s, time_s,
bytes), ``result_from`` (the reducer whose result was used: a reducer replaced as stalled
that was only slow can still deliver first, and its result is whole), the plan and
``downlink`` (for a placed ground station: ``station``, ``gateway`` the satellite serving
it when the result went down, ``contact_wait_s``,
``held_result_bytes``; what goes to the ground waits for contact, node_app.downlink).
"""

from __future__ import annotations

import asyncio
import os
import time

from node_app import protocol as P
from node_app import tasks as T
from node_app.downlink import Downlink, NoContact
from node_app.recovery import Crew, CrewFailed
from node_app.replay import send_file
from node_app.streams import ChunkSender, Spool, remove_tree

DEFAULT_PHASE_TIMEOUT_S = 30.0
PROBE_EVERY_S = 2.0       # silence after which the roles not yet done are probed
PROBE_TIMEOUT_S = 2.0     # a probed node answering later than this is taken for dead
RESULT_GRACE_S = 1.0      # after the JobResult, how long late PhaseDones are awaited
MAX_PHASE_TIMEOUT_S = 86400.0
PHASES = ("collect", "map", "reduce")
PHASE_OF_ROLE = {"collector": "collect", "mapper": "map", "reducer": "reduce"}
GROUND_LOST = "ground_lost"  # an event (not a wire op): the heartbeat to the ground failed


class JobRejected(Exception):
    """A SubmitJob that cannot run (unknown task, bad AOI, ...): failed JobResult."""


def _plan(node, ext: dict, fixed: P.SubmitFixed, submitted_unix_s: float):
    """Plan the job on the run's constellation spec as the network is at submission:
    the controller's routes (their constellation time and the links down) where the run
    has a controller, else the spec's clock and outage model.  Runs in a worker thread
    (numpy/scipy)."""
    from node_app.cost_model import CostModel
    from node_app.planner import GeoBox, PlanError, plan_geo_job, plan_grid_job
    spec = node.spec
    constellation = spec.constellation
    state = spec.link_state(submitted_unix_s)
    los = ext.get("los", list(node.sat))
    try:
        los = (int(los[0]), int(los[1]))
        options = dict(allocator=str(ext.get("allocator", "bipartite")),
                       reducetype=str(ext.get("reducetype", "center")),
                       cost_kind=str(ext.get("cost", "hops")), solver=fixed.solver, los=los,
                       router=spec.router(state), cost_model=CostModel(link=spec.link))
        aoi = ext.get("aoi") or {}
        if not isinstance(aoi, dict):
            raise PlanError("aoi must be an object")
        kind = aoi.get("kind", "grid")
        if kind == "grid":
            plan = plan_grid_job(constellation, minsat=int(aoi.get("minsat", 3)),
                                 maxsat=int(aoi.get("maxsat", 8)),
                                 collectors=int(aoi.get("collectors", 11)),
                                 seed=int(aoi.get("seed", 0)), **options)
        elif kind == "geo":
            count = aoi.get("count")
            plan = plan_geo_job(constellation, GeoBox(fixed.ul_lat, fixed.ul_lon, fixed.lr_lat,
                                                      fixed.lr_lon),
                                t_s=float(aoi.get("t_s", state.t_s)),
                                ascending_only=fixed.ascending_only,
                                count=None if count is None else int(count), **options)
        else:
            raise PlanError(f"unknown AOI kind {kind!r} (grid or geo)")
    except (PlanError, ValueError, TypeError, KeyError, IndexError) as e:
        raise JobRejected(f"cannot plan the job: {e}") from None
    plan.extra.update(t_s=state.t_s, links_down=len(state.down), link_state=state.source)
    return plan


class JobFailed(Exception):
    """The job cannot finish (the message names the node that failed and why)."""

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.extra = extra


class CoordinatorJob:
    """One submitted job, from SubmitJob to JobResult, on the coordinator node."""

    def __init__(self, node, ground_link, msg: P.Message):
        self.node, self.ground, self.msg = node, ground_link, msg
        self.job_id = msg.job_id
        self.ext = msg.body
        self.fixed = msg.fixed
        self.uid = str(self.ext.get("jobid", self.job_id))
        self.events: asyncio.Queue = asyncio.Queue()
        self.spools: dict[int, Spool] = {}
        self.dir = None
        self.t_submit = time.time()
        self.crew: Crew | None = None
        self.downlink = Downlink(node, ground_link, self.job_id, self.ext)
        self.result_from = None     # the reducer whose JobResult was used
        self.replaced_reducers: dict = {}   # replaced reducers' ok PhaseDones, by satellite

    def ground_lost(self, error: BaseException) -> None:
        """The ground stopped answering (its heartbeat failed): end the job, releasing
        every role, rather than run it to a result nobody will collect."""
        self.events.put_nowait((GROUND_LOST, {"error": str(error) or type(error).__name__}))

    # --- messages from the roles (routed here by the daemon) -----------------------------
    async def on_message(self, link, msg: P.Message) -> None:
        if msg.op == P.DATA_CHUNK:  # a result file from the reducer, ahead of its JobResult
            spool = self.spools.setdefault(id(link), Spool(os.path.join(self.dir, "result"),
                                                           self.node.quota(self.job_id)))
            spool.handle(msg.body)
            return
        body = msg.body
        self.node.log.log("recv", self.job_id, body.get("msgid"), body.get("from"), self.node.sat,
                          what=msg.name, status=body.get("status"))
        if msg.op == P.JOB_RESULT:
            spool = self.spools.pop(id(link), None)
            names = body.get("files") or []
            body["_paths"] = spool.claim(list(names)) if spool else {}
            body["_wire"] = msg.wire_bytes
            if names and not spool:
                raise P.ProtocolError("JobResult names files that did not arrive")
        else:
            P.PhaseDone.parse(body)  # validates before it reaches the job
        await self.events.put((msg.op, body))

    # --- the job ---------------------------------------------------------------------------
    async def run(self) -> None:
        node = self.node
        node.log.log("recv", self.job_id, self.ext.get("msgid"), self.ext.get("from"), node.sat,
                     what="SubmitJob")
        if self.job_id in node.coordinating or node.job_uid.get(self.job_id, self.uid) != self.uid:
            await self._reply_failed(f"job id {self.job_id} is already in use on this coordinator")
            return
        node.coordinating[self.job_id] = self
        node.job_uid[self.job_id] = self.uid
        self.dir = node.job_dir(self.job_id, "coordinator")
        release = set()
        try:
            await self._run()
            # former holders, and current ones still at work (a replacement whose
            # predecessor's result was used)
            release = ({s for slot in self.crew.slots() for s in slot.former}
                       | {slot.sat for slot in self.crew.slots() if not slot.done})
        except JobRejected as e:
            await self._reply_failed(str(e))
        except (JobFailed, CrewFailed) as e:
            await self._reply_failed(str(e), **getattr(e, "extra", {}))
            release = self.crew.everyone() if self.crew else set()
        except (ConnectionError, OSError, NoContact) as e:
            node.log.log("ground_lost", self.job_id, None, node.sat, None, error=str(e))
            release = self.crew.everyone() if self.crew else set()
        finally:
            node.coordinating.pop(self.job_id, None)
            for s in self.spools.values():
                s.close()
            remove_tree(self.dir)
            node.drop_role(self.job_id, "coordinator")
            if release:
                node.spawn(self._release(release))

    def _validate(self) -> dict:
        tasks = self.ext.get("tasks")
        if not isinstance(tasks, dict):
            raise JobRejected("SubmitJob extension has no tasks {collect, map, reduce}")
        for kind in T.KINDS:
            if not T.known(kind, tasks.get(kind)):
                raise JobRejected(f"unknown {kind} task {tasks.get(kind)!r} "
                                  f"(known: {', '.join(T.names(kind))})")
        try:
            timeout = float(self.ext.get("phase_timeout_s", DEFAULT_PHASE_TIMEOUT_S))
            max_collect = int(self.ext.get("max_collect", 1024))
        except (TypeError, ValueError) as e:
            raise JobRejected(f"bad job option: {e}") from None
        if not 0 < timeout <= MAX_PHASE_TIMEOUT_S or max_collect < 1:
            raise JobRejected(f"phase_timeout_s must be in (0, {MAX_PHASE_TIMEOUT_S:g}] and "
                              f"max_collect >= 1")
        for key, kind in (("aoi", dict), ("los", list)):
            if self.ext.get(key) is not None and not isinstance(self.ext[key], kind):
                raise JobRejected(f"SubmitJob {key} must be a JSON "
                                  f"{'object' if kind is dict else 'array'}")
        try:
            T.check_job(tasks, self.ext.get("job_data"), max_collect=max_collect,
                        data_volume_bytes=self.fixed.data_volume_bytes,
                        data_dir=self.node.data_dir)
        except T.BadTaskInput as e:
            raise JobRejected(str(e)) from None
        return {"tasks": {k: tasks[k] for k in T.KINDS}, "timeout": timeout,
                "max_collect": max_collect}

    def _meta(self, plan, spec: dict) -> dict:
        f = self.fixed
        return {"jobid": self.uid, "job_id": self.job_id, "job_start": self.t_submit,
                "data_size": len(plan.allocations), "max_collect": spec["max_collect"],
                "max_collect_records": spec["max_collect"],
                "job_data": self.ext.get("job_data"), **spec["tasks"],
                "collect_task": spec["tasks"]["collect"], "map_task": spec["tasks"]["map"],
                "reduce_task": spec["tasks"]["reduce"],
                "data_volume_bytes": f.data_volume_bytes,
                "map_processing_factor": f.map_processing_factor,
                "reduce_processing_factor": f.reduce_processing_factor,
                "map_reduction_factor": f.map_reduction_factor,
                "reduce_reduction_factor": f.reduce_reduction_factor,
                "reducer": list(plan.reducer), "los": list(plan.los)}

    async def _run(self) -> None:
        node = self.node
        spec = self._validate()
        loop = asyncio.get_running_loop()
        t0 = time.time()
        plan = await loop.run_in_executor(None, _plan, node, self.ext, self.fixed,
                                          self.t_submit)
        plan_time = time.time() - t0
        self.plan = plan
        timeout = spec["timeout"]
        common = {"jobid": self.uid, "meta_data": self._meta(plan, spec), "tasks": spec["tasks"],
                  "coordinator": node.sat, "coordinator_addr": node.addr, "timeout_s": timeout}
        collect_task = T.get("collect", spec["tasks"]["collect"])
        crew = self.crew = Crew(node, self.job_id, plan, common, self.t_submit,
                                probe_timeout_s=min(PROBE_TIMEOUT_S, timeout / 2),
                                cost_kind=str(self.ext.get("cost", "hops")),
                                recollectable=not getattr(collect_task, "node_local_data", False))
        await self._progress({"event": "planned", "plan": plan.to_json(), "plan_time_s": plan_time})

        # reducer first, then mappers, then collectors: receivers exist before data flows
        await crew.place(crew.reducer)
        for group in (crew.mappers, crew.collectors):
            errors = await asyncio.gather(*(crew.place(s) for s in group), return_exceptions=True)
            for e in errors:
                if isinstance(e, BaseException):
                    raise e
        if crew.moves:
            await self._progress({"event": "reassigned", "reassignments": crew.reassignments()})
        result, t_result = await self._watch(timeout)
        await self._reply_ok(result, plan_time, t_result)

    async def _watch(self, timeout: float):
        """Follow the job to its JobResult: count phases, probe silent roles, replace the
        dead, fail a job that makes no progress for ``timeout``."""
        crew, node = self.crew, self.node
        loop = asyncio.get_running_loop()
        probe_every = min(PROBE_EVERY_S, timeout / 3)
        last_progress = last_check = loop.time()
        result = t_result = None
        grace = None
        while result is None or (grace is not None and loop.time() < grace
                                 and not all(s.done for s in crew.slots())):
            now = loop.time()
            if result is None and now - last_progress >= timeout:
                waiting = [s for s in crew.slots() if not s.done]
                names = ", ".join(s.name for s in waiting) or crew.reducer.name
                raise JobFailed(f"no progress for {timeout:g} s (stalled), waiting for "
                                f"{names}", stalled=[list(s.sat) for s in waiting])
            if result is None and now >= max(last_progress, last_check) + probe_every:
                # no progress for a while: probe the roles not done, whatever else arrives
                if await self._check([s for s in crew.slots() if not s.done]):
                    last_progress = loop.time()
                last_check = loop.time()
                continue
            wait = (max(last_progress, last_check) + probe_every if result is None
                    else grace) - loop.time()
            try:
                op, body = await asyncio.wait_for(self.events.get(), max(0.0, wait))
            except asyncio.TimeoutError:
                if result is not None:
                    break
                continue
            if op == GROUND_LOST:
                raise ConnectionError(f"ground lost: {body['error']}")
            sat = tuple(body.get("node") or body.get("reducer") or ())
            if op == P.JOB_RESULT:
                replaced = sat in crew.reducer.former and sat != crew.reducer.sat
                if sat != crew.reducer.sat and not replaced:
                    continue  # not from a reducer of this job
                if body.get("status") != "ok":
                    if replaced:
                        continue  # a replaced reducer failed: its replacement goes on
                    raise JobFailed(str(body.get("error", f"{crew.reducer.name} failed")))
                # A reducer sends its result only once every mapper's stream is complete,
                # so one replaced as stalled that was only slow has a whole result: the
                # first in is used, as a backup task's is, and the replacement released.
                if replaced:
                    node.log.log("result_from_replaced", self.job_id, body.get("msgid"), sat,
                                 node.sat, replacement=list(crew.reducer.sat))
                result, t_result = body, time.time()
                self.result_from = sat
                grace = loop.time() + RESULT_GRACE_S
                continue
            done = P.PhaseDone.parse(body)
            slot = crew.slot(done.role, done.index)
            if slot is crew.reducer and sat in slot.former and done.status == P.ST_OK:
                self.replaced_reducers[sat] = body  # kept should its result be used
            if slot is None or slot.sat != sat:
                continue  # from a satellite that no longer holds that role
            if done.status == P.ST_OK:
                crew.reported(slot, body)
                last_progress = loop.time()
                await self._progress({"event": "phase_done", **body, "remaining": {
                    p: sum(not s.done for s in crew.slots() if PHASE_OF_ROLE[s.role] == p)
                    for p in PHASES}})
            elif done.status == P.ST_PEER_LOST and result is None:
                peer = crew.slot(done.peer_role, 0 if done.peer_role == "reducer" else slot.index)
                if peer is not None and peer.sat == done.peer and await self._check([peer]):
                    last_progress = loop.time()
                elif peer is not None and peer.sat == done.peer and done.peer_role != "collector":
                    # the peer is alive: the reporter re-sends to it on a fresh stream
                    await crew.rewire(peer)
            elif done.status == P.ST_FAILED and result is None:
                raise JobFailed(done.error or f"{slot.name} failed", node=list(slot.sat))
        return result, t_result

    async def _check(self, slots) -> bool:
        """Probe ``slots``; replace those that do not answer.  True if any was replaced or
        moved data since the last probe (a slow role is making progress)."""
        before = [s.activity for s in slots]
        answers = await asyncio.gather(*(self.crew.probe(s) for s in slots))
        dead = [(s, why) for s, why in zip(slots, answers) if why is not None]
        moving = any(why is None and s.activity > b
                     for s, why, b in zip(slots, answers, before))
        for slot, why in dead:
            self.node.log.log("role_lost", self.job_id, None, slot.sat, self.node.sat,
                              role=slot.role, error=why)
            await self.crew.replace(slot, why)
        if dead:
            await self._progress({"event": "reassigned",
                                  "reassignments": self.crew.reassignments()})
        return bool(dead) or moving

    async def _release(self, sats) -> None:
        """Tell every satellite that held a role of this job to drop it (best effort)."""
        body = P.PhaseDone("coordinator", self.node.sat, P.ST_RELEASED,
                           extra={"jobid": self.uid}).body()

        async def one(sat):
            try:
                await self.node.send_control(self.node.addr_map.addr(sat), P.PHASE_DONE,
                                             self.job_id, body, to=sat, timeout_s=2.0)
            except (OSError, asyncio.TimeoutError):
                pass
        await asyncio.gather(*(one(s) for s in sats), return_exceptions=True)

    async def _progress(self, body: dict) -> None:
        """Forward progress to the ground (PhaseDone frames); a lost ground is logged."""
        try:
            if self.downlink.queue(body):  # out of contact: sent at the next contact
                return
            await self.downlink.ready("progress")
            await self.ground.send(P.PHASE_DONE, self.job_id, body)
        except (ConnectionError, OSError, NoContact) as e:
            self.node.log.log("ground_lost", self.job_id, None, self.node.sat, None, error=str(e))

    def _metrics(self, result: dict, plan_time: float, t_result: float) -> dict:
        plan = self.plan
        roles = [s.report for s in self.crew.slots() if s.report]
        used = self.replaced_reducers.get(self.result_from)  # a replaced reducer's result
        if used and not self.crew.reducer.done:
            roles.append(used)
        by_role = lambda r: [x for x in roles if x.get("role") == r]  # noqa: E731
        return {
            "jobid": self.uid, "job_id": self.job_id,
            "distance": plan.distance, "reduce_distance": plan.reduce_distance,
            "job_time": result["t_done"] - self.t_submit,
            "coordinator_time": t_result - self.t_submit,
            "plan_time_s": plan_time,
            "bytes": {"collect": sum(x.get("bytes", 0) for x in by_role("collector")),
                      "map": sum(x.get("bytes", 0) for x in by_role("mapper")),
                      "result": result.get("bytes", 0) + result.get("_wire", 0)},
            "records": {"collected": sum(x.get("records", 0) for x in by_role("collector")),
                        "map_outputs": sum(x.get("outputs", 0) for x in by_role("mapper"))},
            "roles": [{"role": x.get("role"), "node": x.get("node"),
                       "t_start": x.get("t_start"), "t_end": x.get("t_end"),
                       "duration_s": (x.get("t_end") or 0) - (x.get("t_start") or 0),
                       **{k: x[k] for k in ("records", "outputs", "bytes", "chunks") if k in x}}
                      for x in roles],
            "reassignments": self.crew.reassignments(),
            "result_from": list(self.result_from) if self.result_from else None,
            "control_bytes": self.crew.control_bytes,
            "plan": plan.to_json(),
            "downlink": self.downlink.record(),
        }

    async def _reply_ok(self, result: dict, plan_time: float, t_result: float) -> None:
        result = await self.downlink.hold(result, self.dir)
        sender = ChunkSender(self.ground, self.job_id, P.ROLE_GROUND, 0, self.node.log,
                             self.node.sat, None, what="result")
        paths = result.get("_paths", {})
        for no, (name, path) in enumerate(paths.items()):  # relay result files, streamed
            await send_file(sender.item, no, name, path)
        msgid = self.node.msgid(self.job_id)
        await self.ground.send(P.JOB_RESULT, self.job_id, {
            "status": "ok", "result": result.get("result"), "files": list(paths),
            "metrics": self._metrics(result, plan_time, t_result), "msgid": msgid,
            "from": list(self.node.sat)})
        self.node.log.log("send", self.job_id, msgid, self.node.sat, None, what="JobResult")

    async def _reply_failed(self, error: str, **extra) -> None:
        text = f"job {self.uid} failed: {error}"
        self.node.log.log("job_failed", self.job_id, None, self.node.sat, None, error=text)
        if self.crew is not None and self.crew.moves:
            extra.setdefault("reassignments", self.crew.reassignments())
        try:
            await self.downlink.ready("failure")
            await self.ground.send(P.JOB_RESULT, self.job_id, {
                "status": "failed", "error": text, **extra, "msgid": self.node.msgid(self.job_id)})
        except (ConnectionError, OSError, NoContact):
            pass
