"""RDMA (qtest /migration/precopy/rdma/plain[/ipv6]): rdma:HOST:PORT, with rdma-pin-all variants.

Real transfers need an RDMA device (e.g. rdma_rxe on a netdev) and enough
RLIMIT_MEMLOCK; without them they skip with the reason. The no-device
scenarios run anywhere else and show QEMU's own error.
"""
from harness.migration.options import RdmaOptions, RdmaSide
from harness.migration.requirements import Memlock, NoRdmaDevice, RdmaBuiltIn, RdmaDevice
from harness.migration.scenario import Expect, Flow, Result, Scenario

SMOKE = frozenset({"smoke", "full"})
FULL = frozenset({"full"})
MIB = 1 << 20
# Without pin-all QEMU registers chunks as it goes; pin-all pins all guest RAM
# (256 MiB) on both sides, plus QEMU's own buffers.
RDMA = (RdmaBuiltIn(), RdmaDevice(), Memlock(64 * MIB))
RDMA_PIN_ALL = (RdmaBuiltIn(), RdmaDevice(), Memlock(512 * MIB))
NO_DEVICE = (RdmaBuiltIn(), NoRdmaDevice())
NO_RDMA_ERROR = r"RDMA ERROR: could not create (rdma event|CM) channel"

SCENARIOS = (
    Scenario("/migration/rdma/no-device/incoming", flow=Flow.RDMA, tiers=SMOKE,
             requires=NO_DEVICE,
             expect=Expect(Result.REFUSED, error_class="GenericError", error_match=NO_RDMA_ERROR),
             note="migrate-incoming rdma:... without a device: QEMU's error is the refusal"),
    Scenario("/migration/rdma/no-device/outgoing", flow=Flow.RDMA, requires=NO_DEVICE,
             options=RdmaOptions(side=RdmaSide.SOURCE),
             expect=Expect(Result.REFUSED, error_class="GenericError",
                           error_match=r"RDMA ERROR: could not create CM channel")),
    Scenario("/migration/rdma/plain", flow=Flow.RDMA, requires=RDMA),
    Scenario("/migration/rdma/pin-all", flow=Flow.RDMA, caps={"rdma-pin-all": True},
             requires=RDMA_PIN_ALL),
    Scenario("/migration/rdma/pin-all/not-live", flow=Flow.RDMA, caps={"rdma-pin-all": True},
             live=False, requires=RDMA_PIN_ALL),
)
