"""Triage: group failures by signature, count them, keep the first evidence.

A signature is the Outcome's (kind, signal, assertion text or top frames);
records from any number of workers are merged here.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class AttemptRecord:
    """One attempt's result, as sent from a worker (JSON-able)."""

    worker: str
    index: int
    seed: int
    variant: dict
    kind: str                  # outcome kind name (clean, crash, hang, ...)
    signature: str
    ok: bool
    seconds: float
    artifacts: str | None = None
    malloc_perturb: int | None = None
    evidence: bool = False     # core + backtrace collected for this one
    notes: list = field(default_factory=list)  # what QEMU did (recipes that observe)
    coverage: list = field(default_factory=list)  # chaos: state-coverage tuples reached
    new_coverage: int = 0                         # chaos: how many were new to this worker


@dataclass
class SignatureStats:
    signature: str
    kind: str
    count: int = 0
    first_artifacts: str | None = None
    first_seed: int | None = None
    first_variant: dict = field(default_factory=dict)
    reproducer: str | None = None


class Triage:
    def __init__(self):
        self.attempts = 0
        self.by_sig: dict[str, SignatureStats] = {}
        self.first_failure_at: float | None = None
        self.observations: dict[str, int] = {}
        self.coverage: set[str] = set()     # chaos: every coverage tuple any worker reached

    def add(self, rec: AttemptRecord, elapsed: float | None = None) -> SignatureStats | None:
        self.attempts += 1
        self.coverage.update(rec.coverage)
        for n in rec.notes:
            self.observations[n] = self.observations.get(n, 0) + 1
        if rec.ok:
            return None
        st = self.by_sig.get(rec.signature)
        if st is None:
            st = self.by_sig[rec.signature] = SignatureStats(rec.signature, rec.kind)
        st.count += 1
        if st.first_artifacts is None and rec.artifacts:
            st.first_artifacts, st.first_seed, st.first_variant = rec.artifacts, rec.seed, rec.variant
        if self.first_failure_at is None and elapsed is not None:
            self.first_failure_at = elapsed
        return st

    def count(self, kind: str) -> int:
        return sum(s.count for s in self.by_sig.values() if s.kind == kind)

    def rows(self) -> list[SignatureStats]:
        return sorted(self.by_sig.values(), key=lambda s: -s.count)

    def table(self) -> str:
        if not self.by_sig:
            return f"no failures in {self.attempts} attempts"
        lines = [f"{'count':>6} {'rate':>7}  signature", f"{'':>6} {'':>7}  first artifacts | reproducer"]
        for s in self.rows():
            rate = s.count / self.attempts if self.attempts else 0.0
            lines.append(f"{s.count:>6} {rate:>7.2%}  {s.signature}")
            lines.append(f"{'':>6} {'':>7}  {s.first_artifacts or '-'} | {s.reproducer or '-'}")
        return "\n".join(lines)

    def observation_table(self, top: int = 30) -> str:
        rows = sorted(self.observations.items(), key=lambda kv: -kv[1])[:top]
        return "\n".join(f"{n:>6}  {text}" for text, n in rows)

    def to_json(self) -> dict:
        return {"attempts": self.attempts, "first_failure_s": self.first_failure_at,
                "observations": dict(sorted(self.observations.items(), key=lambda kv: -kv[1])),
                "signatures": [dict(asdict(s), rate=(s.count / self.attempts if self.attempts else 0.0))
                               for s in self.rows()]}

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


class EvidenceBudget:
    """Core + gdb cost ~0.5-2 s a crash: collect them for the first few crashes of
    each (signal, assertion) class only, so hammering stays fast."""

    def __init__(self, per_class: int = 3, sample_every: int = 8):
        self.per_class = per_class
        self.sample_every = sample_every
        self.seen: dict[tuple, int] = {}
        self.launches = 0
        self.hungry = False   # the last crash's class still wants evidence

    def _limit(self, key: tuple) -> int:
        # Without an assertion line only the backtrace tells crashes apart.
        return self.per_class if key[1] else self.per_class * 10

    def cores_wanted(self) -> bool:
        """Should the next QEMU dump core if it crashes? Writing a core costs ~0.3 s at
        exit (twice a whole clean attempt) even when nobody reads it. Cores stay on
        until per_class crashes were seen, while the last crash's class is short of
        evidence, and on one launch in sample_every (so a new class gets its core)."""
        self.launches += 1
        crashes = sum(n for (rc, _), n in self.seen.items() if rc is not None and rc < 0)
        return crashes < self.per_class or self.hungry or self.launches % self.sample_every == 0

    def __call__(self, rc: int, stderr: str) -> bool:
        from harness.qemu.outcome import normalize_assertion, parse_assertion
        a = parse_assertion(stderr)
        key = (rc, normalize_assertion(a) if a else None)
        n = self.seen.get(key, 0)
        self.seen[key] = n + 1
        want = n < self._limit(key)
        if rc is not None and rc < 0:
            self.hungry = n + 1 < self._limit(key)
        return want
