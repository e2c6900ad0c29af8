"""Full-kernel check: boot the cached Debian 12 guest under qemu and run the guest checks.

    python3 tests/vm/run_check.py [--timeout-s 1100] [--keep] [--checks NAME,...]

This machine's kernel has neither sch_netem nor the openvswitch module, so delay
shaping and the kernel datapath are exercised in a guest with a stock Debian kernel.
The guest image is built once by build_image.sh (cached outside the repo, keyed by the
set-up script's hash); each run copies the current checkout into it, makes a raw ext4
disk from it, boots it (TCG: /dev/kvm here cannot boot a stock kernel) with
tests/vm/guest_init.sh as init, and reads the result line from the serial console.
Prints one JSON line; exits 0 only when the guest reports every check passed.
``--checks`` picks the guest checks (default: modules, datapath, testbed, demo; the opt-in
``fidelity`` runs experiments.fidelity on a 3x3 grid with netem, tests/vm/guest_fidelity.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULT_MARK = "SPACECOMP-VM-RESULT "


def build_image() -> Path:
    out = subprocess.run([str(REPO / "tests/vm/build_image.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"guest image build failed: {out.stderr.strip()[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def sync_checkout(rootfs: Path):
    """Replace the project's tracked files in the guest with the current checkout's."""
    dest = rootfs / "opt/spacecomp"
    for child in dest.iterdir():
        if child.name not in (".venv", ".venv-ryu") and not child.name.endswith(".egg-info"):
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout
    tar = subprocess.Popen(["tar", "cf", "-", "--null", "--no-recursion", "-T", "-"],
                           cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    untar = subprocess.Popen(["tar", "xf", "-", "-C", str(dest)], stdin=tar.stdout)
    tar.stdin.write(files)
    tar.stdin.close()
    if untar.wait() or tar.wait():
        raise RuntimeError("copying the checkout into the guest failed")


def make_disk(rootfs: Path, disk: Path):
    used = int(subprocess.run(["du", "-sm", str(rootfs)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(rootfs), str(disk),
                    f"{used + 1536}M"], check=True, capture_output=True)


CHECK_NAMES = ("modules", "datapath", "testbed", "demo", "fidelity")


def boot(image_dir: Path, disk: Path, log: Path, timeout_s: float,
         checks: str = "") -> tuple[int | None, dict | None]:
    cmd = ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2",
           "-m", "4096", "-nographic", "-no-reboot", "-nic", "none",
           "-kernel", str(image_dir / "vmlinuz"), "-initrd", str(image_dir / "initrd.img"),
           "-drive", f"file={disk},format=raw,if=virtio",
           "-append", "root=/dev/vda rw console=ttyS0 panic=-1 quiet "
                      "init=/opt/spacecomp/tests/vm/guest_init.sh"
                      # init's environment: the guest's own limit, inside the boot's
                      f" SPACECOMP_VM_GUEST_TIMEOUT={int(max(timeout_s - 100, 60))}"
                      + (f" spacecomp.checks={checks}" if checks else "")]
    result = None
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None, None
    for line in log.read_text(errors="replace").splitlines():
        if RESULT_MARK in line:
            result = json.loads(line.split(RESULT_MARK, 1)[1])
    return proc.returncode, result


def save_fidelity(result: dict, results_root: str) -> Path | None:
    """Write the guest's fidelity run (``--checks fidelity``) as a result directory on this
    machine, ``RESULTS/fidelity_guest/<UTC timestamp>/``: metrics.json, environment.json
    (netem, datapath, kernel, where) and jobs.csv, the files ``experiments.paper
    --jobs-from`` reads.  None when the guest returned no fidelity metrics."""
    import csv
    fid = (result or {}).get("fidelity") or {}
    if not isinstance(fid.get("metrics"), dict):
        return None
    out = Path(results_root) / "fidelity_guest" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(fid["metrics"], indent=1))
    (out / "environment.json").write_text(json.dumps(
        {"netem": fid.get("netem"), "datapath": fid.get("datapath"),
         "kernel": result.get("kernel"), "where": "full-kernel guest (qemu TCG)"}, indent=1))
    rows = fid.get("jobs_csv") or []
    if rows:
        with open(out / "jobs.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tests/vm/run_check.py", description=__doc__.split("\n")[0])
    p.add_argument("--timeout-s", type=float, default=1100, help="whole boot-and-check limit")
    p.add_argument("--keep", action="store_true", help="keep the run directory (disk, console log)")
    p.add_argument("--results", help="with --checks fidelity: write the guest's run to "
                                     "RESULTS/fidelity_guest/<timestamp>/")
    p.add_argument("--checks", default="", help=f"comma-separated guest checks ({', '.join(CHECK_NAMES)})")
    args = p.parse_args(argv)
    unknown = [n for n in args.checks.split(",") if n and n not in CHECK_NAMES]
    if unknown:
        print(f"error: --checks: unknown check {unknown[0]!r} (choose from {', '.join(CHECK_NAMES)})",
              file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: the full-kernel check needs root", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        image_dir = build_image()
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t_build = time.monotonic() - t0
    run_dir = Path(tempfile.mkdtemp(prefix="spacecomp-vm-", dir="/var/tmp"))
    log = run_dir / "console.log"
    ok = False
    try:
        sync_checkout(image_dir / "rootfs")
        make_disk(image_dir / "rootfs", run_dir / "disk.img")
        t_boot = time.monotonic()
        rc, result = boot(image_dir, run_dir / "disk.img", log, args.timeout_s, args.checks)
        saved = save_fidelity(result, args.results) if args.results else None
        summary = {"ok": bool(result and result.get("ok")), "image": str(image_dir),
                   "results_dir": str(saved) if saved else None,
                   "image_s": round(t_build, 1), "guest_s": round(time.monotonic() - t_boot, 1),
                   "timed_out": rc is None, "guest": result, "console_log": str(log)}
        if not summary["ok"]:
            print("\n".join(log.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
        print(json.dumps(summary))
        ok = summary["ok"]
        return 0 if ok else 1
    finally:
        # Keep the console log of a failed run for inspection; the disk image never.
        if not args.keep:
            (run_dir / "disk.img").unlink(missing_ok=True)
            if ok:
                shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
