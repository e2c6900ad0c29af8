"""Processes and ports of one run: only ever ours, by PID."""

from __future__ import annotations

import resource
import socket
import subprocess


def raise_open_file_limit(need: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE toward ``need`` (up to the hard limit);
    returns the (soft, hard) limits now in force.  Big grids need thousands of descriptors
    (a pty per host shell, a socket per switch in the controller)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft, hard


def free_port() -> int:
    """A TCP port free on the loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int | None) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill(proc: subprocess.Popen | None, timeout_s: float = 5.0) -> None:
    """Terminate one process we started (TERM, then KILL), bounded."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


def tail(path: str, n: int = 1) -> str:
    """The last ``n`` non-blank lines of a log, joined with `` | ``."""
    try:
        with open(path) as fh:
            lines = [ln.strip() for ln in fh if ln.strip()]
        return " | ".join(lines[-n:]) or "no output"
    except OSError:
        return "no log"
