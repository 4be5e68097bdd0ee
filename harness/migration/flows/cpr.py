"""CPR (checkpoint and restart) flows: cpr-reboot and cpr-transfer.

Flow.CPR_REBOOT (QEMU docs/devel/migration/CPR.rst, qtest /migration/mode/reboot):
the source saves to a file with mode=cpr-reboot and quits; only then is the
destination started (-incoming defer, paused) with mode=cpr-reboot and loads
the file. CprRebootOptions.shared_ram (default True) backs guest RAM with a
memory-backend-file share=on in a private /dev/shm directory and sets
x-ignore-shared, so RAM stays in place; without it RAM is copied to the file.
Proof: the source's RAM (dumped before it quit) equals the destination's byte
for byte, then the destination runs a bootblock pass and keeps the page rule.

Flow.CPR_TRANSFER (qtest /migration/mode/transfer[/defer]): both sides back RAM
with memfd and aux-ram-share=on; the destination gets two -incoming: the cpr
channel (a UNIX socket) and the main one (a UNIX socket, or `defer` when
CprTransferOptions.defer). The destination reads the cpr state before it even opens
its monitor, so it is launched in the background, the source's `migrate`
(channels: main + cpr) is issued once the destination listens on the cpr
socket, and only then does the destination's QMP connect (its events are
switched on with -global migration.x-events=on, nothing is missed). With
defer, `migrate-incoming` (main channel only) follows. Proof: the destination
runs a bootblock pass and keeps the page rule (RAM is the same memfd, so a
byte compare would prove nothing).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from harness.guest import integrity
from harness.qemu.cmdline import qemu_opt
from harness.migration import tuning
from harness.migration.context import ScenarioContext
from harness.migration.metrics import MigrationMetrics, write_metrics
from harness.migration.pair import wait_guest_ready
from harness.migration.expectations import check_refusal
from harness.migration.runner import register
from harness.migration.scenario import Flow, Result, Scenario
from harness.migration.states import wait_runstate, wait_status
from harness.qemu.machine import Machine, MachineFailure
from harness.qemu.qmp import QMPCommandError
from harness.qemu.spec import MachineSpec

CPR_LISTEN_TIMEOUT = 30.0


def _check_refusal(exc: QMPCommandError, s: Scenario) -> dict:
    if s.expect.result is not Result.REFUSED:
        raise exc
    check_refusal(exc, s)
    return {"refused": str(exc)}


def _expect_no_refusal(s: Scenario) -> None:
    if s.expect.result is Result.REFUSED:
        raise AssertionError(f"{s.path}: expected a refusal ({s.expect.error_class}: "
                             f"{s.expect.error_match}), but migrate was accepted")


def _specs(ctx: ScenarioContext, src_extra: tuple[str, ...], dst_extra: tuple[str, ...],
           **dst_changes) -> tuple[MachineSpec, MachineSpec]:
    s, base = ctx.scenario, ctx.spec
    src = base.with_(name="source", extra_args=base.extra_args + s.src_args + src_extra)
    dst = base.with_(name="destination", binary=ctx.dst_binary,
                     extra_args=base.extra_args + s.dst_args + dst_extra, **dst_changes)
    return src, dst


def _private_dir(prefix: str) -> Path:
    """A 0700 directory on tmpfs when there is one (guest RAM files live here)."""
    from harness import proctree
    root = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
        else tempfile.gettempdir()
    # Owner-marked like run dirs: reaped (proctree.reap_orphans) if we are killed.
    return proctree.new_run_dir(root, prefix)


# --------------------------------------------------------------------------- cpr-reboot
@register(Flow.CPR_REBOOT)
def run_cpr_reboot(ctx: ScenarioContext) -> dict:
    s = ctx.scenario
    shared = s.options.shared_ram
    mib = ctx.spec.memory_mib
    host = ctx.run.placement.src   # cpr-reboot is one host by nature (needs_one_host)
    work = _private_dir("cpr-reboot") if host.is_local else host.make_run_dir("cpr-reboot")
    try:
        mem: tuple[str, ...] = ()
        caps = dict(s.caps)
        if shared:
            mem = ("-object", f"memory-backend-file,id=pc.ram,size={mib}M,"
                              f"mem-path={qemu_opt(work / 'guest-ram')},share=on",
                   "-machine", "memory-backend=pc.ram")
            caps.setdefault("x-ignore-shared", True)
        caps = {"events": True, **caps}
        src_spec, dst_spec = _specs(ctx, mem, mem, incoming="defer", paused=True)
        uri = f"file:{work / 'vm.state'}"
        src = ctx.run.machine(src_spec)
        wait_guest_ready(src)
        mark = src.qmp.events.mark()
        try:
            tuning.set_capabilities(src, caps)
            tuning.set_parameters(src, {"mode": "cpr-reboot", **s.params})
            src.cmd("migrate", {"uri": uri})
        except QMPCommandError as exc:
            return _check_refusal(exc, s)
        _expect_no_refusal(s)
        wait_status(src, {"completed"}, since=mark, timeout=s.timeout)
        wait_runstate(src, {"postmigrate"}, s.timeout)
        info = src.cmd("query-migrate")
        size = mib << 20
        src_ram = integrity.page_summary(src, 0, size, "ram-src")
        out = src.shutdown()  # the old QEMU is gone before the new one starts
        if out.is_failure:
            raise MachineFailure(out)
        state_bytes = host.file_stat(work / "vm.state")[0]

        dst = ctx.run.machine(dst_spec)
        tuning.set_capabilities(dst, caps)
        tuning.set_parameters(dst, {"mode": "cpr-reboot", **s.dst_params})
        t0 = time.monotonic()
        dmark = dst.qmp.events.mark()
        dst.cmd("migrate-incoming", {"uri": uri})
        wait_status(dst, {"completed"}, since=dmark, timeout=s.timeout)
        load_s = time.monotonic() - t0
        wait_runstate(dst, {"paused", "prelaunch"}, s.timeout)
        dst_ram = integrity.page_summary(dst, 0, size, "ram-dst")
        rep = integrity.compare_summaries(src_ram, dst_ram)
        del src_ram, dst_ram
        tolerated = dst.spec.smp if dst.spec.accel == "kvm" else 0
        if len(rep.differing_pages) > tolerated:
            (dst.artifacts / "ram-diff.txt").write_text(
                "".join(f"{a:#x}\n" for a in rep.differing_pages))
            shown = ", ".join(f"{a:#x}" for a in rep.differing_pages[:8])
            raise integrity.IntegrityError(
                f"RAM differs between the saved source and the restarted destination in "
                f"{len(rep.differing_pages)} page(s): {shown}")
        metrics = MigrationMetrics.from_query_migrate(info)
        metrics.extra.update({"state_file_bytes": state_bytes, "load_s": round(load_s, 3),
                              "shared_ram": shared})
        write_metrics(ctx.run.artifacts / "metrics.json",
                      {"migration": metrics.to_dict(), "source_query_migrate": info})
        proof = _prove_running(dst, s.timeout, resume=True)
        proof["ram_compare"] = {"bytes": rep.size, "differing_pages": len(rep.differing_pages)}
        write_metrics(ctx.run.artifacts / "metrics.json", {"integrity": proof})
        return {"metrics": metrics.to_dict(), "integrity": proof}
    finally:
        if host.is_local:
            from harness import proctree
            shutil.rmtree(work, ignore_errors=True)
            proctree.untrack_dir(work)
        else:
            host.remove_run_dir(work)



def _prove_running(dst: Machine, timeout: float, resume: bool = False) -> dict:
    """The destination (continued if asked) runs the guest, then the guest-level proof."""
    from harness.qemu.spec import GuestKind
    t0 = time.monotonic()
    if resume:
        dst.cmd("cont")
    wait_runstate(dst, {"running"}, timeout)
    result: dict = {}
    kind = dst.spec.guest.kind
    if kind is GuestKind.BOOTBLOCK:
        mark = dst.serial.mark()
        if dst.serial.wait_for(rb"B", time.monotonic() + timeout, mark) is None:
            raise MachineFailure(dst.declare_hang(
                f"{dst.name}: bootblock made no pass after migration within {timeout:.0f}s"))
        result["bootblock_pattern"] = integrity.prove_bootblock_pattern(dst).detail
    elif kind is GuestKind.LINUX:
        rep = integrity.prove_linux_guest(dst, timeout)
        result["linux_verify"] = {"pages": rep.pages, "bad": rep.bad}
    result["seconds"] = round(time.monotonic() - t0, 3)
    return result


# --------------------------------------------------------------------------- cpr-transfer
def unix_listening(path: Path) -> bool:
    """Is some process listening on this UNIX socket path? (/proc/net/unix, no connect:
    a probe connection would be taken as the cpr channel)."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return False
    want = str(path)
    for line in lines:
        parts = line.split()
        # Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = __SO_ACCEPTCON
        if len(parts) >= 8 and parts[7] == want and int(parts[3], 16) & 0x10000:
            return True
    return False


