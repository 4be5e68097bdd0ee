
from harness.report.reproducer import match_for
from harness.stress.command import slug
from harness.stress.hammer import attempt_seed, draw_attempt, with_malloc_perturb
from harness.stress.known_bugs import match
from harness.stress.races import ShutdownRace
from harness.stress.triage import AttemptRecord, EvidenceBudget, Triage
from harness.qemu.spec import MachineSpec

import re

SEED_SIG = "crash SIGABRT: migrate_mode: Assertion 'mode >= 0 && mode < MIG_MODE__MAX' failed"


def test_replaying_a_seed_draws_the_same_attempt():
    race = ShutdownRace(randomize=True)
    for s in (1, 2, 12345):
        assert draw_attempt(race, s, True) == draw_attempt(race, s, True)
    draws = {draw_attempt(race, s, True) for s in range(50)}
    assert len(draws) > 10  # and different seeds really vary it


def test_attempt_seeds_are_stable_and_distinct():
    assert attempt_seed(7, 0, 3) == attempt_seed(7, 0, 3)
    assert len({attempt_seed(7, w, i) for w in range(4) for i in range(100)}) == 400


def test_malloc_perturb_replaces_not_duplicates():
    spec = with_malloc_perturb(MachineSpec(binary="q"), 5)
    spec = with_malloc_perturb(spec, 9)
    assert spec.env == (("MALLOC_PERTURB_", "9"),)
    assert with_malloc_perturb(spec, None) is spec


def rec(sig, ok=False, kind="crash", art="a"):
    return AttemptRecord("w0", 0, 1, {}, kind, sig, ok, 0.1, art)


def test_triage_counts_rates_and_first_artifacts():
    t = Triage()
    t.add(rec("clean exit", ok=True, kind="clean"), 0.1)
    t.add(rec(SEED_SIG, art="first"), 0.5)
    t.add(rec(SEED_SIG, art="second"), 0.9)
    t.add(rec("hang: x", kind="hang"), 1.0)
    assert t.attempts == 4 and t.count("crash") == 2 and t.count("hang") == 1
    assert t.first_failure_at == 0.5
    j = t.to_json()
    top = j["signatures"][0]
    assert top["signature"] == SEED_SIG and top["count"] == 2 and top["rate"] == 0.5
    assert top["first_artifacts"] == "first"
    assert "50.00%" in t.table()


def test_evidence_budget_per_class():
    b = EvidenceBudget(per_class=2)
    err = "q: migration/options.c:766: migrate_mode: Assertion `x' failed.\n"
    assert [b(-6, err) for _ in range(3)] == [True, True, False]
    assert b(-11, "") is True  # another class has its own budget
    assert sum(b(-11, "") for _ in range(40)) == 19  # no assertion: 10x the budget


def test_known_bug_matching():
    assert match(SEED_SIG).summary.startswith("query-migrate dispatched")
    assert match("crash SIGSEGV: in aio_co_wake <- json_message_process_token") is not None
    assert match("crash SIGSEGV: in qmp_query_migrate_parameters <- qmp_marshal_x") is not None
    assert match("crash SIGSEGV: in virtio_net_receive") is None


def test_reproducer_match_tolerates_quote_style_and_line_numbers():
    m = match_for({"returncode": -6, "assertion":
                    "qemu-system-x86_64: migration/options.c:766: migrate_mode: Assertion `mode >= 0' failed."})
    assert m["returncode"] == -6
    assert re.search(m["stderr"], "x: ../migration/options.c:901: migrate_mode: Assertion 'mode >= 0' failed.")
    assert match_for({"kind": "hang"}) == {"hang": True}


def test_slug():
    assert slug(SEED_SIG) == "crash-SIGABRT-migrate_mode-Assertion-mode-0"


