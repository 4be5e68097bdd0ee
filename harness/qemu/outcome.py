"""Exit classification for QEMU processes (docs/design.md, principle 3).

Pure functions only: no processes, no files.  The ``Machine`` class gathers the
evidence (return code, stderr, core file, gdb backtrace, hang description) and
calls :func:`classify`, which returns an :class:`Outcome` whose
:attr:`Outcome.signature` is a short string stable across runs (used for triage
and dedupe) and whose :meth:`Outcome.failure_message` is what a failing test
prints.

Return codes follow the :mod:`subprocess` convention: ``-N`` means "killed by
signal N".  A shell (e.g. a remote command over SSH) reports ``128+N`` instead;
see :func:`normalize_returncode`.

What counts as what:

* ``HANG``: the caller says a deadline expired (``hang=...``); whatever the
  process did afterwards (usually we killed it) does not matter.
* ``CRASH``: death by a core-dumping signal (SIGABRT, SIGSEGV, SIGBUS, ...), or
  any exit whose stderr carries crash evidence: a glibc/glib assertion,
  ``g_error``, QEMU's ``error_abort`` / ``cpu_abort`` / ``hw_error``, a sanitizer
  report (ASan exits 1 by default) or a shell's "Segmentation fault" line.
* ``KILLED``: death by a non-core signal (SIGKILL, SIGTERM, ...) that was not
  declared expected: the OOM killer, a stray ``kill``; not a QEMU bug.
* ``EXPECTED_ERROR``: non-zero exit listed in ``expected_returncodes`` (and, if
  given, stderr matching ``expected_stderr_regex``).  A deliberate kill can be
  declared expected with a negative code, e.g. ``(-signal.SIGKILL,)``.
* ``ERROR``: any other non-zero exit (QEMU's own "qemu-system-x86_64: ..." error).
* ``UNEXPECTED_CLEAN``: exit 0 when the test declared it expected a failure.
* ``CLEAN``: exit 0 as expected.  (QEMU exits 0 on SIGTERM/SIGINT/SIGHUP too,
  printing "terminating on signal 15 from pid ..."; that is noted in ``detail``.)
* ``RUNNING``: no return code yet and no hang declared.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import signal as _signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.qemu import sanitizer

__all__ = [
    "OutcomeKind",
    "Outcome",
    "Frame",
    "CORE_SIGNALS",
    "classify",
    "parse_assertion",
    "normalize_assertion",
    "crash_lines",
    "signal_name",
    "normalize_returncode",
    "parse_gdb_threads",
    "crashing_thread_frames",
    "crashing_thread_stack",
    "top_frames",
    "gdb_signal_name",
    "CRASHING_THREAD_MARKER",
    "ALL_THREADS_MARKER",
    "replace",
]


class OutcomeKind(enum.Enum):
    CLEAN = "clean"
    EXPECTED_ERROR = "expected-error"
    UNEXPECTED_CLEAN = "unexpected-clean"
    ERROR = "error"
    CRASH = "crash"
    KILLED = "killed"
    HANG = "hang"
    RUNNING = "running"


#: Signals whose default action dumps core (signal(7)).  Death by one of these
#: is a crash; death by any other signal is "killed".
CORE_SIGNALS = frozenset(
    {
        _signal.SIGABRT,
        _signal.SIGSEGV,
        _signal.SIGBUS,
        _signal.SIGILL,
        _signal.SIGFPE,
        _signal.SIGTRAP,
        _signal.SIGSYS,
        _signal.SIGQUIT,
        _signal.SIGXCPU,
        _signal.SIGXFSZ,
    }
)

# What a shell prints when its child dies (bash/dash strsignal texts).
_SHELL_SIGNAL_TEXT = {
    "Segmentation fault": _signal.SIGSEGV,
    "Aborted": _signal.SIGABRT,
    "Bus error": _signal.SIGBUS,
    "Illegal instruction": _signal.SIGILL,
    "Floating point exception": _signal.SIGFPE,
    "Trace/breakpoint trap": _signal.SIGTRAP,
    "Bad system call": _signal.SIGSYS,
    "Quit": _signal.SIGQUIT,
    "Killed": _signal.SIGKILL,
    "Terminated": _signal.SIGTERM,
}


def signal_name(signum: int) -> str:
    """``6 -> 'SIGABRT'``; unknown numbers give ``'SIG<n>'``."""
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def normalize_returncode(code: int | None, *, from_shell: bool = True) -> int | None:
    """Map a shell-style status (``128+N``, as from ``sh -c`` or SSH) to ``-N``.

    Only codes 129..159 are mapped, and only when ``from_shell`` is true; QEMU
    itself exits 0 or 1, so this is safe for QEMU launched through a shell.
    """
    if code is None or not from_shell:
        return code
    if 128 < code < 160:
        return -(code - 128)
    return code


# --------------------------------------------------------------------------
# stderr parsing
# --------------------------------------------------------------------------

# glibc: "<prog>: <file>:<line>: <func>: Assertion `<expr>' failed."
_GLIBC_ASSERT = re.compile(
    r"^(?:(?P<prog>.*?): )?(?P<file>[^\s:][^:]*):(?P<line>\d+): "
    r"(?P<func>.+?): Assertion [`'](?P<expr>.*)' failed\.?\s*$"
)
# glib: "ERROR:<file>:<line>:<func>: assertion failed: (<expr>)"
#       "ERROR:<file>:<line>:<func>: code should not be reached"
#       "ERROR:<file>:<line>:<func>: assertion failed (a == b): (1 == 2)"
# optionally prefixed by "Bail out! " (g_test mode) or "**" on the previous line.
_GLIB_ASSERT = re.compile(
    r"^(?:Bail out! )?(?:\*\* )?ERROR:(?P<file>[^:\s]+):(?P<line>\d+):(?P<func>[^:]+): "
    r"(?P<msg>(?:assertion failed|code should not be reached|should not be reached).*)$"
)
_BAIL_OUT = re.compile(r"^Bail out! ")
# g_error()/g_critical-with-fatal: "(prog:123): GLib-ERROR **: 12:34:56.789: msg"
#                                  "** (prog:123): ERROR **: 12:34:56.789: msg"
_GLIB_ERROR = re.compile(r"(?:^|\s)(?:[\w-]+-)?ERROR \*\*: (?:\d\d:\d\d:\d\d\.\d+: )?(?P<msg>.*)$")
_QEMU_ERROR_ABORT = re.compile(r"^Unexpected error in (?P<func>[\w.]+)\(\) at (?P<file>[^:]+):(?P<line>\d+):\s*$")
# QEMU's fatal messages, each printed right before it aborts: "fatal:", "hardware error:",
# and runstate_set()'s refusal of a transition its table does not allow.
_QEMU_FATAL = re.compile(r"^qemu(?:-system-\w+)?: (?:(?:fatal|hardware error): (?P<msg>.*)"
                         r"|invalid runstate transition: .*)$")
_SAN_ERROR = re.compile(
    r"^(?:==\d+==)?(?:ERROR|WARNING): (?P<tool>\w+Sanitizer): (?P<msg>.*?)\s*$"
)
_SAN_SUMMARY = re.compile(r"^SUMMARY: (?P<tool>\w+Sanitizer): (?P<msg>.*)$")
_UBSAN = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): runtime error: (?P<msg>.*)$")
_SHELL_SIGNAL = re.compile(
    r"(?:^|\s)(?P<text>" + "|".join(re.escape(t) for t in _SHELL_SIGNAL_TEXT) + r")"
    r"(?:\s+\(core dumped\))?(?:\s|$)"
)
_QEMU_PREFIX = re.compile(r"^(?:\S*/)?qemu[\w.-]*: ")
_TERMINATING = re.compile(r"terminating on signal (?P<sig>\d+)")


def _lines(text: str) -> list[str]:
    return [ln.rstrip("\r") for ln in text.splitlines()]


def parse_assertion(stderr: str) -> str | None:
    """The first assertion failure line in ``stderr``, raw (as printed).

    Recognises glibc ``assert()`` (backtick + quote) and glib ``g_assert*`` /
    ``g_assert_not_reached`` lines (a ``Bail out! `` duplicate is skipped in
    favour of the plain ``ERROR:`` line).  See :func:`normalize_assertion`.
    """
    glib_bail: str | None = None
    for line in _lines(stderr):
        s = line.strip()
        if _GLIBC_ASSERT.match(s):
            return s
        if _GLIB_ASSERT.match(s):
            if _BAIL_OUT.match(s):
                glib_bail = glib_bail or s
                continue
            return s
    return glib_bail


def normalize_assertion(line: str) -> str:
    """Stable form of an assertion line: ``func: Assertion 'expr' failed``.

    Drops the program name and ``file:line`` (line numbers move between
    versions), turns glibc's backtick into a quote, drops the final period.
    Lines that are not assertions are returned stripped.
    """
    s = line.strip()
    m = _GLIBC_ASSERT.match(s)
    if m:
        return f"{m['func']}: Assertion '{m['expr']}' failed"
    m = _GLIB_ASSERT.match(s)
    if m:
        return f"{m['func']}: {m['msg'].rstrip()}"
    return s


def crash_lines(stderr: str) -> tuple[str, ...]:
    """Every stderr line that is evidence of a crash, in order, raw.

    Assertions (glibc, glib), glib ``ERROR **`` lines, ``Bail out!``, QEMU's
    ``Unexpected error in f() at file:line:`` (error_abort) and
    ``qemu: fatal:`` / ``qemu: hardware error:``, sanitizer ``ERROR:`` /
    ``SUMMARY:`` / UBSan ``runtime error:`` lines, and a shell's
    ``Segmentation fault (core dumped)`` line.
    """
    out: list[str] = []
    want_next = False
    for line in _lines(stderr):
        s = line.strip()
        if not s:
            continue
        if want_next:  # the message that error_abort printed after "Unexpected error in"
            want_next = False
            out.append(s)
            continue
        if _QEMU_ERROR_ABORT.match(s):
            out.append(s)
            want_next = True
        elif (
            _GLIBC_ASSERT.match(s)
            or _GLIB_ASSERT.match(s)
            or _BAIL_OUT.match(s)
            or _QEMU_FATAL.match(s)
            or _SAN_ERROR.match(s)
            or _SAN_SUMMARY.match(s)
            or _UBSAN.match(s)
        ):
            out.append(s)
        elif _GLIB_ERROR.search(s) and not _QEMU_PREFIX.match(s):
            out.append(s)
        elif _shell_signal(s) is not None:
            out.append(s)
    return tuple(out)


def _shell_signal(line: str) -> int | None:
    """Signal named by a shell's job message, e.g. ``bash: line 1: 123 Aborted (core dumped) qemu``."""
    if _QEMU_PREFIX.match(line):
        return None  # QEMU's own message, e.g. "... migration Aborted"
    m = _SHELL_SIGNAL.search(line)
    if not m:
        return None
    text = m["text"]
    # Require a job-message shape: the text is the whole line, or is preceded by a pid
    # ("  6617 Aborted") or by "line N: " or followed by "(core dumped)".
    prefix = line[: m.start("text")]
    if (
        line.strip() == text
        or re.search(r"(?:^|\s)\d+\s+$", prefix)
        or "(core dumped)" in line[m.end("text"):]
    ):
        return _SHELL_SIGNAL_TEXT[text]
    return None


