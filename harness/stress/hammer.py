"""Hammer a race recipe from several worker processes until time, count or a crash.

Each attempt draws its variant and MALLOC_PERTURB_ from its own seeded RNG;
the per-attempt seed is recorded so `--replay SEED` re-runs exactly that
attempt. Workers are processes (not threads): QEMU's PR_SET_PDEATHSIG is tied
to the spawning thread, and a process per worker keeps one slow attempt from
stalling the others.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from harness import proctree
from harness.hosts.local import LocalHost
from harness.qemu.spec import MachineSpec
from harness.run import TestRun
from harness.stress.engine import ChaosRecipe, chaos_attempt
from harness.stress.races import ShutdownRace, shutdown_attempt
from harness.stress.recipes import (CancelRace, DestinationConfigRace, cancel_attempt,
                                    dest_config_attempt)
from harness.evidence import compress_cores
from harness.stress import known_bugs
from harness.stress.display import Display, HammerStatus
from harness.stress.triage import HIT_KINDS, AttemptRecord, EvidenceBudget, Triage

# recipe type -> attempt function(run, base_spec, variant) -> verdict with
# .kind (an enum), .signature, .ok and .core (an Outcome, or a chaos Verdict)
ATTEMPTS: dict[type, Callable] = {ShutdownRace: shutdown_attempt, ChaosRecipe: chaos_attempt,
                                  CancelRace: cancel_attempt, DestinationConfigRace: dest_config_attempt}
# The known QEMU bugs a recipe hits: its hits matching one are triaged as known.
KNOWN_BUGS: dict[type, tuple] = {ShutdownRace: known_bugs.SHUTDOWN_FAMILY}


@dataclass(frozen=True)
class HammerConfig:
    base: MachineSpec
    artifacts: Path
    seconds: float | None = 60.0
    attempts: int | None = None
    parallel: int = 2
    until_crash: bool = False      # stop at the first hit, known or not
    until_new: bool = False        # stop at the first hit no known bug explains
    seed: int = 0
    malloc_perturb: bool = True
    evidence_per_class: int = 3
    keep_passing: bool = False


def attempt_seed(session_seed: int, worker: int, index: int) -> int:
    return random.Random(f"{session_seed}:{worker}:{index}").getrandbits(62)


def draw_attempt(recipe, seed: int, malloc_perturb: bool):
    """Everything random about one attempt, from its seed alone (replayable)."""
    rng = random.Random(seed)
    variant = recipe.draw(rng)
    perturb = rng.randint(1, 255) if malloc_perturb else None
    return variant, perturb


def with_malloc_perturb(base: MachineSpec, perturb: int | None) -> MachineSpec:
    """glibc fills freed/allocated memory with this byte: use-after-free becomes a crash."""
    if perturb is None:
        return base
    env = tuple(kv for kv in base.env if kv[0] != "MALLOC_PERTURB_")
    return base.with_(env=env + (("MALLOC_PERTURB_", str(perturb)),))


@dataclass
class Ahead:
    """An attempt drawn, and its QEMUs spawned, while the one before it runs."""
    index: int
    variant: object
    perturb: int | None
    run: TestRun
    prepared: object


def prepare_ahead(recipe, base: MachineSpec, art: Path, seed: int, malloc_perturb: bool,
                  budget: EvidenceBudget | None, index: int) -> Ahead | None:
    """Draw attempt `index` and let the recipe spawn its QEMUs now (recipes with a
    prepare(); others None). A failure here is left to the attempt to meet again."""
    variant, perturb = draw_attempt(recipe, seed, malloc_perturb)
    run = TestRun(art, want_evidence=budget)
    ahead = Ahead(index, variant, perturb, run, None)
    try:
        ahead.prepared = recipe.prepare(run, with_malloc_perturb(base, perturb), variant)
    except Exception:  # noqa: BLE001 - the attempt sets up again and reports it
        drop_ahead(ahead)
        return None
    return ahead


def drop_ahead(ahead: Ahead | None) -> None:
    """A prepared attempt that will not run: its QEMUs and artifacts go."""
    if ahead is not None:
        ahead.run.abort()
        ahead.run.discard_artifacts()


def run_one(recipe, base: MachineSpec, art: Path, seed: int, malloc_perturb: bool,
            budget: EvidenceBudget | None = None, worker: str = "w0", index: int = 0,
            keep_passing: bool = False, ahead: Ahead | None = None) -> AttemptRecord:
    """One seeded attempt; everything random comes from `seed` (ahead: drawn and
    spawned already by prepare_ahead from the same seed)."""
    if ahead is not None:
        variant, perturb, run = ahead.variant, ahead.perturb, ahead.run
    else:
        variant, perturb = draw_attempt(recipe, seed, malloc_perturb)
        run = TestRun(art, want_evidence=budget)
    spec = with_malloc_perturb(base, perturb)
    (art / "seed.txt").write_text(f"{seed}\n")
    t0 = time.monotonic()
    attempt = getattr(recipe, "attempt", None) or ATTEMPTS[type(recipe)]  # chaos: bound to its bases
    if ahead is not None:
        outcome = attempt(run, spec, variant, prepared=ahead.prepared)
    else:
        outcome = attempt(run, spec, variant)
    feedback = getattr(recipe, "feedback", None)   # chaos: coverage steers later draws
    with _FEEDBACK_LOCK:                           # a slow attempt ends on its own thread
        new = feedback(variant, outcome) if feedback is not None else []
    rec = AttemptRecord(worker=worker, index=index, seed=seed, variant=variant.to_dict(),
                        kind=outcome.kind.name.lower(), signature=outcome.signature, ok=outcome.ok,
                        seconds=round(time.monotonic() - t0, 3), artifacts=str(art),
                        malloc_perturb=perturb, evidence=outcome.core is not None,
                        notes=list(getattr(outcome, "notes", [])),
                        coverage=list(getattr(outcome, "coverage", [])), new_coverage=len(new))
    if not outcome.ok:
        bug = known_bugs.match(outcome.signature, KNOWN_BUGS.get(type(recipe), ()))
        rec.known = bug.url if bug is not None else None
    if outcome.ok and not keep_passing:
        run.discard_artifacts()
        rec.artifacts = None
    elif rec.evidence:
        compress_cores(art)   # sparse cores as core.tar.gz: light artifacts to upload
    return rec


_FEEDBACK_LOCK = threading.Lock()


def quiet_expected_noise() -> None:
    """QEMU dying mid-flood is the point: don't log every write to its dead socket."""
    import logging
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


