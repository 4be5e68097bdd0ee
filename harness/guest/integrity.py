"""Integrity proofs: did the guest's memory survive the migration intact?

- bootblock rule: the first byte of every page in [1 MiB, 100 MiB) is equal,
  except for at most one boundary after which pages are exactly one behind;
  and the rest of each of those pages is zero (the guest only ever increments
  first bytes), so any byte flipped anywhere in the area is caught, not only a
  first byte: this is the whole-page proof for destinations that ran on
  (postcopy, snapshots, chaos), where no byte compare with the source exists;
- byte-exact RAM compare of a stopped source and a never-started destination;
- Linux guest: heartbeats resume and the in-guest verifier reports 0 bad pages.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from harness.qemu.machine import Machine, MachineFailure

PAGE = 4096
BOOTBLOCK_START = 1 << 20
BOOTBLOCK_END = 100 << 20
BOOTROM_END = 33 << 20       # the paced firmware form (images/bootblock/bootrom.S) dirties less


def bootblock_area(m: Machine) -> tuple[int, int]:
    """[start, end) that m's boot-sector guest dirties: the firmware form's is smaller."""
    return (BOOTBLOCK_START, BOOTROM_END if m.spec.guest.paced_rom else BOOTBLOCK_END)


class IntegrityError(AssertionError):
    """The guest's memory or behaviour after migration is wrong."""


@dataclass(frozen=True)
class PatternReport:
    ok: bool
    pages: int
    boundary: int | None   # page index (from 1 MiB) where the one-behind run starts
    detail: str


def check_bootblock_pattern(data: bytes) -> PatternReport:
    """Apply the a-b-bootblock rule to a dump of [1 MiB, 100 MiB)."""
    return check_first_bytes(data[::PAGE])


def check_first_bytes(firsts: bytes) -> PatternReport:
    """The bootblock rule on the first byte of each page."""
    n = len(firsts)
    if n == 0:
        return PatternReport(False, 0, None, "empty dump")
    first = firsts[0]
    boundary = None
    for i in range(1, n):
        b = firsts[i]
        expected = first if boundary is None else (first - 1) & 0xFF
        if b == expected:
            continue
        if boundary is None and b == (first - 1) & 0xFF:
            boundary = i
            continue
        addr = BOOTBLOCK_START + i * PAGE
        return PatternReport(False, n, boundary,
                             f"page at {addr:#x} has {b:#04x}, expected {expected:#04x} "
                             f"(first page {first:#04x}, boundary {boundary})")
    return PatternReport(True, n, boundary, f"{n} pages consistent, value {first:#04x}, "
                                            f"boundary {'none' if boundary is None else boundary}")


def dump_memory(m: Machine, start: int, size: int, name: str) -> bytes:
    """pmemsave into the machine's run dir (on its host), read it back, delete it."""
    assert m.run_dir is not None
    path = Path(m.run_dir) / f"{name}.bin"
    m.cmd("pmemsave", {"val": start, "size": size, "filename": str(path)}, timeout=120)
    try:
        return m.host.read_file(path)   # SFTP from a remote host
    finally:
        m.host.remove_file(path)


# Runs where the dump is (the QEMU's host, with its own python): per page, the first
# byte and an 8-byte blake2b digest. A remote 256 MiB dump then costs ~1 MiB of transfer.
_SUMMARY_PY = """
import hashlib, sys
first, dig, digests = bytearray(), bytearray(), sys.argv[2] == "1"
with open(sys.argv[1], "rb") as f:
    while True:
        p = f.read(%d)
        if not p:
            break
        first.append(p[0])
        if digests:
            dig += hashlib.blake2b(p, digest_size=8).digest()
sys.stdout.write(first.hex() + chr(10) + dig.hex() + chr(10))
""" % PAGE


@dataclass(frozen=True)
class PageSummary:
    firsts: bytes     # first byte of each page
    digests: bytes    # 8 bytes per page


def summarise(data: bytes, digests: bool = True) -> PageSummary:
    """What _SUMMARY_PY computes, in this process."""
    import hashlib
    pages = range(0, len(data), PAGE)
    dig = b"".join(hashlib.blake2b(data[o:o + PAGE], digest_size=8).digest() for o in pages) \
        if digests else b""
    return PageSummary(bytes(data[::PAGE]), dig)


