"""ScenarioContext: what a flow driver gets to run one scenario."""
from __future__ import annotations

from dataclasses import dataclass

from harness.config import HarnessConfig
from harness.migration.pair import Pair, make_pair
from harness.migration.scenario import Scenario
from harness.qemu.spec import GuestSpec, MachineSpec
from harness.run import TestRun


@dataclass
class ScenarioContext:
    scenario: Scenario
    run: TestRun
    spec: MachineSpec          # the session's base spec adjusted by the scenario
    src_binary: str
    dst_binary: str

    @classmethod
    def build(cls, s: Scenario, run: TestRun, base: MachineSpec, cfg: HarnessConfig,
              src_binary: str, dst_binary: str) -> "ScenarioContext":
        changes: dict = {"binary": src_binary}
        if s.guest is not None:
            changes["guest"] = GuestSpec(kind=s.guest)
        if s.memory_mib is not None:
            changes["memory_mib"] = s.memory_mib
        return cls(s, run, base.with_(**changes), src_binary, dst_binary)

    def pair(self, *, dst_paused: bool = True, src_extra: tuple[str, ...] = (),
             dst_extra: tuple[str, ...] = ()) -> Pair:
        s = self.scenario
        return make_pair(self.run, self.spec, dst_binary=self.dst_binary, dst_paused=dst_paused,
                         src_extra=s.src_args + src_extra, dst_extra=s.dst_args + dst_extra)
