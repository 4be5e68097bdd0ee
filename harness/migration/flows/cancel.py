"""Cancel flow: migrate_cancel at a given source status, then prove nothing is lost.

CancelOptions.at (a CancelPoint) is the source status at which migrate_cancel is sent (as qtest's
/migration/cancel/src/after/<status>):

  none            no migration yet: cancel on both sides is a no-op; then migrate
  setup, active   non-converging migration, cancel when the status is seen
  pre-switchover  pause-before-switchover; cancel while paused (guest stopped)
  device          pause-before-switchover, migrate-continue, cancel as soon as the
                  final stop-and-copy ('device') is seen: the cancel races the last
                  bytes, so either the cancel wins (source cancelled -- or failed, when
                  the shutdown of the stream beats the completion's error check --
                  and destination failed) or it is too late (both completed). A
                  destination that completed while the source resumed its guest is a
                  split brain and fails the test. CancelOptions.attempts repeats the race
                  on fresh pairs until it shows a split brain (a race needs tries)
  cancelling, cancelled
                  a second cancel while/after the first one finishes
  completed       cancel after completion is a no-op: both stay completed
  failed          migrate to a destination that is not listening; cancel leaves
                  'failed' alone

A cancelled source must be running its guest again and its old destination must
report 'failed' (it is started with exit-on-error=false so it stays up to say
so); then the source migrates to a fresh destination, proven intact. Caps from
the scenario apply to every migration (e.g. multifd).
"""
from __future__ import annotations

import time

from harness.migration import drivers, hooks, tuning
from harness.migration.context import ScenarioContext
from harness.migration.metrics import write_metrics
from harness.migration.pair import Pair
from harness.migration.runner import register
from harness.migration.scenario import Flow
from harness.migration.states import wait_status
from harness.qemu.machine import Machine

BEFORE_SWITCHOVER = ("setup", "active")
WITH_PAUSE = ("pre-switchover", "device")
SETTLE_TIMEOUT = 30.0


class SplitBrain(AssertionError):
    """The source says cancelled (and resumed its guest), the destination says completed."""


@register(Flow.CANCEL)
def run(ctx: ScenarioContext) -> dict:
    s = ctx.scenario
    at = s.options.at.value
    attempts = s.options.attempts
    log: list[dict] = []
    for i in range(attempts):
        last = i == attempts - 1
        pair = (ctx.pair() if i == 0 else
                Pair(ctx.source(f"source-{i + 1}"), ctx.destination(f"destination-{i + 1}")))
        rec: dict = {"at": at, "attempt": i + 1}
        log.append(rec)
        try:
            outcome = cancel_at(ctx, pair, at, rec)
        finally:
            write_metrics(ctx.run.artifacts / "metrics.json", {"cancel_attempts": log})
        if not last:
            for m in (pair.src, pair.dst):
                m.shutdown()
            continue
        return finish(ctx, pair, outcome, log)
    raise AssertionError("unreachable")


def _caps(ctx: ScenarioContext, at: str) -> dict:
    caps = {"events": True, **dict(ctx.scenario.caps)}
    if at in WITH_PAUSE:
        caps["pause-before-switchover"] = True
    return caps


