"""Export a standalone reproducer script for a shutdown-race signature.

The script needs only python3 and QEMU, and carries no path of the exporting
machine (small files the command line names are embedded). It listens on the
UNIX sockets QEMU's command line names (QEMU connects to them, as under the
harness), floods the recorded queries, shuts QEMU down the recorded way, and
counts how often the bug shows. It follows the reproducer contract
(harness.report.repro_contract): --qemu/--attempts/--seconds, a final RESULT
line, exit 0/1/125 for `git bisect run`.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.qemu import sanitizer
from harness.report import repro_contract

TEMPLATE = r'''#!/usr/bin/env python3
"""@@TITLE@@

What it shows: @@WHAT@@

Signature:  @@SIGNATURE@@
A hit is a QEMU crash whose signature (computed below, in the harness's form)
matches:    @@MATCH@@
Hit rate at export: @@RATE@@
QEMU versions tried: @@VERSIONS@@
Exported by qemu-migration-harness on @@DATE@@.

Needs only python3 and QEMU (qemu-system-x86_64 on PATH, or --qemu PATH).
    python3 THIS_SCRIPT [--qemu PATH] [--attempts N] [--seconds S] [--fixed-perturb]

Exit codes follow `git bisect run`: 0 = the bug did not show in N attempts
(good), 1 = it showed (bad), 125 = QEMU could not start or nothing could be
decided (skip). The last line of output is always
    RESULT hits=H attempts=A signature=<signature of the first hit, or ->

Bisect example (in a QEMU tree, configured for x86_64-softmmu):
    git bisect run sh -c 'make -C build -j8 qemu-system-x86_64 || exit 125;
                          python3 THIS_SCRIPT --qemu build/qemu-system-x86_64 --attempts 200'
"""
import base64, os, random, re, signal, socket, subprocess, sys, tempfile, time
@@CONTRACT@@

# One attempt, in order (as fast as possible: the race window is QEMU's shutdown):
STEPS = @@STEPS@@

# QEMU's command line (after the binary). @RUNDIR@ is a fresh temp dir per attempt;
# QEMU connects to the UNIX sockets named there, this script listens on them.
QEMU_ARGS = @@ARGS@@

MONITORS = @@MONITORS@@      # chardev ids of the QMP monitors; the first is the main one
QUERIES = @@QUERIES@@        # flooded, not waiting for replies
FLOOD = @@FLOOD@@                 # queued commands per monitor, spread over QUERIES
SHUTDOWN = @@METHOD@@         # "sigterm", "sigint" or "quit" (QMP quit amid the flood)
MATCH = @@MATCH_RE@@
RECORDED_PERTURB = @@PERTURB@@    # MALLOC_PERTURB_ of the exported attempt (--fixed-perturb)
EXIT_TIMEOUT = 15.0          # seconds QEMU gets to exit; longer is a hang
FILES = {@@FILES@@}  # name -> base64: small files the command line names (@FILE:name@)
# An ASan build of QEMU reports whole alloc/free stacks with these (kept if set).
SANITIZER_ENV = {"ASAN_OPTIONS": "@@ASAN@@",
                 "UBSAN_OPTIONS": "@@UBSAN@@"}
CORE_SIGNALS = {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE,
                signal.SIGTRAP, signal.SIGSYS, signal.SIGQUIT}


class CannotStart(Exception):
    """QEMU exited or never connected before the race could be set up."""


def die_with_parent():
    """QEMU gets SIGKILL when this script ends, however it ends (Linux prctl)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def attempt(qemu, perturb):
    """Run one attempt; return (decided, returncode or "hang", stderr)."""
    d = tempfile.mkdtemp(prefix="repro-")
    for name, data in FILES.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(base64.b64decode("".join(data)))
    qd = d.replace(",", ",,")  # a comma inside a QEMU option value is doubled
    argv = [qemu] + [re.sub(r"@FILE:([^@]+)@", lambda m: os.path.join(qd, m.group(1)),
                            a.replace("@RUNDIR@", qd)) for a in QEMU_ARGS]
    listeners = {}
    for a in argv:
        m = re.match(r"socket,id=([^,]+),path=((?:[^,]|,,)+)$", a)
        if m:
            s = socket.socket(socket.AF_UNIX)
            s.bind(m.group(2).replace(",,", ","))
            s.listen(1)
            listeners[m.group(1)] = s
    env = dict(os.environ, MALLOC_PERTURB_=str(perturb))
    for k, v in SANITIZER_ENV.items():
        env.setdefault(k, v)
    errpath = os.path.join(d, "stderr")
    conns = []
    rc = None
    try:
        with open(errpath, "w") as err:
            try:
                p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=err, cwd=d, preexec_fn=die_with_parent)
            except OSError as exc:
                raise CannotStart(f"{qemu}: {exc}")
        try:
            mons = []
            deadline = time.time() + 20
            for name, s in listeners.items():
                s.settimeout(0.1)
                while True:
                    try:
                        c, _ = s.accept()
                        break
                    except socket.timeout:
                        if p.poll() is not None:
                            raise CannotStart(f"QEMU exited before connecting to socket {name}")
                        if time.time() > deadline:
                            raise CannotStart(f"QEMU did not connect to socket {name} within 20 s")
                c.settimeout(None)
                conns.append(c)
                if name in MONITORS:
                    mons.append((MONITORS.index(name), c))
            mons = [c for _, c in sorted(mons, key=lambda x: x[0])]
            for c in mons:
                f = c.makefile("rb")
                if not f.readline():  # greeting
                    raise CannotStart("QEMU closed its QMP monitor")
                c.sendall(b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}\n')
                f.readline()
            per = max(1, FLOOD // len(QUERIES))

            def burst(n):
                return b"".join(('{"execute":"%s"}\n' % q).encode() * n for q in QUERIES)

            for c in mons[1:]:
                c.sendall(burst(per))
            if SHUTDOWN == "quit":
                mons[0].sendall(burst(per // 2) + b'{"execute":"quit"}\n' + burst(per - per // 2))
            else:
                mons[0].sendall(burst(per))
                p.send_signal(signal.SIGTERM if SHUTDOWN == "sigterm" else signal.SIGINT)
        except (CannotStart, OSError) as exc:
            time.sleep(0.2)
            code = p.poll()
            if code is not None and code < 0 and -code in CORE_SIGNALS:
                rc = code  # it crashed while we set up: still a judged attempt
            else:
                p.kill()
                p.wait()
                text = open(errpath, errors="replace").read().strip()
                raise CannotStart(f"{exc}; exit {code}; stderr: {text[-300:] or '(empty)'}")
        if rc is None:
            try:
                rc = p.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                rc = "hang"
        return rc, open(errpath, errors="replace").read()
    finally:
        for c in conns:
            c.close()
        for s in listeners.values():
            s.close()
        subprocess.run(["rm", "-rf", d])


_FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-fA-F]+ in (\S+)", re.M)
_RUNTIME = re.compile(r"^(__interceptor_|___interceptor_|__asan|__sanitizer|__ubsan|__libc|_start$|"
                      r"start_thread$|clone|malloc$|calloc$|realloc$|free$|g_malloc|g_realloc|g_free$)")


def signature(rc, stderr):
    """The harness's signature of one exit ('crash SIGABRT: f: Assertion ...',
    'crash ASan heap-use-after-free: in f <- g', 'hang'), or None when QEMU exited
    without crashing."""
    if rc == "hang":
        return "hang"
    san = re.search(r"ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer): "
                    r"(attempting double-free|[\w-]+(?: on unknown address)?)", stderr)
    ub = re.search(r"^\S+:\d+:\d+: runtime error: ", stderr, re.M)
    if san or ub:
        start = san.start() if san else ub.start()
        tool = {"AddressSanitizer": "ASan", "LeakSanitizer": "LSan"}.get(san.group(1), "UBSan") if san else "UBSan"
        kind = (san.group(2).replace("attempting double-free", "double-free") if san else "runtime-error")
        stack = stderr[start:].split("\n\n")[0]
        frames = [re.sub(r"(\.(isra|constprop|part|cold)(\.\d+)?)+$", "", f) for f in _FRAME.findall(stack)
                  if not _RUNTIME.match(f)]
        return f"crash {tool} {kind}" + (": in " + " <- ".join(frames[:2]) if frames else "")
    crashed = isinstance(rc, int) and rc < 0 and -rc in CORE_SIGNALS
    head = f"crash {signal.Signals(-rc).name}" if crashed else f"crash exit {rc}"
    m = re.search(r"^(?:.*?: )?[^\s:][^:]*:\d+: (.+?): Assertion [`'](.*)' failed\.?\s*$", stderr, re.M)
    if m:
        return f"{head}: {m.group(1)}: Assertion '{m.group(2)}' failed"
    return head if crashed else None


def main():
    def extra(ap):
        ap.add_argument("--fixed-perturb", action="store_true",
                        help="use the recorded MALLOC_PERTURB_ every attempt instead of a random one")
    a = contract_args(__doc__.splitlines()[0], attempts=@@ATTEMPTS@@, seconds=@@SECONDS@@, extra=extra)
    t0, n, hits, first, why, seen = time.time(), 0, 0, None, "", {}
    while n < a.attempts and time.time() - t0 < a.seconds:
        perturb = RECORDED_PERTURB if a.fixed_perturb else random.randint(1, 255)
        try:
            rc, stderr = attempt(a.qemu_src, perturb)
        except CannotStart as exc:
            why = str(exc)
            if n == 0:
                break  # the first attempt could not even start QEMU: nothing to decide
            continue
        n += 1
        sig = signature(rc, stderr)
        if sig:
            seen[sig] = seen.get(sig, 0) + 1
        if sig and re.search(MATCH, sig):
            hits += 1
            if first is None:
                first = sig
                print(f"hit after {n} attempt(s), {time.time() - t0:.1f}s (MALLOC_PERTURB_={perturb}): {sig}")
                print("\n".join("  " + ln for ln in stderr.strip().splitlines()[-12:]))
    dt = time.time() - t0
    for sig, count in sorted(seen.items(), key=lambda kv: -kv[1]):
        print(f"{count:5d}  {'hit  ' if re.search(MATCH, sig) else 'other'}  {sig}")
    print(f"attempts {n} hits {hits} hit-rate {hits / max(n, 1):.3f} seconds {dt:.1f} qemu {a.qemu_src}")
    finish(hits, n, first, why)


if __name__ == "__main__":
    main()
'''


def match_for(outcome: dict) -> dict:
    """What counts as a hit: same signal (returncode) and the assertion text, if any."""
    if outcome.get("kind") == "hang":
        return {"hang": True}
    m: dict = {"returncode": outcome.get("returncode")}
    assertion = outcome.get("assertion")
    if assertion:
        # The assertion's function and condition, tolerant of file/line changes.
        core = re.sub(r"^.*?:\d+: ", "", assertion)
        # glibc quotes with `...' and newer ones with '...': accept either.
        m["stderr"] = "[`']".join(re.escape(part) for part in re.split(r"[`']", core))
    return m


@dataclass(frozen=True)
class ExportInfo:
    """What the header says about the measurement behind the export."""

    hits: int = 0
    attempts: int = 0
    qemu_version: str = "?"
    versions_tried: tuple[str, ...] = ()   # e.g. ("10.0.2: 6/12", "11.1.3: 0/200")
    source: str = "harness hammer shutdown-race"


def match_regex(signature: str) -> str:
    """What counts as a hit: the known bug's signature regexes (every bug with the
    same reference: one root cause, several faces, e.g. an assertion on Debian's
    build and heap-use-after-free on an ASan build), else the signature itself
    with its assertion made tolerant of quoting."""
    from harness.stress import known_bugs
    bug = known_bugs.match(signature)
    if bug is not None:
        family = [b.signature for b in known_bugs.SHUTDOWN_FAMILY if b.url == bug.url and b.signature]
        return "|".join(f"(?:{r})" for r in family)
    return "[`']".join(re.escape(part) for part in re.split(r"[`']", signature))


_WHAT = {
    "sigterm": "QEMU (paused, idle) gets SIGTERM while its QMP monitors still have queued {q}; "
               "monitor_cleanup() dispatches them after migration_shutdown() freed the migration object",
    "sigint": "QEMU (paused, idle) gets SIGINT while its QMP monitors still have queued {q}; "
              "monitor_cleanup() dispatches them after migration_shutdown() freed the migration object",
    "quit": "QMP quit amid a flood of {q} on QEMU's monitors: the queued commands are dispatched by "
            "monitor_cleanup() after migration_shutdown() freed the migration object",
}


def export_shutdown_race(attempt_dir: Path, variant: dict, out: Path, info: ExportInfo | None = None,
                         attempts: int = 200, seconds: float = 120.0) -> Path:
    """Write a standalone, self-contained reproducer from one failing attempt's artifacts."""
    info = info or ExportInfo()
    vm = attempt_dir / "vm"
    if not vm.is_dir():
        raise FileNotFoundError(f"{attempt_dir}: no 'vm' machine artifacts (only idle races export)")
    argv = shlex.split((vm / "cmdline.txt").read_text())
    outcome = json.loads((vm / "outcome.json").read_text())
    env_file = vm / "env.txt"
    env = dict(line.split("=", 1) for line in env_file.read_text().split()) if env_file.exists() else {}
    portable = repro_contract.portable_argv(argv[1:], _run_dir_of(argv))
    monitors = [a.split("chardev=")[1].split(",")[0] for a in argv if a.startswith("chardev=")]
    sig = outcome.get("signature", "?")
    queries = list(variant["commands"])
    method = variant["method"]
    rate = (f"{info.hits} of {info.attempts} attempts ({100 * info.hits / info.attempts:.0f}%) in "
            f"`{info.source}` on QEMU {info.qemu_version}" if info.attempts else "not measured")
    per = max(1, variant["flood"] // len(queries))
    steps = [f"start QEMU (paused, -machine none) with {len(monitors)} QMP monitor(s) connecting to our sockets",
             "qmp_capabilities with OOB enabled on every monitor",
             *[f"queue {per} x each of {', '.join(queries)} on monitor {m} (no waiting)" for m in monitors[1:]],
             (f"on {monitors[0]}: queue {per // 2} x each query, then quit, then {per - per // 2} x each query"
              if method == "quit" else
              f"on {monitors[0]}: queue {per} x each query, then send {method.upper()} to QEMU at once"),
             f"wait up to 15 s for QEMU to exit; its exit (signal, assertion, sanitizer report) is the result"]
    files = ", ".join(f"{name!r}: {repro_contract.b64_block(data, indent=' ' * 8)}"
                      for name, data in portable.files)
    fields = {
        "TITLE": f"Standalone reproducer: {_title(sig)}",
        "WHAT": _WHAT.get(method, "QEMU shutdown with queued QMP commands").format(q=", ".join(queries)),
        "SIGNATURE": sig, "MATCH": match_regex(sig), "RATE": rate,
        "VERSIONS": ", ".join(info.versions_tried) or info.qemu_version,
        "DATE": time.strftime("%Y-%m-%d"),
        "CONTRACT": repro_contract.EMBED,
        "STEPS": "[\n" + "".join(f"    {x!r},\n" for x in steps) + "]",
        "ARGS": repro_contract.python_list(portable.args),
        "MONITORS": repr(monitors), "QUERIES": repr(queries), "FLOOD": str(variant["flood"]),
        "METHOD": repr(method), "MATCH_RE": repr(match_regex(sig)),
        "PERTURB": str(int(env.get("MALLOC_PERTURB_", "0") or 0)),
        "FILES": files,
        "ASAN": sanitizer.CHILD_ENV["ASAN_OPTIONS"], "UBSAN": sanitizer.CHILD_ENV["UBSAN_OPTIONS"],
        "ATTEMPTS": str(attempts), "SECONDS": repr(float(seconds)),
    }
    script = TEMPLATE
    for k, v in fields.items():
        script = script.replace(f"@@{k}@@", v)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(script)
    out.chmod(0o755)
    return out


def _title(sig: str) -> str:
    return sig if len(sig) <= 100 else sig[:97] + "..."


def _run_dir_of(argv: list[str]) -> str:
    for a in argv:
        m = re.search(r"path=(\S+?)/qmp\.sock", a)
        if m:
            return m.group(1)
    raise ValueError("command line has no harness QMP socket path")


def run_script_tree(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a reproducer script (it starts QEMUs of its own) so nothing outlives us:
    own process group (killed whole on timeout or interrupt), PDEATHSIG, and TMPDIR
    in a run dir of ours, which carries our PID (reaped if we are killed)."""
    from harness import proctree
    from harness.hosts.local import LocalHost
    host = LocalHost()
    tmp = host.make_run_dir("repro")
    try:
        return proctree.run_group(argv, timeout, env=dict(os.environ, TMPDIR=str(tmp)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        host.remove_run_dir(tmp)


def run_reproducer(script: Path, attempts: int, seconds: float, qemu: str | None = None
                   ) -> repro_contract.Result:
    """Run an exported script (contract options) and read its RESULT line."""
    argv = [sys.executable, str(script), "--attempts", str(attempts), "--seconds", str(seconds)]
    if qemu:
        argv += ["--qemu", qemu]
    cp = run_script_tree(argv, timeout=seconds + 120)
    return repro_contract.parse_result(cp.stdout, cp.returncode)
