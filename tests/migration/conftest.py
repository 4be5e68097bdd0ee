"""Catalog plumbing: parametrize by scenario (path ids, tier markers), skip on unmet
preconditions with the precise reason, strict xfail on known QEMU bugs.

Each test_<family>.py names its FAMILIES; the scenarios come from
harness.migration.catalog.
"""
import pytest

from harness.migration import catalog, requirements
from harness.migration.runner import run_scenario
from harness.migration.scenario import KnownBugHit
from harness.pytest_plugin import side_binaries


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc):
    # tryfirst: the scenario's path comes first in the test id, ahead of any hammer
    # copy suffix ("test_scenario[/migration/precopy/tcp/plain-h1]").
    if "scenario" not in metafunc.fixturenames:
        return
    fams = getattr(metafunc.module, "FAMILIES", None)
    params = []
    for s in catalog.select(families_=fams):
        marks = [getattr(pytest.mark, t) for t in sorted(s.tiers)]
        if s.expect.error_path_only:
            marks.append(pytest.mark.error_path_only)
        params.append(pytest.param(s, id=s.path, marks=marks))
    metafunc.parametrize("scenario", params)


@pytest.fixture
def scenario_env(harness_config, qemu_accel, harness_run, harness_fleet) -> requirements.Env:
    src, dst = side_binaries(harness_config, harness_run)
    p = harness_run.placement
    remote = harness_fleet is not None
    facts = tuple(harness_fleet.facts(h) for h in dict.fromkeys((p.src, p.dst))) if remote else ()
    return requirements.Env(src_binary=src.path, dst_binary=dst.path, accel=qemu_accel,
                            src_version=src.version_tuple, dst_version=dst.version_tuple,
                            src_host=p.src if remote else None,
                            dst_host=p.dst if remote else None, facts=facts)


@pytest.fixture
def run_catalog_scenario(request, scenario, scenario_env, harness_run, base_spec, harness_config):
    """Skip (with reason) or xfail (strict, with bug URL) as declared, then run it."""
    if scenario_env.src_host is not None and scenario.local_only:
        pytest.skip(f"{scenario.path}: local only with --inventory: {scenario.local_only}")
    reason = requirements.unmet(scenario.requires, scenario_env)
    if reason:
        pytest.skip(f"{scenario.path}: {reason}")
    bug = scenario.known_bug
    if bug is not None and not bug.affects(scenario_env.src_version):
        bug = None
    if bug is not None:
        harness_run.known_bugs = (bug,)   # its hits are triaged as known
        # With a signature only that failure is the expected one; anything else fails.
        request.applymarker(pytest.mark.xfail(reason=f"{bug.summary} ({bug.url})", strict=True,
                                              raises=KnownBugHit if bug.signature else None))

    def run():
        try:
            return run_scenario(scenario, harness_run, base_spec, harness_config,
                                scenario_env.src_binary, scenario_env.dst_binary)
        except Exception as exc:
            if bug is not None and bug.matches(str(exc)):
                raise KnownBugHit(f"known bug {bug.url}: {exc}") from exc
            raise
    return run
