"""Parametrize catalog tests by scenario: path ids, tier markers, strict xfails."""
import pytest

from harness.migration import catalog


def pytest_generate_tests(metafunc):
    if "scenario" not in metafunc.fixturenames:
        return
    params = []
    for s in catalog.select():
        marks = [getattr(pytest.mark, t) for t in sorted(s.tiers)]
        params.append(pytest.param(s, id=s.path, marks=marks))
    metafunc.parametrize("scenario", params)


@pytest.fixture
def known_bug_xfail(request, scenario, harness_config):
    """A scenario hitting a known QEMU bug on this binary is a strict expected failure."""
    from harness.qemu.binary import probe
    bug = scenario.known_bug
    if bug is not None and bug.affects(probe(harness_config.qemu_src).version_tuple):
        request.applymarker(pytest.mark.xfail(reason=f"{bug.summary} ({bug.url})", strict=True))
