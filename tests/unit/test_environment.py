"""The recorded environment and the progress phases the report draws."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from harness import environment
from harness.migration.progress import phases_from
from harness.report import html
from harness.report.results import load


def test_build_id_matches_readelf():
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) not installed")
    out = subprocess.run([readelf, "-n", sys.executable], capture_output=True, text=True).stdout
    want = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Build ID" in ln), None)
    assert environment.build_id(sys.executable) == want


def test_build_id_of_a_non_elf_is_none(tmp_path):
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert environment.build_id(str(tmp_path / "script")) is None
    assert environment.build_id(str(tmp_path / "missing")) is None


def test_short_key():
    b = {"version": "10.0.2", "build_id": "0fbbd5ca8d2d", "sha256": "e8f9"}
    assert environment.short_key({"qemu_src": b, "qemu_dst": b}) == "10.0.2 0fbbd5ca"
    assert environment.short_key({"qemu_src": b, "qemu_dst": {"version": "7.2", "sha256": "abcdef0123"}}) \
        == "10.0.2 0fbbd5ca -> 7.2 abcdef01"


def test_phases_carry_the_dirty_rate_each_pass_implies():
    events = [(0.00, "MIGRATION", {"status": "setup"}), (0.01, "MIGRATION_PASS", {"pass": 1}),
              (0.01, "MIGRATION", {"status": "active"}), (0.51, "MIGRATION_PASS", {"pass": 2}),
              (0.80, "MIGRATION", {"status": "completed"})]
    samples = [{"elapsed_s": 0.2, "status": "active", "remaining": 200 << 20},
               {"elapsed_s": 0.5, "status": "active", "remaining": 10 << 20},
               {"elapsed_s": 0.52, "status": "active", "remaining": 60 << 20}]
    ph = phases_from(events, samples)
    assert [p["event"] for p in ph] == ["MIGRATION", "MIGRATION_PASS", "MIGRATION", "MIGRATION_PASS",
                                        "MIGRATION"]
    assert ph[1]["pass"] == 1 and ph[1]["dirtied_bytes_per_s"] == (50 << 20) * 2   # 50 MiB in 0.5 s
    assert "dirtied_bytes_per_s" not in ph[3]          # the last pass: nothing after it


def _env(version="10.0.2"):
    b = {"path": "/usr/bin/qemu-system-x86_64", "version": version, "package": "Debian 1:10.0.2",
         "sha256": "e8f995668153f7c1af18", "build_id": "0fbbd5ca8d2d0a32"}
    return {"qemu_src": b, "qemu_dst": b, "accel": "tcg", "machine_type": "q35", "host": "vm (Linux)",
            "hosts": "local", "seed": 42, "harness_version": "0.2.0", "python": "3.11.7"}


def test_report_environment_table_progress_markers_and_trend_filter(tmp_path):
    def run(name, version, total):
        d = tmp_path / name / "t1"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"environment": _env(version),
                                                     "migration": {"total_time_ms": total}}))
        samples = [{"elapsed_s": 0.02 * k, "status": "active", "mbps": 100.0 * k,
                    "remaining": (100 - k) << 20, "transferred": k << 20} for k in range(12)]
        (d / "progress.json").write_text(json.dumps(samples))
        (d / "phases.json").write_text(json.dumps([
            {"elapsed_s": 0.0, "event": "MIGRATION", "status": "active"},
            {"elapsed_s": 0.1, "event": "MIGRATION_PASS", "pass": 2, "dirtied_bytes_per_s": 1 << 24}]))
        return load(tmp_path / name)
    old, new = run("n1", "10.0.1", 500), run("n2", "10.0.2", 400)
    page = html.render([new], html.ReportOptions(out=tmp_path / "r.html", trend=[old, new]))
    env = page.split("<h2>Environment</h2>", 1)[1].split("<h2>", 1)[0]
    assert "10.0.2 /usr/bin/qemu-system-x86_64" in env and "build-id 0fbbd5ca8d2d0a32" in env
    assert "<td>tcg</td>" in env and "<td>42</td>" in env and "0.2.0 (Python 3.11.7)" in env
    progress = page.split("<h2>Migration progress</h2>", 1)[1].split("<h2>", 1)[0]
    assert 'data-points="12"' in progress and progress.count('class="marker"') == 6   # 2 per chart with data (no CPU here)
    assert "dirtied per pass" in progress and ">pass 2<" in progress
    trend = page.split("<h2>Trend</h2>", 1)[1]
    assert "10.0.1 0fbbd5ca" in trend and "10.0.2 0fbbd5ca" in trend     # runs keyed by build
    assert 'id="tf-all"' in trend and 'class="trend fam-other"' in trend
    assert "#tf-other:checked ~ .trends .trend:not(.fam-other){display:none}" in page
