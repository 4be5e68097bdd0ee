"""Scenario: one declared migration case, frozen, with a qtest-style path id.

Adding a mode to the catalog is adding one Scenario; a driver is only added
when the flow itself is new.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from harness.migration.transports import Transport
from harness.qemu.spec import GuestKind, SpecError

TIERS = frozenset({"smoke", "full", "slow"})
PATH_RX = re.compile(r"^/migration(/[a-z0-9][a-z0-9_.+-]*)+$")


class Flow(enum.Enum):
    PRECOPY = "precopy"


class Result(enum.Enum):
    COMPLETED = "completed"


@dataclass(frozen=True)
class KnownBug:
    """A QEMU bug this scenario hits: the test becomes a strict expected failure."""

    url: str
    summary: str
    fixed_in: tuple[int, int, int] | None = None  # first QEMU version with the fix

    def affects(self, version: tuple[int, int, int]) -> bool:
        return self.fixed_in is None or version < self.fixed_in


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class Scenario:
    path: str
    flow: Flow = Flow.PRECOPY
    transport: Transport = Transport.TCP
    caps: Mapping[str, bool] = field(default_factory=dict)       # both sides
    params: Mapping[str, Any] = field(default_factory=dict)      # source
    dst_params: Mapping[str, Any] = field(default_factory=dict)
    converge: bool = True
    expect: Result = Result.COMPLETED
    tiers: frozenset[str] = frozenset({"full"})
    guest: GuestKind | None = None       # None: the session's --guest
    memory_mib: int | None = None
    known_bug: KnownBug | None = None
    note: str = ""

    def __post_init__(self):
        if not PATH_RX.match(self.path):
            raise SpecError(f"scenario path '{self.path}' is not a /migration/... path id")
        bad = set(self.tiers) - TIERS
        if bad or not self.tiers:
            raise SpecError(f"scenario {self.path}: tiers {sorted(bad) or '[]'} not in {sorted(TIERS)}")
        for name in ("caps", "params", "dst_params"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        for k, v in self.caps.items():
            if not isinstance(v, bool):
                raise SpecError(f"scenario {self.path}: capability {k} must be true/false, got {v!r}")

    @property
    def family(self) -> str:
        return self.path.split("/")[2]
