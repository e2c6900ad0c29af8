"""Constellation geometry: the satellite grid, ISL lengths, positions and outages.

Pure model, no I/O.  A satellite is ``(sat, orb)``, both 1-based, sat first (the
reference implementation's public order); ``sat`` indexes the position in its
plane (1..M), ``orb`` the plane (1..N).  Node id = ``(orb-1)*M + sat``.

The grid is a torus: in-plane neighbours ``(sat±1, orb)``, cross-plane
neighbours ``(sat, orb±1)``, wrapping on both axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EARTH_RADIUS_M = 6_371_000.0
EARTH_MU_M3_S2 = 3.986004418e14
EARTH_ROTATION_RAD_S = 7.2921159e-5

Sat = tuple[int, int]  # (sat, orb), 1-based


@dataclass(frozen=True)
class Constellation:
    """A Walker constellation of ``planes`` orbits with ``sats_per_plane`` each.

    planes: N, number of orbital planes (MAX_ORB).
    sats_per_plane: M, satellites per plane (MAX_SAT).
    altitude_m: orbit altitude above the mean Earth radius.
    inclination_deg: orbit inclination (degrees, not radians as the reference had it).
    phasing: Walker phasing factor F (inter-plane offset 2*pi*F/(N*M)), default 0.
    outage_lat_deg: a cross-plane ISL is down while either end is above this |latitude|;
        None disables cross-over outages.
    lossy_band_deg: width of the band just below ``outage_lat_deg`` where
        cross-plane links are lossy (0 disables).
    seam: False removes the cross-plane links between plane N and plane 1
        (a Walker-star seam); default True (Walker delta, full torus).
    """

    planes: int = 11
    sats_per_plane: int = 11
    altitude_m: float = 530_000.0
    inclination_deg: float = 87.0
    phasing: float = 0.0
    outage_lat_deg: float | None = None
    lossy_band_deg: float = 0.0
    seam: bool = True

    def __post_init__(self):
        if self.planes < 3 or self.sats_per_plane < 3:
            raise ValueError(
                f"grid {self.planes}x{self.sats_per_plane}: a torus needs at least 3 planes "
                f"and 3 satellites per plane")
        if not 0 < self.altitude_m < 100_000_000:
            raise ValueError(f"altitude_m {self.altitude_m}: must be in (0, 1e8) m")
        if not 0 <= self.inclination_deg <= 180:
            raise ValueError(f"inclination_deg {self.inclination_deg}: must be in [0, 180]")
        if self.outage_lat_deg is not None and not 0 < self.outage_lat_deg <= 90:
            raise ValueError(f"outage_lat_deg {self.outage_lat_deg}: must be in (0, 90]")
        if not 0 <= self.lossy_band_deg <= 90:
            raise ValueError(f"lossy_band_deg {self.lossy_band_deg}: must be in [0, 90]")

    # --- indexing -----------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of satellites, N*M."""
        return self.planes * self.sats_per_plane

    def node_id(self, sat: Sat) -> int:
        """1-based node id of ``(sat, orb)``."""
        s, o = sat
        return (o - 1) * self.sats_per_plane + s

    def sat_of(self, node_id: int) -> Sat:
        """Inverse of :meth:`node_id`."""
        o, s = divmod(node_id - 1, self.sats_per_plane)
        return (s + 1, o + 1)

    def satellites(self) -> list[Sat]:
        """All satellites in node-id order."""
        return [self.sat_of(n) for n in range(1, self.size + 1)]

    def contains(self, sat) -> bool:
        s, o = sat
        return 1 <= s <= self.sats_per_plane and 1 <= o <= self.planes

    def wrap(self, s: int, o: int) -> Sat:
        """Fold any integer coordinates back onto the torus."""
        return ((s - 1) % self.sats_per_plane + 1, (o - 1) % self.planes + 1)

    def in_plane_neighbours(self, sat: Sat) -> list[Sat]:
        s, o = sat
        return [self.wrap(s + 1, o), self.wrap(s - 1, o)]

    def cross_plane_neighbours(self, sat: Sat) -> list[Sat]:
        s, o = sat
        out = []
        if self.seam or o < self.planes:
            out.append(self.wrap(s, o + 1))
        if self.seam or o > 1:
            out.append(self.wrap(s, o - 1))
        return out

    def neighbours(self, sat: Sat) -> list[Sat]:
        """The up to four ISL neighbours: east, west, south, north."""
        return self.in_plane_neighbours(sat) + self.cross_plane_neighbours(sat)

    def isls(self) -> list[tuple[Sat, Sat, str]]:
        """Every ISL once, as ``(a, b, kind)`` with kind ``"in"`` or ``"cross"``.

        ``a`` is the lower-indexed end: for in-plane links ``b = (sat+1, orb)``,
        for cross-plane links ``b = (sat, orb+1)`` (wrapping)."""
        links = []
        for o in range(1, self.planes + 1):
            for s in range(1, self.sats_per_plane + 1):
                links.append(((s, o), self.wrap(s + 1, o), "in"))
                if self.seam or o < self.planes:
                    links.append(((s, o), self.wrap(s, o + 1), "cross"))
        return links

    # --- hop distances on the torus -------------------------------------------------
    @staticmethod
    def ring_distance(a: int, b: int, n: int) -> int:
        d = abs(a - b) % n
        return min(d, n - d)

    def hops(self, a: Sat, b: Sat) -> int:
        """Minimal Manhattan hop count on the torus; ``hops(a, a) == 0``."""
        return (self.ring_distance(a[0], b[0], self.sats_per_plane)
                + self.ring_distance(a[1], b[1], self.planes))

    # --- orbit and link lengths ------------------------------------------------------
    @property
    def orbit_radius_m(self) -> float:
        return EARTH_RADIUS_M + self.altitude_m

    @property
    def period_s(self) -> float:
        """Orbital period T = 2*pi*sqrt(r^3/mu)."""
        return 2 * math.pi * math.sqrt(self.orbit_radius_m ** 3 / EARTH_MU_M3_S2)

    @property
    def in_plane_length_m(self) -> float:
        """Dm = r*sqrt(2(1-cos(2*pi/M))), the same for every in-plane ISL."""
        return self.orbit_radius_m * math.sqrt(2 * (1 - math.cos(2 * math.pi / self.sats_per_plane)))

    def along_orbit_angle(self, sat: int, t_s: float = 0.0, orb: int = 1) -> float:
        """theta = 2*pi*sat/M + Walker phasing of plane ``orb`` + 2*pi*t/T (radians)."""
        return (2 * math.pi * sat / self.sats_per_plane
                + 2 * math.pi * self.phasing * (orb - 1) / self.size
                + 2 * math.pi * t_s / self.period_s)

    def cross_plane_length_m(self, sat: int, t_s: float = 0.0) -> float:
        """Dn(theta) = r*sqrt(2(1-cos(2*pi/N)))*sqrt(cos^2 theta + cos^2 i sin^2 theta)."""
        theta = self.along_orbit_angle(sat, t_s)
        cos_i = math.cos(math.radians(self.inclination_deg))
        chord = self.orbit_radius_m * math.sqrt(2 * (1 - math.cos(2 * math.pi / self.planes)))
        return chord * math.sqrt(math.cos(theta) ** 2 + cos_i ** 2 * math.sin(theta) ** 2)

    def cross_plane_lengths_m(self, t_s: float = 0.0) -> list[float]:
        """Dn for sat = 1..M at time t, index 0 is sat 1."""
        return [self.cross_plane_length_m(s, t_s) for s in range(1, self.sats_per_plane + 1)]

    def link_length_m(self, a: Sat, b: Sat, t_s: float = 0.0) -> float:
        """Length of the ISL between neighbours ``a`` and ``b``."""
        if a[1] == b[1]:
            return self.in_plane_length_m
        return self.cross_plane_length_m(a[0], t_s)

    # --- positions -------------------------------------------------------------------
    def latitude_deg(self, sat: Sat, t_s: float = 0.0) -> float:
        """Sub-satellite latitude asin(sin i * sin theta), degrees."""
        theta = self.along_orbit_angle(sat[0], t_s, sat[1])
        return math.degrees(math.asin(math.sin(math.radians(self.inclination_deg)) * math.sin(theta)))

    def longitude_deg(self, sat: Sat, t_s: float = 0.0) -> float:
        """Sub-satellite longitude in [-180, 180), with Earth rotating under the orbits."""
        theta = self.along_orbit_angle(sat[0], t_s, sat[1])
        raan = 2 * math.pi * (sat[1] - 1) / self.planes
        inc = math.radians(self.inclination_deg)
        x = math.cos(raan) * math.cos(theta) - math.sin(raan) * math.sin(theta) * math.cos(inc)
        y = math.sin(raan) * math.cos(theta) + math.cos(raan) * math.sin(theta) * math.cos(inc)
        lon = math.atan2(y, x) - EARTH_ROTATION_RAD_S * t_s
        return (math.degrees(lon) + 180.0) % 360.0 - 180.0

    def ascending(self, sat: Sat, t_s: float = 0.0) -> bool:
        """True while the latitude grows (cos theta > 0 for a prograde orbit)."""
        theta = self.along_orbit_angle(sat[0], t_s, sat[1])
        return math.cos(theta) * math.sin(math.radians(self.inclination_deg)) > 0

    def positions_ecef_m(self, t_s=0.0, sats=None) -> np.ndarray:
        """Earth-fixed (ECEF) positions in metres, vectorised over time and satellites.

        t_s: constellation time, a scalar or an array of any shape.
        sats: ``(sat, orb)`` pairs to place (default: all, in node-id order).
        Returns an array of shape ``t_s.shape + (len(sats), 3)``.  The same Walker
        geometry as :meth:`latitude_deg`/:meth:`longitude_deg`: a circular orbit of radius
        ``orbit_radius_m`` in plane ``orb`` (right ascension 2*pi*(orb-1)/N), and the
        Earth turning under it at ``EARTH_ROTATION_RAD_S`` (ECEF = ECI at t = 0)."""
        t = np.asarray(t_s, dtype=float)[..., None]
        if sats is None:
            node = np.arange(self.size)
            s, o = node % self.sats_per_plane + 1, node // self.sats_per_plane + 1
        else:
            arr = np.asarray(sats, dtype=float).reshape(-1, 2)
            s, o = arr[:, 0], arr[:, 1]
        theta = (2 * np.pi * s / self.sats_per_plane
                 + 2 * np.pi * self.phasing * (o - 1) / self.size
                 + 2 * np.pi * t / self.period_s)
        raan = 2 * np.pi * (o - 1) / self.planes - EARTH_ROTATION_RAD_S * t
        inc = math.radians(self.inclination_deg)
        ct, st = np.cos(theta), np.sin(theta)
        cr, sr = np.cos(raan), np.sin(raan)
        r = self.orbit_radius_m
        return np.stack([r * (cr * ct - sr * st * math.cos(inc)),
                         r * (sr * ct + cr * st * math.cos(inc)),
                         r * st * math.sin(inc) * np.ones_like(cr)], axis=-1)

    # --- cross-over outages ------------------------------------------------------------
    def cross_plane_state(self, a: Sat, b: Sat, t_s: float = 0.0) -> str:
        """State of a cross-plane ISL: ``"up"``, ``"lossy"`` or ``"down"``.

        Down while either end is above ``outage_lat_deg``; lossy while either end is
        within ``lossy_band_deg`` below it.  In-plane links are always up."""
        if a[1] == b[1] or self.outage_lat_deg is None:
            return "up"
        lat = max(abs(self.latitude_deg(a, t_s)), abs(self.latitude_deg(b, t_s)))
        if lat > self.outage_lat_deg:
            return "down"
        if self.lossy_band_deg and lat > self.outage_lat_deg - self.lossy_band_deg:
            return "lossy"
        return "up"

    def down_links(self, t_s: float = 0.0) -> set[frozenset]:
        """The ISLs down at time t, each as ``frozenset({a, b})``."""
        return {frozenset((a, b)) for a, b, kind in self.isls()
                if kind == "cross" and self.cross_plane_state(a, b, t_s) == "down"}
