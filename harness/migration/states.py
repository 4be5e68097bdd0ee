"""Waiting on migration status: MIGRATION events first, query-migrate as a backstop."""
from __future__ import annotations

import time
from dataclasses import dataclass

from harness.qemu.machine import Machine, MachineFailure

TERMINAL = frozenset({"completed", "failed", "cancelled"})
FAILED = frozenset({"failed", "cancelled"})


class MigrationStateError(AssertionError):
    """The migration reached an 'ungoal' state (e.g. failed when completed was wanted)."""


@dataclass(frozen=True)
class StatusSeen:
    status: str
    via: str  # "event" or "query-migrate"


def wait_status(m: Machine, goals: frozenset[str] | set[str], *, timeout: float,
                ungoals: frozenset[str] | set[str] = FAILED, since: int = 0,
                poll_every: float = 0.5) -> StatusSeen:
    """Wait until m's migration status is in goals.

    Raises MigrationStateError on an ungoal (with QEMU's error-desc) and a
    MachineFailure (hang, after a state dump) at the deadline or on a crash.
    """
    goals, ungoals = frozenset(goals), frozenset(ungoals)
    deadline = time.monotonic() + timeout
    next_poll = 0.0
    while True:
        ev = m.qmp.events.wait_for(
            lambda e: e.name == "MIGRATION" and e.data.get("status") in goals | ungoals,
            deadline=min(deadline, time.monotonic() + poll_every), start=since,
            alive=m.is_running)
        if ev is not None:
            return _check(m, ev.data["status"], "event", goals)
        if not m.is_running():
            raise MachineFailure(m.wait_exit(5.0) or m.declare_hang(f"{m.name}: exit not reaped"))
        now = time.monotonic()
        if now >= next_poll:
            status = m.cmd("query-migrate").get("status", "none")
            if status in goals | ungoals:
                return _check(m, status, "query-migrate", goals)
            next_poll = now + poll_every
        if now >= deadline:
            raise MachineFailure(m.declare_hang(
                f"{m.name}: migration status not in {sorted(goals)} within {timeout:.0f}s"))


def _check(m: Machine, status: str, via: str, goals: frozenset[str]) -> StatusSeen:
    if status in goals:
        return StatusSeen(status, via)
    info = m.try_cmd("query-migrate")
    desc = info.get("error-desc", "") if isinstance(info, dict) else ""
    raise MigrationStateError(f"{m.name}: migration {status}" + (f": {desc}" if desc else ""))


def wait_runstate(m: Machine, wanted: set[str], timeout: float) -> str:
    """Poll query-status until the run state is one of wanted (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        st = m.status()
        if st in wanted:
            return st
        if time.monotonic() >= deadline:
            raise MachineFailure(m.declare_hang(
                f"{m.name}: run state '{st}' never became {sorted(wanted)} within {timeout:.0f}s"))
        time.sleep(0.05)
