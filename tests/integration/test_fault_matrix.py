"""Fault matrix: SIGINT, SIGTERM and SIGKILL to the controller and to a worker of
`pytest -n 2`, `harness hammer` and `harness chaos`, while starting and while QEMUs
run; afterwards nothing of the run may be left (harness.leakcheck, scoped to the
run's private root), and an interrupted hammer/chaos says so in one line.

Each case is one short session (a few seconds); new commands join COMMANDS.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import leakcheck

pytestmark = pytest.mark.qemu
ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


@dataclass(frozen=True)
class Command:
    name: str
    argv: tuple[str, ...]       # {art} is replaced by the case's artifacts dir
    worker_mark: str            # in a worker's command line (a child of the controller)
    one_line: bool              # SIGINT/SIGTERM to the controller: one 'interrupted' line


COMMANDS = {
    "pytest": Command("pytest", (PY, "-m", "pytest", str(ROOT / "tests/migration"), "-n", "2",
                                 "--max-worker-restart", "0", "-p", "no:cacheprovider", "--accel", "tcg", "-q",
                                 "--artifacts", "{art}", "-k",
                                 "precopy/tcp/plain or races/shutdown/query-migrate/idle/sigterm"),
                      "exec(eval(sys.stdin.readline()))", False),
    "hammer": Command("hammer", (PY, "-m", "harness.cli", "hammer", "shutdown-race", "--seconds",
                                 "5", "-j", "2", "--accel", "tcg", "--artifacts", "{art}"),
                      "spawn_main", True),
    "chaos": Command("chaos", (PY, "-m", "harness.cli", "chaos", "--seconds", "5", "-j", "2",
                               "--accel", "tcg", "--scenario", "/migration/precopy/tcp/plain",
                               "--minimise-seconds", "0", "--verify-seconds", "0",
                               "--artifacts", "{art}"),
                     "spawn_main", True),
}

# (target, signal, phase): 'starting' = before any QEMU, 'running' = QEMUs up.
CASES = [("controller", signal.SIGINT, "running"), ("controller", signal.SIGTERM, "running"),
         ("controller", signal.SIGKILL, "running"), ("controller", signal.SIGTERM, "starting"),
         ("worker", signal.SIGTERM, "running"), ("worker", signal.SIGKILL, "running")]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _qemu_running(root: Path) -> bool:
    return any(p.is_dir() for p in root.glob("qmh-*"))


@pytest.mark.parametrize("target, sig, phase", CASES,
                         ids=[f"{t}-{s.name}-{p}" for t, s, p in CASES])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_signal_leaves_nothing_behind(command, target, sig, phase, tmp_path):
    cmd = COMMANDS[command]
    root = Path(tempfile.mkdtemp(prefix="qmh-fm-"))       # short: QEMU sockets live here
    art = tmp_path / "art"
    env = dict(os.environ, HARNESS_RUN_ROOT=str(root), COLUMNS="200")
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    start = time.time()
    p = subprocess.Popen([a.replace("{art}", str(art)) for a in cmd.argv], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        if phase == "running":
            while not _qemu_running(root) and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert p.poll() is None, f"{command} ended before any QEMU ran"
        else:
            time.sleep(0.3)
        victim = p.pid
        if target == "worker":
            workers = []
            while not workers and time.monotonic() < deadline:
                workers = [c for c in _children(p.pid) if cmd.worker_mark in _cmdline(c)]
                time.sleep(0.05)
            assert workers, f"no worker of {command} found"
            victim = workers[0]
        os.kill(victim, sig)
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{command} still running 120 s after {sig.name} to its {target}")
        leaks = []
        for _ in range(40):        # exits and removals are asynchronous: settle
            leaks = leakcheck.check(root, since=start)
            if not leaks:
                break
            time.sleep(0.25)
        assert leaks == [], "\n".join(leaks + [f"  holds: {sorted(x.name for x in d.iterdir())}"
                                               for d in root.glob("qmh-*") if d.is_dir()])
        if target == "controller" and sig != signal.SIGKILL:
            assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
            lines = [ln for ln in err.splitlines() if "interrupted by" in ln]
            if cmd.one_line and phase == "running":
                assert len(lines) == 1 and lines[0].startswith("harness: ") \
                    and sig.name in lines[0], err[-3000:]
                assert p.returncode == 128 + sig, (p.returncode, err[-2000:])
            elif cmd.one_line:   # maybe before Python ran our code: then killed silently
                assert len(lines) <= 1 and p.returncode in (128 + sig, -sig), (p.returncode, err)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)
        shutil.rmtree(root, ignore_errors=True)