def _socket_channel(kind: str, path: Path) -> dict:
    return {"channel-type": kind, "addr": {"transport": "socket", "type": "unix", "path": str(path)}}


@register(Flow.CPR_TRANSFER)
def run_cpr_transfer(ctx: ScenarioContext) -> dict:
    s = ctx.scenario
    defer = s.options.defer
    private_ram = s.options.private_ram   # refusal scenarios
    mib = ctx.spec.memory_mib
    work = ctx.run.host.make_run_dir("cpr")   # short path: UNIX sockets
    cpr_sock, mig_sock = work / "cpr.sock", work / "mig.sock"
    main_ch, cpr_ch = _socket_channel("main", mig_sock), _socket_channel("cpr", cpr_sock)
    mem: tuple[str, ...] = () if private_ram else (
        "-object", f"memory-backend-memfd,id=pc.ram,size={mib}M,share=on",
        "-machine", "memory-backend=pc.ram,aux-ram-share=on")
    dst_extra = mem + ("-incoming", json.dumps(cpr_ch), "-global", "migration.x-events=on")
    src_spec, dst_spec = _specs(ctx, mem, dst_extra,
                                incoming="defer" if defer else f"unix:{mig_sock}")
    launching = None
    try:
        src = ctx.run.machine(src_spec)
        dst = ctx.run.machine(dst_spec, launch=False)
        wait_guest_ready(src)
        try:
            tuning.set_capabilities(src, {"events": True, **s.caps})
            tuning.set_parameters(src, {"mode": "cpr-transfer", **s.params})
        except QMPCommandError as exc:
            return _check_refusal(exc, s)
        # The new QEMU blocks reading the cpr channel before its monitor exists:
        # launch() (which waits for the monitor) runs in the background.
        launching = launch_in_background(dst)
        deadline = time.monotonic() + CPR_LISTEN_TIMEOUT
        while not unix_listening(cpr_sock):
            if launching.done():
                launching.result()  # raises the LaunchError (bad arguments...)
                raise AssertionError(f"{dst.name}: monitor up before the cpr channel was used")
            if time.monotonic() > deadline:
                raise MachineFailure(dst.declare_hang(
                    f"{dst.name}: not listening on the cpr socket within {CPR_LISTEN_TIMEOUT:.0f}s"))
            time.sleep(0.005)
        mark = src.qmp.events.mark()
        t0 = time.monotonic()
        try:
            src.cmd("migrate", {"channels": [main_ch, cpr_ch]})
        except QMPCommandError as exc:
            res = _check_refusal(exc, s)
            # It waits for a cpr state that will never come, before its monitor
            # (and its SIGTERM handling) exists: SIGKILL is the declared end.
            dst.expect_exit((-signal.SIGKILL,))
            dst.kill(signal.SIGKILL)
            _settle(launching)
            return res
        _expect_no_refusal(s)
        launching.result(timeout=CPR_LISTEN_TIMEOUT + 15)
        monitor_s = time.monotonic() - t0
        if defer:
            st = dst.status()
            if st != "inmigrate":
                raise AssertionError(f"{dst.name}: run state {st} before migrate-incoming, "
                                     "expected inmigrate")
            dst.cmd("migrate-incoming", {"channels": [main_ch]})
        wait_status(src, {"completed"}, since=mark, timeout=s.timeout)
        wait_status(dst, {"completed"}, timeout=s.timeout)
        wait_runstate(src, {"postmigrate"}, s.timeout)
        info = src.cmd("query-migrate")
        metrics = MigrationMetrics.from_query_migrate(info)
        metrics.extra.update({"destination_monitor_after_migrate_s": round(monitor_s, 3),
                              "defer": defer})
        write_metrics(ctx.run.artifacts / "metrics.json",
                      {"migration": metrics.to_dict(), "source_query_migrate": info})
        proof = _prove_running(dst, s.timeout)
        write_metrics(ctx.run.artifacts / "metrics.json", {"integrity": proof})
        return {"metrics": metrics.to_dict(), "integrity": proof}
    finally:
        if launching is not None and not launching.done():
            dst.kill(signal.SIGKILL)
            _settle(launching)
        ctx.run.host.remove_run_dir(work)


def launch_in_background(m: Machine, keep_alive: float = 3600.0) -> concurrent.futures.Future:
    """m.launch() on a thread; the Future is done when the monitor is up (or launch failed).

    QEMU is started with PR_SET_PDEATHSIG, which fires when the *thread* that
    forked it exits, not the process: so the launching thread stays alive as
    long as this QEMU does (bounded by keep_alive; a daemon thread).
    """
    fut: concurrent.futures.Future = concurrent.futures.Future()

    def body() -> None:
        try:
            m.launch()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter
            fut.set_exception(exc)
            return
        fut.set_result(m)
        deadline = time.monotonic() + keep_alive
        while m.proc is not None and m.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)

    threading.Thread(target=body, name=f"launch-{m.name}", daemon=True).start()
    return fut


def _settle(fut: concurrent.futures.Future) -> None:
    try:
        fut.result(timeout=60)
    except Exception:  # noqa: BLE001 - the launch we aborted on purpose
        pass
