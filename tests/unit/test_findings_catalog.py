"""Findings catalog and version differential: Wilson intervals, entries as data, and the
regression test's strict-xfail / XPASS-alarm semantics (run against the stub QEMU)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.report import findings
from harness.report.differential import Differential, Row, attempts_for, wilson

ROOT = Path(__file__).resolve().parents[2]
STUB = Path(__file__).parent / "stubs" / "qemu-system-x86_64"


def test_wilson_interval_known_values():
    lo, hi = wilson(0, 200)
    assert lo == 0.0 and hi == pytest.approx(0.0188, abs=1e-4)
    lo, hi = wilson(110, 200)
    assert (lo, hi) == (pytest.approx(0.4808, abs=1e-4), pytest.approx(0.6173, abs=1e-4))
    assert wilson(5, 5)[1] == 1.0 and wilson(0, 0) == (0.0, 1.0)


def test_attempts_for_a_1_percent_miss():
    assert attempts_for(0.5) == 10          # 0.5^7 < 1%, floor of 10
    assert attempts_for(0.05) == 90         # 0.95^90 = 0.0099
    assert attempts_for(0.0) == 1000


def diff(tmp_path: Path, rows) -> Differential:
    script = tmp_path / "repro.py"
    script.write_text('"""x\n\nQEMU versions tried: 10.0.2: 1/2\n"""\n')
    return Differential(script=str(script), rows=tuple(rows), attempts=200, seconds=60)


def test_table_and_verdicts(tmp_path):
    d = diff(tmp_path, [Row("10.0.2", "/a", 80, 200, 1, "crash SIGABRT: f", seconds=20),
                        Row("11.1.3", "/b", 0, 200, 0, seconds=20),
                        Row("9.9.9", "/c", 0, 0, 125),
                        Row("?", "/d", 0, 0, 1, error="last line is not RESULT"),
                        Row("10.0.2", "/asan", 3, 10, 1, "crash ASan heap-use-after-free: in f <- g")])
    t = d.table()
    assert t.endswith("other faces of it:\n  10.0.2 (/asan): crash ASan heap-use-after-free: in f <- g")
    assert "signature: crash SIGABRT: f" in t
    assert "10.0.2   80/200         40.0%  [33.5%, 46.9%]  affected" in t
    assert "not seen" in t and "skip" in t and "error: last line is not RESULT" in t
    assert d.affected == ("10.0.2", "10.0.2") and d.unaffected == ("11.1.3",)
    js = d.to_dict()
    assert js["rows"][0]["ci95"] == [0.3346, 0.4692] and js["rows"][2]["verdict"] == "skip"


def test_catalog_entry_is_data_and_rewrites_the_versions_line(tmp_path):
    d = diff(tmp_path, [Row("10.0.2", "/a", 80, 200, 1, "crash SIGABRT: f", seconds=20),
                        Row("11.1.3", "/b", 0, 200, 0, seconds=20)])
    cat = tmp_path / "findings"
    entry = findings.write_entry(d, "my-bug", cat)
    f = findings.load(entry)
    assert f.script == (cat / "my-bug.py").resolve() and f.script.exists()
    assert f.signature == "crash SIGABRT: f" and f.affected == ("10.0.2",) and f.unaffected == ("11.1.3",)
    assert f.attempts == attempts_for(wilson(80, 200)[0]) and f.seconds >= 30
    assert f.expect_hit("10.0.2") and f.expect_hit("12.0.0") and not f.expect_hit("11.1.3")
    assert "QEMU versions tried: 10.0.2: 80/200, 11.1.3: 0/200" in f.script.read_text()
    with pytest.raises(findings.CatalogError):
        findings.write_entry(diff(tmp_path, [Row("11.1.3", "/b", 0, 200, 0)]), "never-hit", cat)
    with pytest.raises(findings.CatalogError):
        findings.write_entry(d, "Bad Name", cat)
    (cat / "broken.json").write_text("{}")
    with pytest.raises(findings.CatalogError, match="broken.json"):
        findings.load_all(cat)


def test_repository_catalog_loads():
    entries = findings.load_all()
    assert entries, "findings/ has no catalog entry"
    for f in entries:
        assert f.script.is_file() and f.affected and f.attempts >= 10


@pytest.mark.parametrize("mode,want", [("crash", "1 xfailed"), ("clean", "XPASS(strict)")])
def test_finding_is_strict_xfail_and_a_fixed_build_alarms(tmp_path, mode, want):
    """The stub QEMU (version 99.0.0, never measured) is assumed affected: a crash is
    the expected failure, a clean run is an XPASS alarm."""
    run_root = tempfile.mkdtemp(prefix="qmh-f-", dir="/tmp")  # short: AF_UNIX path limit
    env = dict(os.environ, STUB_MODE=mode, HARNESS_RUN_ROOT=run_root)
    try:
        cp = subprocess.run([sys.executable, "-m", "pytest", "tests/migration/test_findings.py", "-q", "-rxX",
                             "-p", "no:cacheprovider", "-k", "shutdown-query-migrate", "--qemu", str(STUB),
                             "--accel", "tcg", "--artifacts", str(tmp_path / "art")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(run_root, ignore_errors=True)
    assert want in cp.stdout, cp.stdout[-2000:]
    assert cp.returncode == (0 if mode == "crash" else 1)
