"""Which guest a chaos attempt boots: the boot sector, and now and then Linux.

A plan records its guest (`ChaosPlan.guest`), so a replay boots the same one.
Fresh plans boot Linux about once in LINUX_ONE_IN, only when the Linux guest
image is built (`harness images build`); the choice comes from the plan's own
seed through a separate RNG, so it does not shift any other draw. The Linux
guest's oracle is harness.guest.integrity.prove_linux_guest (heartbeats resume,
the in-guest verifier reports 0 bad pages; see harness.stress.oracles).

Exported standalone reproducers carry the boot sector only (a kernel and
initramfs are ~10 MB): a violation seen with the Linux guest is exported from
a boot-sector run of the same plan, and says so (harness.report.chaos_reproducer).
"""
from __future__ import annotations

import functools
import random

from harness.qemu.spec import BOOTBLOCK_MIN_MIB, BOOTROM_MIN_MIB, GuestKind, GuestSpec

BOOTBLOCK = GuestKind.BOOTBLOCK.value
LINUX = GuestKind.LINUX.value
GUESTS = (BOOTBLOCK, LINUX)
LINUX_ONE_IN = 20
LINUX_MIB = 256


@functools.lru_cache(maxsize=1)
def linux_missing() -> str | None:
    """Why the Linux guest cannot boot here (not built, stale), or None."""
    from harness.guest import images
    problems = [p for p in images.check() if p.startswith("linux:")]
    return problems[0] if problems else None


def draw(plan_seed: int, linux_ok: bool) -> str:
    if not linux_ok:
        return BOOTBLOCK
    return LINUX if random.Random(f"guest:{plan_seed}").randrange(LINUX_ONE_IN) == 0 else BOOTBLOCK


def spec(guest: str, paced: bool = True) -> tuple[GuestSpec, int]:
    """(GuestSpec, memory MiB) for a plan's guest; paced: the boot sector as paced
    firmware (GuestSpec.paced_rom), else qtest's spinning boot sector."""
    if guest == LINUX:
        return GuestSpec(kind=GuestKind.LINUX), LINUX_MIB
    if paced:
        return GuestSpec(kind=GuestKind.BOOTBLOCK, paced_rom=True), BOOTROM_MIN_MIB
    return GuestSpec(kind=GuestKind.BOOTBLOCK), BOOTBLOCK_MIN_MIB
