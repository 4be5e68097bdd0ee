"""COLO bases: the COLO-FT setup's run-time half, for the engine and the exported
reproducer alike (QEMU docs/COLO-FT.txt; harness.migration.flows.colo builds the
command lines, which a reproducer replays as recorded).

make_images(dir)   the primary's disk, the secondary's active/hidden overlays and
                   its copy of the primary's disk (qcow2, qemu-img)
setup(env, sock)   the secondary exports its parent disk over NBD; the primary's
                   replication child joins its quorum
caps(env, extra)   x-colo on both sides (+ return-path where the binary needs it)

After `migrate` the primary enters 'colo' and stays there, checkpointing, until a
failover (x-colo-lost-heartbeat) or an error: 'colo' is a resting state, not a
hang. The actions a COLO plan draws beyond the common ones: x-colo-lost-heartbeat
and the documented teardown of either side (actions.ColoTeardown).

Env: harness.runtime.actions' Env (only qmp() is used).
Nothing here imports from harness.* except harness.runtime (see harness.runtime).
"""
from __future__ import annotations

import os
import shutil
import subprocess

from harness.runtime.actions import QMP_TIMEOUT

IMAGES = ("primary.qcow2", "secondary-active.qcow2", "secondary-hidden.qcow2")
PARENT = "secondary-parent.qcow2"
DISK_SIZE = "64M"
NBD_SOCK = "nbd.sock"
RESTING = "colo"
# The primary enters 'colo' ~0.5-1.5 s after `migrate`: a COLO plan's window is its span plus
# this, so that steps triggered by 'colo' (and the failover after it) get to fire.
ENTRY_MS = 2000


class ColoSetupError(Exception):
    """A COLO setup command was refused or got no reply (one line)."""


def make_images(work: str, qemu_img: str = "qemu-img") -> None:
    for name in IMAGES:
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", os.path.join(work, name), DISK_SIZE],
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
    shutil.copyfile(os.path.join(work, "primary.qcow2"), os.path.join(work, PARENT))


def _ok(env, side, command, args=None):
    r = env.qmp(side, command, args, QMP_TIMEOUT, False)
    if "error" in r:
        raise ColoSetupError(f"{side} {command}: {r['error'].get('desc', r['error'])}")
    return r.get("return")


def setup(env, nbd_sock: str) -> None:
    """NBD export on the secondary, replication child in the primary's quorum."""
    _ok(env, "dst", "nbd-server-start", {"addr": {"type": "unix", "data": {"path": nbd_sock}}})
    _ok(env, "dst", "nbd-server-add", {"device": "parent0", "writable": True})
    _ok(env, "src", "human-monitor-command", {"command-line": (
        "drive_add -n buddy driver=replication,mode=primary,file.driver=nbd,file.server.type=unix,"
        f"file.server.path={nbd_sock},file.export=parent0,node-name=replication0")})
    _ok(env, "src", "x-blockdev-change", {"parent": "colo-disk0", "node": "replication0"})


def caps(env, extra: dict) -> dict:
    """x-colo on both sides; binaries from 10.2 on require return-path with it (the
    documented setup before that has x-colo alone). Returns the caps set."""
    want = {"events": True, "x-colo": True, **extra}
    for side in ("src", "dst"):
        r = env.qmp(side, "migrate-set-capabilities", {"capabilities": [
            {"capability": k, "state": v} for k, v in want.items()]}, QMP_TIMEOUT, False)
        if "error" in r and "requires capability 'return-path'" in str(r["error"].get("desc")):
            want = {"events": True, "return-path": True, "x-colo": True, **extra}
            r = env.qmp(side, "migrate-set-capabilities", {"capabilities": [
                {"capability": k, "state": v} for k, v in want.items()]}, QMP_TIMEOUT, False)
        if "error" in r:
            raise ColoSetupError(f"{side} migrate-set-capabilities: {r['error'].get('desc')}")
    return want
