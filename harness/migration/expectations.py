"""Checking a scenario's declared expectation against what QEMU did."""
from __future__ import annotations

import re

from harness.migration.metrics import write_metrics
from harness.migration.scenario import Result, Scenario
from harness.qemu.qmp import QMPCommandError


def check_refusal(exc: QMPCommandError, s: Scenario) -> None:
    """QEMU refused: was it the refusal the scenario declared (class and text)?"""
    e = s.expect
    if e.error_class and exc.error_class != e.error_class:
        raise AssertionError(f"{s.path}: refused with {exc.error_class}, expected "
                             f"{e.error_class}: {exc.desc}")
    if e.error_match and not re.search(e.error_match, exc.desc):
        raise AssertionError(f"{s.path}: refusal text {exc.desc!r} does not match {e.error_match!r}")


def refusal_result(ctx, exc: QMPCommandError) -> dict:
    """In `except QMPCommandError`: the recorded refusal if the scenario expects one,
    else the error goes on up."""
    if ctx.scenario.expect.result is not Result.REFUSED:
        raise exc
    return record_refusal(ctx, exc)


def expect_accepted(s: Scenario, what: str) -> None:
    """QEMU accepted the command: only a scenario expecting completion may go on."""
    if s.expect.result is not Result.COMPLETED:
        raise AssertionError(f"{s.path}: expected {s.expect.result.value}, but {what}")


def record_refusal(ctx, exc: QMPCommandError, **extra) -> dict:
    """The expected refusal happened: check it, record it in metrics.json, return the result."""
    check_refusal(exc, ctx.scenario)
    res = {"refused": str(exc), **extra}
    write_metrics(ctx.run.artifacts / "metrics.json", res)
    return res
