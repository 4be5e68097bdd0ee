"""Chaos on inventory hosts: what a chaos attempt needs when its QEMUs are remote.

Locally an attempt relays tcp through a userspace proxy (a cut resets the
relayed connections), both sides open one qcow2 file (as on shared storage)
and every listener is on 127.0.0.1. On inventory hosts (ci/farm, SSH) none
of that holds, so here:

- the link: cut() is a real fault, an iptables REJECT (tcp-reset) of the
  migration ports on the destination host's migration interface
  (harness.faults.link), recorded with that host's fault guard before it is
  applied, so the host removes it if the controller dies; release() at the
  end of the plan lifts it. The destination's established connections on
  those ports are reset too (`ss -K`), so both ends notice at once, as with
  the local relay's cut. Why REJECT scoped to the ports, not link down or
  tbf: a host's slots are shared by several pairs (xdist workers, other
  sessions), and link down or a root tbf would fault every one of them;
- disks: each side gets its own qcow2, created with qemu-img on the host its
  QEMU runs on (no shared storage is assumed between hosts);
- listeners: the destination's migration address (the controller reaches it
  on the farm's migration network); a pending listener is the controller's
  own address towards the source host;
- TLS credentials are staged to each side's host.

Unix-socket bases are local only: remote_pair() callers must not draw them.
"""
from __future__ import annotations

import os
import socket

from harness.faults.link import LinkFaultError, LinkFaults
from harness.faults.proxy import local_address_towards
from harness.hosts.base import Host, HostError
from harness.hosts.placement import Placement
from harness.migration.tls import Setup
from harness.migration.transports import Transport
from harness.run import TestRun
from harness.stress.steps import HarnessEnv

DISK_NAME = "disk0.qcow2"
QEMU_IMG_TIMEOUT = 30.0
KILL_TIMEOUT = 10.0


def remote_pair(placement: Placement) -> bool:
    return not (placement.src.is_local and placement.dst.is_local)


def create_disk(run: TestRun, host: Host, mib: int) -> str:
    """A fresh qcow2 on host, in a run dir of its own that the run removes at the end
    (and the host's guard removes if we die)."""
    d = host.make_run_dir("chaos-disk")
    run.staged_dirs.append((host, d))
    path = f"{d}/{DISK_NAME}"
    rc, _out, err = host.run(["qemu-img", "create", "-q", "-f", "qcow2", path, f"{mib}M"],
                             QEMU_IMG_TIMEOUT)
    if rc != 0:
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise HostError(f"host '{host.name}': qemu-img create {path} failed (rc {rc}): {last}")
    return path


def setup(run: TestRun, base, layout_args, disk_mib: int) -> Setup:
    """What a remote attempt adds to each side: its own disk on its own host (no shared
    storage is assumed between hosts; layout_args(path) -> argv) and the base's TLS
    files, staged to both hosts."""
    p = run.placement
    disks = Setup(layout_args(create_disk(run, p.src, disk_mib)), layout_args(create_disk(run, p.dst, disk_mib)))
    if base.tls is None:
        return disks
    workdir = run.artifacts / "tls"
    tls = base.tls.materialize(workdir, dst_address=p.dst.listen_address)
    local = str(workdir)
    src_dir = local if p.src.is_local else run.stage_tree(p.src, workdir)
    dst_dir = local if p.dst.is_local else run.stage_tree(p.dst, workdir)
    fix = lambda args, d: tuple(a.replace(local, str(d)) for a in args)  # noqa: E731
    return disks + Setup(fix(tls.src_args, src_dir), fix(tls.dst_args, dst_dir), tls.src_params,
                         tls.dst_params, tls.files)


def incoming(pair, base) -> tuple[str, tuple[str, int]]:
    """migrate-incoming on the destination's migration address: (uri, listener)."""
    if base.transport is not Transport.TCP:
        raise ValueError(f"chaos base {base.path}: {base.transport.value} transport between "
                         f"inventory hosts is not supported (tcp only)")
    addr = pair.dst.host.listen_address
    pair.dst.cmd("migrate-incoming", {"uri": f"tcp:{addr}:0"})
    port = int(pair.dst.cmd("query-migrate")["socket-address"][0]["port"])
    return f"tcp:{addr}:{port}", (addr, port)


