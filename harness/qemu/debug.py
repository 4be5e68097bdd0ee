"""Crash evidence: core limits in the QEMU child, core files, gdb backtraces.

Every function that touches the system takes an optional ``run`` callable,
``run(argv: list[str], timeout: float) -> (returncode, stdout, stderr)``,
defaulting to :func:`local_run`; route it through a Host to do the same on a
remote machine.  Every call is bounded by a timeout.  A runner reports a
timeout as return code :data:`TIMEOUT_RC` (124, like coreutils ``timeout``)
and a missing program as 127.

Starting QEMU locally so that it dumps core and dies with us::

    proc = subprocess.Popen(argv, cwd=run_dir, start_new_session=True,
                            preexec_fn=qemu_preexec(), ...)

* ``start_new_session=True`` (setsid: own session and process group, no
  controlling terminal) lets the caller kill the whole group with
  ``os.killpg(proc.pid, SIGKILL)`` and keeps terminal Ctrl-C away from QEMU.
  (``process_group=0`` works too; do not also call ``os.setpgid`` in a preexec.)
* :func:`qemu_preexec` returns a ``preexec_fn`` that raises RLIMIT_CORE (the
  soft limit to the hard one; as root both to unlimited) and sets
  ``PR_SET_PDEATHSIG(SIGKILL)``, killing itself at once if the parent already
  died.  PDEATHSIG fires when the *thread* that forked exits, not the process:
  spawn QEMU from a long-lived thread (the main thread), never from a
  short-lived worker or executor thread.
* Here ``core_pattern`` is ``core``: the core lands in QEMU's cwd, so give each
  machine its own run dir as cwd.  A core holds guest RAM; pass QEMU
  ``-machine dump-guest-core=off`` to leave it out for large guests.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .outcome import (  # re-exported: pure gdb parsing lives in outcome.py
    ALL_THREADS_MARKER,
    CRASHING_THREAD_MARKER,
    crashing_thread_frames,
    crashing_thread_stack,
    gdb_signal_name,
    parse_gdb_threads,
    top_frames,
)

__all__ = [
    "Runner",
    "TIMEOUT_RC",
    "local_run",
    "enable_cores",
    "set_pdeathsig",
    "qemu_preexec",
    "core_limit_argv",
    "read_core_pattern",
    "core_path_glob",
    "CoreSearch",
    "search_core",
    "find_core",
    "gdb_core_argv",
    "gdb_pid_argv",
    "backtrace_from_core",
    "backtrace_of_pid",
    "crashing_thread_frames",
    "crashing_thread_stack",
    "parse_gdb_threads",
    "gdb_signal_name",
    "top_frames",
]

Runner = Callable[[list[str], float], tuple[int, str, str]]
TIMEOUT_RC = 124
NOT_FOUND_RC = 127


def local_run(argv: list[str], timeout: float) -> tuple[int, str, str]:
    """Run ``argv`` locally, bounded by ``timeout`` seconds.

    The child gets its own session; on timeout its whole process group is
    SIGKILLed and ``(124, partial stdout, stderr + note)`` is returned.
    """
    try:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError as e:
        return NOT_FOUND_RC, "", f"{argv[0]}: not found ({e})"
    except OSError as e:
        return NOT_FOUND_RC, "", f"{argv[0]}: cannot run ({e})"
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - pipes held open by a stray child
            out, err = "", ""
        return TIMEOUT_RC, out or "", (err or "") + f"\n[timed out after {timeout:g} s: {argv[0]}]\n"


# --------------------------------------------------------------------------
# in the QEMU child
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: no dlopen in the child
except OSError:  # pragma: no cover
    _libc = None


def enable_cores() -> None:
    """Raise RLIMIT_CORE: soft to hard; both to unlimited when allowed (root).

    Usable directly as ``preexec_fn``; never raises.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    except (ValueError, OSError):
        pass


def set_pdeathsig(sig: int = signal.SIGKILL) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)`` for the calling process; False if unavailable."""
    if _libc is None:
        return False
    return _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def qemu_preexec(*, cores: bool = True, pdeathsig: int | None = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for QEMU: :func:`enable_cores` + PDEATHSIG.

    Call it in the parent (it records the parent's pid); the returned function
    runs in the child between fork and exec.  If the parent died before the
    prctl took effect, the child kills itself.
    """
    parent = os.getpid()

    def _preexec() -> None:
        # Spawned under proctree.spawning(), whose blocked SIGINT/SIGTERM the child
        # would inherit (QEMU would then ignore a SIGTERM): unblock them.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM))
        if cores:
            enable_cores()
        if pdeathsig is not None:
            set_pdeathsig(pdeathsig)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)

    return _preexec


def core_limit_argv() -> list[str]:
    """Argv prefix that raises the core limit where no ``preexec_fn`` is possible
    (a command run by a remote shell): ``sh -c 'ulimit -c unlimited || ulimit -c
    "$(ulimit -H -c)"; exec "$@"' sh``, followed by QEMU's argv."""
    script = 'ulimit -c unlimited 2>/dev/null || ulimit -c "$(ulimit -H -c)"; exec "$@"'
    return ["sh", "-c", script, "sh"]


