"""--shard 1/2 and 2/2 run every selected test exactly once, also under xdist, and
`harness report` over both shards' results says what an unsharded run's report says."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness.report import html
from harness.report.results import load_all

INNER = Path(__file__).parent / "inner" / "inner_shardable.py"
OPTS = ("-o", "python_files=inner_*.py", "-q")


def _ran(junit: Path) -> list[str]:
    return sorted(c.name for r in load_all([junit.parent]) for c in r.cases)


def _sections(page: str) -> str:
    """The report minus what differs between any two runs (time stamps, durations, links)."""
    page = re.sub(r'<p class="muted">generated .*?</p>', "", page)
    page = re.sub(r'<p class="muted">merged from shards .*?</p>', "", page)
    page = re.sub(r"<td class=\"n\">\d+\.\d\d</td>", "", page)           # seconds per test
    page = re.sub(r"<a href=[^>]*>|</a>|<span class=\"muted\" title=[^>]*>[^<]*</span>", "", page)
    return "\n".join(ln for ln in page.splitlines() if ln.strip())


def test_two_shards_cover_the_selection_once_and_merge(inner_pytest, tmp_path):
    whole = inner_pytest(str(INNER), *OPTS, "-k", "not test_param[8]")
    one = inner_pytest(str(INNER), *OPTS, "-k", "not test_param[8]", "--shard", "1/2")
    two = inner_pytest(str(INNER), *OPTS, "-k", "not test_param[8]", "--shard", "2/2", "-n", "2")
    for r in (whole, one, two):
        assert r.returncode in (0, 1), r.output[-3000:]
    all_ids, a, b = _ran(whole.junit), _ran(one.junit), _ran(two.junit)
    assert len(all_ids) == 11 and "test_param[8]" not in all_ids
    assert a and b and not set(a) & set(b)
    assert sorted(a + b) == all_ids
    assert "deselected" in one.stdout

    merged = load_all([one.junit.parent, two.junit.parent])
    assert sorted(s for r in merged for s in r.shards) == ["1/2", "2/2"]
    opt = html.ReportOptions(out=tmp_path / "r.html")
    sharded_page = html.render(merged, opt)
    assert "merged from shards 1/2, 2/2" in sharded_page
    assert "missing" not in sharded_page and "more than one shard" not in sharded_page
    assert _sections(sharded_page) == _sections(html.render(load_all([whole.junit.parent]), opt))

    # one shard alone is flagged, and so is a test reported by two shards
    page = html.render(load_all([one.junit.parent]), opt)
    assert "incomplete: shard(s) 2/2 missing" in page
    cli = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(one.junit.parent),
                          str(two.junit.parent), "-o", str(tmp_path / "cli.html")],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "merged from shards 1/2, 2/2" in (tmp_path / "cli.html").read_text()


def test_bad_shard_is_a_usage_error(inner_pytest):
    r = inner_pytest(str(INNER), *OPTS, "--shard", "3/2")
    assert r.returncode == 4 and "--shard 3/2: K must be between 1 and N" in r.output
    assert "Traceback" not in r.output