def _worker(wid: int, recipe, cfg: HammerConfig, deadline: float | None, max_attempts: int | None,
            out: "mp.Queue", stop: "mp.Event", parent: int) -> None:
    # Dies with the controller; Ctrl-C/SIGTERM: QEMUs and run dirs go, no traceback.
    proctree.become_worker(parent)
    quiet_expected_noise()
    # The per-class evidence budget is shared out over the workers: a core + gdb
    # backtrace costs ~2 s on a loaded machine, and N copies of the same one add nothing.
    # Cores are sampled (EvidenceBudget.cores_wanted): a race recipe crashing on most
    # attempts would otherwise spend more time writing unread cores than racing.
    budget = EvidenceBudget(max(1, -(-cfg.evidence_per_class // cfg.parallel)), sample_every=8)
    # Recipes with a prepare() get attempt i+1 drawn and its QEMUs spawned before attempt i
    # runs: start-up overlaps the plan. (Its draw misses attempt i's coverage feedback.)
    pipelined = hasattr(recipe, "prepare")
    ahead: Ahead | None = None
    slow: list[threading.Thread] = []
    i = 0
    try:
        while not stop.is_set():
            if deadline is not None and time.time() >= deadline:
                break
            if max_attempts is not None and i >= max_attempts:
                break
            seed = attempt_seed(cfg.seed, wid, i)
            art = cfg.artifacts / f"w{wid}-{i:06d}"
            cur = ahead if ahead is not None and ahead.index == i else None
            if cur is None:
                drop_ahead(ahead)
            ahead = None
            more = (max_attempts is None or i + 1 < max_attempts) and (
                deadline is None or time.time() + AHEAD_MIN_LEFT < deadline)
            if pipelined and more:
                ahead = prepare_ahead(recipe, cfg.base, cfg.artifacts / f"w{wid}-{i + 1:06d}",
                                      attempt_seed(cfg.seed, wid, i + 1), cfg.malloc_perturb, budget, i + 1)
            # Each attempt runs on a thread of its own. One still running after SLOW_AFTER_S
            # waits on a hung QEMU (a settle or shutdown timeout, a state dump): it ends in
            # the background while the next attempts run, at most MAX_SLOW such at a time.
            t = threading.Thread(target=_attempt_thread, daemon=True, name=f"attempt-{i}",
                                 args=(recipe, cfg, art, seed, budget, wid, i, cur, out))
            t.start()
            t.join(SLOW_AFTER_S)
            slow = [x for x in slow + [t] if x.is_alive()]
            while len(slow) > MAX_SLOW:
                slow[0].join(0.2)
                slow = [x for x in slow if x.is_alive()]
            i += 1
    finally:
        end = time.monotonic() + EXIT_GRACE
        for t in slow:
            t.join(max(0.0, end - time.monotonic()))
        drop_ahead(ahead)
        if any(t.is_alive() for t in slow):
            # Past the grace the controller stops waiting for us: what the stuck
            # attempt holds (QEMU groups, run dirs) goes now, not with the process.
            proctree.reap_own()
    out.put({"done": wid})


def _attempt_thread(recipe, cfg: HammerConfig, art: Path, seed: int, budget, wid: int, i: int,
                    cur: Ahead | None, out) -> None:
    try:
        rec = run_one(recipe, cfg.base, art, seed, cfg.malloc_perturb, budget, f"w{wid}", i,
                      cfg.keep_passing, ahead=cur)
        out.put(asdict(rec))
    except Exception as exc:  # noqa: BLE001 - a harness error must not kill the hammer
        out.put({"error": f"{type(exc).__name__}: {exc}", "worker": f"w{wid}", "index": i,
                 "seed": seed})


# An attempt still running after this long waits on a hung QEMU (a normal chaos attempt
# takes about a second; a race recipe's a few): the worker goes on without it.
SLOW_AFTER_S = 8.0
MAX_SLOW = 1


# Seconds of budget left below which no attempt is spawned ahead (it would not run).
AHEAD_MIN_LEFT = 1.0


def hammer(recipe, cfg: HammerConfig, progress: Display | None = None) -> Triage:
    """Run until cfg.seconds/cfg.attempts/first crash; return the triage."""
    cfg.artifacts.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    t_start = time.time()
    deadline = t_start + cfg.seconds if cfg.seconds else None
    per_worker = None
    if cfg.attempts is not None:
        per_worker = -(-cfg.attempts // cfg.parallel)
    procs = [ctx.Process(target=_worker, args=(w, recipe, cfg, deadline, per_worker, out, stop,
                                               os.getpid()),
                         daemon=True) for w in range(cfg.parallel)]
    triage, errors = Triage(), []
    finished: set[int] = set()
    # SIGINT/SIGTERM become Interrupted here (unless a caller already did that): the
    # finally below stops the workers, which take their QEMUs and run dirs with them.
    with proctree.interruptible():
        try:
            with proctree.signals_blocked():   # a worker handles them once it is ready
                for p in procs:
                    p.start()
            _collect(procs, out, stop, cfg, triage, errors, finished, t_start, progress)
        finally:
            stop_workers(procs, stop)
    triage.errors = errors
    triage.elapsed = time.time() - t_start
    if progress:
        progress(_status(triage, errors, triage.elapsed, cfg, final=True))
    return triage


def _collect(procs, out, stop, cfg: HammerConfig, triage: Triage, errors: list,
             finished: set[int], t_start: float, progress) -> None:
    next_report = time.monotonic() + 1.0
    lost: set[int] = set()
    while len(finished | lost) < len(procs):
        try:
            msg = out.get(timeout=0.5)
        except queue.Empty:
            msg = None
            for w, p in enumerate(procs):
                if w not in finished and w not in lost and not p.is_alive() and p.exitcode != 0:
                    # Killed from outside (kill -9, OOM): its QEMUs died by PDEATHSIG;
                    # its run dirs carry its PID and are removed here.
                    lost.add(w)
                    proctree.reap_orphans(Path(LocalHost().tmp_root))
                    errors.append({"error": f"worker w{w} died (exit {p.exitcode})",
                                   "worker": f"w{w}", "index": -1, "seed": None})
        if msg is not None:
            if "done" in msg:
                finished.add(msg["done"])
            elif "error" in msg:
                errors.append(msg)
            else:
                rec = AttemptRecord(**msg)
                at = time.time() - t_start
                triage.add(rec, elapsed=at)
                if cfg.seconds is None or at <= cfg.seconds:
                    triage.in_budget += 1
                hit = not rec.ok and rec.kind in HIT_KINDS
                if hit and (cfg.until_crash or (cfg.until_new and rec.known is None)):
                    stop.set()
        if progress and time.monotonic() >= next_report:
            progress(_status(triage, errors, time.time() - t_start, cfg))
            next_report = time.monotonic() + 1.0


def stop_workers(procs, stop) -> None:
    """Normal end: workers finish their attempt (up to EXIT_GRACE). Interrupted: SIGTERM
    at once (each kills its QEMUs, removes its run dirs, exits), SIGKILL after
    STOP_GRACE, and whatever a killed worker left is reaped by its PID."""
    stop.set()
    interrupted = sys.exc_info()[0] is not None
    started = [p for p in procs if p.pid is not None]
    if interrupted:
        for p in started:
            if p.is_alive():
                p.terminate()
    deadline = time.monotonic() + (STOP_GRACE if interrupted else EXIT_GRACE)
    for p in started:
        p.join(max(0.0, deadline - time.monotonic()))
    killed = False
    for p in started:
        if p.is_alive():
            p.kill()
            p.join(5)
            killed = True
    if killed:
        proctree.reap_orphans(Path(LocalHost().tmp_root))


EXIT_GRACE = 60.0
STOP_GRACE = 10.0


def _status(t: Triage, errors: list, elapsed: float, cfg: HammerConfig,
            final: bool = False) -> HammerStatus:
    return HammerStatus(elapsed=elapsed, attempts=t.attempts, crashes=t.count("crash"),
                        hangs=t.count("hang"), errors=len(errors), signatures=len(t.by_sig),
                        target_seconds=cfg.seconds, target_attempts=cfg.attempts, final=final)


def print_progress(status: HammerStatus) -> None:
    """One line per report (the hammer reports every second)."""
    print(status, file=sys.stderr, flush=True)


def cleanup_empty(path: Path) -> None:
    """Drop the artifact root if nothing was kept."""
    try:
        if path.is_dir() and not any(path.iterdir()):
            shutil.rmtree(path)
    except OSError:
        pass


__all__ = ["HammerConfig", "hammer", "run_one", "attempt_seed", "print_progress", "cleanup_empty",
           "os"]
