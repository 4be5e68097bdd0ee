"""HarnessConfig: what the user asked for on the command line, validated once."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.qemu.spec import GuestKind, SpecError


@dataclass(frozen=True)
class HarnessConfig:
    qemu_src: str
    qemu_dst: str
    accel: str               # tcg | kvm | auto (resolved lazily per binary)
    guest: GuestKind
    artifacts_root: Path
    keep_artifacts: bool = False
    machine_type: str | None = None  # None: 'q35', or the newest common one if binaries differ

    @classmethod
    def from_options(cls, *, qemu: str | None, qemu_src: str | None, qemu_dst: str | None,
                     accel: str, guest: str, artifacts: str, keep: bool,
                     machine: str | None = None) -> "HarnessConfig":
        base = qemu or "qemu-system-x86_64"
        if accel not in ("tcg", "kvm", "auto"):
            raise SpecError(f"--accel must be tcg, kvm or auto, not '{accel}'")
        try:
            gk = GuestKind(guest)
        except ValueError:
            raise SpecError(f"--guest must be bootblock or linux, not '{guest}'") from None
        if gk is GuestKind.NONE:
            raise SpecError("--guest must be bootblock or linux, not 'none'")
        return cls(qemu_src=qemu_src or base, qemu_dst=qemu_dst or base, accel=accel, guest=gk,
                   artifacts_root=Path(artifacts).resolve(), keep_artifacts=keep,
                   machine_type=machine)
