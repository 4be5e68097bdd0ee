"""Postcopy, postcopy-preempt, postcopy recovery (qtest's /migration/postcopy/...).

Recovery breaks the channel three ways (migrate-pause on the source, on the
destination, on both; a userspace proxy in the path cutting every connection)
and runs qtest's double failures; see harness/migration/flows/postcopy.py.
"""
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


def recovery(path: str, tiers=FULL, caps=None, requires=(), **options) -> Scenario:
    return Scenario(path, flow=Flow.POSTCOPY_RECOVERY, caps=caps or {}, tiers=tiers,
                    requires=UFFD + tuple(requires), options=options)


SCENARIOS = (
    Scenario("/migration/postcopy/plain", flow=Flow.POSTCOPY, tiers=SMOKE, requires=UFFD),
    Scenario("/migration/postcopy/preempt/plain", flow=Flow.POSTCOPY, caps=PREEMPT,
             requires=UFFD),
    Scenario("/migration/postcopy/cancel/refused", flow=Flow.POSTCOPY,
             requires=UFFD + (MinVersion(CANCEL_REFUSED),),
             options={"attempt": "migrate_cancel"},
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

    recovery("/migration/postcopy/recovery/plain", **{"break": "pause-source"}),
    recovery("/migration/postcopy/recovery/pause-destination", **{"break": "pause-destination"}),
    recovery("/migration/postcopy/recovery/pause-both", **{"break": "pause-both"}),
    recovery("/migration/postcopy/recovery/proxy-cut", **{"break": "proxy-cut"}),
    recovery("/migration/postcopy/recovery/proxy-cut/slow-link",
             proxy={"delay_ms": 5, "throttle": 25_000_000}, **{"break": "proxy-cut"}),
    recovery("/migration/postcopy/recovery/link-down", requires=(MigrationLink(),),
             **{"break": "link-down"}),
    recovery("/migration/postcopy/recovery/link-reject", requires=(MigrationLink(),),
             **{"break": "link-reject"}),
    recovery("/migration/postcopy/recovery/repeated", cycles=3, **{"break": "proxy-cut"}),
    recovery("/migration/postcopy/recovery/double-failures/handshake",
             requires=(MinVersion(RECOVER_SETUP),), double_failure="handshake",
             **{"break": "pause-source"}),
    recovery("/migration/postcopy/recovery/double-failures/reconnect",
             requires=(MinVersion(RECOVER_SETUP),), double_failure="reconnect",
             **{"break": "pause-source"}),
    recovery("/migration/postcopy/preempt/recovery/plain", caps=PREEMPT,
             **{"break": "pause-source"}),
    recovery("/migration/postcopy/preempt/recovery/proxy-cut", caps=PREEMPT,
             **{"break": "proxy-cut"}),

    Scenario("/migration/postcopy/linux", flow=Flow.POSTCOPY, guest=GuestKind.LINUX,
             tiers=SLOW, requires=UFFD, timeout=240.0),
    Scenario("/migration/postcopy/recovery/linux/proxy-cut", flow=Flow.POSTCOPY_RECOVERY,
             guest=GuestKind.LINUX, tiers=SLOW, requires=UFFD, timeout=240.0,
             options={"break": "proxy-cut", "cycles": 2}),
)
