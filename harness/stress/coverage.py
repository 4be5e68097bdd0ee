"""State coverage as feedback: which (side, migration status, run state, action,
outcome class) tuples and which status transitions the plans have reached.

A plan that reaches a tuple no plan reached before joins the corpus (a folder
of plan files, reloadable with --corpus); new plans are often mutations of
corpus plans, so the search keeps pushing at states it has just opened up.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from harness.stress.plans import ChaosPlan, PlanError


def action_tuple(side: str, status: str, runstate: str, key: str, outcome: str) -> str:
    return f"{side}|{status}|{runstate}|{key}|{outcome}"


def transition_tuple(side: str, before: str, after: str) -> str:
    return f"{side}|{before}->{after}"


class Coverage:
    def __init__(self):
        self.seen: dict[str, int] = {}

    def add(self, tuples) -> list[str]:
        """Record tuples; return the ones never seen before."""
        new = []
        for t in tuples:
            if t not in self.seen:
                new.append(t)
                self.seen[t] = 0
            self.seen[t] += 1
        return new

    def counts(self) -> dict:
        actions = [t for t in self.seen if "->" not in t]
        return {"tuples": len(actions), "transitions": len(self.seen) - len(actions),
                "action_kinds": len({t.split("|")[3] for t in actions})}


class Corpus:
    """Plans that reached new coverage, on disk (one JSON file each)."""

    def __init__(self, directory: Path | None, known_bases=None):
        self.dir = directory
        self.plans: list[ChaosPlan] = []
        self.known_bases = known_bases
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def load(self, directory: Path) -> int:
        """Add the valid plans of a folder; malformed files are skipped, never fatal."""
        n = 0
        for f in sorted(directory.glob("*.json")):
            try:
                self.plans.append(ChaosPlan.from_dict(json.loads(f.read_text()), self.known_bases))
                n += 1
            except (OSError, ValueError, PlanError):
                continue
        return n

    def add(self, plan: ChaosPlan, new: list[str]) -> None:
        self.plans.append(plan)
        if self.dir is not None:
            d = dict(plan.to_dict(), new_coverage=new[:20])
            (self.dir / f"plan-{plan.seed:016x}.json").write_text(json.dumps(d, indent=1) + "\n")

    def pick(self, rng: random.Random) -> ChaosPlan | None:
        if not self.plans:
            return None
        # Favour recent entries: they opened the newest states.
        i = len(self.plans) - 1 - min(len(self.plans) - 1, int(rng.expovariate(0.3)))
        return self.plans[i]
