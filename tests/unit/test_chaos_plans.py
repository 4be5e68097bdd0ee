import random

from harness.stress.actions import Action, Kind, Side, generate, primitive
from harness.stress.chaos import ChaosPlan, ChaosRecipe
from harness.stress.minimise import ddmin, trials_for


def test_same_seed_same_action_sequence():
    r = ChaosRecipe(actions=10, span_ms=3000)
    a = r.draw(random.Random(99))
    b = r.draw(random.Random(99))
    assert a == b and len(a.actions) == 10
    assert [x.at_ms for x in a.actions] == sorted(x.at_ms for x in a.actions)
    assert r.draw(random.Random(100)) != a


def test_plan_round_trips_through_json():
    plan = ChaosRecipe().draw(random.Random(1))
    assert ChaosPlan.from_dict(plan.to_dict()) == plan


def test_every_kind_has_a_primitive():
    rng = random.Random(3)
    seen = set()
    for a in generate(rng, 400, 1000):
        seen.add(a.kind)
        assert primitive(a)[0] in {"qmp", "qmp-oob", "qmp-burst", "signal", "kill-peer", "garbage",
                                  "stray", "cut"}
    assert seen == set(Kind) - {Kind.SIGSTOP}   # weight 0: only in hand-made plans


def test_ddmin_finds_the_culprit_pair():
    calls = []

    def test(sub):
        calls.append(sub)
        return 3 in sub and 7 in sub
    assert sorted(ddmin(list(range(10)), test)) == [3, 7]


def test_ddmin_can_reduce_to_nothing():
    assert ddmin([1, 2, 3], lambda sub: True) == []


def test_trials_scale_with_flakiness():
    assert trials_for(1.0) == 1
    assert trials_for(0.5) == 4      # 0.5^4 < 0.1
    assert trials_for(0.01) == 8     # capped
    assert trials_for(0.0) == 8


def test_action_describe():
    a = Action(Kind.SET_PARAM, Side.DST, 120, ("downtime-limit", 0))
    assert a.describe() == "+120ms dst set-param downtime-limit 0"


def test_minimise_keeps_a_flaky_cause_and_drops_the_noise(tmp_path):
    """A fake QEMU: the bug needs STOP and QUIT on the source and shows half the time."""
    from harness.qemu.spec import MachineSpec
    from harness.stress.chaos import Verdict, VerdictKind
    from harness.stress.minimise import minimise
    coin = random.Random(5)

    def fake_attempt(run, base, plan):
        kinds = {(a.kind, a.side) for a in plan.actions}
        cause = {(Kind.STOP, Side.SRC), (Kind.QUIT, Side.SRC)} <= kinds
        late = any(a.at_ms > 500 for a in plan.actions if a.kind is Kind.QUIT)
        if cause and not late and coin.random() < 0.5:
            return Verdict(VerdictKind.CRASH, "crash SIGABRT: fake")
        return Verdict(VerdictKind.CLEAN, "clean")

    noise = [Action(Kind.QUERY, Side.DST, t, ("query-status", 1)) for t in (10, 40, 90, 300)]
    cause = [Action(Kind.STOP, Side.SRC, 200), Action(Kind.QUIT, Side.SRC, 400)]
    plan = ChaosPlan(1, tuple(sorted(noise + cause, key=lambda a: a.at_ms)), 500)
    res = minimise(plan, "crash SIGABRT: fake", MachineSpec(binary="q"), tmp_path,
                   budget_s=60, rate_runs=8, attempt=fake_attempt)
    assert res.reproducible and 0 < res.original_rate < 1
    assert sorted(a.kind.value for a in res.minimal.actions) == ["quit", "stop"], res.log
    assert all(a.at_ms == 0 for a in res.minimal.actions), res.log
