"""Background snapshot: the guest keeps running while its RAM as of the start is saved.

The source has the background-snapshot capability (userfaultfd write-protect:
a page the guest writes is saved before the write goes through). The stream
goes to a file (transport FILE, loaded afterwards) or straight to a listening
destination (tcp/unix).

Proof: the source guest must make progress while the snapshot is 'active' and
still run afterwards (it is stopped once, briefly, to arm write protection); the
loaded destination must hold a point-in-time image: with the boot-sector guest
the page rule is checked on the never-started destination, then the usual
guest-level proof runs (no byte compare: the source has moved on).

Knobs: params["max-bandwidth"] stretches the snapshot so progress during it is
measurable; expect=Expect(REFUSED, ...) for capability combinations QEMU refuses.
"""
from __future__ import annotations

import time

from harness.guest import integrity
from harness.migration import drivers
from harness.migration.context import ScenarioContext
from harness.migration.expectations import expect_accepted, refusal_result
from harness.migration.metrics import MigrationMetrics, write_metrics
from harness.migration.runner import register
from harness.migration.scenario import Flow
from harness.migration.states import wait_status
from harness.migration.transports import Transport, file_uri, incoming
from harness.qemu.qmp import QMPCommandError
from harness.qemu.spec import GuestKind

SAMPLE_EVERY = 0.05
SOURCE_CAPS = {"background-snapshot": True}   # the flow's own, on the source only


@register(Flow.BACKGROUND_SNAPSHOT)
def run(ctx: ScenarioContext) -> dict:
    s = ctx.scenario
    pair = ctx.pair()
    src, dst = pair.src, pair.dst
    try:
        drivers.configure(pair, src_caps={**SOURCE_CAPS, **dict(s.caps)},
                          params=ctx.src_params, dst_params=ctx.dst_params)
    except QMPCommandError as exc:
        return refusal_result(ctx, exc)
    expect_accepted(s, "QEMU accepted it")

    if s.transport is Transport.FILE:
        assert dst.run_dir is not None
        uri = file_uri(dst.run_dir / "snapshot.bin")
        args = {"uri": uri}
    else:
        target = incoming(s.transport, src, dst)
        uri, args = str(target), target.migrate_args()

    smark, dmark = src.qmp.events.mark(), dst.qmp.events.mark()
    serial_mark = src.serial.mark()
    t0 = time.monotonic()
    src.cmd("migrate", args)
    # While the snapshot is taken the guest runs: sample its run state.
    runstates: dict[str, int] = {}
    while True:
        status = src.cmd("query-migrate").get("status")
        if status in ("completed", "failed", "cancelled"):
            break
        if status == "active":
            rs = src.status()
            runstates[rs] = runstates.get(rs, 0) + 1
        if time.monotonic() - t0 > s.timeout:
            break
        time.sleep(SAMPLE_EVERY)
    wait_status(src, {"completed"}, since=smark, timeout=s.timeout)
    seconds = time.monotonic() - t0
    # Boot sector: a 'B' per pass over its memory; Linux workload: a heartbeat line.
    progress_mark = b"B" if src.spec.guest.kind is GuestKind.BOOTBLOCK else b"HB "
    passes_during = src.serial.count(progress_mark, serial_mark)
    info = src.cmd("query-migrate")
    events = [e.name for e in src.qmp.events.events[smark:] if e.name in ("STOP", "RESUME")]
    observed = {"snapshot_seconds": round(seconds, 3), "source_runstates_while_active": runstates,
                "guest_progress_during_snapshot": passes_during, "stop_resume_events": events,
                "downtime_ms": info.get("downtime")}
    # The guest is stopped once, briefly, to arm write protection (STOP, RESUME while
    # 'active'), and runs for the rest of the snapshot.
    if events != ["STOP", "RESUME"]:
        raise AssertionError(f"expected one brief STOP/RESUME on the source, got {events}")
    if runstates and runstates.get("running", 0) < sum(runstates.values()) / 2:
        raise AssertionError(f"source guest was mostly not running during the background "
                             f"snapshot: {runstates}")
    if src.status() != "running":
        raise AssertionError(f"source run state after the snapshot is '{src.status()}', expected "
                             "'running' (a background snapshot must not stop the guest)")
    if runstates and passes_during == 0:
        raise AssertionError(f"the guest made no progress ({progress_mark!r} on serial) during "
                             f"a {seconds:.1f}s background snapshot")

    if s.transport is Transport.FILE:
        dmark = dst.qmp.events.mark()
        dst.cmd("migrate-incoming", {"uri": uri})
    wait_status(dst, {"completed"}, since=dmark, timeout=s.timeout)
    metrics = MigrationMetrics.from_query_migrate(info)
    if dst.spec.guest.kind is GuestKind.BOOTBLOCK:
        # Never started since the load: exactly the RAM at the snapshot's start.
        rep = integrity.prove_bootblock_pattern(dst)
        observed["loaded_image_pattern"] = rep.detail
    write_metrics(ctx.run.artifacts / "metrics.json",
                  {"migration": metrics.to_dict(), "uri": uri, "observed": observed,
                   "source_query_migrate": info})
    proof = drivers.prove_integrity(pair, ram_compare=False, timeout=s.timeout,
                                    src_runstates={"running"})
    return {"metrics": metrics.to_dict(), "observed": observed, "integrity": proof}
