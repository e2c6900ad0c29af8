"""Ground stations on the (spherical) Earth: visibility, serving satellite, contact windows.

Pure model, no I/O.  A station sits at latitude/longitude/altitude on the same sphere of
radius ``EARTH_RADIUS_M`` the constellation model uses; satellite positions come from
:meth:`topo.constellation.Constellation.positions_ecef_m` (Walker geometry, Earth rotating).

* A satellite is **visible** while its elevation above the station's horizon is at least
  ``min_elevation_deg`` (default 25 degrees, as Starlink-style studies use).
* **Serving-satellite policy** (:func:`choose_serving`): the station keeps its current
  satellite until it sets below the minimum elevation; then (or when it has none) it takes
  the visible satellite of highest elevation; with none visible it has no gateway.
* A **contact window** is one pass of one satellite above the minimum elevation: start, end,
  peak elevation and the bytes the ground link could carry during it (the Shannon rate of
  :data:`GROUND_LINK`, a Friis/Shannon RF link, integrated over the pass).

Times are constellation seconds (the testbed's ``t_s``), like everything in ``topo``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from topo.constellation import EARTH_RADIUS_M, Constellation, Sat
from topo.link_model import SPEED_OF_LIGHT_M_S, LinkModel

DEFAULT_MIN_ELEVATION_DEG = 25.0
DEFAULT_STEP_S = 5.0

#: Ground <-> satellite RF link (Ka band) used for window capacities, unless overridden
#: (config key ``ground_link``): 20 GHz carrier (wavelength c/20 GHz = 1.5 cm), 250 MHz
#: channel, 10 W transmit power, 38 dBi satellite phased array, 40 dBi ground dish (about
#: 0.8 m), 300 K system noise.  At the 25-degree slant range of a 530 km orbit (1087 km):
#: SNR 28.7 dB, 2.38 Gbit/s; overhead (530 km): 2.9 Gbit/s.
GROUND_LINK_DEFAULTS = dict(bandwidth_hz=250e6, tx_power_w=10.0, tx_gain_dbi=38.0,
                            rx_gain_dbi=40.0, noise_temp_k=300.0,
                            wavelength_m=SPEED_OF_LIGHT_M_S / 20e9)
GROUND_LINK = LinkModel(**GROUND_LINK_DEFAULTS)


@dataclass(frozen=True)
class GroundStation:
    """A ground station: ``name``, geodetic ``lat_deg`` in [-90, 90], ``lon_deg`` in
    [-180, 180] (east positive) and ``alt_m`` above the mean Earth radius."""

    name: str
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0

    def __post_init__(self):
        for key, lo, hi in (("lat_deg", -90, 90), ("lon_deg", -180, 180), ("alt_m", -500, 100_000)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi \
                    or math.isnan(v):
                raise ValueError(f"{key} {v!r}: must be a number in [{lo}, {hi}]")

    def ecef_m(self) -> np.ndarray:
        """Earth-fixed position (metres) on the sphere of radius EARTH_RADIUS_M + alt_m."""
        la, lo = math.radians(self.lat_deg), math.radians(self.lon_deg)
        r = EARTH_RADIUS_M + self.alt_m
        return np.array([r * math.cos(la) * math.cos(lo), r * math.cos(la) * math.sin(lo),
                         r * math.sin(la)])


@dataclass(frozen=True)
class ContactWindow:
    """One pass of ``sat`` above the minimum elevation.

    start_s / end_s: constellation seconds (clipped to the span asked for; ``clipped``
        says so); max_elevation_deg at max_elevation_t_s; capacity_bytes: the ground
        link's Shannon rate integrated over the window."""

    sat: Sat
    start_s: float
    end_s: float
    max_elevation_deg: float
    max_elevation_t_s: float
    capacity_bytes: int
    clipped: bool = False

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def as_dict(self) -> dict:
        return {"sat": list(self.sat), "start_s": round(self.start_s, 3),
                "end_s": round(self.end_s, 3), "duration_s": round(self.duration_s, 3),
                "max_elevation_deg": round(self.max_elevation_deg, 3),
                "max_elevation_t_s": round(self.max_elevation_t_s, 3),
                "capacity_bytes": self.capacity_bytes, "clipped": self.clipped}


@dataclass(frozen=True)
class Segment:
    """The station is served by ``sat`` (None: no satellite in view) from start_s to end_s."""

    sat: Sat | None
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Handover:
    """At ``t_s`` the gateway changes from ``old`` to ``new`` (either may be None: contact
    lost / contact regained)."""

    t_s: float
    old: Sat | None
    new: Sat | None


# --- geometry --------------------------------------------------------------------------------
def elevations_deg(c: Constellation, station: GroundStation, t_s, sats=None) -> np.ndarray:
    """Elevation (degrees) of satellites above the station's horizon, vectorised:
    shape ``t_s.shape + (len(sats) or c.size,)``; satellites in node-id order by default."""
    g = station.ecef_m()
    up = g / np.linalg.norm(g)
    los = c.positions_ecef_m(t_s, sats) - g
    dist = np.linalg.norm(los, axis=-1)
    return np.degrees(np.arcsin(np.clip(los @ up / dist, -1.0, 1.0)))


