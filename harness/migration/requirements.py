"""Preconditions a scenario declares; each unmet one is a precise skip reason.

Binary facts come from harness.qemu.capabilities (probed, cached); host facts
are read from this host. check() returns None when met, else the reason.
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from harness.qemu import capabilities


@dataclass(frozen=True)
class Env:
    """What requirements are checked against."""

    src_binary: str
    dst_binary: str
    accel: str
    src_version: tuple[int, int, int]
    dst_version: tuple[int, int, int]
    # Remote runs: the hosts (binary probes run there) and their preflight facts
    # (harness.hosts.preflight.HostFacts); None means this machine.
    src_host: object = None
    dst_host: object = None
    facts: tuple = ()

    def binaries(self) -> list[tuple[str, object]]:
        """(binary, host) of both sides, once each."""
        pairs = [(self.src_binary, self.src_host), (self.dst_binary, self.dst_host)]
        return pairs[:1] if pairs[0] == pairs[1] else pairs


@dataclass(frozen=True)
class Capability:
    name: str

    def check(self, env: Env) -> str | None:
        for b, h in env.binaries():
            if self.name not in capabilities.probe(b, h).capabilities:
                return f"{b} has no migration capability '{self.name}'"
        return None


@dataclass(frozen=True)
class Parameter:
    name: str

    def check(self, env: Env) -> str | None:
        for b, h in env.binaries():
            if self.name not in capabilities.probe(b, h).parameters:
                return f"{b} has no migration parameter '{self.name}'"
        return None


@dataclass(frozen=True)
class Compression:
    method: str

    def check(self, env: Env) -> str | None:
        for b, h in env.binaries():
            if self.method not in capabilities.probe(b, h).compression:
                return f"multifd compression '{self.method}' is not built into {b}"
        return None


@dataclass(frozen=True)
class ObjectType:
    name: str

    def check(self, env: Env) -> str | None:
        for b, h in env.binaries():
            if self.name not in capabilities.probe(b, h).object_types:
                return f"{b} has no object type '{self.name}'"
        return None


@dataclass(frozen=True)
class Command:
    name: str

    def check(self, env: Env) -> str | None:
        for b, h in env.binaries():
            if self.name not in capabilities.probe(b, h).commands:
                return f"{b} has no QMP command '{self.name}'"
        return None


@dataclass(frozen=True)
class Accel:
    name: str

    def check(self, env: Env) -> str | None:
        if env.accel != self.name:
            return f"needs -accel {self.name}; this run uses {env.accel}"
        return None


@dataclass(frozen=True)
class Userfaultfd:
    """Postcopy needs userfaultfd (syscall, or /dev/userfaultfd)."""

    def check(self, env: Env) -> str | None:
        if env.facts:
            return next((f"{f.host}: {f.userfaultfd}" for f in env.facts if f.userfaultfd), None)
        if os.geteuid() == 0 or Path("/dev/userfaultfd").exists():
            return None
        try:
            if Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() == "1":
                return None
        except OSError:
            return "userfaultfd: /proc/sys/vm/unprivileged_userfaultfd missing (kernel without it)"
        return "userfaultfd: not root, no /dev/userfaultfd and vm.unprivileged_userfaultfd=0"


@dataclass(frozen=True)
class RdmaDevice:
    def check(self, env: Env) -> str | None:
        if env.facts:
            return next((f"no RDMA device on host '{f.host}' (/sys/class/infiniband empty)"
                         for f in env.facts if not f.rdma_devices), None)
        d = Path("/sys/class/infiniband")
        if not d.is_dir() or not any(d.iterdir()):
            return "no RDMA device: /sys/class/infiniband is missing or empty"
        return None


@dataclass(frozen=True)
class RdmaBuiltIn:
    """The binary was built with RDMA (CONFIG_RDMA): without it every rdma: URI is
    refused as an unknown protocol, which shows nothing about RDMA."""

    def check(self, env: Env) -> str | None:
        for b, h in env.binaries():
            if "rdma" not in capabilities.transports(b, h):
                return f"{b} was built without RDMA (migrate-incoming rdma:... is an unknown protocol)"
        return None


@dataclass(frozen=True)
class Memlock:
    """RDMA pin-all (and similar) need RLIMIT_MEMLOCK of at least min_bytes."""

    min_bytes: int

    def check(self, env: Env) -> str | None:
        for f in env.facts:
            if f.memlock_bytes is not None and f.memlock_bytes < self.min_bytes:
                return f"host '{f.host}': ulimit -l is {f.memlock_bytes} bytes, needs {self.min_bytes}"
        if env.facts:
            return None
        soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft != resource.RLIM_INFINITY and soft < self.min_bytes:
            return f"RLIMIT_MEMLOCK is {soft} bytes, needs {self.min_bytes}"
        return None


@dataclass(frozen=True)
class MinVersion:
    version: tuple[int, int, int]

    def check(self, env: Env) -> str | None:
        for v in {env.src_version, env.dst_version}:
            if tuple(v) < self.version:
                return f"needs QEMU >= {'.'.join(map(str, self.version))}, have {'.'.join(map(str, v))}"
        return None


@dataclass(frozen=True)
class BelowVersion:
    """For behaviour that changed upstream: e.g. a refusal lifted in `version`."""

    version: tuple[int, int, int]
    why: str = ""

    def check(self, env: Env) -> str | None:
        for v in {env.src_version, env.dst_version}:
            if tuple(v) >= self.version:
                return (f"applies to QEMU < {'.'.join(map(str, self.version))}, have "
                        f"{'.'.join(map(str, v))}" + (f" ({self.why})" if self.why else ""))
        return None


@dataclass(frozen=True)
class NoRdmaDevice:
    """The 'no RDMA here' error path can only be shown where there is no RDMA device."""

    def check(self, env: Env) -> str | None:
        if RdmaDevice().check(env) is None:
            return "this host has an RDMA device; the no-device error path cannot be shown"
        return None


@dataclass(frozen=True)
class MigrationLink:
    """Real link faults act on the hosts' migration interfaces (the source's is shaped,
    the destination's cut), which only inventory hosts declare: a local run would
    cut this machine's own network."""

    def check(self, env: Env) -> str | None:
        entry = getattr(env.dst_host, "entry", None)
        if entry is None:
            return "needs --inventory: remote hosts whose migration links the harness may cut or shape"
        for e in (getattr(env.src_host, "entry", None), entry):
            if e is not None and not e.migration_interface:
                return f"inventory host '{e.name}' declares no migration_interface"
        if env.src_host is env.dst_host:
            return "source and destination on one host: cutting its link cuts nothing between them"
        return None