def page_summary(m: Machine, start: int, size: int, name: str,
                 digests: bool = True) -> PageSummary:
    """pmemsave on the machine's host and summarise it there (no bulk transfer).

    digests=False: first bytes only (the bootblock rule), cheaper."""
    assert m.run_dir is not None
    path = Path(m.run_dir) / f"{name}.bin"
    m.cmd("pmemsave", {"val": start, "size": size, "filename": str(path)}, timeout=120)
    if m.host.is_local:
        try:
            return summarise(path.read_bytes(), digests)
        finally:
            path.unlink(missing_ok=True)
    try:
        rc, out, err = m.host.run([m.host.python, "-c", _SUMMARY_PY, str(path),
                                   "1" if digests else "0"], 120)
    finally:
        m.host.remove_file(path)
    lines = out.split("\n")
    if rc != 0 or len(lines) < 2:
        raise IntegrityError(f"{m.name}: cannot summarise its RAM dump on host "
                             f"'{m.host.name}': {(err.strip().splitlines() or ['no output'])[-1]}")
    return PageSummary(bytes.fromhex(lines[0]), bytes.fromhex(lines[1]))


# Runs where the dump is: per page its first byte, and the indexes of pages whose other
# 4095 bytes are not all zero (at most MAX_BAD_BODIES of them).
MAX_BAD_BODIES = 64
BODIES_SCRIPT = """
import sys
firsts, bad, zero = bytearray(), [], bytes(%d)
with open(sys.argv[1], "rb") as f:
    i = 0
    while True:
        p = f.read(%d)
        if not p:
            break
        firsts.append(p[0])
        if p[1:] != zero[:len(p) - 1] and len(bad) < %d:
            bad.append(str(i))
        i += 1
sys.stdout.write(firsts.hex() + chr(10) + ",".join(bad) + chr(10))
""" % (PAGE - 1, PAGE, MAX_BAD_BODIES)


@dataclass(frozen=True)
class BodyReport:
    firsts: bytes
    bad_pages: tuple[int, ...]      # page indexes whose bytes after the first are not zero
    first_bad_offset: int | None    # offset in the first bad page (when dumped locally)
    first_bad_value: int | None


def page_bodies(data: bytes) -> BodyReport:
    """First bytes, and which pages carry anything beyond their first byte."""
    firsts = bytes(data[::PAGE])
    # Common case in one pass of C: every zero byte of the dump is accounted for when
    # only the non-zero first bytes are non-zero.
    if data.count(0) == len(data) - (len(firsts) - firsts.count(0)):
        return BodyReport(firsts, (), None, None)
    body = bytearray(data)
    body[::PAGE] = bytes(len(firsts))          # blank the first bytes: the rest must be zero
    zero = bytes(PAGE)
    bad = [i for i in range(len(firsts)) if body[i * PAGE:(i + 1) * PAGE] != zero]
    page = body[bad[0] * PAGE:(bad[0] + 1) * PAGE]
    off = next(j for j, b in enumerate(page) if b)
    return BodyReport(firsts, tuple(bad[:MAX_BAD_BODIES]), off, page[off])


def bootblock_bodies(m: Machine) -> BodyReport:
    """pmemsave the guest's area ([1 MiB, 100 MiB), or the firmware form's) on the
    machine's host; first bytes and non-zero bodies."""
    assert m.run_dir is not None
    path = Path(m.run_dir) / "pattern.bin"
    start, end = bootblock_area(m)
    m.cmd("pmemsave", {"val": start, "size": end - start, "filename": str(path)}, timeout=120)
    if m.host.is_local:
        try:
            return page_bodies(path.read_bytes())
        finally:
            path.unlink(missing_ok=True)
    try:
        rc, out, err = m.host.run([m.host.python, "-c", BODIES_SCRIPT, str(path)], 120)
    finally:
        m.host.remove_file(path)
    lines = out.split("\n")
    if rc != 0 or len(lines) < 2:
        raise IntegrityError(f"{m.name}: cannot check its RAM dump on host '{m.host.name}': "
                             f"{(err.strip().splitlines() or ['no output'])[-1]}")
    bad = tuple(int(x) for x in lines[1].split(",") if x)
    return BodyReport(bytes.fromhex(lines[0]), bad, None, None)


def check_bodies(report: BodyReport) -> str | None:
    """None if every page is its first byte plus zeros; else what is wrong, in one line."""
    if not report.bad_pages:
        return None
    addr = BOOTBLOCK_START + report.bad_pages[0] * PAGE
    where = (f" (byte {report.first_bad_offset:#x} of the page is {report.first_bad_value:#04x})"
             if report.first_bad_offset is not None else "")
    more = len(report.bad_pages) - 1
    return (f"page at {addr:#x} is not its first byte followed by zeros{where}"
            + (f"; {more} more such page(s)" if more else ""))


