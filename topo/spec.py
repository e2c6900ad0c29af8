"""The constellation spec: one value that every process of a run reads.

A run (an emulated testbed, a loopback constellation, a simulation) is described by one
:class:`ConstellationSpec`: the geometry and outage model (:class:`Constellation`), the
link physics (:class:`LinkModel`), how model rates become shaped rates (:class:`Shaping`),
the ground stations' line-of-sight satellites, and the constellation clock
(:class:`Clock`).  It is computed once, written once into the run directory as
``spec.json`` (:data:`SPEC_FILE`), and the controller, the node daemons, the coordinator's
planner, the ground CLI and the experiments only read it.

What changes while a run goes on (the constellation time, the links that are down) is a
:class:`LinkState`.  In the emulator the controller writes its own view of it (the time its
routes are for and the links its switches report down) to ``link_state_path``, so a job is
planned on exactly the routes that are installed; without a controller (loopback,
simulation) the spec's clock and outage model give it.

Pure model: no I/O except the explicit ``save``/``load``/``read_link_state``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field

from topo.cli import UsageError, check_keys, load_document
from topo.addressing import station_ip
from topo.constellation import Constellation
from topo.ground_stations import DEFAULT_MIN_ELEVATION_DEG, GROUND_LINK, GroundStation
from topo.link_model import LinkModel

SPEC_FILE = "spec.json"
LINK_STATE_FILE = "link_state.json"
SPEC_VERSION = 1


class SpecError(UsageError):
    """A spec (or a grid string) that cannot be read; the message says which field."""


def parse_grid(value, max_axis: int | None = None) -> tuple[int, int]:
    """``"5x7"`` / ``"5X7"`` / ``[5, 7]`` -> ``(planes, sats_per_plane)``.

    The one grid parser of the project.  max_axis: the largest planes or satellites per
    plane the caller can honour (None: no bound beyond the torus's minimum of 3).
    Raises :class:`SpecError` naming the value."""
    original = value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
        if m:
            value = [int(m.group(1)), int(m.group(2))]
    hi = "" if max_axis is None else f" and at most {max_axis}"
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        n, m = value
        if 3 <= n and 3 <= m and (max_axis is None or (n <= max_axis and m <= max_axis)):
            return n, m
    raise SpecError(f"grid {original!r}: expected PLANESxSATS with each at least 3{hi}, e.g. 5x5")


@dataclass(frozen=True)
class Shaping:
    """How the model's link rates become the emulator's shaped rates.

    rate_scale: factor applied to the Shannon capacity.
    rate_cap_mbps: ceiling of a shaped rate (Mbit/s).
    rate_floor_mbps: lowest rate of a link that is up (Mbit/s).
    ground_rate_mbps: rate of ground links; None leaves them unshaped.
    """

    rate_scale: float = 1.0
    rate_cap_mbps: float = 1000.0
    rate_floor_mbps: float = 0.01
    ground_rate_mbps: float | None = None


@dataclass(frozen=True)
class Clock:
    """Constellation time: ``start_s`` at wall time ``epoch_unix_s``, then advancing
    ``time_factor`` constellation seconds per wall second.

    epoch_unix_s: None while time stands still (a static run) at ``start_s``.
    """

    start_s: float = 0.0
    time_factor: float = 1.0
    epoch_unix_s: float | None = None

    def at(self, unix_s: float | None = None) -> float:
        """Constellation time at wall time ``unix_s`` (default: now)."""
        if self.epoch_unix_s is None:
            return self.start_s
        now = time.time() if unix_s is None else unix_s
        return self.start_s + self.time_factor * max(0.0, now - self.epoch_unix_s)


@dataclass(frozen=True)
class LinkState:
    """The network at one moment: routes are for constellation time ``t_s`` with the
    ISLs in ``down`` (each ``frozenset({a, b})``) down.  ``source`` says who knew it:
    ``"controller"`` (the routes installed) or ``"model"`` (clock and outage model)."""

    t_s: float
    down: frozenset = frozenset()
    source: str = "model"


@dataclass(frozen=True)
class ConstellationSpec:
    """Everything that defines one run's constellation (see the module docstring).

    ground: line-of-sight satellite ``(sat, orb)`` of each ground station, in order (for
        placed stations: each one's first gateway, at the clock's start).
    stations: the placed ground stations (:class:`GroundStation`: name, lat/lon/alt), in
        the order of ``ground``; empty when stations are pinned to satellites.
    min_elevation_deg: a satellite serves a placed station only above this elevation.
    ground_link: the ground RF link model (Ka band, ``GROUND_LINK_DEFAULTS``).
    link_state_path: where the run's controller keeps its view of time and down links
        (None: no controller; the clock and the outage model give the link state).
    """

    constellation: Constellation = field(default_factory=Constellation)
    link: LinkModel = field(default_factory=LinkModel)
    shaping: Shaping = field(default_factory=Shaping)
    clock: Clock = field(default_factory=Clock)
    ground: tuple = ((1, 1),)
    link_state_path: str | None = None
    stations: tuple = ()
    min_elevation_deg: float = DEFAULT_MIN_ELEVATION_DEG
    ground_link: LinkModel = GROUND_LINK

    def __post_init__(self):
        c = self.constellation
        ground = tuple(tuple(int(v) for v in g) for g in self.ground)
        for g in ground:
            if len(g) != 2 or not c.contains(g):
                raise SpecError(f"ground: satellite {list(g)} outside the "
                                f"{c.planes}x{c.sats_per_plane} grid")
        object.__setattr__(self, "ground", ground)
        stations = tuple(self.stations)
        if stations and len(stations) != len(ground):
            raise SpecError(f"stations: {len(stations)} placed stations but {len(ground)} "
                            f"ground gateways")
        object.__setattr__(self, "stations", stations)

    @classmethod
    def for_grid(cls, planes: int, sats_per_plane: int, **kwargs) -> "ConstellationSpec":
        """The default constellation (and link model) on a ``planes x sats_per_plane`` grid."""
        return cls(constellation=Constellation(planes=planes, sats_per_plane=sats_per_plane),
                   **kwargs)

    @property
    def grid(self) -> tuple[int, int]:
        return (self.constellation.planes, self.constellation.sats_per_plane)

    @property
    def grid_text(self) -> str:
        return f"{self.grid[0]}x{self.grid[1]}"

    # --- the state of the network at a moment --------------------------------------------
    def time_at(self, unix_s: float | None = None) -> float:
        """Constellation time at wall time ``unix_s`` (default now), from the clock."""
        return self.clock.at(unix_s)

    def model_link_state(self, t_s: float) -> LinkState:
        """The outage model's link state at constellation time ``t_s``."""
        return LinkState(t_s, frozenset(self.constellation.down_links(t_s)), "model")

    def link_state(self, unix_s: float | None = None) -> LinkState:
        """The link state now: the controller's view when the run has one and it can be
        read, otherwise the clock and the outage model."""
        if self.link_state_path:
            state = read_link_state(self.link_state_path)
            if state is not None:
                return state
        return self.model_link_state(self.time_at(unix_s))

    def router(self, state: LinkState | None = None):
        """The routing rule (:class:`controller.routing.Router`) for ``state`` (default:
        the clock's start time, the outage model's links down then)."""
        from controller.routing import Router
        state = state or self.model_link_state(self.clock.start_s)
        return Router(self.constellation, state.t_s, state.down)

    # --- serialisation --------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"version": SPEC_VERSION,
                "constellation": dataclasses.asdict(self.constellation),
                "link": dataclasses.asdict(self.link),
                "shaping": dataclasses.asdict(self.shaping),
                "clock": dataclasses.asdict(self.clock),
                "ground": [list(g) for g in self.ground],
                "link_state_path": self.link_state_path,
                "stations": [{"k": k, "name": st.name, "lat_deg": st.lat_deg,
                              "lon_deg": st.lon_deg, "alt_m": st.alt_m, "ip": station_ip(k)}
                             for k, st in enumerate(self.stations, start=1)],
                "min_elevation_deg": self.min_elevation_deg,
                "ground_link": dataclasses.asdict(self.ground_link)}

    @classmethod
    def from_json(cls, obj) -> "ConstellationSpec":
        """Inverse of :meth:`to_json`; SpecError naming the field on bad input."""
        if not isinstance(obj, dict):
            raise SpecError("spec: expected a JSON object")
        if obj.get("version") != SPEC_VERSION:
            raise SpecError(f"spec version {obj.get('version')!r}: this code reads {SPEC_VERSION}")
        parts = {}
        for name, kind in (("constellation", Constellation), ("link", LinkModel),
                           ("shaping", Shaping), ("clock", Clock)):
            value = obj.get(name, {})
            if not isinstance(value, dict):
                raise SpecError(f"spec.{name}: expected an object")
            check_keys(value, {f.name for f in dataclasses.fields(kind)}, prefix=f"spec.{name}.",
                       error=SpecError)
            try:
                parts[name] = kind(**value)
            except (TypeError, ValueError) as e:
                raise SpecError(f"spec.{name}: {e}") from None
        ground = obj.get("ground", [[1, 1]])
        if not isinstance(ground, list) or not all(
                isinstance(g, list) and len(g) == 2 and all(isinstance(v, int) for v in g)
                for g in ground):
            raise SpecError("spec.ground: expected a list of [sat, orb] pairs")
        path = obj.get("link_state_path")
        if path is not None and not isinstance(path, str):
            raise SpecError("spec.link_state_path: expected a string or null")
        extra = _ground_fields(obj)
        return cls(ground=tuple(tuple(g) for g in ground), link_state_path=path, **parts,
                   **extra)

    def save(self, path: str) -> str:
        """Write the spec (atomically) to ``path``; returns ``path``."""
        return write_json_atomic(path, self.to_json(), indent=1)

    @classmethod
    def load(cls, path: str) -> "ConstellationSpec":
        return cls.from_json(load_document(path, "spec", json.load, "JSON", error=SpecError))


