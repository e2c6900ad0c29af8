"""The ground job CLI's planning interface: ``python3 -m node_app.job --dry-run``."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = json.loads((Path(__file__).parent / "reference_ci_values.json").read_text())


def run_job(*args):
    return subprocess.run([sys.executable, "-m", "node_app.job", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_dry_run_json_matches_the_reference_ci_case():
    for seed in (1, 4):
        for reducetype in ("los", "center"):
            out = run_job("--grid", "11x11", "-a", "bipartite", "-r", reducetype, "-s", str(seed),
                          "-mi", "3", "-ma", "8", "-c", "15", "--dry-run", "--json")
            assert out.returncode == 0, out.stderr
            lines = out.stdout.strip().splitlines()
            assert len(lines) == 1
            plan = json.loads(lines[0])
            for key in ("reducer", "los", "allocations", "allocator", "distance",
                        "reduce_distance", "cost"):
                assert key in plan
            assert [plan["distance"], plan["reduce_distance"]] == REFERENCE[f"{seed}-{reducetype}"]
            assert plan["allocator"] == "bipartite" and plan["los"] == [1, 1]
            assert len(plan["allocations"]) == 15
            collectors = [tuple(c) for c, _ in plan["allocations"]]
            mappers = [tuple(m) for _, m in plan["allocations"]]
            assert len(set(collectors)) == len(set(mappers)) == 15
            assert not set(collectors) & set(mappers)
            assert plan["cost"] > 0


def test_dry_run_table_is_the_default_output():
    out = run_job("--grid", "5x5", "-mi", "1", "-ma", "4", "-c", "3", "-s", "2", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "collector" in out.stdout and "distance=" in out.stdout


def test_random_seed_is_reported_so_the_plan_can_be_repeated():
    first = json.loads(run_job("-a", "random", "-c", "5", "--dry-run", "--json").stdout)
    again = json.loads(run_job("-a", "random", "-c", "5", "-s", str(first["seed"]),
                               "--dry-run", "--json").stdout)
    assert again["allocations"] == first["allocations"]


@pytest.mark.parametrize("args, message", [
    (["--grid", "2x2"], "grid"),
    (["--grid", "elevenbyeleven"], "--grid"),
    (["-mi", "0"], "outside"),
    (["-ma", "12"], "outside"),
    (["-c", "19"], "collectors"),
    (["-a", "fastest"], "allocator"),
    (["-r", "middle"], "reducer"),
    (["-s", "notanumber"], "seed"),
    (["-d", "/nonexistent/job.json"], "--data"),
    (["--no-such-flag"], "unrecognized"),
])
def test_bad_input_gives_one_line_and_exit_2(args, message):
    out = run_job(*args, "--dry-run", "--json")
    assert out.returncode == 2
    assert out.stdout == ""
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert message in out.stderr


def test_malformed_job_data_is_refused(tmp_path):
    bad = tmp_path / "job.json"
    bad.write_text("{not json")
    out = run_job("-d", str(bad), "--dry-run", "--json")
    assert out.returncode == 2 and "invalid JSON" in out.stderr and "Traceback" not in out.stderr
    good = tmp_path / "good.json"
    good.write_text('{"filename": "x.txt"}')
    out = run_job("-d", str(good), "--dry-run", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["job_data"] == {"filename": "x.txt"}


@pytest.mark.parametrize("text, message", [
    ("grid: 5x5\nfrobnicate: 3\n", "frobnicate: unknown key"),
    ("grid: 5x5\ninclination_deg: 400\n", "inclination_deg"),
    ("grid: [5\n", "not valid YAML"),
    ("- just\n- a list\n", "mapping"),
    ("grid: 2x9\n", "grid"),
])
def test_malformed_config_is_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "testbed.yaml"
    path.write_text(text)
    out = run_job("--config", str(path), "-mi", "1", "-ma", "5", "-c", "4", "--dry-run", "--json")
    assert out.returncode == 2 and out.stdout == ""
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_config_sets_grid_los_and_orbit(tmp_path):
    path = tmp_path / "testbed.yaml"
    path.write_text("grid: 5x7\nground: [[2, 3]]\ninclination_deg: 53\n")
    args = ("-mi", "1", "-ma", "5", "-c", "4", "-s", "3", "-r", "los", "--cost", "physical",
            "--dry-run", "--json")
    plan = json.loads(run_job("--config", str(path), *args).stdout)
    assert plan["grid"] == "5x7" and plan["los"] == [2, 3] and plan["reducer"] == [2, 3]
    # Inclination changes cross-plane lengths, hence the physical path lengths.
    path.write_text("grid: 5x7\nground: [[2, 3]]\ninclination_deg: 87\n")
    polar = json.loads(run_job("--config", str(path), *args).stdout)
    assert polar["distance_m"] != plan["distance_m"]
    # Flags still win over the config.
    flagged = json.loads(run_job("--config", str(path), "--grid", "6x6", "--los", "1,1", *args).stdout)
    assert flagged["grid"] == "6x6" and flagged["los"] == [1, 1]


# --- bad input for a real run: one line, exit 2, nothing started or left behind ------------
def _http_like_server():
    """A TCP server that is not a node: it answers anything with an HTTP error."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    threading.Thread(target=serve, daemon=True).start()
    return srv


