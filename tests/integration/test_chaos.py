"""The chaos engine against real QEMU: oracles judge real runs, the minimiser strips a
padded plan down to its cause, the exported script reproduces it standalone, and
the command's exit status says what it found."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.report.chaos_reproducer import export_chaos, run_script
from harness.run import TestRun
from harness.stress.bases import PLAIN
from harness.stress.engine import chaos_attempt
from harness.stress.hammer import quiet_expected_noise
from harness.stress.minimise import minimise
from harness.stress.oracles import VerdictKind
from harness.stress.plans import ChaosPlan, Step

pytestmark = pytest.mark.qemu

PADDING = (Step("query-flood", "dst", 50, ("query-status", 2, False)),
           Step("set-param", "src", 120, ("announce-step", 3_000_000)),
           Step("set-cap", "dst", 0, ("xbzrle", True), on="dst:active"))


@pytest.fixture(autouse=True)
def _quiet():
    quiet_expected_noise()


def _plan(seed, steps, span=300):
    return ChaosPlan(seed, PLAIN.path, (), span).with_actions(steps)


def test_clean_plan_passes_all_oracles_and_records_coverage(base_spec, tmp_path):
    v = chaos_attempt(TestRun(tmp_path / "a"), base_spec, _plan(1, PADDING))
    assert v.kind is VerdictKind.CLEAN, (v.signature, v.detail, v.applied)
    results = dict(v.applied)
    assert results["+50ms dst query-flood query-status 2 False"].startswith("sent"), results
    assert results["+120ms src set-param announce-step 3000000"].startswith("refused:GenericError"), results
    assert results["dst:active+0ms dst set-cap xbzrle True"].startswith(("ok", "refused")), results
    assert any(t.startswith("src|none->setup") for t in v.coverage), v.coverage
    assert any("|set-param:announce-step|refused:GenericError" in t for t in v.coverage)


def test_killing_the_destination_is_not_a_violation(base_spec, tmp_path):
    v = chaos_attempt(TestRun(tmp_path / "k"), base_spec, _plan(2, [Step("kill-peer", "src", 200)]))
    assert v.kind is VerdictKind.CLEAN, (v.signature, v.detail, v.applied)


def test_hang_is_minimised_exported_and_reproduced_standalone(base_spec, tmp_path):
    """A frozen source (SIGSTOP) is a deterministic violation: the pipeline strips the
    padding, zeroes the timings and exports a script that hits (exit 1) on its own."""
    plan = _plan(4, PADDING[:2] + (Step("freeze", "src", 250),))
    v = chaos_attempt(TestRun(tmp_path / "first"), base_spec, plan)
    assert v.kind is VerdictKind.HANG and v.signature == "hang: src does not answer query-status", v.applied
    assert "Thread" in (tmp_path / "first" / "source" / "hang-backtrace.txt").read_text()
    res = minimise(plan, v.signature, base_spec, tmp_path / "min", budget_s=240, rate_runs=1)
    assert [s.kind for s in res.minimal.steps] == ["freeze"], res.log
    assert res.minimal.steps[0].at_ms == 0 and res.final_rate == 1.0
    script = export_chaos(res.minimal, v.signature, tmp_path / "first", tmp_path / "repro.py", base=PLAIN)
    rc, last = run_script(script, attempts=2, seconds=120)
    assert rc == 1 and last == f"RESULT hits=2 attempts=2 signature={v.signature}", last


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_standalone_reproducer_leaves_nothing(base_spec, tmp_path, sig):
    """SIGTERM/SIGINT to the script while its QEMUs run: they die, every temporary dir
    it made goes, and it exits 128+signal."""
    plan = _plan(5, PADDING[:1])
    chaos_attempt(TestRun(tmp_path / "first"), base_spec, plan)
    script = export_chaos(plan, "hang: src does not answer query-status", tmp_path / "first",
                          tmp_path / "repro.py", base=PLAIN)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = subprocess.Popen([sys.executable, "-I", str(script), "--qemu", base_spec.binary, "--attempts", "50"],
                         env=dict(os.environ, TMPDIR=str(tmp)), stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(tmp.glob("repro-dst-*/qmp.sock")):
            time.sleep(0.05)
        assert any(tmp.glob("repro-dst-*")), "no QEMU started"
        p.send_signal(sig)
        assert p.wait(60) == 128 + sig
        assert list(tmp.iterdir()) == []
        gone = subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True)
        assert gone.stdout == "", gone.stdout      # nothing of its process group lives on
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)


def _chaos(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "harness.cli", "chaos", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--seconds", "0"], "--seconds 0 must be > 0"),
    (["--seconds", "-5"], "--seconds -5 must be > 0"),
    (["--families", "nope"], "--families nope: no such family"),
    (["--scenario", "/migration/colo/primary-failover"], "no such catalog scenario"),
    (["--families", "colo", "--qemu", "qemu-system-x86_64"],       # 10.0.2: fails the COLO probe
     "no catalog scenario of colo can run under chaos on these binaries (colo: a COLO pair of these "
     "binaries never enters 'colo'"),
])
def test_chaos_usage_errors_exit_2(args, message, tmp_path):
    cp = _chaos(*args, "--artifacts", str(tmp_path))
    assert cp.returncode == 2 and message in cp.stderr and "Traceback" not in cp.stderr, cp.stderr


def test_bad_replay_plan_is_refused_before_any_qemu_starts(tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"seed": 1, "span_ms": 500, "steps": [
        {"kind": "set-param", "side": "src", "at_ms": 100000000, "args": ["max-bandwidth", 1]}]}))
    cp = _chaos("--replay", str(bad), "--artifacts", str(tmp_path / "art"))
    assert cp.returncode == 2 and "at_ms 100000000 is outside the plan's span" in cp.stderr, cp.stderr
    assert not (tmp_path / "art").exists()


def test_short_run_reports_coverage_and_exits_by_what_it_found(tmp_path):
    cp = _chaos("--seconds", "8", "-j", "1", "--scenario", "/migration/precopy/tcp/plain",
                "--minimise-seconds", "0", "--verify-seconds", "0", "--artifacts", str(tmp_path))
    assert cp.returncode in (0, 1), cp.stderr[-2000:]
    assert "coverage" in cp.stdout and "Traceback" not in cp.stderr
    found = json.loads(next(tmp_path.glob("*/findings.json")).read_text())
    assert found["plans"] >= 1 and found["coverage"]["tuples"] >= 1
    triage = json.loads(next(tmp_path.glob("*/triage.json")).read_text())
    assert (cp.returncode == 1) == bool(triage["signatures"])
    # Attempts run pipelined (each one's pair spawned during the one before): the pair
    # spawned for an attempt that never ran left no artifacts behind.
    never_ran = [p.name for p in tmp_path.glob("*/runs/*") if not (p / "plan.json").exists()]
    assert never_ran == [], never_ran
    seed = json.loads(next(tmp_path.glob("*/seed.txt")).read_text())
    assert seed["spinning_guest"] is False


@pytest.mark.parametrize("paced", [True, False], ids=["paced-firmware-guest", "spinning-boot-sector"])
def test_both_guest_forms_pass_a_clean_plan_with_the_page_proof(base_spec, tmp_path, paced):
    """The chaos guest (the boot sector's loop as paced firmware, [1 MiB, 33 MiB)) and
    qtest's spinning boot sector both complete a plan whose destination passes the
    whole-page proof on its own area."""
    v = chaos_attempt(TestRun(tmp_path / "g"), base_spec, _plan(7, PADDING[:1]), paced_guest=paced)
    assert v.kind is VerdictKind.CLEAN, (v.signature, v.detail, v.applied)
    argv = (tmp_path / "g" / "source" / "cmdline.txt").read_text()
    assert ("bootrom" in argv and "-bios" in argv) == paced
    assert ("bootblock" in argv) == (not paced)
    proof = [ln for ln in (tmp_path / "g" / "destination" / "qmp.jsonl").read_text().splitlines()
             if '"pmemsave"' in ln and '"out"' in ln]
    assert proof, "no page proof on the destination"
    assert json.loads(proof[0])["msg"]["arguments"]["size"] == ((32 if paced else 99) << 20)


def test_chaos_as_pytest_items_reports_through_the_triage(tmp_path):
    """pytest --chaos-seconds: one explorer per worker; exit 0 (nothing) or 1 (violations)."""
    cp = subprocess.run([sys.executable, "-m", "pytest", "tests/migration/test_chaos.py", "-p", "no:cacheprovider",
                         "--chaos-seconds", "6", "--artifacts", str(tmp_path)], capture_output=True, text=True,
                        timeout=300)
    assert cp.returncode in (0, 1), cp.stdout[-3000:]
    if cp.returncode == 1:      # a violation: first line is its signature, the triage counts it
        assert "test_chaos[explorer0]" in cp.stdout and "harness triage" in cp.stdout, cp.stdout[-3000:]
        triage = json.loads(next(tmp_path.glob("*/triage.json")).read_text())
        assert triage["signatures"], triage
    else:
        assert "1 passed" in cp.stdout, cp.stdout[-3000:]
    skipped = subprocess.run([sys.executable, "-m", "pytest", "tests/migration/test_chaos.py", "-p", "no:cacheprovider",
                              "-q", "-rs", "--artifacts", str(tmp_path / "s")], capture_output=True, text=True)
    assert skipped.returncode == 0 and "chaos runs only with --chaos-seconds" in skipped.stdout


# ---------------------------------------------------------------- file bases, the Linux guest
def _file_base(path):
    from harness.stress import bases
    return {b.path: b for b in bases.eligible(("file",))}[path]


def test_file_base_saves_then_loads_with_steps_in_the_load(base_spec, tmp_path):
    """mapped-ram, live: the destination loads the file once the save completed; steps
    triggered by the destination's load fire in it; the loaded guest is judged intact."""
    base = _file_base("/migration/precopy/file/mapped-ram/live")
    plan = ChaosPlan(6, base.path, (), 300).with_actions([
        Step("query-flood", "src", 20, ("query-migrate", 4, False)),
        Step("set-param", "dst", 0, ("announce-step", 100), on="dst:setup"),
        Step("query-flood", "dst", 0, ("query-migrate", 4, True), on="dst:active")])
    v = chaos_attempt(TestRun(tmp_path / "f"), base_spec, plan, [base])
    assert v.kind is VerdictKind.CLEAN, (v.signature, v.detail, v.applied)
    results = dict(v.applied)
    assert results["dst:setup+0ms dst set-param announce-step 100"].startswith("ok"), results
    assert results["dst:active+0ms dst query-flood query-migrate 4 True"].startswith("sent"), results
    moves = {t for t in v.coverage if "->" in t}
    assert {"dst|none->setup", "dst|active->completed"} <= moves, moves
    assert any(t.startswith("src|") and t.endswith("->completed") for t in moves), moves
    recorded = json.loads((tmp_path / "f" / "plan.json").read_text())
    assert recorded["load"] == "migrate-incoming: ok" and recorded["load_excuse"] is None


def test_file_plan_exports_a_reproducer_that_loads_the_file(base_spec, tmp_path):
    """A destination frozen in its load (dst:active) hangs; the exported script saves,
    loads and hangs the same way on its own."""
    base = _file_base("/migration/precopy/file/mapped-ram")
    plan = ChaosPlan(7, base.path, (), 300).with_actions([Step("freeze", "dst", 0, (), on="dst:active")])
    v = chaos_attempt(TestRun(tmp_path / "first"), base_spec, plan, [base])
    assert v.signature == "hang: dst does not answer query-status", (v.signature, v.applied)
    script = export_chaos(plan, v.signature, tmp_path / "first", tmp_path / "repro.py", base=base)
    rc, last = run_script(script, attempts=1, seconds=60, qemu_src=base_spec.binary, qemu_dst=base_spec.binary)
    assert rc == 1 and last == f"RESULT hits=1 attempts=1 signature={v.signature}", last


def test_linux_guest_plan_is_judged_by_the_in_guest_verifier(base_spec, tmp_path):
    from harness.stress import guests
    if guests.linux_missing():
        pytest.skip(f"Linux guest image: {guests.linux_missing()}")
    plan = ChaosPlan(8, "/migration/precopy/file", (Step("query-flood", "dst", 0, ("query-status", 2, False)),),
                     100, guest="linux")
    v = chaos_attempt(TestRun(tmp_path / "l"), base_spec, plan, [_file_base(plan.base)])
    assert v.kind is VerdictKind.CLEAN, (v.signature, v.detail, v.applied)
    serial = (tmp_path / "l" / "destination" / "serial.log").read_bytes()
    assert b"VERIFY pages=" in serial and b" bad=0" in serial
    assert json.loads((tmp_path / "l" / "plan.json").read_text())["guest"] == "linux"


# ---------------------------------------------------------------- COLO bases
COLO_QEMU = "/opt/qemu-versions/11.1.3/qemu-system-x86_64"


@pytest.fixture
def colo_spec(base_spec):
    """A binary COLO works on (the probe: a pair must enter 'colo'), or skip."""
    import os
    from harness.stress import colo_base
    if not os.access(COLO_QEMU, os.X_OK):
        pytest.skip(f"{COLO_QEMU} not installed (ci/qemu-versions)")
    why = colo_base.probe(COLO_QEMU, COLO_QEMU, base_spec.accel)
    if why:
        pytest.skip(f"COLO on {COLO_QEMU}: {why}")
    return base_spec.with_(binary=COLO_QEMU)


def test_colo_base_fails_over_and_the_survivor_keeps_its_guest(colo_spec, tmp_path):
    plan = ChaosPlan(9, "/migration/colo/plain/primary_failover", (), 1500).with_actions([
        Step("query-flood", "dst", 0, ("query-migrate", 4, False), on="src:colo"),
        Step("colo-lost-heartbeat", "src", 600, (), on="src:colo"),
        Step("colo-teardown", "src", 900, (), on="src:colo")])
    v = chaos_attempt(TestRun(tmp_path / "c"), colo_spec, plan)
    assert v.kind is VerdictKind.CLEAN, (v.signature, v.detail, v.applied)
    results = dict(v.applied)
    assert results["src:colo+600ms src colo-lost-heartbeat"].startswith("ok"), results
    assert results["src:colo+900ms src colo-teardown"] == "ok: 7 commands: ok", results
    assert any(t.startswith("src|") and t.endswith("->colo") for t in v.coverage), v.coverage


def test_colo_plan_exports_a_reproducer_with_the_colo_setup(colo_spec, tmp_path):
    """A primary frozen in COLO hangs; the exported script rebuilds the COLO-FT disks,
    NBD and replication, enters COLO and hangs the same way on its own."""
    from harness.stress.engine import base_of
    plan = ChaosPlan(10, "/migration/colo/plain/secondary_failover", (), 800).with_actions([
        Step("freeze", "src", 100, (), on="src:colo")])
    v = chaos_attempt(TestRun(tmp_path / "first"), colo_spec, plan)
    assert v.signature == "hang: src does not answer query-status", (v.signature, v.applied)
    script = export_chaos(plan, v.signature, tmp_path / "first", tmp_path / "repro.py", base=base_of(plan))
    assert "@COLO@" in script.read_text() and "qmh-colo-" not in script.read_text()
    rc, last = run_script(script, attempts=1, seconds=60, qemu_src=COLO_QEMU, qemu_dst=COLO_QEMU)
    assert rc == 1 and last == f"RESULT hits=1 attempts=1 signature={v.signature}", last


def test_a_silent_console_with_a_running_guest_is_not_a_dead_guest(base_spec, tmp_path, monkeypatch):
    """guest_alive looks at the guest's memory when its console says nothing: a pass
    counter that still moves means the UART, not the guest, stopped."""
    from harness.qemu.spec import GuestKind, GuestSpec
    from harness.stress import oracles
    run = TestRun(tmp_path / "s")
    try:
        m = run.machine(base_spec.with_(name="source", memory_mib=64,
                                        guest=GuestSpec(kind=GuestKind.BOOTBLOCK, paced_rom=True)))
        assert m.serial.wait_for(rb"AB", time.monotonic() + 20) is not None
        assert oracles.guest_alive(m, timeout=5) is None
        monkeypatch.setattr(m.serial, "wait_for", lambda *a, **k: None)   # the console goes quiet
        assert "serial output stopped" in oracles.guest_alive(m, timeout=1)
        m.cmd("stop")
        monkeypatch.setattr(m.qmp, "try_cmd", _no_cont(m.qmp.try_cmd))   # and the guest cannot run
        assert "made no progress" in oracles.guest_alive(m, timeout=1)
    finally:
        run.abort()


def _no_cont(try_cmd):
    def wrapped(cmd, args=None, timeout=5.0):
        return {} if cmd == "cont" else try_cmd(cmd, args, timeout)
    return wrapped