def cancel_at(ctx: ScenarioContext, pair: Pair, at: str, rec: dict) -> str:
    """Run one migration and cancel it at `at`; return 'none', 'cancelled', 'completed' or
    'failed' (what the source ended in). rec collects what was seen."""
    s = ctx.scenario
    src, dst = pair.src, pair.dst
    if at == "none":
        pair.wait_guest_ready()
        for m in (src, dst):
            m.cmd("migrate_cancel")
            status = m.cmd("query-migrate").get("status", "none")
            if status not in ("none", ""):
                raise AssertionError(f"{m.name}: migrate_cancel without a migration changed "
                                     f"the status to '{status}'")
        rec["status_after_cancel"] = "none"
        return "none"
    if at == "failed":
        # Nothing listens: the source's connect fails, then cancel must leave 'failed' alone.
        pair.wait_guest_ready()
        tuning.set_capabilities(src, _caps(ctx, at))
        tuning.ensure_converge(src)
        assert dst.run_dir is not None
        mark = src.qmp.events.mark()
        src.cmd("migrate", {"uri": f"unix:{dst.run_dir / 'nobody-listens.sock'}"})
        wait_status(src, {"failed"}, since=mark, ungoals=set(), timeout=SETTLE_TIMEOUT)
        src.cmd("migrate_cancel")
        time.sleep(0.2)
        info = src.cmd("query-migrate")
        rec.update(status_after_cancel=info.get("status"), error=info.get("error-desc"))
        if info.get("status") != "failed":
            raise AssertionError(f"cancel after 'failed' moved the source to '{info.get('status')}'")
        hooks.require_guest_runs(src, "after the failed migration and the cancel")
        return "failed"

    converge = at not in BEFORE_SWITCHOVER
    target = drivers.prepare_target(pair, s.transport, caps=_caps(ctx, at), params=ctx.src_params,
                                    dst_params=ctx.dst_params, converge=converge,
                                    exit_on_error=False)
    smark, dmark = src.qmp.events.mark(), dst.qmp.events.mark()
    src.cmd("migrate", target.migrate_args())
    if at == "device":
        wait_status(src, {"pre-switchover"}, since=smark, timeout=s.timeout)
        src.cmd("migrate-continue", {"state": "pre-switchover"})
    if at in ("cancelling", "cancelled"):
        # The cancel under test is the second one, sent once the first reached `at`.
        wait_status(src, {"active"}, since=smark, timeout=s.timeout)
        src.cmd("migrate_cancel")
    wait_status(src, {at}, since=smark, ungoals=set(), timeout=s.timeout)
    t_cancel = time.monotonic()
    src.cmd("migrate_cancel")
    rec["cancel_sent_after_status"] = at

    final = wait_status(src, {"cancelled", "completed", "failed"}, since=smark, ungoals=set(),
                        timeout=SETTLE_TIMEOUT).status
    dst_final = wait_status(dst, {"failed", "completed"}, since=dmark, ungoals=set(),
                            timeout=SETTLE_TIMEOUT).status
    rec.update(source=final, destination=dst_final,
               source_statuses=_statuses(src, smark), destination_statuses=_statuses(dst, dmark),
               settle_seconds=round(time.monotonic() - t_cancel, 3))
    if final in ("cancelled", "failed"):
        rec["source_error"] = src.cmd("query-migrate").get("error-desc")
    if final in ("cancelled", "failed") and dst_final == "completed":
        # The destination has the whole guest and says so; the source resumed its copy.
        rec["source_runstate"] = src.status()
        raise SplitBrain(
            f"split brain: migrate_cancel in '{at}': the source went "
            f"{' -> '.join(rec['source_statuses'])} and resumed its guest "
            f"(run state '{rec['source_runstate']}'), while the destination went "
            f"{' -> '.join(rec['destination_statuses'])}")
    if final == "failed" and at != "device":
        raise AssertionError(f"migrate_cancel in '{at}' ended 'failed' instead of 'cancelled': "
                             f"{rec['source_error']}")
    if at == "completed":
        if (final, dst_final) != ("completed", "completed"):
            raise AssertionError(f"cancel after completion changed the outcome: source {final}, "
                                 f"destination {dst_final}")
        return "completed"
    if final == "completed":
        if at != "device":
            raise AssertionError(f"cancel in '{at}' was ignored: the migration completed")
        return "completed"     # too late for the cancel: consistent, and legitimate at 'device'
    # Cancelled (or, at 'device', failed by the cancel racing the completion's error
    # check): the source runs its guest again; the destination failed and says why.
    rec["source_guest_passes"] = hooks.require_guest_runs(src, f"after cancel in '{at}'")
    dinfo = dst.cmd("query-migrate")
    rec["destination_error"] = dinfo.get("error-desc")
    return final


def finish(ctx: ScenarioContext, pair: Pair, outcome: str, log: list[dict]) -> dict:
    """After the cancel: prove the guest is intact, migrating again where needed."""
    s = ctx.scenario
    caps = {"events": True, **dict(s.caps)}
    if s.options.at.value in WITH_PAUSE:
        caps["pause-before-switchover"] = False   # the retry must not stop to wait for us
    if outcome == "completed":
        proof = drivers.prove_integrity(pair, timeout=s.timeout)
        return {"cancel": log, "integrity": proof}
    if outcome == "none":
        again = pair      # nothing happened: the same destination still waits
    else:
        # cancelled/failed: a fresh destination (the old one reported 'failed').
        again = Pair(pair.src, ctx.destination(_fresh_name(ctx, "destination")))
    res = drivers.precopy(again, s.transport, caps=caps, params=ctx.src_params,
                          dst_params=ctx.dst_params, timeout=s.timeout)
    proof = drivers.prove_integrity(again, timeout=s.timeout)
    result = {"cancel": log, "then": res.metrics.to_dict(), "integrity": proof}
    write_metrics(ctx.run.artifacts / "metrics.json", {"cancel_then": res.metrics.to_dict()})
    return result


def _statuses(m: Machine, since: int) -> list[str]:
    return [e.data.get("status", "?") for e in m.qmp.events.events[since:] if e.name == "MIGRATION"]


def _fresh_name(ctx: ScenarioContext, base: str) -> str:
    used = {m.name for m in ctx.run.machines}
    i = 2
    while f"{base}-{i}" in used:
        i += 1
    return f"{base}-{i}"
