"""Every flow family's integrity proof catches one flipped byte in the middle of a page.

The byte is flipped in the destination's RAM (harness.faults.memory: gpa2hva +
/proc/PID/mem) right before the flow's final proof, after the migration and any
byte compare with the source: what is left to catch it is the proof that runs
on a destination whose guest ran on (postcopy, snapshots, cpr, COLO, chaos all
end there). The bootblock guest only ever touches first bytes, so the byte at
50 MiB + 0x87b stays flipped; a first-byte-only check would pass.
"""
import pytest

from harness.faults.memory import flip_byte
from harness.guest import integrity
from harness.migration import catalog, requirements
from harness.migration.runner import run_scenario
from harness.pytest_plugin import side_binaries
from harness.qemu.spec import GuestKind, GuestSpec

pytestmark = pytest.mark.qemu
FLIP_AT = (50 << 20) + 0x87b        # mid-page, inside the bootblock's [1 MiB, 100 MiB)

# One completing scenario per flow family (the smoke tier's where there is one).
FAMILIES = {
    "precopy": "/migration/precopy/tcp/plain",
    "multifd": "/migration/multifd/tcp/channels/4/none",
    "tls": "/migration/tls/tcp/psk/match",
    "file": "/migration/multifd/file/mapped-ram",
    "postcopy": "/migration/postcopy/plain",
    "postcopy-recovery": "/migration/postcopy/recovery/plain",
    "snapshot": "/migration/snapshot/background/file",
    "cancel": "/migration/cancel/src/after/active",
    "cpr-reboot": "/migration/cpr/reboot",
    "cpr-transfer": "/migration/cpr/transfer",
    "ping-pong": "/migration/cross-version/ping-pong",
    "colo": "/migration/colo/plain/primary_failover",
    "rdma": "/migration/rdma/plain",
}


def _scenario(path):
    found = [s for s in catalog.select() if s.path == path]
    assert found, f"{path} is not in the catalog any more: pick another for its family"
    return found[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_flipped_byte_fails_the_proof(family, harness_run, base_spec, harness_config, qemu_accel,
                                        monkeypatch):
    s = _scenario(FAMILIES[family])
    src, dst = side_binaries(harness_config, harness_run)
    env = requirements.Env(src_binary=src.path, dst_binary=dst.path, accel=qemu_accel,
                           src_version=src.version_tuple, dst_version=dst.version_tuple)
    reason = requirements.unmet(s.requires, env)
    if reason:
        pytest.skip(f"{s.path}: {reason}")
    if s.known_bug is not None and s.known_bug.affects(src.version_tuple):
        pytest.skip(f"{s.path}: known QEMU bug on {src.version} ({s.known_bug.url})")
    base = base_spec.with_(guest=GuestSpec(kind=GuestKind.BOOTBLOCK))
    real = integrity.prove_bootblock_pattern
    flipped = []

    def corrupt_then_prove(m):
        if not flipped:
            flipped.append((m.name, *flip_byte(m, FLIP_AT)))
        return real(m)

    monkeypatch.setattr(integrity, "prove_bootblock_pattern", corrupt_then_prove)
    with pytest.raises(integrity.IntegrityError) as err:
        run_scenario(s, harness_run, base, harness_config, src.path, dst.path)
    assert flipped, "the flow never reached its bootblock proof"
    assert f"page at {FLIP_AT & ~0xfff:#x}" in str(err.value), str(err.value)
    assert "byte 0x87b of the page" in str(err.value)
