"""Link shaping: what each ISL should carry (from the link model) and the tc commands for it.

Per direction (each veth end's egress) one htb class carries the Shannon
capacity of the link's current length, times ``rate_scale``, capped at
``rate_cap_mbps`` (reported, never silent) and floored at ``rate_floor_mbps``.
Where the kernel has ``sch_netem`` a netem child adds the propagation delay d/c
and, on lossy cross-over links, loss.  Where it does not (this machine) delay is
not emulated: :func:`netem_available` says so and the run records it; loss is
then applied by an nftables netdev egress chain per lossy interface instead
(:mod:`topo.loss`).  Pinned ground stations' links get an htb of ``ground_rate_mbps`` on both ends
(:func:`ground_commands`), the host end inside the ground host's namespace.

tc is applied with ``tc -batch`` (one process for any number of links) and
changed with ``tc class change`` / ``tc qdisc change`` so links never go down
to be reshaped -- Mininet's TCIntf caps htb at 1000 Mbit and deletes the root
qdisc on every change, so it is not used.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from dataclasses import dataclass

from topo.constellation import Constellation, Sat
from topo.link_model import LinkModel
from topo.addressing import isl_ports, switch_name

HTB_HANDLE = "1:"
HTB_CLASS = "1:1"
NETEM_HANDLE = "10:"


@dataclass(frozen=True)
class LinkShape:
    """Target state of one ISL at one instant.

    length_m: link length; delay_s: d/c; model_bps: Shannon capacity x scale before
    the cap/floor; rate_bps: what htb gets; capped: the cap applied;
    state: "up" / "lossy" / "down"; loss_pct: loss while lossy.
    """

    a: Sat
    b: Sat
    kind: str
    intf_a: str
    intf_b: str
    length_m: float
    delay_s: float
    model_bps: float
    rate_bps: float
    capped: bool
    state: str
    loss_pct: float


def plan(c: Constellation, lm: LinkModel, t_s: float, rate_scale: float = 1.0,
         rate_cap_bps: float = 1e9, rate_floor_bps: float = 1e4,
         lossy_loss_pct: float = 1.0) -> dict[frozenset, LinkShape]:
    """The shape of every ISL at constellation time ``t_s``, keyed ``frozenset({a, b})``."""
    out = {}
    for a, pa, b, pb, kind in isl_ports(c):
        d = c.link_length_m(a, b, t_s)
        model = float(lm.shannon_rate_bps(d)) * rate_scale
        rate = min(max(model, rate_floor_bps), rate_cap_bps)
        state = c.cross_plane_state(a, b, t_s) if kind == "cross" else "up"
        out[frozenset((a, b))] = LinkShape(
            a, b, kind, f"{switch_name(a)}-eth{pa}", f"{switch_name(b)}-eth{pb}", d,
            float(lm.delay_s(d)), model, rate, model > rate_cap_bps, state,
            lossy_loss_pct if state == "lossy" else 0.0)
    return out


def _rate(bps: float) -> str:
    """tc rate literal in bit/s (integers; tc accepts 'bit')."""
    return f"{max(int(round(bps)), 1000)}bit"


def htb_add(intf: str, rate_bps: float) -> list[str]:
    """Root htb with one default class at ``rate_bps`` (rate = ceil)."""
    r = _rate(rate_bps)
    return [f"qdisc replace dev {intf} root handle {HTB_HANDLE} htb default 1",
            f"class replace dev {intf} parent {HTB_HANDLE} classid {HTB_CLASS} htb rate {r} ceil {r}"]


def htb_change(intf: str, rate_bps: float) -> list[str]:
    r = _rate(rate_bps)
    return [f"class change dev {intf} parent {HTB_HANDLE} classid {HTB_CLASS} htb rate {r} ceil {r}"]


def netem_args(delay_s: float, loss_pct: float) -> str:
    args = f"delay {delay_s * 1e6:.0f}us"
    if loss_pct > 0:
        args += f" loss {loss_pct:g}%"
    return args


def netem_add(intf: str, delay_s: float, loss_pct: float) -> list[str]:
    return [f"qdisc replace dev {intf} parent {HTB_CLASS} handle {NETEM_HANDLE} netem "
            + netem_args(delay_s, loss_pct)]


def netem_change(intf: str, delay_s: float, loss_pct: float) -> list[str]:
    return [f"qdisc change dev {intf} parent {HTB_CLASS} handle {NETEM_HANDLE} netem "
            + netem_args(delay_s, loss_pct)]


def shape_commands(shapes, netem: bool) -> list[str]:
    """Initial tc commands for every link (both directions)."""
    cmds = []
    for s in shapes:
        for intf in (s.intf_a, s.intf_b):
            cmds += htb_add(intf, s.rate_bps)
            if netem:
                cmds += netem_add(intf, s.delay_s, s.loss_pct)
    return cmds


@dataclass(frozen=True)
class GroundLink:
    """One ground-station link: ``switch_intf`` (root namespace) and ``host_intf`` inside
    the namespace of process ``host_pid`` (the ground host's shell)."""

    switch_intf: str
    host_intf: str
    host_pid: int


def apply_initial(shapes, netem: bool, ground: list[GroundLink] = (),
                  ground_rate_bps: float | None = None, run=None) -> None:
    """Shape every ISL (both directions) and, given ``ground_rate_bps``, every ground link
    (both ends, the same htb): one ``tc -batch`` in the root namespace, one per ground host.
    run: the batch runner (default :func:`run_batch`; a cluster's sends each command to the
    server holding its interface)."""
    run = run or run_batch
    cmds = shape_commands(shapes, netem)
    if ground_rate_bps:
        for g in ground:
            cmds += htb_add(g.switch_intf, ground_rate_bps)
    run("tc", cmds)
    if ground_rate_bps:
        for g in ground:
            run("tc", htb_add(g.host_intf, ground_rate_bps), netns_pid=g.host_pid)


def set_down(shapes, run=None) -> None:
    """Take both ends of every link whose state is "down" down (one ``ip -batch``)."""
    (run or run_batch)("ip", [f"link set {i} down" for s in shapes if s.state == "down"
                     for i in (s.intf_a, s.intf_b)])


class TcError(RuntimeError):
    """tc rejected a batch."""


def run_batch(tool: str, cmds: list[str], timeout_s: float = 120.0,
              netns_pid: int | None = None) -> None:
    """Run ``cmds`` through ``tool -force -batch`` (tool: "tc" or "ip") in one process;
    with ``netns_pid`` inside that process's network namespace."""
    if not cmds:
        return
    with tempfile.NamedTemporaryFile("w", suffix=f".{tool}", delete=False) as fh:
        fh.write("\n".join(cmds) + "\n")
        path = fh.name
    prefix = ["nsenter", "-t", str(netns_pid), "-n"] if netns_pid else []
    try:
        res = subprocess.run([*prefix, tool, "-force", "-batch", path], capture_output=True,
                             text=True, timeout=timeout_s)
    finally:
        os.unlink(path)
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["?"])[0]
        raise TcError(f"{tool} -batch failed ({len(cmds)} commands): {first}")


@functools.lru_cache(maxsize=1)
def netem_available() -> bool:
    """True when this kernel can attach a netem qdisc (tested on a throw-away veth)."""
    name = f"spcnm{os.getpid() % 100000}"
    subprocess.run(["modprobe", "-q", "sch_netem"], capture_output=True, timeout=10)
    try:
        if subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                          capture_output=True, timeout=10).returncode != 0:
            return False
        res = subprocess.run(["tc", "qdisc", "add", "dev", name, "root", "netem", "delay", "1ms"],
                             capture_output=True, timeout=10)
        return res.returncode == 0
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)


def summary(shapes) -> dict:
    """Figures a run reports about its shaping: rate range, how many links the cap hit."""
    shapes = list(shapes)
    capped = [s for s in shapes if s.capped]
    rates = [s.rate_bps for s in shapes]
    return {
        "links": len(shapes),
        "rate_min_bps": min(rates) if rates else None,
        "rate_max_bps": max(rates) if rates else None,
        "capped_links": len(capped),
        "down_links": sum(s.state == "down" for s in shapes),
        "lossy_links": sum(s.state == "lossy" for s in shapes),
    }
