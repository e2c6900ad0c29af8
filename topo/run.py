"""Build and run a testbed: ``python3 -m topo.run [CONFIG] [options]``.

``python3`` is the project's interpreter (``.venv/bin/python``: Debian's Python with
Mininet and os-ken).  Without ``--check`` or ``--script`` it opens the Mininet CLI.

  python3 -m topo.run topo/example.yaml             # build, route, CLI, tear down
  python3 -m topo.run cfg.yaml --script job.py      # run job.py with ``testbed`` in scope
  python3 -m topo.run --grid 5x5 --check --json     # build, check, one JSON line, exit 0/1

``--check`` builds with defaults (or CONFIG), waits until routes are installed,
verifies every switch's flow table (dumped from OVS) against the routing rule
(``tables_verified``), pings all ordered host pairs (beyond 200 000 pairs a random
sample of 20 000: ``pairs_sampled``), checks that the per-flow packet counters match
the controller's Manhattan routes, tears down and verifies nothing is left.  Placed
ground stations: their /32 flows are verified on every switch, each station in view pings
every satellite and back on the installed routes (``station_pairs``), and once more after
the check forces the next handover (``after_handover``).  Exit
status: 0 all held, 1 a check failed or the testbed could not be built, 2 bad input.
A failed check keeps the run directory (controller log, state) and names it.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time

from topo import cli
from topo.config import ConfigError, from_dict, load, parse_grid

CHECK_FIELDS = ("grid", "datapath", "netem", "build_s", "routes_s", "teardown_s", "pairs",
                "pairs_ok", "paths_ok", "teardown_clean", "tables_verified", "pairs_sampled",
                "flows_per_switch_max", "stations_in_view", "station_pairs",
                "station_pairs_ok", "after_handover", "servers", "cross_server_links",
                "ovs_instances", "tables_s", "ping_s", "attempts",
                "build_phases_s", "teardown_phases_s")
ALL_PAIRS_MAX = 200_000  # ordered host pairs probed exhaustively (20x20 + a ground station)
SAMPLE_PAIRS = 20_000  # random pairs probed beyond that


def parse_args(argv):
    p = cli.parser("python3 -m topo.run", __doc__)
    p.add_argument("config", nargs="?", help="YAML config (see topo/config.py)")
    p.add_argument("--grid", help="PLANESxSATS, overrides the config (e.g. 5x5)")
    p.add_argument("--controller", choices=("osken", "ryu"), help="controller runtime")
    p.add_argument("--check", action="store_true", help="check reachability and paths, then exit")
    p.add_argument("--json", action="store_true", help="with --check: print one JSON line")
    p.add_argument("--script", help="Python file run with `testbed` and `net` in its globals")
    p.add_argument("--require-delay", action="store_true",
                   help="fail when propagation delay cannot be emulated (no sch_netem)")
    p.add_argument("--dynamics", action="store_true", help="run the dynamics updater meanwhile")
    p.add_argument("--time-factor", type=float, help="constellation s per wall s (dynamics)")
    p.add_argument("--outage-lat", type=float, help="cross-plane outage latitude, degrees")
    p.add_argument("--servers", help="local:N (this machine plus N-1 namespace servers, a "
                   "test rig) or DEST,DEST,... (SSH destinations, the first 'local')")
    p.add_argument("-v", "--verbose", action="store_true")
    from view.live import add_view_flag
    add_view_flag(p)  # --view [PORT]: the live web view while the testbed runs
    return p.parse_args(argv)


def build_config(args):
    raw = {}
    if args.config:
        cfg = load(args.config)
    else:
        cfg = from_dict({})
    if args.grid:
        cfg.planes, cfg.sats_per_plane = parse_grid(args.grid)
        raw["grid"] = args.grid
    if args.controller:
        cfg.controller = args.controller
    if args.require_delay:
        cfg.require_delay = True
    if args.dynamics:
        cfg.dynamics = True
    if args.time_factor is not None:
        raw["time_factor"] = args.time_factor
    if args.outage_lat is not None:
        raw["outage_lat_deg"] = args.outage_lat
    if args.servers is not None:
        raw["servers"] = args.servers
    if raw:  # re-validate overrides through the same rules as the file
        from dataclasses import asdict
        merged = asdict(cfg)
        merged.pop("planes"), merged.pop("sats_per_plane")
        merged["grid"] = cfg.grid
        if merged["ground_stations"]:
            merged.pop("ground")  # derived from the stations (and the grid)
        else:
            merged.pop("ground_stations")
        merged.update(raw)
        cfg = from_dict(merged)
    for g in cfg.ground:
        if not (1 <= g[0] <= cfg.sats_per_plane and 1 <= g[1] <= cfg.planes):
            raise ConfigError(f"ground: satellite {g} outside the {cfg.grid} grid")
    return cfg


def run_check(tb) -> dict:
    """Every switch's table against the routing rule (from OVS), then reachability and
    path check over all ordered host pairs -- or, beyond ALL_PAIRS_MAX pairs, over a
    random sample of SAMPLE_PAIRS (``pairs_sampled``; 0 means every pair was probed).
    Placed ground stations: their /32 flows are checked on every switch, and each station
    in view is probed to and from every satellite (always, sample or not); then one
    handover is forced (the dynamics stepped just past the next change to a new gateway,
    as the core predicts it) and the stations are checked again (``after_handover``)."""
    res = _check_once(tb, all_pairs=True)
    seg = tb.ground_segment
    if seg is not None and tb.dynamics is not None and not tb.cfg.dynamics:
        t_next = _next_gateway_change(tb)
        if t_next is not None:
            old = dict(seg.current)
            rep = tb.dynamics.step(t_next + 1.0)
            after = _check_once(tb, all_pairs=False)
            res["after_handover"] = {
                "t_s": round(tb.t_s, 1), "handovers": [
                    {"k": h.k, "from": list(h.old) if h.old else None,
                     "to": list(h.new) if h.new else None, "apply_s": round(h.apply_s, 4)}
                    for h in rep.handovers],
                "moved": sum(old[k] != seg.current[k] for k in old),
                **{k: after[k] for k in ("tables_verified", "tables_failed", "station_pairs",
                                         "station_pairs_ok", "paths_ok", "pairs", "pairs_ok")}}
    return res


def _next_gateway_change(tb) -> float | None:
    """Constellation time of the next change of any placed station to a new satellite
    (not to "out of view"), within one orbital period; None if there is none."""
    from topo import ground_stations as gs
    seg, best = tb.ground_segment, None
    t0, t1 = tb.t_s, tb.t_s + tb.c.period_s
    for k, st in enumerate(seg.stations, start=1):
        w = gs.contact_windows(tb.c, st, t0, t1, seg.min_el)
        segs = gs.serving_timeline(tb.c, st, w, t0, t1, seg.min_el)
        nxt = next((b.start_s for b in segs[1:] if b.sat is not None
                    and b.sat != seg.current[k]), None)
        if nxt is not None and (best is None or nxt < best):
            best = nxt
    return best


def _check_once(tb, all_pairs: bool) -> dict:
    """One table and reachability check at the testbed's time; ``all_pairs`` False probes
    only the placed stations' pairs."""
    from controller.routing import Router
    from topo import check
    from topo.addressing import station_port
    router = Router(tb.c, tb.t_s, tb.c.down_links(tb.t_s))
    seg = tb.ground_segment
    t0 = time.monotonic()
    # Placed ground stations move between satellites (topo.ground_segment): their flows
    # follow their gateway, checked as such.
    ground = () if seg is not None else tb.cfg.ground_sats
    stations = ([(tb.ground_ip(k), tb.gateway(k), station_port(k))
                 for k in range(1, len(seg.stations) + 1)] if seg is not None else [])
    cl = tb.cluster
    tables = check.verify_tables(
        router, check.dump_tables(tb.bridges, argv_of=cl.ofctl_argv if cl else None,
                                  ovs_of=tb.network.ovs.of), ground,
        stations)
    tables_s = time.monotonic() - t0
    sats = list(tb.sat_hosts.values())
    hosts = sats + [tb.ground_hosts[k - 1] for k in range(1, len(stations) + 1)
                    if stations[k - 1][1] is not None] if seg is not None else tb.hosts
    ips = [h.IP() for h in hosts]
    in_view = {ip: gw for ip, gw, _p in stations if gw is not None}
    n = len(hosts)
    n_sat = len(sats) if seg is not None else n  # hosts past n_sat: placed stations in view
    station_pairs = [(i, j) for i in range(n_sat, n) for j in range(n_sat)]
    station_pairs += [(j, i) for i, j in station_pairs]
    sample = None
    if not all_pairs:
        sample = station_pairs
    elif n * (n - 1) > ALL_PAIRS_MAX:
        sample = sorted(set(check.sample_pairs(n, SAMPLE_PAIRS)) | set(station_pairs))
    read = lambda _bridges: tb.flow_counters()  # noqa: E731  (one request, all switches)
    before = read(tb.bridges)
    t0 = time.monotonic()
    res = check.all_pairs(hosts, ips, pairs=sample)
    ping_s = time.monotonic() - t0
    after = check.settled_flow_counters(tb.bridges, read=read,
                                        revalidate=cl.revalidate if cl else None,
                                        instances=tb.network.ovs.instances())
    paths = check.check_paths(router, tb.bridges, ips, before, after, res, ground=ground,
                              stations=in_view)
    answered = set(res["answered"])
    return {"tables_verified": tables["tables_verified"], "tables_s": round(tables_s, 3),
            "tables_failed": tables["tables_failed"],
            "flows_per_switch_max": tables["flows_per_switch_max"],
            "flows_per_switch_mean": tables["flows_per_switch_mean"],
            "pairs_sampled": 0 if sample is None else len(sample),
            "pairs": res["pairs"], "pairs_ok": res["pairs_ok"], "paths_ok": paths["paths_ok"],
            "ping_s": round(ping_s, 3), "attempts": res["attempts"], "failed": res["failed"][:5],
            "path_mismatches": paths["mismatches"], "path_surplus_flows": paths["surplus_flows"],
            "path_stat_deficit_packets": paths["deficit_packets"],
            "path_packets_counted": paths["packets_counted"], "path_examples": paths["examples"],
            "stations_in_view": len(in_view), "stations_out_of_view": len(stations) - len(in_view),
            "station_pairs": len(station_pairs),
            "station_pairs_ok": sum(p in answered for p in station_pairs)}


