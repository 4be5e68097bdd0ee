"""The chaos engine: a catalog base, a plan of steps fired by clock or phase, oracles.

One attempt boots a boot-sector pair laid out for the whole API surface (a
writable qcow2 disk for snapshot jobs and block activation, a free PCIe root
port for hotplug, two monitors per side), sets up the base's migration (caps,
params, TLS, multifd, postcopy; tcp through a userspace relay so the link can
be cut), starts it held non-converging, fires the plan's steps (each through
harness.runtime.actions, the code the exported reproducer runs too), then
settles and judges (harness.stress.oracles). Every applied step adds a
coverage tuple; every MIGRATION status change a transition.
"""
from __future__ import annotations

import json
import random
import shutil
import signal as signal_mod
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.faults.proxy import TcpProxy
from harness.hosts.local import LocalHost
from harness.migration import tuning
from harness.migration.pair import StartedPair, start_pair
from harness.migration.transports import Transport
from harness.qemu.machine import Machine, MachineFailure
from harness.qemu.qmp import QMPCommandError, QMPDisconnected, QMPTimeout
from harness.qemu.spec import BOOTBLOCK_MIN_MIB, BOOTROM_MIN_MIB, GuestKind, GuestSpec, MachineSpec
from harness.run import TestRun
from harness.runtime import actions as act
from harness.runtime.fileload import FileLoad, file_uri
from harness.runtime.surface import Surface
from harness.stress import bases as bases_mod
from harness.stress import coverage as cov
from harness.stress import guests
from harness.stress import oracles
from harness.stress.oracles import PairState, Verdict, VerdictKind
from harness.stress.plans import ChaosPlan, Step, generate, mutate

DISK_MIB = 16


# ---------------------------------------------------------------- the recipe hammer() runs
@dataclass
class ChaosRecipe:
    """How plans are drawn: a base from `bases`, `actions` steps within `span_ms`;
    half the time a mutation of a corpus plan. Each worker process has its own
    copy, fed back by the attempts it runs."""

    surface: Surface
    bases: list = field(default_factory=lambda: [bases_mod.PLAIN])
    actions: int = 6
    span_ms: int = 500
    corpus_dir: str | None = None      # where new-coverage plans are written
    dst_binary: str | None = None      # cross-version pairs: the destination's binary
    kinds: tuple = ()                  # --kinds: draw only these actions
    spinning_guest: bool = False       # --spinning-guest: qtest's boot sector under SeaBIOS
    linux: bool = False                # fresh plans may boot the Linux guest (harness.stress.guests)
    path: str = "/migration/chaos"
    _coverage: object = None
    _corpus: object = None

    def _state(self):
        if self._corpus is None:
            self._coverage = cov.Coverage()
            self._corpus = cov.Corpus(Path(self.corpus_dir) if self.corpus_dir else None,
                                      known_bases=set(bases_mod.by_path(self.bases)))
            if self.corpus_dir:
                self._corpus.load(Path(self.corpus_dir))
        return self._coverage, self._corpus

    def draw_context(self, base) -> act.DrawContext:
        return act.DrawContext(surface=self.surface, postcopy=base.postcopy, tls=base.tls is not None,
                               multifd=base.multifd, snapshots=not base.colo, hotplug=not base.colo,
                               colo=base.colo, only=self.kinds)

    def draw(self, rng: random.Random) -> ChaosPlan:
        _, corpus = self._state()
        parent = corpus.pick(rng) if rng.random() < 0.5 else None
        if parent is not None:
            base = bases_mod.by_path(self.bases).get(parent.base, bases_mod.PLAIN)
            return mutate(rng, parent, self.draw_context(base), self.actions * 2)
        base = bases_mod.draw(rng, self.bases)
        seed = rng.getrandbits(62)
        steps = generate(random.Random(seed), self.draw_context(base), self.actions, self.span_ms)
        # COLO pairs boot the boot sector only (colo_base): their plans never draw Linux
        return ChaosPlan(seed, base.path, tuple(steps), self.span_ms, guests.draw(seed, self.linux and not base.colo))

    def prepare(self, run: TestRun, base_spec: MachineSpec, plan: ChaosPlan) -> "Prepared":
        """Spawn the pair of a later attempt now (the hammer does it one attempt ahead,
        so QEMU's start-up overlaps the current plan instead of adding to it)."""
        return prepare_attempt(run, base_spec, plan, self.bases, self.dst_binary,
                               paced_guest=not self.spinning_guest)

    def attempt(self, run: TestRun, base_spec: MachineSpec, plan: ChaosPlan,
                prepared: "Prepared | None" = None) -> Verdict:
        return chaos_attempt(run, base_spec, plan, self.bases, self.dst_binary,
                             paced_guest=not self.spinning_guest, prepared=prepared)

    def feedback(self, plan: ChaosPlan, verdict) -> list[str]:
        coverage, corpus = self._state()
        new = coverage.add(getattr(verdict, "coverage", ()))
        if new:
            corpus.add(plan, new)
        return new


