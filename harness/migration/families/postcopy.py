"""Postcopy, postcopy-preempt, postcopy recovery (qtest's /migration/postcopy/...).

Recovery breaks the channel three ways (migrate-pause on the source, on the
destination, on both; a userspace proxy in the path cutting every connection)
and runs qtest's double failures; see harness/migration/flows/postcopy.py.
"""
from harness.migration.options import (DoubleFailure, PostcopyOptions, ProxyShape,
                                       RecoveryBreak, RecoveryOptions)
from harness.migration.requirements import BelowVersion, MigrationLink, MinVersion, Userfaultfd
from harness.migration.scenario import Expect, Flow, Result, Scenario
from harness.qemu.spec import GuestKind

SMOKE = frozenset({"smoke", "full"})
FULL = frozenset({"full"})
SLOW = frozenset({"slow"})
UFFD = (Userfaultfd(),)
PREEMPT = {"postcopy-preempt": True}
# Prasad Pandit's series lifted the multifd+postcopy refusal in QEMU 10.1
# (qtest /migration/multifd+postcopy/plain); 7.2 accepts the combination
# without any check. The refusal is verified on 10.0 (its exact first release
# is older, unverified here).
MULTIFD_POSTCOPY = (10, 1, 0)
MULTIFD_REFUSED = (10, 0, 0)
# Fabiano Rosas, "migration: Reject qmp_migrate_cancel after postcopy" (10.0).
# Before it the cancel is accepted and the destination cannot be quit.
CANCEL_REFUSED = (10, 0, 0)
# The postcopy-recover-setup state (and qtest's double-failures/reconnect) came in 9.1.
RECOVER_SETUP = (9, 1, 0)


def recovery(path: str, method: RecoveryBreak, tiers=FULL, caps=None, requires=(),
             **options) -> Scenario:
    return Scenario(path, flow=Flow.POSTCOPY_RECOVERY, caps=caps or {}, tiers=tiers,
                    requires=UFFD + tuple(requires),
                    options=RecoveryOptions(method=method, **options))


SCENARIOS = (
    Scenario("/migration/postcopy/plain", flow=Flow.POSTCOPY, tiers=SMOKE, requires=UFFD),
    Scenario("/migration/postcopy/preempt/plain", flow=Flow.POSTCOPY, caps=PREEMPT,
             requires=UFFD),
    Scenario("/migration/postcopy/cancel/refused", flow=Flow.POSTCOPY,
             requires=UFFD + (MinVersion(CANCEL_REFUSED),),
             options=PostcopyOptions(attempt="migrate_cancel"),
             expect=Expect(Result.REFUSED, error_class="GenericError",
                           error_match=r"^Postcopy migration in progress, cannot cancel"),
             note="migrate_cancel in postcopy-active is refused (since 10.0); the migration "
                  "then completes intact"),
    Scenario("/migration/postcopy/multifd/refused", flow=Flow.POSTCOPY,
             caps={"multifd": True},
             requires=UFFD + (MinVersion(MULTIFD_REFUSED),
                              BelowVersion(MULTIFD_POSTCOPY, "multifd+postcopy works there")),
             expect=Expect(Result.REFUSED, error_class="GenericError",
                           error_match=r"^Postcopy is not yet compatible with multifd")),
    Scenario("/migration/postcopy/multifd/plain", flow=Flow.POSTCOPY, caps={"multifd": True},
             requires=UFFD + (MinVersion(MULTIFD_POSTCOPY),)),
    Scenario("/migration/postcopy/preempt/multifd/plain", flow=Flow.POSTCOPY,
             caps={"multifd": True, **PREEMPT}, requires=UFFD + (MinVersion(MULTIFD_POSTCOPY),)),

    recovery("/migration/postcopy/recovery/plain", RecoveryBreak.PAUSE_SOURCE),
    recovery("/migration/postcopy/recovery/pause-destination", RecoveryBreak.PAUSE_DESTINATION),
    recovery("/migration/postcopy/recovery/pause-both", RecoveryBreak.PAUSE_BOTH),
    recovery("/migration/postcopy/recovery/proxy-cut", RecoveryBreak.PROXY_CUT),
    recovery("/migration/postcopy/recovery/proxy-cut/slow-link", RecoveryBreak.PROXY_CUT,
             proxy=ProxyShape(delay_ms=5, throttle=25_000_000)),
    recovery("/migration/postcopy/recovery/link-down", RecoveryBreak.LINK_DOWN,
             requires=(MigrationLink(),)),
    recovery("/migration/postcopy/recovery/link-reject", RecoveryBreak.LINK_REJECT,
             requires=(MigrationLink(),)),
    recovery("/migration/postcopy/recovery/repeated", RecoveryBreak.PROXY_CUT, cycles=3),
    recovery("/migration/postcopy/recovery/double-failures/handshake",
             RecoveryBreak.PAUSE_SOURCE, requires=(MinVersion(RECOVER_SETUP),),
             double_failure=DoubleFailure.HANDSHAKE),
    recovery("/migration/postcopy/recovery/double-failures/reconnect",
             RecoveryBreak.PAUSE_SOURCE, requires=(MinVersion(RECOVER_SETUP),),
             double_failure=DoubleFailure.RECONNECT),
    recovery("/migration/postcopy/preempt/recovery/plain", RecoveryBreak.PAUSE_SOURCE,
             caps=PREEMPT),
    recovery("/migration/postcopy/preempt/recovery/proxy-cut", RecoveryBreak.PROXY_CUT,
             caps=PREEMPT),

    Scenario("/migration/postcopy/linux", flow=Flow.POSTCOPY, guest=GuestKind.LINUX,
             tiers=SLOW, requires=UFFD, timeout=240.0),
    Scenario("/migration/postcopy/recovery/linux/proxy-cut", flow=Flow.POSTCOPY_RECOVERY,
             guest=GuestKind.LINUX, tiers=SLOW, requires=UFFD, timeout=240.0,
             options=RecoveryOptions(method=RecoveryBreak.PROXY_CUT, cycles=2)),
)
