"""The contract every standalone reproducer honours (docs/reproducers.md).

Options: ``--qemu PATH`` (both sides), ``--qemu-src PATH`` / ``--qemu-dst PATH``
(override one side; a one-VM reproducer runs the source's), ``--attempts N``,
``--seconds S`` (stop at whichever comes first).

Output: the LAST line of stdout is ``RESULT hits=H attempts=A signature=<sig or ->``
(A counts decided attempts only: QEMU started and was judged).

Exit codes, as ``git bisect run`` reads them: 0 = the bug did not show in A
attempts (good), 1 = it showed (bad), 125 = cannot decide (QEMU could not
start, or no attempt was decided): skip this commit.

:data:`EMBED` is the stdlib-only source the exporters paste into each script,
so the contract's argument parsing and result line are one text, here; this
module executes the same text for its own :func:`parse_args`/:func:`finish`
(tests) and offers :func:`parse_result` to read a script's outcome.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

EXIT_GOOD = 0
EXIT_BAD = 1
EXIT_SKIP = 125

#: Pasted verbatim into every exported reproducer (stdlib only).
EMBED = r'''
# ---- reproducer contract (qemu-migration-harness docs/reproducers.md) ----
EXIT_GOOD, EXIT_BAD, EXIT_SKIP = 0, 1, 125   # git bisect run: good, bad, skip


def contract_args(description, attempts=50, seconds=300.0, extra=None):
    """--qemu/--qemu-src/--qemu-dst/--attempts/--seconds (+ script-specific options)."""
    import argparse
    ap = argparse.ArgumentParser(description=description,
                                 epilog="exit 0: not seen in N attempts; 1: seen; 125: cannot decide")
    ap.add_argument("--qemu", default="qemu-system-x86_64",
                    help="QEMU binary for both sides (default: qemu-system-x86_64 on PATH)")
    ap.add_argument("--qemu-src", default=None, help="source QEMU (default: --qemu)")
    ap.add_argument("--qemu-dst", default=None, help="destination QEMU (default: --qemu)")
    ap.add_argument("--attempts", type=int, default=attempts, help=f"at most N attempts (default {attempts})")
    ap.add_argument("--seconds", type=float, default=seconds,
                    help=f"at most S seconds in all (default {seconds:g})")
    if extra is not None:
        extra(ap)
    a = ap.parse_args()
    if a.attempts < 1 or a.seconds <= 0:
        ap.error("--attempts must be >= 1 and --seconds > 0")
    a.qemu_src = a.qemu_src or a.qemu
    a.qemu_dst = a.qemu_dst or a.qemu
    return a


def result_line(hits, attempts, signature):
    return f"RESULT hits={hits} attempts={attempts} signature={signature or '-'}"


def finish(hits, attempts, signature, why_undecided=""):
    """Print the RESULT line (always last) and exit 1 (seen), 0 (not seen) or 125."""
    import sys
    if hits:
        code = EXIT_BAD
    elif attempts == 0:
        print(f"cannot decide: {why_undecided or 'no attempt was decided'}", file=sys.stderr)
        code = EXIT_SKIP
    else:
        code = EXIT_GOOD
    sys.stdout.flush()
    print(result_line(hits, attempts, signature if hits else None), flush=True)
    sys.exit(code)
# ---- end of contract ----
'''

_ns: dict = {}
exec(compile(EMBED, "<repro_contract.EMBED>", "exec"), _ns)  # one text: the scripts' and ours
contract_args = _ns["contract_args"]
result_line = _ns["result_line"]
finish = _ns["finish"]

RESULT_RE = re.compile(r"^RESULT hits=(?P<hits>\d+) attempts=(?P<attempts>\d+) signature=(?P<sig>.*)$")


@dataclass(frozen=True)
class Result:
    hits: int
    attempts: int
    signature: str | None
    exit_code: int

    @property
    def verdict(self) -> str:
        return {EXIT_GOOD: "good", EXIT_BAD: "bad", EXIT_SKIP: "skip"}.get(self.exit_code, "error")


class ContractError(ValueError):
    """A script's output does not follow the contract."""


def parse_result(stdout: str, exit_code: int) -> Result:
    """The RESULT line (the last non-empty line of stdout) and the exit code, checked
    against each other."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    m = RESULT_RE.match(lines[-1].strip()) if lines else None
    if m is None:
        last = lines[-1].strip()[:120] if lines else "(no output)"
        raise ContractError(f"last line is not 'RESULT hits=H attempts=A signature=S': {last!r}")
    hits, attempts = int(m["hits"]), int(m["attempts"])
    sig = None if m["sig"].strip() in ("", "-") else m["sig"].strip()
    want = EXIT_BAD if hits else (EXIT_SKIP if attempts == 0 else EXIT_GOOD)
    if exit_code != want:
        raise ContractError(f"exit code {exit_code} does not match RESULT hits={hits} attempts={attempts} "
                            f"(expected {want})")
    if hits > attempts:
        raise ContractError(f"RESULT hits={hits} > attempts={attempts}")
    return Result(hits, attempts, sig, exit_code)


# ----------------------------------------------------------------------------- portable command lines
#: Files up to this size named on a command line (file=PATH) are embedded in the script.
EMBED_MAX_BYTES = 64 * 1024
_FILE_OPT = re.compile(r"(?<=file=)(?P<path>/[^,]+)")


@dataclass(frozen=True)
class PortableArgv:
    """A command line with the exporting machine's paths replaced by placeholders:
    @RUNDIR@ for the run directory, @FILE:<name>@ for an embedded small file."""

    args: tuple[str, ...]
    files: tuple[tuple[str, str], ...]   # (name, base64 content)


def portable_argv(args: list[str], run_dir: str) -> PortableArgv:
    """Replace the run dir and embed the small files (a boot sector, ...) the
    command line names; a larger file is an error (the script would not be
    self-contained)."""
    files: dict[str, str] = {}
    out = []
    for a in args:
        a = a.replace(run_dir, "@RUNDIR@")

        def sub(m: re.Match[str]) -> str:
            p = Path(m["path"])
            if not p.is_file():
                raise ValueError(f"command line names {p}, which is not a file here")
            if p.stat().st_size > EMBED_MAX_BYTES:
                raise ValueError(f"{p} is {p.stat().st_size} bytes: too big to embed in a reproducer")
            name = p.name
            files[name] = base64.b64encode(p.read_bytes()).decode()
            return f"@FILE:{name}@"

        out.append(_FILE_OPT.sub(sub, a))
    return PortableArgv(tuple(out), tuple(sorted(files.items())))


def python_list(args: tuple[str, ...] | list[str], indent: str = "    ") -> str:
    """A command line as a readable Python list: an option and its value on one line."""
    rows: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            rows.append(f"{indent}{a!r}, {args[i + 1]!r},")
            i += 2
        else:
            rows.append(f"{indent}{a!r},")
            i += 1
    return "[\n" + "\n".join(rows) + "\n]"


def b64_block(data: str, width: int = 76, indent: str = "    ") -> str:
    """Base64 text as a parenthesised run of string literals."""
    chunks = [data[i:i + width] for i in range(0, len(data), width)] or [""]
    return "(\n" + "\n".join(f"{indent}{c!r}" for c in chunks) + "\n)"
