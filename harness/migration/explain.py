"""What a migration failure's text means: QEMU's own error lines, read on both sides.

A source often only sees the broken connection ("Unable to write to socket: Broken
pipe"); the destination's stderr has the real cause. Shared by the pytest plugin's
failure messages and ci/compat-matrix's table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern
    meaning: str          # str.format()ed with the pattern's groups


def _rule(rx: str, meaning: str) -> Rule:
    return Rule(re.compile(rx, re.I | re.M), meaning)


# Most specific first.
RULES: tuple[Rule, ...] = (
    _rule(r"Machine type received is '([^']+)' and local is '([^']+)'",
          "machine type mismatch (source {0}, destination {1})"),
    _rule(r"Unknown savevm section or instance '([^']+)'",
          "the destination does not know device state section '{0}'"),
    _rule(r"Missing section footer for (\S+)", "device state of {0} differs between versions"),
    _rule(r"Unknown ramblock \"([^\"]+)\"", "RAM block '{0}' unknown to the destination"),
    _rule(r"Length mismatch: (\S+)", "RAM block size differs between versions ({0})"),
    _rule(r"error while loading state for instance \S+ of device '([^']+)'",
          "device '{0}' state cannot be loaded by the destination"),
    _rule(r"(?:Capability|capability) '?([\w-]+)'? .*(?:not|requires)[^.\n]*",
          "migration capability {0} differs between versions"),
    _rule(r"no pc-q35-X\.Y machine type shared", "no machine type both versions know"),
    _rule(r"postcopy.*(?:not supported|unsupported)", "postcopy not supported by one side"),
    _rule(r"^userfaultfd: .*", "userfaultfd unavailable"),
    _rule(r"crash (SIG\w+)", "QEMU crashed ({0})"),
    _rule(r"hang: (.*)", "hang: {0}"),
)

# A QEMU error line on stderr: "qemu-system-x86_64: <message>" (the program name may be
# a path or a wrapper's name).
_QEMU_LINE = re.compile(r"^(?:\S*/)?qemu[\w.-]*: (.+)$", re.M)
# Lines that repeat what every failed migration says and explain nothing.
_NOISE = re.compile(r"terminating on signal|load of migration failed: Input/output error$|"
                    r"warning: |info: ", re.I)


@dataclass(frozen=True)
class Cause:
    side: str             # "destination", "source", ...
    line: str             # QEMU's own words
    meaning: str | None   # a RULES explanation, if one matches


def explain(text: str) -> str | None:
    """The explanation of the first rule matching `text`, or None."""
    for rule in RULES:
        m = rule.pattern.search(text)
        if m:
            return rule.meaning.format(*m.groups())
    return None


def stderr_cause(side: str, stderr: str) -> Cause | None:
    """The most telling QEMU error line of one side's stderr: one a rule explains, else
    the last error line that is not noise."""
    lines = [m.group(1).strip() for m in _QEMU_LINE.finditer(stderr)]
    for line in lines:
        meaning = explain(line)
        if meaning:
            return Cause(side, line, meaning)
    rest = [ln for ln in lines if not _NOISE.search(ln)]
    return Cause(side, rest[-1], None) if rest else None


def peer_cause(message: str, stderrs: Iterable[tuple[str, str]]) -> Cause | None:
    """The cause a failure's message does not already say, from (side, stderr) pairs,
    the destination first (it usually knows why)."""
    order = sorted(stderrs, key=lambda s: (s[0] != "destination", s[0]))
    for side, text in order:
        cause = stderr_cause(side, text)
        if cause is not None and cause.line not in message:
            return cause
    return None


def explain_failure(message: str, artifacts: str | Path | None = None) -> str:
    """ci/compat-matrix's 'why' column: QEMU's own stderr first (the destination usually
    knows), then the failure message; else the message's first line."""
    texts = []
    if artifacts:
        root = Path(artifacts)
        for side in ("destination", "source"):
            for f in sorted(root.glob(f"*{side}*/stderr.log")) + sorted(root.glob(f"{side}/stderr.log")):
                texts.append(f.read_text(errors="replace"))
    for t in texts + [message]:
        meaning = explain(t)
        if meaning:
            return meaning
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return first[:160]
