"""The machine-wide one-network lock: one emulated network per machine at a time.

Every :class:`topo.testbed.Testbed` holds it while it exists; code that builds a
network without a Testbed (the plain-Mininet benchmark, the ``mn --custom`` test) holds
it through :class:`testbed_lock`.  The wait is bounded; the holder's PID is written into
the file for whoever waits.
"""

from __future__ import annotations

import fcntl
import os
import time

from topo.errors import TestbedError

LOCK_PATH = "/run/spacecomp-testbed.lock"


class MachineLock:
    """Take (``acquire``) and release the lock; ``wait_s`` bounds the wait."""

    def __init__(self, path: str = LOCK_PATH):
        self.path = path
        self.fh = None

    def acquire(self, wait_s: float = 600.0) -> float:
        """Wait at most ``wait_s`` for the lock; returns the seconds waited."""
        t0 = time.monotonic()
        fh = open(self.path, "a+")
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - t0 > wait_s:
                    fh.close()
                    raise TestbedError(f"another network holds {self.path} "
                                       f"(waited {wait_s:.0f} s)")
                time.sleep(0.2)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self.fh = fh
        return time.monotonic() - t0

    def release(self) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None

    @property
    def held(self) -> bool:
        return self.fh is not None


class testbed_lock:
    """``with testbed_lock(): ...`` holds the machine lock (bounded wait)."""

    def __init__(self, wait_s: float = 600.0):
        self.wait_s = wait_s
        self.lock = MachineLock()

    def __enter__(self):
        self.lock.acquire(self.wait_s)
        return self

    def __exit__(self, *exc):
        self.lock.release()
        return False
