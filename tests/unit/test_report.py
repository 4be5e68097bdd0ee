"""harness report: loading result dirs, the SVG plots, the page, the command."""
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import cli
from harness.report import html, svg
from harness.report.results import (ReportError, JUnitCase, load, load_all, parse_junit,
                                    reproducer_path)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">
<testsuite name="pytest" tests="6">
<testcase classname="tests.migration.test_precopy" name="test_scenario[/migration/precopy/tcp/plain-h0]" time="2.852">
  <properties><property name="malloc_perturb" value="105"/><property name="artifacts" value="{art}"/></properties></testcase>
<testcase classname="tests.migration.test_precopy" name="test_scenario[/migration/precopy/unix/plain]" time="2.4">
  <failure message="crash SIGSEGV: ram_save_iterate&#10;artifacts: x">trace</failure></testcase>
<testcase classname="tests.migration.test_races" name="test_shutdown_race[h1-/migration/races/shutdown/query-migrate/idle/sigterm]" time="1.6">
  <skipped type="pytest.xfail" message="crash SIGABRT: migrate_mode (https://bug)"/></testcase>
<testcase classname="tests.migration.test_rdma" name="test_scenario[/migration/rdma/plain]" time="0">
  <skipped type="pytest.skip" message="no RDMA"/></testcase>
<testcase classname="tests.integration.test_progress" name="test_sampler_ends_when_qemu_dies" time="1">
  <failure message="assert 1"/><error message="teardown"/></testcase>
<testcase classname="tests.unit.test_x.TestThing" name="test_it[a-b]" time="x">
  <error message="fixture"/></testcase>
