"""Placement: slots across workers, one-host scenarios, forced SRC:DST, roles."""
import subprocess
import sys

import pytest

from harness.hosts.base import HostError
from harness.hosts.inventory import InventoryError, load
from harness.hosts.placement import SlotBroker, parse_place, role_of
from harness.hosts.preflight import HostFacts
from harness.migration import requirements

INV = """
[defaults]
user = "root"
identity = "id"
known_hosts = "kh"
slots = {slots}
[hosts.alpha]
address = "10.0.0.1"
migration_interface = "mig0"
[hosts.beta]
address = "10.0.0.2"
"""


class FakeHost:
    is_local = False

    def __init__(self, entry):
        self.entry, self.name = entry, entry.name


@pytest.fixture
def inv(tmp_path):
    def make(slots=1):
        (tmp_path / "id").write_text("key")
        (tmp_path / "kh").write_text("10.0.0.1 ssh-ed25519 AAAA\n")
        (tmp_path / "inv.toml").write_text(INV.format(slots=slots))
        return load(tmp_path / "inv.toml")
    return make


def broker(inv, tmp_path):
    return SlotBroker(inv, lock_dir=tmp_path / "slots")


def test_cross_host_pairs_use_both_directions_and_seeded_order(inv, tmp_path):
    b = broker(inv(), tmp_path)
    pairs = {(s.name, d.name) for s, d in b.candidates(False, "seed", None)}
    assert pairs == {("alpha", "beta"), ("beta", "alpha")}
    assert b.candidates(False, "x", None) == b.candidates(False, "x", None)


def test_slots_are_never_oversubscribed(inv, tmp_path):
    b = broker(inv(slots=1), tmp_path)
    p1 = b.acquire(FakeHost, one_host=False, seed="1")
    assert {p1.src.name, p1.dst.name} == {"alpha", "beta"}
    with pytest.raises(HostError, match="no free slots on"):
        b.acquire(FakeHost, one_host=False, seed="2", timeout=0.3)
    p1.release()
    b.acquire(FakeHost, one_host=False, seed="2", timeout=1).release()


def test_one_host_takes_two_slots_of_that_host(inv, tmp_path):
    b = broker(inv(slots=2), tmp_path)
    p = b.acquire(FakeHost, one_host=True, seed="s")
    assert p.src is not None and p.src.name == p.dst.name
    other = b.acquire(FakeHost, one_host=True, seed="s")   # the other host is free
    assert other.src.name != p.src.name
    with pytest.raises(HostError):
        b.acquire(FakeHost, one_host=True, seed="s", timeout=0.3)
    p.release()
    other.release()


def test_slots_are_shared_with_other_processes(inv, tmp_path):
    """A slot held by another process (another xdist worker) is not handed out."""
    b = broker(inv(slots=1), tmp_path)
    lock = tmp_path / "slots" / "alpha.0"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl,sys,time; f=open(sys.argv[1],'w'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
                               str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(HostError):
            b.acquire(FakeHost, one_host=False, seed="x", timeout=0.3)
    finally:
        holder.kill()
        holder.wait()
    b.acquire(FakeHost, one_host=False, seed="x", timeout=2).release()   # a dead holder frees it


def test_forced_placement_and_its_errors(inv, tmp_path):
    i = inv()
    assert parse_place("beta:alpha", i) == ("beta", "alpha")
    assert parse_place("auto", i) is None
    with pytest.raises(HostError, match="SRC:DST"):
        parse_place("alpha", i)
    with pytest.raises(InventoryError, match="no host 'gamma'"):
        parse_place("alpha:gamma", i)
    p = broker(i, tmp_path).acquire(FakeHost, one_host=False, seed="s", forced=("beta", "alpha"))
    assert (p.src.name, p.dst.name) == ("beta", "alpha")


@pytest.mark.parametrize("name,role", [("source", "src"), ("destination", "dst"),
                                       ("destination-2", "dst"), ("vm", "src"), ("hop1-dst", "dst")])
def test_roles_from_machine_names(name, role):
    assert role_of(name) == role


# ---------------------------------------------------------------- requirements from facts
def facts(**kw):
    base = dict(host="alpha", kvm_usable=False, userfaultfd=None, memlock_bytes=None,
                rdma_devices=(), python="Python 3.11.2", free_bytes=10 << 30)
    return HostFacts(**{**base, **kw})


def env(*fs, dst_host=None, src_host=None):
    return requirements.Env("q", "q", "tcg", (10, 0, 2), (10, 0, 2), src_host=src_host,
                            dst_host=dst_host, facts=fs)


def test_host_facts_become_skip_reasons():
    assert requirements.Userfaultfd().check(env(facts())) is None
    no_uffd = facts(host="beta", userfaultfd="userfaultfd: not root, no /dev/userfaultfd")
    assert requirements.Userfaultfd().check(env(facts(), no_uffd)).startswith("beta: userfaultfd")
    assert "no RDMA device on host 'alpha'" in requirements.RdmaDevice().check(env(facts()))
    assert requirements.RdmaDevice().check(env(facts(rdma_devices=("mlx5_0",)))) is None
    assert "ulimit -l is 65536" in requirements.Memlock(1 << 30).check(env(facts(memlock_bytes=65536)))


def test_blocking_facts_skip_the_host():
    assert facts().blocking_reason() is None
    assert "MiB free" in facts(free_bytes=1 << 20).blocking_reason()
    assert "python" in facts(python="sh: python3: not found").blocking_reason()


def test_migration_link_needs_remote_distinct_hosts(inv, tmp_path):
    i = inv()
    a, b = FakeHost(i.host("alpha")), FakeHost(i.host("beta"))
    assert "needs --inventory" in requirements.MigrationLink().check(env())
    # both ends need one: the source's link is shaped, the destination's cut
    assert "'beta' declares no migration_interface" in requirements.MigrationLink().check(
        env(src_host=b, dst_host=a))
    assert "'beta' declares no migration_interface" in requirements.MigrationLink().check(
        env(src_host=a, dst_host=b))
    from dataclasses import replace
    b2 = FakeHost(replace(i.host("beta"), migration_interface="eth1"))
    assert requirements.MigrationLink().check(env(src_host=b2, dst_host=a)) is None
    assert "one host" in requirements.MigrationLink().check(env(src_host=a, dst_host=a))
