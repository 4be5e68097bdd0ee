"""Precopy flow: any live transport and caps/params; expected completion, refusal or failure.

Scenario knobs read here:
  PrecopyOptions.during   harness.migration.hooks functions run while the migration is active
  PrecopyOptions.destination
                          CLOSED_PORT: migrate to a TCP port nobody listens on (bad
                          destination); the source must fail, keep its guest running,
                          and still migrate to a real destination afterwards
  PrecopyOptions.tls      credentials (harness.migration.tls), via ScenarioContext
  expect=Expect(FAILED, error_match=..., dst_exit=...)
                          error_match is searched in the source's error-desc and the
                          destination's stderr; dst_exit=() means the destination must
                          stay up (e.g. still listening after a refused TLS handshake)
"""
from __future__ import annotations

import re
import socket

from harness.migration import drivers, hooks, tuning
from harness.migration.context import ScenarioContext
from harness.migration.metrics import write_metrics
from harness.migration.pair import Pair, wait_guest_ready
from harness.migration.expectations import refusal_result
from harness.migration.options import Destination
from harness.migration.runner import register
from harness.migration.scenario import Flow, Result
from harness.migration.states import wait_status
from harness.migration.transports import Transport
from harness.qemu.machine import MachineFailure
from harness.qemu.qmp import QMPCommandError

DST_EXIT_TIMEOUT = 30.0


@register(Flow.PRECOPY)
def run(ctx: ScenarioContext) -> dict:
    s = ctx.scenario
    if s.transport is Transport.FILE:
        raise ValueError(f"{s.path}: the file transport runs in Flow.FILE")
    if s.options.destination is Destination.CLOSED_PORT:
        return bad_destination(ctx)
    pair = ctx.pair()
    failing = s.expect.result is Result.FAILED
    if failing and s.expect.dst_exit:
        pair.dst.expect_exit(s.expect.dst_exit)
    try:
        res = drivers.precopy(pair, s.transport, caps=dict(s.caps), params=ctx.src_params,
                              dst_params=ctx.dst_params, converge=s.converge, live=s.live,
                              timeout=s.timeout, during=hooks.chain(s.options.during))
    except QMPCommandError as exc:
        return refusal_result(ctx, exc)
    except drivers.MigrationStateError as exc:
        if failing:
            return check_failure(ctx, pair, exc)
        raise
    if s.expect.result is not Result.COMPLETED:
        raise AssertionError(f"{s.path}: expected {s.expect.result.value}, but the migration completed")
    proof = drivers.prove_integrity(pair, timeout=s.timeout)
    return {"metrics": res.metrics.to_dict(), "observed": res.observed, "integrity": proof}



def check_failure(ctx: ScenarioContext, pair: Pair, exc: Exception) -> dict:
    """The source failed as expected: judge the source, the destination and the error text."""
    s = ctx.scenario
    src, dst = pair.src, pair.dst
    info = src.cmd("query-migrate")
    src_error = info.get("error-desc", "")
    if info.get("status") != "failed":
        raise AssertionError(f"source status '{info.get('status')}', expected 'failed' ({exc})")
    # A failed precopy leaves the source's guest as it was: running if it was live.
    src_passes = hooks.require_guest_runs(src, "after the failed migration") if s.live else None
    if s.expect.dst_exit:
        outcome = dst.wait_exit(DST_EXIT_TIMEOUT)
        if outcome is None:
            raise MachineFailure(dst.declare_hang(
                f"{dst.name}: still running {DST_EXIT_TIMEOUT:.0f}s after the migration failed "
                f"(expected exit {s.expect.dst_exit})")) from None
        if not outcome.ok:
            raise MachineFailure(outcome) from None
        dst_text, dst_state = dst.stderr_text(), f"exited: {outcome.signature}"
    else:
        if not dst.is_running():
            outcome = dst.wait_exit(5.0)
            raise AssertionError(f"{dst.name} exited after the failed migration, expected it to stay "
                                 f"up: {outcome.signature if outcome else 'exit not reaped'}")
        dst_info = dst.cmd("query-migrate")
        if dst_info.get("status") == "completed":
            raise AssertionError(f"{dst.name} completed although the source failed: {src_error}")
        dst_text, dst_state = dst_info.get("error-desc", ""), f"up, status {dst_info.get('status')}"
    if s.expect.error_match and not (re.search(s.expect.error_match, src_error)
                                     or re.search(s.expect.error_match, dst_text)):
        raise AssertionError(f"neither the source's error {src_error!r} nor the destination's "
                             f"{dst_text.strip()[-300:]!r} matches {s.expect.error_match!r}")
    result = {"failed": src_error, "destination": dst_state, "source_guest_passes": src_passes}
    write_metrics(ctx.run.artifacts / "metrics.json", {"expected_failure": result})
    return result


def bad_destination(ctx: ScenarioContext) -> dict:
    """Migrate to a port that refuses connections: the source fails with an error-desc and
    keeps running its guest; then it migrates to a real destination, proven intact."""
    s = ctx.scenario
    src = ctx.source()
    wait_guest_ready(src)
    tuning.set_capabilities(src, {"events": True, **dict(s.caps)})
    tuning.ensure_converge(src)
    # Bound but not listening: connect() gets RST, and nobody else can take the port.
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        mark = src.qmp.events.mark()
        src.cmd("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        try:
            wait_status(src, {"completed"}, since=mark, timeout=s.timeout)
        except drivers.MigrationStateError:
            pass
        else:
            raise AssertionError(f"migration to closed port {port} completed")
    finally:
        closed.close()
    info = src.cmd("query-migrate")
    src_error = info.get("error-desc", "")
    if info.get("status") != "failed" or not src_error:
        raise AssertionError(f"source status {info.get('status')!r} error-desc {src_error!r}, "
                             "expected 'failed' with an error-desc")
    if s.expect.error_match and not re.search(s.expect.error_match, src_error):
        raise AssertionError(f"error-desc {src_error!r} does not match {s.expect.error_match!r}")
    passes = hooks.require_guest_runs(src, "after migrating to a closed port")
    # The failed attempt must not poison the next one.
    pair = Pair(src, ctx.destination())
    res = drivers.precopy(pair, Transport.TCP, caps=dict(s.caps), timeout=s.timeout)
    proof = drivers.prove_integrity(pair, timeout=s.timeout)
    result = {"failed": src_error, "guest_passes_after_failure": passes,
              "then": res.metrics.to_dict(), "integrity": proof}
    write_metrics(ctx.run.artifacts / "metrics.json", {"bad_destination": result})
    return result
