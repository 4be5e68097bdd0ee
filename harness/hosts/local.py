"""LocalHost: QEMU as a child process of this Python process."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from harness import dirs, proctree
from harness.hosts.base import Host, HostError, Process
from harness.qemu.debug import qemu_preexec


class LocalProcess(Process):
    def __init__(self, popen: subprocess.Popen):
        self._popen = popen
        self.pid = popen.pid
        self.argv = tuple(popen.args)

    def poll(self) -> int | None:
        return self._reaped(self._popen.poll())

    def wait(self, timeout: float) -> int | None:
        try:
            return self._reaped(self._popen.wait(timeout=max(0.0, timeout)))
        except subprocess.TimeoutExpired:
            return None

    def _reaped(self, rc: int | None) -> int | None:
        if rc is not None:   # reaped: its PID (the group id) may be reused from now on
            proctree.untrack_group(self.pid)
        return rc

    def send_signal(self, sig: int) -> None:
        if self._popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        # The group id is our child's pid (start_new_session); only ever ours.
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class LocalHost(Host):
    name = "local"

    def __init__(self, tmp_root: str | None = None):
        # Short root: UNIX socket paths must stay under 108 bytes.
        if tmp_root is None:
            try:
                tmp_root = str(dirs.local_run_root())   # HARNESS_RUN_ROOT, checked
            except dirs.DirError as exc:
                raise HostError(str(exc)) from None
        self.tmp_root = tmp_root

    def spawn(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
              stdout: Path, stderr: Path, pass_fds: Sequence[int] = (),
              core_dumps: bool = True) -> Process:
        full_env = dict(os.environ)
        full_env.update(env)
        with open(stdout, "ab") as out, open(stderr, "ab") as err, proctree.spawning():
            try:
                popen = subprocess.Popen(
                    list(argv), cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, pass_fds=tuple(pass_fds),
                    start_new_session=True, preexec_fn=qemu_preexec(cores=core_dumps))
            except OSError as exc:
                raise HostError(f"cannot start {argv[0]}: {exc.strerror}") from exc
            proctree.track_group(popen.pid)   # killed with its group if we are interrupted
        return LocalProcess(popen)

    def run(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        try:
            cp = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, errors="replace")
        except subprocess.TimeoutExpired as exc:
            return 124, _text(exc.stdout), _text(exc.stderr) + f"\ntimeout after {timeout}s"
        except OSError as exc:
            return 127, "", f"cannot run {argv[0]}: {exc.strerror}"
        return cp.returncode, cp.stdout, cp.stderr

    def make_run_dir(self, prefix: str) -> Path:
        # Owner-marked (PID + start time): reaped if we die without removing it.
        return proctree.new_run_dir(self.tmp_root, prefix)

    def remove_run_dir(self, path: Path) -> None:
        if not path.name.startswith("qmh-"):
            raise HostError(f"refusing to remove {path}: not a harness run dir")
        shutil.rmtree(path, ignore_errors=True)
        proctree.untrack_dir(path)


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
