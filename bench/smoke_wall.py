"""Smoke tier wall time with pytest-xdist -n 1 vs -n 2, side by side in one run.

Each round runs `pytest tests/migration -m smoke` once per setting (alternating),
artifacts in a temporary dir; prints the wall times, pytest's summary line and
the speedup. Extra arguments go to pytest (e.g. --qemu BIN).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_smoke(workers: int, art: Path, extra: list[str]) -> tuple[float, str, int, list[str]]:
    argv = [sys.executable, "-m", "pytest", "tests/migration", "-m", "smoke", "-n", str(workers),
            "-p", "no:cacheprovider", "-q", "--artifacts", str(art), *extra]
    t0 = time.monotonic()
    cp = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - t0
    lines = [l for l in cp.stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", l)]
    failed = [l for l in cp.stdout.splitlines() if l.startswith(("FAILED ", "ERROR "))]
    return wall, (lines[-1].strip("= ") if lines else cp.stdout[-300:]), cp.returncode, failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    a, extra = ap.parse_known_args()
    if a.rounds < 1:
        print("smoke-wall: --rounds must be >= 1", file=sys.stderr)
        return 2
    walls: dict[int, list[float]] = {1: [], 2: []}
    rc = 0
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as d:
        for r in range(a.rounds):
            for n in (1, 2):
                wall, summary, code, failed = run_smoke(n, Path(d) / f"r{r}-n{n}", extra)
                walls[n].append(wall)
                rc = rc or code
                print(f"round {r + 1} -n {n}: {wall:.1f}s  ({summary})", flush=True)
                for line in failed:  # a failure's deadline can dominate a wall time
                    print(f"    {line[:200]}")
    best = {n: min(w) for n, w in walls.items()}
    print(f"-n 1: {best[1]:.1f}s  -n 2: {best[2]:.1f}s  (best of {a.rounds})")
    print(f"speedup -n 2 vs -n 1: {best[1] / best[2]:.2f}x wall time")
    return rc


if __name__ == "__main__":
    sys.exit(main())
