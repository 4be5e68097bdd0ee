"""/migration/cross-version/...: A -> B -> A -> B with the binaries swapping sides."""
FAMILIES = ("cross-version",)


def test_scenario(scenario, run_catalog_scenario):
    run_catalog_scenario()
