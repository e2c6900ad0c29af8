"""The view as one self-contained HTML file that replays a recorded run.

    python3 -m view.replay VIEW_DIR [-o view.html]

``VIEW_DIR`` is what a :class:`view.recorder.RunRecorder` wrote (``topology.json``,
``frames.jsonl``, ``spec.json``).  The file inlines the page, its vendored scripts, the
world outline and the frames, so it opens anywhere without a server or the internet; a
timeline replays the frames (link states, rates and outages as they moved, each job's
plan and progress).  Routes of a selected pair follow the routing rule on each frame's
link state (tables precomputed here, for grids up to :data:`ROUTE_TABLE_MAX_SATS`).
Exit codes: 0 written, 2 no recording in VIEW_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from view import model
from view.recorder import read_run
from view.server import ASSETS

MAX_FRAMES = 3000
ROUTE_TABLE_MAX_SATS = 144        # 12x12: a table is sats^2 entries
ROUTE_TABLE_MAX_TABLES = 8        # distinct link states given their own table


def thin(frames: list[dict], limit: int = MAX_FRAMES) -> list[dict]:
    """At most ``limit`` frames: every frame where links or jobs changed is kept first,
    the others (only time moved) evenly thinned; order kept."""
    if len(frames) <= limit:
        return frames
    keep, rest = [], []
    for i, f in enumerate(frames):
        prev = frames[i - 1] if i else None
        if prev is None or i == len(frames) - 1 or f["state"] != prev["state"] or f["jobs"] != prev["jobs"]:
            keep.append(i)
        else:
            rest.append(i)
    room = max(0, limit - len(keep))
    if rest and room:
        step = len(rest) / room
        keep += [rest[int(k * step)] for k in range(room)]
    return [frames[i] for i in sorted(set(keep))[:limit]]


def route_tables(spec, frames: list[dict]) -> list | None:
    """Next-hop tables for the frames' link states; each frame gets ``routes``, the index
    of its table: its own for the first :data:`ROUTE_TABLE_MAX_TABLES` distinct states,
    beyond that the latest table with the same links down (routes then differ at most in
    where they change plane), else None.  None when the grid is too big to embed tables."""
    from controller.routing import Router
    c = spec.constellation
    if c.size > ROUTE_TABLE_MAX_SATS:
        return None
    keys = model.link_keys(c)
    tables, seen, by_state = [], {}, {}
    for f in frames:
        key = (f["t_s"], f["state"])
        if key not in seen and len(tables) < ROUTE_TABLE_MAX_TABLES:
            down = {keys[i] for i, ch in enumerate(f["state"]) if ch == "d"}
            seen[key] = by_state[f["state"]] = len(tables)
            tables.append(model.next_hop_table(Router(c, f["t_s"], down), c))
        f["routes"] = seen.get(key, by_state.get(f["state"]))
    return tables


def _read(name: str) -> str:
    with open(os.path.join(ASSETS, name), encoding="utf-8") as f:
        return f.read()


def _script(js: str) -> str:
    return "<script>" + js.replace("</script", "<\\/script") + "</script>"


def render(topology: dict, frames: list[dict], routes=None) -> str:
    """The replay page's HTML text."""
    html = _read("index.html")
    data = {"topology": topology, "frames": frames, "routes": routes,
            "land": json.loads(_read("vendor/land-110m.json"))}
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    style = "<style>" + _read("view.css") + "</style>"
    scripts = "\n".join([
        _script(_read("vendor/d3.min.js")), _script(_read("vendor/topojson-client.min.js")),
        _script(_read("view.js")),
        f'<script type="application/json" id="replay-data">{payload}</script>',
        _script("SpaceView.replay(JSON.parse(document.getElementById('replay-data').textContent));")])
    html = _between(html, "<!--STYLE-->", "<!--/STYLE-->", style)
    return _between(html, "<!--SCRIPTS-->", "<!--/SCRIPTS-->", scripts)


def _between(text: str, start: str, end: str, new: str) -> str:
    i, j = text.index(start), text.index(end) + len(end)
    return text[:i] + new + text[j:]


def write_replay(view_dir: str, out_path: str) -> str:
    """Write the replay of the recording in ``view_dir`` to ``out_path``; returns it.
    OSError/ValueError when there is no recording."""
    from topo.spec import SPEC_FILE, ConstellationSpec
    topology, frames = read_run(view_dir)
    frames = thin(frames)
    routes = None
    spec_path = os.path.join(view_dir, SPEC_FILE)
    if os.path.exists(spec_path):
        routes = route_tables(ConstellationSpec.load(spec_path), frames)
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render(topology, frames, routes))
    os.replace(tmp, out_path)
    return out_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m view.replay", description=__doc__.split("\n")[0])
    p.add_argument("view_dir", help="a recording (topology.json, frames.jsonl)")
    p.add_argument("-o", "--out", help="HTML file to write (default VIEW_DIR/../view.html)")
    a = p.parse_args(argv)
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.view_dir)), "view.html")
    try:
        write_replay(a.view_dir, out)
    except (OSError, ValueError) as e:
        print(f"view.replay: {a.view_dir}: no recording ({e})", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
