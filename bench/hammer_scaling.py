"""Hammer throughput scaling: the shutdown race at -j 1 vs -j 2, side by side in one run.

Rounds alternate -j 1 and -j 2 (so both see the same machine noise); prints
attempts/s for each and the ratio (ideal: the number of cores, 2 here).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness.qemu import accel as accel_mod
from harness.qemu.binary import probe
from harness.qemu.spec import MachineSpec
from harness.stress.hammer import HammerConfig, hammer, quiet_expected_noise
from harness.stress.races import ShutdownRace


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="per -j setting and round")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.seconds <= 0 or a.rounds < 1:
        print("hammer-scaling: --seconds must be > 0 and --rounds >= 1", file=sys.stderr)
        return 2
    quiet_expected_noise()
    binary = probe(a.qemu).path
    base = MachineSpec(binary=binary, accel=accel_mod.resolve(binary, "auto"))
    totals = {1: [0, 0.0, 0], 2: [0, 0.0, 0]}    # attempts, seconds, crashes
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as d:
        for r in range(a.rounds):
            for j in (1, 2):
                cfg = HammerConfig(base=base, artifacts=Path(d) / f"r{r}-j{j}", seconds=a.seconds,
                                   parallel=j, seed=a.seed + r)
                t = hammer(ShutdownRace(), cfg)
                totals[j][0] += t.attempts
                totals[j][1] += t.elapsed
                totals[j][2] += t.count("crash")
                print(f"round {r + 1} -j {j}: {t.attempts} attempts in {t.elapsed:.1f}s "
                      f"({t.attempts / t.elapsed:.2f}/s), crashes {t.count('crash')}", flush=True)
    rate = {j: v[0] / v[1] for j, v in totals.items()}
    for j, (n, s, c) in totals.items():
        print(f"-j {j}: attempts {n} seconds {s:.1f} attempts/s {rate[j]:.2f} crashes/min {c / s * 60:.1f}")
    print(f"scaling -j 2 / -j 1: {rate[2] / rate[1]:.2f}x attempts/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
