"""Emulator configuration, addressing and shaping plan: no root, no network."""

import subprocess
import sys
from pathlib import Path

import pytest

from topo import addressing as A
from topo.config import ConfigError, from_dict, load, parse_grid
from topo.constellation import Constellation
from topo.link_model import LinkModel
from topo import shaping

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def test_defaults_are_valid():
    cfg = from_dict({})
    assert cfg.grid == "3x3" and cfg.controller == "osken" and cfg.ground == [[1, 1]]


def test_full_config_round_trip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("grid: 5x7\naltitude_km: 600\ninclination_deg: 53\nrate_scale: 0.5\n"
                 "rate_cap_mbps: 200\ntime_factor: 60\noutage_lat_deg: 70\nlossy_band_deg: 5\n"
                 "controller: ryu\nground: [[1, 1], [3, 2]]\n"
                 "link: {bandwidth_hz: 1.0e9, tx_power_w: 2}\n")
    cfg = load(str(p))
    assert (cfg.planes, cfg.sats_per_plane) == (5, 7)
    assert cfg.constellation().altitude_m == 600_000.0
    assert cfg.link_model().bandwidth_hz == 1e9
    assert cfg.ground_sats == [(1, 1), (3, 2)]


@pytest.mark.parametrize("raw, key", [
    ({"gird": "3x3"}, "gird"),
    ({"grid": "2x5"}, "grid"),
    ({"grid": "5by5"}, "grid"),
    ({"altitude_km": -1}, "altitude_km"),
    ({"inclination_deg": 200}, "inclination_deg"),
    ({"rate_scale": 0}, "rate_scale"),
    ({"rate_cap_mbps": "fast"}, "rate_cap_mbps"),
    ({"time_factor": -2}, "time_factor"),
    ({"outage_lat_deg": 95}, "outage_lat_deg"),
    ({"controller": "pox"}, "controller"),
    ({"link": {"bandwith_hz": 1e9}}, "link.bandwith_hz"),
    ({"link": {"tx_power_w": 0}}, "link.tx_power_w"),
    ({"ground": [[9, 9]]}, "ground"),
    ({"ground": [[1]]}, "ground"),
    ({"shaping": "yes"}, "shaping"),
])
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ConfigError) as exc:
        from_dict(raw)
    assert str(exc.value).startswith(key + ":"), str(exc.value)


def test_parse_grid():
    assert parse_grid("10x12") == (10, 12)
    assert parse_grid([4, 5]) == (4, 5)
    with pytest.raises(ConfigError):
        parse_grid("256x3")


