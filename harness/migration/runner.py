"""Run one Scenario: build the pair, dispatch to its flow's driver, prove integrity."""
from __future__ import annotations

from harness.config import HarnessConfig
from harness.migration import drivers
from harness.migration.pair import make_pair
from harness.migration.scenario import Flow, Scenario
from harness.qemu.binary import probe
from harness.qemu.spec import GuestSpec, MachineSpec
from harness.run import TestRun


def scenario_spec(s: Scenario, base: MachineSpec) -> MachineSpec:
    changes = {}
    if s.guest is not None:
        changes["guest"] = GuestSpec(kind=s.guest)
    if s.memory_mib is not None:
        changes["memory_mib"] = s.memory_mib
    return base.with_(**changes)


def run_scenario(s: Scenario, run: TestRun, base: MachineSpec, cfg: HarnessConfig) -> dict:
    spec = scenario_spec(s, base)
    pair = make_pair(run, spec, dst_binary=probe(cfg.qemu_dst).path)
    if s.flow is Flow.PRECOPY:
        res = drivers.precopy(pair, s.transport, caps=dict(s.caps), params=dict(s.params),
                              converge=s.converge)
        proof = drivers.prove_integrity(pair)
        return {"metrics": res.metrics.to_dict(), "integrity": proof}
    raise NotImplementedError(f"{s.path}: no driver for flow {s.flow.value}")
