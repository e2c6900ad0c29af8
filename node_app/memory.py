"""Memory of the node daemons: resident and proportional set sizes over their processes."""

from __future__ import annotations


def proc_kb(pid: int, field: str, path: str = "status") -> int:
    """``field`` (kB) from ``/proc/PID/PATH``; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mem_available_mb() -> float:
    """The kernel's estimate of memory available for new work, MB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory(pids) -> dict:
    """RSS and PSS (shared pages split fairly) summed over the distinct ``pids``, MB."""
    pids = set(pids)
    rss = sum(proc_kb(p, "VmRSS") for p in pids)
    pss = sum(proc_kb(p, "Pss", "smaps_rollup") for p in pids)
    return {"rss_mb": rss / 1024, "pss_mb": pss / 1024, "processes": len(pids),
            "rss_mb_per_process": rss / 1024 / max(1, len(pids))}
