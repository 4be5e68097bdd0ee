"""Checking a scenario's declared expectation against what QEMU did."""
from __future__ import annotations

import re

from harness.migration.metrics import write_metrics
from harness.migration.scenario import Scenario
from harness.qemu.qmp import QMPCommandError


def check_refusal(exc: QMPCommandError, s: Scenario) -> None:
    """QEMU refused: was it the refusal the scenario declared (class and text)?"""
    e = s.expect
    if e.error_class and exc.error_class != e.error_class:
        raise AssertionError(f"{s.path}: refused with {exc.error_class}, expected "
                             f"{e.error_class}: {exc.desc}")
    if e.error_match and not re.search(e.error_match, exc.desc):
        raise AssertionError(f"{s.path}: refusal text {exc.desc!r} does not match {e.error_match!r}")


def record_refusal(ctx, exc: QMPCommandError, **extra) -> dict:
    """The expected refusal happened: check it, record it in metrics.json, return the result."""
    check_refusal(exc, ctx.scenario)
    res = {"refused": str(exc), **extra}
    write_metrics(ctx.run.artifacts / "metrics.json", res)
    return res
