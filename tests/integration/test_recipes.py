"""The cancel and destination-config recipes against real QEMU: every attempt is
judged by the chaos oracles and says what QEMU did."""

import pytest

from harness.stress.oracles import VerdictKind
from harness.stress.hammer import draw_attempt, quiet_expected_noise, run_one
from harness.stress.recipes import CancelRace, DestinationConfigRace

pytestmark = pytest.mark.qemu


@pytest.fixture(autouse=True)
def _quiet():
    quiet_expected_noise()


def test_draws_are_seeded():
    for recipe in (CancelRace(), DestinationConfigRace()):
        assert draw_attempt(recipe, 5, True) == draw_attempt(recipe, 5, True)


@pytest.mark.parametrize("flow, delay", [("precopy", 0), ("multifd", 150), ("postcopy", 400)])
def test_cancel_race_attempt(base_spec, tmp_path, flow, delay):
    race = CancelRace(flow=flow, delay_ms=delay, randomize=False)
    from harness.stress.recipes import cancel_attempt
    from harness.run import TestRun
    v = cancel_attempt(TestRun(tmp_path / "a"), base_spec, race)
    assert v.kind in (VerdictKind.CLEAN, VerdictKind.INCONSISTENT), (v.signature, v.detail)
    assert any(n.startswith("cancel in ") for n in v.notes), v.notes
    assert any(n.startswith("migration ") for n in v.notes), v.notes
    if flow == "postcopy" and "postcopy-active" in " ".join(v.notes):
        assert "cannot cancel" in " ".join(v.notes)


def test_destination_config_race_records_what_qemu_did(base_spec, tmp_path):
    rec = run_one(DestinationConfigRace(), base_spec, tmp_path / "d", seed=11, malloc_perturb=True,
                  keep_passing=True)
    assert rec.ok, rec.signature
    assert any(n.startswith("dst ") for n in rec.notes) and any(n.startswith("migration ") for n in rec.notes)
