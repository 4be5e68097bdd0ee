"""The remote supervisor run locally over pipes (what an SSH exec channel gives it)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.hosts import supervisor

SRC = Path(supervisor.__file__).read_text()


def start(tmp_path, argv, env=None):
    p = subprocess.Popen([sys.executable, "-c", SRC], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    spec = {"argv": argv, "cwd": str(tmp_path), "env": env or {}, "stdout": str(tmp_path / "out.log")}
    p.stdin.write((json.dumps(spec) + "\n").encode())
    p.stdin.flush()
    return p


def until_exit(p) -> list[dict]:
    msgs = []
    while not msgs or "exit" not in msgs[-1]:
        msgs.append(json.loads(p.stdout.readline()))
    return msgs


def test_reports_pid_stderr_in_order_then_exit_status(tmp_path):
    p = start(tmp_path, ["sh", "-c", "echo to-stdout; echo \"$GREETING\" >&2; exit 3"],
              env={"GREETING": "hello from stderr"})
    msgs = until_exit(p)
    assert "pid" in msgs[0] and msgs[-1] == {"exit": 3, "core_dumped": False}
    assert "".join(m.get("err", "") for m in msgs) == "hello from stderr\n"
    assert (tmp_path / "out.log").read_text() == "to-stdout\n"
    p.stdin.close()
    p.wait(10)


def test_exit_status_signal_and_core_flag(tmp_path):
    p = start(tmp_path, ["sh", "-c", "echo oops >&2; kill -SEGV $$"])
    rest = until_exit(p)
    assert "".join(m.get("err", "") for m in rest) == "oops\n"
    assert rest[-1]["exit"] == -signal.SIGSEGV and rest[0]["pid"] > 0
    p.stdin.close()
    p.wait(10)
    assert (tmp_path / "out.log").exists()


def test_signals_are_delivered_through_stdin(tmp_path):
    p = start(tmp_path, ["sleep", "60"])
    json.loads(p.stdout.readline())
    p.stdin.write(b'{"signal": 15}\n')
    p.stdin.flush()
    msg = json.loads(p.stdout.readline())
    assert msg["exit"] == -signal.SIGTERM


def test_session_drop_kills_the_process_group(tmp_path):
    """stdin EOF = the SSH session is gone: the child and its own children die."""
    p = start(tmp_path, ["sh", "-c", "sleep 60 & echo $! > child.pid; wait"])
    pid = json.loads(p.stdout.readline())["pid"]
    deadline = time.monotonic() + 5
    while not (tmp_path / "child.pid").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    grandchild = int((tmp_path / "child.pid").read_text())
    p.stdin.close()
    p.wait(10)
    for q in (pid, grandchild):
        deadline = time.monotonic() + 5
        while Path(f"/proc/{q}").exists() and "Z" not in Path(f"/proc/{q}/stat").read_text().split()[2]:
            assert time.monotonic() < deadline, f"pid {q} survived the session"
            time.sleep(0.02)


def test_exec_failure_is_reported_as_127(tmp_path):
    p = start(tmp_path, ["/nonexistent/qemu"])
    msgs = until_exit(p)
    assert msgs[-1]["exit"] == 127
    assert "cannot start /nonexistent/qemu" in "".join(m.get("err", "") for m in msgs)
    p.stdin.close()
    p.wait(10)


def test_guard_undoes_what_is_still_recorded_when_the_session_drops(tmp_path):
    from harness.faults.guard import local_guard
    g = local_guard(sys.executable, SRC)
    done, kept = tmp_path / "undone", tmp_path / "forgotten"
    g.record("filter:mig0", [["sh", "-c", f"echo 1 >> {done}"], ["sh", "-c", f"echo 2 >> {done}"]])
    g.record("link:mig0", [["touch", str(kept)]])
    g.forget("link:mig0")               # the controller undid this one itself
    g.close()                           # the connection drops
    assert done.read_text() == "1\n2\n"  # in order, once
    assert not kept.exists()


def test_watchdog_removes_the_run_dir_when_the_session_drops(tmp_path):
    run_dir = tmp_path / "qmh-vm-1234"
    run_dir.mkdir()
    p = start(run_dir, ["sleep", "60"])
    assert "pid" in json.loads(p.stdout.readline())
    p.stdin.close()
    p.wait(20)
    assert not run_dir.exists()
