"""The findings catalog: each finding is data (findings/<name>.json beside its
reproducer findings/<name>.py), and tests/migration/test_findings.py turns every
entry into a regression test: a strict xfail carrying the signature where the
bug hits (an XPASS alarm on a fixed build), a plain test where it did not.

`harness repro SCRIPT --qemu ... --to-catalog NAME` writes an entry from a
measured differential; adding a finding needs no code.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.report.differential import Differential, attempts_for

#: The repository's catalog (tests read it from here).
CATALOG_DIR = Path(__file__).resolve().parents[2] / "findings"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class CatalogError(ValueError):
    """A bad catalog entry or name."""


@dataclass(frozen=True)
class Finding:
    name: str
    script: Path                    # the reproducer (repro contract)
    signature: str                  # as measured (first hit)
    affected: tuple[str, ...]       # QEMU versions where it hit
    unaffected: tuple[str, ...]     # versions where it did not, in `measured_attempts`
    attempts: int                   # per regression run: misses a hit with p <= 1%
    seconds: float                  # budget per regression run
    measured: tuple[dict, ...] = ()  # the differential rows behind the entry

    def expect_hit(self, version: str) -> bool:
        """A strict xfail unless this version was measured unaffected: a version
        never measured (e.g. a developer's build) is assumed affected, so its
        fix shows up as an XPASS alarm."""
        return version not in self.unaffected


def load(path: Path) -> Finding:
    try:
        d = json.loads(path.read_text())
        script = (path.parent / d["script"]).resolve()
        return Finding(name=d["name"], script=script, signature=d["signature"],
                       affected=tuple(d["affected"]), unaffected=tuple(d["unaffected"]),
                       attempts=int(d["attempts"]), seconds=float(d["seconds"]),
                       measured=tuple(d.get("measured", ())))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CatalogError(f"{path}: not a findings catalog entry: {exc}") from exc


def load_all(catalog_dir: Path = CATALOG_DIR) -> list[Finding]:
    return [load(p) for p in sorted(catalog_dir.glob("*.json"))]


def write_entry(diff: Differential, name: str, catalog_dir: Path = CATALOG_DIR) -> Path:
    """Catalog entry from a differential; the script is copied beside it (unless it
    is there already). Needs at least one affected version."""
    if not _NAME.match(name):
        raise CatalogError(f"catalog name {name!r}: use lower-case letters, digits, '.', '_', '-'")
    hits = [r for r in diff.rows if r.verdict == "affected"]
    if not hits:
        raise CatalogError("the reproducer hit on no binary: nothing to catalog "
                           "(a finding is a strict xfail where it hits)")
    catalog_dir.mkdir(parents=True, exist_ok=True)
    src = Path(diff.script).resolve()
    dest = catalog_dir / f"{name}.py"
    if src != dest.resolve():
        shutil.copyfile(src, dest)
        dest.chmod(0o755)
    # The header's "QEMU versions tried:" line gets the measured differential.
    versions = [r.version for r in diff.rows]

    def label(r) -> str:  # two builds of one version (Debian's, ASan): name the build's dir
        d = Path(r.binary).parent.name
        return (f"{r.version} ({'system' if d in ('bin', 'sbin') else d})"
                if versions.count(r.version) > 1 else r.version)
    tried = ", ".join(f"{label(r)}: {r.hits}/{r.attempts}" for r in diff.rows if r.attempts)
    text = dest.read_text()
    new = re.sub(r"^QEMU versions tried: .*$", lambda m: f"QEMU versions tried: {tried}", text, count=1, flags=re.M)
    if new != text:
        dest.write_text(new)
    # Enough attempts to see the bug on its least reliable affected version.
    low = min(r.ci[0] for r in hits)
    attempts = attempts_for(low)
    # Time per attempt as measured, with a 3x margin for a loaded machine.
    per = max(r.seconds / max(r.attempts, 1) for r in hits)
    seconds = round(max(30.0, 3 * per * attempts), 1)
    entry = {"name": name, "script": dest.name, "signature": diff.signature,
             "affected": list(dict.fromkeys(diff.affected)), "unaffected": list(dict.fromkeys(diff.unaffected)),
             "attempts": attempts, "seconds": seconds,
             "measured": [r.to_dict() for r in diff.rows]}
    out = catalog_dir / f"{name}.json"
    out.write_text(json.dumps(entry, indent=2) + "\n")
    return out
