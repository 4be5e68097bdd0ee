"""/migration/cpr/...: cpr-reboot and cpr-transfer (+defer), and their refusals."""
FAMILIES = ("cpr",)


def test_scenario(scenario, run_catalog_scenario):
    run_catalog_scenario()
