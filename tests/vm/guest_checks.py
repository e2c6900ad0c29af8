"""Checks run inside the full-kernel guest (sch_netem and the openvswitch module exist there).

Prints one line ``SPACECOMP-VM-RESULT {json}`` with a result per check and exits 0 only
when every check passed.  Run by tests/vm/guest_init.sh as the guest's PID 1 child.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time


def check_modules() -> dict:
    """The two kernel features this machine lacks and the guest must have."""
    out = {}
    for module in ("sch_netem", "openvswitch"):
        r = subprocess.run(["modprobe", module], capture_output=True, text=True)
        out[module] = r.returncode == 0
    return {"ok": all(out.values()), **out}


CHECKS = {"modules": check_modules}


def main() -> int:
    results = {"kernel": platform.release()}
    ok = True
    for name, check in CHECKS.items():
        t0 = time.monotonic()
        try:
            result = check()
        except Exception as e:  # report every check, whatever one of them does
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        result["seconds"] = round(time.monotonic() - t0, 1)
        results[name] = result
        ok = ok and result["ok"]
        print(f"guest check {name}: {'ok' if result['ok'] else 'FAILED'} {result}", flush=True)
    results["ok"] = ok
    print("SPACECOMP-VM-RESULT " + json.dumps(results), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
