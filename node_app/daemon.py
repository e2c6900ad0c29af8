"""The SpaceCoMP node daemon: one process per satellite.

    python3 -m node_app.daemon --node SAT,ORB --addr-map addrs.json --key-file testbed.key
        [--spec spec.json] [--work-dir D] [--log-dir D] [--data-dir D] [--max-frame BYTES]
        [--max-buffered BYTES] [--job-disk-quota BYTES] [--user NAME] [--gateway]
        [--ready-file F] [--listen HOST] [--max-roles N]

It listens on its satellite's address from the address map and serves, per job id, any
of the roles coordinator (node_app.coordinator), collector, mapper and reducer
(node_app.roles).  Every inbound connection is read frame by frame; a frame whose
HMAC tag does not verify under the testbed key is counted (``auth_failures``), logged
(``auth_failed``) and answered with a fixed Error; a malformed, truncated, oversized or
unknown frame gets an Error reply; either closes that connection only, and every other
connection and job carries on.  Roles only ever connect to the address the map gives
the satellite named in their Assign.

Connections by first frame:
* SubmitJob            ground -> coordinator; stays open for progress (and a 2-s "alive"
                       heartbeat) and the JobResult; queued while MAX_COORDINATED jobs run.
* Assign*              coordinator -> role; answered with a PhaseDone ``accepted`` (created,
                       moved to a new peer, or a probe's "still held") or ``refused`` (busy:
                       more than ``--max-roles`` roles or MAX_THREADS live task threads).
* PhaseDone ``released`` (role "coordinator")  the job is over: drop its roles here.
* DataChunk (mapper)   collector -> mapper stream; the mapper's PhaseDone comes back on it.
* DataChunk (reducer)  mapper -> reducer stream; the reducer's PhaseDone comes back on it.
* PhaseDone / JobResult / DataChunk (ground)  roles -> coordinator.
"""

from __future__ import annotations

import sys

# Nodes speak plain TCP; keeping asyncio from loading the TLS module saves ~4 MB of RSS
# in each of the N*M daemons.  (Only when this module is first imported before ssl.)
if "ssl" not in sys.modules:
    sys.modules["ssl"] = None

import argparse  # noqa: E402
import asyncio  # noqa: E402
import concurrent.futures  # noqa: E402
import itertools  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

from node_app import protocol as P
from node_app.addressing import AddressMap, parse_sat_key
from node_app.nodelog import NodeLog
from node_app.streams import DiskQuota
from node_app.tasks import DEFAULT_DATA_DIR
from node_app.transport import CONNECT_TIMEOUT_S, DEFAULT_BUDGET_BYTES, STREAM_LIMIT, ByteBudget, Link
from topo import cli
from topo.spec import ConstellationSpec, SpecError

ROLE_WAIT_S = 10.0        # how long a data stream may wait for its role's Assign
CONTROL_TIMEOUT_S = 5.0   # connect + send of one control frame (+ its reply)
DEFAULT_IDLE_S = 30.0     # a role gives up after this long without progress
MAX_ROLES = 24            # concurrent roles per node; an Assign beyond is refused ("busy")
MAX_THREADS = 48          # live task threads per node (stuck ones included) before refusing
MAX_COORDINATED = 8       # jobs a coordinator runs at once; later SubmitJobs queue
MAX_QUEUED = 256          # SubmitJobs waiting beyond that; more are refused
HEARTBEAT_S = 2.0         # coordinator -> ground "alive" while a job is queued or runs
FINISHED_KEPT = 4096      # roles remembered as finished (answering late probes) ...
FINISHED_KEEP_S = 600.0   # ... for at most this long


