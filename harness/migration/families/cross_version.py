"""Cross-version: the guest hops A -> B -> A -> B between --qemu-src and --qemu-dst.

With one binary it is a same-version round trip; the point is running it with
two (e.g. --qemu-src /opt/qemu-versions/7.2/qemu-system-x86_64, provisioned by
ci/qemu-versions). ci/compat-matrix runs every ordered pair of versions.
"""
from harness.migration.options import CrossVersionMode, PingPongOptions, Prove
from harness.migration.requirements import Userfaultfd
from harness.migration.scenario import Flow, Scenario
from harness.qemu.spec import GuestKind

SMOKE = frozenset({"smoke", "full"})
FULL = frozenset({"full"})
SLOW = frozenset({"slow"})

SCENARIOS = (
    Scenario("/migration/cross-version/ping-pong", flow=Flow.PING_PONG, tiers=SMOKE,
             memory_mib=128,
             options=PingPongOptions(mode=CrossVersionMode.PRECOPY, hops=3, prove=Prove.LAST)),
    Scenario("/migration/cross-version/ping-pong/proof-each-hop", flow=Flow.PING_PONG,
             options=PingPongOptions(mode=CrossVersionMode.PRECOPY, hops=3, prove=Prove.EACH)),
    Scenario("/migration/cross-version/ping-pong/postcopy", flow=Flow.PING_PONG,
             requires=(Userfaultfd(),),
             options=PingPongOptions(mode=CrossVersionMode.POSTCOPY, hops=3)),
    Scenario("/migration/cross-version/ping-pong/linux", flow=Flow.PING_PONG, tiers=SLOW,
             guest=GuestKind.LINUX, timeout=240.0,
             options=PingPongOptions(mode=CrossVersionMode.PRECOPY, hops=3)),
)
