"""COLO fault tolerance (QEMU docs/COLO-FT.txt; qtest /migration/colo/...).

The full COLO-FT setup on one host, everything over UNIX sockets in a private
run dir (no ports, no external traffic):

primary (source)
    NIC rtl8139 on `-netdev user,restrict=on` (hn0); chardevs mirror0 and
    compare1 (servers the secondary connects to), compare0/compare0-0 and
    compare_out/compare_out0 (loops inside the primary); filter-mirror m0 (tx ->
    mirror0), filter-redirector redire0 (rx <- compare_out) and redire1 (rx ->
    compare0); iothread1; colo-compare comp0 (primary_in=compare0-0,
    secondary_in=compare1, outdev=compare_out0, iothread=iothread1); disk
    colo-disk0 = quorum(vote-threshold=1) over primary.qcow2; later a
    replication(mode=primary) child over NBD to the secondary, added with
    x-blockdev-change.
secondary (destination, -incoming defer, running)
    same NIC; chardevs red0/red1 connecting to the primary's mirror0/compare1;
    filter-redirector f1 (tx <- red0) and f2 (rx -> red1); filter-rewriter rew0;
    disks parent0 (its copy of primary.qcow2), childs0 = replication(mode=secondary)
    over active.qcow2 -> hidden.qcow2 -> parent0, colo-disk0 = quorum over childs0;
    NBD server exporting parent0 (writable).

All qcow2 images are created with qemu-img in the run dir. x-colo on both
sides, x-checkpoint-delay on the primary, then migrate; the primary must enter
'colo' (never 'completed'), the secondary resumes, and ColoOptions.checkpoints
checkpoints must run (RESUME events of the secondary, with both guests making
progress; query-colo-status: primary/secondary). Then one side dies (SIGKILL,
declared) and the survivor fails over as the document says (yank the
migration, x-colo-lost-heartbeat, tear down its COLO objects), COLO_EXIT is
checked, the survivor keeps running the guest and keeps the bootblock page
rule. ColoOptions.at = ColoAt.CHECKPOINT fails over while the secondary is stopped
in a checkpoint (qtest's *_checkpoint cases).

QEMU 10.0.2 never enters 'colo': the primary's migration ends 'completed'
(fixed upstream by 0b5bf4ea76, in 10.2). That exact outcome raises
ColoNeverEntered, which the scenario's KnownBug signature matches.
"""
from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Callable

from harness.guest import integrity
from harness.qemu.cmdline import qemu_opt
from harness.migration import tuning
from harness.migration.context import ScenarioContext
from harness.migration.metrics import MigrationMetrics, write_metrics
from harness.migration.pair import wait_guest_ready
from harness.migration.runner import register
from harness.migration.scenario import Flow
from harness.migration.states import wait_runstate
from harness.migration.transports import connect_uri, Transport
from harness.qemu.binary import probe
from harness.qemu.machine import Machine, MachineFailure
from harness.qemu.qmp import QMPCommandError

DISK_SIZE = "64M"
NEVER_ENTERED = "COLO never entered"


class ColoNeverEntered(AssertionError):
    """The primary's migration finished 'completed' instead of entering 'colo'."""


