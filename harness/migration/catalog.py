"""The declared scenarios. One entry per mode; tiers pick what runs when."""
from __future__ import annotations

from harness.migration.scenario import Scenario
from harness.migration.transports import Transport
from harness.qemu.spec import SpecError

SMOKE = frozenset({"smoke", "full"})

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("/migration/precopy/tcp/plain", transport=Transport.TCP, tiers=SMOKE),
    Scenario("/migration/precopy/unix/plain", transport=Transport.UNIX, tiers=SMOKE),
)


def by_path() -> dict[str, Scenario]:
    seen: dict[str, Scenario] = {}
    for s in SCENARIOS:
        if s.path in seen:
            raise SpecError(f"duplicate scenario path {s.path}")
        seen[s.path] = s
    return seen


def select(tier: str | None = None) -> list[Scenario]:
    return [s for s in by_path().values() if tier is None or tier in s.tiers]