class ChaosLink:
    """The migration link of one remote pair: cut() rejects its ports, restore() lifts it."""

    def __init__(self, placement: Placement):
        dst = placement.dst
        if dst.is_local:
            raise ValueError("a remote chaos link needs the destination on an inventory host")
        if placement.src is dst:
            iface = "lo"    # both QEMUs on one host: the stream never leaves it
        else:
            iface = getattr(dst.entry, "migration_interface", None)
            if not iface:
                raise ValueError(f"host '{dst.name}': chaos link cuts need migration_interface "
                                 f"in the inventory")
        # A chain per controller process: pairs of other workers on the same host keep theirs.
        chain = f"QMH-FAULT-{iface}-{os.getpid() % 10**7}"
        self.faults = LinkFaults(dst.run, iface, label=dst.name, chain=chain,
                                 guard=dst.fault_guard())
        self.dst = dst
        self.ports: list[int] = []
        self._cut: set[int] = set()
        self.armed = False

    def watch(self, port: int) -> None:
        """A migration listener on the destination (main, or a recovery's)."""
        if port not in self.ports:
            self.ports.append(port)

    def arm(self) -> None:
        """Chain and jumps in place before the plan (each remote exec may take ~0.2 s):
        a cut then costs only its rules."""
        self.armed = True
        self.faults.prepare()

    def cut(self) -> int:
        """Refuse every watched port until restore() and reset the destination's open
        connections on them; how many connections were reset."""
        if not self.armed:
            self.arm()
        for port in self.ports:
            if port not in self._cut:
                self.faults.reject(port=port)
                self._cut.add(port)
        return self._kill_established()

    def _kill_established(self) -> int:
        """`ss -K` (sock_destroy) of the destination's sockets on the ports: it sees
        ECONNABORTED and the source a reset. The REJECT alone resets only the source (at
        its next segment); the destination, only reading, would wait for ever on a
        half-open connection, unlike the local relay's cut (both ends closed), which an
        exported reproducer replays."""
        match: list[str] = []
        for port in self.ports:
            match += (["or"] if match else []) + ["sport", "=", f":{port}"]
        argv = ["ss", "-K", "-t", "-n", "-H", "state", "established", *match]
        rc, out, err = self.dst.run(argv, KILL_TIMEOUT)
        if rc != 0:
            detail = " ".join(err.split()) or "(no stderr)"
            raise LinkFaultError(f"{self.dst.name}: `{' '.join(argv)}` failed (rc {rc}): {detail}")
        return len([ln for ln in out.splitlines() if ln.strip()])

    def restore(self) -> None:
        """Lift every fault (nothing to do, and no remote exec, if never armed)."""
        if self.armed:
            self.armed = False
            self._cut.clear()
            self.faults.restore()


def pending_listener(src_host: Host) -> socket.socket:
    """A socket the source host can connect to that never accepts."""
    s = socket.socket()
    s.bind((local_address_towards(src_host.listen_address), 0))
    s.listen(1)
    return s


class RemoteEnv(HarnessEnv):
    """HarnessEnv for a pair on inventory hosts: real link cuts, reachable listeners."""

    def __init__(self, st, migrate_uri: str, main: tuple[str, int], link: ChaosLink, plan):
        super().__init__(st, migrate_uri, main)
        self.link = link
        self._restore_failed = False
        link.watch(main[1])
        if any(s.kind == "link-cut" for s in plan.steps):
            link.arm()

    def listen_host(self) -> str:
        return self.st.pair.dst.host.listen_address

    def set_recover_port(self, port):
        self._recover = (self.listen_host(), port)
        self.link.watch(port)

    def cut(self):
        return self.link.cut()

    def pending_listener(self):
        s = pending_listener(self.st.pair.src.host)
        self.pending.append(s)
        host, port = s.getsockname()[:2]
        return f"tcp:{host}:{port}"

    def release(self):
        """The plan's faults end: sockets closed, the link restored. A failed restore
        raises once (the engine calls release again on the way out)."""
        super().release()
        if self._restore_failed:
            return
        try:
            self.link.restore()
        except LinkFaultError:
            self._restore_failed = True
            raise
