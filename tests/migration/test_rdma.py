"""/migration/rdma/...: RDMA transfers (need a device) and the no-device error path."""
FAMILIES = ("rdma",)


def test_scenario(scenario, run_catalog_scenario):
    run_catalog_scenario()