def prove_bootblock_pattern(dst: Machine) -> PatternReport:
    """Stop the destination and check every page of the area whole: the first-byte
    rule, and nothing but zeros after each first byte."""
    dst.cmd("stop")
    bodies = bootblock_bodies(dst)
    report = check_first_bytes(bodies.firsts)
    if not report.ok:
        raise IntegrityError(f"bootblock pattern broken on {dst.name}: {report.detail}")
    broken = check_bodies(bodies)
    if broken:
        raise IntegrityError(f"bootblock pattern broken on {dst.name}: {broken}")
    return PatternReport(True, report.pages, report.boundary,
                         report.detail + "; every page whole (first byte, then zeros)")


@dataclass(frozen=True)
class CompareReport:
    size: int
    differing_pages: tuple[int, ...]   # guest-physical addresses

    @property
    def ok(self) -> bool:
        return not self.differing_pages


def compare_pages(a: bytes, b: bytes, base: int = 0) -> CompareReport:
    if len(a) != len(b):
        raise IntegrityError(f"RAM dumps differ in size: {len(a)} vs {len(b)}")
    diffs = []
    if a != b:
        for off in range(0, len(a), PAGE):
            if a[off:off + PAGE] != b[off:off + PAGE]:
                diffs.append(base + off)
    return CompareReport(len(a), tuple(diffs))


def compare_summaries(a: PageSummary, b: PageSummary, base: int = 0) -> CompareReport:
    """compare_pages on page digests: the same verdict without both dumps in hand."""
    if len(a.digests) != len(b.digests):
        raise IntegrityError(f"RAM dumps differ in size: {len(a.firsts) * PAGE} vs {len(b.firsts) * PAGE}")
    diffs = [base + i * PAGE for i in range(len(a.firsts))
             if a.digests[8 * i:8 * i + 8] != b.digests[8 * i:8 * i + 8]]
    return CompareReport(len(a.firsts) * PAGE, tuple(diffs))


def compare_ram(src: Machine, dst: Machine, size: int, tolerated_pages: int = 0,
                artifacts: Path | None = None) -> CompareReport:
    """Byte-exact compare of [0, size) on the stopped source and paused destination.

    tolerated_pages: under KVM the kvmclock (pvclock) page legitimately differs;
    the caller passes how many differing pages are allowed (one per vCPU).
    """
    if src.host.is_local and dst.host.is_local:   # both dumps here: compare bytes directly
        report = compare_pages(dump_memory(src, 0, size, "ram-src"), dump_memory(dst, 0, size, "ram-dst"))
    else:
        report = compare_summaries(page_summary(src, 0, size, "ram-src"),
                                   page_summary(dst, 0, size, "ram-dst"))
    if artifacts is not None and report.differing_pages:
        (artifacts / "ram-diff.txt").write_text(
            "".join(f"{addr:#x}\n" for addr in report.differing_pages))
    if len(report.differing_pages) > tolerated_pages:
        shown = ", ".join(f"{x:#x}" for x in report.differing_pages[:8])
        raise IntegrityError(f"RAM differs between {src.name} and {dst.name} in "
                             f"{len(report.differing_pages)} page(s): {shown}")
    return report


HB_RX = rb"^HB (\d+) (\d+)\r?$"
VERIFY_RX = rb"^VERIFY pages=(\d+) bad=(\d+)\r?$"


@dataclass(frozen=True)
class VerifyReport:
    pages: int
    bad: int


def prove_linux_guest(dst: Machine, timeout: float = 60.0) -> VerifyReport:
    """Heartbeats resume on the destination, then the full in-guest verify says bad=0."""
    assert dst.serial is not None
    start = dst.serial.mark()
    deadline = time.monotonic() + timeout
    # Two heartbeats after this point prove the workload runs again.
    for _ in range(2):
        m = dst.serial.wait_for(HB_RX, deadline, start)
        if m is None:
            raise MachineFailure(dst.declare_hang(f"{dst.name}: guest heartbeats did not resume "
                                                  f"within {timeout:.0f}s"))
        start = m.end()
    mark = dst.serial.mark()
    dst.serial.write(b"verify\n")
    m = dst.serial.wait_for(VERIFY_RX, deadline, mark)
    if m is None:
        raise MachineFailure(dst.declare_hang(f"{dst.name}: in-guest verify gave no answer "
                                              f"within {timeout:.0f}s"))
    report = VerifyReport(int(m.group(1)), int(m.group(2)))
    if report.bad:
        raise IntegrityError(f"in-guest verify on {dst.name}: {report.bad} bad page(s) "
                             f"of {report.pages}")
    return report
