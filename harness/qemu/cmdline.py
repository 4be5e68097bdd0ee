"""MachineSpec -> argv. Pure: paths come in, argv goes out (unit-tested)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.qemu.spec import GuestKind, MachineSpec, SpecError


@dataclass(frozen=True)
class RunPaths:
    """Where one machine's sockets live (run dir) and logs go (artifacts)."""

    run_dir: Path
    # Remote hosts: QEMU serves its sockets (wait=on: it blocks until we connected, so
    # nothing is missed from the greeting on); locally QEMU connects to our listeners.
    qemu_listens: bool = False

    @property
    def chardev_mode(self) -> str:
        return ",server=on,wait=on" if self.qemu_listens else ""

    @property
    def qmp(self) -> Path:
        return self.run_dir / "qmp.sock"

    def extra_qmp(self, i: int) -> Path:
        return self.run_dir / f"qmp{i + 1}.sock"

    def raw_qmp(self, i: int) -> Path:
        return self.run_dir / f"raw{i}.sock"

    @property
    def serial(self) -> Path:
        return self.run_dir / "serial.sock"


@dataclass(frozen=True)
class GuestFiles:
    """Resolved guest image paths (built by harness.guest.images)."""

    bootblock: Path | None = None
    bootrom: Path | None = None      # the paced boot-sector firmware (GuestSpec.paced_rom)
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""


def qemu_opt(value) -> str:
    """A value inside a QEMU option string (-chardev socket,path=VALUE,...): QEMU splits
    on ',' and reads ',,' as a literal comma."""
    return str(value).replace(",", ",,")


def build_argv(spec: MachineSpec, paths: RunPaths, guest: GuestFiles) -> list[str]:
    if spec.accel == "auto":
        raise SpecError("machine spec: accel 'auto' must be resolved (harness.qemu.accel) before launch")
    # debug-threads: vCPU and migration threads get names ("CPU 0/TCG", "mig/src/main")
    # in /proc and gdb, for per-thread CPU accounting and readable backtraces.
    argv = [spec.binary, "-name", f"{spec.name},debug-threads=on", "-nodefaults", "-no-user-config",
            # Cores without guest RAM: small, and what a QEMU developer needs.
            "-machine", "dump-guest-core=off",
            "-display", "none", "-accel", _accel(spec), "-machine", spec.machine_type,
            "-m", str(spec.memory_mib), "-smp", str(spec.smp)]
    # QEMU connects to sockets the harness already listens on: no race, no missed output.
    mode = paths.chardev_mode
    argv += ["-chardev", f"socket,id=qmp0,path={qemu_opt(paths.qmp)}{mode}",
             "-mon", "chardev=qmp0,mode=control"]
    for i in range(spec.extra_monitors):
        argv += ["-chardev", f"socket,id=qmp{i + 1},path={qemu_opt(paths.extra_qmp(i))}{mode}",
                 "-mon", f"chardev=qmp{i + 1},mode=control"]
    for i in range(spec.raw_monitors):
        argv += ["-chardev", f"socket,id=raw{i},path={qemu_opt(paths.raw_qmp(i))}{mode}",
                 "-mon", f"chardev=raw{i},mode=control"]
    argv += ["-chardev", f"socket,id=serial0,path={qemu_opt(paths.serial)}{mode}",
             "-serial", "chardev:serial0"]
    argv += _guest_args(spec, guest)
    if spec.paused:
        argv.append("-S")
    if spec.incoming:
        argv += ["-incoming", spec.incoming]
    argv += list(spec.extra_args)
    return argv


def _guest_args(spec: MachineSpec, guest: GuestFiles) -> list[str]:
    kind = spec.guest.kind
    if kind is GuestKind.NONE:
        return []
    if kind is GuestKind.BOOTBLOCK and spec.guest.paced_rom:
        if guest.bootrom is None:
            raise SpecError("paced bootblock guest: firmware path not resolved")
        return ["-bios", str(guest.bootrom)]
    if kind is GuestKind.BOOTBLOCK:
        if guest.bootblock is None:
            raise SpecError("bootblock guest: image path not resolved")
        from harness.guest.images import bootblock_drive_args
        return bootblock_drive_args(guest.bootblock)
    if kind is GuestKind.LINUX:
        if guest.kernel is None or guest.initrd is None:
            raise SpecError("linux guest: kernel/initrd paths not resolved")
        return ["-kernel", str(guest.kernel), "-initrd", str(guest.initrd),
                "-append", guest.cmdline]
    raise SpecError(f"unknown guest kind {kind}")


def _accel(spec: MachineSpec) -> str:
    """-accel NAME[,props] (e.g. kvm,dirty-ring-size=4096 for dirty-limit)."""
    return f"{spec.accel},{spec.accel_props}" if spec.accel_props else spec.accel
