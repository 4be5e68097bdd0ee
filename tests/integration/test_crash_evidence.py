"""Crash evidence with a real QEMU: cores, gdb backtraces, classification, PDEATHSIG.

Starts at most one QEMU at a time (TCG, paused, no devices), each in its own
temporary run dir used as cwd (core_pattern ``core`` is cwd-relative), and
kills and removes everything it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.qemu import debug
from harness.qemu.outcome import OutcomeKind, classify

pytestmark = pytest.mark.qemu

QEMU = os.environ.get("QTEST_QEMU_BINARY") or shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
LIBC_FRAMES = {"abort", "raise", "__GI_abort", "__GI_raise", "__pthread_kill_implementation",
               "__ppoll", "ppoll", "start_thread", "clone3"}


def qemu_argv(run_dir: Path) -> list[str]:
    return [QEMU, "-accel", "tcg", "-machine", "q35", "-m", "64", "-display", "none",
            "-nodefaults", "-S", "-qmp", f"unix:{run_dir}/qmp.sock,server=on,wait=off"]


@pytest.fixture
def qemu_or_skip():
    if not (os.path.isfile(QEMU) and os.access(QEMU, os.X_OK)):
        pytest.skip(f"no QEMU at {QEMU}")
    if shutil.which("gdb") is None:
        pytest.skip("no gdb")
    return QEMU


class Started:
    """The QEMU processes one test started; teardown kills the survivors."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[Path] = []

    def run_dir(self) -> Path:
        d = Path(tempfile.mkdtemp(prefix="harness-crash-"))
        os.chmod(d, 0o700)
        self.dirs.append(d)
        return d

    def qemu(self, run_dir: Path) -> tuple[subprocess.Popen, float]:
        t0 = time.time()
        stderr = open(run_dir / "stderr.log", "wb")
        try:
            p = subprocess.Popen(qemu_argv(run_dir), cwd=run_dir, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=stderr,
                                 start_new_session=True, preexec_fn=debug.qemu_preexec())
        finally:
            stderr.close()
        self.procs.append(p)
        wait_ready(p, run_dir)
        return p, t0

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.killpg(p.pid, sig)
                    except ProcessLookupError:
                        pass
                p.wait(timeout=10)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def started(qemu_or_skip):
    s = Started()
    try:
        yield s
    finally:
        s.close()


