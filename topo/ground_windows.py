"""Contact windows of a ground station: ``python3 -m topo.ground_windows``.

    python3 -m topo.ground_windows --station Berlin --hours 24                # table
    python3 -m topo.ground_windows --station Berlin --hours 24 --grid 11x11 --json
    python3 -m topo.ground_windows --station 52.52,13.40 --hours 6 --plot berlin.png
    python3 -m topo.ground_windows --config testbed.yaml --hours 24           # its stations

``--station`` is a city (GeoNames, e.g. ``Berlin`` or ``Springfield, US``) or ``LAT,LON``
in degrees.  For each pass of a satellite above the minimum elevation it prints start, end,
peak elevation and the ground link's data capacity (``topo.ground_stations.GROUND_LINK``,
Friis/Shannon RF), then the serving satellite over time (keep the current gateway until it
sets, then the highest in view) and the handovers.  ``--json``: one line per station with
``grid``, ``min_elevation_deg`` and ``windows`` (each ``sat`` [sat, orb], ``start_s``,
``end_s``, ``max_elevation_deg``, ``capacity_bytes``, ...), plus ``station``, ``serving``,
``handovers`` and ``coverage``.  Exit 0, or 2 with one line on stderr for bad input.
"""

from __future__ import annotations

import json
import sys

from topo import cli
from topo import ground_stations as gs
from topo.config import ConfigError, from_dict, load, parse_grid, resolve_stations

DEFAULT_GRID = "11x11"


def parse_args(argv):
    p = cli.parser("python3 -m topo.ground_windows", __doc__)
    p.add_argument("--station", action="append",
                   help="city name or LAT,LON (degrees); repeatable (default: the --config's)")
    p.add_argument("--hours", type=float, default=24.0, help="span in hours (default 24)")
    p.add_argument("--grid", help=f"PLANESxSATS (default: the --config's, else {DEFAULT_GRID})")
    p.add_argument("--config", help="testbed YAML: orbit, min_elevation_deg, ground_link, "
                                    "start_time_s, ground_stations")
    p.add_argument("--start", type=float, help="constellation time of the span's start, s "
                                               "(default: the config's start_time_s, else 0)")
    p.add_argument("--min-elevation", type=float, help="degrees (default 25)")
    p.add_argument("--step", type=float, default=gs.DEFAULT_STEP_S,
                   help=f"sampling step before refinement, s (default {gs.DEFAULT_STEP_S:g})")
    p.add_argument("--json", action="store_true", help="one JSON line per station")
    p.add_argument("--plot", metavar="PNG", help="plot elevation of the passes and the gateway")
    return p.parse_args(argv)


def _station_entry(text: str) -> dict:
    parts = text.split(",")
    if len(parts) == 2:
        try:
            lat, lon = float(parts[0]), float(parts[1])
            return {"name": text, "lat_deg": lat, "lon_deg": lon}
        except ValueError:
            pass
    return {"city": text}


def build(args):
    """The validated testbed config (without stations) and the stations to compute windows
    for, as ``(cfg, [GroundStation])``; ConfigError names the bad key or flag."""
    raw = {}
    if args.config:
        base = load(args.config)
        from dataclasses import asdict
        raw = asdict(base)
        raw.pop("planes"), raw.pop("sats_per_plane"), raw.pop("ground")
        raw["grid"] = base.grid
        if not raw["ground_stations"]:
            raw.pop("ground_stations")
    else:
        raw["grid"] = DEFAULT_GRID
    if args.grid:
        raw["grid"] = "x".join(str(v) for v in parse_grid(args.grid))
    if args.station:
        raw["ground_stations"] = [_station_entry(s) for s in args.station]
    stations = raw.pop("ground_stations", None)
    if stations is None:
        raise ConfigError("--station: give a city or LAT,LON (or a --config with ground_stations)")
    if args.start is not None:
        raw["start_time_s"] = args.start
    if args.min_elevation is not None:
        raw["min_elevation_deg"] = args.min_elevation
    if not 0 < args.hours <= 24 * 30:
        raise ConfigError(f"--hours {args.hours}: must be in (0, 720]")
    if not 0.1 <= args.step <= 600:
        raise ConfigError(f"--step {args.step}: must be in [0.1, 600] s")
    cfg = from_dict(raw)
    try:
        stations = resolve_stations(stations)
    except ConfigError as exc:
        msg = str(exc)
        if args.station and msg.startswith("ground_stations["):  # name the flag, not the key
            i = int(msg[len("ground_stations["):msg.index("]")])
            raise ConfigError(f"--station {args.station[i]!r}: {msg.split(': ', 1)[1]}") from None
        raise
    return cfg, [gs.GroundStation(**st) for st in stations]


