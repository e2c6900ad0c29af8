"""Follow a run and turn it into view frames: the live view's data source and the replay's log.

:class:`RunRecorder` samples a running run every ``interval_s`` in a thread of its own:
the constellation time and the shapes the emulator applied (``testbed.t_s``,
``testbed.shapes``, moved by the dynamics updater), the controller's links down (its
``link_state.json``), and the node logs (tailed, fed to :class:`view.jobs.JobTracker`).
A frame that differs from the last one is kept, appended to ``frames.jsonl`` in the
view directory (with ``topology.json`` beside it: what :mod:`view.replay` reads) and
handed to every subscriber (the web server).

Without a testbed (a loopback run) the spec's clock and outage model give time, rates
and links down.
"""

from __future__ import annotations

import glob
import json
import os
import threading
import time

from view import model
from view.jobs import JobTracker

TOPOLOGY_FILE = "topology.json"
FRAMES_FILE = "frames.jsonl"


class LogTail:
    """New JSON lines of the ``node-*.jsonl`` files of a directory since the last call."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self.offsets: dict[str, int] = {}
        self.partial: dict[str, str] = {}

    def read(self) -> list[dict]:
        out = []
        for path in sorted(glob.glob(os.path.join(self.log_dir, "node-*.jsonl"))):
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets.get(path, 0))
                    data = f.read()
            except OSError:
                continue
            if not data:
                continue
            self.offsets[path] = self.offsets.get(path, 0) + len(data)
            text = self.partial.pop(path, "") + data.decode("utf-8", "replace")
            lines = text.split("\n")
            if lines[-1]:
                self.partial[path] = lines[-1]  # a line still being written
            for line in lines[:-1]:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        out.sort(key=lambda e: e.get("time", 0) if isinstance(e, dict) else 0)
        return [e for e in out if isinstance(e, dict)]


class RunRecorder:
    """Frames of one run (see the module docstring).

    spec: the run's :class:`topo.spec.ConstellationSpec`.
    testbed: a started :class:`topo.testbed.Testbed` (None: the spec's models).
    out_dir: where ``topology.json`` and ``frames.jsonl`` go (None: memory only).
    interval_s: sampling period (wall seconds).
    """

    def __init__(self, spec, testbed=None, out_dir: str | None = None, stations=(),
                 title: str = "", interval_s: float = 0.25):
        self.spec = spec
        self.c = spec.constellation
        self.tb = testbed
        self.out_dir = out_dir
        self.interval_s = interval_s
        self.topology = model.topology(spec, stations, title)
        self.keys = model.link_keys(self.c)
        self.link_index = {k: i for i, k in enumerate(self.keys)}
        self.sat_index = {s: i for i, s in enumerate(self.c.satellites())}
        self.tracker = JobTracker(route=self._route, link_index=self.link_index)
        self.tails: list[LogTail] = []
        self.frame: dict | None = None
        self.frame_text = ""
        self.frames = 0
        self.subscribers: list = []  # callables(frame_text), called from the thread
        self.sample_s: list[float] = []  # how long each sample took (last 100)
        self._router = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._model_cache = (None, None)
        self._frames_fh = None
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, TOPOLOGY_FILE), "w") as f:
                json.dump(self.topology, f)
            self._frames_fh = open(os.path.join(out_dir, FRAMES_FILE), "a", encoding="utf-8")

    # --- inputs ---------------------------------------------------------------------------
    def add_log_dir(self, log_dir: str) -> None:
        """Follow the node logs in ``log_dir`` (jobs, bytes per link)."""
        with self._lock:
            if all(t.log_dir != log_dir for t in self.tails):
                self.tails.append(LogTail(log_dir))

    def link_state(self):
        """The links down and the time the routes are for (the controller's, when the run
        has one, else the model's)."""
        return self.spec.link_state()

    def _route(self, a, b):
        from controller.routing import NoRoute
        try:
            return list(self._router.route(a, b).path) if self._router else [a, b]
        except (NoRoute, ValueError, RuntimeError):
            return [a, b]

    def route_path(self, a: int, b: int) -> tuple[list[int] | None, str]:
        """The path (node indices) from satellite index ``a`` to ``b`` the network uses now
        and where it came from: the controller's installed next hops when the run has a
        controller, else the routing rule on the current link state."""
        from controller.routing import NoRoute
        if self.tb is not None:
            table = model.controller_next_hops(self.tb.controller_state(), self.c)
            if table is not None:
                return model.follow(table, a, b), "next hops installed by the controller"
        sats = self.c.satellites()
        try:
            path = self.spec.router(self.link_state()).route(sats[a], sats[b]).path
        except NoRoute:
            return None, "routing rule on the current link state"
        return [self.sat_index[s] for s in path], "routing rule on the current link state"

    # --- sampling -------------------------------------------------------------------------
    def sample(self) -> bool:
        """Take one sample; True when it made a new frame."""
        t0 = time.perf_counter()
        state = self.link_state()
        if self.tb is not None:
            t_s, shapes = float(self.tb.t_s), self.tb.shapes
        else:
            t_s = self.spec.time_at()
            if self._model_cache[0] != t_s:
                self._model_cache = (t_s, model.model_shapes(self.spec, t_s))
            shapes = self._model_cache[1]
        if self._router is None or (self._router.t_s, self._router.down) != (state.t_s, state.down):
            self._router = self.spec.router(state)
        with self._lock:
            tails = list(self.tails)
        for tail in tails:
            for e in tail.read():
                self.tracker.feed(e)
        jobs = self.tracker.to_json(self.sat_index)
        new = model.frame(self.c, self.keys, t_s, shapes, state.down, jobs, time.time())
        last = self.frame
        changed = last is None or any(new[k] != last[k] for k in ("t_s", "state", "rate_mbps",
                                                                  "jobs"))
        if changed:
            new["seq"] = self.frames
            self.frames += 1
            text = json.dumps(new, separators=(",", ":"))
            self.frame, self.frame_text = new, text
            if self._frames_fh is not None:
                self._frames_fh.write(text + "\n")
                self._frames_fh.flush()
            for fn in list(self.subscribers):
                fn(text)
        self.sample_s = (self.sample_s + [time.perf_counter() - t0])[-100:]
        return changed

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001  the view must never take a run down
                self.error = f"{type(exc).__name__}: {exc}"
            self._stop.wait(self.interval_s)

    def start(self) -> "RunRecorder":
        self.sample()
        self._thread = threading.Thread(target=self._run, name="view-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (after one last sample: the run's final state)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
            try:
                self.sample()
            except Exception:  # noqa: BLE001
                pass
        if self._frames_fh is not None:
            self._frames_fh.close()
            self._frames_fh = None


def read_run(view_dir: str) -> tuple[dict, list[dict]]:
    """The topology and frames a recorder wrote into ``view_dir`` (OSError/ValueError when
    there is none)."""
    with open(os.path.join(view_dir, TOPOLOGY_FILE), encoding="utf-8") as f:
        topo = json.load(f)
    frames = []
    with open(os.path.join(view_dir, FRAMES_FILE), encoding="utf-8") as f:
        for line in f:
            try:
                frames.append(json.loads(line))
            except ValueError:
                continue  # a run stopped mid-line
    return topo, frames