@dataclass(frozen=True)
class DirectIO:
    """direct-io (O_DIRECT) on the filesystem that holds the run dirs (where file
    migrations write). tmpfs before Linux 6.6 and some overlay setups refuse it."""

    def check(self, env: Env) -> str | None:
        import tempfile
        root = os.environ.get("HARNESS_RUN_ROOT") or tempfile.gettempdir()
        if not hasattr(os, "O_DIRECT"):
            return "O_DIRECT does not exist on this platform"
        try:
            fd, path = tempfile.mkstemp(prefix="qmh-odirect-", dir=root)
            os.close(fd)
        except OSError as exc:
            return f"cannot create a probe file in {root}: {exc.strerror}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_DIRECT)
            os.close(fd)
        except OSError as exc:
            return f"the filesystem of {root} refuses O_DIRECT: {exc.strerror}"
        finally:
            os.unlink(path)
        return None


def _has_cap_ipc_lock() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 14))  # CAP_IPC_LOCK
    except (OSError, ValueError, IndexError):
        pass
    return False


@dataclass(frozen=True)
class LockedMemory:
    """MSG_ZEROCOPY (zero-copy-send) pins the pages it sends: the kernel charges them
    to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK (root has)."""

    min_bytes: int

    def check(self, env: Env) -> str | None:
        if _has_cap_ipc_lock():
            return None
        soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft != resource.RLIM_INFINITY and soft < self.min_bytes:
            return (f"RLIMIT_MEMLOCK is {soft} bytes and no CAP_IPC_LOCK; zero-copy needs "
                    f"{self.min_bytes} (raise ulimit -l or run as root)")
        return None


def unmet(requires, env: Env) -> str | None:
    """The first unmet requirement's reason, or None."""
    for r in requires:
        reason = r.check(env)
        if reason:
            return reason
    return None
