"""Generic migration flows. Tests and scenarios call these; plumbing stays here."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from harness.guest import integrity
from harness.migration import proofs, tuning
from harness.migration.metrics import MigrationMetrics, write_metrics
from harness.migration.pair import Pair
from harness.migration.progress import ProgressSampler
from harness.migration.states import MigrationStateError, wait_runstate, wait_status  # noqa: F401 (re-exported for flows)
from harness.migration.transports import Target, Transport, incoming
from harness.qemu.spec import GuestKind

MIGRATION_TIMEOUT = 120.0


@dataclass
class PrecopyResult:
    uri: str
    metrics: MigrationMetrics
    integrity: dict = field(default_factory=dict)
    observed: dict = field(default_factory=dict)   # what a `during` hook saw


# Called after `migrate` was issued, before waiting for completion: observe or
# steer the running migration (pause-before-switchover, throttling...). Returns
# what it observed (goes to metrics.json) or None.
DuringHook = Callable[[Pair], "dict | None"]


def prepare_target(pair: Pair, transport: Transport, *, caps: dict | None = None,
                   params: dict | None = None, dst_params: dict | None = None,
                   converge: bool = True, exit_on_error: bool | None = None) -> Target:
    """Guest ready, caps on both sides, params, destination listening; return the Target."""
    configure(pair, caps=caps, params=params, dst_params=dst_params, converge=converge)
    return incoming(transport, pair.src, pair.dst, exit_on_error=exit_on_error)


def configure(pair: Pair, *, caps: dict | None = None, params: dict | None = None,
              dst_params: dict | None = None, converge: bool = True,
              src_caps: dict | None = None) -> None:
    """Guest ready; `events` + caps on both sides (+ src_caps on the source only);
    convergence knobs, then the scenario's parameters on each side."""
    src, dst = pair.src, pair.dst
    pair.wait_guest_ready()
    tuning.set_capabilities(src, {"events": True, **(src_caps or {}), **(caps or {})})
    tuning.set_capabilities(dst, {"events": True, **(caps or {})})
    tuning.set_parameters(dst, dst_params or {})
    if converge:
        tuning.ensure_converge(src)
    else:
        tuning.ensure_non_converge(src)
    tuning.set_parameters(src, params or {})
    proofs.arm(pair)   # the trace events that later prove each enabled mode happened


def prepare(pair: Pair, transport: Transport, *, caps: dict | None = None,
            params: dict | None = None, dst_params: dict | None = None,
            converge: bool = True) -> str:
    """prepare_target() for transports that have a URI; return the URI."""
    target = prepare_target(pair, transport, caps=caps, params=params, dst_params=dst_params,
                            converge=converge)
    if target.uri is None:
        raise ValueError(f"transport {transport.value} has no URI: use prepare_target()")
    return target.uri


def precopy(pair: Pair, transport: Transport = Transport.TCP, *, caps: dict | None = None,
            params: dict | None = None, dst_params: dict | None = None, converge: bool = True,
            live: bool = True, timeout: float = MIGRATION_TIMEOUT,
            during: DuringHook | None = None) -> PrecopyResult:
    """Migrate src -> dst and wait for completion on both sides.

    Raises QMPCommandError if QEMU refuses a command, MigrationStateError if
    the migration fails or is cancelled.
    """
    src, dst = pair.src, pair.dst
    target = prepare_target(pair, transport, caps=caps, params=params, dst_params=dst_params,
                            converge=converge)
    if not live:
        src.cmd("stop")
    src_mark, dst_mark = src.qmp.events.mark(), dst.qmp.events.mark()
    # Progress history for the report (progress.json); stopped before anything
    # else talks to the source, and never raises into the test.
    sampler = ProgressSampler(src).start()
    try:
        src.cmd("migrate", target.migrate_args())
        observed = (during(pair) or {}) if during is not None else {}
        wait_status(src, {"completed"}, since=src_mark, timeout=timeout)
        wait_status(dst, {"completed"}, since=dst_mark, timeout=timeout)
    finally:
        sampler.stop()
    info = src.cmd("query-migrate")
    metrics = MigrationMetrics.from_query_migrate(info)
    data = {"migration": metrics.to_dict(), "uri": str(target), "source_query_migrate": info}
    if observed:
        data["observed"] = observed
    write_metrics(src.artifacts.parent / "metrics.json", data)
    # Each enabled mode must have left its mark (raises ModeNotProven naming what is missing).
    modes = proofs.prove(pair, info, samples=sampler.samples, observed=observed)
    write_metrics(src.artifacts.parent / "metrics.json", {"modes": modes})
    return PrecopyResult(uri=str(target), metrics=metrics, observed=observed)


def prove_integrity(pair: Pair, *, ram_compare: bool = True, timeout: float = 60.0,
                    src_runstates: frozenset[str] | set[str] = frozenset({"postmigrate"})) -> dict:
    """After a completed migration, prove the guest arrived intact.

    With a paused destination (the pair default) the RAM is compared byte for
    byte first; then the destination is continued and the guest-level proof
    runs (bootblock pattern after a fresh pass, or the Linux in-guest verify).
    src_runstates: where the source must be (a background snapshot's source
    keeps running; its RAM has moved on, so no byte compare then).
    """
    src, dst = pair.src, pair.dst
    result: dict = {}
    t0 = time.monotonic()
    wait_runstate(src, set(src_runstates), timeout)
    if ram_compare and dst.spec.paused:
        wait_runstate(dst, {"paused", "prelaunch"}, timeout)
        tolerated = dst.spec.smp if dst.spec.accel == "kvm" else 0
        rep = integrity.compare_ram(src, dst, dst.spec.memory_mib << 20, tolerated,
                                    artifacts=dst.artifacts)
        result["ram_compare"] = {"bytes": rep.size, "differing_pages": len(rep.differing_pages)}
    if dst.spec.paused:
        dst.cmd("cont")
    wait_runstate(dst, {"running"}, timeout)
    kind = dst.spec.guest.kind
    deadline = time.monotonic() + timeout
    if kind is GuestKind.BOOTBLOCK:
        # A full pass on the destination, then the page rule on the stopped guest.
        mark = dst.serial.mark()
        if dst.serial.wait_for(rb"B", deadline, mark) is None:
            from harness.qemu.machine import MachineFailure
            raise MachineFailure(dst.declare_hang(
                f"{dst.name}: bootblock made no pass after migration within {timeout:.0f}s"))
        rep = integrity.prove_bootblock_pattern(dst)
        result["bootblock_pattern"] = rep.detail
    elif kind is GuestKind.LINUX:
        rep = integrity.prove_linux_guest(dst, timeout)
        result["linux_verify"] = {"pages": rep.pages, "bad": rep.bad}
    result["seconds"] = round(time.monotonic() - t0, 3)
    write_metrics(dst.artifacts.parent / "metrics.json", {"integrity": result})
    return result
