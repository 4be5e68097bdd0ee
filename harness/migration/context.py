"""ScenarioContext: what a flow driver gets to run one scenario."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from harness.config import HarnessConfig
from harness.migration.pair import Pair, make_pair
from harness.migration.scenario import Scenario
from harness.migration.tls import Setup
from harness.qemu.machine import Machine
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
        if s.options.accel_properties():
            changes["accel_props"] = s.options.accel_properties()
        return cls(s, run, base.with_(**changes), src_binary, dst_binary)

    def pair(self, *, dst_paused: bool = True, src_extra: tuple[str, ...] = (),
             dst_extra: tuple[str, ...] = ()) -> Pair:
        s, st = self.scenario, self.setup
        return make_pair(self.run, self.spec, dst_binary=self.dst_binary, dst_paused=dst_paused,
                         src_extra=s.src_args + st.src_args + src_extra,
                         dst_extra=s.dst_args + st.dst_args + dst_extra)

    # -- per-test setup declared in the options (TLS credentials) ------------
    @property
    def workdir(self) -> Path:
        """A directory of this test's own (inside its artifacts: kept on failure)."""
        d = self.run.artifacts / "setup"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @cached_property
    def setup(self) -> Setup:
        """What the options' TLS setup materialises, made once per test."""
        total = Setup()
        tls = self.scenario.options.tls_setup()
        if tls is not None:
            total = total + tls.materialize(self.workdir,
                                            dst_address=self.run.placement.dst.listen_address)
        return self._staged(total)

    def _staged(self, st: Setup) -> Setup:
        """Remote QEMUs read the setup files from a copy on their own host."""
        src, dst = self.run.placement.src, self.run.placement.dst
        if src.is_local and dst.is_local:
            return st
        local = str(self.workdir)
        src_dir = self.run.stage_tree(src, self.workdir) if not src.is_local else local
        dst_dir = self.run.stage_tree(dst, self.workdir) if not dst.is_local else local
        fix = lambda args, d: tuple(a.replace(local, d) for a in args)  # noqa: E731
        return Setup(fix(st.src_args, src_dir), fix(st.dst_args, dst_dir),
                     st.src_params, st.dst_params, st.files)

    @property
    def src_params(self) -> dict:
        """Source migration parameters: the scenario's, plus what its setup needs."""
        return {**self.setup.src_params, **self.scenario.params}

    @property
    def dst_params(self) -> dict:
        return {**self.setup.dst_params, **self.scenario.dst_params}

    # -- fresh machines (a new destination after a cancel, repeated attempts) --
    def source(self, name: str = "source", *, extra: tuple[str, ...] = ()) -> Machine:
        s, st = self.scenario, self.setup
        spec = self.spec.with_(name=name, extra_args=self.spec.extra_args + s.src_args
                               + st.src_args + extra)
        return self.run.machine(spec)

    def destination(self, name: str = "destination", *, paused: bool = True,
                    extra: tuple[str, ...] = ()) -> Machine:
        """Like the pair's destination (-incoming defer, -S unless paused=False)."""
        s, st = self.scenario, self.setup
        spec = self.spec.with_(name=name, binary=self.dst_binary, incoming="defer", paused=paused,
                               extra_args=self.spec.extra_args + s.dst_args + st.dst_args + extra)
        return self.run.machine(spec)