class TaskThreads(concurrent.futures.ThreadPoolExecutor):
    """The executor of task threads (user code): one daemon thread per task, started on
    demand.  A task stuck in user code when its job ends is abandoned, not waited for: it
    no longer holds a role's admission slot, and it never delays the daemon's exit.  How
    many run is bounded by admission (MAX_ROLES, MAX_THREADS), not by a pool."""

    def __init__(self):
        super().__init__(max_workers=1)
        self.live = 0
        self._count = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run():
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                fut.set_exception(e)
            finally:
                with self._count:
                    self.live -= 1
        with self._count:
            self.live += 1
        threading.Thread(target=run, daemon=True, name="spacecomp-task").start()
        return fut

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Never waits: task threads are daemon threads."""

DEFAULT_JOB_DISK_QUOTA = 8 * 1024 ** 3   # bytes one job may spool/retain on one node
# Assign fields that name a peer, and the field holding the address it must have
PEER_ADDRS = {"mapper_addr": "mapper", "reducer_addr": "reducer", "los_addr": "los",
              "coordinator_addr": "coordinator"}


class Node:
    """One satellite's daemon state: its address, its roles per job, its log."""

    def __init__(self, sat, addr_map: AddressMap, work_dir: str | None = None,
                 log_dir: str | None = None, max_frame: int = P.DEFAULT_MAX_FRAME,
                 gateway: bool = False, listen_host: str | None = None,
                 spec: ConstellationSpec | None = None, max_roles: int = MAX_ROLES, *,
                 key: bytes, data_dir: str | None = None,
                 max_buffered: int = DEFAULT_BUDGET_BYTES,
                 job_disk_quota: int = DEFAULT_JOB_DISK_QUOTA):
        """key: the testbed key (node_app.auth); data_dir: where job data files are
        looked up (tasks refuse names outside it); max_buffered: frame bytes all
        connections may hold at once; job_disk_quota: bytes one job may write here."""
        self.sat = tuple(sat)
        self.max_roles = max_roles
        self.key = P.check_key(key)
        self.data_dir = os.path.abspath(data_dir or DEFAULT_DATA_DIR)
        self.budget = ByteBudget(max(max_buffered, max_frame))
        self.job_disk_quota = job_disk_quota
        self.quotas: dict[int, DiskQuota] = {}
        self.addr_map = addr_map
        # The run's constellation (geometry, link model, clock, where the link state is).
        self.spec = spec or ConstellationSpec.for_grid(*addr_map.grid)
        if self.spec.grid != tuple(addr_map.grid):
            raise ValueError(f"the spec's grid {self.spec.grid_text} differs from the address "
                             f"map's {addr_map.grid[0]}x{addr_map.grid[1]}")
        self.addr = addr_map.addr(self.sat)
        self.listen_host = listen_host or self.addr[0]
        if not work_dir:
            import tempfile
            work_dir = tempfile.mkdtemp(prefix=f"spacecomp-{sat[0]}-{sat[1]}-")
        self.work_dir = work_dir
        self.max_frame = max_frame
        self.gateway = gateway
        self.log = NodeLog(self.sat, os.path.join(log_dir, f"node-{sat[0]}-{sat[1]}.jsonl")
                           if log_dir else None)
        self.roles: dict[tuple[int, str], object] = {}      # (job_id, role) -> role object
        self.job_uid: dict[int, str] = {}                   # job_id -> the job's unique name
        self.role_events: dict[tuple[int, str], asyncio.Event] = {}
        self.coordinating: dict[int, object] = {}           # job_id -> CoordinatorJob
        self._ids = itertools.count(1)
        self.server: asyncio.AbstractServer | None = None
        self.stats = {"connections": 0, "bad_frames": 0, "refused_assigns": 0,
                      "queued_jobs": 0, "refused_jobs": 0, "auth_failures": 0,
                      "foreign_addresses": 0}
        self.jobs_running = 0                              # jobs coordinated right now
        self.job_queue: list[asyncio.Future] = []          # SubmitJobs waiting for a slot
        self.threads: TaskThreads | None = None            # set by serve_all
        self.tasks: set[asyncio.Task] = set()   # strong references: asyncio keeps weak ones
        self.finished: dict[tuple[int, str], tuple] = {}   # (job_id, role) -> (t, uid, status)

    def spawn(self, coro) -> asyncio.Task:
        """A background task of this node, kept alive until it ends (never collected
        half-way, which would leave its waits and links dangling)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # --- identities ------------------------------------------------------------------
    def msgid(self, job_id: int) -> str:
        return f"{job_id}-{self.spec.constellation.node_id(self.sat)}-{next(self._ids)}"

    def quota(self, job_id: int) -> DiskQuota:
        """The disk quota of job ``job_id`` on this node (shared by its roles)."""
        if job_id not in self.quotas:
            self.quotas[job_id] = DiskQuota(self.job_disk_quota, f"job {job_id}")
        return self.quotas[job_id]

    async def connect(self, addr, timeout: float = CONNECT_TIMEOUT_S) -> Link:
        """An authenticated link to ``addr`` (a peer from the address map)."""
        return await Link.connect(tuple(addr), self.max_frame, timeout, key=self.key,
                                  budget=self.budget)

    def check_peers(self, body: dict) -> None:
        """Refuse an Assign whose peer addresses are not the map's addresses of the peers
        it names: a node only ever sends data to satellites of its constellation."""
        for field, peer in PEER_ADDRS.items():
            if field not in body:
                continue
            addr, sat = body.get(field), body.get(peer)
            try:
                ok = [str(addr[0]), int(addr[1])] == list(self.addr_map.addr(tuple(sat)))
            except (KeyError, TypeError, ValueError, IndexError):
                ok = False
            if not ok:
                self.stats["foreign_addresses"] += 1
                raise P.ProtocolError(f"{field} {addr!r} is not the address of {peer} {sat!r} "
                                      f"in this constellation's address map")

    def job_dir(self, job_id: int, role: str) -> str:
        path = os.path.join(self.work_dir, f"job-{job_id}-{role}")
        os.makedirs(path, exist_ok=True)
        return path

    # --- roles -------------------------------------------------------------------------
    def add_role(self, job_id: int, uid: str, role: str, obj) -> None:
        if self.job_uid.get(job_id, uid) != uid:
            raise P.ProtocolError(f"job id {job_id} is already in use here by job "
                                  f"{self.job_uid[job_id]!r}")
        if (job_id, role) in self.roles:
            raise P.ProtocolError(f"job {job_id}: already {role} here")
        self.job_uid[job_id] = uid
        self.roles[(job_id, role)] = obj
        self._event(job_id, role).set()

    def drop_role(self, job_id: int, role: str, obj=None) -> None:
        if obj is not None and self.roles.get((job_id, role)) is not obj:
            return  # a newer instance holds the slot
        if obj is not None and getattr(obj, "status", None) == "ok":
            self._remember_finished(job_id, role, obj)
        self.roles.pop((job_id, role), None)
        self.role_events.pop((job_id, role), None)
        if not any(j == job_id for j, _ in self.roles) and job_id not in self.coordinating:
            self.job_uid.pop(job_id, None)
            self.quotas.pop(job_id, None)

    def _remember_finished(self, job_id: int, role: str, obj) -> None:
        """Roles that ended well, for a while, so that a late probe is told so (bounded)."""
        now = time.monotonic()
        self.finished[(job_id, role)] = (now, obj.uid, obj.status)
        if len(self.finished) > FINISHED_KEPT:
            for key in [k for k, v in self.finished.items() if now - v[0] > FINISHED_KEEP_S]:
                del self.finished[key]
            while len(self.finished) > FINISHED_KEPT:
                del self.finished[next(iter(self.finished))]

    def _event(self, job_id: int, role: str) -> asyncio.Event:
        return self.role_events.setdefault((job_id, role), asyncio.Event())

    async def wait_role(self, job_id: int, role: str, timeout: float = ROLE_WAIT_S):
        """The role object once its Assign has arrived (a stream may overtake it)."""
        if (job_id, role) not in self.roles:
            try:
                await asyncio.wait_for(self._event(job_id, role).wait(), timeout)
            except asyncio.TimeoutError:
                self.role_events.pop((job_id, role), None)
                raise P.ProtocolError(f"job {job_id}: data for a {role} that was never "
                                      f"assigned here") from None
        return self.roles[(job_id, role)]

    # --- control messages -------------------------------------------------------------
    async def send_control(self, addr, op: int, job_id: int, body: dict, to=None,
                           reply: bool = False, timeout_s: float = CONTROL_TIMEOUT_S):
        """Connect, send one JSON-bodied frame, close.  Returns bytes sent, or with
        ``reply`` (bytes, the answering Message or None) - an Assign is answered."""
        body = dict(body)
        body.setdefault("msgid", self.msgid(job_id))
        body.setdefault("from", list(self.sat))
        link = await self.connect(addr, timeout_s)
        answer = None
        try:
            n = await asyncio.wait_for(link.send(op, job_id, body), timeout_s)
            if reply:
                answer = await asyncio.wait_for(link.read(), timeout_s)
                n += link.received
        finally:
            await link.close()
        self.log.log("send", job_id, body["msgid"], self.sat, to, what=P.OP_NAMES[op])
        return (n, answer) if reply else n

    async def phase_done(self, coordinator_addr, coordinator, job_id: int,
                         done: P.PhaseDone) -> None:
        """Report a role's completion (or failure) to the job's coordinator."""
        body = done.body()
        try:
            await self.send_control(coordinator_addr, P.PHASE_DONE, job_id, body, coordinator)
        except (OSError, asyncio.TimeoutError) as e:
            self.log.log("error", job_id, None, self.sat, coordinator,
                         error=f"PhaseDone to coordinator failed: {e}")

    # --- serving ----------------------------------------------------------------------
    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.listen_host, self.addr[1],
                                                 limit=STREAM_LIMIT, reuse_address=True,
                                                 backlog=512)
        self.log.log("start", None, None, self.sat, self.sat, addr=list(self.addr))
        if self.gateway:  # the planner (numpy, scipy) loads in the background, once
            asyncio.get_running_loop().run_in_executor(None, _preload_planner)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for r in list(self.roles.values()):
            r.release()
        self.log.log("stop", None, None, self.sat, self.sat, **self.stats,
                     buffered_peak=self.budget.peak)
        self.log.close()

    async def _handle(self, reader, writer) -> None:
        me = asyncio.current_task()
        self.tasks.add(me)      # a handler waiting on a role must not be collected
        try:
            await self._serve(reader, writer)
        finally:
            self.tasks.discard(me)

    async def _serve(self, reader, writer) -> None:
        link = Link(reader, writer, self.max_frame, key=self.key, budget=self.budget)
        self.stats["connections"] += 1
        job_id = 0
        try:
            msg = await asyncio.wait_for(link.read(), DEFAULT_IDLE_S)
            while msg is not None:
                job_id = msg.job_id
                if msg.op == P.SUBMIT_JOB:
                    from node_app.coordinator import CoordinatorJob
                    job = CoordinatorJob(self, link, msg)
                    beat = self.spawn(self._heartbeat(link, job))
                    try:
                        if await self.admit_job(link, job_id):
                            try:
                                await job.run()
                            finally:
                                self.job_finished()
                    finally:
                        beat.cancel()
                    return
                if msg.op == P.DATA_CHUNK and msg.body.role in (P.ROLE_MAPPER, P.ROLE_REDUCER):
                    role = "mapper" if msg.body.role == P.ROLE_MAPPER else "reducer"
                    obj = await self.wait_role(job_id, role)
                    await obj.handle_stream(link, msg)
                    return
                if msg.op in (P.ASSIGN_COLLECTOR, P.ASSIGN_MAPPER, P.ASSIGN_REDUCER):
                    await link.send(P.PHASE_DONE, job_id, self._assign(msg).body())
                elif (msg.op == P.PHASE_DONE and msg.body.get("role") == "coordinator"
                      and msg.body.get("status") == P.ST_RELEASED):
                    n = self.release(job_id, msg.body.get("jobid"))
                    self.log.log("released", job_id, msg.body.get("msgid"), msg.body.get("from"),
                                 self.sat, roles=n)
                elif msg.op in (P.PHASE_DONE, P.JOB_RESULT) or (
                        msg.op == P.DATA_CHUNK and msg.body.role == P.ROLE_GROUND):
                    job = self.coordinating.get(job_id)
                    if job is None:
                        raise P.ProtocolError(f"{msg.name} for job {job_id}, which this node "
                                              f"does not coordinate")
                    await job.on_message(link, msg)
                elif msg.op == P.ERROR:
                    self.log.log("error_received", job_id, msg.body.get("msgid"), None, self.sat,
                                 error=str(msg.body.get("error"))[:500])
                msg = await asyncio.wait_for(link.read(), DEFAULT_IDLE_S)
        except P.Unauthenticated:
            self.stats["auth_failures"] += 1
            self.log.log("auth_failed", None, None, None, self.sat, peer=str(link.peer),
                         auth_failures=self.stats["auth_failures"])
            await link.error(0, P.AUTH_ERROR)
        except P.ProtocolError as e:
            self.stats["bad_frames"] += 1
            self.log.log("bad_frame", job_id, None, None, self.sat, error=str(e),
                         peer=str(link.peer))
            await link.error(job_id, str(e))
        except asyncio.TimeoutError:
            self.log.log("idle_timeout", job_id, None, None, self.sat, peer=str(link.peer))
        except (ConnectionError, OSError) as e:
            self.log.log("connection_error", job_id, None, None, self.sat, error=str(e))
        except Exception as e:  # a bug must cost one connection, never the daemon
            self.log.log("internal_error", job_id, None, None, self.sat, error=repr(e),
                         trace=traceback.format_exc(limit=5))
            await link.error(job_id, f"internal error: {e!r}")
        finally:
            await link.close()

    def busy(self) -> str | None:
        """Why this node refuses another role right now, or None."""
        if len(self.roles) >= self.max_roles:
            return f"busy: {len(self.roles)} roles running (limit {self.max_roles})"
        threads = self.threads.live if self.threads else 0
        if threads >= MAX_THREADS * (self.threads_shared or 1):
            return f"busy: {threads} task threads still running"
        return None

    threads_shared = 1

    def _assign(self, msg: P.Message) -> P.PhaseDone:
        """Create, move or probe a role; the reply says which (or why it is refused)."""
        from node_app.roles import ROLE_TYPES
        a = P.parse_assign(msg)
        self.check_peers(msg.body)
        self.log.log("recv", msg.job_id, a.msgid, a.frm, self.sat, what=msg.name,
                     revision=a.revision)
        held = self.roles.get((msg.job_id, a.role))
        index = getattr(a, "index", getattr(a, "partition", 1) - 1)
        if (held is not None and held.uid == (a.jobid or str(msg.job_id))
                and held.index != index):  # one role of a kind per job and node
            return P.PhaseDone(a.role, self.sat, P.ST_REFUSED,
                               error=f"already {a.role} {held.index} of job {msg.job_id} here")
        if held is not None and held.uid == (a.jobid or str(msg.job_id)):
            if a.revision > held.revision:
                held.redirect(a)
                self.log.log("redirected", msg.job_id, None, self.sat, None, role=a.role,
                             revision=a.revision)
            return P.PhaseDone(a.role, self.sat, P.ST_ACCEPTED, extra={"state": held.state()})
        done = self.finished.get((msg.job_id, a.role))
        if done is not None and done[1] == (a.jobid or str(msg.job_id)):
            # it finished its part: alive, and nothing to do again (a probe racing its end)
            return P.PhaseDone(a.role, self.sat, P.ST_ACCEPTED,
                               extra={"state": {"finished": True, "status": done[2]}})
        if a.probe:
            return P.PhaseDone(a.role, self.sat, P.ST_REFUSED,
                               error=f"{a.role} of job {msg.job_id} is not held here")
        reason = self.busy()
        if reason:
            self.stats["refused_assigns"] += 1
            self.log.log("refused", msg.job_id, None, self.sat, a.frm, role=a.role, error=reason)
            return P.PhaseDone(a.role, self.sat, P.ST_REFUSED, error=reason)
        obj = ROLE_TYPES[msg.op](self, msg.job_id, a)    # validates; ProtocolError if bad
        self.add_role(msg.job_id, obj.uid, obj.role, obj)
        obj.task = self.spawn(obj.run())
        return P.PhaseDone(a.role, self.sat, P.ST_ACCEPTED, extra={"state": obj.state()})

    def release(self, job_id: int, uid: str | None = None) -> int:
        """Drop every role of ``job_id`` here (the coordinator ended the job)."""
        held = [r for (j, _), r in list(self.roles.items())
                if j == job_id and (uid is None or r.uid == uid)]
        for r in held:
            r.release()
        return len(held)

    async def admit_job(self, ground_link, job_id: int) -> bool:
        """A coordinator slot for a new job: at once, after queueing (the ground is told
        its place), or refused when the queue is full."""
        if self.jobs_running < MAX_COORDINATED and not self.job_queue:
            self.jobs_running += 1
            return True
        if len(self.job_queue) >= MAX_QUEUED:
            self.stats["refused_jobs"] += 1
            await ground_link.send(P.JOB_RESULT, job_id, {
                "status": "failed", "refused": True,
                "error": f"coordinator {list(self.sat)} busy: {self.jobs_running} jobs running "
                         f"and {len(self.job_queue)} queued (limits {MAX_COORDINATED}, "
                         f"{MAX_QUEUED}); submit again later"})
            return False
        slot = asyncio.get_running_loop().create_future()
        self.job_queue.append(slot)
        self.stats["queued_jobs"] += 1
        await ground_link.send(P.PHASE_DONE, job_id, P.PhaseDone("coordinator", self.sat, extra={
            "event": "queued", "position": len(self.job_queue),
            "running": self.jobs_running}).body())
        try:
            await slot
        finally:
            if slot in self.job_queue:
                self.job_queue.remove(slot)
        return True

    async def _heartbeat(self, ground_link, job) -> None:
        """While ``job`` (a CoordinatorJob) is queued or runs, tell the ground every
        HEARTBEAT_S that this coordinator is alive (a stopped coordinator is then noticed
        in seconds); a beat that fails tells the job its ground is gone."""
        job_id = job.job_id
        body = P.PhaseDone("coordinator", self.sat, extra={"event": "alive"}).body()
        contact = getattr(self, "contact", None)  # placed ground stations (node_app.contact)
        station = contact.station_of_ip(ground_link.peer[0]) if contact and ground_link.peer \
            else None
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if station is not None and contact.gateway(station) is None:
                continue  # out of contact: a beat would only be lost (and back TCP off)
            try:
                await asyncio.wait_for(ground_link.send(P.PHASE_DONE, job_id, body), HEARTBEAT_S)
            except (OSError, ConnectionError, asyncio.TimeoutError) as e:
                job.ground_lost(e)
                return

    def job_finished(self) -> None:
        while self.job_queue:
            slot = self.job_queue.pop(0)
            if not slot.done():
                slot.set_result(True)   # the slot passes straight to the next job
                return
        self.jobs_running -= 1


def _preload_planner() -> None:
    import node_app.planner  # noqa: F401  (numpy + scipy: ~0.5 s, paid at start-up)


async def serve(node: Node, ready_file: str | None = None, parent: int | None = None,
                user: str | None = None) -> None:
    """Run a node until SIGTERM/SIGINT (or, given ``parent``, until that process is gone).
    user: once listening, continue as this user (node_app.privileges) when feasible."""
    await serve_all([node], [ready_file], parent, user)


def drop_to(nodes: list[Node], user: str) -> None:
    """Continue as ``user``: it gets the work directories and must still read the data
    directory and the controller's link state (else root is kept; logged either way)."""
    from node_app.privileges import drop_privileges
    states = {n.spec.link_state_path for n in nodes if n.spec.link_state_path}
    dropped, text = drop_privileges(user, own=[n.work_dir for n in nodes],
                                    read=sorted({n.data_dir for n in nodes}),
                                    traverse=sorted({os.path.dirname(p) for p in states}))
    for n in nodes:
        n.log.log("privileges", None, None, n.sat, n.sat, dropped=dropped, detail=text)


