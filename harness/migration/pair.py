"""A source/destination pair built from one spec (binaries may differ)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from harness.qemu.machine import Machine, MachineFailure
from harness.qemu.spec import GuestKind, MachineSpec
from harness.run import TestRun

GUEST_READY_TIMEOUT = {GuestKind.BOOTBLOCK: 30.0, GuestKind.LINUX: 120.0, GuestKind.NONE: 0.0}


@dataclass
class Pair:
    src: Machine
    dst: Machine

    def wait_guest_ready(self) -> None:
        """The source guest is really running its workload (so memory is dirty)."""
        wait_guest_ready(self.src)


def wait_guest_ready(m: Machine) -> None:
    kind = m.spec.guest.kind
    if kind is GuestKind.NONE:
        return
    timeout = GUEST_READY_TIMEOUT[kind]
    deadline = time.monotonic() + timeout
    # bootblock: 'A' then a 'B' per completed pass; linux: the workload says so.
    pattern = rb"AB" if kind is GuestKind.BOOTBLOCK else rb"WORKLOAD READY"
    if m.serial.wait_for(pattern, deadline) is None:
        raise MachineFailure(m.declare_hang(
            f"{m.name}: guest not ready ({pattern.decode()!r} on serial) within {timeout:.0f}s"))


def make_pair(run: TestRun, base: MachineSpec, *, dst_binary: str | None = None,
              dst_paused: bool = True, src_extra: tuple[str, ...] = (),
              dst_extra: tuple[str, ...] = (), dst_incoming: str = "defer") -> Pair:
    """Launch source (running) and destination (-incoming defer by default).

    dst_paused: start the destination with -S so it never runs before the RAM
    compare; the proof then continues it explicitly.
    dst_incoming: e.g. "tcp:127.0.0.1:0" for a destination listening from the start.
    """
    return start_pair(run, base, dst_binary=dst_binary, dst_paused=dst_paused, src_extra=src_extra,
                      dst_extra=dst_extra, dst_incoming=dst_incoming).connect()


def start_pair(run: TestRun, base: MachineSpec, *, dst_binary: str | None = None,
               dst_paused: bool = True, src_extra: tuple[str, ...] = (),
               dst_extra: tuple[str, ...] = (), dst_incoming: str = "defer",
               src_paused: bool = False) -> "StartedPair":
    """Spawn both QEMUs without waiting for either (their initialisations overlap);
    StartedPair.connect() gives the Pair. src_paused: -S (a pair started ahead of
    its use, whose guest must not run yet: continue it with Pair.src.cmd('cont'))."""
    src_spec = base.with_(name="source", extra_args=base.extra_args + src_extra,
                          paused=base.paused or src_paused)
    dst_spec = base.with_(name="destination", binary=dst_binary or base.binary,
                          incoming=dst_incoming, paused=dst_paused,
                          extra_args=base.extra_args + dst_extra)
    src = run.machine(src_spec, launch=False).start()
    dst = run.machine(dst_spec, launch=False).start()
    return StartedPair(src, dst)


@dataclass
class StartedPair:
    src: Machine
    dst: Machine

    def connect(self) -> Pair:
        return Pair(self.src.connect(), self.dst.connect())
