"""Plain precopy over the socket transports."""
from harness.migration.scenario import Scenario
from harness.migration.transports import Transport

SMOKE = frozenset({"smoke", "full"})

SCENARIOS = (
    Scenario("/migration/precopy/tcp/plain", transport=Transport.TCP, tiers=SMOKE),
    Scenario("/migration/precopy/unix/plain", transport=Transport.UNIX, tiers=SMOKE),
)
