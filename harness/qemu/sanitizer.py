"""Sanitizer reports (ASan, LSan, UBSan, TSan) on a QEMU's stderr -> structured crash evidence.

Pure functions, no processes. Modelled on syzkaller's pkg/report: a table of
rules, each recognising one report header and naming the bug kind; every rule
is tested on a recorded sample (tests/unit/samples/sanitizer/). The report's
stacks are split by their headers: the access stack (the first one), "freed by
thread ... here" (free), "previously allocated by thread ... here" (alloc) and
"Thread T<n> created by ..." (thread creation). Triage groups by kind plus the
normalised top frames of the access stack (see :func:`normalize_func`).

Also :data:`CHILD_ENV`: the sanitizer options every QEMU child gets unless the
caller set its own (whole alloc/free stacks, no leak report at exit).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Rule", "RULES", "StackFrame", "SanitizerReport", "parse", "parse_all",
           "normalize_func", "report_text", "CHILD_ENV", "child_env", "SHORT_TOOL"]

# Why these: fast_unwind_on_malloc=0 + malloc_context_size=30 give whole
# alloc/free stacks (the default fast unwinder stops after 2-3 frames in glib,
# built without frame pointers; the free site is the point of an ASan build).
# detect_leaks=0: QEMU leaks by design at exit, every clean run would "crash".
# abort_on_error=1: die by SIGABRT like any other crash (exit status 1 looks
# like QEMU's own errors); ASan's default disable_coredump=1 stays: a core of an
# ASan process is large and slow, and the report already has the stacks.
# UBSan keeps going (halt_on_error=0) so one run shows every runtime error.
CHILD_ENV = {
    "ASAN_OPTIONS": "fast_unwind_on_malloc=0:malloc_context_size=30:detect_leaks=0:"
                    "abort_on_error=1:print_summary=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=0",
}

SHORT_TOOL = {"AddressSanitizer": "ASan", "LeakSanitizer": "LSan",
              "UndefinedBehaviorSanitizer": "UBSan", "ThreadSanitizer": "TSan",
              "MemorySanitizer": "MSan"}


def child_env(parent_env: dict[str, str], explicit: dict[str, str]) -> dict[str, str]:
    """The sanitizer defaults a child should get: those neither the caller's own
    environment nor the spec's explicit env sets."""
    return {k: v for k, v in CHILD_ENV.items() if k not in parent_env and k not in explicit}


@dataclass(frozen=True)
class StackFrame:
    """One sanitizer frame: function and 'file:line' (or '(lib+0x...)' when unsymbolised)."""

    func: str
    where: str = ""

    @property
    def location(self) -> str:
        """The outcome module's Frame.location form: 'at FILE:LINE' or 'from LIB'."""
        if not self.where:
            return ""
        if self.where.startswith("("):
            return "from " + self.where.strip("()")
        return "at " + self.where


def _ubsan_kind(msg: str) -> str:
    """syzkaller-style categories of UBSan's 'runtime error: ...' messages."""
    for pat, kind in _UBSAN_KINDS:
        if re.search(pat, msg):
            return kind
    return "runtime-error"


_UBSAN_KINDS = (
    (r"^shift exponent|^left shift of", "shift-out-of-bounds"),
    (r"^signed integer overflow|^negation of", "signed-integer-overflow"),
    (r"null pointer", "null-pointer-use"),
    (r"misaligned address", "misaligned-access"),
    (r"^index -?\d+ out of bounds", "array-index-out-of-bounds"),
    (r"not a valid value for type", "invalid-load"),
    (r"^division by zero", "division-by-zero"),
    (r"pointer overflow|applying (non-)?zero offset", "pointer-overflow"),
    (r"outside the range of representable values", "float-cast-overflow"),
    (r"^execution reached an unreachable", "unreachable"),
)