class ColoSetup:
    """Paths and command-line arguments of one COLO pair."""

    def __init__(self, work: Path, src_version: tuple, dst_version: tuple):
        self.work = work
        self.src_version, self.dst_version = src_version, dst_version

    def p(self, name: str) -> str:
        return str(self.work / name)

    @staticmethod
    def _reconnect(version: tuple) -> str:
        # reconnect-ms arrived in 9.2 and 'reconnect' was deprecated then.
        return "reconnect-ms=1000" if tuple(version) >= (9, 2, 0) else "reconnect=1"

    def make_images(self, host, qemu_img: str) -> None:
        """On the host both QEMUs run on (COLO scenarios are placed on one host)."""
        for name in ("primary.qcow2", "secondary-active.qcow2", "secondary-hidden.qcow2"):
            _run(host, [qemu_img, "create", "-q", "-f", "qcow2", self.p(name), DISK_SIZE])
        # "primary.qcow2 needs to be copied to all hosts": the secondary's parent.
        _run(host, ["cp", "--", self.p("primary.qcow2"), self.p("secondary-parent.qcow2")])

    def nic(self) -> tuple[str, ...]:
        return ("-netdev", "user,id=hn0,restrict=on",
                "-device", "rtl8139,id=e0,netdev=hn0,romfile=")

    def primary_args(self) -> tuple[str, ...]:
        srv = "server=on,wait=off"
        return self.nic() + (
            "-chardev", f"socket,id=mirror0,path={qemu_opt(self.p('mirror0.sock'))},{srv}",
            "-chardev", f"socket,id=compare1,path={qemu_opt(self.p('compare1.sock'))},{srv}",
            "-chardev", f"socket,id=compare0,path={qemu_opt(self.p('compare0.sock'))},{srv}",
            "-chardev", f"socket,id=compare0-0,path={qemu_opt(self.p('compare0.sock'))}",
            "-chardev", f"socket,id=compare_out,path={qemu_opt(self.p('compare_out.sock'))},{srv}",
            "-chardev", f"socket,id=compare_out0,path={qemu_opt(self.p('compare_out.sock'))}",
            "-object", "filter-mirror,id=m0,netdev=hn0,queue=tx,outdev=mirror0",
            "-object", "filter-redirector,netdev=hn0,id=redire0,queue=rx,indev=compare_out",
            "-object", "filter-redirector,netdev=hn0,id=redire1,queue=rx,outdev=compare0",
            "-object", "iothread,id=iothread1",
            "-object", "colo-compare,id=comp0,primary_in=compare0-0,secondary_in=compare1,"
                       "outdev=compare_out0,iothread=iothread1",
            "-drive", "if=none,id=colo-disk0,driver=quorum,read-pattern=fifo,vote-threshold=1,"
                      f"children.0.file.filename={qemu_opt(self.p('primary.qcow2'))},children.0.driver=qcow2",
            "-device", "virtio-blk-pci,drive=colo-disk0,id=colo-blk",
        )

    def secondary_args(self) -> tuple[str, ...]:
        rc = self._reconnect(self.dst_version)
        return self.nic() + (
            "-chardev", f"socket,id=red0,path={qemu_opt(self.p('mirror0.sock'))},{rc}",
            "-chardev", f"socket,id=red1,path={qemu_opt(self.p('compare1.sock'))},{rc}",
            "-object", "filter-redirector,id=f1,netdev=hn0,queue=tx,indev=red0",
            "-object", "filter-redirector,id=f2,netdev=hn0,queue=rx,outdev=red1",
            "-object", "filter-rewriter,id=rew0,netdev=hn0,queue=all",
            "-drive", f"if=none,id=parent0,file.filename={qemu_opt(self.p('secondary-parent.qcow2'))},"
                      "driver=qcow2",
            "-drive", "if=none,id=childs0,driver=replication,mode=secondary,file.driver=qcow2,"
                      f"top-id=colo-disk0,file.file.filename={qemu_opt(self.p('secondary-active.qcow2'))},"
                      "file.backing.driver=qcow2,"
                      f"file.backing.file.filename={qemu_opt(self.p('secondary-hidden.qcow2'))},"
                      "file.backing.backing=parent0",
            "-drive", "if=none,id=colo-disk0,driver=quorum,read-pattern=fifo,vote-threshold=1,"
                      "children.0=childs0",
            "-device", "virtio-blk-pci,drive=colo-disk0,id=colo-blk",
        )

    @property
    def nbd_sock(self) -> str:
        return self.p("nbd.sock")


def _run(host, argv: list[str]) -> None:
    rc, _out, err = host.run(argv, 60)
    if rc != 0:
        raise RuntimeError(f"{' '.join(argv)} failed on {host.name}: {err.strip()[-300:]}")


