"""Interrupting `harness chaos` in each phase leaves nothing running and no run dir.

`--kinds freeze` makes every plan a violation (a frozen QEMU is a hang), so each run
reaches minimisation and standalone verification deterministically."""
import os
import signal
import subprocess
import sys
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.qemu

MARKERS = {"exploring": "chaos seed", "minimising": "    minimising ", "verifying": "    verifying "}


def _ours(root: str) -> list[str]:
    """Processes whose command line names our private run root (QEMUs, scripts)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if root in cmd:
            out.append(f"{pid}: {cmd[:160]}")
    return out


@pytest.fixture
def run_root():
    """A private, short run root (AF_UNIX paths live here), reaped and removed whatever happens."""
    from harness import proctree
    root = Path(tempfile.mkdtemp(prefix="qmh-ci-", dir="/tmp"))
    yield root
    proctree.reap_orphans(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def chaos_procs():
    """Popen objects started by the test: their whole session is killed if the test failed early."""
    procs: list = []
    yield procs
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.parametrize("phase, sig", [
    ("exploring", signal.SIGINT),
    ("exploring", signal.SIGKILL),
    ("minimising", signal.SIGTERM),
    ("verifying", signal.SIGINT),
])
def test_interrupt_in_each_phase_leaves_nothing(phase, sig, tmp_path, run_root, chaos_procs):
    root = run_root
    env = dict(os.environ, HARNESS_RUN_ROOT=str(root), CI="true")
    # Verifying: no minimisation (it costs minutes for hangs on a loaded machine).
    minimise = "0" if phase == "verifying" else "120"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "chaos", "--seconds", "3", "-j", "1",
                             "--kinds", "freeze", "--actions", "12", "--scenario", "/migration/precopy/tcp/plain",
                             "--minimise-seconds", minimise, "--verify-seconds", "120",
                             "--artifacts", str(tmp_path / "art")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    chaos_procs.append(proc)
    lines: list[str] = []
    t = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    t.start()
    deadline = time.monotonic() + 240
    while not any(MARKERS[phase] in ln for ln in lines):
        assert proc.poll() is None, f"chaos ended before {phase}: {''.join(lines)[-2000:]}"
        assert time.monotonic() < deadline, f"never reached {phase}: {''.join(lines)[-2000:]}"
        time.sleep(0.1)
    time.sleep(1.0)                      # well inside the phase
    proc.send_signal(sig)
    try:
        rc = proc.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"chaos did not stop within 90 s of {sig.name}")
    t.join(10)
    err = "".join(lines)
    if sig is not signal.SIGKILL:
        assert rc == 128 + sig, (rc, err[-2000:])
        assert "interrupted by" in err and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    left = []
    for _ in range(50):                 # PDEATHSIG and the workers' own cleanup take a moment
        left = _ours(str(root))
        if not left:
            break
        time.sleep(0.2)
    assert not left, left
    if sig is not signal.SIGKILL:       # a SIGKILLed controller's dirs are reaped by the next run
        assert not list(root.iterdir()), list(root.iterdir())
