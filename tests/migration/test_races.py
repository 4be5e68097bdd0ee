"""/migration/races/...: race recipes, hammered until they hit or a budget runs out.

On a QEMU with the shutdown bugs these are strict expected failures that name
the bug; on a fixed QEMU they XPASS (strict), which fails loudly so the
expectation gets updated. Any other crash signature is a new finding: FAIL.

Each attempt is a child run, so the hammer's triage counts attempts, not
tests. After the first hit the test still makes MIN_ATTEMPTS in all: a fixed
sample, so hits/attempts over the hammered copies estimates the per-attempt
rate without the bias of stopping at the first success.
"""
import random
import time

import pytest

from harness.qemu.machine import MachineFailure
from harness.stress import known_bugs
from harness.stress.known_bugs import KnownBugReproduced
from harness.stress.hammer import draw_attempt, with_malloc_perturb
from harness.stress.races import RaceState, ShutdownMethod, ShutdownRace, shutdown_attempt
from harness.stress.triage import EvidenceBudget

BUDGET_SECONDS = 20.0
BUDGET_ATTEMPTS = 300
MIN_ATTEMPTS = 10


RACES = [
    pytest.param(ShutdownRace(method=ShutdownMethod.SIGTERM), marks=[pytest.mark.smoke, pytest.mark.full]),
    pytest.param(ShutdownRace(method=ShutdownMethod.QUIT), marks=pytest.mark.full),
    pytest.param(ShutdownRace(method=ShutdownMethod.SIGINT), marks=pytest.mark.full),
    pytest.param(ShutdownRace(method=ShutdownMethod.SIGTERM, state=RaceState.MIGRATING, monitors=3),
                 marks=pytest.mark.full),
]


@pytest.mark.xfail(raises=KnownBugReproduced, strict=True,
                   reason="QEMU shutdown-race bugs (harness.stress.known_bugs.SHUTDOWN_FAMILY)")
@pytest.mark.parametrize("race", RACES, ids=lambda r: r.path)
def test_shutdown_race(race, harness_run, base_spec, request):
    harness_run.known_bugs = known_bugs.SHUTDOWN_FAMILY
    seed = request.config.getoption("hammer_seed")
    rng = random.Random(f"{seed}:{request.node.nodeid}")
    budget = EvidenceBudget(per_class=1)
    deadline = time.monotonic() + BUDGET_SECONDS
    known, new = [], []
    attempts = 0
    for i in range(BUDGET_ATTEMPTS):
        if time.monotonic() >= deadline or (i >= MIN_ATTEMPTS and (known or new)):
            break
        attempts = i + 1
        attempt_seed = rng.getrandbits(62)
        variant, perturb = draw_attempt(race, attempt_seed, malloc_perturb=True)
        run = harness_run.child(f"attempt-{i:04d}")
        run.want_evidence = budget
        (run.artifacts / "seed.txt").write_text(f"{attempt_seed}\n")
        outcome = shutdown_attempt(run, with_malloc_perturb(base_spec, perturb), variant)
        if outcome.ok:
            run.discard_artifacts()
            continue
        bug = known_bugs.match(outcome.signature)
        (new if bug is None else known).append((outcome, bug, perturb, run.artifacts))
    if new:
        raise MachineFailure(new[0][0])   # a new finding
    if known:
        outcome, bug, perturb, art = known[0]
        raise KnownBugReproduced(f"{outcome.signature} in {len(known)} of {attempts} attempt(s), "
                                 f"first MALLOC_PERTURB_={perturb}: {bug.summary} ({bug.url}); "
                                 f"artifacts: {art}")
