"""/migration/multifd/...: see harness/migration/families/multifd.py."""
FAMILIES = ("multifd",)


def test_scenario(scenario, run_catalog_scenario):
    run_catalog_scenario()