@dataclass(frozen=True)
class Rule:
    """One report header: tool, regex on the stripped line, and the bug kind it names."""

    name: str
    tool: str
    pattern: re.Pattern[str]
    kind: Callable[[re.Match[str]], str]


def _g(name: str) -> Callable[[re.Match[str]], str]:
    return lambda m: m[name]


def _const(text: str) -> Callable[[re.Match[str]], str]:
    return lambda m: text


_ASAN = r"^(?:==\d+==)?ERROR: AddressSanitizer: "
#: First match wins: specific rules before the ASan catch-all.
RULES: tuple[Rule, ...] = (
    Rule("asan-stack-overflow", "AddressSanitizer", re.compile(_ASAN + r"stack-overflow"),
         _const("stack-overflow")),
    Rule("asan-memory-access", "AddressSanitizer", re.compile(
        _ASAN + r"(?P<kind>(?:heap|stack|global|container|dynamic-stack|intra-object|stack-buffer)"
                r"[\w-]*|use-after-poison|stack-use-after-return|stack-use-after-scope) on address"),
         _g("kind")),
    Rule("asan-double-free", "AddressSanitizer", re.compile(_ASAN + r"attempting double-free"),
         _const("double-free")),
    Rule("asan-bad-free", "AddressSanitizer", re.compile(
        _ASAN + r"attempting free on address which was not malloc"), _const("bad-free")),
    Rule("asan-alloc-dealloc-mismatch", "AddressSanitizer", re.compile(
        _ASAN + r"alloc-dealloc-mismatch"), _const("alloc-dealloc-mismatch")),
    Rule("asan-wild-access", "AddressSanitizer", re.compile(
        _ASAN + r"(?P<sig>SEGV|BUS|FPE|ILL|ABRT|TRAP) on unknown address"),
         lambda m: f"{m['sig']} on unknown address"),
    Rule("asan-allocation", "AddressSanitizer", re.compile(
        _ASAN + r"(?P<kind>allocation-size-too-big|requested allocation size|out of memory|"
                r"calloc-overflow|pvalloc-overflow|invalid-allocation-alignment)"),
         lambda m: m["kind"].replace("requested allocation size", "allocation-size-too-big")
                            .replace("out of memory", "out-of-memory")),
    Rule("asan-other", "AddressSanitizer", re.compile(_ASAN + r"(?P<kind>[\w-]+)"), _g("kind")),
    Rule("lsan-leak", "LeakSanitizer", re.compile(
        r"^(?:==\d+==)?ERROR: LeakSanitizer: detected memory leaks"), _const("memory leak")),
    Rule("tsan", "ThreadSanitizer", re.compile(
        r"^(?:==\d+==)?WARNING: ThreadSanitizer: (?P<kind>[\w -]+?)(?: \(pid=\d+\))?$"),
         lambda m: m["kind"].strip().replace(" ", "-")),
    Rule("ubsan-runtime-error", "UndefinedBehaviorSanitizer", re.compile(
        r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): runtime error: (?P<msg>.*)$"),
         lambda m: _ubsan_kind(m["msg"])),
)

_FRAME = re.compile(r"^\s*#(?P<n>\d+) 0x[0-9a-fA-F]+ in (?P<func>\S+)(?: (?P<where>.*))?$")
# TSan: "#0 bump /path/race.c:4 (race+0x11d7)"
_FRAME_TSAN = re.compile(r"^\s*#(?P<n>\d+) (?P<func>[^\s(][^\s]*) (?P<where>[^\s(]\S*)(?: \([^)]*\))?$")
_FRAME_NOFUNC = re.compile(r"^\s*#(?P<n>\d+) 0x[0-9a-fA-F]+ +\((?P<where>[^)]*)\)$")
_FREED = re.compile(r"^freed by thread (?P<t>T\d+)")
_ALLOC = re.compile(r"^(?:previously )?allocated by thread (?P<t>T\d+)")
_THREAD = re.compile(r"^Thread (?P<t>T\d+)(?: \([^)]*\))? created by (?P<by>T\d+)")
_ACCESS = re.compile(r"^(?P<op>READ|WRITE) of size (?P<size>\d+) at 0x[0-9a-fA-F]+ thread (?P<t>T\d+)")
_END = re.compile(r"^(?:==\d+==ABORTING|SUMMARY: \w+Sanitizer:|={18,}$)")


