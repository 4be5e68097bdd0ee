"""One process tree, one cleanup: everything a harness process starts dies with it.

Three roles, one mechanism:

* **Controller** (`harness hammer`, `harness chaos`, a reproducer check): wrap the
  command in :func:`interruptible`; SIGINT/SIGTERM then raise :class:`Interrupted`
  in the main thread, the `finally` blocks stop workers and QEMUs, and the CLI
  prints one line (:meth:`Interrupted.line`) instead of a traceback.
* **Worker** (a multiprocessing child, a pytest-xdist worker): call
  :func:`become_worker` first thing. It dies with its parent (PR_SET_PDEATHSIG
  SIGTERM) and on SIGINT/SIGTERM kills the QEMU process groups and removes the
  run dirs it owns, then exits at once and quietly (no KeyboardInterrupt trace).
* **Anybody who was SIGKILLed** cannot clean up: its QEMUs die by their own
  PDEATHSIG, and its run dirs carry an owner marker (PID + start time), so the
  next process looking at the run root removes them (:func:`reap_orphans`).

The registry below is per process resource tracking (what this process must
kill or remove when it is told to stop), not test state.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

PR_SET_PDEATHSIG = 1
OWNER_FILE = ".qmh-owner"
RUN_DIR_PREFIX = "qmh-"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_lock = threading.RLock()   # re-entrant: the signal handler may interrupt a holder
_groups: set[int] = set()      # process groups (leader PIDs) this process started
_dirs: set[Path] = set()       # run dirs this process created and has not removed yet


# ---------------------------------------------------------------- the registry
def track_group(pgid: int) -> None:
    """A child started with start_new_session=True: kill its group on an interrupt."""
    with _lock:
        _groups.add(pgid)


def untrack_group(pgid: int) -> None:
    with _lock:
        _groups.discard(pgid)


def _owner_text() -> str:
    return f"{os.getpid()} {_start_time(os.getpid())}\n"


def track_dir(path: Path) -> None:
    """A run dir this process owns: marked with our PID, removed on an interrupt."""
    with _lock:
        _dirs.add(Path(path))
    (Path(path) / OWNER_FILE).write_text(_owner_text())


def new_run_dir(root: Path | str, prefix: str) -> Path:
    """mkdtemp, but registered *before* it exists: a signal arriving at any point
    finds it in the registry (mkdtemp-then-register leaves a window). It is made and
    marked in one locked section: a final reap on another thread sees it, or it is not
    made; and a SIGKILL can fall only between two syscalls (an unmarked, empty dir),
    not while another thread holds the lock to start a QEMU."""
    import secrets
    owner = _owner_text()
    for _ in range(100):
        path = Path(root) / f"{RUN_DIR_PREFIX}{prefix}-{secrets.token_hex(4)}"
        with _lock:
            _dirs.add(path)
            try:
                os.mkdir(path, 0o700)
                os.chmod(path, 0o700)   # mkdir's mode went through the umask
                (path / OWNER_FILE).write_text(owner)
            except FileExistsError:
                _dirs.discard(path)
                continue
            except BaseException:
                _dirs.discard(path)
                shutil.rmtree(path, ignore_errors=True)
                raise
        return path
    raise FileExistsError(f"no free run dir name in {root}")


def untrack_dir(path: Path) -> None:
    with _lock:
        _dirs.discard(Path(path))


@contextlib.contextmanager
def spawning() -> Iterator[None]:
    """Around starting a child and track_group(): a stop signal cannot fall between
    the two (blocked on this thread), and a final reap on another thread waits for
    the pair to finish (the lock), so no child escapes the registry. The child
    inherits the blocked mask: its preexec_fn must unblock STOP_SIGNALS."""
    with signals_blocked(), _lock:
        yield


def reap_own(final: bool = False) -> None:
    """Kill every process group and remove every run dir this process still holds.
    final: the process exits right after; the registry stays locked, so a thread that
    would start a QEMU or make a run dir meanwhile waits until the exit takes it."""
    _lock.acquire()
    try:
        groups, dirs = list(_groups), list(_dirs)
        _groups.clear()
        _dirs.clear()
    finally:
        if not final:
            _lock.release()
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for g in groups:   # reap our own children so none lingers as a zombie
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(g, os.WNOHANG)
    _remove_dirs(dirs)


def _remove_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    if any(d.exists() for d in dirs):
        # A QEMU dying of the SIGKILL may have finished a file creation meanwhile.
        time.sleep(0.05)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- orphans of the dead
def _start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat (clock ticks since boot): tells a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def owner_alive(marker_text: str) -> bool:
    """Is the process named by an owner marker ("PID STARTTIME") still the same, alive one?"""
    try:
        pid_s, start = marker_text.split()
        pid = int(pid_s)
    except ValueError:
        return False
    return _start_time(pid) == start


def orphan_dirs(root: Path) -> list[Path]:
    """Run dirs under root whose owner process is gone (killed before it could clean up)."""
    found = []
    try:
        entries = list(Path(root).iterdir())
    except OSError:
        return []
    for d in entries:
        if not d.name.startswith(RUN_DIR_PREFIX):
            continue
        try:
            text = (d / OWNER_FILE).read_text()
        except OSError:
            continue    # no marker: not a run dir of ours (or of an older harness)
        if not owner_alive(text):
            found.append(d)
    return found


def pids_in(dirs: Sequence[Path]) -> list[int]:
    """Processes whose working directory is one of dirs (QEMU runs in its run dir)."""
    want = {str(Path(d)) for d in dirs}
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.readlink(p / "cwd") in want:
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


SHM = Path("/dev/shm")   # guest RAM files (cpr) live in owner-marked dirs there


def reap_orphans(root: Path) -> list[Path]:
    """Remove the run dirs of dead owners under root and in /dev/shm (and kill anything
    still in them). Cheap when there is nothing to do: directory listings."""
    dirs = orphan_dirs(root) + (orphan_dirs(SHM) if Path(root) != SHM else [])
    if not dirs:
        return []
    for pid in pids_in(dirs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _remove_dirs(dirs)
    return dirs


# ---------------------------------------------------------------- dying with the parent
def set_pdeathsig(sig: int) -> None:
    """Get `sig` when the parent *thread* exits (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def become_worker(parent_pid: int | None = None,
                  signals: Sequence[int] = STOP_SIGNALS) -> None:
    """For a child process: die with the parent, and stop cleanly and quietly on a signal.

    `signals` (and SIGTERM, which PDEATHSIG sends) kill our QEMU groups, remove our
    run dirs and exit with 128+signal at once: a terminal's Ctrl-C reaches every
    process of the foreground group, and only the controller reports it."""
    exit_cleanly_on((*signals, signal.SIGTERM))
    set_pdeathsig(signal.SIGTERM)
    if parent_pid is not None and os.getppid() != parent_pid:
        _worker_exit(signal.SIGTERM, None)   # the parent died before the prctl took effect


def exit_cleanly_on(signals: Sequence[int]) -> None:
    """These signals reap what this process holds and exit with 128+signal, silently."""
    for s in set(signals):
        signal.signal(s, _worker_exit)
    # Started under signals_blocked(): a Ctrl-C that came meanwhile is handled now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Start children with SIGINT/SIGTERM blocked (the mask survives fork and exec):
    until a child installed its handlers, a Ctrl-C waits instead of printing a
    KeyboardInterrupt traceback from its imports. Ours are delivered on leaving."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _worker_exit(signum, _frame) -> None:
    # A second stop signal must not cut the reaping short: an xdist worker whose
    # controller died gets PDEATHSIG SIGTERM *and* a SIGINT from execnet, whose
    # KeyboardInterrupt would otherwise unwind out of reap_own() before any rmtree.
    for s in STOP_SIGNALS:      # (Python runs handlers on the main thread: this is it)
        signal.signal(s, signal.SIG_IGN)
    try:
        reap_own(final=True)
    finally:
        os._exit(128 + signum)


# ---------------------------------------------------------------- controllers
class Interrupted(BaseException):
    """SIGINT/SIGTERM reached a controller. BaseException: attempt code that catches
    Exception (a harness error must not stop the hammer) must not swallow it."""

    def __init__(self, signum: int, what: str = "", artifacts: Path | str | None = None):
        super().__init__(signum)
        self.signum = signum
        self.what = what
        self.artifacts = artifacts

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        name = signal.Signals(self.signum).name
        where = f"; artifacts: {self.artifacts}" if self.artifacts else ""
        return f"harness: {self.what or 'run'} interrupted by {name}{where}"


@contextlib.contextmanager
def interruptible(what: str = "", artifacts: Path | str | None = None) -> Iterator[None]:
    """SIGINT/SIGTERM raise Interrupted (once; later ones are ignored while we clean up).

    On the way out of an interrupt, everything still registered is reaped, and
    `what`/`artifacts` fill in an Interrupted that has none yet (the innermost
    caller knows best). Main thread only (Python delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum, _frame):
        if fired:
            return      # a second Ctrl-C while stopping: keep stopping, quietly
        fired.append(signum)
        raise Interrupted(signum, what, artifacts)

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    except Interrupted as exc:
        reap_own()
        exc.what = exc.what or what
        exc.artifacts = exc.artifacts or artifacts
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_group(argv: Sequence[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run in a process group of its own, killed whole on timeout or interrupt.

    A reproducer script starts QEMUs of its own; killing only the script would leave
    them running with parent PID 1. They die with the script's group instead."""
    parent = os.getpid()

    def preexec():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)   # blocked by spawning()
        set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    kwargs.setdefault("stdin", subprocess.DEVNULL)
    with spawning():
        proc = subprocess.Popen(list(argv), start_new_session=True, preexec_fn=preexec, **kwargs)
        track_group(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        # The script may have left children in its group (its QEMU, on a crash of its own).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        untrack_group(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def print_interrupted(exc: Interrupted) -> int:
    print(exc.line(), file=sys.stderr, flush=True)
    return exc.exit_code


__all__ = ["Interrupted", "interruptible", "become_worker", "run_group", "reap_own", "spawning",
           "reap_orphans", "orphan_dirs", "exit_cleanly_on", "signals_blocked", "track_group", "untrack_group", "track_dir",
           "untrack_dir", "new_run_dir", "set_pdeathsig", "owner_alive", "print_interrupted", "OWNER_FILE"]
