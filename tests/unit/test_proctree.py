"""harness.proctree: owner-marked run dirs, orphan reaping, process-group runs, interrupts."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import proctree


def test_run_dir_carries_its_owner_and_is_not_an_orphan_while_we_live(tmp_path):
    d = proctree.new_run_dir(tmp_path, "vm")
    try:
        assert d.name.startswith("qmh-vm-") and (d.stat().st_mode & 0o777) == 0o700
        pid, start = (d / proctree.OWNER_FILE).read_text().split()
        assert int(pid) == os.getpid() and start
        assert proctree.orphan_dirs(tmp_path) == []
    finally:
        proctree.untrack_dir(d)


def test_dirs_of_a_dead_owner_are_reaped_and_others_left_alone(tmp_path):
    # A child makes a run dir and dies by SIGKILL before it can remove it.
    code = textwrap.dedent(f"""
        import os, signal
        from harness import proctree
        proctree.new_run_dir({str(tmp_path)!r}, "dead")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", code], timeout=60)
    dead = [p for p in tmp_path.iterdir() if p.name.startswith("qmh-dead-")]
    assert len(dead) == 1
    alien = tmp_path / "qmh-unmarked"     # no marker: not ours to judge
    alien.mkdir()
    reused = tmp_path / "qmh-reused"      # our PID, but another start time: a reused PID
    reused.mkdir()
    (reused / proctree.OWNER_FILE).write_text(f"{os.getpid()} 1\n")
    assert sorted(proctree.reap_orphans(tmp_path)) == sorted([dead[0], reused])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qmh-unmarked"]


def test_reap_own_kills_groups_and_removes_dirs(tmp_path):
    d = proctree.new_run_dir(tmp_path, "own")
    p = subprocess.Popen(["sleep", "60"], start_new_session=True)
    proctree.track_group(p.pid)
    proctree.reap_own()
    # reap_own waits for its own children: Popen then finds no status to read (returncode 0,
    # long before sleep 60 could end by itself); else it reads the SIGKILL.
    assert p.wait(10) in (-signal.SIGKILL, 0)
    assert not Path(f"/proc/{p.pid}").exists()
    assert not d.exists()


def test_run_group_kills_grandchildren_in_a_new_session_on_timeout(tmp_path):
    # The script starts a "QEMU" (sleep) the way the exported reproducers do: its own
    # session, so killing the group alone would not reach it; PDEATHSIG does.
    pidfile = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import ctypes, subprocess, time, signal
        def die(): ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
        p = subprocess.Popen(["sleep", "60"], start_new_session=True, preexec_fn=die)
        open({str(pidfile)!r}, "w").write(str(p.pid))
        time.sleep(60)
    """)
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        proctree.run_group([sys.executable, "-c", script], timeout=3)
    assert time.monotonic() - t0 < 30
    child = int(pidfile.read_text())
    for _ in range(50):
        if not Path(f"/proc/{child}").exists() or "Z" in _state(child):
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_interruptible_turns_sigterm_into_one_line(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(proctree.Interrupted) as info:
        with proctree.interruptible("hammer shutdown-race", tmp_path):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    exc = info.value
    assert exc.exit_code == 128 + signal.SIGTERM
    assert exc.line() == f"harness: hammer shutdown-race interrupted by SIGTERM; artifacts: {tmp_path}"
    assert signal.getsignal(signal.SIGTERM) is before     # handlers restored


def test_worker_exits_quietly_on_sigint_and_with_its_parent(tmp_path):
    code = textwrap.dedent(f"""
        import os, sys, time
        from harness import proctree
        proctree.become_worker(os.getppid())
        d = proctree.new_run_dir({str(tmp_path)!r}, "w")
        print(d, flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    d = Path(p.stdout.readline().strip())
    assert d.is_dir()
    p.send_signal(signal.SIGINT)
    assert p.wait(30) == 128 + signal.SIGINT
    assert p.stderr.read() == ""          # no KeyboardInterrupt traceback
    assert not d.exists()


def _blocked(pid: int) -> int:
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("SigBlk:"))
    return int(line.split()[1], 16)


def test_a_child_started_under_spawning_gets_sigterm_unblocked(tmp_path):
    """spawning() blocks SIGINT/SIGTERM around Popen + track_group; the child must not
    inherit that (a QEMU ignoring SIGTERM looks like a shutdown hang)."""
    from harness.hosts.local import LocalHost
    proc = LocalHost().spawn(["sleep", "60"], cwd=tmp_path, env={}, stdout=tmp_path / "o",
                             stderr=tmp_path / "e", core_dumps=False)
    try:
        mask = _blocked(proc.pid)
        assert not mask & (1 << (signal.SIGTERM - 1)) and not mask & (1 << (signal.SIGINT - 1)), hex(mask)
    finally:
        proc.kill_group(signal.SIGKILL)
        proc.wait(10)
        proctree.untrack_group(proc.pid)
