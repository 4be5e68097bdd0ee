"""Chaos engine: a seeded schedule of actions thrown at a migrating pair, then oracles.

One attempt: boot a bootblock pair, start a precopy through a userspace TCP
proxy (so the link can be cut), apply the plan's actions at their times,
let the migration settle, then judge it:

- no crash (any signal, any assertion) on either side;
- no hang: every live QEMU answers query-status, and the migration reaches a
  terminal state within a deadline;
- no lost VM: source 'completed' => the destination runs the guest and its
  memory passes the page rule; failed/cancelled => the source still runs it;
- the two sides agree (no split brain, no 'completed' into a dead end).
"""
from __future__ import annotations

import enum
import random
import signal
import socket
import time
from dataclasses import dataclass, field

from harness.faults.proxy import TcpProxy
from harness.guest import integrity
from harness.migration import tuning
from harness.migration.pair import Pair, make_pair
from harness.qemu.machine import Machine, MachineFailure
from harness.qemu.qmp import QMPCommandError, QMPDisconnected, QMPTimeout
from harness.qemu.spec import GuestKind, GuestSpec, MachineSpec
from harness.run import TestRun
from harness.stress.actions import Action, Kind, Side, generate, primitive

QMP_ACTION_TIMEOUT = 5.0
SETTLE_TIMEOUT = 40.0
STATUS_TIMEOUT = 5.0
TERMINAL = {"completed", "failed", "cancelled"}


class VerdictKind(enum.Enum):
    CLEAN = "clean"
    CRASH = "crash"
    HANG = "hang"
    LOST_VM = "lost-vm"
    INCONSISTENT = "inconsistent"


@dataclass(frozen=True)
class ChaosPlan:
    seed: int
    actions: tuple[Action, ...]
    span_ms: int

    def to_dict(self) -> dict:
        return {"seed": self.seed, "span_ms": self.span_ms,
                "actions": [a.to_dict() for a in self.actions]}

    @classmethod
    def from_dict(cls, d: dict) -> "ChaosPlan":
        return cls(int(d["seed"]), tuple(Action.from_dict(a) for a in d["actions"]), int(d["span_ms"]))

    def with_actions(self, actions) -> "ChaosPlan":
        return ChaosPlan(self.seed, tuple(sorted(actions, key=lambda a: a.at_ms)), self.span_ms)


@dataclass(frozen=True)
class ChaosRecipe:
    """How plans are drawn: `actions` per plan within `span_ms` of the migrate command."""

    actions: int = 6
    span_ms: int = 2000
    path: str = "/migration/chaos/precopy/tcp"

    def draw(self, rng: random.Random) -> ChaosPlan:
        seed = rng.getrandbits(62)
        return ChaosPlan(seed, tuple(generate(random.Random(seed), self.actions, self.span_ms)),
                         self.span_ms)


@dataclass
class Verdict:
    kind: VerdictKind
    signature: str
    detail: str = ""
    core: object = None
    applied: list = field(default_factory=list)   # (action, what happened)
    notes: list = field(default_factory=list)     # observations worth counting

    @property
    def ok(self) -> bool:
        return self.kind is VerdictKind.CLEAN


# ---------------------------------------------------------------- one attempt
class _Ctx:
    def __init__(self, pair: Pair, proxy: TcpProxy, listen_port: int):
        self.pair = pair
        self.proxy = proxy
        self.listen_port = listen_port
        self.killed: set[str] = set()   # sides we (the plan) killed or quit on purpose
        self.stopped: set[str] = set()  # sides the plan stopped with 'stop'
        self.strays: list[socket.socket] = []
        # savevm reuses the migration state: query-migrate on that side then shows
        # the snapshot's status, not the migration's. Judge crashes/hangs only.
        self.savevm_done: set[str] = set()

    def machine(self, side: Side) -> Machine:
        return self.pair.src if side is Side.SRC else self.pair.dst

    def other(self, side: Side) -> Side:
        return Side.DST if side is Side.SRC else Side.SRC


