"""The constellation view: its model, a real job's progress from real node logs, the page
in Debian's chromium (live and replayed), a link taken down in an emulated testbed, and
the per-update cost at 20x20."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from controller.routing import Router
from topo.constellation import Constellation
from topo.spec import Clock, ConstellationSpec
from view import model
from view.jobs import JobTracker
from view.live import RunView
from view.recorder import read_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _browser_or_skip():
    from view.browser import chromium_path
    if chromium_path() is None:
        pytest.skip("chromium is not installed (setup.sh)")
    pytest.importorskip("playwright.sync_api")


# --- pure model ----------------------------------------------------------------------------
def test_frame_marks_controller_down_links_and_keeps_rates():
    spec = ConstellationSpec.for_grid(4, 4)
    c = spec.constellation
    keys = model.link_keys(c)
    shapes = model.model_shapes(spec, 0.0)
    down = {keys[3]}
    f = model.frame(c, keys, 0.0, shapes, down)
    assert len(f["state"]) == len(keys) == 2 * c.size
    assert f["state"][3] == "d" and f["state"].count("d") == 1
    assert f["rate_mbps"][3] == round(shapes[keys[3]].rate_bps / 1e6, 3) > 0
    # sub-satellite points agree with the constellation model
    s = c.satellites()[5]
    assert f["lat"][5] == pytest.approx(c.latitude_deg(s, 0.0), abs=0.01)
    assert f["lon"][5] == pytest.approx(c.longitude_deg(s, 0.0), abs=0.01)


def test_next_hop_table_follows_the_routing_rule_with_outages():
    c = Constellation(planes=5, sats_per_plane=5)
    down = {frozenset(((1, 1), (2, 1))), frozenset(((1, 1), (1, 2)))}
    router = Router(c, 0.0, down)
    table = model.next_hop_table(router, c)
    sats = c.satellites()
    for a in range(c.size):
        for b in range(c.size):
            path = model.follow(table, a, b)
            assert [sats[i] for i in path] == list(router.route(sats[a], sats[b]).path)


def test_controller_next_hops_convert():
    c = Constellation(planes=3, sats_per_plane=3)
    state = {"next_hops": {str(d): [0 if t == d else (t if t != 5 else -1)
                                    for t in range(1, 10)] for d in range(1, 10)}}
    table = model.controller_next_hops(state, c)
    assert table[0][0] == 0 and table[0][1] == 1 and table[0][4] == -1
    assert model.follow(table, 0, 4) is None and model.follow(table, 0, 2) == [0, 2]
    assert model.controller_next_hops({"next_hops": {"1": []}}, c) is None


def test_job_tracker_roles_bytes_and_done():
    c = Constellation(planes=5, sats_per_plane=5)
    keys = model.link_keys(c)
    router = Router(c)
    t = JobTracker(route=lambda a, b: list(router.route(a, b).path),
                   link_index={k: i for i, k in enumerate(keys)})
    ev = lambda action, node, what, frm, to, **kw: {  # noqa: E731
        "time": kw.pop("time", 1.0), "node": list(node), "action": action, "job": 7,
        "msgid": kw.pop("msgid", "m"), "from": list(frm) if frm else None,
        "to": list(to) if to else None, "what": what, **kw}
    coord, col, mapper, red = (1, 1), (3, 1), (3, 3), (2, 2)
    for e in [ev("recv", coord, "SubmitJob", None, coord),
              ev("send", coord, "AssignCollector", coord, col),
              ev("send", coord, "AssignMapper", coord, mapper),
              ev("send", coord, "AssignReducer", coord, red),
              ev("send", col, "collect", col, mapper, bytes=1000),
              ev("send", mapper, "PhaseDone", mapper, col, msgid=None),  # confirmation only
              ev("send", col, "PhaseDone", col, coord),
              {"garbage": True}, ev("send", coord, "odd", coord, None)]:
        t.feed(e)
    index = {s: i for i, s in enumerate(c.satellites())}
    j = t.to_json(index)[0]
    assert j["status"] == "running" and j["reducer"] == index[red]
    assert j["collectors"] == [[index[col], index[mapper]]]
    assert j["done"] == {"collector": [index[col]], "mapper": [], "reducer": []}
    hops = router.route(col, mapper).hops
    assert len(j["link_bytes"]) == hops and all(b == 1000 for _k, b in j["link_bytes"])
    t.feed(ev("send", mapper, "PhaseDone", mapper, coord))
    t.feed(ev("send", red, "JobResult", red, coord))
    t.feed(ev("send", coord, "JobResult", coord, None, time=3.0))
    j = t.to_json(index)[0]
    assert j["status"] == "done" and j["t_end"] == 3.0
    assert j["done"]["mapper"] == [index[mapper]] and j["done"]["reducer"] == [index[red]]


def test_replay_cli_without_recording_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "view.replay", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no recording" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- a real job on the loopback, the page in chromium --------------------------------------------
def _loopback_job(lc, results):
    cmd = [sys.executable, "-m", "node_app.job", "--addr-map", os.path.join(lc.dir, "addrs.json"),
           "--spec", os.path.join(lc.dir, "spec.json"), "--log-dir", lc.log_dir,
           "-mi", "1", "-ma", "4", "-c", "4", "-s", "2", "--results", str(results), "--json"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_live_page_and_replay_of_a_loopback_job(tmp_path):
    _browser_or_skip()
    from node_app.loopback import LoopbackConstellation
    from view.browser import open_page

    spec = ConstellationSpec(constellation=Constellation(planes=4, sats_per_plane=4,
                                                         outage_lat_deg=60.0),
                             clock=Clock(time_factor=30.0, epoch_unix_s=time.time()))
    c = spec.constellation
    with LoopbackConstellation(4, 4, str(tmp_path / "lb"), spec=spec) as lc:
        view = RunView(spec, view_dir=str(tmp_path / "view"), port=0, echo=lambda m: None).start()
        view.add_log_dir(lc.log_dir)
        try:
            # the API
            topo = json.loads(urllib.request.urlopen(view.url + "api/topology", timeout=10).read())
            assert len(topo["sats"]) == 16 and len(topo["links"]) == 32
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(view.url + "api/route?src=0&dst=99", timeout=10)
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(view.url + "assets/../model.py", timeout=10)
            with open_page(view.url) as (page, errors):
                page.wait_for_function("document.body.dataset.frames > 0", timeout=5000)
                assert page.locator("#map circle.sat").count() == 16
                assert page.locator("#grid circle.sat").count() == 16
                assert page.locator("#grid .link").count() == 32
                assert page.locator("#map .link").count() == 32
                # the page's down links are the model's at the frame's time
                frame = json.loads(urllib.request.urlopen(view.url + "api/frame").read())
                assert frame["state"].count("d") == len(c.down_links(frame["t_s"]))
                out = _loopback_job(lc, tmp_path / "res")
                page.wait_for_function(
                    "document.querySelector('#jobs .st') && "
                    "document.querySelector('#jobs .st').textContent === 'done'", timeout=5000)
                text = page.locator("#jobs").inner_text()
                assert "4/4" in text and "1/1" in text
                assert page.locator("#grid .role.coll.done").count() == 4
                # a selected pair shows the route the network uses
                a, b = 0, 10
                page.click(f"#grid circle.sat[data-sat='{a}']")
                page.click(f"#grid circle.sat[data-sat='{b}']")
                page.wait_for_function("document.querySelector('#route-info b')", timeout=5000)
                sats = c.satellites()
                hops = spec.router(spec.link_state()).route(sats[a], sats[b]).hops
                assert f"{hops} hops" in page.locator("#route-info").inner_text()
                assert not errors, errors
        finally:
            view.close(str(tmp_path / "view.html"))
    topology, frames = read_run(str(tmp_path / "view"))
    assert frames and frames[-1]["jobs"][-1]["job"] == out["job_id"]
    assert frames[-1]["jobs"][-1]["bytes"]["collect"] == out["bytes"]["collect"]
    with open_page("file://" + str(tmp_path / "view.html")) as (page, errors):
        page.wait_for_function("document.body.dataset.frames > 0", timeout=5000)
        assert page.locator("#grid .link").count() == 32
        assert "done" in page.locator("#jobs").inner_text()
        page.evaluate("SpaceView.show(0)")  # back to the start: no job yet
        assert page.locator("#grid .role").count() == 0
        assert not errors, errors


def test_update_cost_at_20x20(tmp_path):
    """Browser time per frame at 20x20 (800 ISLs, outages moving): goal < 100 ms."""
    _browser_or_skip()
    from view.browser import open_page

    spec = ConstellationSpec(constellation=Constellation(planes=20, sats_per_plane=20,
                                                         outage_lat_deg=70.0),
                             clock=Clock(time_factor=60.0, epoch_unix_s=time.time()))
    view = RunView(spec, port=0, echo=lambda m: None)
    view.recorder.interval_s = 0.1
    view.start()
    try:
        with open_page(view.url, 1500, 850) as (page, errors):
            page.wait_for_function("document.body.dataset.frames > 20", timeout=20000)
            stats = page.evaluate("SpaceView.stats")
            assert page.locator("#grid .link").count() == 800
            assert not errors, errors
    finally:
        view.close()
    mean = stats["sumUpdateMs"] / stats["frames"]
    sample_ms = 1e3 * sum(view.recorder.sample_s) / len(view.recorder.sample_s)
    print(f"\nview 20x20: {stats['frames']} frames, browser update mean {mean:.1f} ms, "
          f"max {stats['maxUpdateMs']:.1f} ms (goal < 100 ms); server sample {sample_ms:.1f} ms")
    assert mean < 100


# --- an emulated testbed ---------------------------------------------------------------------
@pytest.mark.root
def test_link_taken_down_turns_down_in_the_page(tmp_path):
    """A 3x3 testbed: the page is up within 5 s of the network, shows 9 satellites and 18
    ISLs, and a link taken down (both veth ends) turns "down" in the page within 2 s."""
    _browser_or_skip()
    from topo import shaping
    from topo.config import from_dict
    from topo.testbed import Testbed
    from view.browser import open_page

    with Testbed(from_dict({"grid": "3x3"}), echo=lambda m: None) as tb:
        t_up = time.monotonic()
        view = RunView.for_testbed(tb, str(tmp_path / "view"), port=0, echo=lambda m: None)
        view.start()
        try:
            with open_page(view.url) as (page, errors):
                page.wait_for_function("document.body.dataset.frames > 0", timeout=5000)
                shown_s = time.monotonic() - t_up
                assert page.locator("#grid circle.sat").count() == 9
                assert page.locator("#grid .link").count() == 18
                assert page.locator("#grid .link[data-state='d']").count() == 0
                keys = model.link_keys(tb.c)
                k = next(i for i, (a, b, kind) in enumerate(tb.c.isls()) if kind == "cross")
                shape = tb.shapes[keys[k]]
                sel = f"#grid .link[data-link='{k}']"
                t0 = time.monotonic()
                shaping.run_batch("ip", [f"link set {shape.intf_a} down",
                                         f"link set {shape.intf_b} down"])
                page.wait_for_function(
                    f"document.querySelector(\"{sel}\").dataset.state === 'd'", timeout=2000)
                down_s = time.monotonic() - t0
                assert page.locator("#grid .link[data-state='d']").count() == 1
                assert page.locator("#down-label").inner_text() == "1"
                shaping.run_batch("ip", [f"link set {shape.intf_a} up",
                                         f"link set {shape.intf_b} up"])
                page.wait_for_function(
                    f"document.querySelector(\"{sel}\").dataset.state === 'u'", timeout=5000)
                # the route of a pair follows the controller's installed next hops
                page.click("#grid circle.sat[data-sat='0']")
                page.click("#grid circle.sat[data-sat='8']")
                page.wait_for_function("document.querySelector('#route-info b')", timeout=5000)
                assert "installed by the controller" in page.locator("#route-info").inner_text()
                assert not errors, errors
        finally:
            view.close(str(tmp_path / "view.html"))
    print(f"\nview: page drawn {shown_s:.2f} s after the network was up (goal 5 s); "
          f"a link taken down shown down after {down_s:.2f} s (goal 2 s)")
    _topology, frames = read_run(str(tmp_path / "view"))
    assert any(f["state"].count("d") == 1 for f in frames)
    assert os.path.getsize(tmp_path / "view.html") > 100_000


# --- the plan drawn -------------------------------------------------------------------------------
def test_dry_run_plot_png_and_svg(tmp_path):
    for name in ("plan.png", "plan.svg"):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "node_app.job", "--grid", "7x7", "-s", "3",
                               "-mi", "2", "-ma", "6", "-c", "5", "--dry-run", "--json",
                               "--plot", str(out)], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["plot"] == str(out)
        head = out.read_bytes()[:400]
        assert head.startswith(b"\x89PNG") if name.endswith("png") else b"<svg" in head
    bad = [["--dry-run", "--plot", str(tmp_path / "p.jpg")],
           ["--loopback", "--plot", str(tmp_path / "p.png")]]
    for extra in bad:
        proc = subprocess.run([sys.executable, "-m", "node_app.job", "--grid", "5x5", "-mi", "1",
                               "-ma", "5", "-c", "3", *extra], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2 and "--plot" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "p.png").exists()


def test_land_outline_decodes_to_continents():
    from view.plan_plot import land_rings
    rings = land_rings()
    pts = np.concatenate(rings)
    assert len(rings) > 100
    assert pts[:, 0].min() >= -180.001 and pts[:, 0].max() <= 180.001
    assert pts[:, 1].min() < -80 and pts[:, 1].max() > 80  # Antarctica and the Arctic islands


def test_a_broken_view_never_takes_the_run_down(tmp_path, capsys):
    from view.live import attach

    class Broken:  # a "testbed" the view cannot read
        view = None
        spec = cfg = None

    assert attach(Broken(), str(tmp_path), None) is None
    assert "not recording this run" in capsys.readouterr().err
    spec = ConstellationSpec.for_grid(3, 3)
    view = RunView(spec, view_dir=str(tmp_path / "v"), echo=print).start()
    os.remove(tmp_path / "v" / "topology.json")  # the recording lost: one line, no exception
    assert view.close(str(tmp_path / "view.html")) is None
    assert "replay not written" in capsys.readouterr().out
