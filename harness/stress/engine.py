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
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.faults.proxy import TcpProxy
from harness.hosts.local import LocalHost
from harness.migration import tuning
from harness.migration.pair import StartedPair, start_pair
from harness.migration.transports import Transport
from harness.qemu.machine import MachineFailure
from harness.qemu.spec import MachineSpec
from harness.run import TestRun
from harness.runtime import actions as act
from harness.runtime.fileload import FileLoad, file_uri
from harness.runtime.surface import Surface
from harness.stress import bases as bases_mod
from harness.stress import coverage as cov
from harness.stress import guests
from harness.stress import colo_base, oracles, remote
from harness.stress.oracles import PairState, Verdict, VerdictKind
from harness.stress.plans import ChaosPlan, generate, mutate
from harness.stress.steps import HarnessEnv, Phases, conclude, run_steps

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
    # Inventory hosts: a disk per side on its own host, TLS staged (harness.stress.remote).
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
        return colo_base.attempt(run, base_spec, plan, base, dst_binary)
    applied: list = []
    coverage: list = []
    st = env = phases = loader = None
    verdict: Verdict | None = None
    proxy = None
    notes: list = []
    marks = [("start", time.monotonic())]
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
        run_steps(plan, env, st, phases, applied, coverage, loader)
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
    extra = {"load": loader.result or "not started", "load_excuse": loader.excuse()} if loader else {}
    return conclude(run, plan, verdict, phases, applied, coverage, marks, notes, **extra)


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


