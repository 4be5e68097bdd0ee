"""Postcopy flows: plain/preempt postcopy, and postcopy recovery after a broken channel.

Flow.POSTCOPY: precopy for a while (non-converging), `migrate-start-postcopy`,
wait until the destination runs the guest, optionally try a command that must
be refused in postcopy (PostcopyOptions.attempt, e.g. migrate_cancel), then wait for
completion on both sides and prove integrity on the destination (a fresh
bootblock pass, then the page rule on the stopped guest; or the Linux in-guest
verify). A byte compare with the source is impossible after postcopy: the
destination ran before it had all pages.

Flow.POSTCOPY_RECOVERY: as above, but with the postcopy bandwidth turned down
to 4 KiB/s the channel is broken (RecoveryOptions.method, a RecoveryBreak):

    pause-source       migrate-pause on the source (qtest's recovery/plain)
    pause-destination  migrate-pause on the destination
    pause-both         migrate-pause on both at once (the second may find its side
                       already paused: that refusal is accepted and recorded)
    proxy-cut          the stream runs through harness.faults.proxy.TcpProxy; cut()
                       resets every connection and both sides pause by themselves
    link-down          the destination host's migration interface goes down (a real
                       cable pull; remote hosts only): TCP notices nothing, so both
                       sides are paused with migrate-pause; the link comes back up
                       before the recovery
    link-reject        iptables REJECT (tcp-reset) on that interface: the source's next
                       segment meets a reset and it pauses by itself; the destination
                       (reading, no keepalive) notices nothing and gets migrate-pause;
                       the filter is lifted before the recovery

then both sides must reach postcopy-paused; RecoveryOptions.double_failure
(HANDSHAKE or RECONNECT, as qtest's recovery/double-failures) first
attempts a recovery over unpaired socketpairs that must fail and leave both
sides paused again; then `migrate-recover` (out-of-band) on the destination
and `migrate` with resume=true on the source, RecoveryOptions.cycles times, then
completion and integrity.

Both flows wait for the destination's RESUME before breaking anything: a break
while the destination is still loading device state (postcopy "listening")
fails the destination for good, by design in QEMU (only a running postcopy
can pause).
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time

from harness.faults.link import LinkFaults, migration_link
from harness.faults.proxy import TcpProxy, local_address_towards
from harness.migration import drivers, proofs
from harness.migration.context import ScenarioContext
from harness.migration.metrics import MigrationMetrics, write_metrics
from harness.migration.pair import Pair
from harness.migration.expectations import check_refusal, record_refusal
from harness.migration.options import ProxyShape, RecoveryBreak
from harness.migration.runner import register
from harness.migration.scenario import Flow, Result, Scenario
from harness.migration.states import MigrationStateError, wait_runstate, wait_status
from harness.migration.transports import Transport, connect_uri
from harness.qemu.machine import Machine, MachineFailure
from harness.qemu.qmp import QMPCommandError

PRECOPY_BYTES = 3_000_000           # precopy progress before switching (qtest: ~3 MB)
SLOW_POSTCOPY_BANDWIDTH = 4096      # bytes/s: keeps postcopy alive until we break it
# 7.2: "...only supported during postcopy-active state"; 10.x: "... or postcopy-recover state"
PAUSE_REFUSAL = "migrate-pause is currently only supported during postcopy-active"
BREAKS = tuple(b.value for b in RecoveryBreak)
LINK_BREAKS = (RecoveryBreak.LINK_DOWN.value, RecoveryBreak.LINK_REJECT.value)
QEMU_VM_COMMAND = b"\x08"           # first byte of a real resume stream


# --------------------------------------------------------------------------- common steps
@contextlib.contextmanager
def peer_exit_noted(*machines: Machine, wait: float = 3.0):
    """A migration that failed on one side often failed because the other QEMU
    exited (the destination knows why: "Machine type received is ..."): add
    every exited machine's exit signature to the MigrationStateError."""
    try:
        yield
    except MigrationStateError as exc:
        notes = []
        for m in machines:
            if m.proc is None:
                continue
            if m.proc.wait(wait) is not None:
                out = m.wait_exit(0.1) or m.outcome
                if out is not None:
                    errs = [ln.split(": ", 1)[-1] for ln in m.stderr_text().splitlines()
                            if ln.strip() and "warning:" not in ln and "deprecated" not in ln]
                    why = " | ".join(errs[-2:])
                    notes.append(f"{m.name} exited ({out.kind.name.lower()}, rc {out.returncode})"
                                 + (f": {why}" if why else ""))
        if not notes:
            raise
        raise MigrationStateError(f"{exc}; {'; '.join(notes)}") from exc