def _sanitizer_frames(report: "sanitizer.SanitizerReport | None") -> list[Frame]:
    """The report's access stack as outcome Frames (clone suffixes normalised)."""
    if report is None:
        return []
    return [Frame(sanitizer.normalize_func(f.func), f.location) for f in report.access]


def _last_error_line(stderr: str) -> str | None:
    """The line that best explains a non-zero exit: the last QEMU error (not
    warning, not "terminating on signal"), else the last non-empty line."""
    lines = [ln.strip() for ln in _lines(stderr) if ln.strip()]
    for s in reversed(lines):
        if _QEMU_PREFIX.match(s):
            rest = _QEMU_PREFIX.sub("", s, count=1)
            if rest.startswith("warning:") or _TERMINATING.search(rest):
                continue
            return s
    return lines[-1] if lines else None


_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")
_ABS_PATH = re.compile(r"(?<![\w.])(/[^\s'\"`,;:()\[\]]+)+")
_BIGNUM = re.compile(r"(?<![\w.-])\d{4,}(?![\w.])")
_PID_IN_PARENS = re.compile(r"\((?P<prog>[^():\s]+):\d+\)")


def _normalize_text(s: str) -> str:
    """Remove what varies between runs: addresses, absolute directories, big numbers
    (pids, ports), timestamps; keep file names and words."""
    s = _QEMU_PREFIX.sub("", s.strip(), count=1)
    s = _PID_IN_PARENS.sub(r"(\g<prog>)", s)
    s = re.sub(r"\b\d\d:\d\d:\d\d\.\d+: ", "", s)
    s = re.sub(r"^==\d+==", "", s)
    s = _HEX.sub("0x?", s)
    s = _ABS_PATH.sub(lambda m: ".../" + m.group(0).rstrip("/").rsplit("/", 1)[-1], s)
    s = _BIGNUM.sub("N", s)
    return re.sub(r"\s+", " ", s).strip()


