"""Two more race recipes, judged by the chaos oracles.

- CancelRace: migrate_cancel at a random (seeded) moment of a precopy, multifd or
  postcopy migration; the source must keep its guest, the destination must not
  run it too (split brain), a completed migration must have landed intact.
- DestinationConfigRace (the seed thread's second problem): the destination
  started with `-incoming tcp:...` (not defer) gets migrate-set-capabilities /
  -parameters at a random moment before or while the source connects. What QEMU
  does with each change is recorded as an observation; crashes, hangs, lost or
  split VMs are violations.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace

from harness.migration import tuning
from harness.migration.pair import make_pair
from harness.qemu.machine import MachineFailure
from harness.qemu.qmp import QMPCommandError, QMPTimeout
from harness.qemu.spec import GuestKind, GuestSpec, MachineSpec, SpecError
from harness.run import TestRun
from harness.stress.oracles import (SETTLE_TIMEOUT, PairState, Verdict, VerdictKind, final_verdict,
                                    judge, settle)

CANCEL_FLOWS = ("precopy", "multifd", "postcopy")


def _judged(run: TestRun, body) -> Verdict:
    """Run body(notes) -> oracle verdict; a hang while driving it is a verdict too;
    then every machine is ended and a crash outranks all."""
    notes: list = []
    verdict = None
    try:
        verdict = body(notes)
    except MachineFailure as exc:
        if exc.outcome.kind.name == "HANG":
            verdict = Verdict(VerdictKind.HANG, exc.outcome.signature, exc.outcome.detail)
    finally:
        run.abort()
    v = final_verdict(run, verdict)
    v.notes = notes
    return v


def _settle_and_judge(pair, port: int, notes: list) -> Verdict | None:
    st = PairState(pair)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    settled = settle(st, deadline)
    desc = pair.src.qmp.try_cmd("query-migrate").get("error-desc", "") if settled else ""
    notes.append(f"migration {settled}" + (f": {desc}" if desc else ""))
    return judge(st, settled)


@dataclass(frozen=True)
class CancelRace:
    flow: str = "precopy"
    delay_ms: int = 0
    max_delay_ms: int = 700
    randomize: bool = True

    def __post_init__(self):
        if self.flow not in CANCEL_FLOWS:
            raise SpecError(f"cancel race: flow '{self.flow}' not in {', '.join(CANCEL_FLOWS)}")

    @property
    def path(self) -> str:
        return f"/migration/races/cancel/{self.flow}"

    def draw(self, rng: random.Random) -> "CancelRace":
        flow = rng.choice(CANCEL_FLOWS) if self.randomize else self.flow
        # Biased to early moments: setup and the first passes are over in ~0.5 s.
        delay = int(self.max_delay_ms * rng.random() ** 2)
        return replace(self, flow=flow, delay_ms=delay, randomize=False)

    def to_dict(self) -> dict:
        return {"flow": self.flow, "delay_ms": self.delay_ms}


def _guest_spec(base: MachineSpec) -> MachineSpec:
    return base.with_(guest=GuestSpec(kind=GuestKind.BOOTBLOCK))


def cancel_attempt(run: TestRun, base: MachineSpec, race: CancelRace) -> Verdict:
    return _judged(run, lambda notes: _cancel(run, base, race, notes))


def _cancel(run: TestRun, base: MachineSpec, race: CancelRace, notes: list) -> Verdict | None:
    pair = make_pair(run, _guest_spec(base), dst_paused=False)
    pair.dst.expect_exit((0, 1))
    pair.wait_guest_ready()
    caps = {"events": True}
    if race.flow == "multifd":
        caps["multifd"] = True
    if race.flow == "postcopy":
        caps["postcopy-ram"] = True
    for m in (pair.src, pair.dst):
        tuning.set_capabilities(m, caps)
    pair.dst.cmd("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
    port = pair.dst.cmd("query-migrate")["socket-address"][0]["port"]
    if race.flow == "postcopy":
        tuning.ensure_non_converge(pair.src)  # postcopy must be started explicitly
    else:
        tuning.ensure_converge(pair.src)      # so cancel can land in any phase
    pair.src.cmd("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
    t0 = time.monotonic()
    if race.flow == "postcopy":
        time.sleep(race.delay_ms / 2000)
        pair.src.qmp.try_cmd("migrate-start-postcopy")
    time.sleep(max(0.0, t0 + race.delay_ms / 1000 - time.monotonic()))
    status = pair.src.qmp.try_cmd("query-migrate").get("status", "?")
    try:
        pair.src.cmd("migrate_cancel", timeout=10)
        notes.append(f"cancel in {status}: accepted")
    except QMPCommandError as exc:
        notes.append(f"cancel in {status}: {exc.error_class}: {exc.desc}")
    return _settle_and_judge(pair, int(port), notes)


# The destination's knobs the seed thread changed; each with a value to set.
DEST_CHANGES = (
    ("cap", "multifd", True), ("cap", "xbzrle", True), ("cap", "postcopy-ram", True),
    ("cap", "return-path", True), ("cap", "validate-uuid", True), ("cap", "events", False),
    ("param", "multifd-channels", 4), ("param", "multifd-compression", "zstd"),
    ("param", "max-bandwidth", 1), ("param", "xbzrle-cache-size", 1 << 20),
)


@dataclass(frozen=True)
class DestinationConfigRace:
    change: tuple = ()
    offset_ms: int = 0          # relative to the source's migrate command (negative: before)
    window_ms: tuple = (-300, 400)
    path: str = "/migration/races/destination-config"

    def draw(self, rng: random.Random) -> "DestinationConfigRace":
        return replace(self, change=rng.choice(DEST_CHANGES), offset_ms=rng.randint(*self.window_ms))

    def to_dict(self) -> dict:
        return {"change": list(self.change), "offset_ms": self.offset_ms}


def _apply_change(m, change) -> str:
    kind, name, value = change
    try:
        if kind == "cap":
            m.cmd("migrate-set-capabilities",
                  {"capabilities": [{"capability": name, "state": value}]}, timeout=10)
        else:
            m.cmd("migrate-set-parameters", {name: value}, timeout=10)
        return "accepted"
    except QMPCommandError as exc:
        return f"refused: {exc.desc}"
    except QMPTimeout:
        return "no reply"


def dest_config_attempt(run: TestRun, base: MachineSpec, race: DestinationConfigRace) -> Verdict:
    return _judged(run, lambda notes: _dest_config(run, base, race, notes))


def _dest_config(run: TestRun, base: MachineSpec, race: DestinationConfigRace,
                 notes: list) -> Verdict | None:
    what = f"dst {race.change[0]} {race.change[1]}={race.change[2]}"
    phase = "before connect" if race.offset_ms < 0 else "while connecting"
    # -incoming tcp:... (not defer): QEMU listens from the start, as in the report.
    pair = make_pair(run, _guest_spec(base), dst_paused=False, dst_incoming="tcp:127.0.0.1:0")
    pair.dst.expect_exit((0, 1))
    pair.wait_guest_ready()
    port = pair.dst.cmd("query-migrate")["socket-address"][0]["port"]
    tuning.ensure_converge(pair.src)
    if race.offset_ms < 0:
        notes.append(f"{what} {phase}: {_apply_change(pair.dst, race.change)}")
        time.sleep(-race.offset_ms / 1000)
    pair.src.cmd("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
    if race.offset_ms >= 0:
        time.sleep(race.offset_ms / 1000)
        st = pair.dst.qmp.try_cmd("query-migrate").get("status", "?")
        notes.append(f"{what} with destination '{st}': {_apply_change(pair.dst, race.change)}")
    return _settle_and_judge(pair, int(port), notes)
