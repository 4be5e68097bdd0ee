"""The Linux guest's own view of a migration: the largest gap between heartbeats.

The in-guest workload prints `HB <seq> <monotonic_ms>` every HB_MS. Reading
the source's serial log and then the destination's, the heartbeats form one
sequence (the destination continues the guest where the source stopped it);
the largest step in the guest's monotonic clock between consecutive
heartbeats is the stall the guest observed.

The guest clock stops while the VM is stopped (TCG's and kvmclock's guest time
do not advance while paused), so this is the time the guest ran but its
workload did not get to print: throttling, postcopy page faults, a starved
vCPU. It is not the host-side downtime (query-migrate's `downtime`).
"""
from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.guest.integrity import HB_RX

_HB = re.compile(HB_RX, re.M)


@dataclass(frozen=True)
class GuestStall:
    max_gap_ms: int              # the largest guest-clock step between heartbeats
    gap_after_seq: int           # the heartbeat after which it happened
    interval_ms: float           # median step (the nominal HB_MS)
    boundary_gap_ms: int | None  # last source heartbeat -> first new destination heartbeat
    src_last_seq: int | None
    dst_first_seq: int | None
    missing: int                 # sequence numbers never seen (lost output)
    heartbeats: int

    def to_dict(self) -> dict:
        return asdict(self)


def heartbeats(text: str | bytes) -> list[tuple[int, int]]:
    """[(seq, monotonic_ms)] in order of appearance; partial or garbled lines are skipped."""
    data = text.encode(errors="replace") if isinstance(text, str) else text
    data = data[:data.rfind(b"\n") + 1]  # a last line without its newline may be cut short
    return [(int(m.group(1)), int(m.group(2))) for m in _HB.finditer(data)]


def guest_stall(src_text: str | bytes, dst_text: str | bytes) -> GuestStall | None:
    """The guest-observed stall across a migration; None with fewer than two heartbeats."""
    src, dst = heartbeats(src_text), heartbeats(dst_text)
    by_seq: dict[int, int] = {}
    for seq, ms in src + dst:
        by_seq.setdefault(seq, ms)  # a heartbeat both sides printed counts once
    seqs = sorted(by_seq)
    if len(seqs) < 2:
        return None
    steps = [(by_seq[b] - by_seq[a], a) for a, b in zip(seqs, seqs[1:])]
    gap, after = max(steps)
    src_last = max((s for s, _ in src), default=None)
    new_dst = [s for s, _ in dst if src_last is None or s > src_last]
    dst_first = min(new_dst, default=None)
    boundary = (by_seq[dst_first] - by_seq[src_last]
                if src_last is not None and dst_first is not None else None)
    return GuestStall(max_gap_ms=gap, gap_after_seq=after,
                      interval_ms=statistics.median(s for s, _ in steps),
                      boundary_gap_ms=boundary, src_last_seq=src_last, dst_first_seq=dst_first,
                      missing=seqs[-1] - seqs[0] + 1 - len(seqs), heartbeats=len(seqs))


def guest_stall_from_logs(src_log: Path, dst_log: Path, src_offset: int = 0) -> GuestStall | None:
    """From the two serial.log files; src_offset skips the source's output before the
    migration (a SerialConsole.mark() taken just before `migrate`)."""
    return guest_stall(_read(src_log)[src_offset:], _read(dst_log))


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""