def _truncate(s: str, n: int = 160) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


# --------------------------------------------------------------------------
# gdb output parsing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One gdb/sanitizer frame: function name (``'??'`` when unknown) and location,
    ``'at FILE:LINE'``, ``'from LIB'`` or ``''``."""

    func: str
    location: str = ""


#: Marker lines :func:`harness.qemu.debug.backtrace_from_core` prints around the
#: crashing thread's ``bt`` and the ``thread apply all bt`` sections.
CRASHING_THREAD_MARKER = "==harness: crashing thread=="
ALL_THREADS_MARKER = "==harness: all threads=="

_GDB_FRAME = re.compile(
    r"^#(?P<n>\d+)\s+(?:0x[0-9a-fA-F]+ in )?(?P<rest>.*)$"
)
_GDB_THREAD = re.compile(r"^Thread (?P<n>\d+) \((?P<desc>.*)\):\s*$")
_GDB_CURRENT = re.compile(r"^\[Current thread is (?P<n>\d+) ")
_GDB_SIGNAL = re.compile(r"^Program terminated with signal (?P<sig>SIG\w+)")


def _parse_frame(line: str) -> Frame | None:
    m = _GDB_FRAME.match(line.strip())
    if not m:
        return None
    rest = m["rest"].strip()
    if rest.startswith("<signal handler called>"):
        return Frame("<signal handler called>")
    # "func (args...) at file:line" / "?? () from /lib/x.so" / "func ()"
    idx = rest.find(" (")
    if idx < 0:
        return Frame(rest.split()[0] if rest else "??")
    func = rest[:idx]
    # location: text after the balanced argument list
    depth, end = 0, None
    for i in range(idx + 1, len(rest)):
        c = rest[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                end = i
                break
    loc = rest[end + 1 :].strip() if end is not None else ""
    if not (loc.startswith("at ") or loc.startswith("from ")):
        loc = ""
    return Frame(func, loc)


def _parse_stack(lines: Iterable[str]) -> list[Frame]:
    frames: list[Frame] = []
    for line in lines:
        f = _parse_frame(line)
        if f is not None:
            frames.append(f)
    return frames


def parse_gdb_threads(bt_text: str) -> dict[int, list[Frame]]:
    """``thread apply all bt`` output -> {gdb thread number: frames}."""
    threads: dict[int, list[Frame]] = {}
    cur: int | None = None
    for line in bt_text.splitlines():
        m = _GDB_THREAD.match(line.strip())
        if m:
            cur = int(m["n"])
            threads.setdefault(cur, [])
            continue
        if cur is not None:
            f = _parse_frame(line)
            if f is not None:
                threads[cur].append(f)
    return threads


def gdb_signal_name(bt_text: str) -> str | None:
    """``'SIGABRT'`` from gdb's "Program terminated with signal SIGABRT, Aborted."."""
    for line in bt_text.splitlines():
        m = _GDB_SIGNAL.match(line.strip())
        if m:
            return m["sig"]
    return None