async def serve_all(nodes: list[Node], ready_files: list, parent: int | None = None,
                    user: str | None = None) -> None:
    """Run several nodes in this process (each on its own address), as :func:`serve`.

    Task threads (user code, mostly blocked on back-pressure) of every node come from one
    :class:`TaskThreads`; admission bounds them per node.  SIGTERM returns at once: the
    roles are released and no task thread is waited for."""
    loop = asyncio.get_running_loop()
    threads = TaskThreads()
    loop.set_default_executor(threads)
    for node, ready_file in zip(nodes, ready_files):
        node.threads, node.threads_shared = threads, len(nodes)
        await node.start()
        if ready_file:
            with open(ready_file, "w") as f:
                f.write(f"{os.getpid()}\n")
    if user:
        drop_to(nodes, user)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch_parent():
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        stop.set()
    watcher = loop.create_task(watch_parent()) if parent is not None else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    for node in nodes:
        await node.stop()


def add_node_options(p: argparse.ArgumentParser) -> None:
    """The options every node daemon process takes (``node_app.daemon``, ``node_app.multi``)."""
    p.add_argument("--addr-map", required=True, help="address map JSON (node_app.addressing)")
    p.add_argument("--spec", help="the run's constellation spec (spec.json; default: the "
                                  "default constellation on the address map's grid)")
    p.add_argument("--key-file", required=True,
                   help="the testbed key (node_app.auth; mode 0600): every frame is tagged with it")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help="job data files are looked up here, never outside (default node_app/data)")
    p.add_argument("--max-buffered", type=int, default=DEFAULT_BUDGET_BYTES,
                   help="frame bytes all connections may hold at once (default 64 MiB)")
    p.add_argument("--job-disk-quota", type=int, default=DEFAULT_JOB_DISK_QUOTA,
                   help="bytes one job may spool or retain on this node (default 8 GiB)")
    p.add_argument("--log-dir", help="write JSON-lines events to LOG_DIR/node-SAT-ORB.jsonl")
    p.add_argument("--max-frame", type=int, default=P.DEFAULT_MAX_FRAME,
                   help="largest accepted frame, bytes")
    p.add_argument("--max-roles", type=int, default=MAX_ROLES,
                   help=f"concurrent roles before Assigns are refused as busy (default {MAX_ROLES})")
    p.add_argument("--user", help="once listening, continue as this user (e.g. nobody) if it can "
                                  "still reach the work and data directories; else keep root")
    p.add_argument("--ground-state", help="the emulator's ground-segment state JSON: hold what "
                                          "goes to a placed station while it is out of contact")
    p.add_argument("--tasks-module", action="append", default=[], metavar="MODULE",
                   help="import MODULE (pkg.mod or a .py file): it registers its own tasks")


