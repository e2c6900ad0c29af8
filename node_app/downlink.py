"""What a coordinator sends to the ground, held while the ground station is out of contact.

For a placed ground station (``node.contact``, :mod:`node_app.contact`) nothing goes down
while no satellite is in view: progress messages queue (at most ``MAX_HELD_PROGRESS`` per
job, in order), and a result that is ready waits on disk in the job's directory (at most
``MAX_HELD_BYTES`` per node, counting its result files, which are already spooled to
disk) until a satellite rises; then the queue and the result go down through the current
gateway.  The job record's ``downlink`` says which station, through which gateway, how
long it waited and how much was held.  Pinned stations and loopback runs never wait.
"""

from __future__ import annotations

import json
import os

from node_app import protocol as P
from node_app.contact import DEFAULT_CONTACT_TIMEOUT_S, NoContact

MAX_HELD_BYTES = 1 << 30  # results held on disk for contact, per node
MAX_HELD_PROGRESS = 10_000  # progress messages queued per job while out of contact

__all__ = ["Downlink", "NoContact", "MAX_HELD_BYTES", "MAX_HELD_PROGRESS"]


class Downlink:
    """The ground end of one coordinated job.

    node: the daemon's Node (``contact``, ``log``, ``sat``); ground: the ground's Link;
    ext: the SubmitJob extension (``contact_timeout_s``: longest wait for contact, s).
    """

    def __init__(self, node, ground, job_id: int, ext: dict):
        self.node, self.ground, self.job_id = node, ground, job_id
        try:
            self.timeout_s = float(ext.get("contact_timeout_s", DEFAULT_CONTACT_TIMEOUT_S))
        except (TypeError, ValueError):
            self.timeout_s = DEFAULT_CONTACT_TIMEOUT_S
        self.queued: list[dict] = []
        self.info = {"contact_wait_s": 0.0, "held_result_bytes": 0}
        contact = getattr(node, "contact", None)
        peer = ground.peer[0] if getattr(ground, "peer", None) else None
        self.k = contact.station_of_ip(peer) if contact is not None else None
        self.contact = contact if self.k is not None else None
        if self.k is not None:
            self.info["station"] = self.k

    def in_contact(self) -> bool:
        return self.contact is None or self.contact.gateway(self.k) is not None

    def queue(self, body: dict) -> bool:
        """Queue a progress message while out of contact (True: queued, do not send)."""
        if self.in_contact() or len(self.queued) >= MAX_HELD_PROGRESS:
            return False
        self.queued.append(body)
        return True

    async def ready(self, what: str) -> float:
        """Wait for contact (NoContact after the timeout), send what queued up meanwhile,
        note the gateway; returns the seconds waited."""
        if self.contact is None:
            return 0.0
        waited = 0.0
        if not self.in_contact():
            log = self.node.log
            log.log("hold", self.job_id, None, self.node.sat, None, what=what, station=self.k)
            waited = await self.contact.wait(self.k, self.timeout_s)
            log.log("contact", self.job_id, None, self.node.sat, None, what=what,
                    station=self.k, waited_s=round(waited, 4))
            self.info["contact_wait_s"] += waited
        gw = self.contact.gateway(self.k)
        self.info["gateway"] = list(gw) if isinstance(gw, tuple) else None
        queued, self.queued = self.queued, []
        for body in queued:
            await self.ground.send(P.PHASE_DONE, self.job_id, body)
        return waited

    async def hold(self, result: dict, job_dir: str) -> dict:
        """The result, after holding it on disk (not in memory) until contact."""
        if self.in_contact():
            await self.ready("result")
            return result
        data = json.dumps(result, default=str).encode()
        size = len(data) + sum(os.path.getsize(p) for p in result.get("_paths", {}).values()
                               if os.path.exists(p))
        held = getattr(self.node, "held_bytes", 0)
        if held + size > MAX_HELD_BYTES:
            raise NoContact(f"ground station {self.k} out of contact and {held} bytes already "
                            f"held on this node (limit {MAX_HELD_BYTES})")
        path = os.path.join(job_dir, "held_result.json")
        with open(path, "wb") as f:
            f.write(data)
        del result, data
        self.node.held_bytes = held + size
        self.info["held_result_bytes"] = size
        try:
            await self.ready("result")
            with open(path, "rb") as f:
                return json.loads(f.read())
        finally:
            self.node.held_bytes = getattr(self.node, "held_bytes", size) - size
            os.unlink(path)

    def record(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.info.items()}