def test_wilson_interval_matches_known_values():
    from harness.stress.stats import wilson
    lo, hi = wilson(5, 10)
    assert abs(lo - 0.2366) < 1e-3 and abs(hi - 0.7634) < 1e-3
    lo, hi = wilson(0, 20)          # no hits is not "rate 0": the upper bound stays honest
    assert lo == 0.0 and abs(hi - 0.1611) < 1e-3
    lo, hi = wilson(20, 20)
    assert abs(lo - 0.8389) < 1e-3 and hi == 1.0
    assert wilson(0, 0) == (0.0, 1.0)
    narrow, wide = wilson(50, 100), wilson(5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_triage_rates_are_per_inner_attempt_with_interval_and_known_mark():
    t = Triage()
    url = "https://bugs.example/1"
    # Three test runs: 10 inner attempts with 4 known hits, 10 with none, 10 with one new crash.
    t.add_run(10, [{"signature": SEED_SIG, "kind": "crash", "known": url, "artifacts": f"a{i}"}
                   for i in range(4)])
    t.add_run(10, [])
    t.add_run(10, [{"signature": "crash SIGSEGV: in foo", "kind": "crash", "known": None}])
    assert t.runs == 3 and t.attempts == 30
    assert t.hits() == 5 and t.hits(known=True) == 4 and t.hits(known=False) == 1
    j = t.to_json()
    top = j["signatures"][0]
    assert top["known"] == url and top["count"] == 4 and abs(top["rate"] - 4 / 30) < 1e-9
    lo, hi = top["rate_95"]
    assert lo < 4 / 30 < hi and abs(hi - 0.2972) < 1e-3
    table = t.table()
    assert "30 attempts" in table and f"known: {url}" in table and "NEW" in table
    assert "13.33%" in table and "[5.3%-29.7%]" in table


def test_a_plain_test_failure_is_listed_but_not_a_hit():
    t = Triage()
    t.add_run(1, [{"signature": "test failed: AssertionError: x", "kind": "fail"}])
    assert t.hits() == 0 and "test failure" in t.table()


def test_hammer_exit_status():
    from harness.stress.command import exit_status
    t = Triage()
    t.add_run(5, [])
    assert exit_status(t, allow_known=False) == 0
    t.add_run(5, [{"signature": SEED_SIG, "kind": "crash", "known": "u"}])
    assert exit_status(t, allow_known=False) == 1
    assert exit_status(t, allow_known=True) == 0
    t.add_run(5, [{"signature": "hang: x", "kind": "hang", "known": None}])
    assert exit_status(t, allow_known=True) == 1
    clean = Triage()
    clean.errors = [{"error": "boom"}]
    assert exit_status(clean, allow_known=True) == 1   # harness errors are not a clean run


def test_cores_are_sampled_only_once_the_evidence_is_in():
    err = "q: migration/options.c:766: migrate_mode: Assertion `x' failed.\n"
    always = EvidenceBudget(per_class=1)
    assert all(always.cores_wanted() for _ in range(5))
    b = EvidenceBudget(per_class=1, sample_every=4)
    assert b.cores_wanted()            # before any crash
    b(-6, err)                         # the seed class got its evidence
    wanted = [b.cores_wanted() for _ in range(8)]
    assert sum(wanted) == 2            # one launch in four
    assert not b.cores_wanted()
    b(-11, "")                         # a crash without assertion and without a core...
    assert all(b.cores_wanted() for _ in range(3))   # ...cores stay on until one has a core
    b(-6, err)                         # the seed class needs no core to be told apart
    assert b.cores_wanted()
    b(-11, "")                         # this SIGSEGV had its core
    assert sum(b.cores_wanted() for _ in range(8)) == 2


def test_a_signature_rate_counts_only_the_tests_it_happened_in():
    t = Triage()
    race, other = "t.py::test_race[/r]", "t.py::test_precopy[/p]"
    for _ in range(3):                    # three hammered copies of each test
        t.add_run(10, [{"signature": SEED_SIG, "kind": "crash", "known": "u"}] * 2, test=race)
        t.add_run(1, [], test=other)
    (row,) = t.rows()
    assert t.attempts == 33 and t.denominator(row) == 30
    assert t.rate(row)[0] == 6 / 30
    assert t.to_json()["signatures"][0]["attempts"] == 30


def test_hammer_copies_share_one_test_id():
    from harness.stress.pytest_hammer import base_test_id
    assert base_test_id("t.py::test_race[/r/sigterm-h3]") == "t.py::test_race[/r/sigterm]"
    assert base_test_id("t.py::test_aborts[h12]") == "t.py::test_aborts"
    assert base_test_id("t.py::test_x[a-b]") == "t.py::test_x[a-b]"