def qemu_img_for(binary: str, host=None) -> str:
    """The qemu-img beside the binary (a build dir), else PATH's (any version: qcow2 is stable)."""
    if host is not None and not host.is_local:
        rc, out, _ = host.run(["sh", "-c", 'd=$(dirname "$1"); if [ -x "$d/qemu-img" ]; then '
                               'echo "$d/qemu-img"; else command -v qemu-img; fi', "sh", binary], 30)
        if rc != 0 or not out.strip():
            raise RuntimeError(f"qemu-img not found on host '{host.name}' (install qemu-utils)")
        return out.strip()
    cand = Path(binary).parent / "qemu-img"
    if cand.is_file() and cand.stat().st_mode & 0o111:
        return str(cand)
    found = shutil.which("qemu-img")
    if not found:
        raise RuntimeError("qemu-img not found (install qemu-utils)")
    return found


def _migration_status(m: Machine) -> str:
    return m.cmd("query-migrate").get("status", "none")


def wait_colo(src: Machine, dst: Machine, timeout: float) -> dict:
    """The primary enters 'colo'. A 'completed' instead is the 10.0.x bug: ColoNeverEntered."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        st = _migration_status(src)
        if not seen or seen[-1] != st:
            seen.append(st)
        if st == "colo":
            return {"source_statuses": seen}
        if st == "completed":
            colo = src.try_cmd("query-colo-status")
            dst_st = dst.try_cmd("query-migrate")
            raise ColoNeverEntered(
                f"{NEVER_ENTERED}: the primary's migration ended 'completed' without entering "
                f"'colo' (x-colo on both sides; statuses {' -> '.join(seen)}; primary "
                f"query-colo-status {json.dumps(colo)}; secondary migration "
                f"{dst_st.get('status') if isinstance(dst_st, dict) else dst_st})")
        if st in ("failed", "cancelled"):
            desc = src.cmd("query-migrate").get("error-desc", "")
            raise AssertionError(f"{src.name}: migration {st} before COLO" + (f": {desc}" if desc else ""))
        if not src.is_running():
            raise MachineFailure(src.wait_exit(5.0) or src.declare_hang(f"{src.name}: exit not reaped"))
        if time.monotonic() > deadline:
            raise MachineFailure(src.declare_hang(
                f"{src.name}: migration status {st}, never 'colo' within {timeout:.0f}s"))
        time.sleep(0.05)


def wait_checkpoints(src: Machine, dst: Machine, n: int, start: int, timeout: float) -> list[float]:
    """n checkpoints: each one is a STOP/RESUME of the secondary; both guests progress."""
    stamps = []
    idx = start
    deadline = time.monotonic() + timeout
    for i in range(n):
        ev = dst.qmp.events.wait_for(lambda e: e.name == "RESUME", deadline, start=idx,
                                     alive=dst.is_running)
        if ev is None:
            _fail(f"{dst.name}: only {i} of {n} COLO checkpoints within {timeout:.0f}s", dst, src)
        idx = dst.qmp.events.events.index(ev) + 1
        stamps.append(ev.timestamp)
        for m in (src, dst):
            mark = m.serial.mark()
            if m.serial.wait_for(rb"B", deadline, mark) is None:
                raise MachineFailure(m.declare_hang(
                    f"{m.name}: guest made no progress between COLO checkpoints"))
    return stamps


def _fail(hang_reason: str, m: Machine, *others: Machine) -> None:
    """A wait gave up: the first machine that died is the failure (its exit classified:
    crash, error...); if all live, m hangs (state dumped)."""
    for x in (m, *others):
        if not x.is_running():
            raise MachineFailure(x.wait_exit(5.0) or x.declare_hang(f"{x.name}: exit not reaped"))
    raise MachineFailure(m.declare_hang(hang_reason))


def _oob_yank(m: Machine) -> str:
    try:
        m.cmd("yank", {"instances": [{"type": "migration"}]}, oob=True)
        return "yanked"
    except QMPCommandError as exc:
        return f"yank refused: {exc.desc}"


def _teardown_primary(src: Machine) -> None:
    """COLO-FT.txt "Primary Failover": drop the replication child and the proxy objects."""
    src.cmd("x-blockdev-change", {"parent": "colo-disk0", "child": "children.1"})
    src.cmd("human-monitor-command", {"command-line": "drive_del replication0"})
    for obj in ("comp0", "iothread1", "m0", "redire0", "redire1"):
        src.cmd("object-del", {"id": obj})


def _teardown_secondary(dst: Machine) -> None:
    """COLO-FT.txt "Secondary Failover": drop the redirectors and their chardevs."""
    for obj in ("f2", "f1"):
        dst.cmd("object-del", {"id": obj})
    for chardev in ("red1", "red0"):
        dst.cmd("chardev-remove", {"id": chardev})


def failover(survivor: Machine, side: str, peer: str) -> tuple[list[str], Callable[[], None]]:
    """Fail over on the survivor; return the steps done and the teardown still to do.

    peer "killed" follows COLO-FT.txt (the peer is dead): yank the migration,
    tear down (primary) / stop the NBD server (secondary), x-colo-lost-heartbeat.
    peer "alive": x-colo-lost-heartbeat first (the failover request itself shuts
    the channel down), the document's teardown after COLO_EXIT, then a yank.
    """
    steps = []
    if peer == "killed":
        steps.append(_oob_yank(survivor))
        if side == "primary":
            _teardown_primary(survivor)
            steps.append("primary teardown")
        else:
            survivor.cmd("nbd-server-stop")
            steps.append("nbd-server-stop")
        survivor.cmd("x-colo-lost-heartbeat")
        steps.append("x-colo-lost-heartbeat")
        after = (lambda: _teardown_secondary(survivor)) if side == "secondary" else (lambda: None)
        return steps, after
    survivor.cmd("x-colo-lost-heartbeat")
    steps.append("x-colo-lost-heartbeat")

    def after() -> None:
        if side == "primary":
            _teardown_primary(survivor)
        else:
            survivor.cmd("nbd-server-stop")
            _teardown_secondary(survivor)
        steps.append("teardown")
        steps.append(_oob_yank(survivor))
    return steps, after


def _kill(m: Machine) -> None:
    m.expect_exit((-signal.SIGKILL,))
    m.kill(signal.SIGKILL)
    out = m.wait_exit(10)
    if out is None or not out.ok:
        raise MachineFailure(out or m.declare_hang(f"{m.name}: survived SIGKILL for 10s"))


@register(Flow.COLO)
def run(ctx: ScenarioContext) -> dict:
    s = ctx.scenario
    o = s.options
    side, at, peer = o.failover.value, o.at.value, o.peer.value
    checkpoints, delay_ms = o.checkpoints, o.checkpoint_delay_ms
    work = ctx.run.host.make_run_dir("colo")
    try:
        host = ctx.run.host
        remote = None if host.is_local else host
        setup = ColoSetup(work, probe(ctx.src_binary, remote).version_tuple,
                          probe(ctx.dst_binary, remote).version_tuple)
        setup.make_images(host, qemu_img_for(ctx.dst_binary, remote))
        pair = ctx.pair(dst_paused=False, src_extra=setup.primary_args(),
                        dst_extra=setup.secondary_args())
        src, dst = pair.src, pair.dst
        # Secondary: NBD export of its parent disk, before the primary's migrate.
        dst.cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": setup.nbd_sock}}})
        dst.cmd("nbd-server-add", {"device": "parent0", "writable": True})
        # Primary: the replication child over NBD joins the quorum.
        src.cmd("human-monitor-command", {"command-line": (
            "drive_add -n buddy driver=replication,mode=primary,file.driver=nbd,"
            f"file.server.type=unix,file.server.path={qemu_opt(setup.nbd_sock)},file.export=parent0,"
            "node-name=replication0")})
        src.cmd("x-blockdev-change", {"parent": "colo-disk0", "node": "replication0"})
        caps = {"events": True, "x-colo": True, **s.caps}
        for m in (src, dst):
            try:
                tuning.set_capabilities(m, caps)
            except QMPCommandError as exc:
                # 10.2+ requires return-path with x-colo (qtest sets both); before
                # that the documented setup has x-colo alone (with return-path,
                # 10.0.2 fails: "Received invalid message 0x0000 length 0x0000").
                if "requires capability 'return-path'" not in exc.desc:
                    raise
                caps = {"events": True, "return-path": True, "x-colo": True, **s.caps}
                tuning.set_capabilities(m, caps)
        tuning.set_parameters(dst, dict(s.dst_params))
        dst.cmd("migrate-incoming", {"uri": f"tcp:{dst.host.listen_address}:0"})
        uri = connect_uri(Transport.TCP, dst)
        tuning.ensure_converge(src)
        tuning.set_parameters(src, {"x-checkpoint-delay": delay_ms, **s.params})
        wait_guest_ready(src)
        dmark = dst.qmp.events.mark()
        t0 = time.monotonic()
        src.cmd("migrate", {"uri": uri})
        entered = wait_colo(src, dst, s.timeout)
        entered["colo_after_s"] = round(time.monotonic() - t0, 3)
        wait_runstate(dst, {"running"}, s.timeout)
        modes = {m.name: m.cmd("query-colo-status") for m in (src, dst)}
        if modes[src.name].get("mode") != "primary" or modes[dst.name].get("mode") != "secondary":
            raise AssertionError(f"query-colo-status: {modes}")
        first_resume = dst.qmp.events.wait_for(lambda e: e.name == "RESUME",
                                               time.monotonic() + s.timeout, start=dmark)
        start = dst.qmp.events.events.index(first_resume) + 1 if first_resume else dmark
        stamps = wait_checkpoints(src, dst, checkpoints, start, s.timeout)
        if at == "checkpoint":
            mark = dst.qmp.events.mark()
            if dst.qmp.events.wait_for(lambda e: e.name == "STOP", time.monotonic() + s.timeout,
                                       start=mark) is None:
                raise MachineFailure(dst.declare_hang(f"{dst.name}: no checkpoint STOP to fail over in"))
        # Fail over on one side. peer "alive" (qtest): yank + x-colo-lost-heartbeat
        # while the other side still runs, which is then killed; peer "killed"
        # (COLO-FT.txt): the other side dies first, then the survivor fails over.
        dead, survivor = (dst, src) if side == "primary" else (src, dst)
        emark = survivor.qmp.events.mark()
        if peer == "killed":
            _kill(dead)
        steps, teardown = failover(survivor, side, peer)
        ev = survivor.qmp.events.wait_for(lambda e: e.name == "COLO_EXIT",
                                          time.monotonic() + s.timeout, start=emark,
                                          alive=survivor.is_running)
        if ev is None:
            _fail(f"{survivor.name}: no COLO_EXIT within {s.timeout:.0f}s of "
                  "x-colo-lost-heartbeat", survivor)
        # The reason is recorded, not judged: a dead peer may be noticed before our
        # request ("error"), and even with the peer alive QEMU (11.1.3) reports a
        # requested failover as "error" now and then, on either side: the reason
        # is taken from failover_get_state() / the failed channel read, racing with
        # the failover BH that the request scheduled.
        reasons = ("request", "error")
        if ev.data.get("mode") != side or ev.data.get("reason") not in reasons:
            raise AssertionError(f"{survivor.name}: COLO_EXIT {ev.data}, expected mode {side} "
                                 f"and reason in {reasons}")
        teardown()
        if peer == "alive":
            _kill(dead)
        wait_runstate(survivor, {"running"}, s.timeout)
        mark = survivor.serial.mark()
        if survivor.serial.wait_for(rb"B", time.monotonic() + s.timeout, mark) is None:
            raise MachineFailure(survivor.declare_hang(
                f"{survivor.name}: guest made no progress after failover"))
        pattern = integrity.prove_bootblock_pattern(survivor)
        info = src.try_cmd("query-migrate") if side == "primary" else {}
        metrics = MigrationMetrics.from_query_migrate(info if isinstance(info, dict) else {})
        intervals = [round(b - a, 3) for a, b in zip(stamps, stamps[1:])]
        metrics.extra.update({"colo": entered, "checkpoints": len(stamps),
                              "checkpoint_intervals_s": intervals, "failover": side, "at": at,
                              "failover_steps": steps, "colo_exit": ev.data, "peer": peer,
                              "colo_status": modes})
        proof = {"bootblock_pattern": pattern.detail, "survivor": survivor.name}
        write_metrics(ctx.run.artifacts / "metrics.json",
                      {"migration": metrics.to_dict(), "integrity": proof})
        return {"metrics": metrics.to_dict(), "integrity": proof}
    finally:
        ctx.run.host.remove_run_dir(work)
