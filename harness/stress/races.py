"""Race recipes: the ways QEMU has been seen to crash when things overlap.

The shutdown recipe (the seed case): migration queries in flight on one or
more monitors while QEMU shuts down by QMP quit, SIGTERM or SIGINT, idle or
mid-migration. monitor_cleanup() dispatches a query-migrate still in the queue
after migration_shutdown() dropped the migration object, and migrate_mode()
reads freed memory: with MALLOC_PERTURB_ that becomes
"migrate_mode: Assertion 'mode >= 0 && mode < MIG_MODE__MAX' failed".

Why the queries are pumped rather than flooded: an attempt only hits when the
monitor's queue is still non-empty at the instant the main loop exits. A burst
of a few dozen requests sent through the QMP client is dispatched in a few
milliseconds, so the signal usually found the queue drained (0.16-0.19 hits per
attempt, depending on how loaded the machine was). The pump (harness.stress.pump)
preloads thousands of requests into each monitor's socket, waits until QEMU
answers the first (dispatching has begun), and only then shuts QEMU down: the
queue is full right up to and through the signal.
"""
from __future__ import annotations

import enum
import random
import signal
from dataclasses import dataclass, replace

from harness.migration import tuning
from harness.migration.pair import make_pair
from harness.migration.transports import Transport, start_incoming
from harness.qemu.machine import Machine, MachineFailure
from harness.qemu.outcome import Outcome
from harness.qemu.spec import GuestKind, GuestSpec, MachineSpec, SpecError
from harness.run import TestRun
from harness.stress.pump import PumpError, RawMonitor, requests

EXIT_TIMEOUT = 15.0
FIRST_REPLY_TIMEOUT = 10.0


class ShutdownMethod(enum.Enum):
    QUIT = "quit"
    SIGTERM = "sigterm"
    SIGINT = "sigint"


class RaceState(enum.Enum):
    IDLE = "idle"            # no guest, paused: the fastest attempt
    MIGRATING = "migrating"  # a non-converging precopy is active when QEMU goes down


MIGRATION_QUERIES = ("query-migrate", "query-migrate-parameters", "query-migrate-capabilities")


@dataclass(frozen=True)
class ShutdownRace:
    method: ShutdownMethod = ShutdownMethod.SIGTERM
    state: RaceState = RaceState.IDLE
    monitors: int = 1                       # raw monitors pumping queries (the first sends quit)
    flood: int = 2000                       # requests preloaded per monitor
    commands: tuple[str, ...] = ("query-migrate",)
    oob: bool = True                        # negotiate out-of-band (a monitor I/O thread) or not
    randomize: bool = False                 # draw method/state/monitors per attempt

    def __post_init__(self):
        if self.monitors < 1 or self.monitors > 8:
            raise SpecError(f"shutdown race: monitors {self.monitors} must be 1..8")
        if self.flood < 1:
            raise SpecError(f"shutdown race: flood {self.flood} must be >= 1")
        if not self.commands:
            raise SpecError("shutdown race: commands must not be empty")

    @property
    def path(self) -> str:
        return f"/migration/races/shutdown/{self.commands[0]}/{self.state.value}/{self.method.value}"

    def draw(self, rng: random.Random) -> "ShutdownRace":
        """The concrete variant for one attempt (recorded, so replayable)."""
        if not self.randomize:
            return self
        return replace(self, randomize=False,
                       method=rng.choice(list(ShutdownMethod)),
                       state=rng.choice([RaceState.IDLE] * 3 + [RaceState.MIGRATING]),
                       monitors=rng.randint(1, 3), oob=rng.random() < 0.5,
                       commands=("query-migrate",) + tuple(
                           c for c in MIGRATION_QUERIES[1:] if rng.random() < 0.3))

    def to_dict(self) -> dict:
        return {"method": self.method.value, "state": self.state.value, "monitors": self.monitors,
                "flood": self.flood, "commands": list(self.commands), "oob": self.oob}


def _idle_machine(run: TestRun, base: MachineSpec, race: ShutdownRace) -> Machine:
    # No guest code ever runs: a small TCG translation buffer makes the core QEMU
    # writes when it crashes ~40 MB of address space instead of ~1 GB (0.1 s, not 0.3 s).
    props = "tb-size=4" if base.accel == "tcg" else base.accel_props
    spec = base.with_(name="vm", machine_type="none", memory_mib=16,
                      guest=GuestSpec(kind=GuestKind.NONE), paused=True,
                      raw_monitors=race.monitors, extra_args=(), accel_props=props)
    return run.machine(spec)


def _migrating_source(run: TestRun, base: MachineSpec, race: ShutdownRace) -> Machine:
    spec = base.with_(guest=GuestSpec(kind=GuestKind.BOOTBLOCK), raw_monitors=race.monitors)
    pair = make_pair(run, spec, dst_paused=True)
    pair.wait_guest_ready()
    uri = start_incoming(Transport.TCP, pair.dst)
    tuning.ensure_non_converge(pair.src)
    pair.src.cmd("migrate", {"uri": uri})
    # The destination may see its source vanish: exiting non-zero then is expected.
    pair.dst.expect_exit((0, 1))
    return pair.src


def shutdown_attempt(run: TestRun, base: MachineSpec, race: ShutdownRace) -> Outcome:
    """One attempt: pump queries, shut down mid-stream, classify the exit.
    Never raises on a QEMU failure."""
    try:
        m = (_idle_machine if race.state is RaceState.IDLE else _migrating_source)(run, base, race)
        outcome = _pump_and_shut_down(m, race)
    except MachineFailure as exc:  # crashed or hung while setting up
        outcome = exc.outcome
    run.abort()
    worst = [o for o in run.outcomes.values() if not o.ok]
    return worst[0] if worst else outcome


def _pump_and_shut_down(m: Machine, race: ShutdownRace) -> Outcome:
    mons = [RawMonitor(s, f"{m.name}-raw{i}") for i, s in enumerate(m.raw_monitors)]
    quit_first = race.method is ShutdownMethod.QUIT
    try:
        for mon in mons:
            mon.negotiate(race.oob)
        for i, mon in enumerate(mons):
            mon.preload(requests(race.commands, race.flood,
                                 insert="quit" if quit_first and i == 0 else None))
        if not quit_first:
            # Dispatching has begun once the first reply is back: the queue is full now.
            mons[0].wait_reply(FIRST_REPLY_TIMEOUT)
            m.kill(signal.SIGTERM if race.method is ShutdownMethod.SIGTERM else signal.SIGINT)
    except (PumpError, OSError, ValueError):
        pass   # QEMU went away mid-setup: its exit below says why
    outcome = m.wait_exit(EXIT_TIMEOUT)
    if outcome is None:
        outcome = m.declare_hang(f"{m.name}: did not exit within {EXIT_TIMEOUT:.0f}s of "
                                 f"{race.method.value} with {race.commands[0]} in flight")
    return outcome