def apply(ctx: _Ctx, action: Action) -> str:
    """Do one action; return what happened, in words (recorded)."""
    m = ctx.machine(action.side)
    prim = primitive(action)
    op = prim[0]
    if op in ("qmp", "qmp-oob", "qmp-burst") and not m.is_running():
        return "skipped: side not running"
    try:
        if op == "qmp-burst":
            for mon in (m.qmp, *m.extra_qmp):   # every monitor: more queued at once
                mon.flood(prim[1], prim[3])
            return f"flooded {prim[3]}"
        if op in ("qmp", "qmp-oob"):
            cmd, args = prim[1], prim[2]
            if action.kind is Kind.QUIT:
                ctx.killed.add(action.side.value)
                _allow_exit(m, 0)
            m.qmp.cmd(cmd, args or None, timeout=QMP_ACTION_TIMEOUT,
                      oob=(op == "qmp-oob" and m.qmp.oob_enabled))
            if action.kind is Kind.SAVEVM:
                ctx.savevm_done.add(action.side.value)
            if action.kind is Kind.STOP:
                ctx.stopped.add(action.side.value)
            elif action.kind is Kind.CONT:
                ctx.stopped.discard(action.side.value)
            return "ok"
        if op == "signal":
            if not m.is_running():
                return "skipped: side not running"
            if prim[1] == "SIGTERM":
                ctx.killed.add(action.side.value)
                _allow_exit(m, 0)   # QEMU exits 0 on SIGTERM; a crash is still news
            m.kill(getattr(signal, prim[1]))
            return f"sent {prim[1]}"
        if op == "kill-peer":
            peer = ctx.machine(ctx.other(action.side))
            ctx.killed.add(ctx.other(action.side).value)
            _allow_exit(peer, -signal.SIGKILL)
            peer.kill(signal.SIGKILL)
            return f"killed {peer.name}"
        if op in ("garbage", "stray"):
            s = socket.create_connection(("127.0.0.1", ctx.listen_port), timeout=1.0)
            if op == "garbage":
                s.sendall(bytes.fromhex(prim[1]))
                s.close()
                return "sent garbage"
            ctx.strays.append(s)
            return "stray connection open"
        if op == "cut":
            return f"cut {ctx.proxy.cut()} connection(s)"
    except QMPCommandError as exc:
        return f"error {exc.error_class}: {exc.desc[:120]}"
    except QMPTimeout:
        return "no reply (timeout)"
    except QMPDisconnected:
        return "disconnected"
    except OSError as exc:
        return f"socket: {exc.strerror or exc}"
    return f"unknown primitive {op}"


NO_REPLY = "no-reply"


def _allow_exit(m: Machine, rc: int) -> None:
    """Add rc to what m may exit with; keep earlier allowances (e.g. a destination whose
    incoming migration failed exits 1, even if we also sent it SIGTERM)."""
    m.expect_exit(tuple(sorted(set(m._expected_rcs) | {rc})))


def _status(m: Machine) -> str | None:
    """Migration status; None if the machine is dead, NO_REPLY if it does not answer."""
    if not m.is_running():
        return None
    r = m.qmp.try_cmd("query-migrate", timeout=STATUS_TIMEOUT)
    if r.get("timeout"):
        return NO_REPLY
    return r.get("status", "none") if "error" not in r else None