def node_settings(a: argparse.Namespace) -> tuple[AddressMap, dict]:
    """Load what :func:`add_node_options` names: the address map and the keyword arguments
    of :class:`Node` (ValueError/OSError/SpecError when something is bad)."""
    from node_app.auth import load_key
    from node_app import tasks as user_tasks
    user_tasks.load_from_env()  # a run's modules (SPACECOMP_TASKS_MODULE), then the flag's
    user_tasks.use_modules(a.tasks_module)
    addr_map = AddressMap.load(a.addr_map)
    spec = ConstellationSpec.load(a.spec) if a.spec else None
    if a.max_roles < 1:
        raise ValueError("--max-roles must be at least 1")
    return addr_map, dict(log_dir=a.log_dir, max_frame=a.max_frame, spec=spec,
                          max_roles=a.max_roles, key=load_key(a.key_file), data_dir=a.data_dir,
                          max_buffered=a.max_buffered, job_disk_quota=a.job_disk_quota)


def make_node(sat, addr_map: AddressMap, settings: dict, a: argparse.Namespace, **kw) -> Node:
    """A :class:`Node` from :func:`node_settings` plus per-satellite ``kw``, with what the
    options attach after construction (the ground-segment state)."""
    node = Node(sat, addr_map, **kw, **settings)
    if a.ground_state:
        from node_app.contact import Contact
        node.contact = Contact(a.ground_state)
    return node


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m node_app.daemon",
                                description="SpaceCoMP node daemon (one per satellite)")
    p.add_argument("--node", required=True, help="this satellite, SAT,ORB")
    add_node_options(p)
    p.add_argument("--work-dir", help="scratch directory for spooled data (default: a temp dir)")
    p.add_argument("--gateway", action="store_true",
                   help="a line-of-sight satellite: preload the planner")
    p.add_argument("--ready-file", help="written (with the PID) once listening")
    p.add_argument("--listen", help="bind address (default: the map's address)")
    a = p.parse_args(argv)
    try:
        sat = parse_sat_key(a.node)
        addr_map, settings = node_settings(a)
        node = make_node(sat, addr_map, settings, a, work_dir=a.work_dir, gateway=a.gateway,
                         listen_host=a.listen)
    except (SpecError, ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    asyncio.run(serve(node, a.ready_file, user=a.user))
    sys.stdout.flush()
    os._exit(0)  # task threads stuck in user code must not delay the exit


if __name__ == "__main__":
    sys.exit(cli.run(main))
