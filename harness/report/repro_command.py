"""`harness repro SCRIPT --qemu A --qemu B ...`: which QEMU versions a finding affects.

Runs a standalone reproducer (any script honouring the reproducer contract,
harness.report.repro_contract) once per binary, prints a version x
hits/attempts table with 95% Wilson intervals, writes it as JSON, and with
--to-catalog NAME records the finding as a regression test (findings/NAME.json).
`--recipe shutdown-race --seed N` runs one recorded hammer attempt instead.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from harness.report import findings, repro_contract
from harness.report.differential import Differential, Row
from harness.report.reproducer import run_script_tree


class ReproError(Exception):
    """Bad input for harness repro (one line, exit 2)."""


def add_parser(sub) -> None:
    p = sub.add_parser("repro", help="run a reproducer against several QEMU binaries: version x hit-rate "
                                     "table; --to-catalog makes it a regression test")
    p.add_argument("script", nargs="?", metavar="SCRIPT",
                   help="standalone reproducer (repro contract: --qemu/--attempts/--seconds, RESULT line)")
    p.add_argument("--qemu", action="append", default=[], metavar="PATH", required=True,
                   help="a QEMU binary or wrapper; repeat for each version to compare")
    p.add_argument("--attempts", type=int, default=200, help="attempts per binary (default 200)")
    p.add_argument("--seconds", type=float, default=60.0, help="time budget per binary (default 60)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write the table here (default artifacts/repro/<script>-<time>.json)")
    p.add_argument("--to-catalog", default=None, metavar="NAME",
                   help="write findings/NAME.json (+ NAME.py): a strict xfail where it hits")
    p.add_argument("--catalog-dir", default=str(findings.CATALOG_DIR), help=argparse_suppress())
    p.add_argument("--recipe", choices=["shutdown-race"], default=None,
                   help="instead of SCRIPT: replay one recorded hammer attempt (with --seed)")
    p.add_argument("--seed", type=int, default=None, metavar="ATTEMPT_SEED",
                   help="the attempt's seed.txt (with --recipe)")


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def qemu_version(binary: str) -> str:
    """'10.0.2' from `BINARY --version` (a wrapper script works too)."""
    try:
        cp = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return f"? ({exc.strerror})"
    except subprocess.TimeoutExpired:
        return "? (--version timed out)"
    m = re.search(r"version (\d+\.\d+\.\d+)", cp.stdout)
    return m.group(1) if m else "?"


def run_script(script: Path, binary: str, attempts: int, seconds: float) -> Row:
    version = qemu_version(binary)
    argv = [sys.executable, "-I", str(script), "--qemu", binary, "--attempts", str(attempts),
            "--seconds", str(seconds)]
    t0 = time.monotonic()
    try:
        # own process group (its QEMUs die with it), temp dirs in a run dir of ours
        cp = run_script_tree(argv, timeout=seconds + 180)
    except subprocess.TimeoutExpired:
        return Row(version, binary, 0, 0, -1, error=f"did not finish within {seconds + 180:.0f} s",
                   seconds=time.monotonic() - t0)
    dt = time.monotonic() - t0
    try:
        res = repro_contract.parse_result(cp.stdout, cp.returncode)
    except repro_contract.ContractError as exc:
        tail = (cp.stderr.strip().splitlines() or [""])[-1][:160]
        return Row(version, binary, 0, 0, cp.returncode, error=f"{exc}" + (f" (stderr: {tail})" if tail else ""),
                   seconds=dt)
    return Row(version, binary, res.hits, res.attempts, res.exit_code, res.signature, seconds=dt)


def run_recipe_seed(seed: int, binary: str, attempts: int, seconds: float, root: Path) -> Row:
    """One recorded attempt of `harness hammer shutdown-race` with its default options
    (the seed draws the MALLOC_PERTURB_), repeated."""
    from harness.qemu import accel as accel_mod
    from harness.qemu.binary import BinaryError, probe
    from harness.qemu.spec import MachineSpec
    from harness.stress import known_bugs
    from harness.stress.hammer import quiet_expected_noise, run_one
    from harness.stress.races import ShutdownRace
    try:
        b = probe(binary)
    except BinaryError as exc:
        return Row("?", binary, 0, 0, 125, error=str(exc))
    quiet_expected_noise()  # asyncio's "socket.send() raised exception." as QEMU dies
    base = MachineSpec(binary=b.path, accel=accel_mod.resolve(b.path, "auto"))
    recipe = ShutdownRace()
    t0 = time.monotonic()
    hits = n = 0
    sig = None
    while n < attempts and time.monotonic() - t0 < seconds:
        rec = run_one(recipe, base, root / f"{b.version}-{n:04d}", seed, True, keep_passing=False)
        n += 1
        if not rec.ok and known_bugs.match(rec.signature or "") is not None:
            hits += 1
            sig = sig or rec.signature
    return Row(b.version, binary, hits, n, 1 if hits else 0, sig, seconds=time.monotonic() - t0)


def main(args) -> int:
    try:
        return _main(args)
    except (ReproError, findings.CatalogError) as exc:
        print(f"harness repro: error: {exc}", file=sys.stderr)
        return 2


def _main(args) -> int:
    if args.attempts < 1 or args.seconds <= 0:
        raise ReproError("--attempts must be >= 1 and --seconds > 0")
    if (args.script is None) == (args.recipe is None):
        raise ReproError("give either SCRIPT or --recipe shutdown-race --seed N")
    if args.recipe and args.seed is None:
        raise ReproError("--recipe needs --seed ATTEMPT_SEED (an attempt's seed.txt)")
    if args.recipe and args.to_catalog:
        raise ReproError("--to-catalog needs a SCRIPT (export one with harness hammer)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    if args.script:
        script = Path(args.script)
        if not script.is_file():
            raise ReproError(f"{script}: no such file")
        for q in args.qemu:
            print(f"running {script.name} against {q} ({args.attempts} attempts / {args.seconds:g} s) ...",
                  file=sys.stderr, flush=True)
            rows.append(run_script(script, q, args.attempts, args.seconds))
        name = script.stem
    else:
        root = Path("artifacts/repro") / f"seed-{args.seed}-{stamp}"
        for q in args.qemu:
            print(f"replaying shutdown-race attempt {args.seed} on {q} ...", file=sys.stderr, flush=True)
            rows.append(run_recipe_seed(args.seed, q, args.attempts, args.seconds, root))
        name = f"shutdown-race-seed-{args.seed}"
    diff = Differential(script=str(Path(args.script).resolve()) if args.script else f"{args.recipe}:{args.seed}",
                        rows=tuple(rows), attempts=args.attempts, seconds=args.seconds)
    print(diff.table())
    out = Path(args.json) if args.json else Path("artifacts/repro") / f"{name}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(diff.to_dict(), indent=2) + "\n")
    print(f"json: {out}")
    if args.to_catalog:
        entry = findings.write_entry(diff, args.to_catalog, Path(args.catalog_dir))
        print(f"catalog: {entry} (tests/migration/test_findings.py runs it)")
    broken = [r for r in rows if r.error]
    for r in broken:
        print(f"harness repro: {r.binary}: {r.error}", file=sys.stderr)
    return 1 if diff.affected else 0
