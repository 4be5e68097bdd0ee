"""A nightly history for trends: small copies of past result dirs, newest N kept.

`harness report RESULTS --history DIR` copies the files the report reads
(JUnit XML, triage.json, metrics.json, progress.json; not cores, logs or
transcripts) into DIR/<UTC stamp>/, keeping their relative paths, prunes DIR to
the newest --keep entries and trends over them, oldest first. A CI cache keeps
DIR between nightly runs.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from harness.report.results import ResultDir, _is_junit

KEEP_FILES = ("triage.json", "metrics.json", "progress.json", "phases.json")


def archive(results: list[ResultDir], history: Path, stamp: str | None = None) -> Path:
    """Copy the report's inputs into history/<stamp>/<result dir name>/...; return that dir."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    dest, n = history / stamp, 1
    while dest.exists():  # two runs within a second
        n += 1
        dest = history / f"{stamp}-{n}"
    for rd in results:
        for dirpath, dirnames, filenames in os.walk(rd.root):
            dirnames.sort()
            for fn in filenames:
                src = Path(dirpath) / fn
                if fn in KEEP_FILES or (fn.endswith(".xml") and _is_junit(src)):
                    target = dest / rd.root.name / src.relative_to(rd.root)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, target)
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def entries(history: Path) -> list[Path]:
    """History entries, oldest first (stamps sort by time)."""
    if not history.is_dir():
        return []
    return sorted(p for p in history.iterdir() if p.is_dir())


def prune(history: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` entries; return what was removed."""
    old = entries(history)[:-keep] if keep > 0 else entries(history)
    for p in old:
        shutil.rmtree(p)
    return old
