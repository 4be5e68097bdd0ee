"""Placement: which host runs the source and which the destination, within slots.

The controller stays local (pytest -n N); each xdist worker places its test's
machines on inventory hosts. Slots are flock()ed files shared by all workers of
all sessions on this controller, so N workers never oversubscribe a host, and a
killed worker's slots free themselves (the kernel drops its locks).

Why not remote xdist workers (`--tx ssh=`)? They need this code deployed on
every host, run the test logic next to the QEMU it judges (a crashing host takes
its verdict with it), and stall silently when a link is cut, which is exactly
what the network-fault scenarios do. A local controller keeps every verdict and
artifact on the machine that survives.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import cache
from harness.hosts.base import Host, HostError
from harness.hosts.inventory import HostEntry, Inventory

SLOT_WAIT = 1800.0   # a test waits at most this long for free slots


def role_of(machine_name: str) -> str:
    """'dst' for destination machines (destination, destination-2, hop1-dst...), else 'src'."""
    n = machine_name.lower()
    return "dst" if n.startswith(("dest", "dst")) or n.endswith(("-dst", "-destination")) else "src"


@dataclass
class Placement:
    """The hosts of one test run (src and dst may be the same host)."""

    src: Host
    dst: Host
    _locks: list = field(default_factory=list, repr=False)

    def host_for(self, machine_name: str) -> Host:
        return self.dst if role_of(machine_name) == "dst" else self.src

    def describe(self) -> str:
        return f"{self.src.name} -> {self.dst.name}"

    def release(self) -> None:
        for fd in self._locks:
            os.close(fd)   # closing drops the flock
        self._locks = []


def parse_place(value: str, inventory: Inventory) -> tuple[str, str] | None:
    """--place auto | SRC:DST (host names from the inventory)."""
    if value == "auto":
        return None
    src, sep, dst = value.partition(":")
    if not sep or not src or not dst:
        raise HostError(f"--place must be 'auto' or SRC:DST (host names), not '{value}'")
    for name in (src, dst):
        inventory.host(name)   # one-line InventoryError naming the hosts there are
    return src, dst


class SlotBroker:
    """Hands out (src, dst) host pairs with a free slot on each."""

    def __init__(self, inventory: Inventory, tags: tuple[str, ...] = (),
                 lock_dir: Path | None = None):
        self.inventory = inventory
        self.hosts = inventory.select(tags)
        ident = hashlib.sha256(str(Path(inventory.path).resolve()).encode()).hexdigest()[:12]
        self.lock_dir = lock_dir or cache.cache_dir() / "slots" / ident
        self.lock_dir.mkdir(parents=True, exist_ok=True)

    def candidates(self, one_host: bool, seed: str, forced: tuple[str, str] | None):
        if forced is not None:
            src, dst = (self.inventory.host(n) for n in forced)
            return [(src, src)] if one_host else [(src, dst)]
        hosts = list(self.hosts)
        if one_host or len(hosts) == 1:
            pairs = [(h, h) for h in hosts]
        else:
            pairs = [(a, b) for a in hosts for b in hosts if a is not b]
        random.Random(seed).shuffle(pairs)   # seeded: a replay places the same way
        return pairs

    def acquire(self, connect, *, one_host: bool, seed: str,
                forced: tuple[str, str] | None = None, timeout: float = SLOT_WAIT) -> Placement:
        """Wait for slots on a candidate pair; connect(entry) -> Host."""
        pairs = self.candidates(one_host, seed, forced)
        deadline = time.monotonic() + timeout
        while True:
            for src, dst in pairs:
                locks = self._try_lock([src, dst])
                if locks is not None:
                    try:
                        return Placement(connect(src), connect(dst), locks)
                    except BaseException:
                        for fd in locks:
                            os.close(fd)
                        raise
            if time.monotonic() > deadline:
                names = ", ".join(f"{a.name}->{b.name}" for a, b in pairs)
                raise HostError(f"no free slots on {names} within {timeout:.0f}s")
            time.sleep(0.1)

    def _try_lock(self, entries: list[HostEntry]) -> list[int] | None:
        taken: list[int] = []
        for e in entries:   # src and dst on one host take two of its slots
            fd = self._lock_one(e, taken)
            if fd is None:
                for t in taken:
                    os.close(t)
                return None
            taken.append(fd)
        return taken

    def _lock_one(self, e: HostEntry, taken: list[int]) -> int | None:
        for i in range(e.slots):
            fd = os.open(self.lock_dir / f"{e.name}.{i}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                os.close(fd)
        return None
