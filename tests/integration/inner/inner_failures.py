"""Run by test_harness_failures.py in a subprocess pytest: each test here is
meant to FAIL in a specific way, so the outer test can read what a user sees."""
import os
import signal
import time

from harness.migration import tuning
from harness.migration.states import wait_status
from harness.migration.transports import Transport, start_incoming


def _migrating(pair):
    """Start a non-converging migration and return once it is active."""
    pair.wait_guest_ready()
    uri = start_incoming(Transport.TCP, pair.dst)
    tuning.ensure_non_converge(pair.src)
    pair.src.cmd("migrate", {"uri": uri})
    deadline = time.monotonic() + 20
    while pair.src.cmd("query-migrate")["status"] != "active":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_sigabrt_source_mid_migration(migration_pair):
    _migrating(migration_pair)
    os.kill(migration_pair.src.pid, signal.SIGABRT)
    migration_pair.src.cmd("query-migrate")  # the dead monitor surfaces the crash


def test_sigsegv_destination(migration_pair):
    _migrating(migration_pair)
    os.kill(migration_pair.dst.pid, signal.SIGSEGV)
    time.sleep(0.5)
    wait_status(migration_pair.dst, {"completed"}, timeout=10)


def test_sigstop_hang(machine_factory):
    m = machine_factory("stuck")
    os.kill(m.pid, signal.SIGSTOP)
    m.cmd("query-status", timeout=2)


def test_plain_assertion_failure_keeps_artifacts(migration_pair):
    migration_pair.wait_guest_ready()
    assert migration_pair.src.status() == "nonsense"
