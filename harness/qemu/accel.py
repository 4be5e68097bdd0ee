"""accel=auto: measure which accelerator really runs a guest here, once per binary/host.

/dev/kvm existing proves nothing (PVM here: Linux never boots and the boot
sector runs ~20x slower than TCG). So run the boot sector briefly under each
candidate and pick the one that makes the most passes; KVM wins on a real
KVM host by orders of magnitude.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

from harness import cache
from harness.qemu.spec import GuestKind, GuestSpec, MachineSpec

PROBE_SECONDS = 2.0


def kvm_accessible(host=None) -> bool:
    if host is not None and not host.is_local:
        return host.run(["test", "-r", "/dev/kvm", "-a", "-w", "/dev/kvm"], 10)[0] == 0
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


def resolve(binary: str, accel: str, host=None) -> str:
    """'auto' -> measured best accelerator (on `host` if remote); 'tcg'/'kvm' pass through."""
    if accel != "auto":
        return accel
    if not kvm_accessible(host):
        return "tcg"
    if host is not None and not host.is_local:
        from harness.qemu.binary import _remote_identity
        release = host.run(["uname", "-r"], 10)[1].strip()
        key = f"{_remote_identity(binary, host)[1]}-{release}"
    else:
        key, host = f"{cache.file_key(binary)}-{platform.release()}", None
    with cache.locked("accel", key):
        hit = cache.load("accel", key)
        if hit is None:
            hit = measure(binary, host)
            cache.store("accel", key, hit)
    return hit["accel"]


def passes_per_second(binary: str, accel: str, seconds: float = PROBE_SECONDS, host=None) -> float:
    """Boot the boot sector under accel; count 'B' passes per second after the first."""
    from harness.hosts.local import LocalHost
    from harness.run import resolve_guest_files
    from harness.qemu.machine import LaunchError, Machine, MachineFailure

    spec = MachineSpec(binary=binary, name=f"probe-{accel}", accel=accel, memory_mib=128,
                       guest=GuestSpec(kind=GuestKind.BOOTBLOCK))
    with tempfile.TemporaryDirectory(prefix="qmh-accel-") as tmp:
        m = Machine(host or LocalHost(), spec, Path(tmp) / accel, resolve_guest_files(spec))
        try:
            m.launch()
            first = m.serial.wait_for(rb"B", time.monotonic() + 10.0)
            if first is None:
                return 0.0
            mark = first.end()
            time.sleep(seconds)
            return m.serial.count(b"B", mark) / seconds
        except (LaunchError, MachineFailure):
            return 0.0
        finally:
            m.shutdown()


def measure(binary: str, host=None) -> dict:
    tcg = passes_per_second(binary, "tcg", host=host)
    kvm = passes_per_second(binary, "kvm", host=host)
    choice = "kvm" if kvm > tcg else "tcg"
    return {"accel": choice, "tcg_passes_per_s": tcg, "kvm_passes_per_s": kvm,
            "measured_at": time.time()}
