#!/usr/bin/env python3
"""Standalone reproducer: crash SIGABRT: migrate_mode: Assertion 'mode >= 0 && mode < MIG_MODE__MAX' failed

What it shows: QEMU (paused, idle) gets SIGTERM while its QMP monitors still have queued query-migrate; monitor_cleanup() dispatches them after migration_shutdown() freed the migration object

Signature:  crash SIGABRT: migrate_mode: Assertion 'mode >= 0 && mode < MIG_MODE__MAX' failed
A hit is a QEMU crash whose signature (computed below, in the harness's form)
matches:    (?:migrate_mode: Assertion 'mode >= 0 && mode < MIG_MODE__MAX' failed)|(?:crash (SIG(SEGV|ABRT|BUS)|ASan [\w -]+?): .*(qmp_query_migrate|fill_source_migration_info|migrate_))
Hit rate at export: 6 of 12 attempts (50%) in `harness hammer shutdown-race` on QEMU 10.0.2
QEMU versions tried: 10.0.2 (system): 72/100, 11.1.3: 65/100, 7.2.22: 0/100, 10.0.2 (10.0.2-asan): 10/49
Exported by qemu-migration-harness on 2026-12-04.

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


# One attempt, in order (as fast as possible: the race window is QEMU's shutdown):
STEPS = [
    'start QEMU (paused, -machine none) with 2 QMP monitor(s) connecting to our sockets',
    'qmp_capabilities with OOB enabled on every monitor',
    'queue 32 x each of query-migrate on monitor qmp1 (no waiting)',
    'on qmp0: queue 32 x each query, then send SIGTERM to QEMU at once',
    'wait up to 15 s for QEMU to exit; its exit (signal, assertion, sanitizer report) is the result',
]

# QEMU's command line (after the binary). @RUNDIR@ is a fresh temp dir per attempt;
# QEMU connects to the UNIX sockets named there, this script listens on them.
QEMU_ARGS = [
    '-name', 'vm,debug-threads=on',
    '-nodefaults',
    '-no-user-config',
    '-machine', 'dump-guest-core=off',
    '-display', 'none',
    '-accel', 'tcg',
    '-machine', 'none',
    '-m', '16',
    '-smp', '1',
    '-chardev', 'socket,id=qmp0,path=@RUNDIR@/qmp.sock',
    '-mon', 'chardev=qmp0,mode=control',
    '-chardev', 'socket,id=qmp1,path=@RUNDIR@/qmp1.sock',
    '-mon', 'chardev=qmp1,mode=control',
    '-chardev', 'socket,id=serial0,path=@RUNDIR@/serial.sock',
    '-serial', 'chardev:serial0',
    '-S',
]

MONITORS = ['qmp0', 'qmp1']      # chardev ids of the QMP monitors; the first is the main one
QUERIES = ['query-migrate']        # flooded, not waiting for replies
FLOOD = 32                 # queued commands per monitor, spread over QUERIES
SHUTDOWN = 'sigterm'         # "sigterm", "sigint" or "quit" (QMP quit amid the flood)
MATCH = "(?:migrate_mode: Assertion 'mode >= 0 && mode < MIG_MODE__MAX' failed)|(?:crash (SIG(SEGV|ABRT|BUS)|ASan [\\w -]+?): .*(qmp_query_migrate|fill_source_migration_info|migrate_))"
RECORDED_PERTURB = 184    # MALLOC_PERTURB_ of the exported attempt (--fixed-perturb)
EXIT_TIMEOUT = 15.0          # seconds QEMU gets to exit; longer is a hang
FILES = {}  # name -> base64: small files the command line names (@FILE:name@)
# An ASan build of QEMU reports whole alloc/free stacks with these (kept if set).
SANITIZER_ENV = {"ASAN_OPTIONS": "fast_unwind_on_malloc=0:malloc_context_size=30:detect_leaks=0:abort_on_error=1:print_summary=1",
                 "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=0"}
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
    a = contract_args(__doc__.splitlines()[0], attempts=200, seconds=120.0, extra=extra)
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
