"""The standalone reproducer ends a QEMU as the engine does (quit, SIGTERM, SIGKILL)
and reports one that outlived quit and SIGTERM with the engine's hang signature."""
import signal
import subprocess
import sys

from harness.runtime import actions as act
from harness.runtime import standalone


class _DeadMonitor:
    def cmd(self, *a, **k):
        raise act.Gone("quit")


def _vm(code: str, tmp_path) -> standalone.Vm:
    vm = object.__new__(standalone.Vm)      # no QEMU: a process standing in for one
    vm.side, vm.dir, vm.err = "dst", str(tmp_path / "d"), str(tmp_path / "err")
    (tmp_path / "d").mkdir()
    (tmp_path / "err").write_text("")
    vm.p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    vm.mon = _DeadMonitor()
    return vm


def test_a_process_that_ignores_quit_and_sigterm_is_stuck(tmp_path, monkeypatch):
    monkeypatch.setattr(standalone, "END_WAIT_S", 0.5)
    vm = _vm("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)", tmp_path)
    rc, _ = vm.end()
    assert vm.stuck and rc == -signal.SIGKILL


def test_a_process_that_ends_on_sigterm_is_not_stuck(tmp_path, monkeypatch):
    monkeypatch.setattr(standalone, "END_WAIT_S", 2.0)
    vm = _vm("import time; time.sleep(60)", tmp_path)
    rc, _ = vm.end()
    assert not vm.stuck and rc == -signal.SIGTERM
