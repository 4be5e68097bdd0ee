"""Hammering any test from pytest: --hammer N, --hammer-time S, --until-crash,
MALLOC_PERTURB_ per test, and the end-of-session triage table.

Registered by harness.pytest_plugin; works alone and under pytest-xdist (the
copies spread over workers; signatures come back in report user_properties
and are merged on the controller).
"""
from __future__ import annotations

import json
import time

import pytest
from _pytest.runner import runtestprotocol

from harness.stress.triage import AttemptRecord, Triage

SIG_PROP = "harness_signature"
KIND_PROP = "harness_kind"
ART_PROP = "artifacts"


class HammerPlugin:
    def __init__(self, config):
        self.config = config
        o = config.option
        self.count = o.hammer
        self.seconds = o.hammer_time
        self.until_crash = o.until_crash
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
            if last or any(self._is_crash(r) for r in reports):
                if not last and self.until_crash:
                    item.session.shouldstop = self.stop_reason or "until-crash"
                    break
                if last:
                    break
            item._initrequest()  # fresh function-scoped fixtures for the next round
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _stopping(self, item) -> bool:
        return bool(item.session.shouldstop)

    @staticmethod
    def _is_crash(report) -> bool:
        props = dict(report.user_properties)
        return props.get(KIND_PROP) in ("crash", "hang")

    # --- collect signatures ----------------------------------------------
    def pytest_runtest_logreport(self, report):
        if report.when != "call" and not (report.failed and report.when == "setup"):
            return
        props = dict(report.user_properties)
        sig = props.get(SIG_PROP)
        kind = props.get(KIND_PROP, "fail" if report.failed else "pass")
        ok = sig is None
        node = getattr(report, "node", None)
        worker = getattr(node, "workerinput", {}).get("workerid", "main") if node else "main"
        rec = AttemptRecord(worker=worker,
                            index=0, seed=self.config.option.hammer_seed, variant={"test": report.nodeid},
                            kind=kind, signature=sig or "", ok=ok, seconds=report.duration,
                            artifacts=props.get(ART_PROP))
        self.triage.add(rec, elapsed=time.time() - self.t0)
        if not ok and kind in ("crash", "hang") and self.until_crash and not self.stop_reason:
            self.stop_reason = f"--until-crash: {sig}"
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
        if not self.triage.by_sig and not (self.count > 1 or self.seconds):
            return
        terminalreporter.section("harness triage")
        elapsed = time.time() - self.t0
        terminalreporter.write_line(f"{self.triage.attempts} test runs in {elapsed:.1f}s, "
                                    f"seed {self.config.option.hammer_seed}")
        for line in self.triage.table().splitlines():
            terminalreporter.write_line(line)
        out = self.config._harness_artifacts_root / "triage.json"
        self.triage.write(out)
        terminalreporter.write_line(f"triage JSON: {out}")
        if self.stop_reason:
            terminalreporter.write_line(f"stopped early: {self.stop_reason}")


def record_outcome(item, report, outcome) -> None:
    """Called by the main plugin when a test failed because of a machine's exit."""
    report.user_properties.append((SIG_PROP, outcome.signature))
    report.user_properties.append((KIND_PROP, outcome.kind.name.lower()))


def to_json(triage: Triage) -> str:
    return json.dumps(triage.to_json(), indent=2)