def _settle(ctx: _Ctx, deadline: float) -> str | None:
    """Let the migration finish: converge, continue a pre-switchover, wait for terminal."""
    src = ctx.pair.src
    if src.is_running():
        src.qmp.try_cmd("migrate-set-parameters", {"max-bandwidth": tuning.CONVERGE_BANDWIDTH,
                                                   "downtime-limit": tuning.CONVERGE_DOWNTIME_MS})
    status = None
    peer_gone_cut = False
    while time.monotonic() < deadline:
        if ctx.proxy is not None and not peer_gone_cut and not ctx.pair.dst.is_running():
            # A dead peer's kernel resets the connection; the userspace proxy keeps
            # accepting the source's bytes unless told to do the same.
            ctx.proxy.cut(refuse_new=True)
            peer_gone_cut = True
        status = _status(src)
        if status is None or status == NO_REPLY or status in TERMINAL:
            return status
        if status == "pre-switchover":
            src.qmp.try_cmd("migrate-continue", {"state": "pre-switchover"})
        if "src" in ctx.stopped and status in ("active", "device"):
            pass  # a stopped source still migrates (non-live), nothing to do
        time.sleep(0.1)
    return status


def _wait_dst_terminal(dst: Machine, deadline: float) -> str | None:
    """The destination may still be loading the last pages when the source completes."""
    status = None
    while time.monotonic() < deadline:
        status = _status(dst)
        if status is None or status in TERMINAL:
            return status
        time.sleep(0.1)
    return status


def _last_stderr_line(m: Machine) -> str:
    lines = [l for l in m.stderr_text().splitlines() if l.strip()]
    return lines[-1] if lines else "(no stderr)"


def _guest_alive(m: Machine, timeout: float = 15.0) -> str | None:
    """Continue m if needed and see the boot sector make a pass; None if fine."""
    st = m.qmp.try_cmd("query-status", timeout=STATUS_TIMEOUT)
    if "error" in st:
        return f"{m.name} does not answer query-status"
    if st["status"] not in ("running",):
        r = m.qmp.try_cmd("cont", timeout=STATUS_TIMEOUT)
        if "error" in r:
            return f"{m.name} cannot continue from '{st['status']}': {r['error'][:100]}"
    mark = m.serial.mark()
    if m.serial.wait_for(rb"B", time.monotonic() + timeout, mark) is None:
        return f"{m.name} guest made no progress in {timeout:.0f}s"
    return None


def judge(ctx: _Ctx, settled: str | None, settle_deadline_hit: bool) -> Verdict | None:
    """Oracles 2-4 (crash is judged from the exits afterwards)."""
    src, dst = ctx.pair.src, ctx.pair.dst
    for m, side in ((src, "src"), (dst, "dst")):
        if m.is_running() and side not in ctx.killed:
            if side == "src" and settled == NO_REPLY:
                r = {"error": "query-migrate got no reply while settling", "timeout": True}
            else:
                r = m.qmp.try_cmd("query-status", timeout=STATUS_TIMEOUT)
            if r.get("timeout"):
                m.declare_hang(f"{m.name}: query-status got no reply within {STATUS_TIMEOUT:.0f}s",
                               qmp_dead=True)
                return Verdict(VerdictKind.HANG, f"hang: {side} does not answer query-status",
                               r["error"])
    if "src" in ctx.killed or "src" in ctx.savevm_done:
        return None  # the source is gone, or its migration status is the snapshot's
    if settled is not None and settled != NO_REPLY and settled not in TERMINAL:
        src.declare_hang(f"{src.name}: migration stuck in '{settled}'")
        return Verdict(VerdictKind.HANG, f"hang: migration stuck in '{settled}'",
                       f"source status '{settled}' {SETTLE_TIMEOUT:.0f}s after the plan")
    if settled == "completed":
        if "dst" in ctx.killed:
            return None
        dstat = _wait_dst_terminal(dst, time.monotonic() + 15.0)
        if not dst.is_running() or dstat == "failed":
            last = _last_stderr_line(dst)
            return Verdict(VerdictKind.LOST_VM,
                           "lost-vm: source completed, destination failed to load",
                           f"destination: {last}")
        if dstat != "completed":
            return Verdict(VerdictKind.INCONSISTENT,
                           f"inconsistent: source completed, destination '{dstat}'")
        problem = _guest_alive(dst)
        if problem:
            return Verdict(VerdictKind.LOST_VM, "lost-vm: source completed, destination guest dead",
                           problem)
        try:
            integrity.prove_bootblock_pattern(dst)
        except integrity.IntegrityError as exc:
            return Verdict(VerdictKind.LOST_VM, "lost-vm: destination memory corrupt", str(exc))
        return None
    if settled in ("failed", "cancelled"):
        if dst.is_running() and "dst" not in ctx.killed:
            dst_st = dst.qmp.try_cmd("query-status", timeout=STATUS_TIMEOUT).get("status")
            if dst_st == "running":
                return Verdict(VerdictKind.INCONSISTENT,
                               f"inconsistent: source {settled}, destination running the guest")
        problem = _guest_alive(src)
        if problem:
            return Verdict(VerdictKind.LOST_VM, f"lost-vm: source {settled} and lost its guest",
                           problem)
    return None


