"""The chaos engine against real QEMU: oracles see a real crash, the minimiser
strips a padded plan down to the cause, the exported script reproduces it."""

import pytest

from harness.migration import tuning
from harness.report.chaos_reproducer import export_chaos, run_script
from harness.run import TestRun
from harness.stress.actions import Action, Kind, Side
from harness.stress.chaos import ChaosPlan, VerdictKind, chaos_attempt
from harness.stress.hammer import quiet_expected_noise
from harness.stress.minimise import minimise

pytestmark = pytest.mark.qemu

# The seed bug, reached through chaos actions: a burst of query-migrate on the
# source and SIGTERM to it at the same moment.
CAUSE = (Action(Kind.QUERY, Side.SRC, 300, ("query-migrate", 16)),
         Action(Kind.QUERY, Side.SRC, 300, ("query-migrate-parameters", 16)),
         Action(Kind.TERM, Side.SRC, 300))
PADDING = (Action(Kind.QUERY, Side.DST, 50, ("query-status", 2)),
           Action(Kind.SET_PARAM, Side.SRC, 120, ("announce-rounds", 1000)),
           Action(Kind.SET_CAP, Side.DST, 200, ("xbzrle", True)))


@pytest.fixture(autouse=True)
def _quiet():
    quiet_expected_noise()


def test_clean_plan_passes_all_oracles(base_spec, tmp_path):
    plan = ChaosPlan(1, PADDING, 300)
    v = chaos_attempt(TestRun(tmp_path / "a"), base_spec, plan)
    assert v.kind is VerdictKind.CLEAN, (v.signature, v.detail, v.applied)
    assert [r for _, r in v.applied] == ["flooded 2", "ok", "ok"] or v.applied[2][1].startswith("error")


def test_killing_the_destination_is_not_a_violation_but_source_keeps_its_guest(base_spec, tmp_path):
    plan = ChaosPlan(2, (Action(Kind.KILL_PEER, Side.SRC, 200),), 300)
    v = chaos_attempt(TestRun(tmp_path / "k"), base_spec, plan)
    assert v.kind is VerdictKind.CLEAN, (v.signature, v.detail, v.applied)


def test_real_crash_is_caught_by_the_oracles(base_spec, tmp_path):
    """The seed bug mid-migration: query bursts on both monitors + SIGTERM (~10%)."""
    plan = ChaosPlan(3, CAUSE, 300)
    for i in range(60):
        v = chaos_attempt(TestRun(tmp_path / f"hunt-{i}"), base_spec, plan)
        if v.kind is VerdictKind.CRASH:
            assert v.signature.startswith("crash SIG")
            assert (tmp_path / f"hunt-{i}" / "source" / "outcome.json").exists()
            return
        assert v.kind is VerdictKind.CLEAN, (v.signature, v.detail)
    pytest.fail("no crash in 60 runs of a plan that crashes ~10% of the time")


def test_hang_is_minimised_exported_and_reproduced_standalone(base_spec, tmp_path):
    """A frozen source (SIGSTOP) is a deterministic violation: the whole pipeline
    must strip the padding, zero the timings and export a script that hits."""
    plan = ChaosPlan(4, tuple(sorted(PADDING[:2] + (Action(Kind.SIGSTOP, Side.SRC, 250),),
                                     key=lambda a: a.at_ms)), 300)
    v = chaos_attempt(TestRun(tmp_path / "first"), base_spec, plan)
    assert v.kind is VerdictKind.HANG and v.signature == "hang: src does not answer query-status"
    assert "Thread" in (tmp_path / "first" / "source" / "hang-backtrace.txt").read_text()
    res = minimise(plan, v.signature, base_spec, tmp_path / "min", budget_s=240, rate_runs=1)
    assert [a.kind for a in res.minimal.actions] == [Kind.SIGSTOP], res.log
    assert res.minimal.actions[0].at_ms == 0 and res.final_rate == 1.0
    script = export_chaos(res.minimal, v.signature, tmp_path / "first", tmp_path / "repro.py",
                          {"max-bandwidth": tuning.CONVERGE_BANDWIDTH, "downtime-limit": 30000},
                          {"max-bandwidth": tuning.NON_CONVERGE_BANDWIDTH, "downtime-limit": 1})
    ok, last = run_script(script, attempts=2, seconds=120)
    assert ok and "hits 2" in last, last