def _reexec_in_project_venv() -> None:
    """``python3 -m topo.run`` with an interpreter lacking Mininet (e.g. a pyenv shim):
    re-run under the project's venv (Debian's Python with Mininet and os-ken)."""
    try:
        import mininet  # noqa: F401
        return
    except ImportError:
        pass
    venv = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        ".venv", "bin", "python")
    if os.path.exists(venv) and os.path.realpath(sys.executable) != os.path.realpath(venv):
        os.execv(venv, [venv, "-m", "topo.run", *sys.argv[1:]])
    print("error: Mininet is not importable: run ./setup.sh (it makes .venv)", file=sys.stderr)
    sys.exit(2)


def main(argv=None) -> int:
    if argv is None:
        _reexec_in_project_venv()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = build_config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.script and not os.path.isfile(args.script):
        print(f"error: --script {args.script}: no such file", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: building a network needs root", file=sys.stderr)
        return 2

    from topo.testbed import Testbed, TestbedError
    from topo.ovs import OVSError
    from topo.shaping import TcError
    quiet = args.json
    echo = (lambda m: print(m, file=sys.stderr, flush=True))
    tb = Testbed(cfg, echo=echo)
    result = {"grid": cfg.grid, "servers": len(cfg.server_specs()),
              "cross_server_links": 0}
    if args.check and any(not (s.is_local or s.is_netns) for s in cfg.server_specs()):
        print("error: --check probes hosts from this machine's kernel: with servers on other "
              "machines use --script (or servers: local:N)", file=sys.stderr)
        return 2
    ok = False
    view = None
    try:
        try:
            tb.start()
        except (TestbedError, OVSError, TcError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # never a traceback for the user; the message says what
            print(f"error: building the testbed failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 1
        if not quiet:
            echo(f"testbed {cfg.grid} up: datapath={tb.metadata['datapath']} "
                 f"netem={tb.metadata['netem']} build {tb.metadata['build_s']:.2f} s, "
                 f"routes {tb.metadata['routes_s']:.2f} s, controller {cfg.controller}")
        if cfg.dynamics and args.verbose:  # the testbed started its updater: show its steps
            tb.start_dynamics(echo=echo)
        if args.view is not None:
            from view.live import open_view
            view = open_view(tb, None, title="topo.run")
            view.__enter__()
        if args.check:
            result.update(run_check(tb))
            if not _held(result, tb.c.size):  # a failed check keeps the run's logs
                tb.cfg.keep_logs = True
                echo(f"check failed: logs kept in {tb.workdir}")
        elif args.script:
            runpy.run_path(args.script, init_globals={"testbed": tb, "net": tb.net},
                           run_name="__main__")
        else:
            from mininet.cli import CLI
            CLI(tb.net)
        if tb.cluster is not None:
            tb.cluster.check_alive()  # a server that dropped out fails the run
        ok = True
    except TestbedError as exc:  # a server dropped out meanwhile: say which, tear down
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        echo("interrupted")
    finally:
        if view is not None:
            view.__exit__(None, None, None)
        clean = tb.stop()
        result.update(datapath=tb.metadata.get("datapath"), netem=tb.metadata.get("netem"),
                      build_s=_r(tb.metadata.get("build_s")),
                      routes_s=_r(tb.metadata.get("routes_s")),
                      teardown_s=_r(tb.metadata.get("teardown_s")), teardown_clean=clean,
                      cross_server_links=tb.metadata.get("cross_server_links", 0),
                      ovs_instances=tb.metadata.get("ovs_instances"),
                      build_phases_s=_phases(tb.metadata.get("build_phases_s")),
                      teardown_phases_s=_phases(tb.metadata.get("teardown_phases_s")))
        if args.check:
            line = {k: result.get(k) for k in CHECK_FIELDS}
            if args.json:
                print(json.dumps(line), flush=True)
            else:
                print(json.dumps(result, indent=1), flush=True)
    if args.check:
        return 0 if ok and _held(result, tb.c.size) and result["teardown_clean"] else 1
    return 0 if ok and clean else 1


def _held(result: dict, switches: int) -> bool:
    """Every table verified, every probed pair answered, every packet on its route."""
    after = result.get("after_handover")
    return bool(result.get("pairs") and result["pairs_ok"] == result["pairs"]
                and result.get("paths_ok") and result.get("tables_verified") == switches
                and result.get("station_pairs_ok") == result.get("station_pairs")
                and (after is None or (after["tables_verified"] == switches and after["paths_ok"]
                                       and after["station_pairs_ok"] == after["station_pairs"]
                                       and after["pairs_ok"] == after["pairs"])))


def _phases(phases: dict | None) -> dict | None:
    return None if phases is None else {k: _r(v) for k, v in phases.items()}


def _r(x):
    return None if x is None else round(x, 3)


if __name__ == "__main__":
    sys.exit(cli.run(main))
