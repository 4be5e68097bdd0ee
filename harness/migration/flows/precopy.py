"""Precopy flow: any transport and caps/params; expected completion, refusal or failure."""
from __future__ import annotations

import re

from harness.migration import drivers
from harness.migration.context import ScenarioContext
from harness.migration.runner import register
from harness.migration.scenario import Flow, Result
from harness.qemu.machine import MachineFailure
from harness.qemu.qmp import QMPCommandError


@register(Flow.PRECOPY)
def run(ctx: ScenarioContext) -> dict:
    s = ctx.scenario
    pair = ctx.pair()
    if s.expect.result is Result.FAILED:
        pair.dst.expect_exit(s.expect.dst_exit, s.expect.error_match)
    try:
        res = drivers.precopy(pair, s.transport, caps=dict(s.caps), params=dict(s.params),
                              dst_params=dict(s.dst_params), converge=s.converge,
                              live=s.live, timeout=s.timeout)
    except QMPCommandError as exc:
        if s.expect.result is Result.REFUSED:
            check_refusal(exc, s.expect.error_class, s.expect.error_match)
            return {"refused": str(exc)}
        raise
    except drivers.MigrationStateError as exc:
        if s.expect.result is Result.FAILED:
            outcome = pair.dst.wait_exit(30)
            if outcome is None:
                raise MachineFailure(pair.dst.declare_hang(
                    f"{pair.dst.name}: still running 30s after the migration failed")) from exc
            if not outcome.ok:
                raise MachineFailure(outcome) from exc
            return {"failed": str(exc), "destination": outcome.signature}
        raise
    if s.expect.result is not Result.COMPLETED:
        raise AssertionError(f"{s.path}: expected {s.expect.result.value}, but the migration completed")
    proof = drivers.prove_integrity(pair, timeout=s.timeout)
    return {"metrics": res.metrics.to_dict(), "integrity": proof}


def check_refusal(exc: QMPCommandError, error_class: str | None, error_match: str | None) -> None:
    if error_class and exc.error_class != error_class:
        raise AssertionError(f"refused with {exc.error_class}, expected {error_class}: {exc.desc}")
    if error_match and not re.search(error_match, exc.desc):
        raise AssertionError(f"refusal text {exc.desc!r} does not match {error_match!r}")
