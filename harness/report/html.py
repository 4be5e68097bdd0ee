"""Render result dirs into one static HTML page: no script, no external resource.

Sections: summary per scenario family, failures, crash signatures (triage),
time and downtime distributions per scenario, progress curves of chosen runs,
a trend across result dirs, every test with its artifact link. Links to
artifacts and reproducers are relative to the page, so a copied tree still
works.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from urllib.parse import quote

from harness.environment import short_key
from harness.migration.progress import cpu_percent
from harness.report import svg
from harness.report.results import (ERROR_PATH_ONLY, STATUSES, JUnitCase, ResultDir, RunMetrics,
                                    reproducer_path,
                                    shard_warnings)

COLORS = {"passed": "#2ca02c", ERROR_PATH_ONLY: "#b5cf6b", "failed": "#d62728", "error": "#8c564b",
          "xfailed": "#ff7f0e", "skipped": "#9e9e9e"}


def _cls(status: str) -> str:
    """CSS class of a status (the error-path-only pass has spaces in its name)."""
    return "errpath" if status == ERROR_PATH_ONLY else status
MiB = 1 << 20

CSS = """
body{font-family:sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;
font-size:.9em;text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right}
.passed{color:#2ca02c}.errpath{color:#6b7d1f;font-style:italic}.failed,.error{color:#d62728;font-weight:bold}.xfailed{color:#c36200}
.skipped{color:#777}.muted{color:#777;font-size:.85em}.sig{font-family:monospace;font-size:.85em}
.charts{display:flex;flex-wrap:wrap;gap:.5em}.warn{color:#a15c00}
.tfilter{margin:.3em 0 .6em}.tfilter label{margin-right:.8em;font-size:.9em;white-space:nowrap}
"""


@dataclass
class ReportOptions:
    out: Path
    title: str = "QEMU migration test report"
    trend: list[ResultDir] = field(default_factory=list)
    trend_metric: str = "migration.total_time_ms"
    progress: list[str] = field(default_factory=list)   # substrings choosing runs to plot
    progress_limit: int = 4


def render(results: list[ResultDir], opt: ReportOptions) -> str:
    cases = [c for r in results for c in r.cases]
    metrics = [m for r in results for m in r.metrics]
    base = opt.out.resolve().parent
    parts = [f"<h1>{escape(opt.title)}</h1>",
             f'<p class="muted">generated {time.strftime("%Y-%m-%d %H:%M:%S %Z")} from '
             + ", ".join(_link(r.root, base, r.label) for r in results) + "</p>"]
    warnings = [w for r in results + opt.trend for w in r.warnings] + shard_warnings(results)
    shards = sorted({s for r in results for s in r.shards}, key=lambda s: [int(x) for x in s.split("/")])
    if shards:
        parts.append(f'<p class="muted">merged from shards {escape(", ".join(shards))}</p>')
    if warnings:
        parts.append("<ul>" + "".join(f'<li class="warn">{escape(w)}</li>' for w in warnings) + "</ul>")
    parts += _environment(metrics)
    parts += _summary(cases)
    parts += _failures(cases, base)
    parts += _triage(results, base)
    parts += _distributions(metrics)
    parts += _progress(metrics, opt)
    if opt.trend:
        parts += _trend(opt.trend, opt.trend_metric)
    css = _trend_filter_css(opt.trend) if opt.trend else ""
    parts += _all_tests(cases, base)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(opt.title)}</title><style>{CSS}{css}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write(results: list[ResultDir], opt: ReportOptions) -> Path:
    opt.out.parent.mkdir(parents=True, exist_ok=True)
    opt.out.write_text(render(results, opt))
    return opt.out


# ------------------------------------------------------------------ sections
ENV_COLUMNS = (("QEMU (source)", lambda e: _qemu(e.get("qemu_src"))),
               ("QEMU (destination)", lambda e: _qemu(e.get("qemu_dst"))),
               ("accel", lambda e: e.get("accel", "")),
               ("machine type", lambda e: e.get("machine_type", "")),
               ("hosts", lambda e: e.get("hosts", "")),
               ("controller", lambda e: e.get("host", "")),
               ("seed", lambda e: str(e.get("seed", ""))),
               ("harness", lambda e: f"{e.get('harness_version', '')} (Python {e.get('python', '')})"))


def _qemu(b: dict | None) -> str:
    if not b:
        return ""
    ids = [f"build-id {b['build_id'][:16]}" if b.get("build_id") else "",
           f"sha256 {b['sha256'][:16]}" if b.get("sha256") else ""]
    return f"{b.get('version', '?')} {b.get('path', '')}\n{b.get('package', '')}\n" + "\n".join(i for i in ids if i)


def environments(metrics: list[RunMetrics]) -> list[tuple[dict, int]]:
    """Distinct recorded environments (metrics.json "environment") with their run counts."""
    seen: dict[str, list] = {}
    for m in metrics:
        env = m.data.get("environment")
        if isinstance(env, dict):
            key = json.dumps(env, sort_keys=True)
            seen.setdefault(key, [env, 0])[1] += 1
    return [(e, n) for e, n in seen.values()]


def _environment(metrics: list[RunMetrics]) -> list[str]:
    envs = environments(metrics)
    out = ["<h2>Environment</h2>"]
    if not envs:
        return out + ['<p class="muted">no environment recorded (metrics.json from an older harness)</p>']
    head = "".join(f"<th>{escape(name)}</th>" for name, _ in ENV_COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{escape(fn(e)).replace(chr(10), '<br>')}</td>"
                                    for _, fn in ENV_COLUMNS) + f'<td class="n">{n}</td></tr>'
                   for e, n in envs)
    return out + [f'<table class="env"><tr>{head}<th>runs</th></tr>{rows}</table>']


def _summary(cases: list[JUnitCase]) -> list[str]:
    out = ["<h2>Summary</h2>"]
    if not cases:
        return out + ['<p class="muted">no JUnit test results</p>']
    fams: dict[str, dict[str, int]] = {}
    for c in cases:
        fams.setdefault(c.family, dict.fromkeys(STATUSES, 0))[c.status] += 1
    total = {s: sum(f[s] for f in fams.values()) for s in STATUSES}
    head = "".join(f'<th class="{_cls(s)}">{s}</th>' for s in STATUSES)
    rows = "".join(f"<tr><td>{escape(name)}</td>" + "".join(
        f'<td class="n {_cls(s) if f[s] and s != "passed" else ""}">{f[s]}</td>' for s in STATUSES) + "</tr>"
        for name, f in sorted(fams.items()))
    rows += "<tr><th>all</th>" + "".join(f'<th class="n">{total[s]}</th>' for s in STATUSES) + "</tr>"
    out.append(f"<table><tr><th>family</th>{head}</tr>{rows}</table>")
    out.append(svg.stacked_bars(sorted(fams.items()), [(s, COLORS[s]) for s in STATUSES],
                                title="test outcomes per scenario family"))
    return out


def _failures(cases: list[JUnitCase], base: Path) -> list[str]:
    """Failed, errored and expected-failed runs; hammer copies with one message grouped."""
    groups: dict[tuple[str, str, str], list[JUnitCase]] = {}
    for c in cases:
        if c.status in ("failed", "error", "xfailed"):
            groups.setdefault((c.status, c.scenario, _first_line(c.message)), []).append(c)
    if not groups:
        return []
    rows = ""
    for (status, scenario, line), cs in sorted(groups.items(), key=lambda g: g[0]):
        links = " ".join(_link(c.artifacts, base, str(i + 1) if len(cs) > 1 else "artifacts")
                         for i, c in enumerate(cs))
        rows += (f'<tr><td class="{status}">{status}</td><td class="n">{len(cs)}</td>'
                 f'<td>{escape(scenario)}</td><td class="sig">{escape(line)}</td><td>{links}</td></tr>')
    return ["<h2>Failures and expected failures</h2>",
            "<table><tr><th>status</th><th>runs</th><th>test</th><th>signature / message</th>"
            f"<th>artifacts</th></tr>{rows}</table>"]


def _triage(results: list[ResultDir], base: Path) -> list[str]:
    tri = [t for r in results for t in r.triages]
    if not tri:
        return []
    out = ["<h2>Crash signatures</h2>"]
    for t in tri:
        first = f"{t.first_failure_s:.1f}s" if isinstance(t.first_failure_s, (int, float)) else "-"
        out.append(f"<p>{_link(t.path, base, str(t.path.parent.name) + '/triage.json')}: "
                   f"{t.attempts} attempts, first failure after {first}</p>")
        if not t.signatures:
            out.append('<p class="muted">no failures</p>')
            continue
        rows = ""
        for s in t.signatures:
            rate = s.get("rate", s["count"] / t.attempts if t.attempts else 0.0)
            art = s.get("first_artifacts")
            rep = reproducer_path(s.get("reproducer"))
            rows += (f'<tr><td class="n">{s["count"]}</td><td class="n">{rate:.1%}</td>'
                     f'<td>{escape(s.get("kind", ""))}</td><td class="sig">{escape(s["signature"])}</td>'
                     f"<td>{_link(Path(art) if art else None, base, 'first artifacts')}</td>"
                     f"<td>{_link(rep, base, rep.name) if rep else escape(s.get('reproducer') or '-')}</td>"
                     "</tr>")
        out.append("<table><tr><th>count</th><th>rate</th><th>kind</th><th>signature</th>"
                   f"<th>evidence</th><th>reproducer</th></tr>{rows}</table>")
    return out


def _distributions(metrics: list[RunMetrics]) -> list[str]:
    out = ["<h2>Migration time and downtime per scenario</h2>"]
    charts = []
    for key, title in (("migration.total_time_ms", "total time"), ("migration.downtime_ms", "downtime")):
        groups: dict[str, list[float]] = {}
        for m in metrics:
            v = m.get(key)
            if v is not None:
                groups.setdefault(m.label, []).append(float(v))
        if groups:
            charts.append(svg.strip_chart(sorted(groups.items()), title=f"{title} ({key})", unit="ms"))
    if not charts:
        return out + ['<p class="muted">no metrics.json with migration times</p>']
    return out + charts


def _choose_progress(metrics: list[RunMetrics], opt: ReportOptions) -> list[RunMetrics]:
    runs = [m for m in metrics if m.progress_path is not None]
    if opt.progress:
        runs = [m for m in runs if any(s in m.label or s in str(m.dir) for s in opt.progress)]
    else:  # failures first, then one run per scenario
        seen: set[str] = set()
        firsts = []
        for m in sorted(runs, key=lambda m: (m.case is None or m.case.status == "passed", m.label)):
            if m.label not in seen:
                seen.add(m.label)
                firsts.append(m)
        runs = firsts
    return runs[:opt.progress_limit]


def _progress(metrics: list[RunMetrics], opt: ReportOptions) -> list[str]:
    runs = _choose_progress(metrics, opt)
    if not runs:
        return []
    out = ["<h2>Migration progress</h2>"]
    for m in runs:
        try:
            samples = json.loads(m.progress_path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(samples, list) or not samples:
            continue
        phases = _phases(m.dir)
        t0 = min([samples[0]["elapsed_s"]] + [p["elapsed_s"] for p in phases[:1]])
        t = lambda s: round(s["elapsed_s"] - t0, 3)  # noqa: E731
        marks = [(t(p), p.get("status") if p["event"] == "MIGRATION" else f"pass {p.get('pass')}")
                 for p in phases]
        mbps = [(t(s), s["mbps"]) for s in samples if "mbps" in s]
        rem = [(t(s), s["remaining"] / MiB) for s in samples if "remaining" in s]
        sent = [(t(s), s["transferred"] / MiB) for s in samples if "transferred" in s]
        # QEMU's dirty-pages-rate (4 KiB pages) needs >= 1 s between dirty syncs; shorter
        # migrations get the rate each pass implies (phases.json).
        dirty = [(t(s), s["dirty_pages_rate"] * 4096 / MiB) for s in samples
                 if s.get("dirty_pages_rate")]
        per_pass = [(t(p), p["dirtied_bytes_per_s"] / MiB) for p in phases if "dirtied_bytes_per_s" in p]
        cpu = [(role or "process", [(round(x - t0, 3), y) for x, y in cpu_percent(samples, role)])
               for role in (None, "vcpu", "migration", "multifd", "main")]
        where = "" if m.label == m.dir.name else f"{m.dir.name}, "
        passes = sum(1 for p in phases if p["event"] == "MIGRATION_PASS")
        out.append(f"<h3>{escape(m.label)} <span class='muted'>{escape(where)}"
                   f"{len(samples)} samples, {passes} passes, ended "
                   f"{escape(str(samples[-1].get('status')))}</span></h3>")
        out.append('<div class="charts">'
                   + svg.line_chart([("throughput", mbps)], title="throughput", x_label="s",
                                    y_label="Mbit/s", width=380, markers=marks)
                   + svg.line_chart([("remaining", rem), ("transferred", sent)], title="RAM",
                                    x_label="s", y_label="MiB", width=380, markers=marks)
                   + svg.line_chart([s for s in (("QEMU dirty rate", dirty), ("dirtied per pass", per_pass))
                                     if s[1]], title="dirty rate", x_label="s", y_label="MiB/s",
                                    width=380, markers=marks)
                   + svg.line_chart([c for c in cpu if c[1] and any(y for _, y in c[1])],
                                    title="QEMU CPU by thread", x_label="s", y_label="% of a core",
                                    width=380, markers=marks)
                   + "</div>")
    return out


def _run_name(d: ResultDir) -> str:
    """A trend point's name: the run, then (second line) the QEMU build it tested."""
    envs = environments(d.metrics)
    keys = sorted({short_key(e) for e, _ in envs})
    return f"{d.label}\n{', '.join(keys)}" if keys else d.label


def _trend(dirs: list[ResultDir], metric: str) -> list[str]:
    """Every scenario's median per run, one chart per family (full labels below each
    chart), with a script-free family filter (radio buttons and CSS)."""
    names = [_run_name(d) for d in dirs]
    per_family: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for i, d in enumerate(dirs):
        vals: dict[tuple[str, str], list[float]] = {}
        for m in d.metrics:
            v = m.get(metric)
            if v is not None:
                fam = m.case.family if m.case else "other"
                vals.setdefault((fam, m.label), []).append(float(v))
        for (fam, label), vs in vals.items():
            name = label.removeprefix("/migration/")
            per_family.setdefault(fam, {}).setdefault(name, []).append((i, statistics.median(vs)))
    rates = []
    for i, d in enumerate(dirs):
        c = d.counts()
        ran = sum(c.values()) - c["skipped"]
        if ran:
            rates.append((i, round(100.0 * (c["passed"] + c[ERROR_PATH_ONLY] + c["xfailed"]) / ran, 1)))
    out = ["<h2>Trend</h2>",
           f'<p class="muted">{len(dirs)} result dirs, oldest first; each named with the QEMU '
           "version and build id it tested: " + ", ".join(escape(n.replace(chr(10), " [") + ("]" if chr(10) in n else ""))
                                                for n in names) + "</p>",
           svg.line_chart([("pass rate", rates)], title="passed (incl. expected failures) of run",
                          x_label="run", y_label="%", x_names=names, width=640)]
    fams = sorted(per_family)
    if not fams:
        return out + [f'<p class="muted">no {escape(metric)} in the trend dirs</p>']
    out.append('<div class="tfilter">family: '
               '<input type="radio" name="tf" id="tf-all" checked><label for="tf-all">all</label>'
               + "".join(f'<input type="radio" name="tf" id="tf-{_css_id(f)}">'
                         f'<label for="tf-{_css_id(f)}">{escape(f)} ({len(per_family[f])})</label>'
                         for f in fams)
               + '<div class="charts trends">')
    for f in fams:
        series = sorted(per_family[f].items())
        out.append(f'<div class="trend fam-{_css_id(f)}">'
                   + svg.line_chart(series, title=f"{f}: median {metric}", x_label="run",
                                    y_label=metric.rsplit(".", 1)[-1], x_names=names, width=560,
                                    legend_below=True)
                   + "</div>")
    out.append("</div></div>")
    return out


def _css_id(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name)


def _trend_filter_css(dirs: list[ResultDir]) -> str:
    """Checking a family's radio button hides the other families' trend charts."""
    fams = sorted({(m.case.family if m.case else "other") for d in dirs for m in d.metrics})
    return "".join(f"#tf-{_css_id(f)}:checked ~ .trends .trend:not(.fam-{_css_id(f)}){{display:none}}"
                   for f in fams)


def _phases(d: Path) -> list[dict]:
    try:
        data = json.loads((d / "phases.json").read_text())
    except (OSError, ValueError):
        return []
    return [p for p in data if isinstance(p, dict) and "elapsed_s" in p and "event" in p] \
        if isinstance(data, list) else []


def _all_tests(cases: list[JUnitCase], base: Path) -> list[str]:
    if not cases:
        return []
    rows = "".join(
        f'<tr><td class="{_cls(c.status)}">{c.status}</td><td>{escape(c.classname)}</td>'
        f'<td>{escape(c.name)}</td><td class="n">{c.time_s:.2f}</td>'
        f"<td>{_link(c.artifacts, base, 'artifacts')}</td></tr>"
        for c in sorted(cases, key=lambda c: (c.family, c.name)))
    return [f"<h2>All tests</h2><details><summary>{len(cases)} test results</summary>"
            "<table><tr><th>status</th><th>module</th><th>test</th><th>seconds</th><th></th></tr>"
            f"{rows}</table></details>"]


# ------------------------------------------------------------------ helpers
def _first_line(text: str) -> str:
    line = (text or "").strip().splitlines()
    return line[0][:400] if line else ""


def _link(path: Path | None, base: Path, text: str) -> str:
    """A relative link if the target exists, else the text alone."""
    if path is None:
        return ""
    if not Path(path).exists():
        return f'<span class="muted" title="{escape(str(path))}">{escape(text)} (gone)</span>'
    rel = os.path.relpath(Path(path).resolve(), base)
    href = quote(rel.replace(os.sep, "/")) + ("/" if Path(path).is_dir() else "")
    return f'<a href="{href}" title="{escape(str(path))}">{escape(text)}</a>'