# --------------------------------------------------------------------------
# finding the core
# --------------------------------------------------------------------------

_WILD = object()  # a "*" segment in a core path pattern


def read_core_pattern(run: Runner | None = None, timeout: float = 5.0) -> tuple[str, bool]:
    """(``/proc/sys/kernel/core_pattern``, ``core_uses_pid``) of the host ``run`` reaches."""
    run = run or local_run
    rc, out, _ = run(["cat", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/core_uses_pid"], timeout)
    lines = out.splitlines()
    pattern = lines[0].strip() if lines else "core"
    uses_pid = len(lines) > 1 and lines[1].strip() not in ("", "0")
    return pattern or "core", uses_pid


def _pattern_segments(pattern: str, *, uses_pid: bool, cwd: str, pid: int, exe: str) -> list:
    """core_pattern (core(5)) -> list of literal strings and :data:`_WILD`."""
    segs: list = []
    has_pid = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%" and i + 1 < len(pattern):
            spec = pattern[i + 1]
            i += 2
            if spec == "%":
                segs.append("%")
            elif spec in "pP":
                has_pid = True
                segs.append(str(pid))
            elif spec == "f":
                segs.append(os.path.basename(exe))
            else:  # %e (comm, may be a truncated thread name), %i %I %u %g %s %t %h %E %c %d ...
                segs.append(_WILD)
            continue
        if c == "%":  # trailing lone %: dropped by the kernel
            i += 1
            continue
        segs.append(c)
        i += 1
    if uses_pid and not has_pid:
        segs.append("." + str(pid))
    if not pattern.startswith("/"):
        segs.insert(0, cwd.rstrip("/") + "/")
    # merge adjacent literals
    merged: list = []
    for s in segs:
        if s is not _WILD and merged and merged[-1] is not _WILD:
            merged[-1] += s
        elif s is _WILD and merged and merged[-1] is _WILD:
            continue
        else:
            merged.append(s)
    return merged


def core_path_glob(pattern: str, *, uses_pid: bool, cwd: str | Path, pid: int, exe: str) -> str | None:
    """Shell glob (already shell-quoted) for the core a process would leave, or
    None when ``pattern`` pipes cores to a handler (``|...``)."""
    if pattern.startswith("|"):
        return None
    segs = _pattern_segments(pattern, uses_pid=uses_pid, cwd=str(cwd), pid=pid, exe=exe)
    return "".join("*" if s is _WILD else shlex.quote(s) for s in segs)


@dataclass(frozen=True)
class CoreSearch:
    """Result of :func:`search_core`: the core's path, or None and why."""

    path: Path | None
    note: str
    size: int | None = None


def _stat_glob(glob: str, run: Runner, timeout: float) -> list[tuple[int, int, float, str]]:
    script = (
        f'for f in {glob}; do [ -f "$f" ] && stat -c "%s %b %Y %n" -- "$f"; done; true'
    )
    rc, out, _ = run(["sh", "-c", script], timeout)
    found = []
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0].isdigit() and parts[1].isdigit():
            try:
                found.append((int(parts[0]), int(parts[1]), float(parts[2]), parts[3]))
            except ValueError:
                continue
    return found


def search_core(
    cwd: str | Path,
    pid: int,
    exe: str,
    *,
    timeout: float = 5.0,
    appear_timeout: float = 1.0,
    since: float | None = None,
    run: Runner | None = None,
    core_pattern: tuple[str, bool] | None = None,
) -> CoreSearch:
    """Find the core left by process ``pid`` (executable ``exe``, cwd ``cwd``).

    File patterns: glob per core(5) (``%p``/``%P`` -> pid, ``%f`` -> exe name,
    other specifiers -> ``*``, ``core_uses_pid`` appends ``.PID``, relative
    patterns are relative to ``cwd``); newest match with mtime >= ``since``
    (seconds since the epoch on the *target host's* clock, e.g. the process
    start; 1 s slack) wins; wait until
    its size is stable, in all at most ``timeout`` s, giving up after
    ``appear_timeout`` s if nothing appears (the kernel writes the core before
    the parent can reap the process, so a missing core rarely shows up later).
    Pipe patterns: ``coredumpctl dump PID`` into ``cwd/core.PID`` when the
    handler is systemd-coredump and coredumpctl exists, else a note.
    """
    run = run or local_run
    deadline = time.monotonic() + timeout
    pattern, uses_pid = core_pattern or read_core_pattern(run, min(5.0, timeout))
    if pattern.startswith("|"):
        return _search_piped(pattern, Path(cwd), pid, run, deadline)
    glob = core_path_glob(pattern, uses_pid=uses_pid, cwd=cwd, pid=pid, exe=exe)
    assert glob is not None
    appear_deadline = time.monotonic() + min(appear_timeout, timeout)
    last: tuple[int, int, str] | None = None
    while True:
        left = deadline - time.monotonic()
        found = _stat_glob(glob, run, max(1.0, min(5.0, left)))
        if since is not None:
            found = [f for f in found if f[2] >= since - 1.0]
        if found:
            size, blocks, _mtime, name = max(found, key=lambda f: f[2])
            cur = (size, blocks, name)
            if cur == last and size > 0:
                return CoreSearch(Path(name), f"core {name} ({size} bytes, {blocks * 512} on disk)", size)
            last = cur
        elif time.monotonic() >= appear_deadline:
            return CoreSearch(
                None, f"no core matching {glob} (core_pattern {pattern!r}, core_uses_pid {int(uses_pid)})"
            )
        if time.monotonic() + 0.2 > deadline:
            if last is not None:
                return CoreSearch(Path(last[2]), f"core {last[2]} (size still changing at deadline)", last[0])
            return CoreSearch(None, f"no core matching {glob} within {timeout:g} s")
        time.sleep(0.2)


def _search_piped(pattern: str, cwd: Path, pid: int, run: Runner, deadline: float) -> CoreSearch:
    handler = pattern[1:].split()[0] if pattern[1:].split() else pattern
    name = os.path.basename(handler)
    note = f"core piped to {handler}, not collected"
    if "systemd-coredump" not in name:
        return CoreSearch(None, note)
    dest = cwd / f"core.{pid}"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return CoreSearch(None, note + " (coredumpctl found no core in time)")
        rc, out, err = run(
            ["coredumpctl", "--no-pager", "--quiet", "dump", str(pid), "--output", str(dest)],
            max(1.0, left),
        )
        if rc == NOT_FOUND_RC:
            return CoreSearch(None, note + " (no coredumpctl)")
        if rc == 0:
            return CoreSearch(dest, f"core from coredumpctl dump {pid} -> {dest}")
        if rc == TIMEOUT_RC:
            return CoreSearch(None, note + " (coredumpctl timed out)")
        time.sleep(0.5)  # systemd-coredump may still be processing it


def find_core(
    cwd: str | Path,
    pid: int,
    exe: str,
    *,
    timeout: float = 5.0,
    since: float | None = None,
    run: Runner | None = None,
) -> Path | None:
    """Path of the core left by ``pid``, or None.  See :func:`search_core`."""
    return search_core(cwd, pid, exe, timeout=timeout, since=since, run=run).path


# --------------------------------------------------------------------------
# gdb
# --------------------------------------------------------------------------

_GDB_PRE = ["gdb", "-batch", "-nx", "-iex", "set debuginfod enabled off", "-iex", "set auto-load off",
            "-ex", "set pagination off", "-ex", "set width 0", "-ex", "set print thread-events off"]


def gdb_core_argv(binary: str | Path, core: str | Path) -> list[str]:
    """gdb argv printing the crashing thread (plain ``bt``: for a core, gdb's current
    thread is the one that dumped) and then all threads, between marker lines."""
    return _GDB_PRE + [
        "-ex", f"echo \\n{CRASHING_THREAD_MARKER}\\n",
        "-ex", "bt",
        "-ex", f"echo \\n{ALL_THREADS_MARKER}\\n",
        "-ex", "thread apply all bt",
        str(binary), str(core),
    ]


def gdb_pid_argv(pid: int) -> list[str]:
    """gdb argv attaching to a live ``pid``, printing all threads; ``-batch`` detaches."""
    return _GDB_PRE + [
        "-ex", f"echo \\n{ALL_THREADS_MARKER}\\n",
        "-ex", "thread apply all bt",
        "-p", str(int(pid)),
    ]


def _gdb_result(rc: int, out: str, err: str, timeout: float) -> str:
    text = out
    if rc == NOT_FOUND_RC:
        return f"[gdb not available: {err.strip()}]\n"
    if rc == TIMEOUT_RC:
        text += f"\n[gdb timed out after {timeout:g} s]\n"
    if rc != 0 or "#0" not in out:
        errs = "\n".join(ln for ln in err.splitlines() if ln.strip() and "core file too small" not in ln)
        text += f"\n[gdb exit {rc}]\n" + errs[-4000:] + ("\n" if errs else "")
    return text


def backtrace_from_core(
    binary: str | Path, core: str | Path, timeout: float = 60, *, run: Runner | None = None
) -> str:
    """gdb's backtraces of every thread in ``core`` (crashing thread first, marked).

    Never raises; failures are described in the returned text.
    """
    run = run or local_run
    rc, out, err = run(gdb_core_argv(binary, core), timeout)
    return _gdb_result(rc, out, err, timeout)


def backtrace_of_pid(pid: int, timeout: float = 60, *, run: Runner | None = None) -> str:
    """Backtraces of every thread of a live (running or stopped) process.

    gdb attaches, prints, detaches; the process keeps running (or stays stopped).
    If gdb itself is killed by the timeout the kernel detaches it, but the
    process may be left stopped: only use on a process you will kill anyway
    (the hang path), or SIGCONT it afterwards.
    """
    run = run or local_run
    rc, out, err = run(gdb_pid_argv(pid), timeout)
    return _gdb_result(rc, out, err, timeout)
