"""A job's plan drawn on the torus grid and on the world map (matplotlib, PNG or SVG).

``python3 -m node_app.job ... --dry-run --plot plan.png`` (or ``.svg``) draws the plan the
flags describe: the AOI, collectors -> mappers along the routes the network takes, mappers ->
reducer, the reducer's result to the line-of-sight satellite, and the links down at the
plan's time; on the map the same satellites at their sub-satellite points over the vendored
Natural Earth land outline.
"""

from __future__ import annotations

import json
import os

import numpy as np

from view import model

LAND = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "vendor",
                    "land-110m.json")
PLOT_FORMATS = ("png", "svg")
COLOURS = {"collect": "#e0a800", "map": "#0a9fd0", "reduce": "#d0359f", "los": "#1f9d3a",
           "down": "#e5484d", "link": "#d5d9e3", "sat": "#8a93a8"}


def plot_format(path: str) -> str:
    """``png``/``svg`` from the file name (ValueError naming the accepted ones)."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in PLOT_FORMATS:
        raise ValueError(f"--plot {path}: the file name must end in .png or .svg")
    return ext


def land_rings(path: str = LAND) -> list[np.ndarray]:
    """The land outline as lon/lat rings (decoded from the TopoJSON: quantised,
    delta-encoded arcs; a negative arc index is the reversed arc ``~i``)."""
    with open(path, encoding="utf-8") as f:
        topo = json.load(f)
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        a = np.cumsum(np.asarray(arc, dtype=float), axis=0)
        arcs.append(np.column_stack([a[:, 0] * sx + tx, a[:, 1] * sy + ty]))
    rings = []

    def ring(indices):
        parts = [arcs[i] if i >= 0 else arcs[~i][::-1] for i in indices]
        rings.append(np.concatenate(parts))

    for geom in topo["objects"]["land"]["geometries"]:
        polys = geom["arcs"] if geom["type"] == "MultiPolygon" else [geom["arcs"]]
        for poly in polys:
            for r in poly:
                ring(r)
    return rings


def _grid_xy(sat):
    return sat[1], sat[0]  # plane across, satellite down


def _segments(path, wrap_n, wrap_m):
    """Grid segments of a route, leaving out the wrap-around hops (drawn as stubs)."""
    out = []
    for a, b in zip(path, path[1:]):
        (xa, ya), (xb, yb) = _grid_xy(a), _grid_xy(b)
        if abs(xa - xb) > 1 or abs(ya - yb) > 1:
            dx = 0.45 * (1 if xb < xa else -1) if abs(xa - xb) > 1 else 0
            dy = 0.45 * (1 if yb < ya else -1) if abs(ya - yb) > 1 else 0
            out += [((xa, ya), (xa + dx, ya + dy)), ((xb, yb), (xb - dx, yb - dy))]
        else:
            out.append(((xa, ya), (xb, yb)))
    return out


def plot_plan(plan, spec, path: str, aoi: tuple[int, int] | None = None, box=None) -> str:
    """Draw ``plan`` (:class:`node_app.planner.Plan`) of a run of ``spec`` into ``path``
    (.png or .svg); ``aoi``: the grid AOI's (minsat, maxsat) to shade; ``box``: a
    geographic AOI ``[ul_lat, ul_lon, lr_lat, lr_lon]`` to outline on the map.
    Returns ``path``."""
    fmt = plot_format(path)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    c = spec.constellation
    t_s = float(plan.extra.get("t_s", spec.clock.start_s)) if hasattr(plan, "extra") else 0.0
    state = spec.model_link_state(t_s)
    router = spec.router(state)
    n, m = c.planes, c.sats_per_plane
    fig, (ax, mx) = plt.subplots(1, 2, figsize=(13, 5.6),
                                 gridspec_kw={"width_ratios": [1, 1.5]})
    # --- grid ---
    ups, downs = [], []
    for a, b, _kind in c.isls():
        segs = _segments([a, b], n, m)
        (downs if frozenset((a, b)) in state.down else ups).extend(segs)
    ax.add_collection(LineCollection(ups, colors=COLOURS["link"], linewidths=1, zorder=1))
    if downs:
        ax.add_collection(LineCollection(downs, colors=COLOURS["down"], linewidths=1.5,
                                         linestyles="dashed", zorder=1, label="ISL down"))
    if aoi:
        lo, hi = aoi
        ax.add_patch(plt.Rectangle((lo - 0.5, lo - 0.5), hi - lo + 1, hi - lo + 1,
                                   color="#ffe9a8", alpha=0.45, zorder=0, label="AOI"))
    xs, ys = zip(*(_grid_xy(s) for s in c.satellites()))
    ax.scatter(xs, ys, s=10, c=COLOURS["sat"], zorder=2)

    def route_lines(pairs, colour, style="solid"):
        segs = []
        for a, b in pairs:
            segs += _segments(list(router.route(tuple(a), tuple(b)).path), n, m)
        if segs:
            ax.add_collection(LineCollection(segs, colors=colour, linewidths=2.2, alpha=0.8,
                                             linestyles=style, zorder=3))

    cols = [tuple(cm[0]) for cm in plan.allocations]
    maps = [tuple(cm[1]) for cm in plan.allocations]
    red, los = tuple(plan.reducer), tuple(plan.los)
    route_lines(plan.allocations, COLOURS["collect"])
    route_lines([(mp, red) for mp in maps], COLOURS["map"])
    route_lines([(red, los)], COLOURS["reduce"], "dashed")
    marks = [(cols, "s", COLOURS["collect"], "collector"), (maps, "D", COLOURS["map"], "mapper"),
             ([red], "*", COLOURS["reduce"], "reducer"), ([los], "^", COLOURS["los"], "LOS")]
    for sats, mk, colour, label in marks:
        gx, gy = zip(*(_grid_xy(s) for s in sats))
        ax.scatter(gx, gy, marker=mk, s=160 if mk == "*" else 70, c=colour,
                   edgecolors="black", linewidths=0.6, zorder=4, label=label)
    ax.set_xlim(0.4, n + 0.6)
    ax.set_ylim(m + 0.6, 0.4)
    ax.set_xlabel("plane (orb)")
    ax.set_ylabel("satellite in plane (sat)")
    ax.set_aspect("equal", adjustable="box")
    ax.set_title("torus grid: routes the network takes", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    # --- map ---
    for r in land_rings():
        jumps = np.nonzero(np.abs(np.diff(r[:, 0])) > 180)[0]
        if len(jumps) == 0:
            mx.fill(r[:, 0], r[:, 1], color="#dde3ee", lw=0.3, ec="#b9c2d3", zorder=0)
        else:  # a ring across the antimeridian: its outline only, cut where it wraps
            for piece in np.split(r, jumps + 1):
                mx.plot(piece[:, 0], piece[:, 1], color="#b9c2d3", lw=0.6, zorder=0)
    lat, lon = model.subsatellite_points(c, t_s)
    idx = {s: i for i, s in enumerate(c.satellites())}
    mx.scatter(lon, lat, s=8, c=COLOURS["sat"], zorder=2)
    for pairs, colour in ((plan.allocations, COLOURS["collect"]),
                          ([(mp, red) for mp in maps], COLOURS["map"])):
        for a, b in pairs:
            ia, ib = idx[tuple(a)], idx[tuple(b)]
            if abs(lon[ia] - lon[ib]) < 180:
                mx.plot([lon[ia], lon[ib]], [lat[ia], lat[ib]], color=colour, lw=1.4, zorder=3)
    for sats, mk, colour, _label in marks:
        mx.scatter([lon[idx[s]] for s in sats], [lat[idx[s]] for s in sats], marker=mk,
                   s=160 if mk == "*" else 60, c=colour, edgecolors="black", linewidths=0.6,
                   zorder=4)
    if box is not None:
        ul_lat, ul_lon, lr_lat, lr_lon = box
        widths = [(ul_lon, lr_lon)] if ul_lon <= lr_lon else [(ul_lon, 180), (-180, lr_lon)]
        for w0, w1 in widths:
            mx.add_patch(plt.Rectangle((w0, lr_lat), w1 - w0, ul_lat - lr_lat, fill=False,
                                       ec=COLOURS["collect"], lw=1.5, ls="--", zorder=3))
    mx.set_xlim(-180, 180)
    mx.set_ylim(-90, 90)
    mx.set_aspect("equal")
    mx.set_xlabel("longitude (deg)")
    mx.set_ylabel("latitude (deg)")
    mx.set_title(f"sub-satellite points at t = {t_s:g} s", fontsize=10)
    fig.suptitle(f"SpaceCoMP plan on {n}x{m}: allocator={plan.allocator} "
                 f"reducer={plan.reducetype} {list(red)} seed={plan.seed}   distance="
                 f"{plan.distance} hops, reduce_distance={plan.reduce_distance} hops, "
                 f"model cost {plan.cost:.4g} s", fontsize=10)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 0.94))
    fig.savefig(path, format=fmt, dpi=120)
    plt.close(fig)
    return path
