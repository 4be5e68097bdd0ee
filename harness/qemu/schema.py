"""A binary's migration API surface from its own `query-qmp-schema` (cached per binary)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from harness import cache
from harness.qemu.spec import GuestKind, GuestSpec, MachineSpec
from harness.runtime.surface import Surface, from_schema


def probe_surface(binary: str) -> Surface:
    key = cache.file_key(binary)
    with cache.locked("surface", key):
        hit = cache.load("surface", key)
        if hit is None:
            hit = _probe(binary).to_dict()
            cache.store("surface", key, hit)
    return Surface.from_dict(hit)


def _probe(binary: str) -> Surface:
    from harness.hosts.local import LocalHost
    from harness.qemu.cmdline import GuestFiles
    from harness.qemu.machine import Machine

    spec = MachineSpec(binary=binary, name="schema", accel="tcg", machine_type="none",
                       memory_mib=16, guest=GuestSpec(kind=GuestKind.NONE), paused=True)
    with tempfile.TemporaryDirectory(prefix="qmh-schema-") as tmp:
        m = Machine(LocalHost(), spec, Path(tmp) / "schema", GuestFiles())
        try:
            m.launch()
            return from_schema(m.cmd("query-qmp-schema"))
        finally:
            m.shutdown()
