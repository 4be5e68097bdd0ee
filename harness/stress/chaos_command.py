"""`harness chaos`: random action plans against migrating pairs; every distinct
violation minimised and exported as a standalone reproducer that is run once
to confirm it."""
from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from harness.migration import tuning
from harness.qemu import accel as accel_mod
from harness.qemu.binary import probe
from harness.qemu.spec import MachineSpec, SpecError
from harness.report.chaos_reproducer import export_chaos, run_script
from harness.run import TestRun
from harness.stress.chaos import ChaosPlan, ChaosRecipe, chaos_attempt
from harness.stress.command import slug
from harness.stress.hammer import (HammerConfig, cleanup_empty, draw_attempt, hammer, print_progress,
                                   quiet_expected_noise, with_malloc_perturb)
from harness.stress.minimise import minimise, trials_for


def add_parser(sub) -> None:
    p = sub.add_parser("chaos", help="random actions during migration; oracles; minimised reproducers")
    p.add_argument("--qemu", default="qemu-system-x86_64")
    p.add_argument("--accel", default="auto")
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("-j", "--parallel", type=int, default=2)
    p.add_argument("--actions", type=int, default=6, help="actions per plan")
    p.add_argument("--span-ms", type=int, default=2000, help="actions fall within this window")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--replay", metavar="PLAN_JSON", help="run one recorded plan (plan.json) again")
    p.add_argument("--replay-seed", type=int, metavar="ATTEMPT_SEED",
                   help="re-run one attempt from its seed (seed.txt): same plan, same MALLOC_PERTURB_")
    p.add_argument("--minimise-seconds", type=float, default=240.0,
                   help="budget per distinct violation for minimisation")
    p.add_argument("--verify-attempts", type=int, default=5,
                   help="standalone runs of each exported reproducer")
    p.add_argument("--no-malloc-perturb", action="store_true")
    p.add_argument("--artifacts", default="artifacts/chaos")


def main(args) -> int:
    quiet_expected_noise()
    if args.actions < 1 or args.span_ms < 0 or args.parallel < 1:
        raise SpecError("chaos: --actions and -j must be >= 1, --span-ms >= 0")
    binary = probe(args.qemu).path
    base = MachineSpec(binary=binary, accel=accel_mod.resolve(binary, args.accel))
    root = Path(args.artifacts).resolve() / time.strftime("%Y%m%d-%H%M%S")
    recipe = ChaosRecipe(actions=args.actions, span_ms=args.span_ms)
    if args.replay or args.replay_seed is not None:
        if args.replay_seed is not None:
            plan, perturb = draw_attempt(recipe, args.replay_seed, not args.no_malloc_perturb)
        else:
            plan = _load_plan(args.replay)
            perturb = None if args.no_malloc_perturb else random.randint(1, 255)
        v = chaos_attempt(TestRun(root / "replay"), with_malloc_perturb(base, perturb), plan)
        print(json.dumps({"signature": v.signature, "malloc_perturb": perturb, "plan": plan.to_dict(),
                          "applied": v.applied, "artifacts": str(root / "replay")}, indent=2))
        return 0 if v.ok else 1
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    print(f"chaos seed {seed} parallel {args.parallel} artifacts {root}", file=sys.stderr, flush=True)
    cfg = HammerConfig(base=base, artifacts=root / "runs", seconds=args.seconds,
                       parallel=args.parallel, seed=seed, malloc_perturb=not args.no_malloc_perturb)
    triage = hammer(recipe, cfg, print_progress)
    findings = []
    for st in triage.rows():
        findings.append(_follow_up(st, base, root, args))
    triage.write(root / "triage.json")
    (root / "findings.json").write_text(json.dumps(findings, indent=2) + "\n")
    print(triage.table())
    for f in findings:
        print(f"- {f['signature']}: {f['count']} hit(s); minimised {f['actions_before']} -> "
              f"{f['actions_after']} action(s); reproducer {f.get('reproducer', '-')}: {f.get('standalone', '-')}")
    print(f"seed {seed}; {triage.attempts} plans in {triage.elapsed:.0f}s; findings: {root / 'findings.json'}")
    cleanup_empty(root)
    return 0


def _load_plan(path: str) -> ChaosPlan:
    try:
        return ChaosPlan.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise SpecError(f"chaos --replay: cannot read a plan from {path}: {exc}") from None


def _follow_up(st, base: MachineSpec, root: Path, args) -> dict:
    """Minimise the first plan that showed this signature; export and verify a reproducer."""
    plan = ChaosPlan.from_dict(st.first_variant)
    info = {"signature": st.signature, "kind": st.kind, "count": st.count,
            "first_artifacts": st.first_artifacts, "actions_before": len(plan.actions)}
    name = slug(st.signature)
    res = minimise(plan, st.signature, base, root / "minimise" / name, budget_s=args.minimise_seconds)
    info.update(actions_after=len(res.minimal.actions), original_rate=res.original_rate,
                final_rate=res.final_rate, minimise_runs=res.runs, minimise_log=res.log,
                minimal_plan=res.minimal.to_dict())
    # Enough standalone attempts to see a failure of the measured rate (95%), capped.
    attempts = max(args.verify_attempts, min(100, trials_for(res.final_rate or res.original_rate, 0.05, cap=100)
                                             if (res.final_rate or res.original_rate) else 0))
    if not res.reproducible:
        # Too rare to minimise within the budget: export the plan as found and give
        # the standalone script many more attempts to show it.
        info["actions_after"] = len(plan.actions)
        info["note"] = "rarer than the minimiser can sample: exported unminimised"
        attempts = args.verify_attempts * 10
    hit_dir = _a_hit(root / "minimise" / name) or Path(st.first_artifacts)
    out = root / "reproducers" / f"{name}.py"
    export_chaos(res.minimal, st.signature, hit_dir, out,
                 {"max-bandwidth": tuning.CONVERGE_BANDWIDTH, "downtime-limit": tuning.CONVERGE_DOWNTIME_MS},
                 {"max-bandwidth": tuning.NON_CONVERGE_BANDWIDTH,
                  "downtime-limit": tuning.NON_CONVERGE_DOWNTIME_MS})
    ok, line = run_script(out, attempts, 600)
    st.reproducer = str(out)
    info["reproducer"] = str(out)
    info["standalone"] = ("reproduces: " if ok else "did not reproduce: ") + line
    return info


def _a_hit(d: Path) -> Path | None:
    hits = sorted(p for p in d.glob("try-*") if (p / "source").is_dir())
    return hits[-1] if hits else None
