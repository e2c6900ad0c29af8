"""Ground stations on Earth: elevation, contact windows, serving satellite, config, CLI."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from topo import ground_stations as gs
from topo.cities import lookup
from topo.config import ConfigError, from_dict
from topo.constellation import Constellation
from topo.link_model import LinkModel

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
R_E = 6_371_000.0


def independent_elevation_deg(c: Constellation, sat, t_s: float, lat_deg, lon_deg, alt_m=0.0):
    """Elevation from ECEF geometry built from the scalar sub-satellite point (not the
    vectorised code under test): angle between the line of sight and the local horizon."""
    la, lo = math.radians(c.latitude_deg(sat, t_s)), math.radians(c.longitude_deg(sat, t_s))
    r = c.orbit_radius_m
    s = (r * math.cos(la) * math.cos(lo), r * math.cos(la) * math.sin(lo), r * math.sin(la))
    gla, glo = math.radians(lat_deg), math.radians(lon_deg)
    rg = R_E + alt_m
    g = (rg * math.cos(gla) * math.cos(glo), rg * math.cos(gla) * math.sin(glo), rg * math.sin(gla))
    d = [a - b for a, b in zip(s, g)]
    zenith = math.acos(sum(x * y for x, y in zip(d, g)) / (math.dist(s, g) * rg))
    return 90.0 - math.degrees(zenith)


STATIONS = [gs.GroundStation("Berlin", 52.52, 13.405, 34.0),
            gs.GroundStation("Quito", -0.22, -78.51, 2850.0),
            gs.GroundStation("Hobart", -42.88, 147.33)]


def test_ecef_positions_match_the_sub_satellite_points():
    c = Constellation(5, 7, phasing=1)
    for t in (0.0, 1234.5, 40_000.0):
        pos = c.positions_ecef_m(t)
        for i, sat in enumerate(c.satellites()):
            la, lo = math.radians(c.latitude_deg(sat, t)), math.radians(c.longitude_deg(sat, t))
            want = c.orbit_radius_m * np.array([math.cos(la) * math.cos(lo),
                                                math.cos(la) * math.sin(lo), math.sin(la)])
            assert np.allclose(pos[i], want, atol=1e-3)
    assert c.positions_ecef_m(np.zeros((4, 2))).shape == (4, 2, 35, 3)
    assert np.allclose(c.positions_ecef_m([0.0, 99.0], sats=[(3, 2)])[:, 0],
                       c.positions_ecef_m([0.0, 99.0])[:, c.node_id((3, 2)) - 1])


@pytest.mark.parametrize("station", STATIONS, ids=lambda s: s.name)
def test_windows_agree_with_an_independent_elevation_at_sampled_instants(station):
    c = Constellation(11, 11)
    span, min_el = 6 * 3600.0, 25.0
    windows = gs.contact_windows(c, station, 0.0, span, min_el)
    assert windows, "an 11x11 at 530 km passes over every latitude below 87 degrees"
    by_sat: dict = {}
    for w in windows:
        by_sat.setdefault(w.sat, []).append(w)
        assert w.start_s < w.end_s and w.capacity_bytes > 0
        for edge in (w.start_s, w.end_s):  # rise and set are where the elevation is the minimum
            if 0 < edge < span:
                el = independent_elevation_deg(c, w.sat, edge, station.lat_deg, station.lon_deg,
                                               station.alt_m)
                assert el == pytest.approx(min_el, abs=1e-3)
        fine = np.concatenate([np.linspace(w.start_s, w.end_s, 400),  # whole pass, and
                               np.clip(w.max_elevation_t_s + np.linspace(-3, 3, 3001),
                                       w.start_s, w.end_s)])  # finely around the reported peak
        peak = max(independent_elevation_deg(c, w.sat, t, station.lat_deg, station.lon_deg,
                                             station.alt_m) for t in fine)
        assert w.max_elevation_deg == pytest.approx(peak, abs=0.01)
    checked_in = checked_out = 0
    for t in np.arange(3.3, span, 37.0):  # instants unrelated to the 5 s sampling grid
        for sat in c.satellites():
            el = independent_elevation_deg(c, sat, t, station.lat_deg, station.lon_deg,
                                           station.alt_m)
            inside = any(w.start_s <= t <= w.end_s for w in by_sat.get(sat, []))
            if el > min_el + 1e-3:
                assert inside, (sat, t, el)
                checked_in += 1
            elif el < min_el - 1e-3:
                assert not inside, (sat, t, el)
                checked_out += 1
    assert checked_in > 100 and checked_out > 10_000


def test_capacity_is_the_shannon_rate_integrated_over_the_pass():
    c = Constellation(11, 11)
    st = STATIONS[0]
    w = next(w for w in gs.contact_windows(c, st, 0.0, 3 * 3600.0) if not w.clipped)
    lm = gs.GROUND_LINK
    t = np.linspace(w.start_s, w.end_s, 5000)
    d = np.array([math.dist(c.positions_ecef_m(x, [w.sat])[0], st.ecef_m()) for x in t])
    want = float(np.sum((lm.shannon_rate_bps(d)[1:] + lm.shannon_rate_bps(d)[:-1]) / 2
                        * np.diff(t))) / 8
    assert w.capacity_bytes == pytest.approx(want, rel=1e-4)
    # the documented default: about 2.38 Gbit/s at the 25-degree slant range of 530 km
    assert lm.shannon_rate_bps(1_087_000) == pytest.approx(2.38e9, rel=0.01)
    slower = gs.window_capacity_bytes(c, st, w.sat, w.start_s, w.end_s,
                                      LinkModel(**{**gs.GROUND_LINK_DEFAULTS, "bandwidth_hz": 50e6}))
    assert slower < w.capacity_bytes


def test_choose_serving_keeps_the_current_until_it_sets_then_takes_the_highest():
    assert gs.choose_serving(None, [10, 30, 60], 25) == 2
    assert gs.choose_serving(1, [10, 30, 60], 25) == 1        # still up: kept
    assert gs.choose_serving(1, [10, 24.9, 60], 25) == 2      # set: the highest
    assert gs.choose_serving(1, [10, 24.9, 20], 25) is None   # none in view
    assert gs.choose_serving(None, [25.0, 3], 25) == 0        # the minimum itself counts


@pytest.mark.parametrize("station", STATIONS[:2], ids=lambda s: s.name)
def test_serving_timeline_follows_the_policy(station):
    c = Constellation(11, 11)
    span, min_el = 6 * 3600.0, 25.0
    windows = gs.contact_windows(c, station, 0.0, span, min_el)
    segs = gs.serving_timeline(c, station, windows, 0.0, span, min_el)
    assert segs[0].start_s == 0.0 and segs[-1].end_s == pytest.approx(span)
    for a, b in zip(segs, segs[1:]):
        assert a.end_s == b.start_s and a.sat != b.sat
    hos = gs.handovers(segs)
    assert len(hos) == len(segs) - 1 and hos
    if station.name == "Berlin":  # at 52 degrees passes overlap: satellite-to-satellite handovers
        assert any(h.old and h.new for h in hos)
    el = lambda sat, t: independent_elevation_deg(c, sat, t, station.lat_deg,  # noqa: E731
                                                  station.lon_deg, station.alt_m)
    for h in hos:
        if h.old is not None:  # a gateway is only given up when it sets
            assert el(h.old, h.t_s) == pytest.approx(min_el, abs=1e-3)
        if h.new is not None:  # ... and the new one is the highest in view then
            others = [el(s, h.t_s + 1e-3) for s in c.satellites() if s != h.old]
            assert el(h.new, h.t_s + 1e-3) == pytest.approx(max(others), abs=1e-6)
    for t in np.arange(11.0, span, 53.0):
        sat = gs.serving_at(segs, t)
        if sat is None:
            assert max(el(s, t) for s in c.satellites()) < min_el + 1e-3
        else:
            assert el(sat, t) >= min_el - 1e-3


def test_cities_resolve_by_name_alternate_spelling_and_country():
    berlin = lookup("berlin")
    assert (berlin.country, round(berlin.lat_deg), round(berlin.lon_deg)) == ("DE", 53, 13)
    assert lookup("München").name == "Munich"
    assert lookup("Springfield, US").country == "US"
    with pytest.raises(KeyError, match="Atlantis"):
        lookup("Atlantis of the Sea")


def test_config_places_stations_and_keeps_the_pinned_form():
    assert from_dict({"grid": "5x5", "ground": [[2, 3]]}).ground == [[2, 3]]
    assert from_dict({}).ground == [[1, 1]] and from_dict({}).ground_stations == []
    cfg = from_dict({"grid": "11x11", "min_elevation_deg": 30, "ground_stations": [
        {"city": "Berlin"}, {"name": "pole-ish", "lat_deg": -60, "lon_deg": 10.5, "alt_m": 100}]})
    assert [s.name for s in cfg.stations()] == ["Berlin", "pole-ish"]
    assert cfg.stations()[1].alt_m == 100.0 and cfg.min_elevation_deg == 30.0
    c = cfg.constellation()
    for st, g in zip(cfg.stations(), cfg.ground):  # ground = each station's gateway at t=0
        want = gs.first_gateway(c, st, 0.0, 30.0)
        assert tuple(g) == want
    berlin_el = gs.elevations_deg(c, cfg.stations()[0], 0.0)
    assert berlin_el[c.node_id(tuple(cfg.ground[0])) - 1] == pytest.approx(berlin_el.max())


@pytest.mark.parametrize("raw, key", [
    ({"ground_stations": [{"lat_deg": 91, "lon_deg": 0}]}, "ground_stations[0].lat_deg"),
    ({"ground_stations": [{"city": "Berlin"}, {"lat_deg": 0, "lon_deg": -181}]},
     "ground_stations[1].lon_deg"),
    ({"ground_stations": [{"lat_deg": "north", "lon_deg": 0}]}, "ground_stations[0].lat_deg"),
    ({"ground_stations": [{"lat_deg": 10}]}, "ground_stations[0].lon_deg"),
    ({"ground_stations": [{"city": "Nowhereville Xyz"}]}, "ground_stations[0].city"),
    ({"ground_stations": [{"city": "Berlin", "lat_deg": 1}]}, "ground_stations[0].city"),
    ({"ground_stations": [{"city": "Berlin", "elev": 1}]}, "ground_stations[0].elev"),
    ({"ground_stations": []}, "ground_stations"),
    ({"ground_stations": [{"city": "Berlin"}], "ground": [[9, 9]]}, "ground"),
    ({"min_elevation_deg": 90}, "min_elevation_deg"),
    ({"handover_horizon_s": -1}, "handover_horizon_s"),
    ({"ground_link": {"bandwidth_hz": -1}}, "ground_link.bandwidth_hz"),
])
def test_bad_stations_fail_naming_the_key(raw, key):
    with pytest.raises(ConfigError) as exc:
        from_dict(raw)
    assert str(exc.value).startswith(key + ":") or str(exc.value).startswith(key + " ")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "topo.ground_windows", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_json_line():
    p = _cli("--station", "Berlin", "--hours", "3", "--json")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["grid"] == "11x11" and out["min_elevation_deg"] == 25.0
    assert out["windows"]
    for w in out["windows"]:
        assert {"sat", "start_s", "end_s", "max_elevation_deg", "capacity_bytes"} <= set(w)
        assert len(w["sat"]) == 2 and 0 <= w["start_s"] < w["end_s"] <= 3 * 3600
    st = gs.city_station("Berlin")
    want = gs.contact_windows(Constellation(11, 11), st, 0.0, 3 * 3600.0)
    assert [w["sat"] for w in out["windows"]] == [list(w.sat) for w in want]
    other = json.loads(_cli("--station", "52.52,13.41", "--hours", "3", "--grid", "5x7",
                            "--json").stdout)
    assert other["grid"] == "5x7" and other["windows"] != out["windows"]


@pytest.mark.parametrize("args, says", [
    (("--station", "Nowhereville Xyz"), "--station"),
    (("--station", "95,10"), "--station"),
    (("--station", "Berlin", "--hours", "0"), "--hours"),
    (("--station", "Berlin", "--grid", "2x2"), "grid"),
    (("--hours", "3",), "--station"),
])
def test_cli_bad_input_is_one_line_exit_2(args, says):
    p = _cli(*args)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and says in p.stderr


def test_slant_range_at_elevation_matches_the_geometry():
    """The ground link's length at an elevation (the rate at a contact's start) against
    the ECEF distance of satellites at the elevation the geometry gives them."""
    c = Constellation(planes=8, sats_per_plane=8, altitude_m=530e3)
    st = gs.GroundStation("s", 48.0, 11.0, 500.0)
    t = np.linspace(0, 6000, 61)
    el = gs.elevations_deg(c, st, t)
    d = gs.slant_range_m(c, st, t)
    seen = el > 0
    assert seen.sum() > 20
    for e, dist in zip(el[seen], d[seen]):
        assert gs.slant_range_at_elevation_m(c.altitude_m, float(e), st.alt_m) == \
            pytest.approx(float(dist), rel=1e-9)
    assert gs.slant_range_at_elevation_m(530e3, 90.0) == pytest.approx(530e3)


def test_serving_candidates_are_the_timelines_gateways():
    c = Constellation(planes=6, sats_per_plane=6)
    st = gs.GroundStation("s", 52.5, 13.4)
    w = gs.contact_windows(c, st, 0.0, 20_000.0)
    segs = gs.serving_timeline(c, st, w, 0.0, 20_000.0)
    cands = gs.serving_candidates(c, st, 0.0, 20_000.0)
    assert set(cands) == {s.sat for s in segs if s.sat} and len(cands) > 2
    assert cands == sorted(cands, key=c.node_id)
    assert gs.serving_candidates(c, st, 0.0, 0.0) == []
