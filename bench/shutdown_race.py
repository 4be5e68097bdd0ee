"""Benchmark the shutdown race recipe: how fast does the harness find the seed crash?"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness.qemu import accel as accel_mod
from harness.qemu.binary import probe
from harness.qemu.spec import MachineSpec
from harness.stress.hammer import HammerConfig, hammer, print_progress, quiet_expected_noise
from harness.stress.races import ShutdownRace


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("-j", "--parallel", type=int, default=4)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--no-malloc-perturb", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.seconds <= 0 or a.parallel < 1:
        print("shutdown-race: --seconds must be > 0 and -j >= 1", file=sys.stderr)
        return 2
    quiet_expected_noise()
    binary = probe(a.qemu).path
    base = MachineSpec(binary=binary, accel=accel_mod.resolve(binary, "auto"))
    with tempfile.TemporaryDirectory(prefix="bench-race-") as d:
        cfg = HammerConfig(base=base, artifacts=Path(d), seconds=a.seconds, parallel=a.parallel,
                           seed=a.seed, malloc_perturb=not a.no_malloc_perturb)
        t = hammer(ShutdownRace(), cfg, print_progress)
    print(t.table())
    crashes = t.count("crash")
    first = f"{t.first_failure_at:.2f}s" if t.first_failure_at is not None else "none"
    print(f"parallel {a.parallel} seconds {t.elapsed:.1f} attempts {t.attempts} crashes {crashes} "
          f"first-crash {first}")
    print(f"crashes/min {crashes / t.elapsed * 60:.1f} attempts/s {t.attempts / t.elapsed:.2f} "
          f"per-attempt {crashes / max(t.attempts, 1):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