</testsuite></testsuites>
"""


def result_dir(tmp_path: Path) -> Path:
    root = tmp_path / "smoke"
    stamp = root / "20261126-170912-1"
    art = stamp / "tests.migration.test_precopy.py.test_scenario.migration.precopy.tcp.plain-h0"
    art.mkdir(parents=True)
    (art / "metrics.json").write_text(json.dumps({"migration": {"total_time_ms": 466, "downtime_ms": 329}}))
    (art / "progress.json").write_text(json.dumps([
        {"elapsed_s": 0.1, "status": "active", "mbps": 0, "remaining": 1 << 28, "transferred": 1 << 20},
        {"elapsed_s": 0.3, "status": "completed", "mbps": 800.5, "remaining": 0, "transferred": 1 << 27}]))
    # no artifacts property: found by the dir name (with the duplicate-run suffix)
    unix = stamp / "tests.migration.test_precopy.py.test_scenario.migration.precopy.unix.plain-gw1-123"
    unix.mkdir()
    (unix / "outcomes.json").write_text("{}")
    (unix / "metrics.json").write_text(json.dumps({"migration": {"total_time_ms": 250, "downtime_ms": True}}))
    orphan = stamp / "somewhere-else"
    orphan.mkdir()
    (orphan / "metrics.json").write_text(json.dumps({"migration": {"total_time_ms": 10}}))
    (root / "junit.xml").write_text(JUNIT.format(art=art))
    (stamp / "broken.xml").write_text("<testsuites><testsuite><testcase")
    rep = stamp / "reproducers" / "crash-SIGABRT.py"
    rep.parent.mkdir()
    rep.write_text("#\n")
    (stamp / "triage.json").write_text(json.dumps({"attempts": 24, "first_failure_s": 3.3, "signatures": [
        {"signature": "crash SIGABRT: <migrate_mode> & co", "kind": "crash", "count": 14, "rate": 0.583,
         "first_artifacts": str(stamp), "reproducer": f"{rep} (reproduces: 2/10)"}]}))
    return root


def test_junit_statuses_ids_and_families(tmp_path):
    root = result_dir(tmp_path)
    cases = parse_junit(root / "junit.xml")
    got = [(c.scenario, c.family, c.status) for c in cases]
    assert got == [
        ("/migration/precopy/tcp/plain", "precopy", "passed"),
        ("/migration/precopy/unix/plain", "precopy", "failed"),
        ("/migration/races/shutdown/query-migrate/idle/sigterm", "races", "xfailed"),
        ("/migration/rdma/plain", "rdma", "skipped"),
        ("tests.integration.test_progress::test_sampler_ends_when_qemu_dies", "test_progress", "failed"),
        ("tests.unit.test_x.TestThing::test_it[a-b]", "TestThing", "error"),
    ]
    assert cases[0].properties["malloc_perturb"] == "105" and cases[0].time_s == 2.852
    assert cases[1].message.startswith("crash SIGSEGV: ram_save_iterate")
    assert cases[5].time_s == 0.0


def test_load_ties_metrics_to_tests_and_reads_triage(tmp_path):
    rd = load(result_dir(tmp_path))
    assert rd.counts() == {"passed": 1, "passed (error path only)": 0, "failed": 2, "error": 1,
                           "xfailed": 1, "skipped": 1}
    assert len(rd.warnings) == 1 and "broken.xml" in rd.warnings[0]
    by_label = {m.label: m for m in rd.metrics}
    assert set(by_label) == {"/migration/precopy/tcp/plain", "/migration/precopy/unix/plain", "somewhere-else"}
    tcp = by_label["/migration/precopy/tcp/plain"]
    assert tcp.get("migration.total_time_ms") == 466 and tcp.progress_path is not None
    unix = by_label["/migration/precopy/unix/plain"]
    assert unix.get("migration.downtime_ms") is None          # a bool is not a number
    assert unix.case.artifacts == unix.dir                    # filled in from the dir name
    assert by_label["somewhere-else"].case is None
    (t,) = rd.triages
    assert t.attempts == 24 and t.signatures[0]["count"] == 14
    assert [p.name for p in rd.reproducers] == ["crash-SIGABRT.py"]
    assert reproducer_path(t.signatures[0]["reproducer"]).name == "crash-SIGABRT.py"
    assert reproducer_path("not exported: boom") is None


def test_bad_input_is_a_report_error(tmp_path):
    with pytest.raises(ReportError, match="no such result directory"):
        load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no results in"):
        load_all([tmp_path / "empty"])
    with pytest.raises(ReportError, match="not readable JUnit XML"):
        parse_junit(tmp_path / "nope.xml")


# ------------------------------------------------------------------ svg
def test_nice_ticks():
    assert svg.nice_ticks(0, 466) == [0, 100, 200, 300, 400, 500]
    assert svg.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.nice_ticks(5, 5)[0] <= 5 <= svg.nice_ticks(5, 5)[-1]
    assert svg.fmt(2_500_000) == "2.5M" and svg.fmt(0) == "0" and svg.fmt(12.345) == "12.35"


def parse_svg(text: str) -> ET.Element:
    return ET.fromstring(text)  # well-formed XML, or this raises


def test_charts_are_well_formed_and_carry_their_data():
    NS = "{http://www.w3.org/2000/svg}"
    line = parse_svg(svg.line_chart([("a<b", [(0, 1), (1, 3)]), ("c", [(0, 2)])], title="t&t",
                                    x_label="s", y_label="y"))
    assert line.get("data-kind") == "line" and line.get("data-points") == "3"
    assert len(line.findall(f"{NS}polyline")) == 2 and len(line.findall(f"{NS}circle")) == 3
    assert line.find(f"{NS}title").text == "t&t"
    strip = parse_svg(svg.strip_chart([("/migration/x", [1, 2, 3, 10]), ("empty", [])],
                                      title="d", unit="ms"))
    assert strip.get("data-points") == "4" and len(strip.findall(f"{NS}rect[@class='box']")) == 1
    bars = parse_svg(svg.stacked_bars([("precopy", {"passed": 2, "failed": 1})],
                                      [("passed", "#0f0"), ("failed", "#f00")], title="b"))
    assert len(bars.findall(f"{NS}rect[@class='seg']")) == 2
    for empty in (svg.line_chart([], title="x", x_label="", y_label=""),
                  svg.strip_chart([], title="x", unit=""), svg.stacked_bars([], [], title="x")):
        assert parse_svg(empty).get("data-points") == "0" and "no data" in empty
    assert svg.quartiles([4.0]) == (4.0, 4.0, 4.0)
    assert svg.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)


# ------------------------------------------------------------------ page + command
def test_page_is_self_contained_with_relative_links(tmp_path):
    rd = load(result_dir(tmp_path))
    out = tmp_path / "out" / "report.html"
    page = html.render([rd], html.ReportOptions(out=out, trend=[rd, rd]))
    assert "<script" not in page and "<link" not in page and " src=" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for h in ("Summary", "Failures and expected failures", "Crash signatures",
              "Migration time and downtime per scenario", "Migration progress", "Trend", "All tests"):
        assert f">{h}<" in page
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert hrefs and all(h.startswith("../smoke/") for h in hrefs), hrefs
    assert "crash SIGABRT: &lt;migrate_mode&gt; &amp; co" in page       # escaped
    assert "58.3%" in page and "<td class=\"n\">14</td>" in page
    assert page.count('class="chart"') >= 1 + 2 + 4 + 2


def test_command_writes_the_report_and_bad_input_is_one_line(tmp_path, capsys):
    root = result_dir(tmp_path)
    out = tmp_path / "r.html"
    assert cli.main(["report", str(root), "-o", str(out), "--progress", "tcp/plain"]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert "report: " in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "nope"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"harness: error: no such result directory: {tmp_path / 'nope'}\n"
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(root), "--trend", str(tmp_path / "empty"), "-o", str(out)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_progress_choice(tmp_path):
    rd = load(result_dir(tmp_path))
    opt = html.ReportOptions(out=tmp_path / "r.html", progress=["unix"])
    assert html._choose_progress(rd.metrics, opt) == []     # unix has no progress.json
    opt = html.ReportOptions(out=tmp_path / "r.html")
    assert [m.label for m in html._choose_progress(rd.metrics, opt)] == ["/migration/precopy/tcp/plain"]
    assert html._choose_progress(rd.metrics, html.ReportOptions(out=tmp_path, progress_limit=0)) == []


def test_test_case_without_params():
    c = JUnitCase("tests.a.test_b", "test_c", "passed", 0.0)
    assert c.scenario == "tests.a.test_b::test_c" and c.family == "test_b" and c.artifacts is None


def test_history_archives_small_files_prunes_and_trends(tmp_path, capsys):
    from harness.report import history
    root = result_dir(tmp_path)
    (root / "20261126-170912-1" / "somewhere-else" / "core").write_bytes(b"\0" * 100)
    hist = tmp_path / "hist"
    rd = load(root)
    e1 = history.archive([rd], hist, stamp="20260101-000000")
    copied = sorted(str(p.relative_to(e1)) for p in e1.rglob("*") if p.is_file())
    assert "smoke/junit.xml" in copied and "smoke/20261126-170912-1/triage.json" in copied
    assert not any(c.endswith(("core", "outcomes.json", ".py")) for c in copied)
    again = load(e1)   # an archived entry still ties metrics to tests (by dir name)
    assert {m.label for m in again.metrics} >= {"/migration/precopy/tcp/plain"}
    assert history.archive([rd], hist, stamp="20260101-000000").name == "20260101-000000-2"
    assert [p.name for p in history.prune(hist, 1)] == ["20260101-000000"]
    out = tmp_path / "r.html"
    for _ in range(2):
        assert cli.main(["report", str(root), "-o", str(out), "--history", str(hist), "--keep", "2"]) == 0
    assert len(history.entries(hist)) == 2
    page = out.read_text()
    assert ">Trend<" in page and page.count("smoke") >= 1
    capsys.readouterr()
    assert cli.main(["report", str(root), "--history", str(hist), "--keep", "0", "-o", str(out)]) == 1
    assert "--keep 0 must be >= 1" in capsys.readouterr().err


def test_markdown_summary(tmp_path):
    from harness.report import markdown
    from harness.report.results import load
    d = tmp_path / "res"
    d.mkdir()
    (d / "junit.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest">'
        '<properties><property name="harness_shard" value="1/2"/></properties>'
        '<testcase classname="tests.migration.test_precopy" name="test_scenario[/migration/precopy/tcp/plain]" time="1">'
        '<failure message="crash SIGSEGV: ram_save_iterate | x">tb</failure></testcase>'
        '<testcase classname="tests.migration.test_precopy" name="test_scenario[/migration/precopy/unix/plain]" time="1"/>'
        '</testsuite></testsuites>')
    out = tmp_path / "summary.md"
    out.write_text("earlier step\n")
    markdown.append(out, [load(d)], "nightly")
    text = out.read_text()
    assert text.startswith("earlier step\n## nightly")            # appended
    assert "| precopy | 1 | 0 | 1 | 0 | 0 | 0 |" in text
    assert "`crash SIGSEGV: ram_save_iterate \\| x`" in text
    assert "Merged from shards 1/2." in text and "shard(s) 2/2 missing" in text


def test_error_path_only_pass_is_its_own_status_in_junit_and_the_page(tmp_path):
    from harness.report.results import ERROR_PATH_ONLY
    d = tmp_path / "smoke"
    d.mkdir()
    (d / "junit.xml").write_text("""<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="2">