def crashing_thread_stack(bt_text: str) -> list[Frame]:
    """Frames of the thread that received the signal.

    In order of preference: the section after :data:`CRASHING_THREAD_MARKER`
    (the plain ``bt`` printed before ``thread apply all bt``; for a core, gdb's
    current thread is the one that dumped); the thread named by
    ``[Current thread is N ...]`` in the ``thread apply all`` sections; a bare
    stack printed before any ``Thread N`` header; the lowest-numbered thread
    (for a core, gdb's thread 1 is the one that dumped).
    """
    lines = bt_text.splitlines()
    stripped = [ln.strip() for ln in lines]
    if CRASHING_THREAD_MARKER in stripped:
        start = stripped.index(CRASHING_THREAD_MARKER) + 1
        end = len(lines)
        for i in range(start, len(lines)):
            if stripped[i] == ALL_THREADS_MARKER or _GDB_THREAD.match(stripped[i]):
                end = i
                break
        frames = _parse_stack(lines[start:end])
        if frames:
            return frames
    threads = parse_gdb_threads(bt_text)
    current = None
    for s in stripped:
        m = _GDB_CURRENT.match(s)
        if m:
            current = int(m["n"])
            break
    if current is not None and threads.get(current):
        return threads[current]
    # a bare "bt" (no Thread headers before it); skip gdb's one-line "#0 ..." echo
    # of the current frame that precedes "[Current thread is ...]".
    bare: list[Frame] = []
    for s in stripped:
        if _GDB_THREAD.match(s) or s == ALL_THREADS_MARKER:
            break
        f = _parse_frame(s)
        if f is not None:
            if s.startswith("#0") and bare:
                bare = []  # a new stack starts
            bare.append(f)
    if len(bare) > 1 or (bare and not threads):
        return bare
    for n in sorted(threads):
        if threads[n]:
            return threads[n]
    return bare


