"""QEMU bugs the race recipes are known to hit, matched by failure signature.

A recipe hitting one of these is a strict expected failure carrying the
reference; any other signature is a new finding and fails the test.
"""
from __future__ import annotations

from harness.migration.scenario import KnownBug


class KnownBugReproduced(Exception):
    """A test hit a known QEMU bug: its expected failure. The message names the bug,
    and the pytest plugin shows it as the xfail reason."""

# The seed case. The migration object is gone (migration_shutdown) when
# monitor_cleanup() dispatches still-queued QMP commands; query-migrate reads
# freed memory in migrate_mode(). Still reproduces on Debian's 11.1.3.
SHUTDOWN_QUERY_MIGRATE = KnownBug(
    url="https://lore.kernel.org/qemu-devel/?q=migrate_mode+MIG_MODE__MAX+monitor_cleanup",
    summary="query-migrate dispatched by monitor_cleanup() after migration_shutdown(): "
            "migrate_mode assertion (use after free of the migration object)",
    signature=r"migrate_mode: Assertion 'mode >= 0 && mode < MIG_MODE__MAX' failed")

# Same root cause, other queries or a different use of the freed object
# (found by this harness while hammering the seed recipe).
SHUTDOWN_QUERY_OTHER = KnownBug(
    url="https://lore.kernel.org/qemu-devel/?q=migrate_mode+MIG_MODE__MAX+monitor_cleanup",
    summary="migration queries dispatched by monitor_cleanup() after migration_shutdown() "
            "read the freed migration object (SIGSEGV variants of the seed bug)",
    # An ASan build names the use after free itself: "crash ASan heap-use-after-free: in ..."
    signature=r"crash (SIG(SEGV|ABRT|BUS)|ASan [\w -]+?): .*(qmp_query_migrate|fill_source_migration_info|migrate_)")

# Found by this harness: with an OOB-capable monitor, its I/O thread's JSON
# parser wakes the QMP dispatcher coroutine while monitor_cleanup() tears it
# down (main thread joins the monitor iothread). Reproducer in the note.
SHUTDOWN_OOB_DISPATCHER_WAKE = KnownBug(
    url="https://lore.kernel.org/qemu-devel/?q=monitor_cleanup+aio_co_wake+qmp_dispatcher_co",
    summary="monitor I/O thread wakes the QMP dispatcher coroutine during monitor_cleanup(): "
            "SIGSEGV in aio_co_wake <- json_message_process_token",
    signature=r"crash (SIGSEGV|ASan SEGV on unknown address): in aio_co_wake")

SHUTDOWN_FAMILY = (SHUTDOWN_QUERY_MIGRATE, SHUTDOWN_QUERY_OTHER, SHUTDOWN_OOB_DISPATCHER_WAKE)


def match(signature: str, bugs=SHUTDOWN_FAMILY) -> KnownBug | None:
    for b in bugs:
        if b.matches(signature):
            return b
    return None
