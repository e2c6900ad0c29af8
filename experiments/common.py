"""What every emulated experiment shares: config loading (unknown keys name
themselves, exit 2), the argument parser that turns usage errors into exit 2, the
root check, and the environment record of a running testbed.

An experiment module defines ``DEFAULTS`` (every known key with its default) and
calls :func:`load_config`; its own value checks use :func:`check_ints` and
:func:`check_choices`.  Exit codes are the same everywhere: 0 the experiment ran,
1 a job or the testbed failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from experiments.output import environment_info
from topo import cli
from topo.cli import UsageError  # noqa: F401  (experiments raise it for bad input)


def load_config(path: Path, defaults: dict, overrides: dict | None = None) -> dict:
    """``defaults`` updated by the YAML mapping at ``path`` and by the non-None
    ``overrides`` (command-line flags); an unknown key is a UsageError naming it (and the
    closest known key)."""
    raw = cli.load_yaml_mapping(path, "--config")
    cli.check_keys(raw, defaults)
    cfg = {**defaults, **raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    if "testbed" in cfg:
        if not isinstance(cfg["testbed"], dict):
            raise UsageError("testbed: must be a mapping of topo.config keys")
        cfg["testbed"] = {**defaults.get("testbed", {}), **cfg["testbed"]}  # keys, not the whole section
    return cfg


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_ints(cfg: dict, keys, minimum: int = 1) -> None:
    """Each of ``keys`` an integer >= minimum (UsageError naming the key)."""
    for key in keys:
        if not _is_int(cfg[key]) or cfg[key] < minimum:
            raise UsageError(f"{key}: {cfg[key]!r} must be an integer >= {minimum}")


def check_number(cfg: dict, key: str, lo: float, hi: float) -> None:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise UsageError(f"{key}: {v!r} must be a number in [{lo}, {hi}]")


def check_choices(cfg: dict, key: str, known) -> None:
    """``cfg[key]`` a non-empty list of values from ``known``."""
    v = cfg[key]
    if not isinstance(v, list) or not v or any(x not in known for x in v):
        raise UsageError(f"{key}: {v!r} must be a list of {', '.join(known)}")


def testbed_config(cfg: dict, **forced):
    """The validated topo.config of an experiment config's ``testbed`` section plus
    ``grid`` (ValueError naming the key when invalid)."""
    from topo import config as topo_config
    return topo_config.from_dict({**cfg.get("testbed", {}), "grid": cfg["grid"], **forced})


def parser(prog: str, doc: str, default_config: Path | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser whose errors raise UsageError (so main() exits 2 in one line).

    With ``default_config`` it has the flags every emulated experiment shares:
    ``--config``, ``--grid``, ``--json``, ``--pcap``, ``--results`` and ``--view [PORT]``."""
    p = cli.parser(prog, doc)
    if default_config is not None:
        p.add_argument("--config", type=Path, default=default_config)
        p.add_argument("--grid", help="PLANESxSATS (overrides the config)")
        p.add_argument("--pcap", help="capture on these hosts/ports (h1_1,g1,s1_1-eth2 or auto)")
        cli.add_common(p)
        from view.live import add_view_flag
        add_view_flag(p)  # --view [PORT]: every EmulatedNodes of the run serves the live view
    return p


def need_root(what: str) -> bool:
    """True when root; otherwise says why not on stderr."""
    if os.geteuid() == 0:
        return True
    print(f"error: {what} builds an emulated network: run as root", file=sys.stderr)
    return False


def echo_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _first_line(argv: list[str]) -> str | None:
    import subprocess
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout or out.stderr).strip().split("\n")[0] or None


def tool_versions() -> dict:
    """Versions of what the emulated network is made of (None when missing)."""
    from importlib import metadata
    try:
        from mininet.net import VERSION as mininet_version
    except ImportError:
        mininet_version = None
    def pkg(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
    return {"kernel": os.uname().release, "mininet": mininet_version, "os-ken": pkg("os-ken"),
            "openvswitch": _first_line(["ovs-vswitchd", "--version"]),
            "iproute2": _first_line(["tc", "-V"]), "iperf3": _first_line(["iperf3", "--version"]),
            "tcpdump": _first_line(["tcpdump", "--version"])}


def testbed_environment(tb, **extra) -> dict:
    """environment.json of an emulated experiment: versions plus how the network was
    realised (datapath, netem, delay/loss emulation, controller, shaping caps)."""
    return environment_info(**{k: tb.metadata.get(k) for k in
                               ("datapath", "netem", "delay_emulated", "loss_emulated", "controller",
                                "warnings", "shaping", "build_s", "routes_s",
                                "ovs_socket_buffers")},
                            tools=tool_versions(), **extra)


def job_row(out: dict, exact=None) -> dict:
    """The standard columns of one job from its metrics JSON (``run_job``'s output):
    hop metrics, measured times, the plan's model cost, bytes per phase and, given the
    exact answer, whether the result equals it."""
    row = {"distance": out["distance"], "reduce_distance": out["reduce_distance"],
           "job_time": out["job_time"], "end_to_end_s": out.get("end_to_end_s"),
           "cost": out.get("plan", {}).get("cost"),
           "bytes_collect": out.get("bytes", {}).get("collect"),
           "bytes_map": out.get("bytes", {}).get("map")}
    if exact is not None:
        row["exact"] = out.get("result") == exact
    row["jobid"] = out.get("jobid")
    return row
