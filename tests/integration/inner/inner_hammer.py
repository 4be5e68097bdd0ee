"""Run by test_pytest_hammer.py: a test whose QEMU really dies of SIGABRT,
and one that passes, to watch --hammer / --hammer-time / --until-crash."""
import os
import signal

from harness.qemu.spec import GuestKind, GuestSpec


def test_passes(machine_factory):
    m = machine_factory("ok", guest=GuestSpec(kind=GuestKind.NONE), machine_type="none",
                        memory_mib=16, paused=True)
    assert m.status() == "prelaunch"


def test_qemu_aborts(machine_factory):
    m = machine_factory("victim", guest=GuestSpec(kind=GuestKind.NONE), machine_type="none",
                        memory_mib=16, paused=True)
    os.kill(m.pid, signal.SIGABRT)
    m.wait_exit(10)
