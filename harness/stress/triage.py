"""Triage: group failures by signature, count them, keep the first evidence.

A signature is the Outcome's (kind, signal, assertion text or top frames);
records from any number of workers are merged here.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.stress.stats import wilson


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
    known: str | None = None   # the known bug this hit is (its reference), None: new


# Kinds that are hits: QEMU crashed, hung, or went away (killed, exited when it
# should not have). A plain test failure ("fail") is listed but is not a hit.
HIT_KINDS = frozenset({"crash", "hang", "killed", "error", "unexpected-clean", "unexpected_clean"})


@dataclass
class SignatureStats:
    signature: str
    kind: str
    count: int = 0
    first_artifacts: str | None = None
    first_seed: int | None = None
    first_variant: dict = field(default_factory=dict)
    reproducer: str | None = None
    known: str | None = None   # known bug reference; None: a new finding
    tests: list = field(default_factory=list)   # pytest: the tests it happened in

    @property
    def is_hit(self) -> bool:
        return self.kind in HIT_KINDS


UNCLASSIFIED = ("NEW or unclassified: no assertion line and no core to read frames from "
                "(cores are sampled while hammering; later hits of this kind get one)")


def _bare(st: "SignatureStats") -> bool:
    """A crash signature with nothing but its signal: no assertion, no frames."""
    return st.kind == "crash" and ":" not in st.signature


class Triage:
    """Per-attempt counts by signature. An attempt is one try at the race: a CLI
    hammer attempt, a plain test run, or one inner attempt of a test that loops
    (the race tests), so rates are per attempt whatever ran them."""

    def __init__(self):
        self.attempts = 0
        self.runs = 0              # test runs (pytest) or attempts (CLI)
        self.attempts_by_test: dict[str, int] = {}   # pytest: attempts per test (copies merged)
        self.by_sig: dict[str, SignatureStats] = {}
        self.first_failure_at: float | None = None
        self.observations: dict[str, int] = {}
        self.coverage: set[str] = set()     # chaos: every coverage tuple any worker reached
        self.in_budget = 0   # attempts that ended within the time budget (not in the run's tail)

    def add(self, rec: AttemptRecord, elapsed: float | None = None,
            attempts: int = 1) -> SignatureStats | None:
        """One attempt (or one test run covering `attempts` inner attempts whose
        only failure, if any, is rec); returns the signature's stats if not ok."""
        self.attempts += attempts
        self.runs += 1
        self.coverage.update(rec.coverage)
        for n in rec.notes:
            self.observations[n] = self.observations.get(n, 0) + 1
        if rec.ok:
            return None
        return self.add_hit(rec.signature, rec.kind, known=rec.known, artifacts=rec.artifacts,
                            seed=rec.seed, variant=rec.variant, elapsed=elapsed)

    def add_run(self, attempts: int, hits: list[dict], elapsed: float | None = None,
                test: str | None = None) -> None:
        """A test run: its inner attempt count and its hits ({signature, kind, known,
        artifacts}; one per attempt that failed). `test` (the test id without its
        hammer-copy suffix): a signature's rate is then per attempt of the tests it
        happened in, not diluted by every other test of the session."""
        n = max(1, attempts)
        self.attempts += n
        self.runs += 1
        if test is not None:
            self.attempts_by_test[test] = self.attempts_by_test.get(test, 0) + n
        for h in hits:
            st = self.add_hit(h["signature"], h["kind"], known=h.get("known"),
                              artifacts=h.get("artifacts"), elapsed=elapsed)
            if test is not None and test not in st.tests:
                st.tests.append(test)

    def add_hit(self, signature: str, kind: str, *, known: str | None = None,
                artifacts: str | None = None, seed: int | None = None, variant: dict | None = None,
                elapsed: float | None = None) -> SignatureStats:
        st = self.by_sig.get(signature)
        if st is None:
            st = self.by_sig[signature] = SignatureStats(signature, kind, known=known)
        st.count += 1
        if st.first_artifacts is None and artifacts:
            st.first_artifacts, st.first_seed, st.first_variant = artifacts, seed, variant or {}
        if self.first_failure_at is None and elapsed is not None:
            self.first_failure_at = elapsed
        return st

    def count(self, kind: str) -> int:
        return sum(s.count for s in self.by_sig.values() if s.kind == kind)

    def hits(self, known: bool | None = None) -> int:
        """Hits (crash, hang, lost VM); known=True/False: only known/new ones."""
        return sum(s.count for s in self.by_sig.values()
                   if s.is_hit and (known is None or (s.known is not None) == known))

    def rows(self) -> list[SignatureStats]:
        return sorted(self.by_sig.values(), key=lambda s: -s.count)

    def denominator(self, st: SignatureStats) -> int:
        """Attempts the signature's rate is over: those of the tests it happened in
        (pytest), else every attempt (CLI hammer: one recipe)."""
        n = sum(self.attempts_by_test.get(t, 0) for t in st.tests) if st.tests else self.attempts
        return max(n, st.count)

    def rate(self, st: SignatureStats) -> tuple[float, float, float]:
        """Per-attempt rate of one signature and its 95% Wilson interval."""
        n = self.denominator(st)
        lo, hi = wilson(st.count, n)
        return st.count / n if n else 0.0, lo, hi

    def table(self) -> str:
        if not self.by_sig:
            lo, hi = wilson(0, self.attempts)
            return f"no failures in {self.attempts} attempts (95% interval of the rate {lo:.2%}-{hi:.2%})"
        lines = [f"{self.attempts} attempts; rate = count / attempts of the test(s) it happened "
                 f"in, [95% Wilson interval]",
                 f"{'count':>6} {'of':>6} {'rate':>7} {'[95%]':>17}  signature",
                 f"{'':>6} {'':>6} {'':>7} {'':>17}  first artifacts | reproducer"]
        for s in self.rows():
            rate, lo, hi = self.rate(s)
            mark = f"known: {s.known}" if s.known else ("test failure" if not s.is_hit else
                                                        UNCLASSIFIED if _bare(s) else "NEW")
            lines.append(f"{s.count:>6} {self.denominator(s):>6} {rate:>7.2%} "
                         f"{f'[{lo:.1%}-{hi:.1%}]':>17}  {s.signature}")
            lines.append(f"{'':>6} {'':>6} {'':>7} {'':>17}  {mark}")
            lines.append(f"{'':>6} {'':>6} {'':>7} {'':>17}  {s.first_artifacts or '-'} | "
                         f"{s.reproducer or '-'}")
        return "\n".join(lines)

    def observation_table(self, top: int = 30) -> str:
        rows = sorted(self.observations.items(), key=lambda kv: -kv[1])[:top]
        return "\n".join(f"{n:>6}  {text}" for text, n in rows)

    def to_json(self) -> dict:
        sigs = []
        for s in self.rows():
            rate, lo, hi = self.rate(s)
            sigs.append(dict(asdict(s), rate=rate, rate_95=[lo, hi], hit=s.is_hit,
                             attempts=self.denominator(s)))
        return {"attempts": self.attempts, "runs": self.runs, "first_failure_s": self.first_failure_at,
                "hits": self.hits(), "known_hits": self.hits(known=True), "new_hits": self.hits(known=False),
                "observations": dict(sorted(self.observations.items(), key=lambda kv: -kv[1])),
                "signatures": sigs}

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


