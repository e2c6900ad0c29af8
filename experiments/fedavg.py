"""Federated learning over the constellation: FedAvg rounds as SpaceCoMP jobs, per
update compression, on the emulated network (or the loopback).

    python3 -m experiments.fedavg [--config experiments/fedavg.yaml] [--grid 5x5]
                                  [--rounds N] [--clients N] [--codecs none,topk,randk,q8]
                                  [--loopback] [--json] [--pcap auto] [--results DIR]

Every round of every codec is one job of the ``fedavg`` workload (node_app.tasks.fedavg):
the ``clients`` collectors ship their shards of the bundled digits to their mappers, the
mappers train the global model (passed in the job data) and send their compressed
updates to the reducer, which returns the FedAvg model; the ground evaluates it on the
held-out split and passes it to the next round.  The codecs run side by side in one run
(round r of every codec before round r+1), each its own federation (so each keeps its own
error-feedback residuals on the mappers), after one warm-up job that is not counted (the
daemons load the dataset and numpy/scikit-learn once).  Without ``--loopback`` it builds
the emulated network (root); with it, daemons on the loopback (no root, no shaping).

Writes ``results/fedavg/<timestamp>/``: ``config.yaml``, ``environment.json``,
``rounds.csv`` (one row per codec and round: accuracy, round time, bytes per phase, ISL
bytes per phase, measured ISL counter bytes), ``links.csv`` (bytes per ISL direction,
phase, codec and round; phase ``measured``: the veth counters, emulated only),
``summary.csv``, ``metrics.json``, ``final_models.json`` and
``accuracy.png``/``accuracy.svg`` (accuracy against rounds and against wall time).
``--json`` prints one line: ``bytes_ratio`` (update-phase ISL bytes, uncompressed over
top-k), ``accuracy_uncompressed``, ``accuracy_compressed``, ``accuracy_gap_pts``,
``rounds`` and more.  Exit 0 when every round ran, 1 when one failed, 2 on bad input.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from experiments import common
from experiments import fedavg_report as R
from experiments.common import UsageError
from experiments.output import write_csv, write_json, write_yaml
from topo import cli

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "fedavg.yaml"
DEFAULTS = {"grid": "5x5", "rounds": 30, "clients": 10, "codecs": ["none", "topk", "randk", "q8"],
            "ratio": 0.01, "error_feedback": True, "local_epochs": 5, "lr": 0.5, "batch": 16,
            "partition": "iid", "seed": 1, "allocator": "bipartite", "reducer": "center",
            "job_timeout_s": 300, "testbed": {}}


def load_config(path: Path, overrides: dict) -> dict:
    from node_app import fedlearn as F
    from node_app.tasks import BadTaskInput
    from node_app.tasks.fedavg import check_params
    cfg = common.load_config(path, DEFAULTS, overrides)
    common.check_ints(cfg, ("rounds", "clients", "job_timeout_s"))
    common.check_choices(cfg, "codecs", F.CODECS)
    common.check_choices({"x": [cfg["allocator"]]}, "x", ("random", "bipartite", "eager"))
    common.check_choices({"x": [cfg["reducer"]]}, "x", ("los", "center"))
    try:
        check_params(job_data(cfg, cfg["codecs"][0], 0, None, "check"))
    except BadTaskInput as e:
        raise UsageError(str(e).replace("job_data.", "")) from None
    return cfg


def job_data(cfg: dict, codec: str, round_no: int, model: str | None, federation: str) -> dict:
    jd = {"federation": federation, "round": round_no, "codec": codec, "ratio": cfg["ratio"],
          "error_feedback": cfg["error_feedback"], "local_epochs": cfg["local_epochs"],
          "lr": cfg["lr"], "batch": cfg["batch"], "partition": cfg["partition"],
          "seed": cfg["seed"]}
    if model is not None:
        jd["model"] = model
    return jd


def aoi(cfg: dict, planes: int, sats: int) -> list[str]:
    """The AOI flags: the whole grid, ``clients`` collectors (each with its own mapper)."""
    side = min(planes, sats)
    if 2 * cfg["clients"] > side * side:
        raise UsageError(f"clients: {cfg['clients']} collectors and their mappers do not fit in "
                         f"a {planes}x{sats} grid (at most {side * side // 2})")
    return ["-mi", "1", "-ma", str(side), "-c", str(cfg["clients"])]


class LoopbackNodes:
    """Node daemons on the loopback, driven through the ground CLI like EmulatedNodes."""

    def __init__(self, spec, run_dir: str):
        self.spec, self.run_dir = spec, run_dir
        self.los = tuple(spec.ground[0]) if spec.ground else (1, 1)
        self.loop = None

    def __enter__(self):
        from node_app.loopback import LoopbackConstellation
        self.loop = LoopbackConstellation(*self.spec.grid, os.path.join(self.run_dir, "loopback"),
                                          gateways=[self.los], spec=self.spec).start()
        return self

    def __exit__(self, *exc):
        self.loop.stop()

    def run_job(self, args: list[str], timeout_s: float = 300.0) -> dict:
        import subprocess
        lp = self.loop
        cmd = [sys.executable, "-m", "node_app.job", "--grid", self.spec.grid_text,
               "--addr-map", os.path.join(lp.dir, "addrs.json"), "--key-file", lp.key_file,
               "--spec", os.path.join(lp.dir, "spec.json"), "--los", f"{self.los[0]},{self.los[1]}",
               "--results", os.path.join(self.run_dir, "results"), "--json", *args]
        if lp.log_dir:
            cmd += ["--log-dir", lp.log_dir]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                           cwd=os.path.dirname(HERE))
        if p.returncode != 0:
            raise RuntimeError(f"job failed (exit {p.returncode}): {p.stderr[-500:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])


def isl_counter_reader(c):
    """A function returning ``{link: tx bytes}`` of every ISL direction of constellation
    ``c``'s emulated network: the counter of the veth end at the sending satellite's bridge
    (root namespace)."""
    from topo.addressing import isl_ports, switch_name
    ends = {}
    for a, pa, b, pb, _k in isl_ports(c):
        ends[R.link_name(a, b)] = f"{switch_name(a)}-eth{pa}"
        ends[R.link_name(b, a)] = f"{switch_name(b)}-eth{pb}"

    def read() -> dict:
        out = {}
        for link, dev in ends.items():
            try:
                with open(f"/sys/class/net/{dev}/statistics/tx_bytes") as f:
                    out[link] = int(f.read())
            except (OSError, ValueError):
                pass
        return out
    return read


def run_rounds(cfg: dict, nodes, spec, counters, out_dir: Path, echo) -> tuple[list, list, dict]:
    """Every round of every codec; (round rows, link rows, final models)."""
    from experiments.output import Progress
    from node_app import fedlearn as F
    router = spec.router()
    route = lambda a, b: router.route(tuple(a), tuple(b)).path  # noqa: E731
    flags = ["-a", cfg["allocator"], "-r", cfg["reducer"], "-s", str(cfg["seed"]),
             *aoi(cfg, *spec.grid), "--workload", "fedavg"]
    stamp = out_dir.name.replace("-", "")
    models = {codec: None for codec in cfg["codecs"]}
    rows, link_rows = [], []
    progress = Progress(cfg["rounds"] * len(cfg["codecs"]), "fedavg rounds")
    jd_path = out_dir / "run" / "job_data.json"
    jd_path.parent.mkdir(parents=True, exist_ok=True)
    # Warm-up (not counted): the daemons of the plan load the dataset and the numeric
    # libraries once, so the first measured round is not charged seconds of imports.
    jd_path.write_text(json.dumps(job_data(cfg, "none", 0, None, f"{stamp}-warmup")))
    t0 = time.time()
    nodes.run_job([*flags, "-d", str(jd_path)], timeout_s=cfg["job_timeout_s"])
    echo(f"warm-up job: {time.time() - t0:.1f} s")
    for round_no in range(cfg["rounds"]):
        for codec in cfg["codecs"]:
            jd = job_data(cfg, codec, round_no, models[codec], f"{stamp}-{codec}")
            jd_path.write_text(json.dumps(jd))
            before = counters() if counters else None
            t0 = time.time()
            out = nodes.run_job([*flags, "-d", str(jd_path)], timeout_s=cfg["job_timeout_s"])
            wall = time.time() - t0
            after = counters() if counters else None
            per_link = ({ln: after[ln] - before.get(ln, 0) for ln in after
                         if after[ln] > before.get(ln, 0)} if counters else {})
            measured = sum(per_link.values()) if counters else None
            result = out["result"]
            models[codec] = result["model"]
            acc = F.accuracy(F.decode_model(result["model"]))
            links = R.phase_links(out, route)
            row = R.round_row(codec, round_no, out, result, acc,
                              out.get("end_to_end_s") or wall, links, measured)
            row["cli_wall_s"] = wall
            rows.append(row)
            link_rows += [{"codec": codec, "round": round_no, "phase": ph, "link": ln, "bytes": b}
                          for ph, c in [*links.items(), ("measured", per_link)]
                          for ln, b in sorted(c.items())]
            progress.advance()
        echo(f"round {round_no + 1}/{cfg['rounds']}: " + ", ".join(
            f"{r['codec']} {100 * r['accuracy']:.1f}%" for r in rows if r["round"] == round_no))
    return rows, link_rows, models


def run(cfg: dict, out_dir: Path, loopback: bool, pcap: str | None, echo):
    if loopback:
        from topo.spec import ConstellationSpec, parse_grid
        spec = ConstellationSpec.for_grid(*parse_grid(cfg["grid"]))
        with LoopbackNodes(spec, str(out_dir / "run")) as nodes:
            write_json(out_dir / "environment.json",
                       common.environment_info(mode="loopback", tools=common.tool_versions()))
            return run_rounds(cfg, nodes, spec, None, out_dir, echo)
    from experiments.capture import Capture
    from node_app.emulated import EmulatedNodes
    from topo.testbed import Testbed
    tb_cfg = common.testbed_config(cfg)
    with Testbed(tb_cfg, echo=echo) as tb, EmulatedNodes(tb, str(out_dir / "run")) as nodes:
        write_json(out_dir / "environment.json", common.testbed_environment(tb, mode="emulated"))
        capture = Capture(tb, pcap, str(out_dir / "pcap")) if pcap else None
        if capture:
            capture.__enter__()
        try:
            return run_rounds(cfg, nodes, tb.spec, isl_counter_reader(tb.c), out_dir, echo)
        finally:
            if capture:
                capture.__exit__(None, None, None)


def main(argv=None) -> int:
    p = common.parser("python3 -m experiments.fedavg", __doc__, DEFAULT_CONFIG)
    p.add_argument("--rounds", type=int, help="rounds per codec (overrides the config)")
    p.add_argument("--clients", type=int, help="collectors, one shard each (overrides the config)")
    p.add_argument("--codecs", help="comma-separated codecs (overrides the config)")
    p.add_argument("--loopback", action="store_true",
                   help="daemons on the loopback instead of the emulated network (no root)")
    args = p.parse_args(argv)
    codecs = args.codecs.split(",") if args.codecs else None
    cfg = load_config(args.config, {"grid": args.grid, "rounds": args.rounds, "codecs": codecs,
                                           "clients": args.clients})
    try:
        common.testbed_config(cfg)  # validate before building
    except ValueError as e:
        raise UsageError(str(e)) from None
    from topo.spec import parse_grid
    aoi(cfg, *parse_grid(cfg["grid"]))
    if args.loopback and args.pcap:
        raise UsageError("--pcap needs the emulated network (not --loopback)")
    if not args.loopback and not common.need_root("the fedavg experiment"):
        return 2
    out_dir = cli.results_dir(args.results, "fedavg")
    write_yaml(out_dir / "config.yaml", {**cfg, "loopback": args.loopback})
    try:
        rows, link_rows, models = run(cfg, out_dir, args.loopback, args.pcap, common.echo_stderr)
    except Exception as e:  # the testbed tore itself down; say what failed, in one line
        raise cli.RunFailed(f"fedavg run failed: {type(e).__name__}: {e}") from None
    summary = R.summarise(rows, cfg["codecs"])
    write_csv(out_dir / "rounds.csv", rows)
    write_csv(out_dir / "links.csv", link_rows)
    write_csv(out_dir / "summary.csv", [{"codec": c, **s} for c, s in summary.items()])
    write_json(out_dir / "final_models.json", models)
    R.plot(rows, cfg["codecs"], out_dir)
    metrics = {**R.headline(summary), "grid": cfg["grid"], "clients": cfg["clients"],
               "codecs": cfg["codecs"], "ratio": cfg["ratio"], "error_feedback": cfg["error_feedback"],
               "mode": "loopback" if args.loopback else "emulated", "summary": summary,
               "results_dir": str(out_dir)}
    write_json(out_dir / "metrics.json", metrics)
    if args.json:
        cli.print_json(metrics)
    else:
        print(f"{'codec':<7} {'final acc %':>11} {'update ISL B':>13} {'collect ISL B':>13} "
              f"{'round s':>8}")
        for c, s in summary.items():
            print(f"{c:<7} {100 * s['final_accuracy']:>11.2f} {s['isl_bytes_update']:>13} "
                  f"{s['isl_bytes_collect']:>13} {s['round_s_median']:>8.2f}")
        if "bytes_ratio" in metrics:
            print(f"bytes_ratio {metrics['bytes_ratio']:.1f}x, accuracy gap "
                  f"{metrics['accuracy_gap_pts']:.2f} pts after {metrics['rounds']} rounds")
        print(f"results: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
