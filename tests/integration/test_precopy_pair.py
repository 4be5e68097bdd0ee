"""The pair fixture and precopy driver against the real local QEMU."""
import pytest

from harness.guest.integrity import IntegrityError
from harness.migration import drivers
from harness.migration.pair import make_pair
from harness.migration.transports import Transport
from harness.qemu.spec import GuestKind, GuestSpec

pytestmark = pytest.mark.qemu


@pytest.mark.parametrize("transport", [Transport.TCP, Transport.UNIX], ids=["tcp", "unix"])
def test_precopy_bootblock_with_integrity_proof(migration_pair, transport):
    res = drivers.precopy(migration_pair, transport)
    assert res.metrics.status == "completed"
    assert res.metrics.transferred_bytes > 100 << 20   # the dirtied 99 MiB went over
    if transport is Transport.TCP:
        assert res.uri.startswith("tcp:127.0.0.1:") and not res.uri.endswith(":0")
    proof = drivers.prove_integrity(migration_pair)
    assert proof["ram_compare"]["differing_pages"] == 0
    assert "consistent" in proof["bootblock_pattern"]


@pytest.mark.linux_guest
def test_precopy_linux_guest_in_guest_verify(harness_run, base_spec):
    spec = base_spec.with_(memory_mib=512, guest=GuestSpec(kind=GuestKind.LINUX, workload_mib=64,
                                                           dirty_rate_mib_s=32))
    if spec.accel != "tcg":
        pytest.skip("the Linux guest needs TCG here (PVM /dev/kvm cannot boot it)")
    pair = make_pair(harness_run, spec)
    res = drivers.precopy(pair, Transport.TCP)
    assert res.metrics.status == "completed"
    proof = drivers.prove_integrity(pair, timeout=120)
    assert proof["linux_verify"]["bad"] == 0 and proof["linux_verify"]["pages"] > 0


def test_corrupted_destination_byte_is_caught(harness_run, base_spec):
    """Poke one byte of the destination's RAM (a shared memory-backend file) after the
    migration: the byte-exact compare must name that page."""
    ram = "/dev/shm/qmh-corrupt-{}".format(id(harness_run))
    size = base_spec.memory_mib << 20
    backend = ("-object", f"memory-backend-file,id=pc.ram,size={size},mem-path={ram},share=on",
               "-machine", f"{base_spec.machine_type},memory-backend=pc.ram")
    pair = make_pair(harness_run, base_spec, dst_extra=backend)
    try:
        drivers.precopy(pair, Transport.TCP)
        victim = (50 << 20) + 123
        with open(ram, "r+b") as f:
            f.seek(victim)
            old = f.read(1)
            f.seek(victim)
            f.write(bytes([old[0] ^ 0x5A]))
        with pytest.raises(IntegrityError) as ei:
            drivers.prove_integrity(pair)
        assert hex(victim & ~0xFFF) in str(ei.value)
    finally:
        import os
        if os.path.exists(ram):
            os.unlink(ram)
