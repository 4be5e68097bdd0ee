"""`harness report` output in a real headless Chromium: loads offline, no console
errors, no request beyond the page itself, and the plots carry their data.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
NUL-separated JSON on fds 3/4), so console messages, exceptions and network
requests are events we collect rather than log lines we grep.
"""
import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.migration.progress import sample_from

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                                "(ci/setup --with-browser installs Debian's chromium; ci/test does)")
REPLIES = json.loads((Path(__file__).parents[1] / "unit" / "samples" /
                      "query-migrate-precopy-linux.json").read_text())
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe", "--window-size=1280,2000"]


class Chromium:
    """Minimal DevTools client: one page, flat sessions, every wait bounded."""

    def __init__(self, profile: Path):
        self.r_cmd, self.w_cmd = os.pipe()   # we write commands -> chromium's fd 3
        self.r_ev, self.w_ev = os.pipe()     # chromium's fd 4 -> we read
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            pass_fds=(3, 4), preexec_fn=self._fds)
        os.close(self.r_cmd)
        os.close(self.w_ev)
        self.msgs: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._reader, daemon=True).start()

    def _fds(self):
        os.dup2(self.r_cmd, 3)
        os.dup2(self.w_ev, 4)

    def _reader(self):
        buf = b""
        while True:
            chunk = os.read(self.r_ev, 1 << 16)
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                self.msgs.put(json.loads(raw))

    def _next(self, deadline: float) -> dict:
        try:
            return self.msgs.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("chromium: no DevTools message in time") from None

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w_cmd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for m in self.events:
            if m.get("method") == method:
                return m
        while True:
            m = self._next(deadline)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)  # our own child's group
            self.proc.wait(10)
        os.close(self.w_cmd)


ENVIRONMENT = {"qemu_src": {"path": "/usr/bin/qemu-system-x86_64", "version": "10.0.2",
                            "package": "Debian 1:10.0.2+ds-2", "sha256": "e8f995668153f7c1",
                            "build_id": "0fbbd5ca8d2d0a32"},
               "qemu_dst": {"path": "/usr/bin/qemu-system-x86_64", "version": "10.0.2",
                            "package": "Debian 1:10.0.2+ds-2", "sha256": "e8f995668153f7c1",
                            "build_id": "0fbbd5ca8d2d0a32"},
               "accel": "tcg", "machine_type": "q35", "host": "ci (Linux 6.1, 2 CPUs)",
               "hosts": "local", "seed": 1234, "harness_version": "0.2.0", "python": "3.11.7"}


def make_result_dir(root: Path, scale: float = 1.0, fail: bool = True) -> Path:
    """A result dir as ci/smoke + a hammer run leave it: JUnit, test dirs, triage, reproducer."""
    stamp = root / "20261126-000000-1"
    cases = []
    for i, (path, status) in enumerate([("/migration/precopy/tcp/plain", "passed"),
                                        ("/migration/precopy/unix/plain", "failed" if fail else "passed"),
                                        ("/migration/postcopy/plain", "passed"),
                                        ("/migration/races/shutdown/query-migrate/idle/sigterm", "xfailed"),
                                        ("/migration/rdma/plain", "skipped")]):
        for copy in range(3):
            name = f"test_scenario[{path}-h{copy}]"
            d = stamp / f"tests.migration.test_x.py.test_scenario{path.replace('/', '.')}-h{copy}"
            d.mkdir(parents=True)
            (d / "outcomes.json").write_text("{}")
            if status in ("passed", "failed") and "precopy" in path or "postcopy" in path:
                m = {"migration": {"total_time_ms": int((400 + 90 * copy + 300 * i) * scale),
                                   "downtime_ms": int((30 + 25 * copy + 10 * i) * scale)},
                     "environment": ENVIRONMENT}
                (d / "metrics.json").write_text(json.dumps(m))
                if copy == 0:
                    samples = [dict(elapsed_s=0.1 * k, t=1.0 + 0.1 * k, **sample_from(r),
                                    cpu={"process_s": 0.1 * k, "roles": {"vcpu": 0.08 * k,
                                                                         "migration": 0.015 * k}})
                               for k, r in enumerate(REPLIES[1:])]
                    (d / "progress.json").write_text(json.dumps(samples))
                    (d / "phases.json").write_text(json.dumps(
                        [{"elapsed_s": 0.0, "event": "MIGRATION", "status": "setup"},
                         {"elapsed_s": 0.05, "event": "MIGRATION_PASS", "pass": 1},
                         {"elapsed_s": 0.1, "event": "MIGRATION", "status": "active"},
                         {"elapsed_s": 0.1 * (len(samples) - 2), "event": "MIGRATION", "status": "device"}]))
            body = {"failed": '<failure message="crash SIGSEGV: ram_save_iterate">tb</failure>',
                    "xfailed": '<skipped type="pytest.xfail" message="known bug (https://x)"/>',
                    "skipped": '<skipped type="pytest.skip" message="no RDMA device"/>'}.get(status, "")
            cases.append(f'<testcase classname="tests.migration.test_x" name="{name}" time="2.5">'
                         f'<properties><property name="artifacts" value="{d}"/></properties>{body}</testcase>')
    (root / "junit.xml").write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest">'
                                    + "".join(cases) + "</testsuite></testsuites>")
    rep = stamp / "reproducers" / "crash-SIGABRT-migrate_mode.py"
    rep.parent.mkdir()
    rep.write_text("print('reproducer')\n")
    (stamp / "triage.json").write_text(json.dumps({"attempts": 40, "first_failure_s": 1.5, "signatures": [
        {"signature": "crash SIGABRT: migrate_mode: Assertion 'mode >= 0 && mode < MIG_MODE__MAX' failed",
         "kind": "crash", "count": 22, "rate": 0.55, "first_artifacts": str(stamp), "first_seed": 1,
         "first_variant": {}, "reproducer": f"{rep} (reproduces: 3/10)"}]}))
    return root