POSTCOPY_CAPS = {"postcopy-ram": True, "postcopy-blocktime": True}   # both sides


def postcopy_caps(s: Scenario) -> dict:
    caps = dict(POSTCOPY_CAPS)
    caps.update(s.caps)
    return caps


def start_precopy(ctx: ScenarioContext, pair: Pair, uri_hook=None) -> str:
    """Caps, listening destination, non-converging precopy running with some progress."""
    s = ctx.scenario
    uri = drivers.prepare(pair, s.transport, caps=postcopy_caps(s), params=dict(s.params),
                          dst_params=dict(s.dst_params), converge=False)
    if uri_hook is not None:
        uri = uri_hook(uri)
    pair.src.cmd("migrate", {"uri": uri})
    want = s.options.precopy_bytes or PRECOPY_BYTES
    deadline = time.monotonic() + s.timeout
    while True:
        info = pair.src.cmd("query-migrate")
        if info.get("status") in ("failed", "cancelled", "completed"):
            raise MigrationStateError(
                f"{pair.src.name}: migration {info.get('status')} during precopy"
                + (f": {info['error-desc']}" if info.get("error-desc") else ""))
        if info.get("ram", {}).get("transferred", 0) >= want:
            return uri
        if time.monotonic() > deadline:
            raise MachineFailure(pair.src.declare_hang(
                f"{pair.src.name}: precopy did not transfer {want} bytes within {s.timeout:.0f}s"))
        time.sleep(0.05)


def switch_to_postcopy(pair: Pair, timeout: float) -> float:
    """migrate-start-postcopy; both sides postcopy-active and the destination running.

    Returns the seconds from the command to the destination's RESUME.
    """
    src, dst = pair.src, pair.dst
    smark, dmark = src.qmp.events.mark(), dst.qmp.events.mark()
    t0 = time.monotonic()
    src.cmd("migrate-start-postcopy")
    wait_status(src, {"postcopy-active"}, since=smark, timeout=timeout)
    wait_status(dst, {"postcopy-active"}, since=dmark, timeout=timeout)
    ev = dst.qmp.events.wait_for(lambda e: e.name == "RESUME", time.monotonic() + timeout,
                                 start=dmark, alive=dst.is_running)
    if ev is None:
        if not dst.is_running():
            raise MachineFailure(dst.wait_exit(5.0) or dst.declare_hang(f"{dst.name}: exit not reaped"))
        raise MachineFailure(dst.declare_hang(
            f"{dst.name}: no RESUME within {timeout:.0f}s of migrate-start-postcopy"))
    took = time.monotonic() - t0
    wait_runstate(dst, {"running"}, timeout)
    return took


def finish(ctx: ScenarioContext, pair: Pair, extra: dict) -> dict:
    """Wait for completion on both sides, record metrics, prove integrity."""
    s = ctx.scenario
    src, dst = pair.src, pair.dst
    wait_status(src, {"completed"}, timeout=s.timeout)
    wait_status(dst, {"completed"}, timeout=s.timeout)
    info = src.cmd("query-migrate")
    dinfo = dst.cmd("query-migrate")
    metrics = MigrationMetrics.from_query_migrate(info)
    ram = info.get("ram", {})
    metrics.extra.update({k: v for k, v in {
        "postcopy_requests": ram.get("postcopy-requests"),
        "postcopy_blocktime_ms": dinfo.get("postcopy-blocktime"),
        "postcopy_vcpu_blocktime_ms": dinfo.get("postcopy-vcpu-blocktime"),
    }.items() if v is not None})
    metrics.extra.update(extra)
    write_metrics(ctx.run.artifacts / "metrics.json",
                  {"migration": metrics.to_dict(), "source_query_migrate": info,
                   "destination_query_migrate": dinfo})
    entered = any(e.name == "MIGRATION" and e.data.get("status") == "postcopy-active"
                  for e in src.qmp.events.events)
    modes = proofs.prove(pair, info, postcopy_entered=entered)   # postcopy, preempt, multifd
    write_metrics(ctx.run.artifacts / "metrics.json", {"modes": modes})
    proof = drivers.prove_integrity(pair, ram_compare=False, timeout=s.timeout)
    return {"metrics": metrics.to_dict(), "integrity": proof}


