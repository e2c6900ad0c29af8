"""Testbed configuration: YAML in, a validated :class:`TestbedConfig` out.

Validation happens before anything is built: an unknown key or an out-of-range
value raises :class:`ConfigError` whose message names the key.  Example::

    grid: 5x5                # PLANESxSATS_PER_PLANE (N x M)
    altitude_km: 530
    inclination_deg: 87
    link: {bandwidth_hz: 10.0e9, tx_power_w: 5, tx_gain_dbi: 62.5,
           rx_gain_dbi: 62.5, noise_temp_k: 300, wavelength_m: 1.55e-6}
    rate_scale: 1.0          # htb rate = Shannon capacity x rate_scale ...
    rate_cap_mbps: 1000      # ... capped here (reported when it bites)
    time_factor: 60          # constellation seconds per wall second
    outage_lat_deg: 75       # cross-plane ISLs down above this |latitude|; null = never
    controller: osken        # osken | ryu
    ground: [[1, 1]]         # line-of-sight satellite [sat, orb] of each ground station
    # ... or stations placed on Earth, handed over between satellites as they move:
    ground_stations: [{name: Berlin, lat_deg: 52.52, lon_deg: 13.40, alt_m: 34}, {city: Tokyo}]
    min_elevation_deg: 25    # a satellite serves a station only above this elevation
    ground_link: {bandwidth_hz: 250.0e6}   # RF ground-link model (topo.ground_stations)
    servers: [local, root@10.0.0.2]   # several servers (topo.servers); or local:2 (test rig)
    placement: {0: [1, 2], 1: [3]}    # optional: server index -> its planes
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from topo import ground_stations as gs
from topo.cli import UsageError, check_keys, load_yaml_mapping
from topo.constellation import Constellation
from topo.link_model import LinkModel
from topo import servers as srv
from topo.spec import Clock, ConstellationSpec, Shaping, SpecError
from topo.spec import parse_grid as _parse_grid

from topo.addressing import MAX_AXIS  # noqa: E402  (255: one address octet per axis)


class ConfigError(UsageError):
    """A configuration value is unknown or out of range; the message names the key."""


LINK_KEYS = {f.name for f in dataclasses.fields(LinkModel)}


@dataclass
class TestbedConfig:
    """Everything a testbed run needs; units in the names.

    planes / sats_per_plane: grid N x M (>= 3 each, <= 255: one octet of 10.<orb>.<sat>.x
        each; interface names stay within Linux's 15 characters up to there).
    link: LinkModel keyword arguments (Friis/Shannon parameters).
    rate_scale: factor applied to the Shannon capacity before shaping.
    rate_cap_mbps: htb ceiling; links above it are capped and the cap is reported.
    rate_floor_mbps: lowest rate given to htb (a link "up" must carry something).
    ground_rate_mbps: rate of ground links; None leaves them unshaped.
    shaping: False builds an unshaped network.
    time_factor: constellation seconds per wall second for the dynamics updater.
    step_s: wall seconds between dynamics steps.
    route_with_time: dynamics steps also move the controller's routes to the new time.
    start_time_s: constellation time at build.
    outage_lat_deg / lossy_band_deg / lossy_loss_pct: cross-over outage model.
    controller: "osken" or "ryu".
    controller_timeout_s: bound on waiting for the controller to route everything.
    require_delay: fail when netem (propagation delay) is not available.
    fast_teardown: expedite kernel RCU during teardown (restored afterwards).
    lock_wait_s: how long to wait for another testbed on this machine to finish.
    keep_logs: keep the run directory (controller log, state, private OVS instances' logs)
        after a clean teardown.
    ovs_instances: "auto", or how many private Open vSwitch instances hold the bridges
        (0: the machine's own instance; k > 0: k private ones, each a block of planes;
        auto: 0 up to 400 satellites, else one per 100, see topo.bridges).
    ovs_socket_buffers: with the userspace datapath, give ovs-vswitchd's one send socket
        and its ports' receive sockets buffers large enough that only a link's own queue
        limits it (topo.ovs_buffers; otherwise the queues of all links share 208 KiB and a
        full one drops packets, SYNs included, on every other link); restored at teardown.
    ground: line-of-sight satellite [sat, orb] of each ground station; with
        ``ground_stations`` it is derived: each station's gateway at ``start_time_s``.
    ground_stations: stations placed on Earth, each ``{name, lat_deg, lon_deg, alt_m}``
        (a ``{city: ...}`` entry is resolved to this form when the config is read).
    min_elevation_deg: a satellite can serve a placed station only above this elevation.
    ground_link: LinkModel overrides of the ground RF link (``gs.GROUND_LINK_DEFAULTS``).
    servers: None (this machine only), ``"local:N"`` or a list of SSH destinations whose
        first entry is ``local`` (``topo.servers.parse_servers``).
    placement: None (contiguous blocks of planes) or ``{server index: [planes]}``.
    handover_horizon_s: placed stations get a pre-created link to every satellite that
        serves them within this many constellation seconds of ``start_time_s`` (others'
        links are created at their handover).
    """

    planes: int = 3
    sats_per_plane: int = 3
    altitude_km: float = 530.0
    inclination_deg: float = 87.0
    phasing: float = 0.0
    seam: bool = True
    link: dict = field(default_factory=dict)
    rate_scale: float = 1.0
    rate_cap_mbps: float = 1000.0
    rate_floor_mbps: float = 0.01
    ground_rate_mbps: float | None = None
    shaping: bool = True
    time_factor: float = 1.0
    step_s: float = 1.0
    start_time_s: float = 0.0
    dynamics: bool = False
    route_with_time: bool = True
    outage_lat_deg: float | None = None
    lossy_band_deg: float = 0.0
    lossy_loss_pct: float = 1.0
    controller: str = "osken"
    controller_timeout_s: float = 60.0
    require_delay: bool = False
    fast_teardown: bool = True
    lock_wait_s: float = 600.0
    keep_logs: bool = False
    ovs_instances: int | str = "auto"
    ovs_socket_buffers: bool = True
    ground: list = field(default_factory=lambda: [[1, 1]])
    ground_stations: list = field(default_factory=list)
    min_elevation_deg: float = gs.DEFAULT_MIN_ELEVATION_DEG
    ground_link: dict = field(default_factory=dict)
    servers: object = None
    placement: dict | None = None
    handover_horizon_s: float = 86_400.0

    # --- derived model objects ------------------------------------------------------------
    def constellation(self) -> Constellation:
        return Constellation(planes=self.planes, sats_per_plane=self.sats_per_plane,
                             altitude_m=self.altitude_km * 1000.0,
                             inclination_deg=self.inclination_deg, phasing=self.phasing,
                             outage_lat_deg=self.outage_lat_deg,
                             lossy_band_deg=self.lossy_band_deg, seam=self.seam)

    def link_model(self) -> LinkModel:
        return LinkModel(**self.link)

    def stations(self) -> list[gs.GroundStation]:
        """The placed ground stations (empty when stations are pinned by ``ground``)."""
        return [gs.GroundStation(**st) for st in self.ground_stations]

    def ground_link_model(self) -> LinkModel:
        return LinkModel(**{**gs.GROUND_LINK_DEFAULTS, **self.ground_link})

    def spec(self) -> ConstellationSpec:
        """The run's constellation spec (time stands at ``start_time_s`` until a run's
        clock starts)."""
        return ConstellationSpec(
            constellation=self.constellation(), link=self.link_model(),
            shaping=Shaping(rate_scale=self.rate_scale, rate_cap_mbps=self.rate_cap_mbps,
                            rate_floor_mbps=self.rate_floor_mbps,
                            ground_rate_mbps=self.ground_rate_mbps),
            clock=Clock(start_s=self.start_time_s, time_factor=self.time_factor),
            ground=tuple(self.ground_sats), stations=tuple(self.stations()),
            min_elevation_deg=self.min_elevation_deg, ground_link=self.ground_link_model())

    @property
    def ground_sats(self) -> list[tuple[int, int]]:
        return [tuple(g) for g in self.ground]

    def server_specs(self) -> list[srv.ServerSpec]:
        """The servers of the run (one, this machine, unless ``servers`` says otherwise)."""
        return srv.parse_servers(self.servers)

    def plane_servers(self) -> dict[int, int]:
        """``{orb: server index}``: ``placement``, or contiguous blocks of planes."""
        n = len(self.server_specs())
        if self.placement is not None:
            return srv.explicit_placement(self.placement, self.planes, n)
        return srv.block_placement(self.planes, n)

    @property
    def grid(self) -> str:
        return f"{self.planes}x{self.sats_per_plane}"


# (key, check, message) -- ranges are what the model and the emulator can honour.
def _num(lo, hi, lo_open=False, none_ok=False):
    def check(v):
        if v is None:
            return none_ok
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return (lo < v if lo_open else lo <= v) and v <= hi
    return check


def _int(lo, hi):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


_bool = lambda v: isinstance(v, bool)  # noqa: E731

CHECKS = {
    "planes": (_int(3, MAX_AXIS), f"an integer in [3, {MAX_AXIS}]"),
    "sats_per_plane": (_int(3, MAX_AXIS), f"an integer in [3, {MAX_AXIS}]"),
    "altitude_km": (_num(100, 50_000), "a number in [100, 50000] km"),
    "inclination_deg": (_num(0, 180), "a number in [0, 180] degrees"),
    "phasing": (_num(0, 1e6), "a number >= 0"),
    "seam": (_bool, "true or false"),
    "rate_scale": (_num(0, 1e6, lo_open=True), "a number > 0"),
    "rate_cap_mbps": (_num(0, 100_000, lo_open=True), "a number in (0, 100000] Mbit/s"),
    "rate_floor_mbps": (_num(0.001, 1000), "a number in [0.001, 1000] Mbit/s"),
    "ground_rate_mbps": (_num(0, 100_000, lo_open=True, none_ok=True), "null or a number > 0"),
    "shaping": (_bool, "true or false"),
    "time_factor": (_num(0, 1e6, lo_open=True), "a number in (0, 1e6]"),
    "step_s": (_num(0.05, 3600), "a number in [0.05, 3600] s"),
    "start_time_s": (_num(0, 1e9), "a number >= 0 s"),
    "dynamics": (_bool, "true or false"),
    "route_with_time": (_bool, "true or false"),
    "outage_lat_deg": (_num(0, 90, lo_open=True, none_ok=True), "null or a number in (0, 90]"),
    "lossy_band_deg": (_num(0, 90), "a number in [0, 90]"),
    "lossy_loss_pct": (_num(0, 100), "a number in [0, 100]"),
    "controller": (lambda v: v in ("osken", "ryu"), "osken or ryu"),
    "controller_timeout_s": (_num(1, 3600), "a number in [1, 3600] s"),
    "require_delay": (_bool, "true or false"),
    "fast_teardown": (_bool, "true or false"),
    "lock_wait_s": (_num(0, 86400), "a number in [0, 86400] s"),
    "keep_logs": (_bool, "true or false"),
    "ovs_instances": (lambda v: v == "auto" or _int(0, 64)(v), "auto or an integer in [0, 64]"),
    "ovs_socket_buffers": (_bool, "true or false"),
    "min_elevation_deg": (_num(0, 89.9), "a number in [0, 89.9] degrees"),
    "handover_horizon_s": (_num(0, 1e7), "a number in [0, 1e7] s"),
}

LINK_CHECKS = {
    "bandwidth_hz": _num(0, 1e15, lo_open=True),
    "tx_power_w": _num(0, 1e6, lo_open=True),
    "tx_gain_dbi": _num(-100, 200),
    "rx_gain_dbi": _num(-100, 200),
    "noise_temp_k": _num(0, 1e6, lo_open=True),
    "wavelength_m": _num(0, 10, lo_open=True),
}

KNOWN_KEYS = set(CHECKS) | {"grid", "link", "ground", "altitude_m", "ground_stations",
                             "ground_link", "servers", "placement"}
STATION_KEYS = ("name", "lat_deg", "lon_deg", "alt_m", "city")


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(v):
    """PyYAML reads ``1.0e9`` (no exponent sign, YAML 1.1) as a string: accept it as a number."""
    if isinstance(v, str) and _FLOAT_RE.fullmatch(v.strip()):
        return float(v)
    return v


def parse_grid(value) -> tuple[int, int]:
    """``"5x5"`` / ``"5x7"`` / ``[5, 7]`` -> (planes, sats_per_plane); ConfigError otherwise."""
    try:
        return _parse_grid(value, MAX_AXIS)
    except SpecError as e:
        raise ConfigError(f"grid: {e}") from None


def from_dict(raw: dict) -> TestbedConfig:
    """Validate ``raw`` (parsed YAML) and return the config; ConfigError names the bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping of keys to values")
    check_keys(raw, KNOWN_KEYS, error=ConfigError)
    cfg = TestbedConfig()
    values = dict(raw)
    if "grid" in values:
        cfg.planes, cfg.sats_per_plane = parse_grid(values.pop("grid"))
    if "altitude_m" in values:
        if "altitude_km" in values:
            raise ConfigError("altitude_m: give altitude_km or altitude_m, not both")
        alt = values.pop("altitude_m")
        if not _num(100_000, 50_000_000)(alt):
            raise ConfigError(f"altitude_m: {alt!r} must be a number in [1e5, 5e7] m")
        cfg.altitude_km = alt / 1000.0
    cfg.link = _link(values.pop("link", {}), "link")
    cfg.ground_link = _link(values.pop("ground_link", {}), "ground_link")
    stations = values.pop("ground_stations", None)
    ground = values.pop("ground", [[1, 1]])
    if not isinstance(ground, list) or not 0 <= len(ground) <= 150:
        raise ConfigError("ground: must be a list of at most 150 [sat, orb] pairs")
    for g in ground:
        if not (isinstance(g, (list, tuple)) and len(g) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in g)):
            raise ConfigError(f"ground: {g!r} must be a [sat, orb] pair of integers")
    cfg.ground = [list(g) for g in ground]
    cfg.servers = values.pop("servers", None)
    cfg.placement = values.pop("placement", None)
    for key, v in values.items():
        v = _coerce(v)
        check, what = CHECKS[key]
        if not check(v):
            raise ConfigError(f"{key}: {v!r} out of range, must be {what}")
        setattr(cfg, key, float(v) if isinstance(getattr(cfg, key), float)
                and isinstance(v, int) else v)
    for g in cfg.ground:
        if not (1 <= g[0] <= cfg.sats_per_plane and 1 <= g[1] <= cfg.planes):
            raise ConfigError(f"ground: satellite {g} outside the {cfg.grid} grid")
    try:
        cfg.plane_servers()
    except srv.PlacementError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.placement is not None and cfg.servers is None:
        raise ConfigError("placement: needs a servers list")
    if len(cfg.server_specs()) > 1:
        if stations is not None:
            raise ConfigError("servers: placed ground_stations (handovers) need one server; "
                              "pin ground stations with ground: [[sat, orb]]")
        if cfg.lossy_band_deg > 0:
            raise ConfigError("servers: lossy_band_deg needs one server (its nftables loss "
                              "is applied on this machine only)")
    if cfg.controller_timeout_s < 1:
        raise ConfigError("controller_timeout_s: must be >= 1 s")
    try:  # the core models check their own ranges too; report those by key as well
        cfg.spec()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        cfg.ground_link_model()
    except ValueError as exc:
        raise ConfigError(f"ground_link: {exc}") from exc
    if stations is not None:
        _place_stations(cfg, stations, raw.get("ground"))
    return cfg


