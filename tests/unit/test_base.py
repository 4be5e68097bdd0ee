"""No QEMU: harness.migration.base, the scenario description a chaos engine starts from."""
import pytest

from harness.migration import base, catalog
from harness.migration.options import PrecopyOptions, RecoveryOptions
from harness.migration.scenario import Expect, Flow, Result, Scenario
from harness.migration.tls import X509, Psk
from harness.migration.transports import Transport


def _by(path):
    return catalog.by_path()[path]


def test_describe_tls_multifd():
    d = base.describe(_by("/migration/tls/multifd/tcp/psk/match"))
    assert d.flow is Flow.PRECOPY and d.transport is Transport.TCP and d.family == "tls"
    assert d.tls == Psk()
    assert d.multifd and d.multifd_channels == 4 and d.multifd_compression == "none"
    assert dict(d.src_caps) == dict(d.dst_caps) == {"events": True, "multifd": True}
    assert dict(d.src_params) == dict(d.dst_params) == {"multifd-channels": 4}
    assert not d.postcopy and not d.preempt
    assert isinstance(d.options, PrecopyOptions)
    x = base.describe(_by("/migration/tls/multifd/tcp/x509/default-host"))
    assert isinstance(x.tls, X509) and x.multifd_channels == 4


def test_describe_postcopy_preempt():
    d = base.describe(_by("/migration/postcopy/preempt/recovery/plain"))
    assert d.flow is Flow.POSTCOPY_RECOVERY and d.postcopy and d.preempt
    for caps in (d.src_caps, d.dst_caps):
        assert caps["postcopy-ram"] and caps["postcopy-preempt"] and caps["events"]
    assert d.tls is None and not d.multifd and d.multifd_channels is None
    assert d.converge is False       # the flow precopies without converging, then switches
    assert isinstance(d.options, RecoveryOptions)
    plain = base.describe(_by("/migration/postcopy/plain"))
    assert plain.postcopy and not plain.preempt


def test_describe_compression_and_source_only_caps():
    z = base.describe(_by("/migration/multifd/tcp/channels/8/zstd"))
    assert (z.multifd_channels, z.multifd_compression) == (8, "zstd")
    assert z.src_params["max-bandwidth"] and "max-bandwidth" not in z.dst_params
    assert z.converge is False
    snap = base.describe(_by("/migration/snapshot/background/tcp"))
    assert snap.src_caps["background-snapshot"] and "background-snapshot" not in snap.dst_caps
    dl = base.describe(_by("/migration/precopy/unix/dirty-limit"))
    assert dl.accel_props == "dirty-ring-size=4096"


def test_describe_is_frozen():
    d = base.describe(_by("/migration/precopy/tcp/plain"))
    with pytest.raises(Exception):
        d.flow = Flow.POSTCOPY
    with pytest.raises(TypeError):
        d.src_caps["x"] = True


@pytest.mark.parametrize("path, why", [
    ("/migration/precopy/tcp/plain", None),
    ("/migration/multifd/tcp/channels/4/zstd", None),
    ("/migration/postcopy/preempt/recovery/proxy-cut", None),
    ("/migration/multifd/file/mapped-ram", None),
    ("/migration/tls/tcp/x509/default-host", None),
    ("/migration/snapshot/background/file", None),
    ("/migration/cancel/src/after/active", None),
    ("/migration/tls/tcp/psk/mismatch", "expects FAILED"),
    ("/migration/postcopy/cancel/refused", "expects REFUSED"),
    ("/migration/precopy/tcp/bad-dest", "expects FAILED"),
    ("/migration/rdma/plain", "RDMA device"),
    ("/migration/cross-version/ping-pong", "ping-pong"),
    ("/migration/cpr/transfer", "cpr-transfer"),
    ("/migration/cpr/reboot", "cpr-reboot"),
    ("/migration/colo/plain/primary_failover", "colo"),
])
def test_chaos_eligible(path, why):
    got = base.chaos_eligible(_by(path))
    if why is None:
        assert got is None
    else:
        assert got and why in got and "\n" not in got


def test_every_scenario_describes_and_eligibility_is_consistent():
    eligible = 0
    for s in catalog.all_scenarios():
        d = base.describe(s)
        assert d.path == s.path and d.options is s.options
        why = base.chaos_eligible(s)
        if why is None:
            eligible += 1
            assert s.expect.result is Result.COMPLETED
    assert eligible >= 60   # most of the catalog is a usable base


def test_refusal_is_ineligible_whatever_the_flow():
    s = Scenario("/migration/x/refused", expect=Expect(Result.REFUSED, error_class="GenericError"))
    assert "REFUSED" in base.chaos_eligible(s)
