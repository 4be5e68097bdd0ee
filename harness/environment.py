"""What a result depends on: QEMU version and build, binary sha256, accelerator, host,
seed, harness version. Recorded in every test's metrics.json ("environment") so the
report can show it and key trends by it (a trend that crosses a QEMU build says so).
"""
from __future__ import annotations

import hashlib
import os
import platform
import struct
from dataclasses import asdict, dataclass

from harness import __version__, cache

PT_NOTE = 4
NT_GNU_BUILD_ID = 3


@dataclass(frozen=True)
class BinaryIdentity:
    path: str
    version: str
    package: str
    sha256: str | None         # None for a binary on a remote host (not read over SSH)
    build_id: str | None       # the ELF GNU build-id note, if the binary has one


@dataclass(frozen=True)
class Environment:
    qemu_src: BinaryIdentity
    qemu_dst: BinaryIdentity
    accel: str
    machine_type: str
    host: str                  # controller: node name, kernel, CPUs
    hosts: str                 # where QEMU ran: "local" or "src-host:dst-host"
    seed: int | None
    harness_version: str = __version__
    python: str = platform.python_version()

    def to_dict(self) -> dict:
        return asdict(self)


def build_id(path: str) -> str | None:
    """The GNU build-id of an ELF file (64-bit or 32-bit, either endianness), or None."""
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if ident[:4] != b"\x7fELF":
                return None
            is64, end = ident[4] == 2, "<" if ident[5] == 1 else ">"
            if is64:
                phoff, = struct.unpack_from(end + "Q", ident, 32)
                phentsize, phnum = struct.unpack_from(end + "HH", ident, 54)
            else:
                phoff, = struct.unpack_from(end + "I", ident, 28)
                phentsize, phnum = struct.unpack_from(end + "HH", ident, 42)
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                ph = f.read(phentsize)
                if is64:
                    ptype, _, offset, _, _, filesz = struct.unpack_from(end + "IIQQQQ", ph)
                else:
                    ptype, offset, _, _, filesz = struct.unpack_from(end + "IIIII", ph)
                if ptype != PT_NOTE:
                    continue
                f.seek(offset)
                notes = f.read(min(filesz, 1 << 16))
                found = _find_build_id(notes, end)
                if found:
                    return found
    except (OSError, struct.error):
        return None
    return None


def _find_build_id(notes: bytes, end: str) -> str | None:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from(end + "III", notes, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        if ntype == NT_GNU_BUILD_ID and notes[name_at:name_at + namesz].rstrip(b"\0") == b"GNU":
            return notes[desc_at:desc_at + descsz].hex()
        pos = desc_at + ((descsz + 3) & ~3)
    return None


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def identify(binary, local: bool = True) -> BinaryIdentity:
    """Identity of a probed QemuBinary; hashed once per file version (cached)."""
    if not local:
        return BinaryIdentity(binary.path, binary.version, binary.package, None, None)
    key = cache.file_key(binary.path)
    got = cache.load("binary-identity", key)
    if got is None:
        got = {"sha256": sha256_file(binary.path), "build_id": build_id(binary.path)}
        cache.store("binary-identity", key, got)
    return BinaryIdentity(binary.path, binary.version, binary.package, got["sha256"], got["build_id"])


def controller_host() -> str:
    u = os.uname()
    return f"{u.nodename} ({u.sysname} {u.release}, {os.cpu_count()} CPUs)"


def short_key(env: dict) -> str:
    """'10.0.2 ab12cd34' (destination too when it differs): what a trend point is keyed by."""
    def one(b: dict) -> str:
        ident = (b.get("build_id") or b.get("sha256") or "")[:8]
        return f"{b.get('version', '?')} {ident}".strip()
    src, dst = one(env.get("qemu_src") or {}), one(env.get("qemu_dst") or {})
    return src if src == dst else f"{src} -> {dst}"