def _link(link, key: str) -> dict:
    """A validated mapping of LinkModel parameters under ``key``."""
    link = link or {}
    if not isinstance(link, dict):
        raise ConfigError(f"{key}: must be a mapping of link-model parameters")
    link = {k: _coerce(v) for k, v in link.items()}
    check_keys(link, LINK_CHECKS, prefix=f"{key}.", error=ConfigError)
    for k, v in link.items():
        if not LINK_CHECKS[k](v):
            raise ConfigError(f"{key}.{k}: {v!r} out of range")
    return dict(link)


def _station(i: int, entry) -> dict:
    """One ``ground_stations`` entry -> ``{name, lat_deg, lon_deg, alt_m}`` (ConfigError naming
    ``ground_stations[i].key``)."""
    where = f"ground_stations[{i}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping {{name, lat_deg, lon_deg, alt_m}} or {{city}}")
    check_keys(entry, STATION_KEYS, prefix=f"{where}.", error=ConfigError)
    entry = {k: _coerce(v) for k, v in entry.items()}
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 64):
        raise ConfigError(f"{where}.name: {name!r} must be a non-empty string of at most 64 characters")
    for k, lo, hi in (("lat_deg", -90, 90), ("lon_deg", -180, 180), ("alt_m", -500, 100_000)):
        if k in entry and not _num(lo, hi)(entry[k]):
            raise ConfigError(f"{where}.{k}: {entry[k]!r} must be a number in [{lo}, {hi}]")
    alt = float(entry.get("alt_m", 0.0))
    if "city" in entry:
        if "lat_deg" in entry or "lon_deg" in entry:
            raise ConfigError(f"{where}.city: give a city or lat_deg/lon_deg, not both")
        try:
            st = gs.city_station(entry["city"], alt, name)
        except KeyError as exc:
            raise ConfigError(f"{where}.city: {exc.args[0]}") from None
    else:
        for k in ("lat_deg", "lon_deg"):
            if k not in entry:
                raise ConfigError(f"{where}.{k}: missing (or give a city)")
        st = gs.GroundStation(name or f"station{i + 1}", float(entry["lat_deg"]),
                              float(entry["lon_deg"]), alt)
    return dataclasses.asdict(st)


