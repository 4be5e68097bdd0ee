"""The catalog: every family module's SCENARIOS, checked for duplicates.

A family is a module in harness.migration.families with a SCENARIOS tuple;
the family name is the second component of each path (/migration/<family>/...).
"""
from __future__ import annotations

import importlib
import pkgutil

from harness.migration import families
from harness.migration.scenario import Scenario
from harness.qemu.spec import SpecError


def all_scenarios() -> tuple[Scenario, ...]:
    out: list[Scenario] = []
    for mod in sorted(pkgutil.iter_modules(families.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{families.__name__}.{mod.name}")
        out.extend(getattr(module, "SCENARIOS", ()))
    seen: set[str] = set()
    for s in out:
        if s.path in seen:
            raise SpecError(f"duplicate scenario path {s.path}")
        seen.add(s.path)
    return tuple(out)


def by_path() -> dict[str, Scenario]:
    return {s.path: s for s in all_scenarios()}


def select(tier: str | None = None, families_: tuple[str, ...] | None = None) -> list[Scenario]:
    return [s for s in all_scenarios()
            if (tier is None or tier in s.tiers) and (families_ is None or s.family in families_)]
