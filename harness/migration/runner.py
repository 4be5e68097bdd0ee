"""Run one Scenario: dispatch to its flow's driver (registered in harness.migration.flows)."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from harness.config import HarnessConfig
from harness.migration import flows
from harness.migration.context import ScenarioContext
from harness.migration.scenario import Flow, Scenario
from harness.qemu.spec import MachineSpec
from harness.run import TestRun

FlowDriver = Callable[[ScenarioContext], dict]
_FLOWS: dict[Flow, FlowDriver] = {}


def register(flow: Flow):
    """Decorator: this function runs scenarios of `flow`."""
    def deco(fn: FlowDriver) -> FlowDriver:
        if flow in _FLOWS and _FLOWS[flow] is not fn:
            raise ValueError(f"flow {flow.value} registered twice")
        _FLOWS[flow] = fn
        return fn
    return deco


def flow_drivers() -> dict[Flow, FlowDriver]:
    for mod in pkgutil.iter_modules(flows.__path__):
        importlib.import_module(f"{flows.__name__}.{mod.name}")
    return dict(_FLOWS)


def run_scenario(s: Scenario, run: TestRun, base: MachineSpec, cfg: HarnessConfig,
                 src_binary: str, dst_binary: str) -> dict:
    drivers = flow_drivers()
    if s.flow not in drivers:
        raise LookupError(f"{s.path}: no driver registered for flow '{s.flow.value}'")
    ctx = ScenarioContext.build(s, run, base, cfg, src_binary, dst_binary)
    return drivers[s.flow](ctx)
