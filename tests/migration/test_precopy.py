"""/migration/precopy/...: see harness/migration/families/precopy.py."""
FAMILIES = ("precopy",)


def test_scenario(scenario, run_catalog_scenario):
    run_catalog_scenario()
