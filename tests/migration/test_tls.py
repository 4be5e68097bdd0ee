"""/migration/tls/...: see harness/migration/families/tls.py."""
FAMILIES = ("tls",)


def test_scenario(scenario, run_catalog_scenario):
    run_catalog_scenario()
