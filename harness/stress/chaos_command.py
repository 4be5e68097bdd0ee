"""`harness chaos`: plans of API-surface actions against migrating pairs drawn from the
catalog; oracles; state coverage; every distinct violation minimised (own budget)
and exported as a standalone reproducer that is run to confirm it (own budget).

Exit status: 0 nothing found, 1 violations found, 2 usage error.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path

from harness.qemu import accel as accel_mod
from harness.qemu.binary import common_machine_type, probe
from harness.qemu.schema import probe_surface
from harness.qemu.spec import MachineSpec, SpecError
from harness.report.chaos_reproducer import LINUX_NOTE, export_chaos, run_script
from harness.run import TestRun
from harness.stress import bases as bases_mod
from harness.stress import guests as guests_mod
from harness.stress.coverage import Coverage
from harness.stress.engine import ChaosRecipe, base_of
from harness.stress import display
from harness.stress.hammer import (HammerConfig, cleanup_empty, draw_attempt, hammer, quiet_expected_noise,
                                   with_malloc_perturb)
from harness.stress.minimise import minimise, trials_for
from harness.stress.plans import ChaosPlan, PlanError


def add_parser(sub) -> None:
    p = sub.add_parser("chaos", help="API-surface actions during migrations drawn from the catalog; "
                                     "oracles; coverage; minimised standalone reproducers",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--qemu", default=os.environ.get("QTEST_QEMU_BINARY", "qemu-system-x86_64"),
                   help="QEMU binary for both sides ($QTEST_QEMU_BINARY)")
    p.add_argument("--qemu-src", default=os.environ.get("QTEST_QEMU_BINARY_SRC"),
                   help="source binary ($QTEST_QEMU_BINARY_SRC; default --qemu)")
    p.add_argument("--qemu-dst", default=os.environ.get("QTEST_QEMU_BINARY_DST"),
                   help="destination binary ($QTEST_QEMU_BINARY_DST; default --qemu)")
    p.add_argument("--accel", default="auto", help="tcg, kvm or auto (measured)")
    p.add_argument("--seconds", type=float, default=600.0, help="exploration budget")
    p.add_argument("-j", "--parallel", type=int, default=os.cpu_count() or 2, help="worker processes")
    p.add_argument("--actions", type=int, default=6, help="steps per fresh plan (mutations may add some)")
    p.add_argument("--span-ms", type=int, default=500, help="clock-fired steps fall within this window")
    p.add_argument("--families", default="", help="comma-separated catalog families to draw bases "
                                                  "from (default: every eligible one)")
    p.add_argument("--scenario", action="append", default=[], metavar="PATH",
                   help="draw bases only from this catalog path (repeatable)")
    p.add_argument("--linux-guest", choices=("auto", "off"), default="auto",
                   help=f"auto: about 1 fresh plan in {guests_mod.LINUX_ONE_IN} boots the Linux guest "
                        "when its image is built (harness images build); off: the boot sector only")
    p.add_argument("--kinds", default="", help="comma-separated action kinds to draw only (default: "
                                               "all; e.g. freeze,quit to aim at hangs and shutdown)")
    p.add_argument("--corpus", metavar="DIR", help="plans that reached new coverage: loaded at start, "
                                                   "added to while running (default: ARTIFACTS/corpus)")
    p.add_argument("--seed", type=int, default=None, help="session seed (default: random, printed)")
    p.add_argument("--replay", metavar="PLAN_JSON", help="run one recorded plan (plan.json) again")
    p.add_argument("--replay-seed", type=int, metavar="ATTEMPT_SEED",
                   help="re-draw one attempt from its seed.txt (fresh draws only; mutated plans: --replay)")
    p.add_argument("--minimise-seconds", type=float, default=120.0,
                   help="budget per distinct violation for minimisation")
    p.add_argument("--verify-seconds", type=float, default=120.0,
                   help="budget per exported reproducer's standalone confirmation")
    p.add_argument("--max-findings", type=int, default=12, help="violations followed up at most")
    p.add_argument("--no-malloc-perturb", action="store_true", help="no random MALLOC_PERTURB_")
    p.add_argument("--spinning-guest", action="store_true",
                   help="qtest's boot sector under SeaBIOS, spinning a core per running side (the "
                        "highest dirty rate; about half the plans/s) instead of its paced firmware form")
    p.add_argument("--allow-known", action="store_true",
                   help="exit 0 if every violation is a known QEMU bug")
    p.add_argument("--artifacts", default="artifacts/chaos", help="root of the run's artifacts")


def _validate(args) -> None:
    if args.seconds <= 0:
        raise SpecError(f"--seconds {args.seconds:g} must be > 0")
    if args.actions < 1 or args.actions > 64:
        raise SpecError(f"--actions {args.actions} must be 1..64")
    if not 0 <= args.span_ms <= 60_000:
        raise SpecError(f"--span-ms {args.span_ms} must be 0..60000")
    if args.parallel < 1 or args.parallel > 64:
        raise SpecError(f"-j {args.parallel} must be 1..64")
    if args.max_findings < 0:
        raise SpecError(f"--max-findings {args.max_findings} must be >= 0")
    if args.minimise_seconds < 0 or args.verify_seconds < 0:
        raise SpecError("--minimise-seconds and --verify-seconds must be >= 0")
    from harness.runtime.actions import BY_KIND
    for k in _kinds(args):
        if k not in BY_KIND:
            raise SpecError(f"--kinds {k}: no such action (have {', '.join(sorted(BY_KIND))})")


def _kinds(args) -> tuple:
    return tuple(k for k in args.kinds.split(",") if k)


def main(args) -> int:
    from harness import proctree
    with proctree.interruptible("chaos", args.artifacts):
        return _main(args)


def _main(args) -> int:
    quiet_expected_noise()
    _validate(args)
    from harness import dirs
    dirs.local_run_root()                          # before any worker or QEMU starts
    dirs.writable_dir(args.artifacts, "--artifacts", create=False)
    src_bin = probe(args.qemu_src or args.qemu).path
    dst_bin = probe(args.qemu_dst or args.qemu).path
    accel = accel_mod.resolve(src_bin, args.accel)
    mt = "q35"
    if src_bin != dst_bin:
        mt = common_machine_type(probe(src_bin), probe(dst_bin)) or "q35"
    families = tuple(f for f in args.families.split(",") if f)
    check = bases_mod.requirement_check(src_bin, dst_bin, accel)
    version = probe(src_bin).version_tuple
    bases = bases_mod.eligible(families or None, tuple(args.scenario) or None, check=check, version=version)
    for family, why in bases_mod.skipped(families or None, check, version).items():
        print(f"chaos: family {family} has no base here: {why}", file=sys.stderr, flush=True)
    linux = args.linux_guest == "auto" and guests_mod.linux_missing() is None
    root = Path(args.artifacts).resolve() / time.strftime("%Y%m%d-%H%M%S")
    replaying = args.replay or args.replay_seed is not None
    plan = _load_plan(args.replay, bases) if args.replay else None   # before any QEMU starts
    surface = probe_surface(src_bin)
    corpus = Path(args.corpus).resolve() if args.corpus else root / "corpus"
    recipe = ChaosRecipe(surface=surface, bases=bases, actions=args.actions, span_ms=args.span_ms,
                         corpus_dir=None if replaying else str(corpus), dst_binary=dst_bin,
                         kinds=_kinds(args), spinning_guest=args.spinning_guest,
                         linux=linux)
    base_spec = MachineSpec(binary=src_bin, accel=accel, machine_type=mt)
    if replaying:
        if plan is None:
            plan, perturb = draw_attempt(recipe, args.replay_seed, not args.no_malloc_perturb)
        else:
            perturb = None if args.no_malloc_perturb else random.randint(1, 255)
        v = recipe.attempt(TestRun(root / "replay"), with_malloc_perturb(base_spec, perturb), plan)
        print(json.dumps({"signature": v.signature, "malloc_perturb": perturb, "plan": plan.to_dict(),
                          "applied": v.applied, "artifacts": str(root / "replay")}, indent=2))
        return 0 if v.ok else 1
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    root.mkdir(parents=True, exist_ok=True)
    (root / "seed.txt").write_text(json.dumps({
        "seed": seed, "qemu_src": src_bin, "qemu_dst": dst_bin, "accel": accel, "machine_type": mt,
        "actions": args.actions, "span_ms": args.span_ms, "kinds": list(_kinds(args)), "families": list(families),
        "scenario": args.scenario, "corpus": str(corpus), "malloc_perturb": not args.no_malloc_perturb,
        "spinning_guest": args.spinning_guest,
        "linux_guest": args.linux_guest, "linux_drawn": linux,
        "bases": [b.path for b in bases]}, indent=2) + "\n")
    guest_words = (f"Linux guest ~1 in {guests_mod.LINUX_ONE_IN}" if linux else
                   "boot sector only" + ("" if args.linux_guest == "off" else
                                         f" ({guests_mod.linux_missing()})"))
    print(f"chaos seed {seed}: {len(bases)} base(s), {guest_words}, {len(surface.capabilities)} capabilities, "
          f"{len(surface.parameters)} parameters; -j {args.parallel}; exploring {args.seconds:g}s, "
          f"then per violation (at most {args.max_findings}, {args.parallel} at a time) minimising "
          f"<= {args.minimise_seconds:g}s and verifying <= {args.verify_seconds:g}s (in each budget, "
          f"and in exploring, a plan still running at its end finishes: a hung one takes up to ~60 s); "
          f"artifacts {root}", file=sys.stderr, flush=True)
    cfg = HammerConfig(base=base_spec, artifacts=root / "runs", seconds=args.seconds,
                       parallel=args.parallel, seed=seed, malloc_perturb=not args.no_malloc_perturb)
    triage = hammer(recipe, cfg, display.for_terminal())
    coverage = Coverage()
    coverage.add(triage.coverage)
    rows = triage.rows()
    for st in rows:
        st.attempts_seen = triage.attempts
    findings = mark_duplicates(_follow_ups(rows[:args.max_findings], recipe, base_spec, root, args))
    # plans_per_s: over the whole exploration, its tail included (attempts still running at
    # the deadline, a hung one up to ~60 s); explore_plans_per_s: the plans that ended
    # within --seconds, over --seconds (the steady rate, what a longer run approaches).
    summary = {"seed": seed, "plans": triage.attempts, "seconds": round(triage.elapsed, 1),
               "plans_per_s": round(triage.attempts / triage.elapsed, 2) if triage.elapsed else 0,
               "explore_plans_per_s": round(triage.in_budget / args.seconds, 2),
               "coverage": coverage.counts(), "violations": findings}
    triage.write(root / "triage.json")
    (root / "findings.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(triage.table())
    for f in findings:
        seen = f" (seen as '{f['signature_seen']}')" if f.get("signature_seen") else ""
        dup = (f"; the same as finding {f['duplicate_of'] + 1}" if "duplicate_of" in f else "")
        print(f"- {f['signature']}{seen}{dup}: {f['count']} hit(s) in {triage.attempts} plans; "
              f"{f['actions_before']} -> {f['actions_after']} step(s); {f.get('standalone', '-')}\n"
              f"  reproducer {f.get('reproducer', '-')}")
    if triage.errors:
        print(f"harness errors: {len(triage.errors)} (first: {triage.errors[0]['error']})")
    c = coverage.counts()
    print(f"seed {seed}; {triage.attempts} plans in {triage.elapsed:.0f}s "
          f"({summary['plans_per_s']}/s; {triage.in_budget} within the {args.seconds:g}s budget: "
          f"{summary['explore_plans_per_s']}/s); coverage {c['tuples']} tuples, {c['transitions']} transitions, "
          f"{c['action_kinds']} action kinds; findings: {root / 'findings.json'}")
    cleanup_empty(root)
    from harness.stress import known_bugs
    unknown = [st for st in rows if known_bugs.match(st.signature) is None]
    for st in rows:
        bug = known_bugs.match(st.signature)
        if bug is not None:
            print(f"known: {st.signature} ({bug.url})")
    if triage.errors:       # attempts that the harness itself could not run: not a clean run
        return 1
    if not rows or (args.allow_known and not unknown):
        return 0
    return 1


def mark_duplicates(findings: list[dict]) -> list[dict]:
    """A bare crash whose frames the minimiser found may be a finding already listed:
    it says so (duplicate_of: the first one's index) instead of counting twice."""
    first: dict[str, int] = {}
    for i, f in enumerate(findings):
        if f["signature"] in first:
            f["duplicate_of"] = first[f["signature"]]
        else:
            first[f["signature"]] = i
    return findings


def _load_plan(path: str, bases) -> ChaosPlan:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(f"chaos --replay {path}: {exc}") from None
    try:
        return ChaosPlan.from_dict(data, known_bases=set(bases_mod.by_path(bases)) | _catalog_paths())
    except PlanError as exc:
        raise SpecError(f"chaos --replay {path}: {exc}") from None


def _catalog_paths() -> set:
    from harness.migration import catalog
    return set(catalog.by_path())


def _follow_ups(rows: list, recipe: ChaosRecipe, base_spec: MachineSpec, root: Path, args) -> list[dict]:
    """Follow every violation up, -j of them at a time (each in its own worker process,
    dying with us; an interrupt stops them all, their QEMUs and run dirs with them).
    Each keeps its own budgets, so the whole phase takes at most
    ceil(n / j) * (minimise + verify) seconds."""
    n = len(rows)
    jobs = [(i, st) for i, st in enumerate(rows)]
    workers = min(args.parallel, n)
    if workers <= 1:
        return [_follow_up_numbered(i, n, st, recipe, base_spec, root, args) for i, st in jobs]
    import multiprocessing as mp
    import queue
    from harness import proctree
    from harness.stress.hammer import stop_workers
    ctx = mp.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_follow_up_worker, daemon=True,
                         args=(jobs[w::workers], n, recipe, base_spec, root, args, out, os.getpid()))
             for w in range(workers)]
    results: dict[int, dict] = {}
    try:
        with proctree.signals_blocked():
            for p in procs:
                p.start()
        while len(results) < n:
            try:
                i, info = out.get(timeout=0.5)
                results[i] = info
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break
    finally:
        stop_workers(procs, stop)
    return [results.get(i, {"signature": st.signature, "kind": st.kind, "count": st.count,
                            "actions_before": "-", "actions_after": "-",
                            "standalone": "not followed up: its worker died"})
            for i, st in jobs]


