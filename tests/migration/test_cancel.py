"""/migration/cancel/...: see harness/migration/families/cancel.py."""
FAMILIES = ("cancel",)


def test_scenario(scenario, run_catalog_scenario):
    run_catalog_scenario()
