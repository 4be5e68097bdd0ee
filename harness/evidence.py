"""Keep artifacts light: cores only for the first few crashes of each class in a whole
session (all xdist workers together), and gzipped once gdb has read them.

A QEMU core is sparse (~1 GiB apparent for a 256 MiB guest, mostly holes); copied,
uploaded or unpacked without care it becomes its apparent size. A sparse-aware tar.gz
keeps only the data, compressed, and survives any artifact store.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

PER_CLASS = 3


class SharedEvidenceBudget:
    """want_evidence(rc, stderr) for Machine: True for the first `per_class` crashes of a
    (signal, assertion) class across every process sharing `root` (an O_EXCL file per
    granted slot: no lock, no server, dies with nothing)."""

    def __init__(self, root: Path, per_class: int = PER_CLASS):
        self.root = Path(root)
        self.per_class = per_class

    def __call__(self, rc: int, stderr: str) -> bool:
        from harness.qemu.outcome import normalize_assertion, parse_assertion
        a = parse_assertion(stderr)
        key = f"{rc}:{normalize_assertion(a) if a else ''}"
        # Without an assertion line only the backtrace tells crashes apart.
        limit = self.per_class if a else self.per_class * 10
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.root.mkdir(parents=True, exist_ok=True)
        for n in range(limit):
            try:
                fd = os.open(self.root / f"{digest}-{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                continue
            os.write(fd, key.encode())
            os.close(fd)
            return True
        return False


def compress_core(core: Path) -> Path:
    """core -> core.tar.gz with GNU tar --sparse (holes are skipped, not compressed: a
    1 GiB core with 150 MiB of data packs in the time of its data), the original removed.
    `tar -xzf core.tar.gz` gives the sparse core back for gdb."""
    out = core.with_name(core.name + ".tar.gz")
    tmp = out.with_name(out.name + ".tmp")
    tar = shutil.which("tar")
    if tar is not None:
        cp = subprocess.run([tar, "--sparse", "-czf", str(tmp), "-C", str(core.parent), core.name],
                            capture_output=True, timeout=600,
                            env={**os.environ, "GZIP": "-1"})
        if cp.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise OSError(f"tar --sparse of {core}: {cp.stderr.decode(errors='replace').strip()}")
    else:   # no GNU tar: plain gzip (holes compressed as zeros, slower)
        out, tmp = core.with_name(core.name + ".gz"), core.with_name(core.name + ".gz.tmp")
        with open(core, "rb") as src, gzip.open(tmp, "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, out)
    core.unlink()
    return out


def compress_cores(artifacts: Path) -> list[Path]:
    """Every `core` below a test's artifact dir, gzipped; outcome.json points at it."""
    import json
    done = []
    for core in sorted(Path(artifacts).rglob("core")):
        if not core.is_file():
            continue
        gz = compress_core(core)
        done.append(gz)
        oj = core.parent / "outcome.json"
        try:
            data = json.loads(oj.read_text())
            if data.get("core"):
                data["core"] = str(gz)
                oj.write_text(json.dumps(data, indent=2) + "\n")
        except (OSError, ValueError):
            pass
    return done
