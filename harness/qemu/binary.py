"""Facts about a QEMU binary: version and machine types (probed once, cached)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from harness import cache


class BinaryError(Exception):
    """The QEMU binary is missing or unusable; one-line message."""


@dataclass(frozen=True)
class QemuBinary:
    path: str
    version: str            # "10.0.2"
    version_tuple: tuple[int, int, int]
    package: str            # "Debian 1:10.0.2+ds-..." or ""
    machines: tuple[str, ...]
    default_machine: str

    def newest_versioned(self, prefix: str = "pc-q35-") -> str | None:
        versioned = [m for m in self.machines if m.startswith(prefix) and re.fullmatch(r"[\d.]+", m[len(prefix):])]
        if not versioned:
            return None
        return max(versioned, key=lambda m: tuple(int(x) for x in m[len(prefix):].split(".")))


def resolve_path(binary: str) -> str:
    """Accept a path or a name on PATH; error in one line if neither."""
    if os.sep in binary:
        if not os.path.isfile(binary):
            raise BinaryError(f"QEMU binary '{binary}' does not exist")
        if not os.access(binary, os.X_OK):
            raise BinaryError(f"QEMU binary '{binary}' is not executable")
        return os.path.abspath(binary)
    found = shutil.which(binary)
    if not found:
        raise BinaryError(f"QEMU binary '{binary}' not found on PATH (install qemu-system-x86 or pass --qemu)")
    return found


def probe(binary: str, host=None) -> QemuBinary:
    """Version and machine types of `binary` (on `host` when it is a remote Host)."""
    if host is not None and not host.is_local:
        path, key = _remote_identity(binary, host)
        run = host.run
    else:
        path, run = resolve_path(binary), None
        key = cache.file_key(path)
    cached = cache.load("binary", key)
    if cached is None:
        cached = _probe_uncached(path, run)
        cache.store("binary", key, cached)
    return QemuBinary(path=path, version=cached["version"],
                      version_tuple=tuple(cached["version_tuple"]), package=cached["package"],
                      machines=tuple(cached["machines"]), default_machine=cached["default_machine"])


def _remote_identity(binary: str, host) -> tuple[str, str]:
    """The binary's path on the host and a cache key (host, path, size, mtime)."""
    import hashlib
    rc, out, err = host.run(["sh", "-c", 'p=$(command -v "$1") && stat -L -c "%n %s %Y" -- "$p"',
                             "sh", binary], 30)
    if rc != 0 or not out.strip():
        raise BinaryError(f"QEMU binary '{binary}' not found on host '{host.name}'")
    path, size, mtime = out.strip().rsplit(" ", 2)
    key = hashlib.sha256(f"{host.name}:{path}:{size}:{mtime}".encode()).hexdigest()[:20]
    return path, key


def _run(argv: list[str], run=None) -> str:
    if run is not None:
        rc, out, err = run(argv, 30)
        if rc != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise BinaryError(f"'{' '.join(argv)}' failed with {rc}: {last}")
        return out
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BinaryError(f"cannot run '{argv[0]}': {exc}") from None
    if cp.returncode != 0:
        last = (cp.stderr.strip().splitlines() or ["no output"])[-1]
        raise BinaryError(f"'{' '.join(argv)}' failed with {cp.returncode}: {last}")
    return cp.stdout


def _probe_uncached(path: str, run=None) -> dict:
    out = _run([path, "--version"], run)
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)\S*(?: \((.*?)\))?", out)
    if not m:
        raise BinaryError(f"'{path}' does not look like QEMU: --version printed {out[:60]!r}")
    vt = [int(m.group(i)) for i in (1, 2, 3)]
    machines, default = [], ""
    for line in _run([path, "-machine", "help"], run).splitlines()[1:]:
        parts = line.split()
        if not parts:
            continue
        machines.append(parts[0])
        if "(default)" in line:
            default = parts[0]
        am = re.search(r"\(alias of (\S+)\)", line)
        if am:
            machines.append(am.group(1))
    return {"version": ".".join(map(str, vt)), "version_tuple": vt, "package": m.group(4) or "",
            "machines": sorted(set(machines)), "default_machine": default}


def common_machine_type(a: QemuBinary, b: QemuBinary, prefix: str = "pc-q35-") -> str | None:
    """The newest versioned machine type (e.g. pc-q35-7.2) both binaries have, or None.

    Two different QEMUs must run the same machine type to migrate: each one's
    'q35' alias points at its own newest (the destination refuses "Machine type
    received is 'pc-q35-10.0' and local is 'pc-q35-7.2'").
    """
    common = set(a.machines) & set(b.machines)
    return QemuBinary(path="", version="", version_tuple=(0, 0, 0), package="",
                      machines=tuple(sorted(common)), default_machine="").newest_versioned(prefix)
