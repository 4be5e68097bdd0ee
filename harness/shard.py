"""Split the selected tests over N CI jobs: `pytest --shard K/N`.

Deterministic (every job computes the same split from the same inputs, with no
coordination) and balanced by measured duration: tests are taken longest first and each
goes to the shard with the least total so far (LPT), ties broken by test id. Durations
come from a JSON file ({test id: seconds}, `tests/durations.json` in this repo, refreshed
with `--store-durations`); a test without a measurement counts as the median of the known
ones. A shard may be empty when N exceeds the number of tests.
"""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

DEFAULT_SECONDS = 1.0
# Hammer copies (--hammer N) share the original's measurement.
_COPY = re.compile(r"(-h\d+)(?=\]$)|(?<=\[)h\d+-")


class ShardError(ValueError):
    """A bad --shard or durations file: one line for the user."""


@dataclass(frozen=True)
class Shard:
    index: int   # 1-based, as users count
    total: int

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


def parse(text: str) -> Shard:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise ShardError(f"--shard {text!r} must look like K/N, e.g. 1/4")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise ShardError(f"--shard {text}: K must be between 1 and N (N >= 1)")
    return Shard(k, n)


def base_id(test_id: str) -> str:
    return _COPY.sub("", test_id)


def load_durations(path: Path | None) -> dict[str, float]:
    """{test id: seconds}; {} when the file does not exist."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ShardError(f"durations file {path}: not JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
        raise ShardError(f"durations file {path}: must map test ids to seconds")
    return {str(k): float(v) for k, v in data.items()}


def store_durations(path: Path, measured: Mapping[str, float]) -> None:
    """Merge this run's measurements into the file (sorted keys: reviewable diffs)."""
    data = load_durations(path)
    data.update({base_id(k): round(v, 2) for k, v in measured.items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(dict(sorted(data.items())), indent=1) + "\n")


def assign(test_ids: Iterable[str], durations: Mapping[str, float], total: int) -> list[list[str]]:
    """The tests of each shard (0-based list), in their original order within a shard."""
    ids = list(test_ids)
    known = [durations[base_id(t)] for t in ids if base_id(t) in durations]
    default = statistics.median(known) if known else DEFAULT_SECONDS
    cost = {t: durations.get(base_id(t), default) for t in ids}
    loads = [0.0] * total
    owner: dict[str, int] = {}
    for t in sorted(ids, key=lambda t: (-cost[t], t)):
        k = min(range(total), key=lambda i: (loads[i], i))
        owner[t] = k
        loads[k] += cost[t]
    return [[t for t in ids if owner[t] == k] for k in range(total)]


def select(test_ids: Iterable[str], durations: Mapping[str, float], shard: Shard) -> set[str]:
    return set(assign(test_ids, durations, shard.total)[shard.index - 1])
