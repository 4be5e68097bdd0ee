#!/usr/bin/env python3
"""Baseline for the seed race: the outside reproducer's design, standard library only.

Written the way a QEMU developer would write it by hand, independent of the
harness (no harness import), so bench/shutdown-race can compare the harness
recipe against it: per attempt, start a paused guest (-S), connect one QMP
monitor with out-of-band enabled, keep `query-migrate` requests in flight
continuously (a window of outstanding requests, refilled as replies come
back), then SIGTERM QEMU with a random MALLOC_PERTURB_ and classify its exit.

The last line is machine-readable JSON: attempts, crashes, seed crashes,
other crashes, hangs, elapsed seconds.

Usage: bench/shutdown_race_baseline.py --seconds S [-j N] [--qemu BIN] [--accel tcg]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SEED_ASSERTION = re.compile(r"migrate_mode: Assertion .mode >= 0 && mode < MIG_MODE__MAX. failed")
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}
EXIT_TIMEOUT = 15.0
WINDOW = 16          # query-migrate requests kept outstanding
REQUEST = b'{"execute":"query-migrate"}\n'


def connect(path: str, proc: subprocess.Popen, deadline: float) -> socket.socket:
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.002)


def read_reply(f) -> dict:
    """The next non-event message."""
    while True:
        line = f.readline()
        if not line:
            raise EOFError("QMP closed")
        msg = json.loads(line)
        if "event" not in msg:
            return msg


class InFlight:
    """Keep WINDOW query-migrate requests outstanding until QEMU goes away."""

    def __init__(self, sock: socket.socket, f):
        self.sock, self.f = sock, f
        self.cond = threading.Condition()
        self.sent = self.received = 0
        self.dead = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.writer = threading.Thread(target=self._write, daemon=True)

    def start(self) -> None:
        self.reader.start()
        self.writer.start()

    def _read(self) -> None:
        try:
            for line in self.f:
                if b'"return"' in line or b'"error"' in line:
                    with self.cond:
                        self.received += 1
                        self.cond.notify_all()
        except (OSError, ValueError):
            pass
        with self.cond:
            self.dead = True
            self.cond.notify_all()

    def _write(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.dead and self.sent - self.received >= WINDOW:
                        self.cond.wait(1.0)
                    if self.dead:
                        return
                    n = WINDOW - (self.sent - self.received)
                    self.sent += n
                self.sock.sendall(REQUEST * n)
        except OSError:
            pass

    def wait_replies(self, n: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        with self.cond:
            while self.received < n and not self.dead and time.monotonic() < end:
                self.cond.wait(0.05)


def attempt(qemu: str, accel: str, rng: random.Random) -> tuple[str, str]:
    """One attempt -> (kind, signature): kind is clean, crash or hang."""
    d = tempfile.mkdtemp(prefix="baseline-race-")
    qmp = os.path.join(d, "qmp.sock")
    argv = [qemu, "-S", "-nodefaults", "-display", "none", "-accel", accel, "-m", "64",
            "-chardev", f"socket,id=mon0,path={qmp},server=on,wait=off",
            "-mon", "chardev=mon0,mode=control"]
    env = dict(os.environ, MALLOC_PERTURB_=str(rng.randint(1, 255)))
    errpath = os.path.join(d, "stderr")
    with open(errpath, "wb") as err:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, cwd=d)
    sock = None
    try:
        sock = connect(qmp, proc, time.monotonic() + 30)
        f = sock.makefile("rb")
        read_reply(f)  # greeting
        sock.sendall(b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}\n')
        read_reply(f)
        flight = InFlight(sock, f)
        flight.start()
        # Queries are flowing once the first reply is back: shut down now. (Waiting
        # for a random 1..2*WINDOW replies instead measured no better per minute.)
        flight.wait_replies(1, 5.0)
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            rc = None
    except (OSError, EOFError, ValueError):
        rc = proc.poll()
        if rc is None:
            proc.kill()
            proc.wait()
            return "error", "harness-side error before shutdown"
    finally:
        if sock is not None:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(errpath, errors="replace") as fh:
        stderr = fh.read()
    shutil.rmtree(d, ignore_errors=True)
    if rc is None:
        return "hang", f"hang: no exit within {EXIT_TIMEOUT:.0f}s of SIGTERM"
    if rc < 0 and -rc in CRASH_SIGNALS:
        m = re.search(r"[^\s:]+: Assertion .*failed", stderr)
        return "crash", f"crash {signal.Signals(-rc).name}: {m.group(0) if m else '(no assertion)'}"
    return "clean", ""


def worker(wid: int, qemu: str, accel: str, deadline: float, seed: int, out) -> None:
    rng = random.Random(f"{seed}:{wid}")
    counts = {"attempts": 0, "crash": 0, "seed": 0, "hang": 0, "error": 0}
    while time.time() < deadline:
        kind, sig = attempt(qemu, accel, rng)
        counts["attempts"] += 1
        if kind in counts:
            counts[kind] += 1
        if kind == "crash" and SEED_ASSERTION.search(sig):
            counts["seed"] += 1
    out.put(counts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("-j", "--parallel", type=int, default=4)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.seconds <= 0 or a.parallel < 1:
        print("baseline: --seconds must be > 0 and -j >= 1", file=sys.stderr)
        return 2
    qemu = shutil.which(a.qemu) or a.qemu
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    t0 = time.time()
    procs = [ctx.Process(target=worker, args=(w, qemu, a.accel, t0 + a.seconds, a.seed, out))
             for w in range(a.parallel)]
    for p in procs:
        p.start()
    total = {"attempts": 0, "crash": 0, "seed": 0, "hang": 0, "error": 0}
    for _ in procs:
        for k, v in out.get().items():
            total[k] += v
    for p in procs:
        p.join()
    total["elapsed"] = round(time.time() - t0, 2)
    total["other"] = total["crash"] - total["seed"]
    print(json.dumps(total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