def crashing_thread_frames(bt_text: str) -> tuple[str, ...]:
    """Function names (``'??'`` when unknown) of the crashing thread, innermost
    first, unfiltered.  See :func:`crashing_thread_stack` and :func:`top_frames`."""
    return tuple(f.func for f in crashing_thread_stack(bt_text))


# Frames that are crash machinery, never the bug's location.
_MACHINERY = re.compile(
    r"^(?:__GI_|__pthread_kill|pthread_kill|raise$|abort$|__assert_fail|__assert_perror_fail|"
    r"__libc_message|__fortify_fail|__chk_fail|__stack_chk_fail|"
    r"g_assertion_message|g_assert_warning|g_log|g_logv$|_g_log_abort|g_log_default_handler|"
    r"g_log_structured|g_log_writer|g_error|g_return_if_fail_warning|"
    r"__sanitizer|__asan|__ubsan|__lsan|__tsan|__interceptor_|__interceptor|___interceptor_|"
    r"error_handle_fatal|error_setv|error_setg_internal|error_propagate)"
)
_LIBC_SOURCES = re.compile(
    r"^at \.{1,2}/(?:nptl|sysdeps|stdlib|assert|signal|string|posix|misc|io|elf|malloc|libio|"
    r"csu|debug|wcsmbs|stdio-common|time|socket|resolv|login|dirent)/"
)
_LIB_FROM = re.compile(r"^from \S*/lib[^/]*\.so")
_RUNTIME_TAIL = {"start_thread", "clone", "clone3", "__clone", "__clone3", "__libc_start_main",
                 "__libc_start_call_main", "_start"}


def _is_library(f: Frame) -> bool:
    if f.func in _RUNTIME_TAIL:
        return True
    if _LIBC_SOURCES.match(f.location) or _LIB_FROM.match(f.location):
        return True
    return bool(_MACHINERY.match(f.func))


def top_frames(frames: Sequence[Frame], limit: int = 10) -> tuple[str, ...]:
    """The crashing thread's QEMU frames, innermost first.

    Everything up to a ``<signal handler called>`` frame is dropped (a handler's
    own stack); libc (by glibc source path or ``from lib*.so``), glib
    assertion/log machinery, sanitizer runtime and thread start-up frames are
    skipped.  ``'??'`` frames of the QEMU binary are kept (stripped builds).  If
    nothing is left, the non-machinery library frames are returned instead.
    """
    frames = list(frames)
    for i, f in enumerate(frames):
        if f.func == "<signal handler called>":
            frames = frames[i + 1 :]
            break
    own = [f.func for f in frames if not _is_library(f)]
    if not own:
        own = [f.func for f in frames if not _MACHINERY.match(f.func) and f.func not in _RUNTIME_TAIL]
    return tuple(own[:limit])


