"""A failed test, summarised signature first: what pytest's summary line, the JUnit
<failure message> and its text start with, and what goes into JUnit's system-out.

    <signature>
    artifacts: <dir>
    known bug: <url>                  (a KnownBugHit under --runxfail)
    cause: destination: <QEMU's own error line> (<what it means>)
    <the rest of the harness's message: evidence, stderr excerpt>

No pytest here: the plugin turns a FailureSummary into its report objects.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.migration.explain import Cause, peer_cause
from harness.qemu.machine import MachineFailure
from harness.qemu.qmp import QMPCommandError, QMPTimeout

STDERR_TAIL_LINES = 10
SIGNATURE_MAX = 300
# Evidence files worth a click in GitLab's test report, most telling first.
ATTACH = ("backtrace.txt", "hang-backtrace.txt", "outcome.json", "stderr.log")


@dataclass(frozen=True)
class MachineTail:
    name: str
    artifacts: Path
    stderr_tail: tuple[str, ...]


@dataclass(frozen=True)
class FailureSummary:
    signature: str
    artifacts: Path | None
    details: tuple[str, ...]          # lines after signature and artifacts
    location: str                     # "path:line" where the harness raised it
    attachments: tuple[Path, ...]
    machines: tuple[MachineTail, ...]

    def text(self) -> str:
        head = [self.signature, f"artifacts: {self.artifacts if self.artifacts else '(none)'}"]
        return "\n".join(head + list(self.details))

    def system_out(self) -> str:
        """GitLab attachment lines, then the last stderr lines of every QEMU."""
        out = [f"[[ATTACHMENT|{_display(p)}]]" for p in self.attachments]
        for m in self.machines:
            out.append(f"--- {m.name}: last {len(m.stderr_tail)} stderr lines ({_display(m.artifacts)}/stderr.log)")
            out.extend(m.stderr_tail or ("(empty)",))
        return "\n".join(out)


def is_harness_failure(exc: BaseException) -> bool:
    """A failure the harness raised (crash, hang, failed migration, integrity, QMP error,
    known bug): its traceback is plumbing. A test's own assert is not."""
    for e in _chain(exc):
        if isinstance(e, (MachineFailure, QMPCommandError, QMPTimeout)):
            return True
        if type(e).__module__.startswith("harness.") or _raised_in_harness(e):
            return True
    return False


_PACKAGE = Path(__file__).resolve().parent


def _raised_in_harness(e: BaseException) -> bool:
    """A plain AssertionError/RuntimeError raised by harness code (a flow's check)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    return str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(str(_PACKAGE) + os.sep)


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return out


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def _strip_prefix(line: str) -> str:
    # "known bug https://...: <inner message>" -> the inner message
    return re.sub(r"^known bug \S+: ", "", line)


def summarize(exc: BaseException, machines, artifacts: Path | None,
              location: str = "") -> FailureSummary:
    """Summarise a failed test from its exception and the machines it ran."""
    chain = _chain(exc)
    known = next((e for e in chain if type(e).__name__ == "KnownBugHit"), None)
    # The deepest harness exception says what happened; wrappers only add context.
    root = next((e for e in reversed(chain) if is_harness_failure(e)), exc)
    details: list[str] = []
    if isinstance(root, MachineFailure):
        text = str(root)
        signature = root.outcome.signature
        # failure_message(): signature, artifacts, then evidence
        details += [_core_gz(ln) for ln in text.splitlines()[2:]]
    else:
        text = str(root) or type(root).__name__
        signature = _strip_prefix(_first_line(text)) or type(root).__name__
        details += text.splitlines()[1:]
    if known is not None:
        m = re.match(r"known bug (\S+): ", str(known))
        details.insert(0, f"known bug: {m.group(1) if m else _first_line(str(known))}")
    stderrs = [(m.name, m.stderr_text()) for m in machines]
    cause: Cause | None = peer_cause(str(root), stderrs) if _is_migration_failure(root) else None
    if cause is not None:
        signature = f"{signature}; {cause.side}: {cause.line}"
        why = f" ({cause.meaning})" if cause.meaning else ""
        details.insert(0, f"cause: {cause.side}: {cause.line}{why}")
    tails = tuple(MachineTail(m.name, m.artifacts, tuple(
        [ln for ln in text.splitlines() if ln.strip()][-STDERR_TAIL_LINES:]))
        for m, (_, text) in zip(machines, stderrs))
    return FailureSummary(signature=_truncate(signature), artifacts=artifacts,
                          details=tuple(details), location=location or _raised_at(root),
                          attachments=_attachments(machines), machines=tails)


def _core_gz(line: str) -> str:
    """'core: DIR/core' once the core was packed (harness.evidence) names DIR/core.tar.gz."""
    if line.startswith("core: ") and not Path(line[6:]).exists() and Path(line[6:] + ".tar.gz").exists():
        return line + ".tar.gz"
    return line


def _raised_at(e: BaseException) -> str:
    """'path:line' of the frame that raised e (the innermost one)."""
    tb = e.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{_display(Path(tb.tb_frame.f_code.co_filename))}:{tb.tb_lineno}"


def _is_migration_failure(e: BaseException) -> bool:
    # MigrationStateError ("source: migration failed: ...") and refusals of migrate commands
    return (type(e).__name__ == "MigrationStateError" or isinstance(e, QMPCommandError)
            or re.search(r"migration (failed|cancelled)", str(e)) is not None)


def _attachments(machines) -> tuple[Path, ...]:
    out = []
    for name in ATTACH:
        for m in machines:
            p = Path(m.artifacts) / name
            if p.is_file() and p.stat().st_size:
                out.append(p)
    return tuple(out)


def _display(p: Path) -> str:
    """Relative to the working directory when below it: CI attachments are repo paths."""
    rel = os.path.relpath(p)
    return str(p) if rel.startswith("..") else rel


def _truncate(s: str) -> str:
    return s if len(s) <= SIGNATURE_MAX else s[:SIGNATURE_MAX - 3] + "..."
