"""What a QEMU binary can do for migration, probed once over QMP and cached.

Capabilities and parameters come from query-migrate-capabilities/-parameters;
compression methods from trying each on multifd-compression (a method not built
in is refused); object types from qom-list-types.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import cache
from harness.qemu.qmp import QMPCommandError
from harness.qemu.spec import GuestKind, GuestSpec, MachineSpec

COMPRESSION_METHODS = ("none", "zlib", "zstd", "qpl", "uadk", "qatzip")


@dataclass(frozen=True)
class MigrationFeatures:
    capabilities: frozenset[str]
    parameters: frozenset[str]
    compression: frozenset[str]
    object_types: frozenset[str]
    commands: frozenset[str]


def probe(binary: str, host=None) -> MigrationFeatures:
    """Probed by launching the binary (on `host` if given), cached per binary identity."""
    from harness.qemu import binary as binary_mod
    if host is not None and not host.is_local:
        key = binary_mod._remote_identity(binary, host)[1]
    else:
        key, host = cache.file_key(binary), None
    with cache.locked("features", key):
        hit = cache.load("features", key)
        if hit is None:
            hit = _probe_uncached(binary, host)
            cache.store("features", key, hit)
    return MigrationFeatures(**{k: frozenset(v) for k, v in hit.items()})


def _probe_uncached(binary: str, host=None) -> dict:
    from harness.hosts.local import LocalHost
    from harness.qemu.cmdline import GuestFiles
    from harness.qemu.machine import Machine

    spec = MachineSpec(binary=binary, name="features", accel="tcg", machine_type="none",
                       memory_mib=16, guest=GuestSpec(kind=GuestKind.NONE), paused=True)
    with tempfile.TemporaryDirectory(prefix="qmh-features-") as tmp:
        m = Machine(host or LocalHost(), spec, Path(tmp) / "features", GuestFiles())
        try:
            m.launch()
            caps = [c["capability"] for c in m.cmd("query-migrate-capabilities")]
            params = list(m.cmd("query-migrate-parameters").keys())
            comp = []
            for method in COMPRESSION_METHODS:
                try:
                    m.cmd("migrate-set-parameters", {"multifd-compression": method})
                    comp.append(method)
                except QMPCommandError:
                    pass
            types = [t["name"] for t in m.cmd("qom-list-types", {"abstract": False})]
            cmds = [c["name"] for c in m.cmd("query-commands")]
        finally:
            m.shutdown()
    return {"capabilities": caps, "parameters": params, "compression": comp,
            "object_types": types, "commands": cmds}


def transports(binary: str, host=None) -> frozenset[str]:
    """Migration transports the binary has built in, probed once and cached
    (its own cache kind: the features entries keep their format)."""
    from harness.qemu import binary as binary_mod
    if host is not None and not host.is_local:
        key = binary_mod._remote_identity(binary, host)[1]
    else:
        key, host = cache.file_key(binary), None
    with cache.locked("transports", key):
        hit = cache.load("transports", key)
        if hit is None:
            hit = {"transports": _probe_transports(binary, host)}
            cache.store("transports", key, hit)
    return frozenset(hit["transports"])


def _probe_transports(binary: str, host=None) -> list[str]:
    """Whether RDMA is built in: a QEMU without CONFIG_RDMA answers migrate-incoming
    rdma:... with "unknown migration protocol" (the QAPI enum lists rdma either
    way); with it, the attempt fails later (no device) or listens (then ends)."""
    from harness.hosts.local import LocalHost
    from harness.qemu.cmdline import GuestFiles
    from harness.qemu.machine import Machine

    spec = MachineSpec(binary=binary, name="transports", accel="tcg", machine_type="none",
                       memory_mib=16, guest=GuestSpec(kind=GuestKind.NONE), paused=True,
                       incoming="defer")
    out = ["tcp", "unix", "exec", "file"]
    with tempfile.TemporaryDirectory(prefix="qmh-transports-") as tmp:
        m = Machine(host or LocalHost(), spec, Path(tmp) / "transports", GuestFiles())
        try:
            m.launch()
            try:
                m.cmd("migrate-incoming", {"uri": "rdma:127.0.0.1:0"}, timeout=30)
                out.append("rdma")
            except QMPCommandError as exc:
                if not re.search(r"unknown migration protocol|valid migration protocol", exc.desc):
                    out.append("rdma")
        finally:
            m.shutdown()
    return out
