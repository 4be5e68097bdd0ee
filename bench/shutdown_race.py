"""The seed race: the harness recipe against the outside reproducer's design, back to back.

Runs bench/shutdown_race_baseline.py (stdlib, the hand-written design: paused
guest, one OOB monitor keeping query-migrate in flight, SIGTERM, random
MALLOC_PERTURB_), then the harness's shutdown recipe (`harness hammer
shutdown-race`'s code path), with the same workers and seconds. Prints, for
each: attempts/s, per-attempt hit rate with its 95% Wilson interval,
crashes/min, the seed signature's own crashes/min and the other crashes/min.
The last line is the ratio harness/baseline of crashes/min (all crashes, and
seed crashes alone).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.qemu import accel as accel_mod
from harness.qemu.binary import probe
from harness.qemu.spec import MachineSpec
from harness.stress.hammer import HammerConfig, hammer, quiet_expected_noise
from harness.stress.known_bugs import SHUTDOWN_QUERY_MIGRATE
from harness.stress.races import ShutdownRace
from harness.stress.stats import wilson

BASELINE = Path(__file__).with_name("shutdown_race_baseline.py")


@dataclass(frozen=True)
class Rates:
    tool: str
    attempts: int
    crashes: int
    seed: int
    hangs: int
    seconds: float

    def line(self) -> str:
        lo, hi = wilson(self.crashes, self.attempts)
        per_min = lambda n: n / self.seconds * 60  # noqa: E731
        return (f"{self.tool:<9} attempts {self.attempts} in {self.seconds:.1f}s "
                f"({self.attempts / self.seconds:.1f}/s); per-attempt hit rate "
                f"{self.crashes / max(self.attempts, 1):.3f} [95% {lo:.3f}-{hi:.3f}]; "
                f"crashes/min {per_min(self.crashes):.0f} (seed {per_min(self.seed):.0f}, "
                f"other {per_min(self.crashes - self.seed):.0f}); hangs {self.hangs}")

    @property
    def per_min(self) -> float:
        return self.crashes / self.seconds * 60

    @property
    def seed_per_min(self) -> float:
        return self.seed / self.seconds * 60


def run_baseline(qemu: str, accel: str, seconds: float, parallel: int, seed: int) -> Rates:
    cp = subprocess.run([sys.executable, str(BASELINE), "--qemu", qemu, "--accel", accel,
                         "--seconds", str(seconds), "-j", str(parallel), "--seed", str(seed)],
                        capture_output=True, text=True, timeout=seconds + 120)
    if cp.returncode != 0:
        raise SystemExit(f"shutdown-race: baseline failed: {cp.stderr.strip()[-500:]}")
    r = json.loads(cp.stdout.strip().splitlines()[-1])
    return Rates("baseline", r["attempts"], r["crash"], r["seed"], r["hang"], r["elapsed"])


def run_harness(base: MachineSpec, seconds: float, parallel: int, seed: int,
                malloc_perturb: bool) -> Rates:
    with tempfile.TemporaryDirectory(prefix="bench-race-") as d:
        cfg = HammerConfig(base=base, artifacts=Path(d), seconds=seconds, parallel=parallel,
                           seed=seed, malloc_perturb=malloc_perturb)
        t = hammer(ShutdownRace(), cfg)
    seed_hits = sum(s.count for s in t.rows() if SHUTDOWN_QUERY_MIGRATE.matches(s.signature))
    for s in t.rows():   # the other signatures, hangs included: what they were
        if not SHUTDOWN_QUERY_MIGRATE.matches(s.signature):
            print(f"  harness also hit {s.count}x {s.signature[:120]}"
                  f"{' (known)' if s.known else ''}", flush=True)
    return Rates("harness", t.attempts, t.count("crash"), seed_hits, t.count("hang"), t.elapsed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="per tool (default 60)")
    ap.add_argument("-j", "--parallel", type=int, default=4, help="workers for each tool (default 4)")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--no-malloc-perturb", action="store_true", help="harness side only")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.seconds <= 0 or a.parallel < 1:
        print("shutdown-race: --seconds must be > 0 and -j >= 1", file=sys.stderr)
        return 2
    quiet_expected_noise()
    binary = probe(a.qemu).path
    accel = accel_mod.resolve(binary, "auto")
    base = MachineSpec(binary=binary, accel=accel)
    print(f"shutdown-race: {binary}, accel {accel}, {a.parallel} workers, {a.seconds:.0f}s each, "
          f"back to back", flush=True)
    b = run_baseline(binary, accel, a.seconds, a.parallel, a.seed)
    print(b.line(), flush=True)
    h = run_harness(base, a.seconds, a.parallel, a.seed, not a.no_malloc_perturb)
    print(h.line(), flush=True)
    ratio = h.per_min / b.per_min if b.per_min else float("inf")
    seed_ratio = h.seed_per_min / b.seed_per_min if b.seed_per_min else float("inf")
    print(f"ratio harness/baseline crashes/min {ratio:.2f} (seed signature alone {seed_ratio:.2f}); "
          f"per-attempt {h.crashes / max(h.attempts, 1):.3f} vs {b.crashes / max(b.attempts, 1):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
