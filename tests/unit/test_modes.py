"""No QEMU: the postcopy/cpr/colo/rdma/cross-version declarations and their pure helpers."""
import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

from harness.migration import catalog, requirements
from harness.migration.families import colo as colo_family
from harness.migration.flows.colo import NEVER_ENTERED, ColoSetup
from harness.migration.flows.cpr import unix_listening
from harness.migration.options import RecoveryBreak
from harness.migration.scenario import Flow, KnownBug, Result
from harness.qemu.binary import QemuBinary, common_machine_type

MINE = ("postcopy", "cpr", "colo", "rdma", "cross-version")
ROOT = Path(__file__).resolve().parents[2]


def _bin(version, machines):
    return QemuBinary(path=f"/x/{version}", version=version,
                      version_tuple=tuple(int(x) for x in version.split(".")), package="",
                      machines=tuple(machines), default_machine="")


def test_common_machine_type_is_newest_shared_versioned_q35():
    old = _bin("7.2.22", ["q35", "pc-q35-7.2", "pc-q35-7.1", "pc-i440fx-7.2", "none"])
    new = _bin("10.0.2", ["q35", "pc-q35-10.0", "pc-q35-9.2", "pc-q35-7.2", "pc-q35-7.1"])
    assert common_machine_type(old, new) == "pc-q35-7.2"
    assert common_machine_type(new, new) == "pc-q35-10.0"
    assert common_machine_type(_bin("1.0.0", ["pc-q35-2.4"]), new) is None
    # numeric, not lexical: 10.0 > 9.2
    assert common_machine_type(new, _bin("11.1.3", ["pc-q35-10.0", "pc-q35-9.2"])) == "pc-q35-10.0"


@pytest.mark.parametrize("fam", MINE)
def test_each_family_has_exactly_one_smoke(fam):
    smoke = [s.path for s in catalog.select("smoke", (fam,))]
    assert len(smoke) == 1, smoke
    assert all("full" in s.tiers or "slow" in s.tiers for s in catalog.select(None, (fam,)))


def test_ids_follow_qtest_where_qtest_has_them():
    paths = {s.path for s in catalog.all_scenarios()}
    for p in ("/migration/postcopy/plain", "/migration/postcopy/preempt/plain",
              "/migration/postcopy/recovery/plain", "/migration/postcopy/preempt/recovery/plain",
              "/migration/postcopy/recovery/double-failures/handshake",
              "/migration/postcopy/recovery/double-failures/reconnect",
              "/migration/colo/plain/primary_failover", "/migration/colo/plain/secondary_failover"):
        assert p in paths


def test_recovery_breaks_are_declared_three_ways():
    breaks = {s.options.method for s in catalog.select(None, ("postcopy",))
              if s.flow is Flow.POSTCOPY_RECOVERY}
    assert {RecoveryBreak.PAUSE_SOURCE, RecoveryBreak.PAUSE_BOTH, RecoveryBreak.PROXY_CUT} <= breaks


def test_refusals_carry_what_to_match():
    by = catalog.by_path()
    for p in ("/migration/postcopy/multifd/refused", "/migration/postcopy/cancel/refused",
              "/migration/rdma/no-device/incoming", "/migration/cpr/transfer/private-ram/refused"):
        e = by[p].expect
        assert e.result is Result.REFUSED and e.error_match


def test_colo_known_bug_matches_only_its_own_failure():
    bug = colo_family.COLO_NEVER_ENTERED
    assert bug.affects((10, 0, 2)) and not bug.affects((10, 2, 0)) and not bug.affects((11, 1, 3))
    assert bug.url.startswith("https://gitlab.com/qemu-project/qemu/-/commit/0b5bf4ea76")
    assert bug.matches(f"{NEVER_ENTERED}: the primary's migration ended 'completed' ...")
    assert not bug.matches("MachineFailure: crash SIGSEGV: colo_process_checkpoint")
    assert not bug.matches("destination: no COLO_EXIT within 120s")
    for s in catalog.select(None, ("colo",)):
        assert s.known_bug is bug or s.known_bug is None


def test_colo_setup_uses_unix_sockets_and_version_reconnect(tmp_path):
    old = ColoSetup(tmp_path, (10, 0, 2), (9, 1, 0))
    new = ColoSetup(tmp_path, (10, 0, 2), (10, 0, 2))
    p, s = " ".join(old.primary_args()), " ".join(old.secondary_args())
    for needle in ("filter-mirror,id=m0", "filter-redirector,netdev=hn0,id=redire0",
                   "colo-compare,id=comp0", "iothread,id=iothread1", "driver=quorum",
                   "restrict=on"):
        assert needle in p
    for needle in ("filter-rewriter,id=rew0", "driver=replication,mode=secondary",
                   "top-id=colo-disk0", "file.backing.backing=parent0"):
        assert needle in s
    assert "host=" not in p + s and "port=" not in p + s       # no TCP, no fixed ports
    assert "reconnect=1" in s and "reconnect-ms" in " ".join(new.secondary_args())


def test_below_version_and_no_rdma_requirements():
    env = requirements.Env("/a", "/b", "tcg", (10, 0, 2), (11, 1, 3))
    assert requirements.BelowVersion((10, 1, 0)).check(env).startswith("applies to QEMU < 10.1.0")
    env_old = requirements.Env("/a", "/b", "tcg", (10, 0, 2), (7, 2, 22))
    assert requirements.BelowVersion((10, 1, 0)).check(env_old) is None
    has_dev = requirements.RdmaDevice().check(env) is None
    assert (requirements.NoRdmaDevice().check(env) is None) is (not has_dev)


def test_unix_listening_reads_proc_net_unix(tmp_path):
    import socket
    path = tmp_path / "l.sock"
    assert not unix_listening(path)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    assert not unix_listening(path)      # bound, not yet listening: connecting would fail
    s.listen(1)
    assert unix_listening(path)
    s.close()


def _compat_matrix():
    loader = importlib.machinery.SourceFileLoader("compat_matrix", str(ROOT / "ci/compat-matrix"))
    spec = importlib.util.spec_from_loader("compat_matrix", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_compat_matrix_explains_from_destination_stderr(tmp_path):
    cm = _compat_matrix()
    d = tmp_path / "test" / "destination"
    d.mkdir(parents=True)
    (d / "stderr.log").write_text(
        "qemu-system-x86_64: Machine type received is 'pc-q35-7.2' and local is 'pc-q35-10.0'\n"
        "qemu-system-x86_64: load of migration failed: Invalid argument\n")
    why = cm.explain_failure("MigrationStateError: source: migration failed: Broken pipe", str(tmp_path / "test"))
    assert why == "machine type mismatch (source pc-q35-7.2, destination pc-q35-10.0)"
    assert cm.explain_failure("crash SIGSEGV: foo") == "QEMU crashed (SIGSEGV)"
    assert cm.explain_failure("something new\nmore") == "something new"


def test_known_bug_signature_is_optional():
    assert not KnownBug("u", "s").matches("anything")