@dataclass(frozen=True)
class SanitizerReport:
    rule: str
    tool: str
    kind: str
    header: str
    access: tuple[StackFrame, ...] = ()
    free: tuple[StackFrame, ...] = ()
    alloc: tuple[StackFrame, ...] = ()
    #: thread-creation stacks: (thread, created-by, frames)
    threads: tuple[tuple[str, str, tuple[StackFrame, ...]], ...] = ()
    access_op: str = ""                    # "READ of size 4 ... thread T0"
    summary: str = ""
    text: str = field(default="", compare=False)   # the report's lines, verbatim

    @property
    def short_tool(self) -> str:
        return SHORT_TOOL.get(self.tool, self.tool)

    def top(self, stack: str = "access", limit: int = 5) -> tuple[str, ...]:
        """Normalised function names of one stack, sanitizer/libc frames dropped."""
        frames = {"access": self.access, "free": self.free, "alloc": self.alloc}[stack]
        out = [normalize_func(f.func) for f in frames if not _is_runtime(f)]
        return tuple(out[:limit])

    def site(self, stack: str) -> str:
        """'func file:line' of a stack's first own frame ('' when the stack is empty).
        For free and alloc, QEMU's generic release/creation helpers (object_unref,
        object_new, ...) are skipped: the site is their caller, e.g. migration_shutdown."""
        frames = {"access": self.access, "free": self.free, "alloc": self.alloc}[stack]
        own = [f for f in frames if not _is_runtime(f)]
        if stack != "access":
            own = [f for f in own if not _HELPERS.match(f.func)] or own
        return f"{normalize_func(own[0].func)} {own[0].where}".strip() if own else ""

    def to_dict(self) -> dict:
        def st(frames):
            return [f"{f.func} {f.where}".strip() for f in frames]
        return {"rule": self.rule, "tool": self.tool, "kind": self.kind, "header": self.header,
                "access_op": self.access_op, "access": st(self.access), "free": st(self.free),
                "alloc": st(self.alloc), "summary": self.summary,
                "use_site": self.site("access"), "free_site": self.site("free"),
                "alloc_site": self.site("alloc")}


_RUNTIME = re.compile(
    r"^(?:__interceptor_|___interceptor_|__asan_|__sanitizer|__ubsan|__lsan|__tsan|"
    r"__libc_start|_start$|start_thread$|clone3?$|__clone|"
    r"(?:malloc|calloc|realloc|free|posix_memalign|memalign|aligned_alloc|operator new|operator delete)$|"
    r"g_malloc|g_malloc0|g_realloc|g_free$|g_try_malloc|g_slice_|g_new|g_memdup)")
_RUNTIME_WHERE = re.compile(r"libsanitizer/|/sysdeps/|\.\./csu/|\.\./nptl/|^\(/lib|^\(/usr/lib")


# QEMU helpers that allocate or free for their caller (QOM, QObject, glib wrappers).
_HELPERS = re.compile(
    r"^(?:object_finalize|object_unref|object_new|object_new_with_type|object_new_with_class|"
    r"object_initialize|qobject_destroy|qobject_unref_impl|qdict_destroy_obj|qlist_destroy_obj|"
    r"g_free|g_slice_free1|g_slice_alloc|g_hash_table_\w+|g_strdup\w*|g_string_\w+|g_array_\w+)(?:\.|$)")


def _is_runtime(f: StackFrame) -> bool:
    """Allocator, sanitizer and libc start-up frames: never the bug's location."""
    return bool(_RUNTIME.match(f.func) or _RUNTIME_WHERE.search(f.where))


