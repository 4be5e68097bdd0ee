"""Corrupt a guest's RAM from outside the guest: the fault an integrity proof must catch.

QEMU has no QMP/HMP command that writes guest memory (only `xp` reads it), so
the byte is written where QEMU keeps it: HMP `gpa2hva` names the host virtual
address of a guest-physical one, and /proc/PID/mem writes it (QEMU is our
child, so ptrace access is allowed). Nothing in QEMU or the guest notices:
exactly like a page the migration stream got wrong.
"""
from __future__ import annotations

import re

from harness.hosts.base import HostError
from harness.qemu.machine import Machine


def host_address(m: Machine, gpa: int) -> int:
    out = m.cmd("human-monitor-command", {"command-line": f"gpa2hva {gpa:#x}"})
    found = re.search(r"is (0x[0-9a-fA-F]+)", out or "")
    if found is None:
        raise HostError(f"{m.name}: gpa2hva {gpa:#x} gave no host address: {out!r}")
    return int(found.group(1), 16)


def flip_byte(m: Machine, gpa: int, mask: int = 0xFF) -> tuple[int, int]:
    """XOR the guest-physical byte at gpa with mask; return (old, new) values."""
    if not m.host.is_local:
        raise HostError(f"{m.name}: guest RAM can only be corrupted for a local QEMU")
    if not 0 < mask <= 0xFF:
        raise ValueError(f"flip_byte: mask {mask:#x} must be 1..0xff")
    hva = host_address(m, gpa)
    with open(f"/proc/{m.pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(hva)
        old = mem.read(1)[0]
        mem.seek(hva)
        mem.write(bytes([old ^ mask]))
    return old, old ^ mask
