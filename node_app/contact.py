"""Ground contact as the node application sees it: which satellite serves each station now.

The emulator's ground segment (``topo.ground_segment``) rewrites a small JSON state file
at every handover; hosts share the file system, so daemons and the ground CLI read it
(``--ground-state PATH``).  Without a file (loopback, pinned stations) every station is
always in contact.  The file is validated and bounded like any input: a malformed or
oversized file reads as "no information" (in contact), never as a crash.

A node about to send something to the ground (the coordinator relaying progress and the
result) first waits for contact: while its station has no satellite in view the result
stays on disk in the job's directory and goes down when a satellite rises.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

MAX_STATE_BYTES = 1 << 20
POLL_S = 0.02
DEFAULT_CONTACT_TIMEOUT_S = 3600.0


class NoContact(Exception):
    """No satellite served the station within the allowed wait."""


class Contact:
    """Reader of the ground segment's state file (``path`` None: always in contact)."""

    def __init__(self, path: str | None = None):
        self.path = path
        self._mtime = None
        self._state: dict = {}

    def state(self) -> dict:
        """The last valid state (re-read when the file changed)."""
        if not self.path:
            return {}
        try:
            st = os.stat(self.path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)  # os.replace: a new inode each time
            if key == self._mtime or st.st_size > MAX_STATE_BYTES:
                return self._state
            with open(self.path) as fh:
                data = json.load(fh)
            if isinstance(data, dict) and isinstance(data.get("stations"), list):
                self._state, self._mtime = data, key
        except (OSError, ValueError):
            pass
        return self._state

    def _stations(self) -> list[dict]:
        return [s for s in self.state().get("stations", []) if isinstance(s, dict)]

    def station_of_ip(self, ip: str | None) -> int | None:
        """The station number ``k`` whose address is ``ip`` (None: not a placed station)."""
        for s in self._stations():
            if s.get("ip") == ip and isinstance(s.get("k"), int):
                return s["k"]
        return None

    def gateway(self, k: int | None) -> tuple | None | bool:
        """The satellite serving station ``k`` now, None when none is in view, True when
        nothing is known (no file, or not a placed station): treat as in contact."""
        if k is None:
            return True
        for s in self._stations():
            if s.get("k") == k:
                sat = s.get("sat")
                if sat is None:
                    return None
                if (isinstance(sat, list) and len(sat) == 2
                        and all(isinstance(v, int) for v in sat)):
                    return tuple(sat)
                return True
        return True

    def handovers(self, k: int | None, since_unix: float, until_unix: float | None = None
                  ) -> list[dict]:
        """The handovers of station ``k`` recorded between the two wall times."""
        if k is None:
            return []
        until = time.time() if until_unix is None else until_unix
        out = []
        for h in self.state().get("history", []):
            if (isinstance(h, dict) and h.get("k") == k and isinstance(h.get("unix"), (int, float))
                    and since_unix <= h["unix"] <= until):
                out.append({"t_s": h.get("t_s"), "from": h.get("from"), "to": h.get("to")})
        return out

    def out_of_contact_within(self, k: int | None, seconds: float) -> bool:
        """True when station ``k`` has no gateway now, or lost or regained contact within
        the last ``seconds`` (a silence of the coordinator that long is explained)."""
        if k is None:
            return False
        if self.gateway(k) is None:
            return True
        return any(h["from"] is None or h["to"] is None
                   for h in self.handovers(k, time.time() - seconds))

    async def wait(self, k: int | None, timeout_s: float = DEFAULT_CONTACT_TIMEOUT_S) -> float:
        """Wait until station ``k`` has a gateway; returns the seconds waited.  NoContact
        after ``timeout_s``."""
        t0 = time.monotonic()
        while self.gateway(k) is None:
            if time.monotonic() - t0 > timeout_s:
                raise NoContact(f"ground station {k}: no satellite in view for {timeout_s:g} s")
            await asyncio.sleep(POLL_S)
        return time.monotonic() - t0

    def wait_blocking(self, k: int | None, timeout_s: float = DEFAULT_CONTACT_TIMEOUT_S) -> float:
        """:meth:`wait` for synchronous callers (the ground CLI before it submits)."""
        t0 = time.monotonic()
        while self.gateway(k) is None:
            if time.monotonic() - t0 > timeout_s:
                raise NoContact(f"ground station {k}: no satellite in view for {timeout_s:g} s")
            time.sleep(POLL_S)
        return time.monotonic() - t0
