"""The command-line layer every entry point shares.

* Exit codes: 0 ok, 1 the run failed, 2 bad input.
* Bad input (:class:`UsageError` and its subclasses: config, spec and plan errors) is one
  line on stderr, ``error: ...``, never a usage dump or a traceback; so is a failed run
  (:class:`RunFailed`) and anything unexpected (``error: internal error: ...``; set
  ``SPACECOMP_DEBUG=1`` for the traceback).
* ``--json`` means one JSON line on stdout (:func:`print_json`); progress goes to stderr.
* A closed pipe (``... --json | head``) ends the program quietly.
* Config files (testbed, experiment and paper YAML) are read by :func:`load_yaml_mapping`
  and their keys checked by :func:`check_keys`, which names the unknown key and suggests the
  closest known one.

Use: ``if __name__ == "__main__": sys.exit(cli.run(main))`` and :func:`parser` for argparse.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import traceback

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """Bad input (flag, config key, value): one line on stderr, exit 2."""


class RunFailed(RuntimeError):
    """The run could not be completed (a job failed, a testbed did not come up): exit 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise UsageError(message)


def parser(prog: str, description: str = "", **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser whose errors raise :class:`UsageError`."""
    return _Parser(prog=prog, description=description.strip().split("\n")[0], **kwargs)


def add_common(p: argparse.ArgumentParser, results: str | None = "results") -> None:
    """The flags every program that reports and writes results has: ``--json`` and (unless
    ``results`` is None) ``--results DIR``."""
    p.add_argument("--json", action="store_true", help="print one JSON line on stdout")
    if results is not None:
        p.add_argument("--results", default=results,
                       help=f"results root directory (default {results})")


def results_dir(root, kind: str):
    """Create and return ``<root>/<kind>/<UTC timestamp>/`` (suffixed if taken): where every
    program writes its results.  UsageError when ``root`` cannot hold it."""
    from datetime import datetime, timezone
    from pathlib import Path
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = Path(root) / kind
    try:
        base.mkdir(parents=True, exist_ok=True)
        for k in range(1000):
            path = base / (stamp if k == 0 else f"{stamp}-{k}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as e:
        raise UsageError(f"--results {root}: {e.strerror or e}") from None
    raise UsageError(f"--results {root}: cannot create a result directory under {base}")


def print_json(obj) -> None:
    """One JSON line on stdout (what ``--json`` promises)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def suggest(word: str, known) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(raw: dict, known, prefix: str = "", error=UsageError) -> None:
    """``error`` naming the first key of ``raw`` not in ``known``, with the closest known
    key suggested and the known keys listed."""
    for key in raw:
        if key not in known:
            raise error(f"{prefix}{key}: unknown key{suggest(key, known)} "
                        f"(known: {', '.join(sorted(map(str, known)))})")


def load_document(path, what: str, parse, fmt: str, parse_errors=(), error=UsageError):
    """``parse(file)`` of the UTF-8 text file ``path``; ``error`` in one line (``what``
    names the file's role) when it cannot be read or is not valid ``fmt``."""
    try:
        with open(path, encoding="utf-8") as fh:
            return parse(fh)
    except OSError as e:
        raise error(f"{what} {path}: {e.strerror}") from None
    except (UnicodeDecodeError, ValueError, *parse_errors) as e:
        raise error(f"{what} {path}: not valid {fmt} ({str(e).splitlines()[0]})") from None


def load_yaml_mapping(path, what: str = "config", error=UsageError) -> dict:
    """The YAML mapping in ``path`` (an empty file is ``{}``); ``error`` in one line when the
    file cannot be read, is not YAML or not a mapping."""
    import yaml
    raw = load_document(path, what, yaml.safe_load, "YAML", (yaml.YAMLError,), error)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise error(f"{what} {path}: the top level must be a mapping of keys to values")
    return raw


def _quiet_pipe() -> None:
    """stdout's reader went away: send what is left to /dev/null so the interpreter's
    final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def run(main, argv=None) -> int:
    """Run ``main(argv)`` under the shared rules; returns the exit code."""
    try:
        rc = main(argv)
        sys.stdout.flush()
        return EXIT_OK if rc is None else rc
    except BrokenPipeError:
        _quiet_pipe()
        return EXIT_OK
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- the last line of defence: one line, no traceback
        if os.environ.get("SPACECOMP_DEBUG"):
            traceback.print_exc()
        print(f"error: internal error: {type(e).__name__}: {e} "
              f"(SPACECOMP_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_FAILED