def _frames_phrase(names: Sequence[str], n: int = 2) -> str | None:
    named = [x for x in names if x not in ("??", "<signal handler called>")]
    if not named:
        return None
    return "in " + " <- ".join(named[:n])


# --------------------------------------------------------------------------
# Outcome
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    returncode: int | None = None
    signal_name: str | None = None
    #: first assertion failure line, raw (glibc or glib); see :func:`normalize_assertion`
    assertion: str | None = None
    #: every crash-evidence line of stderr (:func:`crash_lines`), raw
    crash_lines: tuple[str, ...] = ()
    core: Path | None = None
    #: why there is no core, when known ("core piped to ..., not collected")
    core_note: str | None = None
    backtrace: str | None = None
    top_frames: tuple[str, ...] = ()
    artifact_dir: Path | None = None
    #: one line saying why this kind was chosen
    detail: str = ""
    #: the deadline that expired, for HANG
    hang: str | None = None
    #: whether this matches what the caller declared expected
    expected: bool = False
    #: last lines of stderr, for the failure message
    stderr_tail: str = ""
    #: sanitizer tool and bug kind, e.g. ("AddressSanitizer", "heap-use-after-free")
    sanitizer: tuple[str, str] | None = None
    #: the first sanitizer report: access/free/alloc stacks (harness.qemu.sanitizer)
    sanitizer_report: sanitizer.SanitizerReport | None = dataclasses.field(default=None, compare=False)

    def top_locations(self, limit: int = 5) -> tuple[str, ...]:
        """The top frames with their source location, 'func (file.c:123)', when the
        build has debug info (a sanitizer report or gdb on a debug build); () otherwise."""
        if self.sanitizer_report is not None:
            frames = _sanitizer_frames(self.sanitizer_report)
        elif self.backtrace:
            frames = crashing_thread_stack(self.backtrace)
            for i, f in enumerate(frames):
                if f.func == "<signal handler called>":
                    frames = frames[i + 1:]
                    break
        else:
            return ()
        own = [f for f in frames if not _is_library(f)]
        if not any(f.location.startswith("at ") for f in own[:limit]):
            return ()
        out = []
        for f in own[:limit]:
            where = f.location[3:].rsplit("/", 1)[-1] if f.location.startswith("at ") else ""
            out.append(f"{f.func} ({where})" if where else f.func)
        return tuple(out)

    @property
    def ok(self) -> bool:
        """True when the exit is what the test expected (clean or expected error)."""
        return self.kind in (OutcomeKind.CLEAN, OutcomeKind.EXPECTED_ERROR)

    @property
    def is_failure(self) -> bool:
        """An exit the test did not declare: fails the test."""
        return not self.ok

    def to_dict(self) -> dict:
        """JSON-able summary (no backtrace text: that lives in its own file)."""
        return {"kind": self.kind.name.lower(), "signature": self.signature,
                "returncode": self.returncode, "signal": self.signal_name,
                "assertion": self.assertion, "crash_lines": list(self.crash_lines),
                "core": str(self.core) if self.core else None, "core_note": self.core_note,
                "top_frames": list(self.top_frames), "hang": self.hang, "detail": self.detail,
                "artifact_dir": str(self.artifact_dir) if self.artifact_dir else None,
                "top_locations": list(self.top_locations(10)),
                "sanitizer": self.sanitizer_report.to_dict() if self.sanitizer_report else None}

    @property
    def signature(self) -> str:
        """Short string, stable across runs, for triage/dedupe and message headers."""
        k = self.kind
        if k is OutcomeKind.HANG:
            return f"hang: {self.hang}" if self.hang else "hang"
        if k is OutcomeKind.RUNNING:
            return "running"
        if k is OutcomeKind.CLEAN:
            return "clean exit"
        if k is OutcomeKind.UNEXPECTED_CLEAN:
            return "unexpected clean exit 0"
        if k is OutcomeKind.KILLED:
            return f"killed {self.signal_name}"
        if k in (OutcomeKind.ERROR, OutcomeKind.EXPECTED_ERROR):
            head = ("expected " if k is OutcomeKind.EXPECTED_ERROR else "") + (
                f"error exit {self.returncode}" if self.signal_name is None else f"killed {self.signal_name}"
            )
            line = _last_error_line(self.stderr_tail)
            return f"{head}: {_truncate(_normalize_text(line))}" if line else head
        # CRASH
        if self.sanitizer is not None:
            tool, bug = self.sanitizer
            head = f"crash {sanitizer.SHORT_TOOL.get(tool, tool)} {bug}"
        elif self.signal_name:
            head = f"crash {self.signal_name}"
        elif self.returncode is not None:
            head = f"crash exit {self.returncode}"
        else:
            head = "crash"
        if self.assertion:
            return f"{head}: {_truncate(normalize_assertion(self.assertion), 200)}"
        if self.sanitizer is None:
            for i, line in enumerate(self.crash_lines):
                m = _QEMU_ERROR_ABORT.match(line)
                if m:  # error_abort: "f(): <the error message on the next line>"
                    msg = self.crash_lines[i + 1] if i + 1 < len(self.crash_lines) else ""
                    text = f"Unexpected error in {m['func']}(): {_normalize_text(msg)}".rstrip(": ")
                    return f"{head}: {_truncate(text)}"
                if _shell_signal(line) is None and not _BAIL_OUT.match(line):
                    return f"{head}: {_truncate(_normalize_text(line))}"
        phrase = _frames_phrase(self.top_frames)
        return f"{head}: {phrase}" if phrase else head

    def failure_message(self, *, max_lines: int = 15) -> str:
        """Signature, then ``artifacts: <dir>``, then a short excerpt of the evidence."""
        out = [self.signature, f"artifacts: {self.artifact_dir if self.artifact_dir else '(none)'}"]
        if self.detail:
            out.append(self.detail)
        if self.assertion:
            out.append(f"assertion: {self.assertion}")
        for line in self.crash_lines:
            if line != self.assertion:
                out.append(f"stderr: {line}")
        if self.core is not None:
            out.append(f"core: {self.core}")
        elif self.core_note:
            out.append(f"core: {self.core_note}")
        if self.top_frames:
            out.append("frames: " + " <- ".join(self.top_locations(8) or self.top_frames[:8]))
        tail = [ln for ln in self.stderr_tail.splitlines() if ln.strip()][-max_lines:]
        if tail:
            out.append("stderr (last lines):")
            out.extend("  " + ln for ln in tail)
        return "\n".join(out)




