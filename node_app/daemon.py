"""The SpaceCoMP node daemon: one process per satellite.

    python3 -m node_app.daemon --node SAT,ORB --addr-map addrs.json [--spec spec.json] [--work-dir D]
        [--log-dir D] [--max-frame BYTES] [--gateway] [--ready-file F] [--listen HOST]

It listens on its satellite's address from the address map and serves, per job id, any
of the roles coordinator (node_app.coordinator), collector, mapper and reducer
(node_app.roles).  Every inbound connection is read frame by frame; a malformed,
truncated, oversized or unknown frame gets an Error reply, closes that connection only,
and is logged; every other connection and job carries on.

Connections by first frame:
* SubmitJob            ground -> coordinator; stays open for progress and the JobResult.
* Assign*              coordinator -> role; one frame per connection.
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
import traceback  # noqa: E402

from node_app import protocol as P
from node_app.addressing import AddressMap, parse_sat_key
from node_app.nodelog import NodeLog
from node_app.transport import STREAM_LIMIT, Link
from topo.spec import ConstellationSpec, SpecError

ROLE_WAIT_S = 10.0        # how long a data stream may wait for its role's Assign
CONTROL_TIMEOUT_S = 5.0   # connect + send of one control frame
DEFAULT_IDLE_S = 30.0     # a role gives up after this long without progress
WORKER_THREADS = 32       # task threads (user code); mostly blocked on back-pressure


class Node:
    """One satellite's daemon state: its address, its roles per job, its log."""

    def __init__(self, sat, addr_map: AddressMap, work_dir: str | None = None,
                 log_dir: str | None = None, max_frame: int = P.DEFAULT_MAX_FRAME,
                 gateway: bool = False, listen_host: str | None = None,
                 spec: ConstellationSpec | None = None):
        self.sat = tuple(sat)
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
        self.stats = {"connections": 0, "bad_frames": 0}

    # --- identities ------------------------------------------------------------------
    def msgid(self, job_id: int) -> str:
        return f"{job_id}-{self.spec.constellation.node_id(self.sat)}-{next(self._ids)}"

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

    def drop_role(self, job_id: int, role: str) -> None:
        self.roles.pop((job_id, role), None)
        self.role_events.pop((job_id, role), None)
        if not any(j == job_id for j, _ in self.roles) and job_id not in self.coordinating:
            self.job_uid.pop(job_id, None)

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
    async def send_control(self, addr, op: int, job_id: int, body: dict, to=None) -> int:
        """Connect, send one JSON-bodied frame, close.  Returns bytes sent."""
        body = dict(body)
        body.setdefault("msgid", self.msgid(job_id))
        body.setdefault("from", list(self.sat))
        link = await Link.connect(tuple(addr), self.max_frame, CONTROL_TIMEOUT_S)
        try:
            n = await asyncio.wait_for(link.send(op, job_id, body), CONTROL_TIMEOUT_S)
        finally:
            await link.close()
        self.log.log("send", job_id, body["msgid"], self.sat, to, what=P.OP_NAMES[op])
        return n

    async def phase_done(self, coordinator_addr, coordinator, job_id: int, body: dict) -> None:
        """Report a role's completion (or failure) to the job's coordinator."""
        body = {"node": list(self.sat), **body}
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
        self.log.log("stop", None, None, self.sat, self.sat)
        self.log.close()

    async def _handle(self, reader, writer) -> None:
        link = Link(reader, writer, self.max_frame)
        self.stats["connections"] += 1
        job_id = 0
        try:
            msg = await asyncio.wait_for(link.read(), DEFAULT_IDLE_S)
            while msg is not None:
                job_id = msg.job_id
                if msg.op == P.SUBMIT_JOB:
                    from node_app.coordinator import CoordinatorJob
                    await CoordinatorJob(self, link, msg).run()
                    return
                if msg.op == P.DATA_CHUNK and msg.body.role in (P.ROLE_MAPPER, P.ROLE_REDUCER):
                    role = "mapper" if msg.body.role == P.ROLE_MAPPER else "reducer"
                    obj = await self.wait_role(job_id, role)
                    await obj.handle_stream(link, msg)
                    return
                if msg.op in (P.ASSIGN_COLLECTOR, P.ASSIGN_MAPPER, P.ASSIGN_REDUCER):
                    self._assign(msg)
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

    def _assign(self, msg: P.Message) -> None:
        from node_app import roles
        cls = {P.ASSIGN_COLLECTOR: roles.Collector, P.ASSIGN_MAPPER: roles.Mapper,
               P.ASSIGN_REDUCER: roles.Reducer}[msg.op]
        self.log.log("recv", msg.job_id, msg.body.get("msgid"), msg.body.get("from"), self.sat,
                     what=msg.name)
        obj = cls(self, msg.job_id, msg.body)       # validates; ProtocolError if bad
        self.add_role(msg.job_id, obj.uid, obj.role, obj)
        obj.task = asyncio.get_running_loop().create_task(obj.run())


def _preload_planner() -> None:
    import node_app.planner  # noqa: F401  (numpy + scipy: ~0.5 s, paid at start-up)


async def serve(node: Node, ready_file: str | None = None, parent: int | None = None) -> None:
    """Run a node until SIGTERM/SIGINT (or, given ``parent``, until that process is gone)."""
    await serve_all([node], [ready_file], parent)


async def serve_all(nodes: list[Node], ready_files: list, parent: int | None = None) -> None:
    """Run several nodes in this process (each on its own address), as :func:`serve`.

    Task threads (user code, mostly blocked on back-pressure) of every node share the
    loop's executor, and a role's thread lives as long as the role: each node gets
    WORKER_THREADS of them."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(WORKER_THREADS * len(nodes)))
    for node, ready_file in zip(nodes, ready_files):
        await node.start()
        if ready_file:
            with open(ready_file, "w") as f:
                f.write(f"{os.getpid()}\n")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch_parent():
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        stop.set()
    if parent is not None:
        loop.create_task(watch_parent())
    await stop.wait()
    for node in nodes:
        await node.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m node_app.daemon",
                                description="SpaceCoMP node daemon (one per satellite)")
    p.add_argument("--node", required=True, help="this satellite, SAT,ORB")
    p.add_argument("--addr-map", required=True, help="address map JSON (node_app.addressing)")
    p.add_argument("--spec", help="the run's constellation spec (spec.json; default: the "
                                  "default constellation on the address map's grid)")
    p.add_argument("--work-dir", help="scratch directory for spooled data (default: a temp dir)")
    p.add_argument("--log-dir", help="write JSON-lines events to LOG_DIR/node-SAT-ORB.jsonl")
    p.add_argument("--max-frame", type=int, default=P.DEFAULT_MAX_FRAME,
                   help="largest accepted frame, bytes")
    p.add_argument("--gateway", action="store_true",
                   help="a line-of-sight satellite: preload the planner")
    p.add_argument("--ready-file", help="written (with the PID) once listening")
    p.add_argument("--listen", help="bind address (default: the map's address)")
    a = p.parse_args(argv)
    try:
        sat = parse_sat_key(a.node)
        addr_map = AddressMap.load(a.addr_map)
        spec = ConstellationSpec.load(a.spec) if a.spec else None
        node = Node(sat, addr_map, a.work_dir, a.log_dir, a.max_frame, a.gateway, a.listen,
                    spec=spec)
    except (SpecError, ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    asyncio.run(serve(node, a.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