def slant_range_m(c: Constellation, station: GroundStation, t_s, sats=None) -> np.ndarray:
    """Station-to-satellite distance (metres), shaped like :func:`elevations_deg`."""
    return np.linalg.norm(c.positions_ecef_m(t_s, sats) - station.ecef_m(), axis=-1)


def choose_serving(current: int | None, elevation_deg, min_elevation_deg: float) -> int | None:
    """The serving-satellite policy, one instant: index into ``elevation_deg`` (one value per
    candidate satellite) of the gateway, or None when no satellite is in view.

    Keep ``current`` while its elevation is at least the minimum; otherwise take the
    highest visible satellite."""
    el = np.asarray(elevation_deg, dtype=float)
    if current is not None and el[current] >= min_elevation_deg:
        return current
    best = int(np.argmax(el))
    return best if el[best] >= min_elevation_deg else None


# --- windows -----------------------------------------------------------------------------------
def contact_windows(c: Constellation, station: GroundStation, start_s: float, end_s: float,
                    min_elevation_deg: float = DEFAULT_MIN_ELEVATION_DEG,
                    link: LinkModel = GROUND_LINK, step_s: float = DEFAULT_STEP_S
                    ) -> list[ContactWindow]:
    """Every pass of every satellite above ``min_elevation_deg`` between ``start_s`` and
    ``end_s``, sorted by start time.

    The elevation of all satellites is sampled every ``step_s`` (vectorised); each rise and
    set is then found to a millisecond by root finding and the peak by bounded
    minimisation.  A pass whose whole time above the minimum is shorter than ``step_s``
    and falls between two samples can be missed (at 530 km and 25 degrees a full pass lasts
    minutes; grazing passes that barely clear the minimum are the ones at risk)."""
    if not end_s > start_s:
        raise ValueError(f"span [{start_s}, {end_s}]: end must be after start")
    if not 0 < step_s <= 600:
        raise ValueError(f"step_s {step_s}: must be in (0, 600]")
    n = max(2, int(math.ceil((end_s - start_s) / step_s)) + 1)
    ts = np.linspace(start_s, end_s, n)
    above = elevations_deg(c, station, ts) >= min_elevation_deg  # (T, S)
    sats = c.satellites()
    windows = []
    for idx in np.flatnonzero(above.any(axis=0)):
        sat = sats[idx]
        col = above[:, idx]
        edges = np.flatnonzero(np.diff(col.astype(np.int8)))
        starts = [0] if col[0] else []
        ends = []
        for e in edges:
            (starts if not col[e] else ends).append(e + 1 if not col[e] else e)
        if col[-1]:
            ends.append(n - 1)
        for i0, i1 in zip(starts, ends):
            windows.append(_window(c, station, sat, ts, i0, i1, min_elevation_deg, link))
    windows.sort(key=lambda w: (w.start_s, c.node_id(w.sat)))
    return windows


def _window(c, station, sat, ts, i0, i1, min_el, link) -> ContactWindow:
    """Refine one pass whose samples ts[i0..i1] are all above the minimum."""
    from scipy.optimize import brentq, minimize_scalar  # lazily: the Ryu venv has no scipy
    f = lambda t: float(elevations_deg(c, station, t, [sat])[0]) - min_el  # noqa: E731
    last = len(ts) - 1
    clipped = bool(i0 == 0 or i1 == last)
    t_start = float(ts[0]) if i0 == 0 else brentq(f, ts[i0 - 1], ts[i0], xtol=1e-3)
    t_end = float(ts[-1]) if i1 == last else brentq(f, ts[i1], ts[i1 + 1], xtol=1e-3)
    k = i0 + int(np.argmax(elevations_deg(c, station, ts[i0:i1 + 1], [sat])[:, 0]))
    lo, hi = max(t_start, float(ts[max(k - 1, 0)])), min(t_end, float(ts[min(k + 1, len(ts) - 1)]))
    if hi > lo:
        res = minimize_scalar(lambda t: -f(t), bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-2})
        t_peak, el_peak = float(res.x), -float(res.fun) + min_el
    else:
        t_peak, el_peak = float(ts[k]), f(ts[k]) + min_el
    if el_peak < f(ts[k]) + min_el:  # never report less than the best sample
        t_peak, el_peak = float(ts[k]), f(ts[k]) + min_el
    return ContactWindow(sat, float(t_start), float(t_end), el_peak, t_peak,
                         window_capacity_bytes(c, station, sat, t_start, t_end, link), clipped)


def window_capacity_bytes(c: Constellation, station: GroundStation, sat: Sat, start_s: float,
                          end_s: float, link: LinkModel = GROUND_LINK, step_s: float = 1.0) -> int:
    """Bytes the ground link can carry to/from ``sat`` between start_s and end_s: its Shannon
    rate at the slant range, integrated (trapezoid, at most ``step_s`` apart) over time."""
    if end_s <= start_s:
        return 0
    t = np.linspace(start_s, end_s, max(2, int(math.ceil((end_s - start_s) / step_s)) + 1))
    rate_bps = link.shannon_rate_bps(slant_range_m(c, station, t, [sat])[:, 0])
    return int(np.sum((rate_bps[1:] + rate_bps[:-1]) / 2 * np.diff(t)) / 8)  # trapezoid


