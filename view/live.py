"""One run's view: the recorder, the web server when asked for, the replay at the end.

    v = RunView.for_testbed(testbed, view_dir, port=8470).start()   # http://127.0.0.1:8470/
    v.add_log_dir(run_dir + "/logs")                                 # follow the jobs
    v.close(replay_html=run_dir + "/view.html")

Commands offer ``--view [PORT]`` (:func:`add_view_flag`); the flag also asks every
:class:`node_app.emulated.EmulatedNodes` of the process for a live view
(:func:`requested`), so an experiment needs no code of its own for it.
"""

from __future__ import annotations

import argparse
import os
import sys

from view.recorder import RunRecorder

DEFAULT_PORT = 8470
_requested: dict = {}  # {"port": int, "host": str} once a --view flag was given


def add_view_flag(parser: argparse.ArgumentParser) -> None:
    """``--view [PORT]`` (default port 8470) and ``--view-host`` on ``parser``."""
    parser.add_argument("--view", nargs="?", type=int, const=DEFAULT_PORT, default=None,
                        metavar="PORT", action=_ViewAction,
                        help=f"serve a live web view of the constellation on PORT "
                             f"(default {DEFAULT_PORT}; 0 any free port)")
    parser.add_argument("--view-host", default="127.0.0.1", action=_ViewHostAction,
                        help="address the view binds to (default 127.0.0.1)")


class _ViewAction(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        if value is None or not 0 <= value < 65536:
            parser.error(f"--view {value}: a TCP port 0..65535")
        setattr(namespace, self.dest, value)
        request(value, _requested.get("host", "127.0.0.1"))


class _ViewHostAction(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, value)
        _requested["host"] = value
        if "port" in _requested:
            request(_requested["port"], value)


def request(port: int | None, host: str = "127.0.0.1") -> None:
    """Ask for a live view on ``host:port`` in this process (None: no view)."""
    if port is None:
        _requested.pop("port", None)
    else:
        _requested.update(port=port, host=host)


def requested() -> tuple[str, int] | None:
    """``(host, port)`` of the live view this process was asked for, or None."""
    return (_requested.get("host", "127.0.0.1"), _requested["port"]) if "port" in _requested else None


class RunView:
    """The recorder of one run plus, with ``port``, its web server.

    view_dir: where the recording goes (None: memory only, no replay).
    """

    def __init__(self, spec, testbed=None, view_dir: str | None = None, port: int | None = None,
                 host: str = "127.0.0.1", stations=(), title: str = "", echo=None):
        # Served: a frame within 0.25 s of a change; recording only: a sample a second
        # (about 20 ms each at 20x20, so the recorder costs a run 2 % of a core).
        self.recorder = RunRecorder(spec, testbed, view_dir, stations, title,
                                    interval_s=0.25 if port is not None else 1.0)
        self.view_dir = view_dir
        if view_dir:
            spec.save(os.path.join(view_dir, "spec.json"))
        self.port, self.host = port, host
        self.server = None
        self.echo = echo or (lambda m: print(m, file=sys.stderr, flush=True))

    @classmethod
    def for_testbed(cls, tb, view_dir: str | None, port: int | None = None,
                    host: str = "127.0.0.1", title: str = "", echo=None) -> "RunView":
        stations = tb.cfg.stations() if getattr(tb.cfg, "ground_stations", None) else ()
        return cls(tb.spec, tb, view_dir, port, host, stations, title, echo)

    @property
    def url(self) -> str | None:
        return self.server.url if self.server else None

    def start(self) -> "RunView":
        """Start recording and, with a port, serving (OSError in one line when the port
        is taken: the recorder is stopped again)."""
        self.recorder.start()
        if self.port is not None:
            from view.server import ViewServer
            try:
                self.server = ViewServer(self.recorder, self.host, self.port).start()
            except OSError:
                self.recorder.stop()
                raise
            self.echo(f"view: {self.server.url}")
        return self

    def add_log_dir(self, log_dir: str | None) -> None:
        if log_dir:
            self.recorder.add_log_dir(log_dir)

    def close(self, replay_html: str | None = None) -> str | None:
        """Stop serving and recording; write the replay to ``replay_html`` (returned, or
        None when there is nothing to replay)."""
        try:
            if self.server is not None:
                self.server.stop()
                self.server = None
            self.recorder.stop()
            if replay_html and self.view_dir:
                from view.replay import write_replay
                return write_replay(self.view_dir, replay_html)
        except Exception as e:  # noqa: BLE001  the view must never take a run down
            self.echo(f"view: replay not written: {type(e).__name__}: {e}")
        return None


def attach(tb, run_dir: str, log_dir: str | None) -> "RunView | None":
    """The hook of :class:`node_app.emulated.EmulatedNodes`: follow ``log_dir`` in the
    testbed's view, starting one (recorded into ``run_dir/view``, served when
    :func:`requested`) when the testbed has none.  Returns the view the caller owns (it
    closes it), or None when the testbed's owner does."""
    existing = getattr(tb, "view", None)
    if existing is not None:
        existing.add_log_dir(log_dir)
        return None
    try:
        view = open_view(tb, os.path.join(run_dir, "view")).__enter__()
    except Exception as e:  # noqa: BLE001  the view must never take a run down
        print(f"view: not recording this run: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    view.add_log_dir(log_dir)
    return view


class open_view:
    """``with open_view(tb, view_dir, replay_html):`` the testbed's view for the block
    (served when :func:`requested`), closed with its replay written at the end; the
    node daemons started inside add their logs to it."""

    def __init__(self, tb, view_dir: str | None, replay_html: str | None = None, title: str = ""):
        self.tb, self.view_dir, self.replay_html, self.title = tb, view_dir, replay_html, title
        self.view = None

    def __enter__(self) -> RunView:
        where = requested()
        self.view = RunView.for_testbed(self.tb, self.view_dir, title=self.title,
                                        port=where[1] if where else None,
                                        host=where[0] if where else "127.0.0.1")
        try:
            self.view.start()
        except OSError as e:
            self.view.echo(f"view: {e}; running without the live view")
            self.view = RunView.for_testbed(self.tb, self.view_dir, title=self.title).start()
        self.tb.view = self.view
        return self.view

    def __exit__(self, *exc):
        self.tb.view = None
        self.view.close(self.replay_html)
        return False