@pytest.mark.parametrize("case, args, needle", [
    ("port out of range", ["--coordinator", "127.0.0.1:99999"], "port in 1..65535"),
    ("not a node", ["--coordinator", "SERVER"], "is not a node of this testbed"),
    ("malformed addr-map", ["--addr-map", "BAD_JSON"], "not a JSON address map"),
    ("binary addr-map", ["--addr-map", "BINARY"], "not a JSON address map"),
    ("addr-map of strings", ["--addr-map", "WRONG_SHAPE"], "not an address map"),
    ("results unwritable", ["--loopback", "--results", "/proc/nope"], "--results /proc/nope"),
    ("grid too big for memory", ["--loopback", "--grid", "100x100"], "GB of memory"),
    ("timeout inf", ["--loopback", "--timeout", "inf"], "--timeout inf"),
    ("timeout nan", ["--loopback", "--timeout", "nan"], "--timeout nan"),
    ("absolute job file", ["--loopback", "--job-data", '{"filename": "/etc/shadow"}'],
     "absolute paths are refused"),
    ("job file up the tree", ["--loopback", "--job-data", '{"filename": "../../etc/passwd"}'],
     "'..' is refused"),
    ("eo tile too big", ["--loopback", "--workload", "eo", "--job-data", '{"tile": 4096}'],
     "job_data.tile"),
    ("no key", ["--coordinator", "127.0.0.1:4700", "--key-file", "NO_SUCH"], "key file"),
    ("key readable by others", ["--coordinator", "127.0.0.1:4700", "--key-file", "OPEN_KEY"],
     "chmod 600"),
])
def test_run_bad_input_is_one_line_and_exit_2(tmp_path, case, args, needle):
    import os
    from node_app.auth import write_key
    key = tmp_path / "testbed.key"
    write_key(str(key))
    (tmp_path / "bad.json").write_text('{"grid": "3x3", "nodes": ')
    (tmp_path / "bin.json").write_bytes(bytes(range(256)) * 3)
    (tmp_path / "shape.json").write_text('{"grid": "3x3", "nodes": {"1,1": "x"}}')
    (tmp_path / "open.key").write_text(os.urandom(32).hex())
    (tmp_path / "open.key").chmod(0o644)
    srv = _http_like_server()
    subst = {"SERVER": f"127.0.0.1:{srv.getsockname()[1]}", "BAD_JSON": str(tmp_path / "bad.json"),
             "BINARY": str(tmp_path / "bin.json"), "WRONG_SHAPE": str(tmp_path / "shape.json"),
             "NO_SUCH": str(tmp_path / "none.key"), "OPEN_KEY": str(tmp_path / "open.key")}
    args = [subst.get(a, a) for a in args]
    if "--key-file" not in args:
        args += ["--key-file", str(key)]
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    try:
        out = subprocess.run([sys.executable, "-m", "node_app.job", "--grid", "3x3", "-mi", "1",
                              "-ma", "3", "-c", "2", "--results", str(tmp_path / "results"),
                              *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "SPACECOMP_ADDR_MAP": "", "TMPDIR": str(tmp)})
    finally:
        srv.close()
    assert out.returncode == 2, (case, out.stderr)
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: ") and needle in out.stderr, out.stderr
    assert list(tmp.iterdir()) == []          # no loopback directory was made
    assert not any((tmp_path / "results").glob("*/*"))  # nor a job's results


