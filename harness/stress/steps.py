"""What a chaos plan runs against and how its steps fire: the Env the actions drive
(over a harness Pair), each side's phases read from its events, the step loop
(clock- or phase-fired) and the oracles that leave QEMU running (state machine,
stderr). Shared by the engine (harness.stress.engine) and the bases with their
own setup (harness.stress.remote, harness.stress.colo_base)."""
from __future__ import annotations

import json
import signal as signal_mod
import socket
import time

from harness.qemu.machine import Machine
from harness.qemu.qmp import QMPCommandError, QMPDisconnected, QMPTimeout
from harness.run import TestRun
from harness.runtime import actions as act
from harness.runtime.fileload import FileLoad
from harness.stress import coverage as cov
from harness.stress import oracles
from harness.stress.oracles import PairState, Verdict, VerdictKind
from harness.stress.plans import ChaosPlan, Step


# ---------------------------------------------------------------- the env actions run against
class HarnessEnv:
    """harness.runtime.actions' Env over a harness Pair (qemu.qmp monitors)."""

    def __init__(self, st: PairState, migrate_uri: str, main_listener):
        self.st = st
        self._migrate_uri = migrate_uri
        self._main = main_listener
        self._recover = None
        self.held: list[socket.socket] = []
        self.pending: list[socket.socket] = []

    def _m(self, side: str) -> Machine:
        return self.st.machine(side)

    def qmp(self, side, command, args, timeout, oob):
        m = self._m(side)
        if not m.is_running():
            raise act.Gone(command)
        try:
            r = m.qmp.cmd(command, args or None, timeout=timeout, oob=bool(oob and m.qmp.oob_enabled))
            return {"return": r}
        except QMPCommandError as exc:
            return {"error": {"class": exc.error_class, "desc": exc.desc}}
        except QMPTimeout:
            raise act.NoReply(command) from None
        except (QMPDisconnected, EOFError, OSError):
            raise act.Gone(command) from None

    def flood(self, side, command, count, oob):
        m = self._m(side)
        if not m.is_running():
            raise act.Gone(command)
        for mon in (m.qmp, *m.extra_qmp):
            mon.flood(command, count, oob=bool(oob and mon.oob_enabled))

    def signal(self, side, signame):
        m = self._m(side)
        if m.is_running():
            m.kill(getattr(signal_mod, signame))

    def expect_exit(self, side, rc):
        self.st.killed.add(side)
        self._m(side).allow_exit(rc)

    def alive(self, side):
        return self._m(side).is_running()

    def listener(self, channel):
        return self._main if channel == "main" else self._recover

    def set_recover_port(self, port):
        self._recover = ("127.0.0.1", port)

    def migrate_uri(self):
        return self._migrate_uri

    def listen_host(self):
        return "127.0.0.1"

    def cut(self):
        return self.st.proxy.cut() if self.st.proxy is not None else 0

    def hold(self, sock):
        self.held.append(sock)

    def pending_listener(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.pending.append(s)
        return f"tcp:127.0.0.1:{s.getsockname()[1]}"

    def release(self):
        """End of the plan: faults end; QEMU must recover from what they left."""
        for s in self.held + self.pending:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                s.close()
            except OSError:
                pass
        self.held, self.pending = [], []


class Phases:
    """Each side's migration status and run state, read from its events."""

    def __init__(self, st: PairState):
        self.st = st
        self.idx = {"src": 0, "dst": 0}
        self.status = {"src": "none", "dst": "none"}
        self.runstate = {"src": "running", "dst": "inmigrate"}
        self.first: dict[str, float] = {}          # "side:STATUS" -> when first seen
        self.history = {"src": [], "dst": []}      # MIGRATION statuses in order
        self.seq = {"src": [], "dst": []}          # statuses and STOP/RESUME/... names in order

    def poll(self) -> None:
        for side in ("src", "dst"):
            m = self.st.machine(side)
            if m.qmp is None:
                continue
            events = m.qmp.events.events
            while self.idx[side] < len(events):
                ev = events[self.idx[side]]
                self.idx[side] += 1
                if ev.name == "MIGRATION":
                    s = ev.data.get("status", "?")
                    self.history[side].append(s)
                    self.seq[side].append(s)
                    self.status[side] = s
                    self.first.setdefault(f"{side}:{s}", ev.received)
                elif ev.name in ("STOP", "RESUME", "SHUTDOWN", "RESET"):
                    self.seq[side].append(ev.name)
                    self.runstate[side] = {"STOP": "paused", "RESUME": "running",
                                           "SHUTDOWN": "shutdown", "RESET": self.runstate[side]}[ev.name]
                    self.first.setdefault(f"{side}:{ev.name}", ev.received)

    def transitions(self) -> list[str]:
        out = []
        for side, hist in self.history.items():
            prev = "none"
            for s in hist:
                out.append(cov.transition_tuple(side, prev, s))
                prev = s
        return out


def quiet_oracles(run: TestRun, phases: Phases) -> Verdict | None:
    """Violations that leave QEMU running: the state machine and stderr."""
    for side, hist in phases.history.items():
        bad = oracles.state_machine_violation(hist)
        if bad:
            return Verdict(VerdictKind.STATE_MACHINE, f"state-machine: {side} {bad}", " -> ".join(hist))
    for m in run.all_machines():
        line = oracles.stderr_violation(m.stderr_text())
        if line:
            return Verdict(VerdictKind.STDERR, f"stderr: {line}", m.name)
    return None


def _fire_time(step: Step, t0: float, phases: Phases) -> float | None:
    if step.on is None:
        return t0 + step.at_ms / 1000
    seen = phases.first.get(step.on)
    return None if seen is None else max(seen, t0) + step.at_ms / 1000


def run_steps(plan: ChaosPlan, env: HarnessEnv, st: PairState, phases: Phases,
               applied: list, coverage: list, loader: FileLoad | None = None) -> None:
    t0 = time.monotonic()
    end = t0 + plan.span_ms / 1000    # a phase-triggered step whose phase has not come by then is dropped
    pending = list(plan.steps)
    while pending:
        phases.poll()
        if loader is not None:
            loader.tick(env, phases.seq["src"])
        now = time.monotonic()
        due = [(t, i) for i, s in enumerate(pending) if (t := _fire_time(s, t0, phases)) is not None]
        ready = [(t, i) for t, i in due if t <= now]
        if ready:
            _, i = min(ready)
            step = pending.pop(i)
            result = _apply(step, env, st, phases, coverage)
            applied.append((step.describe(), result))
            if loader is not None:
                loader.step_applied(step.side, step.kind, step.args, result.split(":", 1)[0])
            continue
        if now >= end and len(due) == 0:
            for s in pending:
                applied.append((s.describe(), "not fired: its phase did not come within the span"))
            return
        nxt = min([t for t, _ in due] + [end])
        time.sleep(max(0.0, min(0.005, nxt - now)))


def _apply(step: Step, env: HarnessEnv, st: PairState, phases: Phases, coverage: list) -> str:
    action = step.action
    status, runstate = phases.status[step.side], phases.runstate[step.side]
    if action.needs_alive and not env.alive(step.side):
        outcome, words = "skipped", "side not running"
    else:
        outcome, words = action.apply(env, step.side, step.args)
    if outcome == "ok":
        effects = action.effects(step.args)
        if act.SNAPSHOT in effects:
            st.snapshot_touched.add(step.side)
        if act.RESET in effects:
            st.reset.add(step.side)
    coverage.append(cov.action_tuple(step.side, status, runstate, action.key(step.args), outcome))
    return f"{outcome}: {words}"


def conclude(run: TestRun, plan: ChaosPlan, verdict: Verdict | None, phases: Phases | None, applied: list,
             coverage: list, marks: list, notes: list = (), **extra) -> Verdict:
    """After every machine exited: the final verdict (a crash outranks the oracles; the
    quiet oracles speak when nothing else did), coverage with the status transitions,
    timing per phase, and the attempt's plan.json (steps as applied, `extra` fields)."""
    verdict = oracles.final_verdict(run, verdict)
    if phases is not None:
        phases.poll()
        coverage.extend(phases.transitions())
        if verdict.ok:
            verdict = quiet_oracles(run, phases) or verdict
    verdict.applied, verdict.coverage = applied, coverage
    verdict.notes = list(verdict.notes) + list(notes)
    verdict.timing = {name: round(t - marks[i][1], 3) for i, (name, t) in enumerate(marks[1:])}
    (run.artifacts / "plan.json").write_text(json.dumps(dict(plan.to_dict(), applied=[
        {"step": a, "result": r} for a, r in applied], timing_s=verdict.timing, **extra), indent=2) + "\n")
    return verdict
