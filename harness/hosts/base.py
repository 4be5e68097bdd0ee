"""The Host interface: where QEMU processes run.

The machine model only talks to a Host, so the same Machine runs locally
(subprocess) or on a remote host (SSH) without change.
"""
from __future__ import annotations

import abc
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

    @abc.abstractmethod
    def spawn(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
              stdout: Path, stderr: Path, pass_fds: Sequence[int] = ()) -> Process:
        """Start argv in its own process group, dying with us, cores enabled."""

    @abc.abstractmethod
    def run(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        """Run a short command to completion; return (rc, stdout, stderr)."""

    @abc.abstractmethod
    def make_run_dir(self, prefix: str) -> Path:
        """Create a private 0700 directory for one machine's sockets and core."""

    @abc.abstractmethod
    def remove_run_dir(self, path: Path) -> None:
        """Remove a run dir created by make_run_dir (only those)."""
