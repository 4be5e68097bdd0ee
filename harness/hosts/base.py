"""The Host interface: where QEMU processes run.

The machine model only talks to a Host, so the same Machine runs locally
(subprocess) or on a remote host (SSH) without change.
"""
from __future__ import annotations

import abc
import sys
import signal
from pathlib import Path
from typing import Mapping, Sequence


class HostError(Exception):
    """A host-level failure (cannot spawn, cannot reach, bad path)."""


class Process(abc.ABC):
    """A process started on a host, tracked by PID."""

    pid: int
    argv: tuple[str, ...]

    @abc.abstractmethod
    def poll(self) -> int | None:
        """Return the subprocess-style return code (negative = signal) or None."""

    @abc.abstractmethod
    def wait(self, timeout: float) -> int | None:
        """Wait up to timeout seconds; return the return code or None if still running."""

    @abc.abstractmethod
    def send_signal(self, sig: int) -> None:
        """Signal the process (ignored if it already exited)."""

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group we created for it."""
        self.send_signal(sig)


class Host(abc.ABC):
    """Somewhere QEMU can run."""

    name: str
    is_local: bool = True        # False: another machine (no fd passing, files must be staged)
    qemu_listens: bool = False   # True: QEMU serves its QMP/serial sockets, we connect
    listen_address: str = "127.0.0.1"   # where this host's QEMU listens for migration
    python: str = sys.executable         # a Python 3 on the host (small helper scripts)

    @abc.abstractmethod
    def spawn(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
              stdout: Path, stderr: Path, pass_fds: Sequence[int] = (),
              core_dumps: bool = True) -> Process:
        """Start argv in its own process group, dying with us, cores enabled (unless
        core_dumps is False: hammering skips the ~0.3 s a core costs at exit)."""

    @abc.abstractmethod
    def run(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        """Run a short command to completion; return (rc, stdout, stderr)."""

    @abc.abstractmethod
    def make_run_dir(self, prefix: str) -> Path:
        """Create a private 0700 directory for one machine's sockets and core."""

    @abc.abstractmethod
    def remove_run_dir(self, path: Path) -> None:
        """Remove a run dir created by make_run_dir (only those)."""

    # -- files on the host (identity/no-ops locally; SFTP and friends remotely) --
    def stage_file(self, local: Path) -> Path:
        """Make a local file (guest image) available on the host; return its path there."""
        return local

    def put_file(self, local: Path, path: Path, mode: int = 0o600) -> None:
        import shutil
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, path)
        Path(path).chmod(mode)

    def read_file(self, path: Path) -> bytes:
        return Path(path).read_bytes()

    def file_stat(self, path: Path) -> tuple[int, int]:
        """(apparent size, allocated bytes) of a file on the host."""
        st = Path(path).stat()
        return st.st_size, st.st_blocks * 512

    def read_head(self, path: Path, n: int) -> bytes:
        with open(path, "rb") as f:
            return f.read(n)

    def remove_file(self, path: Path) -> None:
        Path(path).unlink(missing_ok=True)

    def take_file(self, src: Path, dst: Path) -> None:
        """Move a file (a core) from the host into the local artifacts, keeping holes."""
        import subprocess
        try:
            Path(src).rename(dst)
        except OSError:
            subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=False, timeout=300)
            Path(src).unlink(missing_ok=True)

    def real_exe(self, pid: int, fallback: str) -> str:
        """The ELF a process runs (gdb needs it, not a wrapper script that exec'd it)."""
        import os
        try:
            return os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return fallback

    def connect_unix(self, path: Path, deadline: float, alive):
        raise HostError(f"{self.name}: connect_unix is only for hosts where QEMU listens")