# --------------------------------------------------------------------------- Flow.POSTCOPY
@register(Flow.POSTCOPY)
def run_postcopy(ctx: ScenarioContext) -> dict:
    pair = ctx.pair(dst_paused=False)
    with peer_exit_noted(pair.dst, pair.src):
        return _run_postcopy(ctx, pair)


def _run_postcopy(ctx: ScenarioContext, pair: Pair) -> dict:
    s = ctx.scenario
    attempt = s.options.attempt
    try:
        start_precopy(ctx, pair)
    except QMPCommandError as exc:
        if s.expect.result is Result.REFUSED and not attempt:
            return record_refusal(ctx, exc)
        raise
    if s.expect.result is Result.REFUSED and not attempt:
        raise AssertionError(f"{s.path}: expected a refusal ({s.expect.error_match}), "
                             "but caps, incoming and migrate were all accepted")
    to_resume = switch_to_postcopy(pair, s.timeout)
    extra: dict = {"switch_to_resume_s": round(to_resume, 3)}
    if attempt:
        # Something that must be refused while postcopy runs; the migration
        # must then still complete intact.
        pair.src.cmd("migrate-set-parameters", {"max-postcopy-bandwidth": SLOW_POSTCOPY_BANDWIDTH})
        try:
            pair.src.cmd(attempt)
        except QMPCommandError as exc:
            if s.expect.result is not Result.REFUSED:
                raise
            check_refusal(exc, s)
            extra["attempt"] = {"command": attempt, "refused": str(exc),
                                "status_after": pair.src.cmd("query-migrate")["status"]}
        else:
            raise AssertionError(f"{s.path}: {attempt} was accepted in postcopy-active; "
                                 f"expected {s.expect.error_class}: {s.expect.error_match}")
        pair.src.cmd("migrate-set-parameters", {"max-postcopy-bandwidth": 0})
    return finish(ctx, pair, extra)


# --------------------------------------------------------------------------- recovery
class _Path:
    """The source->destination path: direct, or through a TcpProxy we own."""

    def __init__(self, use_proxy: bool, shape: ProxyShape, link: LinkFaults | None = None):
        self.use_proxy = use_proxy
        self.shape = shape
        self.proxies: list[TcpProxy] = []
        self.link = link   # the destination host's migration link, for link-* breaks

    def heal(self) -> None:
        if self.link is not None:
            self.link.restore()

    def route(self, uri: str) -> str:
        if not self.use_proxy:
            return uri
        host, port = _inet(uri)
        # Across hosts the proxy listens on our address on the migration network.
        p = TcpProxy((host, port), listen_host=local_address_towards(host),
                     name=f"proxy{len(self.proxies)}").start()
        self.proxies.append(p)
        if self.shape.delay_ms:
            p.delay(self.shape.delay_ms)
        if self.shape.throttle:
            p.throttle(self.shape.throttle)
        return p.uri

    @property
    def current(self) -> TcpProxy:
        return self.proxies[-1]

    def stats(self) -> list[dict]:
        return [p.stats.as_dict() for p in self.proxies]

    def close(self) -> None:
        for p in self.proxies:
            p.stop()
        self.heal()


def _inet(uri: str) -> tuple[str, int]:
    if not uri.startswith("tcp:"):
        raise ValueError(f"proxy-cut needs a tcp transport, got {uri}")
    host, _, port = uri[4:].rpartition(":")
    return host, int(port)