class EvidenceBudget:
    """Core + gdb cost ~0.5-2 s a crash: collect them for the first few crashes of
    each (signal, assertion) class only, so hammering stays fast."""

    def __init__(self, per_class: int = 3, sample_every: int = 1):
        self.per_class = per_class
        self.sample_every = sample_every   # 1: every QEMU may dump core
        self.seen: dict[tuple, int] = {}
        self.launches = 0
        self.last_cores = True             # what the last cores_wanted() said
        # Crash classes without an assertion line that crashed without a core: only
        # a core's frames tell them apart, so cores stay on until one of them has one.
        self.needs_core: set[tuple] = set()

    def _limit(self, key: tuple) -> int:
        # Without an assertion line only the backtrace tells crashes apart.
        return self.per_class if key[1] else self.per_class * 10

    def cores_wanted(self) -> bool:
        """Should the next QEMU dump core if it crashes? Writing a core costs 0.1-0.3 s
        at exit (about a whole clean attempt) even when nobody reads it. With
        sample_every > 1: cores stay on until per_class crashes were seen and while a
        crash class without an assertion line still lacks a core, and then on one
        launch in sample_every, so a new class still gets its core within a few hits."""
        self.launches += 1
        crashes = sum(n for (rc, _), n in self.seen.items() if rc is not None and rc < 0)
        self.last_cores = (crashes < self.per_class or bool(self.needs_core)
                           or self.launches % self.sample_every == 0)
        return self.last_cores

    def __call__(self, rc: int, stderr: str) -> bool:
        from harness.qemu.outcome import normalize_assertion, parse_assertion
        a = parse_assertion(stderr)
        key = (rc, normalize_assertion(a) if a else None)
        n = self.seen.get(key, 0)
        self.seen[key] = n + 1
        if rc is not None and rc < 0 and key[1] is None:
            (self.needs_core.discard if self.last_cores else self.needs_core.add)(key)
        return n < self._limit(key)