def base_of(plan: ChaosPlan, bases: list | None = None):
    known = bases_mod.by_path(bases or [])
    if plan.base in known:
        return known[plan.base]
    from harness.migration import catalog
    s = catalog.by_path().get(plan.base)
    if s is None:
        return bases_mod.PLAIN
    return bases_mod.from_scenario(s)


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
        allow_exit(self._m(side), rc)

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


def allow_exit(m: Machine, rc: int) -> None:
    """Add rc to what m may exit with, keeping earlier allowances."""
    m.expect_exit(tuple(sorted(set(m._expected_rcs) | {rc})))


# ---------------------------------------------------------------- phases
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


# ---------------------------------------------------------------- one attempt
_EMPTY_DISK: dict = {}


def _empty_disk(qemu_img: str) -> Path:
    """An empty qcow2 made once per process and copied per attempt (a copy of ~200 KiB
    is cheaper than running qemu-img every attempt). Its dir is an owner-marked run
    dir: removed at exit, reaped if the process is killed."""
    if "path" not in _EMPTY_DISK:
        import atexit
        host = LocalHost()
        d = host.make_run_dir("chaos-disk")
        atexit.register(host.remove_run_dir, d)
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(d / "empty.qcow2"), f"{DISK_MIB}M"],
                       check=True, timeout=30)
        _EMPTY_DISK["path"] = d / "empty.qcow2"
    return _EMPTY_DISK["path"]