def _pause(m: Machine) -> str:
    """migrate-pause (out-of-band); 'accepted' or the refusal if the side already paused."""
    try:
        m.cmd("migrate-pause", oob=True)
        return "accepted"
    except QMPCommandError as exc:
        if PAUSE_REFUSAL in exc.desc and m.cmd("query-migrate")["status"] == "postcopy-paused":
            return f"refused (already paused): {exc.desc}"
        raise


def break_channel(pair: Pair, how: str, path: _Path) -> dict:
    src, dst = pair.src, pair.dst
    if how == "pause-source":
        return {"source": _pause(src)}
    if how == "pause-destination":
        return {"destination": _pause(dst)}
    if how == "link-down":
        path.link.down()
        return {"link": "down", **_pause_both(src, dst)}
    if how == "link-reject":
        path.link.reject()
        return {"link": "reject"}
    if how == "pause-both":
        return _pause_both(src, dst)
    if how == "proxy-cut":
        return {"proxy_cut_connections": path.current.cut()}
    raise ValueError(f"unknown break '{how}' (one of {', '.join(BREAKS)})")


def _pause_both(src: Machine, dst: Machine) -> dict:
    # Both at (nearly) the same instant: whichever lands second may find its
    # side already paused by the first's broken channel.
    res: dict = {}
    t = threading.Thread(target=lambda: res.__setitem__("destination", _pause(dst)))
    t.start()
    res["source"] = _pause(src)
    t.join(30)
    if t.is_alive():
        raise MachineFailure(dst.declare_hang(f"{dst.name}: migrate-pause got no reply in 30s"))
    if "destination" not in res:
        raise AssertionError(f"{dst.name}: migrate-pause failed (see qmp.jsonl)")
    return res


def wait_both(pair: Pair, status: str, smark: int, dmark: int, timeout: float,
              src_only: bool = False) -> None:
    wait_status(pair.src, {status}, since=smark, timeout=timeout, ungoals=set())
    if not src_only:
        wait_status(pair.dst, {status}, since=dmark, timeout=timeout, ungoals=set())


def double_failure(pair: Pair, stage: str, timeout: float) -> dict:
    """qtest's double failures: a recovery over wrong channels that must fail.

    Each side gets one end of its own socketpair (so neither talks to the other).
    The destination is sent one QEMU_VM_COMMAND byte so it enters
    postcopy-recover; 'reconnect' also closes the source's peer, so the source
    fails while establishing the channel and goes back to postcopy-paused by
    itself; 'handshake' leaves the source stuck in postcopy-recover until a
    migrate-pause kicks it out. Finally the destination is kicked too.
    """
    src, dst = pair.src, pair.dst
    a_src, a_peer = socket.socketpair()
    b_dst, b_peer = socket.socketpair()
    seen: dict = {}
    try:
        src.qmp.send_fd(a_src.fileno())
        src.cmd("getfd", {"fdname": "fd-mig"})
        dst.qmp.send_fd(b_dst.fileno())
        dst.cmd("getfd", {"fdname": "fd-mig"})
        b_peer.sendall(QEMU_VM_COMMAND)
        if stage == "reconnect":
            a_peer.close()
        smark, dmark = src.qmp.events.mark(), dst.qmp.events.mark()
        dst.cmd("migrate-recover", {"uri": "fd:fd-mig"}, oob=True)
        src.cmd("migrate", {"uri": "fd:fd-mig", "resume": True})
        wait_status(src, {"postcopy-recover-setup"}, since=smark, timeout=timeout, ungoals=set())
        wait_status(dst, {"postcopy-recover"}, since=dmark, timeout=timeout, ungoals=set())
        if stage == "reconnect":
            # No kick: the source notices the dead peer by itself.
            wait_status(src, {"postcopy-paused"}, since=smark, timeout=timeout, ungoals=set())
            seen["source"] = "back to postcopy-paused by itself"
        else:
            wait_status(src, {"postcopy-recover"}, since=smark, timeout=timeout, ungoals=set())
            time.sleep(0.2)
            st = src.cmd("query-migrate")["status"]
            if st != "postcopy-recover":
                raise AssertionError(f"{src.name}: a handshake over an unpaired channel left "
                                     f"postcopy-recover by itself ({st}); expected it to wait")
            pmark = src.qmp.events.mark()
            src.cmd("migrate-pause", oob=True)
            wait_status(src, {"postcopy-paused"}, since=pmark, timeout=timeout, ungoals=set())
            seen["source"] = "stuck in postcopy-recover until migrate-pause"
        if dst.cmd("query-migrate")["status"] != "postcopy-recover":
            raise AssertionError(f"{dst.name}: expected postcopy-recover during the failed recovery")
        pmark = dst.qmp.events.mark()
        dst.cmd("migrate-pause", oob=True)
        wait_status(dst, {"postcopy-paused"}, since=pmark, timeout=timeout, ungoals=set())
        seen["destination"] = "postcopy-recover until migrate-pause"
    finally:
        for sk in (a_src, a_peer, b_dst, b_peer):
            sk.close()
    return seen


