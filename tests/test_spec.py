"""The constellation spec: one value, written once, read by every process of a run."""

import json
import re
import subprocess
import sys

import pytest

from controller.routing import Router
from node_app.planner import plan_grid_job
from topo.config import from_dict
from topo.constellation import Constellation
from topo.link_model import LinkModel
from topo.spec import (Clock, ConstellationSpec, LinkState, SpecError, parse_grid,
                       read_link_state, write_link_state)

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_round_trip_keeps_every_field(tmp_path):
    spec = from_dict({"grid": "6x7", "altitude_km": 600, "inclination_deg": 53, "phasing": 1,
                      "seam": False, "outage_lat_deg": 70, "lossy_band_deg": 5,
                      "link": {"tx_power_w": 2}, "rate_scale": 0.5, "start_time_s": 30,
                      "time_factor": 60, "ground": [[2, 3], [1, 1]]}).spec()
    path = spec.save(str(tmp_path / "spec.json"))
    again = ConstellationSpec.load(path)
    assert again == spec
    assert again.constellation == Constellation(planes=6, sats_per_plane=7, altitude_m=600e3,
                                                inclination_deg=53, phasing=1,
                                                outage_lat_deg=70, lossy_band_deg=5, seam=False)
    assert again.link == LinkModel(tx_power_w=2)
    assert again.shaping.rate_scale == 0.5
    assert again.clock == Clock(start_s=30, time_factor=60)
    assert again.ground == ((2, 3), (1, 1))


@pytest.mark.parametrize("mutate, field", [
    (lambda o: o["constellation"].update(wobble=1), "spec.constellation.wobble"),
    (lambda o: o["constellation"].update(planes=2), "spec.constellation"),
    (lambda o: o["link"].update(bandwidth_hz=-1), "spec.link"),
    (lambda o: o.update(ground=[[9, 9]]), "ground"),
    (lambda o: o.update(ground="1,1"), "spec.ground"),
    (lambda o: o.update(version=99), "version"),
    (lambda o: o.update(stations=[{"name": "x", "lat_deg": 91, "lon_deg": 0}]), "spec.stations[1].lat_deg"),
    (lambda o: o.update(stations=[{"name": "x", "lat_deg": 1, "lon": 0}]), "spec.stations[1].lon"),
    (lambda o: o.update(stations=[{"lat_deg": 1, "lon_deg": 0}]), "spec.stations[1].name"),
    (lambda o: o.update(stations=[{"name": "a", "lat_deg": 1, "lon_deg": 0}] * 2), "stations"),
    (lambda o: o.update(min_elevation_deg="high"), "spec.min_elevation_deg"),
    (lambda o: o.update(ground_link={"gain": 1}), "spec.ground_link.gain"),
])
def test_bad_spec_is_rejected_naming_the_field(mutate, field):
    obj = ConstellationSpec.for_grid(5, 5).to_json()
    mutate(obj)
    with pytest.raises(SpecError, match=re.escape(field)):
        ConstellationSpec.from_json(obj)


def test_placed_stations_are_in_the_spec_with_their_positions(tmp_path):
    """Placed stations: the spec keeps the first gateways in ``ground`` and adds each
    station's name, position and address, the minimum elevation and the ground link."""
    cfg = from_dict({"grid": "5x5", "min_elevation_deg": 20, "ground_link": {"tx_power_w": 5},
                     "ground_stations": [{"name": "pole", "lat_deg": 89.5, "lon_deg": -10,
                                          "alt_m": 120}, {"city": "Tokyo"}]})
    spec = cfg.spec()
    obj = json.loads(open(spec.save(str(tmp_path / "spec.json"))).read())
    assert [(s["k"], s["name"], s["lat_deg"], s["lon_deg"], s["alt_m"], s["ip"])
            for s in obj["stations"]][0] == (1, "pole", 89.5, -10, 120, "10.0.0.101")
    assert obj["stations"][1]["name"] == "Tokyo" and 35 < obj["stations"][1]["lat_deg"] < 36
    assert obj["ground"] == [list(g) for g in cfg.ground] and len(obj["ground"]) == 2
    assert obj["min_elevation_deg"] == 20 and obj["ground_link"]["tx_power_w"] == 5
    again = ConstellationSpec.load(str(tmp_path / "spec.json"))
    assert again == spec and again.stations == tuple(cfg.stations())
    from view.model import topology  # a reader of the spec alone draws them where they are
    drawn = topology(again)["ground"]
    assert [(g["name"], g["lat"], g["lon"]) for g in drawn][0] == ("pole", 89.5, -10)
    old = dict(obj)  # a spec written before the fields existed: pinned stations only
    for key in ("stations", "min_elevation_deg", "ground_link"):
        old.pop(key)
    assert ConstellationSpec.from_json(old).stations == ()


