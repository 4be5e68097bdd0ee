"""Fleet: the inventory as one worker uses it (connections, slots, preflight facts).

One persistent SSH connection per host per worker process; slots shared by all
workers through harness.hosts.placement; facts gathered once per host per run.
"""
from __future__ import annotations

from pathlib import Path

from harness.hosts import inventory as inventory_mod
from harness.hosts.placement import Placement, SlotBroker, parse_place
from harness.hosts.preflight import HostFacts, facts
from harness.hosts.ssh import SSHHost


class Fleet:
    def __init__(self, inventory: inventory_mod.Inventory, *, place: str = "auto",
                 tags: tuple[str, ...] = (), facts_dir: Path | None = None):
        self.inventory = inventory
        self.forced = parse_place(place, inventory)
        self.broker = SlotBroker(inventory, tags)
        self.facts_dir = facts_dir
        self._pool: dict[str, SSHHost] = {}

    @classmethod
    def load(cls, path: str, **kw) -> "Fleet":
        return cls(inventory_mod.load(path), **kw)

    def connect(self, entry) -> SSHHost:
        host = self._pool.get(entry.name)
        if host is None:
            host = self._pool[entry.name] = SSHHost(entry)
        host.transport   # connect now: a refused key fails here, before any QEMU
        return host

    def place(self, *, one_host: bool, seed: str) -> Placement:
        return self.broker.acquire(self.connect, one_host=one_host, seed=seed, forced=self.forced)

    def facts(self, host: SSHHost) -> HostFacts:
        assert self.facts_dir is not None
        return facts(host, self.facts_dir)

    def close(self) -> None:
        for h in self._pool.values():
            h.close()
        self._pool.clear()
