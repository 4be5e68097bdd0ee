"""JUnit XML from hammered runs under xdist: path-style ids, one value per property.

Fixed for this: the catalog's ids put the scenario path first (the hammer copy is a
suffix: test_scenario[/migration/precopy/tcp/plain-h1]); the artifacts property is an
item property (junitxml writes only those), set for every run and dropped when the
artifacts are discarded; malloc_perturb and artifacts are replaced, not appended, each
--hammer-time round.
"""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.qemu
ROOT = Path(__file__).resolve().parents[2]
INNER = Path(__file__).parent / "inner" / "inner_hammer.py"


def run_pytest(tmp_path, *args):
    env = dict(os.environ, COLUMNS="300")
    env.pop("PYTEST_XDIST_WORKER", None)
    cp = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--accel", "tcg",
                         "--artifacts", str(tmp_path / "art"), "--junitxml", str(tmp_path / "j.xml"),
                         *args], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    return cp, ET.parse(tmp_path / "j.xml").getroot()


def props(case) -> list[tuple[str, str]]:
    return [(p.get("name"), p.get("value")) for p in case.iter("property")]


def test_catalog_ids_stay_path_style_with_hammer_copies_on_two_workers(tmp_path):
    cp, xml = run_pytest(tmp_path, "tests/migration/test_precopy.py", "-k", "tcp/plain-h",
                         "--hammer", "2", "-n", "2", "--keep-artifacts")
    assert cp.returncode == 0, cp.stdout[-3000:]
    cases = list(xml.iter("testcase"))
    assert sorted(c.get("name") for c in cases) == [
        "test_scenario[/migration/precopy/tcp/plain-h0]",
        "test_scenario[/migration/precopy/tcp/plain-h1]"]
    arts = set()
    for c in cases:
        names = [k for k, _ in props(c)]
        assert sorted(names) == ["artifacts", "malloc_perturb"], props(c)
        art = Path(dict(props(c))["artifacts"])
        assert (art / "metrics.json").exists()  # kept: the report links to it
        arts.add(art)
    assert len(arts) == 2


def test_hammer_time_rounds_each_carry_their_own_properties(tmp_path):
    cp, xml = run_pytest(tmp_path, str(INNER), "-o", "python_files=inner_*.py", "-k", "passes",
                         "--hammer-time", "3", "-n", "2")
    assert cp.returncode == 0, cp.stdout[-3000:]
    cases = list(xml.iter("testcase"))
    assert len(cases) >= 2
    for c in cases:
        # one malloc_perturb each round; no artifacts (passing, discarded)
        assert [k for k, _ in props(c)] == ["malloc_perturb"], props(c)
