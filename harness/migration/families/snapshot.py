"""/migration/snapshot/background/...: background snapshots (the guest keeps running
while RAM as of the start is saved through userfaultfd write-protection)."""
from harness.migration.requirements import Capability, Userfaultfd
from harness.migration.scenario import Expect, Flow, Result, Scenario
from harness.migration.transports import Transport
from harness.qemu.spec import GuestKind

SMOKE = frozenset({"smoke", "full"})
REQ = (Capability("background-snapshot"), Userfaultfd())
# ~100 MiB of boot-sector pages at 100 MB/s: a snapshot of about a second, long enough
# to see the guest make passes while it runs.
STRETCH = {"max-bandwidth": 100_000_000}

SCENARIOS = (
    Scenario("/migration/snapshot/background/file", flow=Flow.BACKGROUND_SNAPSHOT,
             transport=Transport.FILE, params=STRETCH, requires=REQ, tiers=SMOKE,
             note="snapshot to a file while the guest runs, then load it into a fresh QEMU"),
    Scenario("/migration/snapshot/background/tcp", flow=Flow.BACKGROUND_SNAPSHOT,
             transport=Transport.TCP, params=STRETCH, requires=REQ,
             note="the snapshot stream straight into a listening destination"),
    Scenario("/migration/snapshot/background/linux", flow=Flow.BACKGROUND_SNAPSHOT,
             transport=Transport.FILE, guest=GuestKind.LINUX, memory_mib=512, requires=REQ,
             timeout=180.0,
             note="the self-verifying workload keeps writing during the snapshot; the loaded "
                  "image must verify (every page of one consistent generation)"),
    Scenario("/migration/snapshot/background/multifd-refused", flow=Flow.BACKGROUND_SNAPSHOT,
             transport=Transport.FILE, caps={"multifd": True}, requires=REQ,
             expect=Expect(Result.REFUSED, error_class="GenericError",
                           error_match="Background-snapshot is not compatible with multifd"),
             note="QEMU refuses capabilities that cannot work with write-protect tracking"),
)
