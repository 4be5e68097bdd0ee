"""No QEMU: the precopy-side catalog's declarations, TLS credentials, transports, hooks."""
import os
import stat

import pytest

from harness.migration import catalog, hooks, requirements
from harness.migration.options import CancelOptions, PrecopyOptions
from harness.migration.scenario import Flow, Result
from harness.migration.tls import X509, Psk, Setup
from harness.migration.transports import Target, Transport, fdset_uri, file_uri

OWN = ("precopy", "multifd", "cancel", "tls", "snapshot")


def _own():
    return [s for s in catalog.all_scenarios() if s.family in OWN]


def test_own_families_have_exactly_one_smoke_scenario():
    for fam in OWN:
        smoke = [s.path for s in catalog.select("smoke", (fam,))]
        assert len(smoke) == 1, (fam, smoke)


def test_during_hooks_and_options_are_known():
    for s in _own():
        if isinstance(s.options, PrecopyOptions) and s.options.during:
            assert all(callable(h) and h.__module__ == hooks.__name__ for h in s.options.during)
            # A hook that waits for passes needs a migration that cannot converge alone.
            assert s.converge is False, f"{s.path}: during-hooks run a non-converging phase"
        if s.flow is Flow.CANCEL:
            assert isinstance(s.options, CancelOptions) and s.options.at is not None, s.path
        if s.options.tls_setup() is not None:
            assert hasattr(s.options.tls_setup(), "materialize"), s.path


def test_expected_failures_say_what_to_match():
    for s in _own():
        if s.expect.result in (Result.REFUSED, Result.FAILED):
            assert s.expect.error_match, f"{s.path}: an expected failure must name its error"


def test_known_bugs_carry_a_signature():
    for s in _own():
        if s.known_bug is not None:
            assert s.known_bug.signature, f"{s.path}: a known bug needs a failure signature"


def test_hooks_chain_runs_in_order_and_merges():
    assert hooks.chain(()) is None
    assert hooks.chain((hooks.dirty_pass,)) is hooks.dirty_pass
    calls = []

    def a(pair):
        calls.append(("a", pair))
        return {"x": 1}

    def b(pair):
        calls.append(("b", pair))
        return {"y": 2}
    assert hooks.chain((a, b))("P") == {"x": 1, "y": 2}
    assert calls == [("a", "P"), ("b", "P")]


def test_pause_before_switchover_runs_after_dirty_passes():
    s = catalog.by_path()["/migration/precopy/tcp/pause-before-switchover"]
    assert s.options.during == (hooks.dirty_pass, hooks.pause_before_switchover)


def test_target_migrate_args():
    assert Target(Transport.TCP, uri="tcp:127.0.0.1:5").migrate_args() == {"uri": "tcp:127.0.0.1:5"}
    ch = ({"channel-type": "main", "addr": {"transport": "socket", "type": "inet",
                                            "host": "127.0.0.1", "port": "5"}},)
    t = Target(Transport.CHANNELS, channels=ch)
    assert t.migrate_args() == {"channels": [ch[0]]}
    assert "127.0.0.1" in str(t)


def test_file_uris():
    assert file_uri("/x/m.bin") == "file:/x/m.bin"
    assert file_uri("/x/m.bin", 0x20) == "file:/x/m.bin,offset=0x20"
    assert file_uri("/x/m.bin", "0x20M") == "file:/x/m.bin,offset=0x20M"
    assert fdset_uri(0x20) == "file:/dev/fdset/1,offset=0x20"


def test_psk_files_and_objects(tmp_path):
    st = Psk().materialize(tmp_path)
    src_key = (tmp_path / "psk-src" / "keys.psk").read_text()
    assert src_key == (tmp_path / "psk-dst" / "keys.psk").read_text()
    assert src_key.startswith("qemu:") and len(src_key.strip().split(":")[1]) == 64
    assert stat.S_IMODE(os.stat(tmp_path / "psk-src" / "keys.psk").st_mode) == 0o600
    assert "endpoint=client" in st.src_args[1] and "endpoint=server" in st.dst_args[1]
    assert st.src_params == {"tls-creds": "tlscreds0"} == st.dst_params
    mm = Psk(mismatch=True).materialize(tmp_path / "mm")
    assert ((tmp_path / "mm" / "psk-src" / "keys.psk").read_text()
            != (tmp_path / "mm" / "psk-dst" / "keys.psk").read_text())
    assert len(mm.files) == 2


def test_x509_certificates(tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    st = X509(server_names=("qemu.org", "127.0.0.1"), tls_hostname="qemu.org").materialize(tmp_path)
    server = x509.load_pem_x509_certificate((tmp_path / "x509-dst" / "server-cert.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["qemu.org"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    client = x509.load_pem_x509_certificate((tmp_path / "x509-src" / "client-cert.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "x509-dst" / "ca-cert.pem").read_bytes())
    assert client.issuer == ca.subject == server.issuer
    assert st.src_params == {"tls-creds": "tlscreds0", "tls-hostname": "qemu.org"}
    assert "verify-peer=on" in st.dst_args[1]


def test_x509_negative_knobs(tmp_path):
    X509(src_trusts=("ca", "other-ca"), client_cert_by="other-ca").materialize(tmp_path / "h")
    bundle = (tmp_path / "h" / "x509-src" / "ca-cert.pem").read_bytes()
    assert bundle.count(b"BEGIN CERTIFICATE") == 2
    X509(client_cert_by=None).materialize(tmp_path / "anon")
    assert not (tmp_path / "anon" / "x509-src" / "client-cert.pem").exists()
    with pytest.raises(ValueError):
        X509(src_trusts=("mallory",))
    with pytest.raises(ValueError):
        X509(client_cert_by="mallory")


def test_setup_adds_up():
    a = Setup(src_args=("-a",), src_params={"x": 1})
    b = Setup(dst_args=("-b",), src_params={"y": 2})
    c = a + b
    assert c.src_args == ("-a",) and c.dst_args == ("-b",) and c.src_params == {"x": 1, "y": 2}


def test_locked_memory_and_direct_io_requirements():
    env = requirements.Env("q", "q", "tcg", (10, 0, 2), (10, 0, 2))
    # Root (CAP_IPC_LOCK) needs no memlock limit; otherwise the limit is compared.
    reason = requirements.LockedMemory(1 << 40).check(env)
    assert reason is None or "RLIMIT_MEMLOCK" in reason
    reason = requirements.DirectIO().check(env)
    assert reason is None or "O_DIRECT" in reason


def test_accel_props_reach_the_accel_option():
    from pathlib import Path

    from harness.qemu.cmdline import GuestFiles, RunPaths, build_argv
    from harness.qemu.spec import MachineSpec

    bb = GuestFiles(bootblock=Path("/img/bootblock.img"))
    argv = build_argv(MachineSpec(binary="/q/qemu", accel="kvm", accel_props="dirty-ring-size=4096"),
                      RunPaths(Path("/tmp/qmh-x")), bb)
    assert argv[argv.index("-accel") + 1] == "kvm,dirty-ring-size=4096"
    assert argv.count("-accel") == 1


def test_dirty_limit_scenario_asks_for_a_dirty_ring():
    s = catalog.by_path()["/migration/precopy/unix/dirty-limit"]
    assert s.options.accel_props == "dirty-ring-size=4096"
    assert s.options.accel_properties() == "dirty-ring-size=4096"
    assert any(isinstance(r, requirements.Accel) and r.name == "kvm" for r in s.requires)
