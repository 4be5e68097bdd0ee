"""`harness report RESULTS... [-o report.html] [--trend DIR...]`: the static HTML report."""
from __future__ import annotations

import sys
from pathlib import Path

from harness.report import history, html, markdown
from harness.report.results import ReportError, load, load_all


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="static HTML report (summary, crash signatures, plots, trend) "
                                      "from result dirs")
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="result dirs: pytest artifacts with JUnit XML, harness hammer roots")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write")
    p.add_argument("--trend", nargs="+", default=[], metavar="DIR",
                   help="result dirs of earlier runs, oldest first (nightly trend)")
    p.add_argument("--history", default=None, metavar="DIR",
                   help="archive these results' JUnit/metrics/triage files into DIR/<stamp> and "
                        "trend over every entry there (nightly CI: keep DIR in a cache)")
    p.add_argument("--keep", type=int, default=30, help="history entries to keep")
    p.add_argument("--metric", default="migration.total_time_ms",
                   help="metrics.json key for the trend")
    p.add_argument("--progress", action="append", default=[], metavar="SUBSTRING",
                   help="plot the progress curves of runs whose test id or dir contains this")
    p.add_argument("--progress-limit", type=int, default=4, help="at most this many progress plots")
    p.add_argument("--title", default="QEMU migration test report", help="the page's title")
    p.add_argument("--markdown", default=None, metavar="FILE",
                   help="also append a Markdown summary (outcomes per family, failures with "
                        "their signatures) to FILE, e.g. \"$GITHUB_STEP_SUMMARY\"")


def main(args) -> int:
    try:
        results = load_all([Path(r) for r in args.results])
        trend = [load(Path(d)) for d in args.trend]
        empty = [str(d.root) for d in trend if d.empty]
        if empty:
            raise ReportError(f"no results in trend dir(s): {', '.join(empty)}")
        if args.progress_limit < 0:
            raise ReportError(f"--progress-limit {args.progress_limit} must be >= 0")
        if args.keep < 1:
            raise ReportError(f"--keep {args.keep} must be >= 1")
        if args.history:
            hist = Path(args.history)
            history.archive(results, hist)
            history.prune(hist, args.keep)
            trend += [d for d in (load(e) for e in history.entries(hist)) if not d.empty]
        opt = html.ReportOptions(out=Path(args.output), title=args.title, trend=trend,
                                 trend_metric=args.metric, progress=args.progress,
                                 progress_limit=args.progress_limit)
        out = html.write(results, opt)
        if args.markdown:
            markdown.append(Path(args.markdown), results, args.title)
    except (ReportError, OSError) as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 1
    for w in (w for r in results for w in r.warnings):
        print(f"harness report: skipped {w}", file=sys.stderr)
    cases = sum(len(r.cases) for r in results)
    print(f"report: {out} ({cases} test results, {sum(len(r.triages) for r in results)} triage files, "
          f"{sum(len(r.metrics) for r in results)} runs with metrics)")
    return 0
