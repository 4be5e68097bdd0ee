"""Version differential: one reproducer's hits/attempts per QEMU binary, with a
95% Wilson score interval, as a table and as JSON.

Pure data and formatting; running the scripts is harness.report.repro_command's job.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Z95 = 1.959964


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a hit rate (sound at 0 and n hits, unlike p +- 2 sigma)."""
    if n <= 0:
        return (0.0, 1.0)
    p = hits / n
    den = 1 + z * z / n
    center = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, center - half), min(1.0, center + half))


def attempts_for(rate_low: float, miss: float = 0.01, lo: int = 10, hi: int = 1000) -> int:
    """Attempts that miss a bug hitting at rate_low with probability <= miss."""
    if rate_low <= 0:
        return hi
    if rate_low >= 1:
        return lo
    return max(lo, min(hi, math.ceil(math.log(miss) / math.log(1 - rate_low))))


@dataclass(frozen=True)
class Row:
    version: str
    binary: str
    hits: int
    attempts: int
    exit_code: int
    signature: str | None = None
    error: str | None = None        # the script broke the contract or could not run
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        if self.error:
            return "error"
        if self.exit_code == 125 or self.attempts == 0:
            return "skip"
        return "affected" if self.hits else "not seen"

    @property
    def rate(self) -> float:
        return self.hits / self.attempts if self.attempts else 0.0

    @property
    def ci(self) -> tuple[float, float]:
        return wilson(self.hits, self.attempts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(verdict=self.verdict, rate=round(self.rate, 4),
                 ci95=[round(x, 4) for x in self.ci])
        return d


@dataclass(frozen=True)
class Differential:
    script: str
    rows: tuple[Row, ...]
    attempts: int
    seconds: float

    @property
    def signature(self) -> str | None:
        return next((r.signature for r in self.rows if r.signature), None)

    @property
    def affected(self) -> tuple[str, ...]:
        return tuple(r.version for r in self.rows if r.verdict == "affected")

    @property
    def unaffected(self) -> tuple[str, ...]:
        return tuple(r.version for r in self.rows if r.verdict == "not seen")

    def to_dict(self) -> dict:
        return {"script": self.script, "signature": self.signature, "attempts": self.attempts,
                "seconds": self.seconds, "rows": [r.to_dict() for r in self.rows],
                "affected": list(self.affected), "unaffected": list(self.unaffected)}

    def table(self) -> str:
        head = ("version", "hits/attempts", "rate", "95% CI", "verdict", "binary")
        body = []
        for r in self.rows:
            lo, hi = r.ci
            body.append((r.version, f"{r.hits}/{r.attempts}", f"{100 * r.rate:.1f}%" if r.attempts else "-",
                         f"[{100 * lo:.1f}%, {100 * hi:.1f}%]" if r.attempts else "-",
                         r.verdict + (f": {r.error}" if r.error else ""), r.binary))
        widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head) - 1)]
        lines = []
        for row in [head, *body]:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        sig = self.signature or "(no hit on any binary)"
        # A build may show the same bug another way (an ASan build names the access).
        other = [f"  {r.version} ({r.binary}): {r.signature}" for r in self.rows
                 if r.signature and r.signature != self.signature]
        return (f"signature: {sig}\n" + "\n".join(lines)
                + ("\nother faces of it:\n" + "\n".join(other) if other else ""))