def _follow_up_worker(jobs, n, recipe, base_spec, root, args, out, parent) -> None:
    from harness import proctree
    proctree.become_worker(parent)
    quiet_expected_noise()
    for i, st in jobs:
        out.put((i, _follow_up_numbered(i, n, st, recipe, base_spec, root, args)))


def _follow_up_numbered(i: int, n: int, st, recipe, base_spec, root, args) -> dict:
    print(f"[{i + 1}/{n}] following up {st.signature} ({st.count} hit(s))", file=sys.stderr, flush=True)
    return _follow_up(st, recipe, base_spec, root, args)


def _follow_up(st, recipe: ChaosRecipe, base_spec: MachineSpec, root: Path, args) -> dict:
    """Minimise the first plan that showed this signature; export and verify a reproducer."""
    from harness.stress.command import slug
    plan = ChaosPlan.from_dict(st.first_variant)
    info = {"signature": st.signature, "kind": st.kind, "count": st.count, "base": plan.base,
            "first_artifacts": st.first_artifacts, "actions_before": len(plan.steps)}
    name = slug(st.signature)
    if args.minimise_seconds > 0:
        print(f"    minimising {len(plan.steps)} step(s), <= {args.minimise_seconds:g}s", file=sys.stderr,
              flush=True)
        res = minimise(plan, st.signature, base_spec, root / "minimise" / name,
                       budget_s=args.minimise_seconds, attempt=recipe.attempt)
        info.update(actions_after=len(res.minimal.steps), original_rate=res.original_rate,
                    final_rate=res.final_rate, minimise_runs=res.runs, minimise_log=res.log,
                    minimal_plan=res.minimal.to_dict(), minimised=res.reproducible)
        if res.signature != st.signature:     # a bare crash's frames, from the minimiser's cores
            info.update(signature=res.signature, signature_seen=st.signature)
        rate = res.final_rate or res.original_rate
        minimal, measured = res.minimal, f"minimiser {res.final_rate:.2f} per run"
        if not res.reproducible:
            info["note"] = "not reproduced within the minimiser's budget: exported unminimised"
            minimal = plan
    else:
        rate, minimal, measured = st.count / max(1, st.attempts_seen), plan, "not minimised"
        info["note"] = "--minimise-seconds 0: exported unminimised"
    info["actions_after"] = len(minimal.steps)
    attempts = max(5, min(100, trials_for(rate, 0.05, cap=100))) if rate else 50
    hit_dir = _a_hit(root / "minimise" / name) or Path(st.first_artifacts)
    out = root / "reproducers" / f"{name}.py"
    guest_note = ""
    if minimal.guest != guests_mod.BOOTBLOCK:
        # The script carries the boot sector only: export from a boot-sector run of the plan.
        minimal = dataclasses.replace(minimal, guest=guests_mod.BOOTBLOCK)
        hit_dir = root / "minimise" / name / "bootblock-export"
        v = recipe.attempt(TestRun(hit_dir), base_spec, minimal)
        guest_note = f"{LINUX_NOTE}; the boot-sector run of this plan gave: {v.signature}"
        info["note"] = (info.get("note", "") + "; " if info.get("note") else "") + guest_note
    try:
        export_chaos(minimal, info["signature"], hit_dir, out, base=base_of(minimal, recipe.bases),
                     hit_rate=f"{st.count} hit(s) in the exploration; {measured}",
                     versions=probe(base_spec.binary).version, guest_note=guest_note)
    except (OSError, ValueError, StopIteration, AttributeError) as exc:
        info["standalone"] = f"not exported: {exc}"
        return info
    info["reproducer"] = str(out)
    if args.verify_seconds <= 0:
        info["standalone"] = "not verified (--verify-seconds 0)"
        return info
    print(f"    verifying {out.name} standalone: {attempts} attempt(s), <= {args.verify_seconds:g}s",
          file=sys.stderr, flush=True)
    rc, line = run_script(out, attempts, args.verify_seconds, base_spec.binary,
                          recipe.dst_binary or base_spec.binary)
    info["standalone"] = {0: "standalone: not seen", 1: "standalone: reproduces",
                          125: "standalone: could not decide"}.get(rc, f"standalone: exit {rc}") + f" ({line})"
    return info


def _a_hit(d: Path) -> Path | None:
    hits = sorted(p for p in d.glob("try-*") if (p / "source").is_dir())
    return hits[-1] if hits else None
