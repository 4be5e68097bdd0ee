"""Inner tests for test_failure_messages.py: failures as a user would write them."""
from harness.migration import drivers
from harness.migration.pair import Pair
from harness.qemu.binary import probe


def _two_q35(binary: str) -> tuple[str, str]:
    b = probe(binary)
    versioned = sorted((m for m in b.machines if m.startswith("pc-q35-") and m[7:].replace(".", "").isdigit()),
                       key=lambda m: tuple(int(x) for x in m[7:].split(".")))
    return versioned[-1], versioned[-2]


def test_machine_type_mismatch(machine_factory, base_spec):
    new, old = _two_q35(base_spec.binary)
    src = machine_factory("source", machine_type=new)
    dst = machine_factory("destination", machine_type=old, incoming="defer", paused=True)
    drivers.precopy(Pair(src, dst))


def test_own_assert(machine_factory):
    vm = machine_factory("vm")
    assert vm.cmd("query-status")["status"] == "no-such-state"
