import pytest

from harness.migration import catalog
from harness.migration.runner import flow_drivers
from harness.migration.scenario import Expect, KnownBug, Result, Scenario
from harness.qemu.spec import SpecError


def test_catalog_paths_unique_and_valid():
    scen = catalog.all_scenarios()
    assert len({s.path for s in scen}) == len(scen)
    assert all(s.path.startswith("/migration/") for s in scen)


def test_every_family_has_a_smoke_scenario():
    fams = {s.family for s in catalog.all_scenarios()}
    smoke = {s.family for s in catalog.select("smoke")}
    assert fams == smoke


def test_every_declared_flow_has_a_driver():
    drivers = flow_drivers()
    missing = {s.flow for s in catalog.all_scenarios()} - set(drivers)
    assert not missing


def test_scenario_is_frozen_including_maps():
    s = Scenario("/migration/x/y", caps={"events": True})
    with pytest.raises(Exception):
        s.path = "/migration/z"
    with pytest.raises(TypeError):
        s.caps["events"] = False


@pytest.mark.parametrize("kw, msg", [
    (dict(path="precopy/tcp"), "not a /migration/... path id"),
    (dict(path="/migration/a", tiers={"nightly"}), "tiers ['nightly']"),
    (dict(path="/migration/a", caps={"multifd": "on"}), "capability multifd must be true/false"),
    (dict(path="/migration/a", src_args="-S"), "must be tuples"),
])
def test_scenario_validation_one_line(kw, msg):
    with pytest.raises(SpecError) as ei:
        Scenario(**kw)
    assert msg in str(ei.value) and "\n" not in str(ei.value)


def test_refused_needs_what_to_match():
    with pytest.raises(SpecError):
        Expect(Result.REFUSED)


def test_known_bug_version_window():
    bug = KnownBug("https://example.invalid/1", "x", fixed_in=(10, 2, 0))
    assert bug.affects((10, 0, 2)) and not bug.affects((10, 2, 0)) and not bug.affects((11, 1, 3))
    assert KnownBug("u", "s").affects((99, 0, 0))
