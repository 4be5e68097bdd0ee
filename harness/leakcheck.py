"""Leak check after a run: everything the run started must be gone, locally and on
the inventory's hosts. Scoped to the run (its private run root, its owner markers,
its hosts) so that other sessions running at the same time are never flagged.

    python -m harness.leakcheck RUN_ROOT [--inventory TOML] [--since EPOCH]

Looks at, locally:
  * run dirs and files left in RUN_ROOT;
  * processes of ours started from the run: QEMU, python workers (hammer, xdist),
    socat, anything whose environment carries HARNESS_RUN_ROOT=RUN_ROOT or whose
    command line or working directory lies under RUN_ROOT (ancestors excluded);
  * UNIX sockets bound under RUN_ROOT (/proc/net/unix);
  * /dev/shm: owner-marked dirs whose owner died, qmh-* entries made since --since;
  * network namespaces of the harness's own tests (qmhlt-*-PID) whose PID is dead;
  * iptables chains QMH-FAULT-* and tbf qdiscs with the harness's handle (f417:)
    in this network namespace;
and on every inventory host (its network namespace on the farm, else over SSH):
run dirs in its run_root (qmh-images, the verified image cache, excepted),
QMH-FAULT chains, our qdiscs, QEMU processes.
Kills nothing, removes nothing: it reports, one line per leftover, exit 1 if any.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from harness import proctree

QDISC_HANDLE = "f417:"
TEST_NETNS = re.compile(r"qmhlt-[a-z]+-(\d+)$")
KINDS = (("qemu-system", "QEMU"), ("socat", "socat"), ("python", "python worker"))


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def processes(root: Path) -> list[str]:
    """Processes of ours that belong to the run rooted at root."""
    me, skip, r = os.geteuid(), _ancestors(), str(root)
    marker = f"HARNESS_RUN_ROOT={r}".encode()
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) in skip:
            continue
        try:
            if p.stat().st_uid != me:
                continue
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if not cmd:
                continue            # kernel thread or zombie
            env = (p / "environ").read_bytes().split(b"\0")
            try:
                cwd = os.readlink(p / "cwd")
            except OSError:
                cwd = ""
        except OSError:
            continue
        if marker in env or r + "/" in cmd or cwd == r or cwd.startswith(r + "/"):
            kind = next((k for needle, k in KINDS if needle in cmd), "process")
            found.append(f"{kind} still running: pid {p.name}: {cmd[:160]}")
    return found


def run_dirs(root: Path) -> list[str]:
    try:
        return [f"left in the run root: {e}" for e in sorted(Path(root).iterdir())]
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [f"run root {root} unreadable: {exc.strerror}"]


def sockets(root: Path) -> list[str]:
    out = []
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    for ln in lines:
        parts = ln.split()
        if len(parts) >= 8 and parts[7].startswith(str(root) + "/"):
            out.append(f"UNIX socket still bound: {parts[7]}")
    return sorted(set(out))


def shm(since: float | None) -> list[str]:
    out = [f"/dev/shm dir of a dead process: {d}" for d in proctree.orphan_dirs(proctree.SHM)]
    if since is not None:
        for e in sorted(proctree.SHM.glob("qmh-*")):
            try:
                if e.stat().st_mtime >= since and not (e / proctree.OWNER_FILE).exists():
                    out.append(f"/dev/shm entry made during the run: {e}")
            except OSError:
                pass
    return out


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def test_netns() -> list[str]:
    out = []
    for line in _run(["ip", "netns", "list"]).splitlines():
        name = line.split()[0] if line.split() else ""
        m = TEST_NETNS.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            out.append(f"network namespace of a finished test: {name}")
    return out


def net_faults(prefix: list[str], where: str) -> list[str]:
    """QMH-FAULT chains and our tbf qdiscs, via `prefix` (e.g. ip netns exec NS)."""
    out = []
    rules = _run([*prefix, "iptables", "-w", "5", "-S"])
    for ln in rules.splitlines():
        if "QMH-FAULT" in ln:
            out.append(f"{where}: iptables rule left: {ln}")
    for ln in _run([*prefix, "tc", "qdisc", "show"]).splitlines():
        words = ln.split()
        if len(words) >= 5 and words[0] == "qdisc" and words[2] == QDISC_HANDLE:
            out.append(f"{where}: qdisc left: {ln.strip()}")
    return out


def hosts(inventory: Path) -> list[str]:
    """Every inventory host: run dirs, fault state, QEMUs (netns on the farm, else SSH)."""
    from harness.hosts import inventory as inv_mod
    out = []
    for e in inv_mod.load(str(inventory)).hosts:
        where = f"host '{e.name}'"
        if e.netns:        # the farm: namespaces on this machine, its filesystem shared
            prefix = ["ip", "netns", "exec", e.netns]
            out += [f"{where}: left in run_root: {p}" for p in sorted(Path(e.run_root).glob("qmh-*"))
                    if p.name != "qmh-images"]
            for pid in _run(["ip", "netns", "pids", e.netns]).split():
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if "qemu-system" in cmd or "socat" in cmd:
                    out.append(f"{where}: still running: pid {pid}: {cmd[:160]}")
            out += net_faults(prefix, where)
        else:
            out += _remote(e, where)
    return out


def _remote(e, where: str) -> list[str]:
    from harness.hosts.base import HostError
    from harness.hosts.ssh import SSHHost
    h = SSHHost(e)
    try:
        root = shlex.quote(e.run_root)
        rc, ls, _ = h.run(["sh", "-c", f"ls -A {root} | grep '^qmh-' | grep -v '^qmh-images$'"], 30)
        out = [f"{where}: left in run_root: {e.run_root}/{n}" for n in ls.split()]
        _rc, ps, _ = h.run(["sh", "-c", f"grep -l -s -F {root} /proc/[0-9]*/cmdline"], 30)
        out += [f"{where}: still running: {p.split('/')[2]}" for p in ps.split()]
        rules = h.run(["iptables", "-w", "5", "-S"], 30)[1]
        out += [f"{where}: iptables rule left: {ln}" for ln in rules.splitlines() if "QMH-FAULT" in ln]
        qd = h.run(["tc", "qdisc", "show"], 30)[1]
        out += [f"{where}: qdisc left: {ln.strip()}" for ln in qd.splitlines()
                if len(ln.split()) > 2 and ln.split()[2] == QDISC_HANDLE]
        return out
    except HostError as exc:
        return [f"{where}: cannot check: {exc}"]
    finally:
        h.close()


def check(root: Path, inventory: Path | None = None, since: float | None = None) -> list[str]:
    leaks = processes(root) + run_dirs(root) + sockets(root) + shm(since) + test_netns()
    leaks += net_faults([], "this machine")
    if inventory is not None:
        leaks += hosts(inventory)
    return leaks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="leakcheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="the run's private HARNESS_RUN_ROOT")
    ap.add_argument("--inventory", help="also check the hosts of this inventory")
    ap.add_argument("--since", type=float, default=None, metavar="EPOCH",
                    help="the run's start: /dev/shm qmh-* entries newer than this are its")
    ap.add_argument("--settle", type=float, default=5.0, metavar="SECONDS",
                    help="re-check for this long before reporting (exits are asynchronous)")
    a = ap.parse_args(argv)
    root = Path(a.root).resolve()
    inv = Path(a.inventory) if a.inventory else None
    deadline = time.monotonic() + a.settle
    while True:
        leaks = check(root, inv, a.since)
        if not leaks or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    for line in leaks:
        print(f"leakcheck: {line}", file=sys.stderr)
    if leaks:
        print(f"leakcheck: {len(leaks)} leftover(s) of the run in {root}", file=sys.stderr)
        return 1
    scope = f"{root}" + (f" and the hosts of {inv}" if inv else "")
    print(f"leakcheck: nothing left behind by the run ({scope}: processes, run dirs, sockets, "
          f"/dev/shm, test netns, iptables chains, qdiscs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
