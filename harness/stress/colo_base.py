"""COLO bases: a chaos attempt on a COLO pair (primary = source, secondary =
destination), on binaries where COLO works.

Eligibility comes from a probe of the binaries (`probe()`: a COLO pair must enter
'colo'; cached per binary identity), not from a version: 10.0.2's primary ends
'completed' instead (fixed upstream by 0b5bf4ea76, 10.2) and fails the probe.

The attempt lays out the COLO-FT setup (harness.migration.flows.colo builds the
command lines and disks; harness.runtime.colo the NBD/replication/capability
half that the exported reproducer runs too), migrates through the userspace
relay (so the link can be cut), fires the plan (x-colo-lost-heartbeat and the
failover teardown are drawn often here), then settles and judges:

- 'colo' is a resting state (COLO waits for a failover request after an error);
- crash, hang (a side that does not answer, a migration stuck out of 'colo' and
  the terminal states), the state machine and stderr, as for every base;
- a side the plan asked to fail over (x-colo-lost-heartbeat accepted) that left
  COLO (COLO_EXIT) must run its guest within RESUME_S, and its memory must keep
  the boot sector's page rule (its peer leaves COLO too, but must not resume on
  its own: that would be split brain);
- a primary that ends 'completed' without ever entering 'colo' (and without a
  cancel) is a violation: COLO silently not protecting the guest.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from harness import cache
from harness.faults.proxy import TcpProxy
from harness.guest import integrity
from harness.migration import tuning
from harness.migration.flows.colo import ColoSetup, qemu_img_for
from harness.migration.pair import make_pair
from harness.qemu.binary import probe as probe_binary
from harness.qemu.machine import MachineFailure
from harness.qemu.spec import BOOTBLOCK_MIN_MIB, GuestKind, GuestSpec, MachineSpec, SpecError
from harness.run import TestRun
from harness.runtime import colo as colo_rt
from harness.stress import oracles
from harness.stress.oracles import PairState, Verdict, VerdictKind
from harness.stress.plans import ChaosPlan
from harness.stress.steps import HarnessEnv, Phases, conclude, run_steps

SETTLE_S = 40.0
RESUME_S = 15.0     # a side that failed over runs its guest again by then
PROBE_S = 30.0
PROBE_VERSION = 1


def _failed_over(m) -> bool:
    return m.qmp is not None and any(e.name == "COLO_EXIT" for e in m.qmp.events.events)


def settle(st: PairState, deadline: float) -> str | None:
    """The primary's status once it rests ('colo' before any failover, or terminal); as
    oracles.settle's. After a COLO_EXIT the primary is still finishing its failover."""
    result = None
    while time.monotonic() < deadline:
        result = oracles.status(st.pair.src)
        if result is None or result == oracles.NO_REPLY or result in oracles.TERMINAL or (
                result == colo_rt.RESTING and not _failed_over(st.pair.src)):
            return result
        if result == "pre-switchover":
            st.pair.src.qmp.try_cmd("migrate-continue", {"state": "pre-switchover"})
        time.sleep(0.05)
    return result


def requested(plan: ChaosPlan, applied: list) -> set[str]:
    """Sides where the plan's x-colo-lost-heartbeat was accepted: they must resume."""
    results = dict(applied)
    return {s.side for s in plan.steps
            if s.kind == "colo-lost-heartbeat" and results.get(s.describe(), "").startswith("ok")}


