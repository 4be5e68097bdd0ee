"""Harness overhead: one full cycle through the harness vs a raw qemu.qmp script.

Cycle: boot a pair (bootblock guest, 128 MiB, TCG), precopy over TCP, prove
integrity (byte-exact RAM compare, page rule on the destination), shut down.
Runs alternate harness/raw to share machine noise; prints medians and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead_raw import run_cycle  # noqa: E402

from harness.guest import images  # noqa: E402
from harness.migration import drivers  # noqa: E402
from harness.migration.pair import make_pair  # noqa: E402
from harness.migration.transports import Transport  # noqa: E402
from harness.qemu.binary import probe  # noqa: E402
from harness.qemu.spec import MachineSpec  # noqa: E402
from harness.run import TestRun  # noqa: E402


def harness_cycle(binary: str, mem: int) -> float:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as d:
        run = TestRun(Path(d) / "art")
        try:
            pair = make_pair(run, MachineSpec(binary=binary, memory_mib=mem))
            drivers.precopy(pair, Transport.TCP)
            drivers.prove_integrity(pair)
            run.finish()
        finally:
            run.abort()
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--rounds", type=int, default=9)  # precopy time varies: median of many
    ap.add_argument("--memory", type=int, default=128, help="guest RAM in MiB")
    args = ap.parse_args()
    if args.rounds < 1:
        print("overhead: --rounds must be >= 1", file=sys.stderr)
        return 2
    binary = probe(args.qemu).path
    image = str(images.build_bootblock())
    harness_cycle(binary, args.memory)  # warm caches (images, probes) for both
    h, r = [], []
    for i in range(args.rounds):
        h.append(harness_cycle(binary, args.memory))
        r.append(run_cycle(binary, image, args.memory))
        print(f"round {i + 1}: harness {h[-1]:.3f}s raw {r[-1]:.3f}s", flush=True)
    hm, rm = statistics.median(h), statistics.median(r)
    print(f"median harness {hm:.3f}s raw {rm:.3f}s ratio harness/raw {hm / rm:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
