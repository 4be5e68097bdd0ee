"""Load result directories: JUnit XML, triage.json, per-test metrics.json/progress.json.

A result dir is whatever a run left behind: `ci/smoke`'s artifacts (junit.xml
plus one dir per test), a `harness hammer` root (triage.json, attempt dirs,
reproducers/), or several of those under one parent. Everything is found by
walking the tree, and per-test dirs are tied to their JUnit test cases through
the `artifacts` property (or, for older runs, the dir name the plugin derives
from the node id).
"""
from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from harness.run import safe_dirname

ERROR_PATH_ONLY = "passed (error path only)"   # the JUnit property harness_result says so
STATUSES = ("passed", ERROR_PATH_ONLY, "failed", "error", "xfailed", "skipped")
_HAMMER_COPY = re.compile(r"^h\d+-|-h\d+$")
_DUP_SUFFIX = re.compile(r"-(gw\d+|main)-\d+$")


class ReportError(Exception):
    """Bad input for the report: one line for the user."""


@dataclass
class JUnitCase:
    classname: str
    name: str
    status: str
    time_s: float
    message: str = ""
    properties: dict = field(default_factory=dict)
    junit: Path | None = None

    @property
    def scenario(self) -> str:
        """/migration/precopy/tcp/plain for catalog ids (hammer copy suffix dropped)."""
        m = re.search(r"\[(.*)\]$", self.name)
        param = _HAMMER_COPY.sub("", m.group(1)) if m else ""
        if param.startswith("/"):
            return param
        base = self.name.split("[", 1)[0]
        return f"{self.classname}::{base}" + (f"[{param}]" if param else "")

    @property
    def family(self) -> str:
        s = self.scenario
        if s.startswith("/"):
            parts = s.strip("/").split("/")
            return parts[1] if parts[0] == "migration" and len(parts) > 1 else parts[0]
        return self.classname.rsplit(".", 1)[-1]

    @property
    def artifacts(self) -> Path | None:
        a = self.properties.get("artifacts")
        return Path(a) if a else None

    @property
    def dir_key(self) -> str:
        """What the plugin names this test's artifact dir, minus the '.py' part."""
        return _key(self.classname.replace(".", "/") + ".py::" + self.name)


@dataclass
class RunMetrics:
    """One test run's metrics.json (and progress.json if the sampler ran)."""

    dir: Path
    data: dict
    case: JUnitCase | None = None

    @property
    def label(self) -> str:
        return self.case.scenario if self.case else self.dir.name

    @property
    def progress_path(self) -> Path | None:
        p = self.dir / "progress.json"
        return p if p.is_file() else None

    def get(self, dotted: str) -> float | None:
        v = self.data
        for part in dotted.split("."):
            if not isinstance(v, dict) or part not in v:
                return None
            v = v[part]
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass
class TriageFile:
    path: Path
    attempts: int
    first_failure_s: float | None
    signatures: list[dict]


@dataclass
class ResultDir:
    root: Path
    cases: list[JUnitCase] = field(default_factory=list)
    metrics: list[RunMetrics] = field(default_factory=list)
    triages: list[TriageFile] = field(default_factory=list)
    reproducers: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    shard_files: dict = field(default_factory=dict)    # JUnit Path -> "K/N" (pytest --shard)

    @property
    def shards(self) -> list[str]:
        return list(self.shard_files.values())

    @property
    def label(self) -> str:
        return self.root.name

    @property
    def empty(self) -> bool:
        return not (self.cases or self.metrics or self.triages)

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(STATUSES, 0)
        for t in self.cases:
            c[t.status] += 1
        return c


def _key(s: str) -> str:
    return safe_dirname(s).replace(".py.", ".")


def parse_junit(path: Path) -> list[JUnitCase]:
    """Test cases of one JUnit XML file (pytest's xunit1/xunit2, any number of suites)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ReportError(f"{path}: not readable JUnit XML: {exc}") from None
    out = []
    for tc in root.iter("testcase"):
        status, message = "passed", ""
        for child in tc:
            tag = child.tag
            if tag in ("failure", "error", "skipped"):
                message = child.get("message") or (child.text or "").strip()
                if tag == "skipped":
                    status = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
                else:
                    status = "failed" if tag == "failure" else "error"
                if tag in ("failure", "error"):
                    break  # a failure wins over a teardown error
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        if status == "passed" and props.get("harness_result") == ERROR_PATH_ONLY:
            status = ERROR_PATH_ONLY
        try:
            t = float(tc.get("time") or 0.0)
        except ValueError:
            t = 0.0
        out.append(JUnitCase(tc.get("classname", ""), tc.get("name", ""), status, t, message,
                            props, path))
    return out


def junit_shards(path: Path) -> list[str]:
    """The `harness_shard` suite properties (pytest --shard K/N) of one JUnit file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return []
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return [p.get("value") for s in suites for p in s.findall("./properties/property")
            if p.get("name") == "harness_shard" and p.get("value")]


