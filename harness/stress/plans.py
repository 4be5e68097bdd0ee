"""Chaos plans: a base, and steps (an action, a side, a moment), as plain data.

A step fires `at_ms` after the source's `migrate` command, or, with a trigger
(`on="dst:postcopy-active"`, `on="src:STOP"`), `at_ms` after that side first
reports that migration status or run-state event: phases, not only clocks.
Plans are recorded, replayed, minimised, mutated and exported; a plan read
from a file is validated completely before any QEMU starts.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from harness.qemu.spec import SpecError
from harness.runtime.actions import BY_KIND, SIDES, DrawContext

GUESTS = ("bootblock", "linux")    # harness.stress.guests
MAX_SPAN_MS = 60_000
TRIGGER_STATUSES = ("setup", "active", "device", "pre-switchover", "postcopy-active",
                    "postcopy-paused", "postcopy-recover", "cancelling", "completed", "failed", "colo")
TRIGGER_EVENTS = ("STOP", "RESUME")
CLUSTER = 0.35      # races need near-simultaneous events: often reuse an earlier moment
TRIGGERED = 0.4     # share of steps fired by a phase rather than the clock


class PlanError(SpecError):
    """A plan file is malformed; the message names the field."""


@dataclass(frozen=True)
class Step:
    kind: str
    side: str
    at_ms: int
    args: tuple = ()
    on: str | None = None        # "side:STATUS" or "side:EVENT"

    @property
    def action(self):
        return BY_KIND[self.kind]

    def describe(self) -> str:
        when = f"{self.on}+{self.at_ms}ms" if self.on else f"+{self.at_ms}ms"
        return f"{when} {self.side} {self.action.describe(self.args)}"

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "side": self.side, "at_ms": self.at_ms, "args": list(self.args)}
        if self.on:
            d["on"] = self.on
        return d


@dataclass(frozen=True)
class ChaosPlan:
    seed: int
    base: str
    steps: tuple
    span_ms: int
    guest: str = "bootblock"     # "bootblock" or "linux" (harness.stress.guests)

    @property
    def actions(self):      # the minimiser's word for steps
        return self.steps

    def to_dict(self) -> dict:
        d = {"seed": self.seed, "base": self.base, "span_ms": self.span_ms,
             "steps": [s.to_dict() for s in self.steps]}
        if self.guest != "bootblock":
            d["guest"] = self.guest
        return d

    def with_actions(self, steps) -> "ChaosPlan":
        return replace(self, steps=tuple(sorted(steps, key=_order)))

    @classmethod
    def from_dict(cls, d, known_bases=None) -> "ChaosPlan":
        """Validate everything; PlanError (one line) names the first bad field."""
        if not isinstance(d, dict):
            raise PlanError("plan: expected a JSON object")
        seed = _int(d, "seed", "plan")
        span = _int(d, "span_ms", "plan")
        if not 0 <= span <= MAX_SPAN_MS:
            raise PlanError(f"plan: span_ms {span} must be within 0..{MAX_SPAN_MS}")
        base = d.get("base", "/migration/chaos/precopy/tcp")
        if not isinstance(base, str):
            raise PlanError("plan: base must be a scenario path string")
        raw = d.get("steps", d.get("actions"))
        if not isinstance(raw, list):
            raise PlanError("plan: steps must be a list")
        steps = tuple(_step(i, s, span) for i, s in enumerate(raw))
        if known_bases is not None and base not in known_bases:
            raise PlanError(f"plan: base {base} is not a chaos base here")
        guest = d.get("guest", "bootblock")
        if guest not in GUESTS:
            raise PlanError(f"plan: guest must be one of {', '.join(GUESTS)}, got {guest!r}")
        return cls(seed, base, tuple(sorted(steps, key=_order)), span, guest)


def _order(s: Step):
    return (s.on or "", s.at_ms)


def _int(d: dict, key: str, where: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise PlanError(f"{where}: {key} must be an integer, got {v!r}")
    return v


def _step(i: int, d, span: int) -> Step:
    where = f"plan step {i}"
    if not isinstance(d, dict):
        raise PlanError(f"{where}: expected an object")
    kind = d.get("kind")
    if kind not in BY_KIND:
        raise PlanError(f"{where}: unknown kind {kind!r} (known: {', '.join(sorted(BY_KIND))})")
    side = d.get("side")
    if side not in SIDES:
        raise PlanError(f"{where}: side must be src or dst, got {side!r}")
    at = _int(d, "at_ms", where)
    if not 0 <= at <= span:
        raise PlanError(f"{where}: at_ms {at} is outside the plan's span 0..{span}")
    args = d.get("args", [])
    if not isinstance(args, list):
        raise PlanError(f"{where}: args must be a list")
    on = d.get("on")
    if on is not None:
        s, _, what = str(on).partition(":")
        if s not in SIDES or what not in TRIGGER_STATUSES + TRIGGER_EVENTS:
            raise PlanError(f"{where}: trigger {on!r} must be side:STATUS or side:EVENT")
    try:
        _check_args(BY_KIND[kind], tuple(args))
    except (TypeError, IndexError, ValueError) as exc:
        raise PlanError(f"{where}: bad args {args!r} for {kind}: {exc}") from None
    return Step(kind, side, at, tuple(args), on)


def _check_args(action, args: tuple) -> None:
    """Arity by drawing a sample: the args a kind takes are whatever its draw returns."""
    from harness.runtime.surface import Param, Surface
    sample = action.draw(random.Random(0), DrawContext(
        surface=Surface(frozenset(), ("events",), (Param("max-bandwidth", "int"),)),
        postcopy=True, snapshots=True, hotplug=True))
    if len(args) != len(sample):
        raise ValueError(f"takes {len(sample)} argument(s), got {len(args)}")
    for a, s in zip(args, sample):
        if isinstance(s, str) and not isinstance(a, str):
            raise TypeError(f"{a!r} should be a string")


# ------------------------------------------------------------------ drawing
def draw_step(rng: random.Random, dc: DrawContext, span_ms: int, earlier: list) -> Step:
    if dc.only:
        actions = [a for a in BY_KIND.values() if a.kind in dc.only and a.enabled(dc)]
    else:
        actions = [a for a in BY_KIND.values() if a.weight_in(dc) > 0 and a.enabled(dc)]
    if not actions:
        raise PlanError(f"no action of {', '.join(dc.only) or 'any kind'} can run on this base and binary")
    action = rng.choices(actions, [max(a.weight_in(dc), 1) for a in actions])[0]
    if earlier and rng.random() < CLUSTER:
        prev = rng.choice(earlier)
        side, on, at = prev.side, prev.on, min(span_ms, prev.at_ms + rng.randint(0, 5))
        if side not in action.sides:
            side = rng.choice(action.sides)
    else:
        side = rng.choice(action.sides)
        on, at = None, rng.randint(0, span_ms)
        if rng.random() < TRIGGERED:
            statuses = [s for s in TRIGGER_STATUSES if (dc.postcopy or not s.startswith("postcopy"))
                        and (dc.colo or s != "colo")]
            on = f"{rng.choice(SIDES)}:{rng.choice(statuses + list(TRIGGER_EVENTS))}"
            at = min(span_ms, int(rng.random() ** 3 * 200))   # mostly right at the phase
    return Step(action.kind, side, at, tuple(action.draw(rng, dc)), on)


def generate(rng: random.Random, dc: DrawContext, count: int, span_ms: int) -> list[Step]:
    out: list[Step] = []
    for _ in range(count):
        out.append(draw_step(rng, dc, span_ms, out))
    return sorted(out, key=_order)


def mutate(rng: random.Random, plan: ChaosPlan, dc: DrawContext, max_steps: int) -> ChaosPlan:
    """One or two small edits of a plan that reached new coverage."""
    steps = list(plan.steps)
    for _ in range(rng.randint(1, 2)):
        op = rng.choice(("add", "add", "drop", "retime", "redraw", "trigger"))
        if op == "add" or not steps:
            if len(steps) < max_steps:
                steps.append(draw_step(rng, dc, plan.span_ms, steps))
            continue
        i = rng.randrange(len(steps))
        s = steps[i]
        if op == "drop" and len(steps) > 1:
            steps.pop(i)
        elif op == "retime":
            steps[i] = replace(s, at_ms=max(0, min(plan.span_ms, s.at_ms + rng.randint(-50, 50))))
        elif op == "redraw" and s.action.enabled(dc):
            steps[i] = replace(s, args=tuple(s.action.draw(rng, dc)))
        elif op == "trigger":
            other = rng.choice(steps)
            steps[i] = replace(s, on=other.on, at_ms=min(plan.span_ms, other.at_ms + rng.randint(0, 3)))
    return replace(plan, seed=rng.getrandbits(62), steps=tuple(sorted(steps, key=_order)))
