"""`harness hammer shutdown-race ...`: the race recipe from the command line.

Exit status: 0 nothing was hit; 1 a crash, hang or lost VM was hit (with
--allow-known: only a hit no known bug explains), or harness errors; 2 usage
error (bad option values, a --commands name the binary's QMP schema lacks).
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from harness import dirs, proctree
from harness.qemu import accel as accel_mod
from harness.qemu.binary import probe
from harness.qemu.spec import MachineSpec, SpecError, UsageError
from harness.report import repro_contract
from harness.report.reproducer import ExportInfo, export_shutdown_race, run_reproducer
from harness.stress import display
from harness.stress.hammer import (HammerConfig, cleanup_empty, hammer,
                                   quiet_expected_noise, run_one)
from harness.stress.races import MIGRATION_QUERIES, RaceState, ShutdownMethod, ShutdownRace
from harness.stress.recipes import CancelRace, DestinationConfigRace


def slug(signature: str) -> str:
    """'crash SIGABRT: migrate_mode: Assertion ...' -> 'crash-SIGABRT-migrate_mode-Assertion-mode'."""
    import re
    words = re.findall(r"[A-Za-z0-9_]+", signature)[:6]
    return "-".join(words) or "failure"


def add_parser(sub) -> None:
    p = sub.add_parser("hammer", help="hammer a race recipe; triage crashes; export reproducers",
                       description="Run a race recipe from worker processes until time, count or "
                                   "a crash; triage by signature; export a standalone reproducer "
                                   "per signature. Exit 0 clean, 1 when something was found.")
    p.add_argument("recipe", choices=["shutdown-race", "cancel-race", "dest-config-race"],
                   help="shutdown-race: queries while QEMU goes down; cancel-race: migrate_cancel "
                        "at random moments; dest-config-race: destination caps/params changed "
                        "while connecting")
    p.add_argument("--flow", choices=["precopy", "multifd", "postcopy", "random"], default="random",
                   help="cancel-race: which flow to cancel")
    p.add_argument("--qemu", default="qemu-system-x86_64",
                   help="QEMU binary (path or name on PATH; $QTEST_QEMU_BINARY if set)")
    p.add_argument("--accel", default="auto", choices=["auto", "tcg", "kvm"],
                   help="accelerator (auto: measured once per binary, cached)")
    p.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    p.add_argument("--attempts", type=int, default=None, help="stop after N attempts in total")
    p.add_argument("-j", "--parallel", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: the CPU count)")
    p.add_argument("--until-crash", action="store_true",
                   help="stop at the first crash, hang or lost VM (known bug or not)")
    p.add_argument("--until-new", action="store_true",
                   help="stop at the first crash, hang or lost VM no known bug explains")
    p.add_argument("--allow-known", action="store_true",
                   help="exit 0 when every hit is a known bug (default: any hit exits 1)")
    p.add_argument("--method", choices=[m.value for m in ShutdownMethod], default="sigterm",
                   help="shutdown-race: how QEMU is brought down")
    p.add_argument("--state", choices=[s.value for s in RaceState], default="idle",
                   help="shutdown-race: what QEMU is doing when it goes down")
    p.add_argument("--monitors", type=int, default=1,
                   help="shutdown-race: raw QMP monitors, each preloaded with queries")
    p.add_argument("--flood", type=int, default=2000,
                   help="shutdown-race: requests preloaded per monitor, in flight through the shutdown")
    p.add_argument("--no-oob", action="store_true",
                   help="shutdown-race: do not negotiate out-of-band on the monitors")
    p.add_argument("--commands", default="query-migrate",
                   help=f"comma-separated queries, e.g. {','.join(MIGRATION_QUERIES)}")
    p.add_argument("--random", action="store_true", help="draw method/state/monitors per attempt")
    p.add_argument("--seed", type=int, default=None, help="session seed (default: random, printed)")
    p.add_argument("--replay", type=int, default=None, metavar="ATTEMPT_SEED",
                   help="re-run exactly one recorded attempt (its seed.txt)")
    p.add_argument("--no-malloc-perturb", action="store_true",
                   help="do not give each QEMU a seeded random MALLOC_PERTURB_")
    p.add_argument("--artifacts", default="artifacts/hammer",
                   help="where attempt dirs, triage.json and reproducers go")
    p.add_argument("--verify-reproducers", type=float, default=0.0, metavar="SECONDS",
                   help="run each exported reproducer this long and record its hit rate")


def _recipe(args):
    if args.recipe == "cancel-race":
        flow = "precopy" if args.flow == "random" else args.flow
        return CancelRace(flow=flow, randomize=args.flow == "random")
    if args.recipe == "dest-config-race":
        return DestinationConfigRace()
    return ShutdownRace(method=ShutdownMethod(args.method), state=RaceState(args.state),
                        monitors=args.monitors, flood=args.flood, oob=not args.no_oob,
                        commands=tuple(c.strip() for c in args.commands.split(",") if c.strip()),
                        randomize=args.random)


def _check_commands(recipe, binary: str) -> None:
    """Every query the recipe floods must exist in the binary's QMP schema."""
    if not isinstance(recipe, ShutdownRace):
        return
    from harness.qemu import capabilities
    known = capabilities.probe(binary).commands
    missing = [c for c in recipe.commands if c not in known]
    if missing:
        raise UsageError(f"--commands: {', '.join(missing)} not in the QMP schema of {binary} "
                         f"(query-commands); e.g. {', '.join(MIGRATION_QUERIES)}")


