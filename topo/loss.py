"""Loss on lossy cross-over links where the kernel has no netem: nftables egress drops.

A lossy link drops ``loss_pct`` percent of what each end sends, chosen by the kernel's
random number generator (``numgen random``; resolution 0.01 %), in one netdev table of
this run.  :class:`NftLoss` keeps what is applied and changes only the difference.
"""

from __future__ import annotations

import functools
import os
import subprocess

from topo.shaping import TcError


@functools.lru_cache(maxsize=1)
def nft_available() -> bool:
    """True when ``nft`` can create a netdev egress chain (kernel >= 5.16 with nf_tables)."""
    name = f"spcnf{os.getpid() % 100000}"
    table = f"spacecomp_probe_{os.getpid()}"
    try:
        if subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                          capture_output=True, timeout=10).returncode != 0:
            return False
        rules = (f"table netdev {table} {{\n chain e {{\n type filter hook egress device "
                 f"\"{name}\" priority 0;\n numgen random mod 10000 < 1 drop\n }}\n}}\n")
        ok = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True,
                            timeout=10).returncode == 0
        subprocess.run(["nft", "delete", "table", "netdev", table], capture_output=True, timeout=10)
        return ok
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)


def _chain(intf: str) -> str:
    return "e_" + intf.replace("-", "_")


def nft_loss_script(table: str, add: dict, remove: set, create_table: bool) -> str:
    """An ``nft -f`` script: egress drop chains for ``add`` (intf -> loss %), none for ``remove``.

    A lossy link drops ``loss_pct`` percent of what it sends, chosen by the kernel's
    random number generator (``numgen random``); resolution 0.01 %."""
    lines = [f"add table netdev {table}"] if create_table else []
    for intf in sorted(remove):
        lines.append(f"flush chain netdev {table} {_chain(intf)}")
        lines.append(f"delete chain netdev {table} {_chain(intf)}")
    for intf, pct in sorted(add.items()):
        ch = _chain(intf)
        lines.append(f"add chain netdev {table} {ch} {{ type filter hook egress device "
                     f"\"{intf}\" priority 0; }}")
        lines.append(f"flush chain netdev {table} {ch}")
        lines.append(f"add rule netdev {table} {ch} numgen random mod 10000 < "
                     f"{int(round(pct * 100))} counter drop")
    return "\n".join(lines) + "\n"


def run_nft(script: str, timeout_s: float = 60.0) -> None:
    res = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True,
                         timeout=timeout_s)
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["?"])[0]
        raise TcError(f"nft failed: {first}")


class NftLoss:
    """The nftables loss of one run: ``table`` is private to it; ``applied`` maps each
    interface to the loss % its chain drops now."""

    def __init__(self, table: str):
        self.table = table
        self.created = False
        self.applied: dict[str, float] = {}

    def apply(self, shapes) -> int:
        """Bring the drop chains in line with the lossy links of ``shapes`` (values:
        :class:`topo.shaping.LinkShape`); returns the number of interfaces changed."""
        want = {}
        for s in shapes.values():
            if s.state == "lossy" and s.loss_pct > 0:
                want[s.intf_a] = want[s.intf_b] = s.loss_pct
        add = {i: p for i, p in want.items() if self.applied.get(i) != p}
        remove = set(self.applied) - set(want)
        if not add and not remove:
            return 0
        run_nft(nft_loss_script(self.table, add, remove, not self.created))
        self.created = True
        self.applied = want
        return len(add) + len(remove)

    def delete(self) -> None:
        """Remove the run's table (all its chains), if it made one."""
        if self.created:
            subprocess.run(["nft", "delete", "table", "netdev", self.table],
                           capture_output=True, timeout=60)

    def exists(self) -> bool:
        """True when the run made its table and the table is still there."""
        return self.created and subprocess.run(
            ["nft", "list", "table", "netdev", self.table], capture_output=True,
            timeout=10).returncode == 0