def test_unreadable_spec_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "spec.json"
    bad.write_bytes(b"\xff\x00 not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        ConstellationSpec.load(str(bad))
    with pytest.raises(SpecError, match="No such file"):
        ConstellationSpec.load(str(tmp_path / "missing.json"))


def test_parse_grid_is_one_rule():
    assert parse_grid("10x12") == (10, 12)
    assert parse_grid(" 5X7 ") == (5, 7)
    assert parse_grid([4, 5]) == (4, 5)
    for bad in ("2x5", "5x", "axb", [5], [True, 5], "5x5x5"):
        with pytest.raises(SpecError, match="grid"):
            parse_grid(bad)
    with pytest.raises(SpecError, match="at most 64"):
        parse_grid("100x3", max_axis=64)


def test_clock_advances_from_its_epoch():
    clock = Clock(start_s=100.0, time_factor=60.0, epoch_unix_s=1000.0)
    assert clock.at(1000.0) == 100.0
    assert clock.at(1002.5) == 100.0 + 150.0
    assert Clock(start_s=7.0).at(5e9) == 7.0  # no epoch: time stands still


def test_link_state_prefers_the_controller_view_over_the_model(tmp_path):
    c = Constellation(planes=5, sats_per_plane=5, outage_lat_deg=50)
    path = str(tmp_path / "link_state.json")
    spec = ConstellationSpec(constellation=c, link_state_path=path)
    model = spec.link_state()  # no file yet: the outage model at the clock's time
    assert model.source == "model" and model.down == frozenset(c.down_links(0.0)) and model.down
    link = frozenset({(1, 1), (1, 2)})
    write_link_state(path, 12.5, [link], generation=3)
    state = spec.link_state()
    assert state == LinkState(12.5, frozenset({link}), "controller")
    assert read_link_state(str(tmp_path / "nope.json")) is None
    router = spec.router(state)
    assert router.t_s == 12.5 and router.down == frozenset({link})


def test_seam_reaches_the_planner():
    """A Walker-star seam changes hop distances: the spec carries it into the plan."""
    star = ConstellationSpec(constellation=Constellation(5, 5, seam=False))
    args = dict(minsat=1, maxsat=5, collectors=6, seed=1)
    on_star = plan_grid_job(star.constellation, router=star.router(), **args)
    on_torus = plan_grid_job(Constellation(5, 5), **args)
    routed = sum(len(Router(star.constellation).route(c, m).path) - 1
                 for c, m in on_star.allocations)
    assert on_star.distance == routed
    assert on_star.distance != on_torus.distance


def test_loopback_job_is_planned_on_the_config_spec(tmp_path):
    """The coordinator (a separate process) plans on the run's spec, not on a grid string:
    with ``seam: false`` its reported distance is the seam's, as the dry run's."""
    cfg = tmp_path / "star.yaml"
    cfg.write_text("grid: 5x5\nseam: false\n")
    job = ["-mi", "1", "-ma", "5", "-c", "6", "-s", "1", "--json"]

    def run(*args):
        res = subprocess.run([sys.executable, "-m", "node_app.job", *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])
    dry = run("--config", str(cfg), *job, "--dry-run")
    torus = run("--grid", "5x5", *job, "--dry-run")
    out = run("--config", str(cfg), *job, "--loopback", "--results", str(tmp_path / "r"))
    assert out["status"] == "ok"
    assert out["distance"] == dry["distance"] != torus["distance"]
    assert out["plan"]["allocations"] == dry["allocations"]
    assert out["plan"]["link_state"] == "model" and out["plan"]["links_down"] == 0