@register(Flow.POSTCOPY_RECOVERY)
def run_recovery(ctx: ScenarioContext) -> dict:
    s = ctx.scenario
    o = s.options
    how = o.method.value
    dbl = o.double_failure.value if o.double_failure is not None else None
    cycles = o.cycles
    pair = ctx.pair(dst_paused=False)
    path = _Path(how == "proxy-cut", o.proxy,
                 migration_link(pair.dst) if how in LINK_BREAKS else None)
    src, dst = pair.src, pair.dst
    try:
        with peer_exit_noted(dst, src):
            return _recover(ctx, pair, how, dbl, cycles, path)
    finally:
        path.close()


def _recover(ctx: ScenarioContext, pair: Pair, how: str, dbl: str | None, cycles: int,
             path: _Path) -> dict:
    s = ctx.scenario
    src, dst = pair.src, pair.dst
    start_precopy(ctx, pair, uri_hook=path.route)
    src.cmd("migrate-set-parameters", {"max-postcopy-bandwidth": SLOW_POSTCOPY_BANDWIDTH})
    to_resume = switch_to_postcopy(pair, s.timeout)
    rounds = []
    for i in range(cycles):
        smark, dmark = src.qmp.events.mark(), dst.qmp.events.mark()
        t0 = time.monotonic()
        how_done = break_channel(pair, how, path)
        if how == "link-reject":
            # The source's next segment meets the reset and it pauses by itself; the
            # destination only reads and TCP tells it nothing, so it is paused by hand.
            wait_both(pair, "postcopy-paused", smark, dmark, s.timeout, src_only=True)
            how_done["destination"] = _pause(dst)
        wait_both(pair, "postcopy-paused", smark, dmark, s.timeout)
        r = {"break": how, "result": how_done, "paused_s": round(time.monotonic() - t0, 3)}
        path.heal()   # the link comes back before the recovery
        if dbl:
            r["double_failure"] = {dbl: double_failure(pair, dbl, s.timeout)}
        smark, dmark = src.qmp.events.mark(), dst.qmp.events.mark()
        t1 = time.monotonic()
        dst.cmd("migrate-recover", {"uri": f"tcp:{dst.host.listen_address}:0"}, oob=True)
        uri = path.route(connect_uri(Transport.TCP, dst))
        src.cmd("migrate", {"uri": uri, "resume": True})
        wait_status(src, {"postcopy-active"}, since=smark, timeout=s.timeout)
        wait_status(dst, {"postcopy-active"}, since=dmark, timeout=s.timeout)
        r["recover_s"] = round(time.monotonic() - t1, 3)
        rounds.append(r)
        if i + 1 < cycles:
            time.sleep(0.2)  # let the resumed postcopy move a little before the next break
    src.cmd("migrate-set-parameters", {"max-postcopy-bandwidth": 0})
    extra = {"switch_to_resume_s": round(to_resume, 3), "recoveries": rounds}
    if path.proxies:
        extra["proxies"] = path.stats()
    return finish(ctx, pair, extra)
