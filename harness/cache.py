"""A small JSON cache on disk for facts about binaries and hosts (probe once)."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("HARNESS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "qemu-migration-harness")
    from harness import dirs
    return dirs.private_dir(Path(base), "cache dir")   # created 0700; must be ours


def file_key(path: str) -> str:
    """Identity of a binary: path, size and mtime (a rebuild invalidates)."""
    st = os.stat(path)
    return hashlib.sha256(f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:20]


def load(kind: str, key: str) -> dict | None:
    path = cache_dir() / kind / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def store(kind: str, key: str, value: dict) -> None:
    d = cache_dir() / kind
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, d / f"{key}.json")


class locked:
    """Exclusive lock on a cache entry so xdist workers probe only once."""

    def __init__(self, kind: str, key: str):
        d = cache_dir() / kind
        d.mkdir(parents=True, exist_ok=True)
        self._path = d / f"{key}.lock"

    def __enter__(self):
        self._fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
