"""Delta debugging for chaos plans, aware that failures are flaky.

First the original plan's hit rate p is measured. A candidate then gets up to
k = ceil(ln(miss) / ln(1 - p)) runs (capped), so a candidate that still has
the bug is rejected by bad luck with probability <= `miss`. Actions are
removed with ddmin, then the timings are compressed (all at once to 0, then
halved) while the same signature keeps appearing.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from harness.qemu.spec import MachineSpec
from harness.run import TestRun
from harness.stress.engine import chaos_attempt
from harness.stress.plans import ChaosPlan

MAX_TRIALS = 8


@dataclass
class MinimiseResult:
    signature: str
    original: ChaosPlan
    minimal: ChaosPlan
    original_rate: float
    final_rate: float
    runs: int = 0
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)
    reproducible: bool = True


class _Runner:
    def __init__(self, base: MachineSpec, art: Path, signature: str, deadline: float,
                 attempt: Callable = chaos_attempt):
        self.base, self.art, self.signature, self.deadline = base, art, signature, deadline
        self.attempt = attempt
        self.runs = 0

    def once(self, plan: ChaosPlan) -> bool:
        self.runs += 1
        run = TestRun(self.art / f"try-{self.runs:04d}")
        verdict = self.attempt(run, self.base, plan)
        hit = same_violation(self.signature, verdict.signature)
        if not hit:
            run.discard_artifacts()
        elif verdict.signature != self.signature:
            # A bare crash ("crash SIGSEGV", seen without a core) now has its frames
            # (minimiser runs always dump core): minimise towards that one crash, not
            # any crash by the same signal.
            self.signature = verdict.signature
        return hit

    def rate(self, plan: ChaosPlan, n: int) -> float:
        return sum(self.once(plan) for _ in range(n)) / n

    def adaptive_rate(self, plan: ChaosPlan, n: int, n_max: int) -> float:
        """At least n runs; for a rare failure keep going (to n_max, within the
        budget) until it has shown twice, so p is not estimated from one hit."""
        hits = runs = 0
        while runs < n or (hits < 2 and runs < n_max and time.monotonic() < self.deadline):
            hits += self.once(plan)
            runs += 1
        return hits / runs

    def reproduces(self, plan: ChaosPlan, trials: int) -> bool:
        for _ in range(trials):
            if time.monotonic() > self.deadline:
                return False
            if self.once(plan):
                return True
        return False


def same_violation(wanted: str, got: str) -> bool:
    """got shows the violation named wanted. A crash seen without a core has a bare
    signature ("crash SIGSEGV"); a later run of it that dumped core names its frames
    ("crash SIGSEGV: in f <- g"), and is the same violation."""
    if got == wanted:
        return True
    bare = wanted.startswith("crash SIG") and ":" not in wanted
    return bare and got.startswith(wanted + ":")


def trials_for(rate: float, miss: float = 0.1, cap: int = MAX_TRIALS) -> int:
    """Runs needed to see a failure of probability `rate` with chance >= 1 - miss."""
    if rate >= 1.0:
        return 1
    if rate <= 0.0:
        return cap
    return max(1, min(cap, math.ceil(math.log(miss) / math.log(1.0 - rate))))


def ddmin(items: list, test: Callable[[list], bool]) -> list:
    """Zeller's ddmin: a 1-minimal sublist for which test() still holds."""
    n = 2
    while len(items) >= 2:
        chunk = math.ceil(len(items) / n)
        subsets = [items[i:i + chunk] for i in range(0, len(items), chunk)]
        reduced = False
        for sub in subsets:
            if test(sub):
                items, n, reduced = sub, 2, True
                break
        if not reduced:
            for sub in subsets:
                rest = [x for x in items if x not in sub]
                if rest and test(rest):
                    items, n, reduced = rest, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(items):
                break
            n = min(len(items), n * 2)
    if len(items) == 1 and test([]):
        return []
    return items


def minimise(plan: ChaosPlan, signature: str, base: MachineSpec, art: Path,
             budget_s: float = 300.0, rate_runs: int = 4, rate_runs_max: int = 30,
             attempt: Callable = chaos_attempt) -> MinimiseResult:
    t0 = time.monotonic()
    r = _Runner(base, art, signature, t0 + budget_s, attempt)
    p0 = r.adaptive_rate(plan, rate_runs, max(rate_runs, rate_runs_max))
    res = MinimiseResult(signature, plan, plan, p0, p0)
    if p0 == 0.0:
        res.reproducible = False
        res.log.append(f"original plan did not reproduce in {r.runs} runs")
        res.runs, res.seconds = r.runs, time.monotonic() - t0
        return res
    k = trials_for(p0)
    res.log.append(f"original rate {p0:.2f} over {rate_runs} runs; {k} trial(s) per candidate")
    actions = ddmin(list(plan.actions), lambda sub: r.reproduces(plan.with_actions(sub), k))
    current = plan.with_actions(actions)
    res.log.append(f"ddmin: {len(plan.actions)} -> {len(actions)} action(s)")
    zeroed = current.with_actions([replace(a, at_ms=0) for a in current.actions])
    if current.actions and r.reproduces(zeroed, k):
        current = zeroed
        res.log.append("timings: all actions at +0ms still reproduce")
    else:
        while current.actions and max(a.at_ms for a in current.actions) > 10:
            halved = current.with_actions([replace(a, at_ms=a.at_ms // 2) for a in current.actions])
            if not r.reproduces(halved, k):
                break
            current = halved
            res.log.append(f"timings halved: last action at +{max(a.at_ms for a in current.actions)}ms")
    res.minimal = current
    res.final_rate = r.rate(current, rate_runs)
    res.runs, res.seconds = r.runs, time.monotonic() - t0
    if r.signature != signature:
        res.signature = r.signature
        res.log.append(f"signature: seen bare as '{signature}', its frames are '{r.signature}'")
    return res