<testcase classname="tests.migration.test_rdma" name="test_scenario[/migration/rdma/no-device/incoming]" time="0.5">
  <properties><property name="harness_result" value="passed (error path only)"/></properties></testcase>
<testcase classname="tests.migration.test_precopy" name="test_scenario[/migration/precopy/tcp/plain]" time="2"/>
</testsuite></testsuites>""")
    cases = parse_junit(d / "junit.xml")
    assert [c.status for c in cases] == [ERROR_PATH_ONLY, "passed"]
    res = load(d)
    assert res.counts()[ERROR_PATH_ONLY] == 1 and res.counts()["passed"] == 1
    page = html.render([res], html.ReportOptions(out=tmp_path / "report.html"))
    assert '<td class="errpath">passed (error path only)</td>' in page
    assert "<th class=\"errpath\">passed (error path only)</th>" in page


def test_artifact_paths_recorded_on_another_runner_are_found_here(tmp_path):
    """A CI shard's results downloaded elsewhere: JUnit names /builds/.../artifacts/full-1/..."""
    from harness.report.results import load
    root = tmp_path / "results-full-1"
    test_dir = root / "20261204-020000-7" / "tests.migration.test_precopy.py.test_scenario.x"
    test_dir.mkdir(parents=True)
    (test_dir / "metrics.json").write_text('{"migration": {"total_time_ms": 5}}')
    recorded = "/__w/repo/repo/artifacts/full-1/20261204-020000-7/tests.migration.test_precopy.py.test_scenario.x"
    (root / "junit.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest"><testcase classname="tests.migration.test_precopy" '
        f'name="test_scenario[x]" time="1"><properties><property name="artifacts" value="{recorded}"/>'
        '</properties><failure message="boom">tb</failure></testcase></testsuite></testsuites>')
    rd = load(root)
    assert rd.cases[0].artifacts == test_dir
    assert rd.metrics[0].case is rd.cases[0]
