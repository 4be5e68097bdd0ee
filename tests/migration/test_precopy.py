"""/migration/precopy/...: plain precopy over socket transports."""
FAMILIES = ("precopy",)


def test_scenario(scenario, run_catalog_scenario):
    run_catalog_scenario()
