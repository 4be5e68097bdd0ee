"""/migration/postcopy/...: postcopy, preempt, recovery (pause, proxy cut, double failures)."""
FAMILIES = ("postcopy",)


def test_scenario(scenario, run_catalog_scenario):
    run_catalog_scenario()
