"""bench/chaos-yield: `harness chaos` exploration only (no minimising, no verifying),
at -j 1 and then -j J with the same seconds; prints plans/s, coverage and signatures
for each and, on the last line, the -j J figures with the scaling ratio.

By default it measures boot-sector bases (every family, the boot sector's paced
firmware form, no Linux guest): --linux-guest auto adds the ~1 plan in 20 that boots
Linux (several seconds each under TCG), --spinning-guest qtest's spinning boot sector."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(seconds: float, parallel: int, extra: list[str]) -> dict:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="chaos-yield-") as art:
        cp = subprocess.run([sys.executable, "-m", "harness.cli", "chaos", "--seconds", str(seconds),
                             "-j", str(parallel), "--minimise-seconds", "0", "--verify-seconds", "0",
                             "--max-findings", "0", "--artifacts", art, *extra],
                            capture_output=True, text=True, env=None)
        if cp.returncode not in (0, 1):
            sys.exit(f"chaos-yield: harness chaos exited {cp.returncode}: {cp.stderr.strip()[-400:]}")
        found = json.loads(next(Path(art).glob("*/findings.json")).read_text())
        sigs = json.loads(next(Path(art).glob("*/triage.json")).read_text()).get("signatures", [])
    # The machine's load around the run: another process's QEMUs halve these figures on 2 cores.
    return {"plans_per_s": found["plans_per_s"], "explore": found["explore_plans_per_s"],
            "seconds": found["seconds"], "plans": found["plans"], "coverage": found["coverage"],
            "signatures": [s["signature"] for s in sigs], "hits": sum(s["count"] for s in sigs),
            "load": (load_before, os.getloadavg()[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("-j", "--parallel", type=int, default=2)
    ap.add_argument("--qemu", default=None)
    ap.add_argument("--families", default="")
    ap.add_argument("--linux-guest", choices=("auto", "off"), default="off")
    ap.add_argument("--spinning-guest", action="store_true")
    a = ap.parse_args()
    extra = (["--qemu", a.qemu] if a.qemu else []) + (["--families", a.families] if a.families else []) + [
        "--linux-guest", a.linux_guest] + (["--spinning-guest"] if a.spinning_guest else [])
    one = run(a.seconds, 1, extra)
    many = run(a.seconds, a.parallel, extra)
    for j, r in ((1, one), (a.parallel, many)):
        print(f"-j {j}: {r['plans']} plans in {r['seconds']:.0f} s, {r['plans_per_s']:.2f} plans/s "
              f"({r['explore']:.2f}/s within the {a.seconds:g} s budget; the rest is the tail: attempts "
              f"still running at the deadline, a hung one up to ~60 s), coverage {r['coverage']['tuples']} "
              f"tuples / {r['coverage']['transitions']} transitions, {r['hits']} hit(s) of "
              f"{len(r['signatures'])} signature(s); load average "
              f"{r['load'][0]:.1f} before, {r['load'][1]:.1f} after: " + "; ".join(r["signatures"][:5]))
    ratio = many["plans_per_s"] / one["plans_per_s"] if one["plans_per_s"] else float("nan")
    print(f"chaos-yield -j {a.parallel}: {many['plans_per_s']:.2f} plans/s over the whole run, "
          f"{many['explore']:.2f}/s within the budget, "
          f"{many['coverage']['tuples']} coverage tuples, {len(many['signatures'])} distinct signatures; "
          f"scaling vs -j 1: {ratio:.2f}x")


if __name__ == "__main__":
    main()
