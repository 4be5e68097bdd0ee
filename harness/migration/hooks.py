"""`during` hooks: observe or steer a running precopy migration.

A scenario references the functions themselves,
options=PrecopyOptions(during=(hooks.dirty_pass, hooks.pause_before_switchover));
the precopy flow runs them in order right after `migrate` and before waiting for
completion. Each hook proves
the feature really acted (not just that the capability was accepted) and
returns what it saw, which lands in metrics.json under "observed".

Hooks that need a non-converging phase are declared with converge=False and
their own bandwidth in params; they call tuning.ensure_converge() once they
have seen what they came for.
"""
from __future__ import annotations

import time
from typing import Callable

from harness.migration import tuning
from harness.migration.pair import Pair
from harness.migration.states import wait_runstate, wait_status
from harness.qemu.machine import Machine, MachineFailure
from harness.qemu.spec import GuestKind

PHASE_TIMEOUT = 60.0
SAMPLE_EVERY = 0.1
# Non-converging for the boot sector (~99 MiB dirty at any time, with the 1 ms downtime
# of tuning.ensure_non_converge) yet fast enough that a pass takes well under a second,
# so features acting per pass show up within seconds.
ITERATE_BANDWIDTH = 300_000_000

def chain(hooks: tuple[Callable[[Pair], dict], ...]) -> Callable[[Pair], dict] | None:
    """None for no hook, the hook itself for one, else one running them in order
    (their observations merged)."""
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def chained(pair: Pair) -> dict:
        seen: dict = {}
        for h in hooks:
            seen.update(h(pair) or {})
        return seen
    return chained


def _active_or_fail(info: dict, what: str, samples: list) -> None:
    status = info.get("status")
    if status not in ("setup", "active"):
        raise AssertionError(f"migration left the non-converging phase ({status}"
                             f"{': ' + info['error-desc'] if info.get('error-desc') else ''}) "
                             f"before {what}; samples: {samples[-10:]}")


DIRTY_SYNCS = 3   # the bulk pass, then two passes over what the guest dirtied meanwhile


def dirty_pass(pair: Pair) -> dict:
    """qtest's migrate_wait_for_dirty_mem: keep the migration from converging until
    the guest has dirtied already-sent memory and it was sent again (dirty-sync-count
    >= DIRTY_SYNCS), so dirty tracking is really exercised; then converge.

    Needs converge=False and a bandwidth that makes a pass short (see the families)."""
    src = pair.src
    samples: list = []
    deadline = time.monotonic() + PHASE_TIMEOUT
    while True:
        info = src.cmd("query-migrate")
        _active_or_fail(info, f"{DIRTY_SYNCS} dirty syncs", samples)
        ram = info.get("ram", {})
        syncs = ram.get("dirty-sync-count", 0)
        samples.append(syncs)
        if syncs >= DIRTY_SYNCS:
            break
        if time.monotonic() >= deadline:
            raise AssertionError(f"dirty-sync-count reached only {syncs} in {PHASE_TIMEOUT:.0f}s")
        time.sleep(SAMPLE_EVERY)
    tuning.ensure_converge(src)
    return {"dirty_syncs_before_converge": syncs, "transferred_before_converge":
            ram.get("transferred"), "dirty_pages_rate": ram.get("dirty-pages-rate")}


SHAPED_RATE = 2_000_000   # bytes/s: far below what TCG migrates unshaped (~100+ MB/s)
SHAPED_SECONDS = 3.0


def link_shaped(pair: Pair) -> dict:
    """A tbf on the source host's migration interface (egress: the stream's direction)
    caps the migration at SHAPED_RATE; the throughput QEMU reaches meanwhile must sit
    at that rate, not at its own max-bandwidth. Then the shaping goes and it converges.

    Needs converge=False and remote hosts with a migration_interface."""
    from harness.faults.link import migration_link
    src = pair.src
    with migration_link(src) as link:
        link.limit(SHAPED_RATE)
        time.sleep(0.5)   # let the queue fill: measure the shaped steady state
        info0, t0 = src.cmd("query-migrate"), time.monotonic()
        _active_or_fail(info0, "shaped throughput", [])
        time.sleep(SHAPED_SECONDS)
        info1, t1 = src.cmd("query-migrate"), time.monotonic()
        _active_or_fail(info1, "shaped throughput", [])
    rate = (info1["ram"]["transferred"] - info0["ram"]["transferred"]) / (t1 - t0)
    if not 0.3 * SHAPED_RATE < rate < 1.3 * SHAPED_RATE:
        raise AssertionError(f"{src.name}: {rate / 1e6:.2f} MB/s through a tbf of "
                             f"{SHAPED_RATE / 1e6:.2f} MB/s on {src.host.name}")
    tuning.ensure_converge(src)
    return {"tbf_bytes_per_s": SHAPED_RATE, "measured_bytes_per_s": round(rate)}


def pause_before_switchover(pair: Pair) -> dict:
    """Wait for pre-switchover: the source's guest must be stopped and the
    destination still loading; then migrate-continue."""
    src, dst = pair.src, pair.dst
    seen = wait_status(src, {"pre-switchover"}, timeout=PHASE_TIMEOUT)
    runstate = wait_runstate(src, {"finish-migrate"}, timeout=10)
    dst_status = dst.cmd("query-migrate").get("status")
    if dst_status != "active":
        raise AssertionError(f"source paused in pre-switchover, but the destination's status is "
                             f"'{dst_status}', expected 'active'")
    remaining = src.cmd("query-migrate").get("ram", {}).get("remaining")
    src.cmd("migrate-continue", {"state": "pre-switchover"})
    return {"paused_in": seen.status, "src_runstate": runstate, "dst_status": dst_status,
            "remaining_bytes": remaining}


