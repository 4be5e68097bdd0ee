"""Proof that each mode of a migration really happened, not only that QEMU accepted
its capability: a silent fallback (multifd to one stream, zstd to none, postcopy
finishing as precopy, TLS never negotiated) fails the test, and the message says
what is missing.

Evidence: the source's final query-migrate, its effective capabilities and
parameters, the progress samples, what a `during` hook observed, QMP events, and
QEMU trace events switched on over QMP before `migrate` (trace-event-set-state;
Debian's and a default build's log backend write them to stderr):

  multifd       multifd-bytes > 0, and one sender thread started per configured
                channel (trace multifd_send_thread_start, distinct ids)
  compression   multifd-bytes (on the wire) below normal-bytes (raw pages sent)
  xbzrle        pages encoded from the cache (xbzrle-cache pages > 0)
  auto-converge cpu-throttle-percentage > 0 at some point
  postcopy      the source entered postcopy-active, and postcopy requests or bytes > 0
  preempt       pages sent on the preempt channel (trace postcopy_preempt_send_host_page)
  TLS           tls-creds set on both sides, a completed handshake on both sides
                (trace qio_channel_tls_handshake_complete)

A trace event this QEMU does not have (an old version, or a build whose trace
backend is not `log`) makes that part "not observable", recorded as such in
metrics.json; it never passes silently as proven. COLO's checkpoints are counted
by its own flow (flows/colo.wait_checkpoints).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from harness.migration.pair import Pair
from harness.qemu.machine import Machine
from harness.qemu.qmp import QMPCommandError

# event -> on which side it is enabled
SRC_EVENTS = {"multifd": ("multifd_send_thread_start",),
              "preempt": ("postcopy_preempt_send_host_page",),
              "tls": ("qio_channel_tls_handshake_complete",)}
DST_EVENTS = {"tls": ("qio_channel_tls_handshake_complete",)}


class ModeNotProven(AssertionError):
    """A mode was enabled but the migration shows no sign of it."""


@dataclass(frozen=True)
class Modes:
    multifd: bool = False
    channels: int = 0
    compression: str = "none"
    xbzrle: bool = False
    auto_converge: bool = False
    postcopy: bool = False
    preempt: bool = False
    tls: bool = False

    @classmethod
    def of(cls, m: Machine) -> "Modes":
        """The modes the source is really configured for (QEMU's view, not the scenario's)."""
        caps = {c["capability"]: c["state"] for c in m.cmd("query-migrate-capabilities")}
        params = m.cmd("query-migrate-parameters")
        multifd = bool(caps.get("multifd"))
        return cls(multifd=multifd, channels=int(params.get("multifd-channels", 0)) if multifd else 0,
                   compression=str(params.get("multifd-compression", "none")) if multifd else "none",
                   xbzrle=bool(caps.get("xbzrle")), auto_converge=bool(caps.get("auto-converge")),
                   postcopy=bool(caps.get("postcopy-ram")),
                   preempt=bool(caps.get("postcopy-ram") and caps.get("postcopy-preempt")),
                   tls=bool(params.get("tls-creds")))

    def names(self) -> list[str]:
        return [n for n in ("multifd", "xbzrle", "auto_converge", "postcopy", "preempt", "tls")
                if getattr(self, n)]


def _enable(m: Machine, events: tuple[str, ...]) -> bool:
    try:
        for e in events:
            m.cmd("trace-event-set-state", {"name": e, "enable": True})
        return True
    except QMPCommandError:     # an older QEMU without the event: that part is unobservable
        return False


def arm(pair: Pair) -> dict[str, bool]:
    """Before `migrate`: switch on the trace events the proofs read (per enabled mode).
    Returns which modes' traces are on."""
    modes = Modes.of(pair.src)
    armed = {}
    for mode in modes.names():
        src_ok = _enable(pair.src, SRC_EVENTS.get(mode, ()))
        dst_ok = _enable(pair.dst, DST_EVENTS.get(mode, ()))
        armed[mode] = src_ok and dst_ok
    return armed


def traced(m: Machine, event: str) -> bool:
    """Is the event switched on in this QEMU? (False: unknown to it, or compiled out.)"""
    try:
        states = m.cmd("trace-event-get-state", {"name": event})
    except QMPCommandError:
        return False
    return any(st.get("state") == "enabled" for st in states)


def _trace_ids(text: str, event: str) -> list[int]:
    return [int(x) for x in re.findall(rf"{event}\D*?(\d+)", text)]


