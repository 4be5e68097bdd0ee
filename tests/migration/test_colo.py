"""/migration/colo/...: COLO-FT setup, checkpoints, failover on either side."""
FAMILIES = ("colo",)


def test_scenario(scenario, run_catalog_scenario):
    run_catalog_scenario()