def test_a_loopback_run_leaves_no_directory_behind(tmp_path):
    import os
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = subprocess.run([sys.executable, "-m", "node_app.job", "--loopback", "--grid", "3x3",
                          "-mi", "1", "-ma", "3", "-c", "2", "-s", "1", "--json",
                          "--results", str(tmp_path / "results")], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "TMPDIR": str(tmp)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "ok"
    assert list(tmp.iterdir()) == []


BOX = "60,-130,20,-60"  # North America: 5 satellites of the default 11x11 at its start time


def test_geographic_aoi_dry_run_plans_the_satellites_over_the_box():
    from node_app.planner import GeoBox, geo_collectors
    from topo.spec import ConstellationSpec
    out = run_job("--grid", "11x11", "--aoi-box", BOX, "-r", "los", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    spec = ConstellationSpec.for_grid(11, 11)
    over = geo_collectors(spec.constellation, GeoBox(60, -130, 20, -60), spec.router().t_s)
    assert len(over) >= 3
    assert [tuple(c) for c, _ in plan["allocations"]] == over
    assert not {tuple(m) for _, m in plan["allocations"]} & set(over)
    assert plan["aoi"] == {"kind": "geo", "box": [60.0, -130.0, 20.0, -60.0], "count": None,
                           "ascending_only": False}
    two = json.loads(run_job("--grid", "11x11", "--aoi-box", BOX, "--aoi-count", "2",
                             "--dry-run", "--json").stdout)
    assert [tuple(c) for c, _ in two["allocations"]] == over[:2]


@pytest.mark.parametrize("args, message", [
    (["--aoi-box", "1,2,3"], "--aoi-box"),
    (["--aoi-box", "10,0,20,5"], "lr_lat"),
    (["--aoi-box", "50,200,30,10"], "longitude"),
    (["--aoi-box", "inf,0,20,5"], "--aoi-box"),
    (["--aoi-box", BOX, "--aoi-count", "0"], "--aoi-count"),
    (["--aoi-count", "3"], "needs --aoi-box"),
    (["--aoi-box", "1,1,0,2"], "no satellite"),
])
def test_geographic_aoi_bad_input_is_one_line_and_exit_2(args, message):
    for mode in (["--dry-run"], ["--coordinator", "127.0.0.1:9"]):
        if mode != ["--dry-run"] and message == "no satellite":
            continue  # the coordinator plans at submission; the ground only checks the box
        out = run_job(*args, *mode, "--json")
        assert out.returncode == 2, (mode, out.stderr)
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        assert message in out.stderr


def test_geographic_submit_carries_the_box_and_the_coordinator_plans_it():
    from types import SimpleNamespace
    from node_app import job, protocol as P
    from node_app.coordinator import _plan
    from node_app.planner import GeoBox, plan_geo_job
    from node_app.job_run import build_submit
    from topo.spec import ConstellationSpec
    args = job.build_parser().parse_args(["--grid", "11x11", "--aoi-box", BOX, "--aoi-count", "4",
                                          "--ascending-only", "-s", "1", "--los", "1,1"])
    ext, fixed = build_submit(args, None, "j1")
    assert ext["aoi"] == {"kind": "geo", "count": 4}
    fixed = P.SubmitFixed.decode(fixed.encode())  # the bytes on the wire
    assert (fixed.ul_lat, fixed.ul_lon, fixed.lr_lat, fixed.lr_lon) == (60, -130, 20, -60)
    assert fixed.ascending_only
    spec = ConstellationSpec.for_grid(11, 11)
    plan = _plan(SimpleNamespace(spec=spec, sat=(1, 1)), ext, fixed, None)
    expected = plan_geo_job(spec.constellation, GeoBox(60, -130, 20, -60), t_s=plan.extra["t_s"],
                            ascending_only=True, count=4, router=spec.router())
    assert plan.allocations == expected.allocations and 1 <= len(plan.allocations) <= 4
    grid_ext, grid_fixed = build_submit(job.build_parser().parse_args(["-s", "3", "--los", "1,1"]),
                                      None, "j2")
    assert grid_ext["aoi"]["kind"] == "grid" and grid_fixed.ul_lat == 0.0