def exit_status(triage, allow_known: bool) -> int:
    """0: nothing hit; 1: hit (or only known hits without --allow-known) or harness errors."""
    if getattr(triage, "errors", None):
        return 1
    hits = triage.hits(known=False) if allow_known else triage.hits()
    return 1 if hits else 0


def main(args) -> int:
    quiet_expected_noise()
    if args.parallel < 1 or args.parallel > 64:
        raise UsageError(f"--parallel {args.parallel} must be 1..64")
    if args.seconds <= 0:
        raise UsageError(f"--seconds {args.seconds} must be > 0")
    if args.attempts is not None and args.attempts < 1:
        raise UsageError(f"--attempts {args.attempts} must be >= 1")
    try:
        recipe = _recipe(args)
    except SpecError as exc:
        raise UsageError(str(exc)) from None
    dirs.local_run_root()                          # before any worker or QEMU starts
    dirs.writable_dir(args.artifacts, "--artifacts", create=False)
    binary = probe(args.qemu).path
    _check_commands(recipe, binary)
    dirs.writable_dir(args.artifacts, "--artifacts")   # all checked: now make it
    base = MachineSpec(binary=binary, accel=accel_mod.resolve(binary, args.accel))
    root = Path(args.artifacts).resolve() / time.strftime("%Y%m%d-%H%M%S")
    with proctree.interruptible(artifacts=root):   # a Ctrl-C names where the evidence is
        return _run(args, recipe, base, root)


def _run(args, recipe, base: MachineSpec, root: Path) -> int:
    if args.replay is not None:
        rec = run_one(recipe, base, root / "replay", args.replay, not args.no_malloc_perturb,
                      keep_passing=True)
        print(json.dumps({"seed": rec.seed, "variant": rec.variant, "malloc_perturb": rec.malloc_perturb,
                          "signature": rec.signature, "artifacts": rec.artifacts}, indent=2))
        return 0 if rec.ok or (args.allow_known and rec.known) else 1
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    print(f"hammer {getattr(recipe, 'path', args.recipe)} seed {seed} parallel {args.parallel} artifacts {root}",
          file=sys.stderr, flush=True)
    cfg = HammerConfig(base=base, artifacts=root, seconds=args.seconds, attempts=args.attempts,
                       parallel=args.parallel, until_crash=args.until_crash,
                       until_new=args.until_new, seed=seed,
                       malloc_perturb=not args.no_malloc_perturb)
    triage = hammer(recipe, cfg, display.for_terminal())
    binary = base.binary
    version = probe(binary).version
    for st in triage.rows():
        if isinstance(recipe, ShutdownRace) and st.first_artifacts and st.kind in ("crash", "hang"):
            try:
                info = ExportInfo(hits=st.count, attempts=triage.attempts, qemu_version=version,
                                  versions_tried=(f"{version}: {st.count}/{triage.attempts}",))
                script = export_shutdown_race(Path(st.first_artifacts), st.first_variant,
                                              root / "reproducers" / f"{slug(st.signature)}.py", info)
                st.reproducer = str(script)
                if args.verify_reproducers > 0:
                    res = run_reproducer(script, 10_000, args.verify_reproducers, qemu=binary)
                    st.reproducer += (f" ({'reproduces' if res.hits else 'did not reproduce'}: "
                                      f"{res.hits}/{res.attempts})")
            except (OSError, ValueError, repro_contract.ContractError) as exc:
                st.reproducer = f"not exported: {exc}"
    triage.write(root / "triage.json")
    if triage.observations:
        print("what QEMU did (count, observation):")
        print(triage.observation_table())
    print(triage.table())
    el = triage.elapsed
    crashes = triage.count("crash")
    print(f"seed {seed}; triage: {root / 'triage.json'}")
    if triage.errors:
        print(f"harness errors: {len(triage.errors)} (first: {triage.errors[0]['error']})")
    print(f"attempts {triage.attempts} in {el:.1f}s; crashes {crashes}; "
          f"hits {triage.hits()} (known {triage.hits(known=True)}, new {triage.hits(known=False)}); "
          f"first failure at {triage.first_failure_at if triage.first_failure_at is not None else '-'}s")
    cleanup_empty(root)
    return exit_status(triage, args.allow_known)
