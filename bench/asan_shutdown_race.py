"""The seed race on a sanitizer build, with and without MALLOC_PERTURB_: hit rates
(95% Wilson intervals), attempts/s, and the use/free/alloc sites ASan names.

MALLOC_PERTURB_ matters on Debian's build (freed memory filled with a pattern turns
a silent use after free into an assertion or SIGSEGV); ASan detects the use itself,
so on an ASan build the two rates should agree within their intervals.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.qemu import accel as accel_mod
from harness.qemu.binary import BinaryError, probe
from harness.qemu.spec import MachineSpec
from harness.report.differential import wilson
from harness.stress.hammer import HammerConfig, hammer, print_progress, quiet_expected_noise
from harness.stress.races import ShutdownRace

ROOT = Path(__file__).resolve().parents[1]


def asan_wrapper() -> str | None:
    cp = subprocess.run([str(ROOT / "ci" / "qemu-build"), "--asan", "--print-wrapper"],
                        capture_output=True, text=True, timeout=120)
    return cp.stdout.strip() or None if cp.returncode == 0 else None


def one(base: MachineSpec, seconds: float, parallel: int, perturb: bool, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-asan-") as d:
        cfg = HammerConfig(base=base, artifacts=Path(d), seconds=seconds, parallel=parallel,
                           seed=seed, malloc_perturb=perturb)
        t = hammer(ShutdownRace(), cfg, print_progress)
        rows = []
        for st in t.rows():
            sites = {}
            if st.first_artifacts:
                oc = Path(st.first_artifacts) / "vm" / "outcome.json"
                if oc.exists():
                    san = json.loads(oc.read_text()).get("sanitizer") or {}
                    sites = {k: san.get(k) for k in ("use_site", "free_site", "alloc_site") if san.get(k)}
            rows.append({"signature": st.signature, "count": st.count, **sites})
    crashes = t.count("crash")
    return {"perturb": perturb, "attempts": t.attempts, "seconds": round(t.elapsed, 1),
            "crashes": crashes, "rate": crashes / max(t.attempts, 1),
            "ci95": wilson(crashes, t.attempts), "signatures": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qemu", default=None, help="default: the ci/qemu-build --asan wrapper")
    ap.add_argument("--seconds", type=float, default=60.0, help="per run (two runs)")
    ap.add_argument("-j", "--parallel", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.seconds <= 0 or a.parallel < 1:
        print("asan-shutdown-race: --seconds must be > 0 and -j >= 1", file=sys.stderr)
        return 2
    qemu = a.qemu or asan_wrapper()
    if qemu is None:
        print("asan-shutdown-race: no ASan build (run ci/qemu-build --asan, or give --qemu)", file=sys.stderr)
        return 2
    try:
        binary = probe(qemu)
    except BinaryError as exc:
        print(f"asan-shutdown-race: {exc}", file=sys.stderr)
        return 2
    quiet_expected_noise()
    base = MachineSpec(binary=binary.path, accel=accel_mod.resolve(binary.path, "auto"))
    runs = [one(base, a.seconds, a.parallel, p, a.seed) for p in (True, False)]
    print(f"binary {binary.path} (QEMU {binary.version}), -j {a.parallel}, {a.seconds:g} s per run")
    print(f"{'MALLOC_PERTURB_':<16} {'attempts':>8} {'att/s':>6} {'crashes':>7} {'rate':>6}  95% CI")
    for r in runs:
        lo, hi = r["ci95"]
        print(f"{'random' if r['perturb'] else 'unset':<16} {r['attempts']:>8} "
              f"{r['attempts'] / max(r['seconds'], 0.1):>6.2f} {r['crashes']:>7} {100 * r['rate']:>5.1f}%  "
              f"[{100 * lo:.1f}%, {100 * hi:.1f}%]")
    for r in runs:
        for s in r["signatures"]:
            lo, hi = wilson(s["count"], r["attempts"])
            print(f"  {'random' if r['perturb'] else 'unset '} {s['count']:>4}/{r['attempts']:<4} "
                  f"{100 * s['count'] / max(r['attempts'], 1):5.1f}% [{100 * lo:.0f}%, {100 * hi:.0f}%]  "
                  f"{s['signature']}")
            for k in ("use_site", "free_site", "alloc_site"):
                if s.get(k):
                    print(f"{'':>15}{k.replace('_', ' ')}: {s[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
