"""CPR modes: cpr-reboot and cpr-transfer (qtest /migration/mode/reboot, /migration/mode/transfer[/defer]).

See harness/migration/flows/cpr.py for the sequences and proofs.
"""
from harness.migration.options import CprRebootOptions, CprTransferOptions
from harness.migration.requirements import MinVersion
from harness.migration.scenario import Expect, Flow, Result, Scenario

SMOKE = frozenset({"smoke", "full"})
FULL = frozenset({"full"})
CPR_TRANSFER = (MinVersion((10, 0, 0)),)   # cpr-transfer and the cpr channel arrived in 10.0
CPR_REBOOT = (MinVersion((8, 2, 0)),)      # the 'mode' parameter arrived in 8.2

SCENARIOS = (
    Scenario("/migration/cpr/reboot", flow=Flow.CPR_REBOOT, tiers=SMOKE, requires=CPR_REBOOT,
             memory_mib=128,
             options=CprRebootOptions(shared_ram=True),
             note="guest RAM in a share=on file, x-ignore-shared: RAM stays in place"),
    Scenario("/migration/cpr/reboot/copy-ram", flow=Flow.CPR_REBOOT, requires=CPR_REBOOT,
             options=CprRebootOptions(shared_ram=False), note="private RAM: copied into the state file"),
    Scenario("/migration/cpr/reboot/postcopy/refused", flow=Flow.CPR_REBOOT, requires=CPR_REBOOT,
             caps={"postcopy-ram": True}, options=CprRebootOptions(shared_ram=False),
             expect=Expect(Result.REFUSED, error_class="GenericError",
                           error_match=r"^Cannot use postcopy with CPR")),
    Scenario("/migration/cpr/transfer", flow=Flow.CPR_TRANSFER, requires=CPR_TRANSFER),
    Scenario("/migration/cpr/transfer/defer", flow=Flow.CPR_TRANSFER, requires=CPR_TRANSFER,
             options=CprTransferOptions(defer=True)),
    Scenario("/migration/cpr/transfer/private-ram/refused", flow=Flow.CPR_TRANSFER,
             requires=CPR_TRANSFER, options=CprTransferOptions(private_ram=True),
             expect=Expect(Result.REFUSED, error_class="GenericError",
                           error_match=r"is not compatible with CPR\. share=on is required")),
)
