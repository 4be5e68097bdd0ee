"""Export a standalone reproducer script for a race signature.

The script needs only Python's standard library and the QEMU binary: it
listens on the UNIX sockets QEMU's command line names (QEMU connects to them,
as under the harness), floods the recorded queries, shuts QEMU down the
recorded way, and counts how often the signature shows up. It prints its own
hit rate, so a developer sees at once how reliable it is.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

TEMPLATE = r'''#!/usr/bin/env python3
"""Standalone reproducer exported by qemu-migration-harness.

Signature: @@SIGNATURE@@
Recipe:    @@RECIPE@@

Usage: python3 THIS_SCRIPT [--attempts N] [--seconds S] [--qemu BINARY] [--fixed-perturb]
Needs only the Python standard library. Exits 0 if the signature was hit.
"""
import argparse, json, os, random, re, signal, socket, subprocess, sys, tempfile, time

CONFIG = json.loads(@@CONFIG@@)


def die_with_parent():
    """QEMU gets SIGKILL when this script ends, however it ends (Linux prctl)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def attempt(qemu, perturb):
    d = tempfile.mkdtemp(prefix="repro-")
    argv = [qemu] + [a.replace("@RUNDIR@", d.replace(",", ",,")) for a in CONFIG["args"]]
    listeners = []
    for a in argv:
        m = re.match(r"socket,id=([^,]+),path=((?:[^,]|,,)+)$", a)
        if m:
            s = socket.socket(socket.AF_UNIX)
            s.bind(m.group(2).replace(",,", ","))
            s.listen(1)
            listeners.append((m.group(1), s))
    env = dict(os.environ, MALLOC_PERTURB_=str(perturb))
    errpath = os.path.join(d, "stderr")
    with open(errpath, "w") as err:
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err, cwd=d, preexec_fn=die_with_parent)
    conns = {}
    try:
        for name, s in listeners:
            s.settimeout(10)
            c, _ = s.accept()
            conns[name] = c
        mons = [conns[n] for n in CONFIG["monitors"]]
        for c in mons:
            f = c.makefile("rb")
            f.readline()  # greeting
            c.sendall(b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}\n')
            f.readline()
        per_cmd = max(1, CONFIG["flood"] // len(CONFIG["commands"]))
        def burst(n):
            return b"".join(('{"execute":"%s"}\n' % c).encode() * n for c in CONFIG["commands"])
        for c in mons[1:]:
            c.sendall(burst(per_cmd))
        main = mons[0]
        if CONFIG["method"] == "quit":
            main.sendall(burst(per_cmd // 2) + b'{"execute":"quit"}\n' + burst(per_cmd - per_cmd // 2))
        else:
            main.sendall(burst(per_cmd))
            p.send_signal(signal.SIGTERM if CONFIG["method"] == "sigterm" else signal.SIGINT)
        try:
            rc = p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = "hang"
    except (OSError, socket.timeout):
        p.kill()
        rc = p.wait()
    finally:
        for c in conns.values():
            c.close()
        for _, s in listeners:
            s.close()
    stderr = open(errpath, errors="replace").read()
    subprocess.run(["rm", "-rf", d])
    return rc, stderr


def hit(rc, stderr):
    want = CONFIG["match"]
    if want.get("hang"):
        return rc == "hang"
    if want.get("returncode") is not None and rc != want["returncode"]:
        return False
    return not want.get("stderr") or re.search(want["stderr"], stderr) is not None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attempts", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--qemu", default=CONFIG["binary"])
    ap.add_argument("--fixed-perturb", action="store_true",
                    help="use the recorded MALLOC_PERTURB_ every time instead of a random one")
    a = ap.parse_args()
    t0, n, hits = time.time(), 0, 0
    while n < a.attempts and time.time() - t0 < a.seconds:
        perturb = CONFIG["perturb"] if a.fixed_perturb else random.randint(1, 255)
        rc, stderr = attempt(a.qemu, perturb)
        n += 1
        if hit(rc, stderr):
            hits += 1
            if hits == 1:
                print(f"hit after {n} attempt(s), {time.time() - t0:.1f}s: rc={rc}")
                print("\n".join(stderr.strip().splitlines()[-3:]))
    dt = time.time() - t0
    print(f"attempts {n} hits {hits} hit-rate {hits / max(n, 1):.3f} "
          f"hits/min {hits / dt * 60:.1f} seconds {dt:.1f}")
    sys.exit(0 if hits else 1)


if __name__ == "__main__":
    main()
'''


def _match_for(outcome: dict) -> dict:
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


def export_shutdown_race(attempt_dir: Path, variant: dict, out: Path) -> Path:
    """Write a standalone reproducer from one failing attempt's artifacts."""
    vm = attempt_dir / "vm"
    if not vm.is_dir():
        raise FileNotFoundError(f"{attempt_dir}: no 'vm' machine artifacts (only idle races export)")
    argv = shlex.split((vm / "cmdline.txt").read_text())
    outcome = json.loads((vm / "outcome.json").read_text())
    env = dict(line.split("=", 1) for line in (vm / "env.txt").read_text().split())
    rundir = _run_dir_of(argv)
    args = [a.replace(rundir, "@RUNDIR@") for a in argv[1:]]
    monitors = [a.split("chardev=")[1].split(",")[0] for a in argv if a.startswith("chardev=")]
    config = {"binary": argv[0], "args": args, "monitors": monitors,
              "method": variant["method"], "flood": variant["flood"], "commands": variant["commands"],
              "perturb": int(env.get("MALLOC_PERTURB_", "0") or 0), "match": _match_for(outcome)}
    script = (TEMPLATE.replace("@@SIGNATURE@@", outcome.get("signature", "?"))
              .replace("@@RECIPE@@", json.dumps(variant))
              .replace("@@CONFIG@@", repr(json.dumps(config, indent=1))))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(script)
    out.chmod(0o755)
    return out


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


def run_reproducer(script: Path, attempts: int, seconds: float) -> tuple[bool, str]:
    """Run an exported script; return (reproduced, its last line)."""
    # Its own process group, killed whole on a timeout or an interrupt; its temp
    # dirs go into a run dir of ours (reaped if we die).
    cp = run_script_tree([sys.executable, str(script), "--attempts", str(attempts),
                         "--seconds", str(seconds)],
                         timeout=seconds + 60)
    last = (cp.stdout.strip().splitlines() or ["no output"])[-1]
    return cp.returncode == 0, last