def prove(pair: Pair, src_info: dict, *, samples: list | tuple = (), observed: dict | None = None,
          postcopy_entered: bool | None = None) -> dict:
    """Check every enabled mode left its mark; raise ModeNotProven naming all that did not.
    Returns what was seen (for metrics.json)."""
    src, dst = pair.src, pair.dst
    modes = Modes.of(src)
    ram = src_info.get("ram") or {}
    observed = observed or {}
    src_err, dst_err = src.stderr_text(), dst.stderr_text()
    missing: list[str] = []
    seen: dict = {"modes": modes.names()}
    if modes.multifd:
        mb = ram.get("multifd-bytes", 0) or 0
        seen["multifd_bytes"] = mb
        if mb <= 0:
            missing.append("multifd: multifd-bytes is 0, no page went through the multifd channels")
        ids = sorted(set(_trace_ids(src_err, "multifd_send_thread_start")))
        if ids or traced(src, "multifd_send_thread_start"):
            seen["multifd_channels_seen"] = len(ids)
            if not ids:
                missing.append(f"multifd: no sender thread started (multifd_send_thread_start "
                               f"never traced; {modes.channels} channels configured)")
            elif len(ids) != modes.channels:
                missing.append(f"multifd: multifd-channels is {modes.channels} but "
                               f"{len(ids)} sender thread(s) started (ids {ids})")
        else:
            seen["multifd_channels_seen"] = "not observable: no multifd_send_thread_start trace event"
    if modes.multifd and modes.compression not in ("none", ""):
        wire, raw = ram.get("multifd-bytes", 0) or 0, ram.get("normal-bytes", 0) or 0
        seen["compression"] = {"method": modes.compression, "wire_bytes": wire, "raw_bytes": raw}
        if not (0 < wire < raw):
            missing.append(f"compression {modes.compression}: {wire} bytes on the wire for "
                           f"{raw} raw bytes of pages, not compressed")
    if modes.xbzrle:
        cache = observed.get("xbzrle_cache") or src_info.get("xbzrle-cache") or {}
        seen["xbzrle_pages"] = cache.get("pages", 0)
        if not cache.get("pages"):
            missing.append(f"xbzrle: no page was encoded from the cache (xbzrle-cache {cache})")
    if modes.auto_converge:
        pcts = [s.get("cpu_throttle_percentage") or 0 for s in samples]
        pcts += [p for _, p in observed.get("throttle_samples", [])]
        seen["max_throttle_pct"] = max(pcts, default=0)
        if seen["max_throttle_pct"] <= 0:
            missing.append(f"auto-converge: cpu-throttle-percentage never rose above 0 "
                           f"({len(pcts)} samples)")
    if modes.postcopy and postcopy_entered is not None:
        reqs, pbytes = ram.get("postcopy-requests", 0) or 0, ram.get("postcopy-bytes", 0) or 0
        seen["postcopy"] = {"entered": postcopy_entered, "requests": reqs, "bytes": pbytes}
        if not postcopy_entered:
            missing.append("postcopy: the source never entered postcopy-active")
        if reqs <= 0 and pbytes <= 0:
            missing.append("postcopy: no postcopy request and no postcopy byte")
    if modes.preempt and postcopy_entered is not None:
        pages = src_err.count("postcopy_preempt_send_host_page")
        seen["preempt_pages"] = pages
        if pages <= 0 and not traced(src, "postcopy_preempt_send_host_page"):
            seen["preempt_pages"] = "not observable: no postcopy_preempt_send_host_page trace event"
        elif pages <= 0:
            missing.append("postcopy-preempt: the preempt channel carried no page "
                           "(postcopy_preempt_send_host_page never traced)")
    if modes.tls:
        dst_creds = dst.cmd("query-migrate-parameters").get("tls-creds")
        seen["tls"] = {"creds": [src.cmd("query-migrate-parameters").get("tls-creds"), dst_creds],
                       "handshakes": [src_err.count("qio_channel_tls_handshake_complete"),
                                      dst_err.count("qio_channel_tls_handshake_complete")]}
        if not dst_creds:
            missing.append("tls: the destination has no tls-creds")
        for m, side, n in zip((src, dst), ("source", "destination"), seen["tls"]["handshakes"]):
            if n <= 0 and traced(m, "qio_channel_tls_handshake_complete"):
                missing.append(f"tls: no completed TLS handshake on the {side} "
                               f"(qio_channel_tls_handshake_complete never traced)")
    if missing:
        raise ModeNotProven("mode not proven: " + "; ".join(missing))
    return seen