def test_axis_limit_is_what_addresses_and_interface_names_allow():
    # A Starlink-like 72x22 shell fits; so does the address plan's limit of one octet.
    assert parse_grid("72x22") == (72, 22)
    cfg = from_dict({"grid": "72x22"})
    assert (cfg.planes, cfg.sats_per_plane) == (72, 22)
    assert from_dict({"planes": 255, "sats_per_plane": 255}).grid == "255x255"
    for bad in ("256x3", "3x256", [256, 256]):
        with pytest.raises(ConfigError, match="grid"):
            from_dict({"grid": bad})
    for key in ("planes", "sats_per_plane"):
        with pytest.raises(ConfigError, match=key):
            from_dict({key: A.MAX_AXIS + 1})
    # Interface names at the limit (all ground stations on one satellite) fit Linux's 15.
    assert A.max_intf_name_len(A.MAX_AXIS, A.MAX_AXIS) == A.IFNAMSIZ == 15
    assert A.max_intf_name_len(1000, 1000) > A.IFNAMSIZ
    assert A.sat_ip((255, 255)) == "10.255.255.1"


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("grid: [3, \n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(str(p))
    with pytest.raises(ConfigError):
        load(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize("args, needle", [
    (["--grid", "2x2", "--check"], "grid"),
    (["--controller", "pox"], "controller"),
    (["/nonexistent.yaml"], "nonexistent"),
])
def test_run_bad_input_exits_2_without_traceback(args, needle):
    res = subprocess.run([PY, "-m", "topo.run", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr


def test_run_rejects_unknown_key_before_building(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("grid: 3x3\nwarp_drive: true\n")
    res = subprocess.run([PY, "-m", "topo.run", str(p), "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "warp_drive" in res.stderr and "Traceback" not in res.stderr


def test_addressing_plan():
    c = Constellation(planes=5, sats_per_plane=4)
    assert A.sat_ip((3, 2)) == "10.2.3.1"
    assert A.sat_of_ip("10.2.3.1") == (3, 2) and A.sat_of_ip("10.2.3.101") == (3, 2)
    assert A.mac_of("10.2.3.1") == "02:00:0a:02:03:01"
    assert A.dpid_of(c, (3, 2)) == c.node_id((3, 2)) == 7
    for sat in c.satellites():
        for nbr in c.neighbours(sat):
            port = A.port_towards(c, sat, nbr)
            assert A.neighbour_on_port(c, sat, port) == nbr
    # Both ends of every ISL face each other.
    for a, pa, b, pb, _kind in A.isl_ports(c):
        assert A.neighbour_on_port(c, a, pa) == b and A.neighbour_on_port(c, b, pb) == a
    assert [p for _k, _l, p in A.ground_ports([(1, 1), (1, 1), (2, 1)])] == [6, 7, 6]


def test_shaping_plan_follows_the_link_model_and_reports_the_cap():
    c = Constellation(planes=20, sats_per_plane=20, outage_lat_deg=75)
    lm = LinkModel()
    shapes = shaping.plan(c, lm, 0.0, rate_scale=1.0, rate_cap_bps=100e6)
    for s in shapes.values():
        model = lm.shannon_rate_bps(c.link_length_m(s.a, s.b, 0.0))
        assert s.model_bps == pytest.approx(model)
        assert s.rate_bps == pytest.approx(min(model, 100e6))
        assert s.capped == (model > 100e6)
        assert s.delay_s == pytest.approx(s.length_m / 299_792_458.0)
    summ = shaping.summary(shapes.values())
    assert summ["capped_links"] > 0 and summ["down_links"] == len(c.down_links(0.0))
    cmds = shaping.shape_commands(list(shapes.values())[:1], netem=True)
    assert any(" htb " in x for x in cmds) and any("netem delay" in x for x in cmds)


def test_topo_class_builds_the_torus():
    from topo.topology import ConstellationTopo
    t = ConstellationTopo(planes=4, sats_per_plane=3, ground=[(1, 1), (2, 3)])
    assert len(t.switches()) == 12 and len(t.hosts()) == 14
    assert len(t.links()) == 12 + 24 + 2
    info = t.nodeInfo("h2_3")
    assert info["ip"] == "10.3.2.1/8"


def test_example_config_loads():
    cfg = load(str(ROOT / "topo" / "example.yaml"))
    assert cfg.grid == "5x5" and cfg.dynamics and cfg.outage_lat_deg == 75
    assert cfg.link_model().bandwidth_hz == 1e10


def test_bridge_rows_become_one_ovsdb_transaction_with_every_port_numbered():
    from topo.ovsdb_ops import BridgeRow, add_bridges
    rows = [BridgeRow(f"s{i}_1", i, tuple((p, f"s{i}_1-eth{p}") for p in range(1, 6)),
                      "tcp:127.0.0.1:6653", "netdev") for i in range(1, 1585)]
    ops = add_bridges(rows)
    by_name = {op["uuid-name"]: op for op in ops if "uuid-name" in op}
    assert len(by_name) == sum(1 for op in ops if "uuid-name" in op)  # names unique
    mutate = ops[-2]
    assert mutate["op"] == "mutate" and ["next_cfg", "+=", 1] in mutate["mutations"]
    added = mutate["mutations"][0][2][1]
    assert len(added) == 1584
    for ref in added:
        br = by_name[ref[1]]["row"]
        assert br["other_config"][1][0] == ["datapath-id", f"{int(br['name'][1:-2]):016x}"]
        for pref in br["ports"][1]:
            port = by_name[pref[1]]["row"]
            intf = by_name[port["interfaces"][1]]["row"]
            assert intf["name"] == port["name"] and port["name"].startswith(br["name"] + "-eth")
            assert intf["ofport_request"] == int(port["name"].rpartition("eth")[2])
        assert by_name[br["controller"][1]]["row"]["target"] == "tcp:127.0.0.1:6653"
    assert ops[-1] == {"op": "select", "table": "Open_vSwitch", "where": [],
                       "columns": ["next_cfg"]}


def test_ovs_transactions_fit_arg_max_and_keep_each_bridge_whole():
    import os

    from topo.build import arg_batches
    groups = [["--", "add-br", f"s{i}_1"] + ["--", "add-port", f"s{i}_1", "x" * 200] * 5
              for i in range(3000)]
    batches = arg_batches(groups)
    assert len(batches) > 1 and sum(map(len, batches)) == sum(map(len, groups))
    limit = os.sysconf("SC_ARG_MAX")
    for b in batches:
        assert sum(len(a) + 9 for a in b) < limit
        assert b[:2] == ["--", "add-br"]  # a bridge's commands never split
    assert arg_batches(groups[:10]) == [sum(groups[:10], [])]  # small: one transaction
