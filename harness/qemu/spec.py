"""MachineSpec: the frozen description of one QEMU to launch."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class SpecError(ValueError):
    """A MachineSpec (or a scenario) is invalid; the message is one line."""


class UsageError(SpecError):
    """A command-line value is wrong: one line on stderr, exit status 2."""


class GuestKind(enum.Enum):
    NONE = "none"          # no guest code: firmware only (machine probes)
    BOOTBLOCK = "bootblock"  # qtest-style boot sector dirtying [1 MiB, 100 MiB)
    LINUX = "linux"        # Debian cloud kernel + initramfs workload


@dataclass(frozen=True)
class GuestSpec:
    kind: GuestKind = GuestKind.BOOTBLOCK
    # BOOTBLOCK only: the boot sector's loop and page rule as the machine's own
    # firmware (-bios, no SeaBIOS), halting between passes until a PIT tick: the
    # chaos engine's guest, whose vCPU idles instead of spinning a host core.
    paced_rom: bool = False
    # Linux workload knobs (ignored for other kinds).
    workload_mib: int = 64
    dirty_rate_mib_s: int = 0
    heartbeat_ms: int = 100

    def __post_init__(self):
        if not isinstance(self.kind, GuestKind):
            raise SpecError(f"guest kind must be a GuestKind, got {self.kind!r}")
        if self.paced_rom and self.kind is not GuestKind.BOOTBLOCK:
            raise SpecError(f"guest paced_rom is a bootblock variant, not for kind {self.kind.value}")
        if self.workload_mib <= 0 or self.dirty_rate_mib_s < 0 or self.heartbeat_ms <= 0:
            raise SpecError("guest workload_mib and heartbeat_ms must be > 0, dirty rate >= 0")


ACCELS = ("tcg", "kvm", "auto")

# The boot sector dirties [1 MiB, 100 MiB): RAM must cover it. Its paced firmware
# form (GuestSpec.paced_rom) dirties [1 MiB, 33 MiB).
BOOTBLOCK_MIN_MIB = 128
BOOTROM_MIN_MIB = 64


@dataclass(frozen=True)
class MachineSpec:
    binary: str
    name: str = "vm"
    accel: str = "tcg"
    machine_type: str = "q35"
    memory_mib: int = 256
    smp: int = 1
    guest: GuestSpec = field(default_factory=GuestSpec)
    paused: bool = False                 # -S
    incoming: str | None = None          # e.g. "defer"
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    extra_monitors: int = 0              # more QMP monitors (race recipes)
    raw_monitors: int = 0                # QMP monitors handed over as plain sockets (race pumps)
    accel_props: str = ""                # appended to -accel, e.g. "dirty-ring-size=4096"

    def __post_init__(self):
        if not self.binary:
            raise SpecError("machine spec: binary is empty")
        if self.accel not in ACCELS:
            raise SpecError(f"machine spec: accel '{self.accel}' is not one of {', '.join(ACCELS)}")
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise SpecError(f"machine spec: name '{self.name}' must be alphanumeric (- and _ allowed)")
        if self.memory_mib < 16:
            raise SpecError(f"machine spec: memory_mib {self.memory_mib} is below 16")
        need = BOOTROM_MIN_MIB if self.guest.paced_rom else BOOTBLOCK_MIN_MIB
        if self.guest.kind is GuestKind.BOOTBLOCK and self.memory_mib < need:
            raise SpecError(f"machine spec: bootblock guest needs memory_mib >= {need}, "
                            f"got {self.memory_mib}")
        if self.smp < 1:
            raise SpecError(f"machine spec: smp {self.smp} must be >= 1")
        if isinstance(self.extra_args, (str, list)):
            raise SpecError("machine spec: extra_args must be a tuple of strings")
        if self.extra_monitors < 0:
            raise SpecError("machine spec: extra_monitors must be >= 0")
        if self.raw_monitors < 0:
            raise SpecError("machine spec: raw_monitors must be >= 0")

    def with_(self, **changes) -> "MachineSpec":
        return replace(self, **changes)
