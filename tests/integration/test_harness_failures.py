"""What a user sees when QEMU really crashes or hangs, and that nothing leaks.

Runs tests/integration/inner/inner_failures.py in a subprocess pytest with a
private run root, then reads its report and artifacts like a user would.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.qemu

INNER = Path(__file__).parent / "inner" / "inner_failures.py"


@pytest.fixture(scope="module")
def inner_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inner")
    # Short: under xdist tmp paths are too long for QEMU's UNIX sockets (the harness refuses).
    run_root = Path(tempfile.mkdtemp(prefix="qmh-in-"))
    art = tmp / "artifacts"
    env = dict(os.environ, HARNESS_RUN_ROOT=str(run_root), COLUMNS="300")
    env.pop("PYTEST_XDIST_WORKER", None)
    cp = subprocess.run([sys.executable, "-m", "pytest", str(INNER), "-p", "no:cacheprovider",
                         "--artifacts", str(art), "--accel", "tcg", "-q", "-rf",
                         "-o", "python_files=inner_*.py", "--junitxml", str(tmp / "junit.xml")],
                        capture_output=True, text=True, env=env, timeout=600, cwd=tmp)
    yield cp, art, run_root
    shutil.rmtree(run_root, ignore_errors=True)   # empty unless something leaked (a test says so)


def _failure_line(out: str, test: str) -> str:
    for line in out.splitlines():
        if line.startswith("FAILED") and test in line:
            return line
    raise AssertionError(f"no FAILED line for {test} in:\n{out[-3000:]}")


def _artifact_dir(art: Path, test: str) -> Path:
    dirs = [d for d in art.glob(f"*/*{test}*") if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_inner_run_failed_all_four(inner_run):
    cp, _, _ = inner_run
    assert cp.returncode == 1, cp.stdout[-3000:] + cp.stderr[-2000:]
    assert "4 failed" in cp.stdout


def test_sigabrt_is_a_crash_with_core_and_backtrace(inner_run):
    cp, art, _ = inner_run
    line = _failure_line(cp.stdout, "test_sigabrt_source_mid_migration")
    assert "crash SIGABRT" in line
    d = _artifact_dir(art, "test_sigabrt_source_mid_migration") / "source"
    assert not (d / "core").exists()                  # kept gzipped: a light artifact
    with tarfile.open(d / "core.tar.gz") as t:      # sparse-aware: the holes are not stored
        m = t.getmember("core")
        assert m.size > 1 << 20 and t.extractfile(m).read(4) == b"\x7fELF"
    assert json.loads((d / "outcome.json").read_text())["core"] == str(d / "core.tar.gz")
    bt = (d / "backtrace.txt").read_text()
    assert "Thread" in bt and "#0" in bt
    assert (d / "cmdline.txt").read_text().startswith("/")
    assert (d / "qmp.jsonl").read_text().count('"dir": "out"') >= 3


def test_sigsegv_is_a_crash_with_core_and_backtrace(inner_run):
    cp, art, _ = inner_run
    line = _failure_line(cp.stdout, "test_sigsegv_destination")
    assert "crash SIGSEGV" in line
    d = _artifact_dir(art, "test_sigsegv_destination") / "destination"
    assert (d / "core.tar.gz").exists() and "#0" in (d / "backtrace.txt").read_text()


def test_sigstop_is_a_hang_with_state_dump(inner_run):
    cp, art, _ = inner_run
    line = _failure_line(cp.stdout, "test_sigstop_hang")
    assert re.search(r"\bhang\b", line)
    d = _artifact_dir(art, "test_sigstop_hang") / "stuck"
    assert "Thread" in (d / "hang-backtrace.txt").read_text()
    assert "query-status" in (d / "hang.json").read_text()


def test_failure_message_names_artifacts(inner_run):
    cp, art, _ = inner_run
    assert str(art) in cp.stdout
    # a plain assertion failure keeps its artifacts too
    d = _artifact_dir(art, "test_plain_assertion_failure_keeps_artifacts")
    assert (d / "source" / "serial.log").read_bytes().startswith(b"A")


def test_nothing_left_running_or_on_disk(inner_run):
    _, art, run_root = inner_run
    assert list(run_root.iterdir()) == []
    for pidfile in art.glob("*/*/*/pid"):
        pid = int(pidfile.read_text())
        assert not Path(f"/proc/{pid}").exists() or _is_zombie_or_other(pid), pidfile


def _is_zombie_or_other(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"qemu-system" not in cmd