def resolve_stations(stations) -> list[dict]:
    """``ground_stations`` entries -> ``[{name, lat_deg, lon_deg, alt_m}]`` (cities looked up);
    ConfigError naming ``ground_stations[i].key`` for a bad entry."""
    if not isinstance(stations, list) or not 1 <= len(stations) <= 150:
        raise ConfigError("ground_stations: must be a list of 1 to 150 stations")
    return [_station(i, e) for i, e in enumerate(stations)]


def _place_stations(cfg: TestbedConfig, stations, given_ground) -> None:
    """Resolve ``ground_stations`` and derive ``ground`` (each station's first gateway)."""
    cfg.ground_stations = resolve_stations(stations)
    c = cfg.constellation()
    ground = []
    for i, st in enumerate(cfg.stations()):
        gw = gs.first_gateway(c, st, cfg.start_time_s, cfg.min_elevation_deg)
        if gw is None:
            raise ConfigError(f"ground_stations[{i}]: no satellite of the {cfg.grid} grid rises "
                              f"above min_elevation_deg {cfg.min_elevation_deg} within 24 h")
        ground.append(list(gw))
    if given_ground is not None and [list(g) for g in given_ground] != ground:
        raise ConfigError("ground: give ground (pinned satellites) or ground_stations "
                          "(placed on Earth, gateways derived), not both")
    cfg.ground = ground


def load(path: str) -> TestbedConfig:
    """Read and validate a YAML file."""
    return from_dict(load_yaml_mapping(path, "config", error=ConfigError))