def chaos_attempt(run: TestRun, base: MachineSpec, plan: ChaosPlan) -> Verdict:
    """Run one plan; the verdict's signature is what the triage groups by."""
    # Two monitors per side, like management plus a monitoring agent.
    spec = base.with_(guest=GuestSpec(kind=GuestKind.BOOTBLOCK), extra_monitors=1)
    applied: list = []
    proxy = None
    ctx = None
    verdict: Verdict | None = None
    try:
        pair = make_pair(run, spec, dst_paused=False)
        pair.dst.expect_exit((0, 1))   # an incoming migration that fails exits 1
        pair.wait_guest_ready()
        for m in (pair.src, pair.dst):
            tuning.set_capabilities(m, {"events": True})
        pair.dst.cmd("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
        port = pair.dst.cmd("query-migrate")["socket-address"][0]["port"]
        proxy = TcpProxy(("127.0.0.1", int(port)), name="chaos").start()
        ctx = _Ctx(pair, proxy, int(port))
        tuning.ensure_non_converge(pair.src)   # keep it active while the plan runs
        pair.src.cmd("migrate", {"uri": proxy.uri})
        t0 = time.monotonic()
        for action in plan.actions:
            delay = t0 + action.at_ms / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            applied.append((action.describe(), apply(ctx, action)))
        deadline = time.monotonic() + SETTLE_TIMEOUT
        settled = _settle(ctx, deadline)
        verdict = judge(ctx, settled, time.monotonic() >= deadline)
    except MachineFailure as exc:
        if exc.outcome.kind.name == "HANG":
            verdict = Verdict(VerdictKind.HANG, exc.outcome.signature, exc.outcome.detail)
    finally:
        if ctx is not None:
            for s in ctx.strays:
                s.close()
        if proxy is not None:
            proxy.stop()
        run.abort()
    verdict = final_verdict(run, verdict)
    verdict.applied = applied
    (run.artifacts / "plan.json").write_text(_json(plan.to_dict(), applied))
    return verdict


def final_verdict(run: TestRun, verdict: Verdict | None) -> Verdict:
    """After every machine exited: a crash outranks what the oracles saw; an exit
    nobody declared (e.g. the source erroring out) is a lost VM."""
    crashes = [o for o in run.outcomes.values() if o.kind.name == "CRASH"]
    if crashes:
        o = crashes[0]
        return Verdict(VerdictKind.CRASH, o.signature, o.detail, core=o.core)
    if verdict is not None:
        return verdict
    unexpected = [o for o in run.outcomes.values() if not o.ok and o.kind.name != "KILLED"]
    if unexpected and unexpected[0].kind.name == "HANG":
        return Verdict(VerdictKind.HANG, unexpected[0].signature)
    if unexpected:
        o = unexpected[0]
        return Verdict(VerdictKind.LOST_VM, f"lost-vm: {o.signature}", o.detail)
    return Verdict(VerdictKind.CLEAN, "clean")


def _json(plan: dict, applied: list) -> str:
    import json
    return json.dumps(dict(plan, applied=[{"action": a, "result": r} for a, r in applied]), indent=2) + "\n"
