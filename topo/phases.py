"""One phase timer for build and teardown: wall seconds of each named phase."""

from __future__ import annotations

import time


class PhaseTimer:
    """Record ``{phase: seconds}`` into ``into`` (a dict shared with the caller, so a
    failed build still reports the phases it finished).  Each call closes the phase that
    started at the previous call (or at construction)."""

    def __init__(self, into: dict):
        self.phases = into
        self.t0 = self.mark = time.monotonic()

    def __call__(self, name: str) -> float:
        now = time.monotonic()
        self.phases[name] = round(now - self.mark, 3)
        self.mark = now
        return self.phases[name]

    def total_s(self) -> float:
        """Seconds since the timer was made."""
        return time.monotonic() - self.t0