STATION_KEYS = {"k", "name", "lat_deg", "lon_deg", "alt_m", "ip"}


def _ground_fields(obj: dict) -> dict:
    """``stations``, ``min_elevation_deg`` and ``ground_link`` of a spec's JSON (each
    optional: a spec written before they existed has pinned stations only)."""
    out = {}
    raw = obj.get("stations", [])
    if not isinstance(raw, list) or not all(isinstance(st, dict) for st in raw):
        raise SpecError("spec.stations: expected a list of objects")
    stations = []
    for i, st in enumerate(raw, start=1):
        check_keys(st, STATION_KEYS, prefix=f"spec.stations[{i}].", error=SpecError)
        if not isinstance(st.get("name"), str):
            raise SpecError(f"spec.stations[{i}].name: expected a string")
        try:
            stations.append(GroundStation(st["name"], st.get("lat_deg"), st.get("lon_deg"),
                                          st.get("alt_m", 0.0)))
        except ValueError as e:
            raise SpecError(f"spec.stations[{i}].{e}") from None
    out["stations"] = tuple(stations)
    el = obj.get("min_elevation_deg", DEFAULT_MIN_ELEVATION_DEG)
    if isinstance(el, bool) or not isinstance(el, (int, float)) or not 0 <= el < 90:
        raise SpecError(f"spec.min_elevation_deg {el!r}: expected a number in [0, 90)")
    out["min_elevation_deg"] = float(el)
    link = obj.get("ground_link", dataclasses.asdict(GROUND_LINK))
    if not isinstance(link, dict):
        raise SpecError("spec.ground_link: expected an object")
    check_keys(link, {f.name for f in dataclasses.fields(LinkModel)}, prefix="spec.ground_link.",
               error=SpecError)
    try:
        out["ground_link"] = LinkModel(**link)
    except (TypeError, ValueError) as e:
        raise SpecError(f"spec.ground_link: {e}") from None
    return out


def write_json_atomic(path: str, obj, indent: int | None = None) -> str:
    """Write ``obj`` as JSON to ``path`` so a reader never sees half a file (a temporary
    file renamed over it); returns ``path``.  Every file a run shares between processes
    (spec, link state, controller view, ground state, ready files) is written this way."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)
    os.replace(tmp, path)
    return path


# --- the controller's view of the link state (written by controller/app.py) -----------------
def write_link_state(path: str, t_s: float, down, generation: int = 0) -> None:
    """The link-state file: routes for ``t_s`` with ``down`` ISLs down."""
    write_json_atomic(path, {"t_s": t_s, "generation": generation,
                             "links_down": sorted(sorted(list(s) for s in link) for link in down)})


def read_link_state(path: str) -> LinkState | None:
    """The controller's view, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
        down = frozenset(frozenset(tuple(int(v) for v in sat) for sat in link)
                         for link in obj["links_down"])
        return LinkState(float(obj["t_s"]), down, "controller")
    except (OSError, ValueError, KeyError, TypeError):
        return None