def report(cfg, station, hours, step_s) -> dict:
    """Windows, serving segments and handovers of one station (the JSON object)."""
    c = cfg.constellation()
    t0, t1 = cfg.start_time_s, cfg.start_time_s + hours * 3600.0
    windows = gs.contact_windows(c, station, t0, t1, cfg.min_elevation_deg,
                                 cfg.ground_link_model(), step_s)
    segments = gs.serving_timeline(c, station, windows, t0, t1, cfg.min_elevation_deg)
    served = sum(s.end_s - s.start_s for s in segments if s.sat is not None)
    gaps = [s.end_s - s.start_s for s in segments if s.sat is None]
    return {
        "grid": cfg.grid, "min_elevation_deg": cfg.min_elevation_deg,
        "station": {"name": station.name, "lat_deg": station.lat_deg,
                    "lon_deg": station.lon_deg, "alt_m": station.alt_m},
        "start_s": t0, "end_s": t1, "altitude_km": cfg.altitude_km,
        "inclination_deg": cfg.inclination_deg,
        "ground_link": {**gs.GROUND_LINK_DEFAULTS, **cfg.ground_link},
        "windows": [w.as_dict() for w in windows],
        "serving": [{"sat": list(s.sat) if s.sat else None, "start_s": round(s.start_s, 3),
                     "end_s": round(s.end_s, 3)} for s in segments],
        "handovers": [{"t_s": round(h.t_s, 3), "from": list(h.old) if h.old else None,
                       "to": list(h.new) if h.new else None} for h in gs.handovers(segments)],
        "coverage": round(served / (t1 - t0), 4),
        "longest_gap_s": round(max(gaps, default=0.0), 3),
        "capacity_bytes": sum(w.capacity_bytes for w in windows),
    }


def _hms(t_s: float) -> str:
    t = int(round(t_s))
    return f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"


def print_table(rep: dict, out=sys.stdout) -> None:
    st = rep["station"]
    print(f"{st['name']} ({st['lat_deg']:.3f}, {st['lon_deg']:.3f}), grid {rep['grid']}, "
          f"min elevation {rep['min_elevation_deg']:g} deg, {len(rep['windows'])} windows, "
          f"coverage {100 * rep['coverage']:.1f}%, longest gap {rep['longest_gap_s']:.0f} s, "
          f"{len(rep['handovers'])} gateway changes", file=out)
    print(f"{'sat':>8} {'start':>9} {'end':>9} {'dur_s':>7} {'max_el':>7} {'capacity_GB':>12}",
          file=out)
    for w in rep["windows"]:
        print(f"{str(w['sat']):>8} {_hms(w['start_s']):>9} {_hms(w['end_s']):>9} "
              f"{w['duration_s']:7.1f} {w['max_elevation_deg']:7.2f} "
              f"{w['capacity_bytes'] / 1e9:12.2f}{'  (clipped)' if w['clipped'] else ''}",
              file=out)
    print("gateway over time:", file=out)
    for s in rep["serving"]:
        print(f"  {_hms(s['start_s'])} - {_hms(s['end_s'])}  "
              f"{s['sat'] if s['sat'] else 'none in view'}", file=out)


def plot(cfg, reports: list[dict], path: str) -> None:
    """Elevation of every pass (thin) and of the serving satellite (thick), per station."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    c = cfg.constellation()
    fig, axes = plt.subplots(len(reports), 1, figsize=(12, 3.2 * len(reports)), squeeze=False)
    for ax, rep in zip(axes[:, 0], reports):
        st = gs.GroundStation(**rep["station"])
        for w in rep["windows"]:
            t = np.linspace(w["start_s"], w["end_s"], 60)
            ax.plot(t / 3600, gs.elevations_deg(c, st, t, [tuple(w["sat"])])[:, 0],
                    color="0.6", lw=0.8)
        for s in rep["serving"]:
            if s["sat"]:
                t = np.linspace(s["start_s"], s["end_s"], 60)
                ax.plot(t / 3600, gs.elevations_deg(c, st, t, [tuple(s["sat"])])[:, 0],
                        color="tab:blue", lw=2)
        for h in rep["handovers"]:
            ax.axvline(h["t_s"] / 3600, color="tab:red", lw=0.5, alpha=0.5)
        ax.axhline(rep["min_elevation_deg"], color="k", ls="--", lw=0.8)
        ax.set_ylim(0, 90)
        ax.set_ylabel("elevation (deg)")
        ax.set_title(f"{st.name}: {len(rep['windows'])} passes, coverage "
                     f"{100 * rep['coverage']:.1f}% (gateway thick, handovers red), grid {rep['grid']}")
    axes[-1, 0].set_xlabel("constellation time (h)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        cfg, stations = build(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reports = [report(cfg, st, args.hours, args.step) for st in stations]
    for rep in reports:
        if args.json:
            print(json.dumps(rep), flush=True)
        else:
            print_table(rep)
    if args.plot:
        try:
            plot(cfg, reports, args.plot)
        except OSError as exc:
            print(f"error: --plot {args.plot}: {exc.strerror}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
