"""COLO fault tolerance, the full COLO-FT setup (qtest /migration/colo/...).

On QEMU < 10.2 the primary never enters 'colo' (its migration ends
'completed'): fixed upstream by 0b5bf4ea76. Those runs are strict expected
failures that only accept exactly that failure (KnownBug.signature).
"""
from harness.migration.flows.colo import NEVER_ENTERED
from harness.migration.options import ColoAt, ColoOptions, ColoPeer, ColoSide
from harness.migration.requirements import Command, MinVersion, ObjectType
from harness.migration.scenario import Flow, KnownBug, Scenario

SMOKE = frozenset({"smoke", "full"})
FULL = frozenset({"full"})
NEEDS = (Command("x-colo-lost-heartbeat"), ObjectType("colo-compare"),
         ObjectType("filter-rewriter"))
COLO_NEVER_ENTERED = KnownBug(
    url="https://gitlab.com/qemu-project/qemu/-/commit/0b5bf4ea76",
    summary="COLO: the primary's migration ends 'completed' and never enters 'colo'",
    fixed_in=(10, 2, 0), signature=NEVER_ENTERED)
# COLO with multifd came with the same rework (qtest /migration/colo/multifd/...).
MULTIFD = NEEDS + (MinVersion((10, 2, 0)),)


def colo(path: str, failover: ColoSide, at: ColoAt = ColoAt.IDLE, peer: ColoPeer = ColoPeer.ALIVE,
         tiers=FULL, caps=None, requires=NEEDS, bug=COLO_NEVER_ENTERED) -> Scenario:
    return Scenario(path, flow=Flow.COLO, tiers=tiers, caps=caps or {}, requires=requires,
                    known_bug=bug, options=ColoOptions(failover=failover, at=at, peer=peer),
                    timeout=120.0)


SCENARIOS = (
    colo("/migration/colo/plain/primary_failover", ColoSide.PRIMARY, tiers=SMOKE),
    colo("/migration/colo/plain/secondary_failover", ColoSide.SECONDARY),
    colo("/migration/colo/plain/primary_failover_checkpoint", ColoSide.PRIMARY,
         at=ColoAt.CHECKPOINT),
    colo("/migration/colo/plain/secondary_failover_checkpoint", ColoSide.SECONDARY,
         at=ColoAt.CHECKPOINT),
    colo("/migration/colo/plain/primary_failover/peer-killed", ColoSide.PRIMARY,
         peer=ColoPeer.KILLED),
    colo("/migration/colo/plain/secondary_failover/peer-killed", ColoSide.SECONDARY,
         peer=ColoPeer.KILLED),
    colo("/migration/colo/multifd/primary_failover", ColoSide.PRIMARY, caps={"multifd": True},
         requires=MULTIFD),
    colo("/migration/colo/multifd/secondary_failover", ColoSide.SECONDARY, caps={"multifd": True},
         requires=MULTIFD),
)