def shard_warnings(dirs: list[ResultDir]) -> list[str]:
    """Sharded results merge into one report: say when a shard is missing or a test ran
    in two shards."""
    shards = sorted({s for d in dirs for s in d.shards})
    if not shards:
        return []
    out = []
    totals = {s.split("/")[1] for s in shards}
    if len(totals) > 1:
        out.append(f"shards of different splits merged: {', '.join(shards)}")
    else:
        n = int(totals.pop())
        missing = [f"{k}/{n}" for k in range(1, n + 1) if f"{k}/{n}" not in shards]
        if missing:
            out.append(f"incomplete: shard(s) {', '.join(missing)} missing from the results")
    owner: dict[tuple[str, str], Path | None] = {}
    twice = set()
    for d in dirs:
        for c in d.cases:
            if c.junit not in d.shard_files:
                continue   # unsharded results may repeat tests (smoke and full tiers)
            key = (c.classname, c.name)
            if key in owner and owner[key] != c.junit:
                twice.add(f"{c.classname}::{c.name}")
            owner.setdefault(key, c.junit)
    if twice:
        out.append(f"{len(twice)} test(s) ran in more than one shard, e.g. {sorted(twice)[0]}")
    return out


def _is_junit(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return b"<testsuite" in head


def load(root: Path) -> ResultDir:
    """Everything under one result dir. ReportError if it does not exist."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"no such result directory: {root}")
    rd = ResultDir(root.resolve())
    metric_dirs: list[Path] = []
    test_dirs: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(rd.root):
        dirnames.sort()
        d = Path(dirpath)
        for fn in sorted(filenames):
            p = d / fn
            if fn.endswith(".xml") and _is_junit(p):
                try:
                    rd.cases.extend(parse_junit(p))
                    rd.shard_files.update((p, s) for s in junit_shards(p))
                except ReportError as exc:
                    rd.warnings.append(str(exc))
            elif fn == "triage.json":
                t = _load_triage(p)
                if isinstance(t, str):
                    rd.warnings.append(t)
                else:
                    rd.triages.append(t)
            elif fn == "metrics.json":
                metric_dirs.append(d)
            elif fn == "outcomes.json":
                test_dirs.append(d)
            elif fn.endswith(".py") and d.name == "reproducers":
                rd.reproducers.append(p)
    by_key = {c.dir_key: c for c in rd.cases}
    for d in test_dirs:  # runs from before JUnit carried the artifacts property
        c = by_key.get(_key(_DUP_SUFFIX.sub("", d.name)))
        if c is not None and c.artifacts is None:
            c.properties["artifacts"] = str(d)
    for c in rd.cases:   # results made on another machine (a CI shard) and moved here
        moved = _relocate(c.artifacts, rd.root) if c.artifacts and not c.artifacts.exists() else None
        if moved is not None:
            c.properties["artifacts"] = str(moved)
    by_art = {str(c.artifacts.resolve()): c for c in rd.cases if c.artifacts}
    for d in metric_dirs:
        try:
            data = json.loads((d / "metrics.json").read_text())
        except (OSError, ValueError) as exc:
            rd.warnings.append(f"{d / 'metrics.json'}: unreadable: {exc}")
            continue
        case = by_art.get(str(d.resolve())) or by_key.get(_key(_DUP_SUFFIX.sub("", d.name)))
        rd.metrics.append(RunMetrics(d, data if isinstance(data, dict) else {}, case))
    return rd


def _relocate(path: Path, root: Path) -> Path | None:
    """The same dir under `root`, for an artifacts path recorded elsewhere: the longest
    tail of the recorded path that exists below root (its stamp/test dir part)."""
    parts = path.parts
    for k in range(1, len(parts)):
        candidate = root.joinpath(*parts[k:])
        if candidate.is_dir():
            return candidate
    return None


def _load_triage(path: Path) -> TriageFile | str:
    """A triage.json, or one line saying which field is missing or wrong."""
    try:
        t = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"{path}: not a triage.json: {exc}"
    if not isinstance(t, dict):
        return f"{path}: not a triage.json: top level is {type(t).__name__}, not an object"
    for name, kind in (("attempts", int), ("signatures", list)):
        if name not in t:
            return f"{path}: not a triage.json: field '{name}' is missing"
        if not isinstance(t[name], kind) or isinstance(t[name], bool):
            return f"{path}: not a triage.json: field '{name}' is {type(t[name]).__name__}, not {kind.__name__}"
    for i, sig in enumerate(t["signatures"]):
        if not isinstance(sig, dict):
            return f"{path}: not a triage.json: signatures[{i}] is not an object"
        for name, kind in (("signature", str), ("count", int)):
            if not isinstance(sig.get(name), kind) or isinstance(sig.get(name), bool):
                what = "is missing" if name not in sig else f"is {type(sig[name]).__name__}, not {kind.__name__}"
                return f"{path}: not a triage.json: signatures[{i}] field '{name}' {what}"
    return TriageFile(path, t["attempts"], t.get("first_failure_s"), list(t["signatures"]))


def load_all(roots: list[Path]) -> list[ResultDir]:
    """Load each root; ReportError if one is missing or all are empty."""
    dirs = [load(r) for r in roots]
    if all(d.empty for d in dirs):
        names = ", ".join(str(r) for r in roots)
        reasons = [w for d in dirs for w in d.warnings]
        why = f"; unusable: {'; '.join(reasons)}" if reasons else ""
        raise ReportError(f"no results in {names} (no usable JUnit XML, triage.json or "
                          f"metrics.json{why})")
    return dirs


def reproducer_path(text: str | None) -> Path | None:
    """triage 'reproducer' is a path, optionally followed by ' (reproduces: ...)'."""
    if not text or text.startswith("not exported"):
        return None
    p = Path(text.split(" (", 1)[0])
    return p if p.is_file() else None
