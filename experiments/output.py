"""Result directories for experiments: ``results/<experiment>/<timestamp>/``.

Every experiment writes the same kinds of file there: the config it ran with
(``config.yaml``), the environment (``environment.json``: versions, cores, how the
network was realised), metrics as CSV and JSON, and PNG plots.  Also a progress
display on stderr, so a long sweep shows it is alive without touching stdout
(which scripts parse).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import yaml

from topo.cli import results_dir

REPO_ROOT = Path(__file__).resolve().parent.parent


def new_result_dir(root: str | os.PathLike, experiment: str) -> Path:
    """Create and return ``<root>/<experiment>/<UTC timestamp>/`` (suffixed if taken)."""
    return results_dir(root, experiment)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The repository's HEAD commit (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment_info(**capabilities) -> dict:
    """What produced the results: interpreter, library versions, cores, commit, and the
    experiment's own capabilities (e.g. ``datapath="simulation"``)."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": {p: _version(p) for p in ("numpy", "scipy", "matplotlib", "pyyaml")},
        "git_commit": git_commit(),
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **capabilities,
    }


def write_yaml(path: Path, data) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def json_safe(value):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(json_safe(data), indent=2) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows as CSV; columns are the union of the rows' keys in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


class Progress:
    """``label done/total (pct) elapsed`` on stderr: redrawn in place on a terminal,
    otherwise a line every ``every_s`` seconds and at the end (keeps logs short)."""

    def __init__(self, total: int, label: str, stream=None, every_s: float = 5.0):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.done = 0
        self.start = time.monotonic()
        self._last = -math.inf
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        final = self.done >= self.total
        if self._tty or final or now - self._last >= self.every_s:
            self._last = now
            text = (f"{self.label} {self.done}/{self.total} "
                    f"({100 * self.done / self.total:.0f}%) {now - self.start:.1f}s")
            if self._tty:
                self.stream.write("\r" + text + ("\n" if final else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