# --- serving satellite over time ----------------------------------------------------------------
def serving_timeline(c: Constellation, station: GroundStation, windows: list[ContactWindow],
                     start_s: float, end_s: float,
                     min_elevation_deg: float = DEFAULT_MIN_ELEVATION_DEG) -> list[Segment]:
    """Who serves the station from start_s to end_s under :func:`choose_serving`, as
    contiguous segments (``sat`` None where no satellite is in view), from ``windows``
    (those of :func:`contact_windows` over the same span)."""
    segments: list[Segment] = []

    def active(at):
        return [w for w in windows if w.start_s <= at < w.end_s]

    def highest(cands, at):
        el = elevations_deg(c, station, at, [w.sat for w in cands])
        return cands[int(np.argmax(el))]

    t, current = float(start_s), None  # current: the window of the serving satellite
    while t < end_s:
        if current is None:
            cands = active(t)
            if not cands:
                nxt = min((w.start_s for w in windows if w.start_s > t), default=end_s)
                segments.append(Segment(None, t, min(nxt, end_s)))
                t = nxt
                continue
            current = highest(cands, t)
        segments.append(Segment(current.sat, t, min(current.end_s, end_s)))
        t = current.end_s  # kept until it sets; then the highest of those in view
        cands = active(t)
        current = highest(cands, t) if cands else None
    merged: list[Segment] = []
    for s in segments:  # drop empty pieces, join neighbours with the same gateway
        if s.end_s <= s.start_s:
            continue
        if merged and merged[-1].sat == s.sat:
            merged[-1] = Segment(s.sat, merged[-1].start_s, s.end_s)
        else:
            merged.append(s)
    return merged


def serving_candidates(c: Constellation, station: GroundStation, start_s: float,
                       horizon_s: float,
                       min_elevation_deg: float = DEFAULT_MIN_ELEVATION_DEG) -> list[Sat]:
    """Every satellite that serves the station (under :func:`choose_serving`) between
    ``start_s`` and ``start_s + horizon_s``, in node-id order: the links the emulator
    pre-creates for it."""
    if horizon_s <= 0:
        return []
    end_s = start_s + horizon_s
    windows = contact_windows(c, station, start_s, end_s, min_elevation_deg)
    segs = serving_timeline(c, station, windows, start_s, end_s, min_elevation_deg)
    return sorted({s.sat for s in segs if s.sat is not None}, key=c.node_id)


def slant_range_at_elevation_m(altitude_m: float, elevation_deg: float,
                               station_alt_m: float = 0.0) -> float:
    """Distance from a station (``station_alt_m``) to a satellite at ``altitude_m`` seen at
    ``elevation_deg`` above its horizon, on the model's sphere: a contact starts at the
    minimum elevation, so this is the ground link's length then."""
    r_g = EARTH_RADIUS_M + station_alt_m
    r_s = EARTH_RADIUS_M + altitude_m
    e = math.radians(elevation_deg)
    return math.sqrt(r_s ** 2 - (r_g * math.cos(e)) ** 2) - r_g * math.sin(e)


def handovers(segments: list[Segment]) -> list[Handover]:
    """Gateway changes between consecutive segments (including loss and return of contact)."""
    return [Handover(b.start_s, a.sat, b.sat) for a, b in zip(segments, segments[1:])]


def serving_at(segments: list[Segment], t_s: float) -> Sat | None:
    """The gateway at ``t_s`` according to ``segments`` (None outside them or out of view)."""
    for s in segments:
        if s.start_s <= t_s < s.end_s:
            return s.sat
    return None


def city_station(name: str, alt_m: float = 0.0, label: str | None = None) -> GroundStation:
    """A station at the city ``name`` (see :func:`topo.cities.lookup`); KeyError if unknown."""
    from topo.cities import lookup
    city = lookup(name)
    return GroundStation(label or city.name, city.lat_deg, city.lon_deg, alt_m)


def first_gateway(c: Constellation, station: GroundStation, t_s: float,
                  min_elevation_deg: float = DEFAULT_MIN_ELEVATION_DEG,
                  horizon_s: float = 86_400.0, step_s: float = DEFAULT_STEP_S) -> Sat | None:
    """The gateway at ``t_s`` (:func:`choose_serving` with no current satellite), or with
    none in view the highest satellite at the first sample (``step_s`` apart) where one is;
    None if no satellite clears the minimum within ``horizon_s``."""
    sats = c.satellites()
    chunk = max(2, int(c.period_s / step_s))
    for k0 in range(0, int(horizon_s / step_s) + 1, chunk):
        ts = t_s + step_s * np.arange(k0, min(k0 + chunk, int(horizon_s / step_s) + 1))
        el = elevations_deg(c, station, ts)
        hit = np.flatnonzero((el >= min_elevation_deg).any(axis=1))
        if hit.size:
            return sats[choose_serving(None, el[hit[0]], min_elevation_deg)]
    return None