def test_report_renders_offline_in_chromium_without_errors(tmp_path):
    res = make_result_dir(tmp_path / "nightly-3")
    trend = [make_result_dir(tmp_path / f"nightly-{i}", scale=1 + 0.2 * i, fail=False) for i in (1, 2)]
    out = tmp_path / "report.html"
    cp = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(res), "-o", str(out),
                         "--trend", *map(str, trend), str(res)],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    browser = Chromium(tmp_path / "profile")
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.call(f"{domain}.enable", session=s)
        browser.call("Page.navigate", {"url": out.as_uri()}, session=s)
        browser.wait_event("Page.loadEventFired")
        page = browser.call("Runtime.evaluate", {"returnByValue": True, "expression": """JSON.stringify({
            title: document.title,
            charts: [...document.querySelectorAll('svg.chart')].map(c => ({
                kind: c.dataset.kind, points: +c.dataset.points,
                marks: c.querySelectorAll('circle, rect.seg, rect.box').length,
                lines: c.querySelectorAll('polyline.series').length,
                width: c.getBoundingClientRect().width})),
            resources: performance.getEntriesByType('resource').map(r => r.name),
            links: [...document.querySelectorAll('a')].map(a => a.href),
            h2: [...document.querySelectorAll('h2')].map(h => h.textContent),
            env: [...document.querySelectorAll('table.env td')].map(td => td.innerText),
            markers: document.querySelectorAll('line.marker').length,
            trends: document.querySelectorAll('.trend').length})"""}, session=s)
        # the script-free family filter: choosing one family hides the other trend charts
        filtered = browser.call("Runtime.evaluate", {"returnByValue": True, "expression": """(() => {
            document.getElementById('tf-precopy').click();
            return [...document.querySelectorAll('.trend')].filter(
                t => getComputedStyle(t).display !== 'none').map(t => t.className); })()"""}, session=s)
        shot = browser.call("Page.captureScreenshot", {"format": "png"}, session=s)
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot["data"]))
        browser.call("Runtime.evaluate", {"expression": "1"}, session=s)  # flush pending events
    finally:
        browser.close()
    info = json.loads(page["result"]["value"])
    ev = browser.events
    errors = ([e["params"] for e in ev if e.get("method") == "Runtime.exceptionThrown"]
              + [e["params"] for e in ev if e.get("method") == "Runtime.consoleAPICalled"
                 and e["params"]["type"] in ("error", "warning", "assert")]
              + [e["params"]["entry"] for e in ev if e.get("method") == "Log.entryAdded"
                 and e["params"]["entry"]["level"] in ("error", "warning")])
    assert errors == [], errors
    requests = [e["params"]["request"]["url"] for e in ev if e.get("method") == "Network.requestWillBeSent"]
    assert requests == [out.as_uri()], requests          # the page and nothing else
    assert info["resources"] == []
    assert info["title"] == "QEMU migration test report"
    assert info["h2"][:7] == ["Environment", "Summary", "Failures and expected failures", "Crash signatures",
                              "Migration time and downtime per scenario", "Migration progress", "Trend"]
    assert "tcg" in info["env"] and "1234" in info["env"]
    assert any("10.0.2" in td and "build-id 0fbbd5ca8d2d0a32" in td for td in info["env"]), info["env"]
    assert info["markers"] >= 8                       # phase markers on the progress plots
    progress = [c for c in info["charts"] if c["kind"] == "line" and c["points"] >= 10]
    assert len(progress) >= 2, info["charts"]         # multi-point progress curves
    assert info["trends"] == 2                        # precopy and postcopy families
    assert filtered["result"]["value"] == ["trend fam-precopy"], filtered
    kinds = [c["kind"] for c in info["charts"]]
    assert kinds.count("bars") == 1 and kinds.count("strip") == 2 and kinds.count("line") >= 6
    for c in info["charts"]:
        assert c["points"] > 0 and c["marks"] > 0 and c["width"] > 300, c
    # every progress and trend line has drawn marks, and the trend has one point per run
    assert all(c["lines"] >= 1 for c in info["charts"] if c["kind"] == "line")
    assert any(link.endswith("crash-SIGABRT-migrate_mode.py") for link in info["links"])
    assert all(link.startswith("file://") for link in info["links"])
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