def judge(st: PairState, settled: str | None, src_history: list[str], asked: set[str]) -> Verdict | None:
    """asked: the sides a failover was requested on (requested())."""
    v = oracles._answers(st, settled)
    if v is not None:
        return v
    src = st.pair.src
    if settled is not None and settled != oracles.NO_REPLY and settled not in oracles.TERMINAL \
            and settled != colo_rt.RESTING and "src" not in st.killed:
        src.declare_hang(f"{src.name}: migration stuck in '{settled}'")
        return Verdict(VerdictKind.HANG, f"hang: migration stuck in '{settled}'",
                       f"primary status '{settled}' {SETTLE_S:.0f}s after the plan")
    if settled == "completed" and colo_rt.RESTING not in src_history and "cancelling" not in src_history \
            and "src" not in st.killed and "src" not in st.snapshot_touched:
        return Verdict(VerdictKind.INCONSISTENT, "inconsistent: COLO primary completed without entering 'colo'",
                       " -> ".join(src_history))
    for side in ("src", "dst"):
        m = st.machine(side)
        if side in st.killed or not m.is_running() or m.qmp is None:
            continue
        if side not in asked or not _failed_over(m):
            continue    # the peer of a failover exits COLO too, but must not resume on its own
        problem = _resumed(m, time.monotonic() + RESUME_S) or oracles.guest_alive(m)
        if problem:
            return Verdict(VerdictKind.LOST_VM, f"lost-vm: {side} failed over and lost its guest", problem)
        if side not in st.reset and not st.reset:
            try:
                integrity.prove_bootblock_pattern(m)
            except integrity.IntegrityError as exc:
                return Verdict(VerdictKind.LOST_VM, f"lost-vm: {side} memory corrupt after failover", str(exc))
    return None


def _resumed(m, deadline: float) -> str | None:
    """None once m's run state leaves the failover's transient ones (paused is left to
    guest_alive's `cont`); else the state it stayed in."""
    state = "?"
    while time.monotonic() < deadline:
        r = m.qmp.try_cmd("query-status", timeout=oracles.STATUS_TIMEOUT)
        state = r.get("status", "?") if "error" not in r else "?"
        if state in ("running", "paused") or not m.is_running():
            return None
        time.sleep(0.05)
    return f"{m.name} failed over but stayed '{state}' for {RESUME_S:.0f}s"


class Layout:
    """One COLO pair's work dir, disks and command-line arguments."""

    def __init__(self, run: TestRun, src_binary: str, dst_binary: str):
        self.host = run.host
        self.work = run.host.make_run_dir("colo")
        self.setup = ColoSetup(self.work, probe_binary(src_binary).version_tuple,
                               probe_binary(dst_binary).version_tuple)
        colo_rt.make_images(str(self.work), qemu_img_for(dst_binary))

    def remove(self) -> None:
        self.host.remove_run_dir(self.work)


