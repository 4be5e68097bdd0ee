"""A Markdown summary of result dirs, for CI pages that render it (GitHub's
$GITHUB_STEP_SUMMARY, a merge request note): outcomes per family, then every failure
with its signature. Appended, so several steps can add to one summary."""
from __future__ import annotations

from pathlib import Path

from harness.report.results import STATUSES, ResultDir, shard_warnings

MAX_FAILURES = 50


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def render(results: list[ResultDir], title: str) -> str:
    cases = [c for r in results for c in r.cases]
    fams: dict[str, dict[str, int]] = {}
    for c in cases:
        fams.setdefault(c.family, dict.fromkeys(STATUSES, 0))[c.status] += 1
    out = [f"## {title}", ""]
    shards = sorted({s for r in results for s in r.shards})
    if shards:
        out += [f"Merged from shards {', '.join(shards)}.", ""]
    out += [f"- {w}" for w in shard_warnings(results)]
    out += ["| family | " + " | ".join(STATUSES) + " |", "|---" * (len(STATUSES) + 1) + "|"]
    for name, f in sorted(fams.items()):
        out.append(f"| {_cell(name)} | " + " | ".join(str(f[s]) for s in STATUSES) + " |")
    out.append("| **all** | " + " | ".join(f"**{sum(f[s] for f in fams.values())}**" for s in STATUSES) + " |")
    bad = [c for c in cases if c.status in ("failed", "error")]
    if bad:
        out += ["", f"### Failures ({len(bad)})", "", "| test | signature | artifacts |", "|---|---|---|"]
        for c in sorted(bad, key=lambda c: c.scenario)[:MAX_FAILURES]:
            first = next((ln for ln in c.message.splitlines() if ln.strip()), "")
            out.append(f"| {_cell(c.scenario)} | `{_cell(first)}` | {_cell(str(c.artifacts or ''))} |")
        if len(bad) > MAX_FAILURES:
            out.append(f"| ... | {len(bad) - MAX_FAILURES} more | |")
    return "\n".join(out) + "\n\n"


def append(path: Path, results: list[ResultDir], title: str) -> None:
    with open(path, "a") as f:
        f.write(render(results, title))