def auto_converge(pair: Pair) -> dict:
    """While the migration cannot converge, the source's vCPU throttle must start at
    cpu-throttle-initial and rise; then let it converge."""
    src = pair.src
    params = src.cmd("query-migrate-parameters")
    initial, increment = params["cpu-throttle-initial"], params["cpu-throttle-increment"]
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    deadline = t0 + PHASE_TIMEOUT
    while True:
        info = src.cmd("query-migrate")
        _active_or_fail(info, "the throttle rose", samples)
        pct = info.get("cpu-throttle-percentage", 0)
        if not samples or samples[-1][1] != pct:
            samples.append((round(time.monotonic() - t0, 2), pct))
        values = [p for _, p in samples if p]
        if len(values) >= 2:
            break
        if time.monotonic() >= deadline:
            raise AssertionError(f"cpu-throttle-percentage did not rise twice within "
                                 f"{PHASE_TIMEOUT:.0f}s: {samples}")
        time.sleep(SAMPLE_EVERY)
    if values[0] < initial:
        raise AssertionError(f"first throttle {values[0]}% is below cpu-throttle-initial {initial}%")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise AssertionError(f"throttle did not increase monotonically: {samples}")
    if values[1] - values[0] < increment and values[1] < params["max-cpu-throttle"]:
        raise AssertionError(f"throttle rose by {values[1] - values[0]}, less than "
                             f"cpu-throttle-increment {increment}: {samples}")
    tuning.ensure_converge(src)
    return {"throttle_samples": samples, "cpu_throttle_initial": initial,
            "cpu_throttle_increment": increment}


def xbzrle(pair: Pair) -> dict:
    """Iterate without converging until XBZRLE has really encoded pages (a page is
    only encoded once it is in the cache, from the third pass on); then converge."""
    src = pair.src
    samples: list = []
    deadline = time.monotonic() + PHASE_TIMEOUT
    while True:
        info = src.cmd("query-migrate")
        _active_or_fail(info, "XBZRLE encoded a page", samples)
        cache = info.get("xbzrle-cache", {})
        samples.append({k: cache.get(k) for k in ("pages", "bytes", "cache-miss", "overflow")})
        if cache.get("pages", 0) > 0 and cache.get("bytes", 0) > 0:
            break
        if time.monotonic() >= deadline:
            raise AssertionError(f"XBZRLE encoded no page within {PHASE_TIMEOUT:.0f}s: {samples[-5:]}")
        time.sleep(SAMPLE_EVERY)
    tuning.ensure_converge(src)
    return {"xbzrle_cache": cache, "dirty_sync_count": info.get("ram", {}).get("dirty-sync-count")}


def dirty_limit(pair: Pair) -> dict:
    """Like qtest's dirty_limit: the per-vCPU dirty limit must engage (throttle time
    per round > 0, query-vcpu-dirty-limit shows the configured rate); then converge."""
    src = pair.src
    want = src.cmd("query-migrate-parameters")["vcpu-dirty-limit"]
    samples: list = []
    deadline = time.monotonic() + PHASE_TIMEOUT
    while True:
        info = src.cmd("query-migrate")
        _active_or_fail(info, "the dirty limit engaged", samples)
        per_round = info.get("dirty-limit-throttle-time-per-round", 0)
        samples.append(per_round)
        if per_round:
            break
        if time.monotonic() >= deadline:
            raise AssertionError(f"dirty-limit-throttle-time-per-round stayed 0 for {PHASE_TIMEOUT:.0f}s")
        time.sleep(SAMPLE_EVERY)
    limits = src.cmd("query-vcpu-dirty-limit")
    rates = {entry.get("limit-rate") for entry in limits}
    if rates != {want}:
        raise AssertionError(f"query-vcpu-dirty-limit shows {limits}, expected limit-rate {want}")
    tuning.ensure_converge(src)
    return {"throttle_time_per_round_us": per_round, "vcpu_dirty_limit": limits}


def guest_progress(m: Machine, seconds: float = 1.0) -> int:
    """Boot-sector passes ('B' on serial) the guest makes in `seconds` (0: not running)."""
    assert m.serial is not None
    mark = m.serial.mark()
    time.sleep(seconds)
    return m.serial.count(b"B", mark)


def require_guest_runs(m: Machine, what: str, seconds: float = 1.0) -> int:
    """The guest on m must be running (and, for the boot sector, making passes).
    Returns the passes seen, -1 for guests without a pass marker."""
    runstate = m.status()
    if runstate != "running":
        raise AssertionError(f"{m.name}: {what}: run state is '{runstate}', expected 'running'")
    if m.spec.guest.kind is not GuestKind.BOOTBLOCK:
        return -1
    n = guest_progress(m, seconds)
    if n == 0:
        raise MachineFailure(m.declare_hang(f"{m.name}: {what}: guest made no boot-sector pass "
                                            f"in {seconds:.0f}s although 'running'"))
    return n
