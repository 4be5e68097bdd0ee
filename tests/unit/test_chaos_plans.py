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
    assert seen == set(Kind)


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
