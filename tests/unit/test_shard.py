"""--shard K/N: a deterministic split balanced by measured duration."""
from __future__ import annotations

import pytest

from harness import shard


def test_parse():
    assert shard.parse("2/3") == shard.Shard(2, 3)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0", ""):
        with pytest.raises(shard.ShardError):
            shard.parse(bad)


def test_every_test_in_exactly_one_shard_and_balanced():
    ids = [f"t.py::test[{i}]" for i in range(20)]
    durations = {i: float(n) for n, i in enumerate(ids)}
    parts = shard.assign(ids, durations, 3)
    flat = [t for p in parts for t in p]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    loads = [sum(durations[t] for t in p) for p in parts]
    assert max(loads) - min(loads) <= max(durations.values())   # LPT bound
    # the same split whatever order the tests were collected in
    assert [sorted(p) for p in parts] == [sorted(p) for p in shard.assign(ids[::-1], durations, 3)]


def test_unknown_tests_count_as_the_median_and_copies_share():
    d = {"a": 10.0, "b": 1.0, "c": 1.0}
    parts = shard.assign(["a", "b", "c", "x"], d, 2)
    assert parts[0] == ["a"] and sorted(parts[1]) == ["b", "c", "x"]
    assert shard.base_id("t.py::test_scenario[/migration/precopy/tcp/plain-h3]") == \
        "t.py::test_scenario[/migration/precopy/tcp/plain]"


def test_store_merges(tmp_path):
    f = tmp_path / "d.json"
    shard.store_durations(f, {"a": 1.234})
    shard.store_durations(f, {"b[x-h2]": 2})
    assert shard.load_durations(f) == {"a": 1.23, "b[x]": 2.0}
    f.write_text("[1]")
    with pytest.raises(shard.ShardError):
        shard.load_durations(f)
