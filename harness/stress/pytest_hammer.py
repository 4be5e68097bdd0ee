"""Hammering any test from pytest: --hammer N, --hammer-time S, --until-crash,
--until-new, MALLOC_PERTURB_ per test, and the end-of-session triage table.

Registered by harness.pytest_plugin; works alone and under pytest-xdist (the
copies spread over workers; hits come back in report user_properties and are
merged on the controller).

What is counted: every crash, hang or lost VM of a test run is a hit with its
signature, whether the test then passed, failed or xfailed; a hit matching a
known bug the test declares (TestRun.known_bugs) is marked known with the
bug's reference. A test that loops over inner attempts (one child TestRun per
attempt, as the race tests do) counts each of them, so rates are per attempt.
"""
from __future__ import annotations

import json
import re
import time

import pytest
from _pytest.runner import runtestprotocol

from harness.stress.triage import HIT_KINDS, Triage

HITS_PROP = "harness_hits"          # JSON list: one {signature, kind, known, artifacts} per failed attempt
ATTEMPTS_PROP = "harness_attempts"  # inner attempts this test run made (1 for a plain test)


class HammerPlugin:
    def __init__(self, config):
        self.config = config
        o = config.option
        self.count = o.hammer
        self.seconds = o.hammer_time
        self.until_crash = o.until_crash
        self.until_new = o.until_new
        self.deadline = time.time() + self.seconds if self.seconds else None
        self.triage = Triage()
        self.t0 = time.time()
        self.stop_reason: str | None = None

    # --- multiply tests -------------------------------------------------
    @pytest.hookimpl(trylast=True)  # after other parametrizations: ids end in -hN
    def pytest_generate_tests(self, metafunc):
        copies = self.count
        if self.seconds:
            # time mode: one looping copy per xdist worker so all workers hammer;
            # workers learn the count from the controller (numprocesses is unset there)
            workers = (self.config.workerinput.get("harness_workers", 1)
                       if hasattr(self.config, "workerinput")
                       else getattr(self.config.option, "numprocesses", None) or 1)
            copies = max(copies, workers if isinstance(workers, int) else 1)
        if copies > 1:
            metafunc.fixturenames.append("hammer_copy")
            metafunc.parametrize("hammer_copy", range(copies), ids=lambda i: f"h{i}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        """In time mode, run the same item again and again until the deadline."""
        if not self.deadline:
            return None
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        n = 0
        while True:
            n += 1
            last = time.time() >= self.deadline or self._stopping(item)
            # Tear the item down after every round (never pass item itself as
            # nextitem: its fixtures would survive and setup would be skipped).
            reports = runtestprotocol(item, nextitem=nextitem, log=True)
            if last:
                break
            reason = next(filter(None, (self._stop_for(r) for r in reports)), None)
            if reason:
                item.session.shouldstop = self.stop_reason or reason
                break
            item._initrequest()  # fresh function-scoped fixtures for the next round
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _stopping(self, item) -> bool:
        return bool(item.session.shouldstop)

    def _stop_for(self, report) -> str | None:
        """--until-crash: any hit stops; --until-new: only a hit no known bug explains."""
        for h in hits_of(report):
            if self.until_crash:
                return f"--until-crash: {h['signature']}" + (" (known)" if h.get("known") else "")
            if self.until_new and not h.get("known"):
                return f"--until-new: {h['signature']}"
        return None

    # --- collect signatures ----------------------------------------------
    def pytest_runtest_logreport(self, report):
        if report.when != "call" and not (report.failed and report.when == "setup"):
            return
        props = dict(report.user_properties)
        hits = hits_of(report)
        if report.failed and not hits and not hasattr(report, "wasxfail"):
            # Not a QEMU hit, but the run failed: listed (not counted as a hit).
            hits = [{"signature": "test failed: " + _first_line(report), "kind": "fail",
                     "artifacts": props.get("artifacts")}]
        self.triage.add_run(int(props.get(ATTEMPTS_PROP, 1)), hits, elapsed=time.time() - self.t0,
                            test=base_test_id(report.nodeid))
        if not self.stop_reason:
            reason = self._stop_for(report)
            if reason:
                self.stop_reason = reason
                self._request_stop()

    def _request_stop(self) -> None:
        dsession = self.config.pluginmanager.getplugin("dsession")
        if dsession is not None:
            dsession.shouldstop = self.stop_reason
        session = getattr(self.config, "_harness_session", None)
        if session is not None:
            session.shouldstop = self.stop_reason

    def pytest_sessionstart(self, session):
        self.config._harness_session = session

    def pytest_terminal_summary(self, terminalreporter):
        if hasattr(self.config, "workerinput"):
            return
        if not self.triage.hits() and not (self.count > 1 or self.seconds):
            return   # an ordinary run without a QEMU hit: pytest's own summary says it all
        terminalreporter.section("harness triage")
        elapsed = time.time() - self.t0
        t = self.triage
        terminalreporter.write_line(f"{t.runs} test runs, {t.attempts} attempts in {elapsed:.1f}s; "
                                    f"hits {t.hits()} (known {t.hits(known=True)}, "
                                    f"new {t.hits(known=False)}); seed {self.config.option.hammer_seed}")
        for line in self.triage.table().splitlines():
            terminalreporter.write_line(line)
        out = self.config._harness_artifacts_root / "triage.json"
        self.triage.write(out)
        terminalreporter.write_line(f"triage JSON: {out}")
        if self.stop_reason:
            terminalreporter.write_line(f"stopped early: {self.stop_reason}")


def record_hits(report, run) -> None:
    """Put this test run's hits and attempt count into the report (worker side)."""
    attempts = [c for c in run.children] or [run]
    hits = []
    for a in attempts:
        o = a.worst_outcome()
        if o is None:
            continue
        bug = next((b for b in run.known_bugs if b.matches(o.signature)), None)
        hits.append({"signature": o.signature, "kind": o.kind.name.lower(),
                     "known": bug.url if bug is not None else None, "artifacts": str(a.artifacts)})
    props = [(k, v) for k, v in report.user_properties if k not in (HITS_PROP, ATTEMPTS_PROP)]
    props += [(ATTEMPTS_PROP, len(attempts)), (HITS_PROP, json.dumps(hits))]
    report.user_properties = props


def base_test_id(nodeid: str) -> str:
    """The test without its hammer copy: 'x[/a/b-h3]' -> 'x[/a/b]', 'x[h3]' -> 'x'."""
    return re.sub(r"\[h\d+\]$", "", re.sub(r"-h\d+\]$", "]", nodeid))


def hits_of(report) -> list[dict]:
    raw = dict(report.user_properties).get(HITS_PROP)
    return [h for h in json.loads(raw) if h["kind"] in HIT_KINDS] if raw else []


def _first_line(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    return (text.strip().splitlines() or ["?"])[0][:200]


def to_json(triage: Triage) -> str:
    return json.dumps(triage.to_json(), indent=2)