def wait_ready(p: subprocess.Popen, run_dir: Path, timeout: float = 20.0) -> None:
    """QEMU is initialised once its QMP socket exists (it is created during startup)."""
    deadline = time.monotonic() + timeout
    while not (run_dir / "qmp.sock").exists():
        if p.poll() is not None:
            raise AssertionError(f"QEMU exited {p.returncode}: {(run_dir / 'stderr.log').read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"QEMU not ready within {timeout} s")
        time.sleep(0.05)
    time.sleep(0.2)  # let the main loop settle into poll()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_preexec_raises_core_limit(started):
    run_dir = started.run_dir()
    p, _ = started.qemu(run_dir)
    limits = Path(f"/proc/{p.pid}/limits").read_text()
    core_line = next(ln for ln in limits.splitlines() if ln.startswith("Max core file size"))
    soft, hard = core_line.split()[4:6]
    assert soft == hard, core_line
    if os.geteuid() == 0:
        assert soft == "unlimited", core_line
    assert os.getpgid(p.pid) == p.pid  # own process group (start_new_session)


@pytest.mark.parametrize("sig", [signal.SIGABRT, signal.SIGSEGV], ids=["SIGABRT", "SIGSEGV"])
def test_crash_core_backtrace_classify(started, sig, record_property):
    run_dir = started.run_dir()
    p, t0 = started.qemu(run_dir)
    os.kill(p.pid, sig)
    rc = p.wait(timeout=30)
    assert rc == -sig

    t = time.monotonic()
    found = debug.search_core(run_dir, p.pid, QEMU, since=t0)
    find_s = time.monotonic() - t
    assert found.path is not None, found.note
    assert found.path.parent == run_dir
    assert found.size and found.size > 0
    assert find_s < 5.5

    t = time.monotonic()
    bt = debug.backtrace_from_core(QEMU, found.path, timeout=60)
    gdb_s = time.monotonic() - t
    record_property("core_bytes", found.size)
    record_property("core_disk_bytes", found.path.stat().st_blocks * 512)
    record_property("gdb_seconds", round(gdb_s, 2))
    print(f"\ncore {found.path.name}: {found.size} bytes apparent, "
          f"{found.path.stat().st_blocks * 512} on disk; find {find_s:.2f} s; gdb {gdb_s:.2f} s")

    assert f"Program terminated with signal {signal.Signals(sig).name}" in bt, bt
    assert debug.CRASHING_THREAD_MARKER in bt and "Thread 1 " in bt, bt
    frames = debug.crashing_thread_frames(bt)
    assert frames, bt
    assert any(("poll" in f) or f in LIBC_FRAMES or "main" in f for f in frames), frames

    stderr = (run_dir / "stderr.log").read_text()
    out = classify(rc, stderr, core=found.path, backtrace=bt, artifact_dir=run_dir)
    assert out.kind is OutcomeKind.CRASH
    assert out.signal_name == signal.Signals(sig).name
    assert out.signature.startswith(f"crash {out.signal_name}"), out.signature
    assert out.core == found.path
    assert out.top_frames and not (set(out.top_frames) & LIBC_FRAMES), out.top_frames
    msg = out.failure_message()
    assert msg.startswith(out.signature + "\n") and f"artifacts: {run_dir}" in msg
    print(out.signature)


def test_no_core_without_limit(started, tmp_path):
    """Without the preexec (ulimit -c 0 here) there is no core, and we say why, fast."""
    run_dir = started.run_dir()
    stderr = open(run_dir / "stderr.log", "wb")
    p = subprocess.Popen(qemu_argv(run_dir), cwd=run_dir, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                         preexec_fn=lambda: __import__("resource").setrlimit(
                             __import__("resource").RLIMIT_CORE, (0, 0)))
    stderr.close()
    started.procs.append(p)
    wait_ready(p, run_dir)
    os.kill(p.pid, signal.SIGABRT)
    assert p.wait(timeout=30) == -signal.SIGABRT
    t = time.monotonic()
    found = debug.search_core(run_dir, p.pid, QEMU, since=time.time() - 30)
    assert found.path is None
    assert "core_pattern" in found.note
    assert time.monotonic() - t < 3


def test_backtrace_of_stopped_pid_keeps_it(started):
    run_dir = started.run_dir()
    p, _ = started.qemu(run_dir)
    os.kill(p.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while _state(p.pid) != "T" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _state(p.pid) == "T"

    t = time.monotonic()
    bt = debug.backtrace_of_pid(p.pid, timeout=60)
    print(f"\ngdb -p: {time.monotonic() - t:.2f} s")
    threads = debug.parse_gdb_threads(bt)
    assert len(threads) >= 2, bt
    assert all(frames for frames in threads.values()), bt
    assert "detached" in bt
    # still there, still stopped
    assert p.poll() is None
    assert _state(p.pid) == "T"

    out = classify(None, "", backtrace=bt, hang="test deadline (stopped on purpose)", artifact_dir=run_dir)
    assert out.kind is OutcomeKind.HANG
    assert out.signature == "hang: test deadline (stopped on purpose)"
    assert "thread apply all bt" not in out.failure_message()

    os.kill(p.pid, signal.SIGCONT)
    os.kill(p.pid, signal.SIGKILL)
    assert p.wait(timeout=10) == -signal.SIGKILL


def test_pdeathsig_kills_qemu_when_parent_dies(started):
    """The intermediate parent exits; PR_SET_PDEATHSIG(SIGKILL) takes QEMU with it.

    A supervisor process (child subreaper) runs the intermediate parent, so the
    orphaned QEMU is re-parented to it and reaped there, not left to PID 1.
    """
    run_dir = started.run_dir()
    parent = (
        "import subprocess, sys, time\n"
        "from harness.qemu import debug\n"
        f"argv = {qemu_argv(run_dir)!r}\n"
        "p = subprocess.Popen(argv, cwd=sys.argv[1], stdin=subprocess.DEVNULL,"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,"
        " start_new_session=True, preexec_fn=debug.qemu_preexec())\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(0.5)\n"
    )
    supervisor = (
        "import ctypes, os, signal, subprocess, sys, time\n"
        "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER\n"
        "r = subprocess.run([sys.executable, '-c', sys.argv[1], sys.argv[2]], capture_output=True,"
        " text=True, timeout=60)\n"
        "pid = int(r.stdout.split()[0])\n"
        "deadline = time.monotonic() + 5\n"
        "while time.monotonic() < deadline:\n"
        "    done, status = os.waitpid(pid, os.WNOHANG)\n"
        "    if done:\n"
        "        print(pid, 'dead', os.waitstatus_to_exitcode(status)); sys.exit(0)\n"
        "    time.sleep(0.05)\n"
        "os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)\n"
        "print(pid, 'survived'); sys.exit(1)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    r = subprocess.run([sys.executable, "-c", supervisor, parent, str(run_dir)], capture_output=True,
                       text=True, timeout=90, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    pid, verdict, code = r.stdout.split()
    assert verdict == "dead" and int(code) == -signal.SIGKILL, r.stdout