def disk_args(workdir: Path) -> tuple[str, ...]:
    """A writable qcow2 disk (snapshot jobs, block activation) shared by both sides, as
    on shared storage, and a free root port for hotplug. JSON blockdev: no comma escaping."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        return ("-device", "pcie-root-port,id=hp0,chassis=7")
    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / "disk0.qcow2"
    if not disk.exists():
        shutil.copyfile(_empty_disk(qemu_img), disk)
    return layout_args(str(disk))


def layout_args(disk: str) -> tuple[str, ...]:
    """The qcow2 at `disk` (a path on the QEMU's host) as node SNAP_DISK, and a free root
    port for hotplug."""
    node = {"driver": "qcow2", "node-name": act.SNAP_DISK,
            "file": {"driver": "file", "filename": disk}}
    return ("-blockdev", json.dumps(node, separators=(",", ":")), "-device", f"ide-hd,drive={act.SNAP_DISK},bus=ide.1",
            "-device", "pcie-root-port,id=hp0,chassis=7")


@dataclass
class Prepared:
    """An attempt's pair, spawned with its source paused (-S), not yet connected."""
    started: StartedPair
    tls: object = None        # harness.migration.tls.Setup, or None


def prepare_attempt(run: TestRun, base_spec: MachineSpec, plan: ChaosPlan, bases: list | None = None,
                    dst_binary: str | None = None, paced_guest: bool = True) -> Prepared | None:
    """Lay out the disk and TLS files and spawn the pair (source paused: its guest
    starts when the attempt begins, whether the pair was spawned ahead or not)."""
    base = base_of(plan, bases)
    if base.colo:       # colo_base.attempt lays out its own pair
        return None
    # Inventory hosts: a disk per side on its own host, TLS staged (harness.stress.remote,
    # imported here: it builds on HarnessEnv).
    from harness.stress import remote
    if remote.remote_pair(run.placement):
        layout, tls = (), remote.setup(run, base, layout_args, DISK_MIB)
    else:
        layout = disk_args(run.artifacts / "shared")
        tls = base.tls.materialize(run.artifacts / "tls") if base.tls is not None else None
    guest, memory = guests.spec(plan.guest, paced_guest)
    spec = base_spec.with_(guest=guest, extra_monitors=1, memory_mib=memory,
                           extra_args=base_spec.extra_args + layout)
    started = start_pair(run, spec, dst_binary=dst_binary, dst_paused=False, src_paused=True,
                         src_extra=tls.src_args if tls else (), dst_extra=tls.dst_args if tls else ())
    return Prepared(started, tls)


def chaos_attempt(run: TestRun, base_spec: MachineSpec, plan: ChaosPlan, bases: list | None = None,
                  dst_binary: str | None = None, paced_guest: bool = True,
                  prepared: Prepared | None = None) -> Verdict:
    """Run one plan; the verdict's signature is what the triage groups by.

    paced_guest: the boot sector's loop as firmware, halting between passes
    (GuestSpec.paced_rom): the pair costs a fraction of a core instead of a core
    per running side, so an attempt is CPU-cheap; False: qtest's spinning boot
    sector under SeaBIOS (the highest dirty rate).
    prepared: the pair prepare_attempt() spawned ahead for this run and plan."""
    base = base_of(plan, bases)
    if base.colo:       # its own setup, settling and judging (harness.stress.colo_base)
        from harness.stress import colo_base
        return colo_base.attempt(run, base_spec, plan, base, dst_binary)
    applied: list = []
    coverage: list = []
    st = env = phases = loader = None
    verdict: Verdict | None = None
    proxy = None
    notes: list = []
    marks = [("start", time.monotonic())]
    from harness.stress import remote   # builds on HarnessEnv (see prepare_attempt)
    try:
        if prepared is None:
            prepared = prepare_attempt(run, base_spec, plan, bases, dst_binary, paced_guest)
        tls = prepared.tls
        pair = prepared.started.connect()
        pair.src.cmd("cont")
        pair.dst.expect_exit((0, 1))   # an incoming migration that fails exits 1
        pair.wait_guest_ready()
        marks.append(("booted", time.monotonic()))
        caps = dict(base.caps)
        for m in (pair.src, pair.dst):
            tuning.set_capabilities(m, caps)
        tuning.set_parameters(pair.src, {**dict(base.src_params), **(tls.src_params if tls else {})})
        tuning.set_parameters(pair.dst, {**dict(base.dst_params), **(tls.dst_params if tls else {})})
        if base.file:   # the destination loads the file once the save completed (FileLoad)
            migrate_uri, main = file_uri(str(pair.dst.run_dir / "migration.bin"), base.file_offset), None
            loader = FileLoad(migrate_uri)
        elif remote.remote_pair(run.placement):
            migrate_uri, main = remote.incoming(pair, base)
        elif base.transport is Transport.UNIX:
            path = pair.dst.run_dir / "mig.sock"
            pair.dst.cmd("migrate-incoming", {"uri": f"unix:{path}"})
            migrate_uri, main = f"unix:{path}", str(path)
        else:
            pair.dst.cmd("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
            port = int(pair.dst.cmd("query-migrate")["socket-address"][0]["port"])
            proxy = TcpProxy(("127.0.0.1", port), name="chaos").start()
            migrate_uri, main = proxy.uri, ("127.0.0.1", port)
        st = PairState(pair, proxy)
        env = (remote.RemoteEnv(st, migrate_uri, main, remote.ChaosLink(run.placement), plan)
               if remote.remote_pair(run.placement) else HarnessEnv(st, migrate_uri, main))
        phases = Phases(st)
        if loader is None:
            tuning.ensure_non_converge(pair.src)   # keep it active while the plan runs
        else:                                      # the load comes after the save: let it end
            tuning.set_parameters(pair.src, oracles.SETTLE_PARAMS)
            if not base.live:
                pair.src.cmd("stop")
        pair.src.cmd("migrate", {"uri": migrate_uri})
        marks.append(("migrating", time.monotonic()))
        _run_steps(plan, env, st, phases, applied, coverage, loader)
        marks.append(("plan done", time.monotonic()))
        env.release()
        deadline = time.monotonic() + oracles.SETTLE_TIMEOUT
        settled = oracles.settle(st, deadline, recover=lambda: act.Recover().apply(env, "dst", ()))
        if loader is not None:
            _finish_load(loader, env, st, phases, settled, notes)
        marks.append(("settled", time.monotonic()))
        verdict = oracles.judge(st, settled)
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
        marks.append(("ended", time.monotonic()))
    verdict = oracles.final_verdict(run, verdict)
    if phases is not None:
        phases.poll()
        coverage.extend(phases.transitions())
        if verdict.ok:
            verdict = _quiet_oracles(run, phases) or verdict
    verdict.applied = applied
    verdict.coverage = coverage
    verdict.notes = list(verdict.notes) + notes
    timing = {name: round(t - marks[i][1], 3) for i, (name, t) in enumerate(marks[1:])}
    verdict.timing = timing
    extra = {"load": loader.result or "not started", "load_excuse": loader.excuse()} if loader else {}
    (run.artifacts / "plan.json").write_text(json.dumps(dict(plan.to_dict(), applied=[
        {"step": a, "result": r} for a, r in applied], timing_s=timing, **extra), indent=2) + "\n")
    return verdict


def _quiet_oracles(run: TestRun, phases: Phases) -> Verdict | None:
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


def _finish_load(loader: FileLoad, env: HarnessEnv, st: PairState, phases: Phases, settled,
                 notes: list) -> None:
    """File bases after settling: a save that completed after the plan is loaded now;
    a load the plan spoiled is not judged (FileLoad.excuse)."""
    phases.poll()
    loader.tick(env, phases.seq["src"])
    why = loader.excuse()
    if settled == "completed" and why:
        st.detached.add("dst")
        notes.append(f"destination not judged: {why}")


def _run_steps(plan: ChaosPlan, env: HarnessEnv, st: PairState, phases: Phases,
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
        if step.kind in ("snapshot-save", "snapshot-load", "snapshot-delete") or (
                step.kind == "hmp" and step.args[0].split()[0] in ("savevm", "loadvm", "delvm")):
            st.snapshot_touched.add(step.side)
        if step.kind == "system-reset" or (step.kind == "hmp" and step.args[0].startswith("loadvm")):
            st.reset.add(step.side)
        if step.kind == "snapshot-load":
            st.reset.add(step.side)
    coverage.append(cov.action_tuple(step.side, status, runstate, action.key(step.args), outcome))
    return f"{outcome}: {words}"
