"""/migration/snapshot/...: see harness/migration/families/snapshot.py."""
FAMILIES = ("snapshot",)


def test_scenario(scenario, run_catalog_scenario):
    run_catalog_scenario()