def _tail(text: str, n: int = 40) -> str:
    lines = text.splitlines()
    return "\n".join(lines[-n:])


def classify(
    returncode: int | None,
    stderr_text: str = "",
    *,
    expected_returncodes: Iterable[int] = (0,),
    expected_stderr_regex: str | re.Pattern[str] | None = None,
    core: Path | str | None = None,
    core_note: str | None = None,
    backtrace: str | None = None,
    hang: str | None = None,
    artifact_dir: Path | str | None = None,
) -> Outcome:
    """Classify one QEMU exit (see the module docstring for the rules).

    ``returncode``: subprocess convention (``-N`` = signal N; ``None`` = still
    running or unknown).  ``expected_returncodes`` may list non-zero and negative
    codes; ``expected_stderr_regex`` (searched, multiline) must also match for a
    non-zero exit to be expected.  ``backtrace``: gdb output from
    :mod:`harness.qemu.debug` (core or live pid).  ``hang``: what deadline
    expired, e.g. ``"migration did not complete within 60 s"``.
    """
    stderr_text = stderr_text or ""
    expected_codes = tuple(expected_returncodes)
    core_p = Path(core) if core is not None else None
    art_p = Path(artifact_dir) if artifact_dir is not None else None
    assertion = parse_assertion(stderr_text)
    lines = crash_lines(stderr_text)
    report = sanitizer.parse(stderr_text)
    san = (report.tool, report.kind) if report else None
    san_frames = _sanitizer_frames(report)

    sig: str | None = None
    if returncode is not None and returncode < 0:
        sig = signal_name(-returncode)
    elif returncode is not None and returncode > 128:
        # a shell's 128+N status; believe it only with the shell's own message
        for line in lines:
            n = _shell_signal(line)
            if n is not None and n == returncode - 128:
                sig = signal_name(n)
    if sig is None and backtrace:
        gsig = gdb_signal_name(backtrace)
        if gsig and returncode is not None and returncode != 0:
            sig = gsig

    # A sanitizer's access stack names the bad access itself; a gdb backtrace of
    # the same death would show the sanitizer's abort path around it.
    frames: tuple[str, ...] = top_frames(san_frames) if san_frames else ()
    if not frames and backtrace and not hang:
        frames = top_frames(crashing_thread_stack(backtrace))

    base = dict(
        returncode=returncode,
        signal_name=sig,
        assertion=assertion,
        crash_lines=lines,
        core=core_p,
        core_note=core_note,
        backtrace=backtrace,
        top_frames=frames,
        artifact_dir=art_p,
        hang=hang,
        stderr_tail=_tail(stderr_text),
        sanitizer=san,
        sanitizer_report=report,
    )

    if hang:
        return Outcome(OutcomeKind.HANG, detail=f"deadline expired: {hang}", **base)

    if returncode is None:
        return Outcome(OutcomeKind.RUNNING, detail="no exit status (still running or unknown)", **base)

    stderr_ok = True
    if expected_stderr_regex is not None:
        rx = expected_stderr_regex if isinstance(expected_stderr_regex, re.Pattern) else re.compile(
            expected_stderr_regex, re.MULTILINE
        )
        stderr_ok = rx.search(stderr_text) is not None
    code_ok = returncode in expected_codes
    expected = code_ok and stderr_ok
    want = ", ".join(str(c) for c in expected_codes) or "none"

    signum = -returncode if returncode < 0 else (
        _signal.Signals[sig].value if sig and sig in _signal.Signals.__members__ else None
    )
    shell_sigs = [_shell_signal(ln) for ln in lines]
    crashy_text = assertion is not None or san is not None or any(
        n is None or n in CORE_SIGNALS for n in shell_sigs
    )

    # A declared-expected signal death (chaos: kill -9 on purpose) is not a crash.
    if expected and returncode != 0 and not (assertion or san):
        if returncode < 0:
            return Outcome(OutcomeKind.EXPECTED_ERROR, expected=True,
                           detail=f"killed by {sig} as expected", **base)
        return Outcome(OutcomeKind.EXPECTED_ERROR, expected=True,
                       detail=f"exit {returncode} as expected", **base)

    if signum is not None and signum in CORE_SIGNALS:
        return Outcome(OutcomeKind.CRASH, detail=f"killed by {sig}", **base)
    if returncode != 0 and crashy_text:
        return Outcome(OutcomeKind.CRASH,
                       detail=f"exit {returncode} with crash evidence on stderr", **base)
    if san is not None:
        # UBSan (halt_on_error=0) reports and lets QEMU exit normally: still a bug.
        return Outcome(OutcomeKind.CRASH,
                       detail=f"exit {returncode} after a {san[0]} report", **base)
    if signum is not None:
        return Outcome(OutcomeKind.KILLED,
                       detail=f"killed by {sig} (expected exit {want})", **base)

    if returncode == 0:
        term = _TERMINATING.search(stderr_text)
        note = f" (QEMU {term.group(0)})" if term else ""
        if code_ok and stderr_ok:
            return Outcome(OutcomeKind.CLEAN, expected=True, detail="exit 0" + note, **base)
        if not code_ok:
            return Outcome(OutcomeKind.UNEXPECTED_CLEAN,
                           detail=f"exit 0 but expected exit {want}" + note, **base)
        return Outcome(OutcomeKind.UNEXPECTED_CLEAN,
                       detail=f"exit 0 but stderr did not match {_rx_text(expected_stderr_regex)}" + note,
                       **base)

    if code_ok and not stderr_ok:
        detail = f"exit {returncode} but stderr did not match {_rx_text(expected_stderr_regex)}"
    else:
        detail = f"exit {returncode}, expected {want}"
    return Outcome(OutcomeKind.ERROR, detail=detail, **base)


def _rx_text(rx: str | re.Pattern[str] | None) -> str:
    if rx is None:
        return ""
    return "/" + (rx.pattern if isinstance(rx, re.Pattern) else rx) + "/"


def replace(outcome: Outcome, **changes) -> Outcome:
    """``dataclasses.replace`` re-exported (e.g. to add ``artifact_dir`` later)."""
    return dataclasses.replace(outcome, **changes)