_SUFFIX = re.compile(r"(?:\.(?:isra|constprop|part|cold|lto_priv|llvm)(?:\.\d+)?)+$")


def normalize_func(func: str) -> str:
    """Drop compiler clone suffixes (.isra.0, .constprop.1, .part.2, .cold) so one
    function groups as one frame across builds and optimisation levels."""
    return _SUFFIX.sub("", func)


def _match_rule(line: str) -> tuple[Rule, re.Match[str]] | None:
    for rule in RULES:
        m = rule.pattern.match(line)
        if m:
            return rule, m
    return None


def _frame(line: str) -> StackFrame | None:
    m = _FRAME.match(line)
    if m:
        return StackFrame(m["func"], (m["where"] or "").strip())
    m = _FRAME_TSAN.match(line)
    if m:
        return StackFrame(m["func"], m["where"])
    m = _FRAME_NOFUNC.match(line)
    if m:
        return StackFrame("??", f"({m['where']})")
    return None


def parse_all(stderr: str) -> list[SanitizerReport]:
    """Every sanitizer report in stderr, in order (UBSan may print many)."""
    lines = [ln.rstrip("\r") for ln in stderr.splitlines()]
    reports: list[SanitizerReport] = []
    i = 0
    while i < len(lines):
        hit = _match_rule(lines[i].strip())
        if hit is None:
            i += 1
            continue
        rule, m = hit
        start, i = i, i + 1
        stacks: dict[str, list[StackFrame]] = {"access": [], "free": [], "alloc": []}
        threads: list[tuple[str, str, list[StackFrame]]] = []
        cur: list[StackFrame] | None = stacks["access"]
        access_op = summary = ""
        while i < len(lines):
            s = lines[i].strip()
            if _match_rule(s) is not None and not _FRAME.match(lines[i]):
                break  # the next report
            f = _frame(lines[i])
            if f is not None:
                if cur is not None:
                    cur.append(f)
            elif _FREED.match(s):
                cur = stacks["free"]
            elif _ALLOC.match(s):
                cur = stacks["alloc"]
            elif _THREAD.match(s):
                t = _THREAD.match(s)
                threads.append((t["t"], t["by"], []))
                cur = threads[-1][2]
            elif _ACCESS.match(s):
                access_op = s
            elif s.startswith("SUMMARY: "):
                summary = s
                i += 1
                break
            elif _END.match(s) or (rule.tool == "UndefinedBehaviorSanitizer" and not s and stacks["access"]):
                if s.startswith("==") and "ABORTING" in s:
                    i += 1
                break
            elif s and cur is not None and cur and not s.startswith("0x"):
                cur = None  # free text after a stack (shadow bytes, hints)
            i += 1
        reports.append(SanitizerReport(
            rule=rule.name, tool=rule.tool, kind=rule.kind(m), header=lines[start].strip(),
            access=tuple(stacks["access"]), free=tuple(stacks["free"]), alloc=tuple(stacks["alloc"]),
            threads=tuple((t, by, tuple(fr)) for t, by, fr in threads), access_op=access_op,
            summary=summary, text="\n".join(lines[start:i]).rstrip() + "\n"))
    return reports


def parse(stderr: str) -> SanitizerReport | None:
    """The first sanitizer report in stderr (the one that killed QEMU, for ASan)."""
    reports = parse_all(stderr)
    return reports[0] if reports else None


def report_text(stderr: str) -> str:
    """The sanitizer reports of stderr, verbatim, with the structured sites first:
    what the artifacts keep as asan.txt."""
    out = []
    for r in parse_all(stderr):
        out.append(f"# {r.short_tool} {r.kind} (rule {r.rule})")
        for what in ("access", "free", "alloc"):
            site = r.site(what)
            if site:
                out.append(f"# {'use' if what == 'access' else what} site: {site}")
        out.append(r.text)
    return "\n".join(out)