def start(run: TestRun, base_spec: MachineSpec, base, dst_binary: str | None, env_factory):
    """Boot the COLO pair, set it up, start the migration. Returns (layout, st, env, proxy)."""
    dst_bin = dst_binary or base_spec.binary
    layout = Layout(run, base_spec.binary, dst_bin)
    spec = base_spec.with_(guest=GuestSpec(kind=GuestKind.BOOTBLOCK), extra_monitors=1,
                           memory_mib=BOOTBLOCK_MIN_MIB)
    pair = make_pair(run, spec, dst_binary=dst_binary, dst_paused=False,
                     src_extra=layout.setup.primary_args(), dst_extra=layout.setup.secondary_args())
    pair.dst.expect_exit((0, 1))
    st = PairState(pair, None)
    env = env_factory(st, None, None)
    colo_rt.setup(env, layout.setup.nbd_sock)
    colo_rt.caps(env, {k: v for k, v in base.caps if k != "events"})
    tuning.set_parameters(pair.dst, dict(base.dst_params))
    pair.dst.cmd("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
    port = int(pair.dst.cmd("query-migrate")["socket-address"][0]["port"])
    proxy = TcpProxy(("127.0.0.1", port), name="colo").start()
    st.proxy = proxy
    env = env_factory(st, proxy.uri, ("127.0.0.1", port))
    tuning.ensure_converge(pair.src)
    tuning.set_parameters(pair.src, {"x-checkpoint-delay": base.checkpoint_delay_ms, **dict(base.src_params)})
    pair.wait_guest_ready()
    return layout, st, env, proxy


# ---------------------------------------------------------------- the probe
def probe(src_binary: str, dst_binary: str, accel: str) -> str | None:
    """None if a COLO pair of these binaries enters 'colo'; else why not (one line).
    Cached per binary identity (path, size, mtime)."""
    key = f"v{PROBE_VERSION}-{cache.file_key(src_binary)}-{cache.file_key(dst_binary)}-{accel}"
    hit = cache.load("colo-probe", key)
    if hit is not None:
        return hit.get("problem")
    with cache.locked("colo-probe", key):
        hit = cache.load("colo-probe", key)
        if hit is not None:
            return hit.get("problem")
        problem = _probe(src_binary, dst_binary, accel)
        cache.store("colo-probe", key, {"problem": problem})
        return problem


def _probe(src_binary: str, dst_binary: str, accel: str) -> str | None:
    import tempfile
    from harness.stress.bases import ChaosBase
    from harness.migration.transports import Transport
    base = ChaosBase(path="/migration/colo/probe", transport=Transport.TCP, caps=(("events", True),),
                     src_params=(), dst_params=(), colo=True, checkpoint_delay_ms=300)
    with tempfile.TemporaryDirectory(prefix="qmh-colo-probe-") as d:
        run = TestRun(Path(d) / "run")
        layout = proxy = None
        try:
            layout, st, env, proxy = start(run, MachineSpec(binary=src_binary, accel=accel), base, dst_binary,
                                           HarnessEnv)
            st.pair.src.cmd("migrate", {"uri": proxy.uri})
            deadline = time.monotonic() + PROBE_S
            seen = []
            while time.monotonic() < deadline:
                s = oracles.status(st.pair.src)
                if not seen or seen[-1] != s:
                    seen.append(s)
                if s == colo_rt.RESTING:
                    return None
                if s is None or s in oracles.TERMINAL or s == oracles.NO_REPLY:
                    break
                time.sleep(0.05)
            return (f"a COLO pair of these binaries never enters 'colo' (primary: "
                    f"{' -> '.join(str(x) for x in seen)})")
        except (MachineFailure, colo_rt.ColoSetupError, OSError, RuntimeError) as exc:
            return f"the COLO-FT setup fails on these binaries: {str(exc).splitlines()[0][:200]}"
        finally:
            if proxy is not None:
                proxy.stop()
            run.abort()
            if layout is not None:
                layout.remove()


# ---------------------------------------------------------------- one attempt
def attempt(run: TestRun, base_spec: MachineSpec, plan: ChaosPlan, base, dst_binary: str | None = None) -> Verdict:
    """One plan on a COLO base (chaos_attempt's counterpart; same Env, phases, steps)."""
    if plan.guest != "bootblock":
        raise SpecError(f"plan: guest {plan.guest}: COLO bases boot the boot sector only")
    applied: list = []
    coverage: list = []
    st = env = phases = layout = proxy = None
    verdict: Verdict | None = None
    marks = [("start", time.monotonic())]
    try:
        layout, st, env, proxy = start(run, base_spec, base, dst_binary, HarnessEnv)
        marks.append(("booted", time.monotonic()))
        phases = Phases(st)
        st.pair.src.cmd("migrate", {"uri": proxy.uri})
        marks.append(("migrating", time.monotonic()))
        run_steps(dataclasses.replace(plan, span_ms=plan.span_ms + colo_rt.ENTRY_MS), env, st, phases,
                   applied, coverage)
        marks.append(("plan done", time.monotonic()))
        env.release()
        settled = settle(st, time.monotonic() + SETTLE_S)
        phases.poll()
        marks.append(("settled", time.monotonic()))
        verdict = judge(st, settled, list(phases.history["src"]), requested(plan, applied))
        marks.append(("judged", time.monotonic()))
    except MachineFailure as exc:
        if exc.outcome.kind.name == "HANG":
            verdict = Verdict(VerdictKind.HANG, exc.outcome.signature, exc.outcome.detail)
    finally:
        if env is not None:
            env.release()
        if proxy is not None:
            proxy.stop()
        run.abort()
        if layout is not None:
            layout.remove()
        marks.append(("ended", time.monotonic()))
    return conclude(run, plan, verdict, phases, applied, coverage, marks)
