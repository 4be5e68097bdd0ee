"""No QEMU: typed per-flow scenario options (harness.migration.options) and the
Flow -> options-class check a Scenario makes at import."""
import dataclasses

import pytest

from harness.migration import catalog, hooks
from harness.migration import options as o
from harness.migration.scenario import OPTIONS_FOR, Flow, Scenario
from harness.migration.tls import Psk
from harness.migration.transports import Transport
from harness.qemu.spec import SpecError


def _one_line(exc_info, *parts):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, msg


def test_every_flow_has_exactly_one_options_class():
    assert set(OPTIONS_FOR) == set(Flow)
    assert len(set(OPTIONS_FOR.values())) == len(Flow)
    for cls in OPTIONS_FOR.values():
        assert issubclass(cls, o.FlowOptions) and cls.__dataclass_params__.frozen


def test_every_catalog_scenario_has_its_flows_options_and_they_validate():
    for s in catalog.all_scenarios():
        assert type(s.options) is OPTIONS_FOR[s.flow], s.path
        # Rebuilding from the fields runs __post_init__ again: the declaration is valid.
        again = type(s.options)(**{f.name: getattr(s.options, f.name)
                                  for f in dataclasses.fields(s.options)})
        assert again == s.options, s.path


def test_no_options_means_the_flows_defaults():
    s = Scenario("/migration/x/colo", flow=Flow.COLO)
    assert s.options == o.ColoOptions()
    assert s.options.failover is o.ColoSide.PRIMARY


def test_wrong_options_class_for_the_flow_is_refused():
    with pytest.raises(SpecError) as ei:
        Scenario("/migration/x/y", flow=Flow.POSTCOPY, options=o.PrecopyOptions())
    _one_line(ei, "/migration/x/y", "postcopy", "PostcopyOptions", "PrecopyOptions")


def test_a_free_form_dict_is_refused():
    with pytest.raises(SpecError) as ei:
        Scenario("/migration/x/y", options={"during": "dirty-pass"})
    _one_line(ei, "/migration/x/y", "PrecopyOptions", "dict")


def test_cancel_without_a_point_names_the_scenario():
    with pytest.raises(SpecError) as ei:
        Scenario("/migration/x/cancel", flow=Flow.CANCEL)
    _one_line(ei, "/migration/x/cancel", "CancelOptions.at", "required")


@pytest.mark.parametrize("make, parts", [
    (lambda: o.ColoOptions(failover="middle"), ("ColoOptions.failover", "'middle'", "primary, secondary")),
    (lambda: o.CancelOptions(at="paused"), ("CancelOptions.at", "'paused'", "pre-switchover")),
    (lambda: o.RecoveryOptions(method="unplug"), ("RecoveryOptions.method", "'unplug'", "proxy-cut")),
    (lambda: o.RecoveryOptions(double_failure="twice"), ("RecoveryOptions.double_failure", "twice")),
    (lambda: o.PingPongOptions(mode="hybrid"), ("PingPongOptions.mode", "precopy, postcopy")),
    (lambda: o.PingPongOptions(prove="some"), ("PingPongOptions.prove", "each, last")),
    (lambda: o.RdmaOptions(side="destination"), ("RdmaOptions.side", "both, source")),
    (lambda: o.PrecopyOptions(destination="nowhere"), ("PrecopyOptions.destination", "closed-port")),
])
def test_bad_enum_value_is_one_line(make, parts):
    with pytest.raises(SpecError) as ei:
        make()
    _one_line(ei, *parts)


@pytest.mark.parametrize("make, parts", [
    (lambda: o.PrecopyOptions(during=("dirty-pass",)), ("PrecopyOptions.during", "hook functions")),
    (lambda: o.PrecopyOptions(tls={"psk": True}), ("PrecopyOptions.tls", "Psk or tls.X509")),
    (lambda: o.PrecopyOptions(accel_props=""), ("PrecopyOptions.accel_props",)),
    (lambda: o.RecoveryOptions(cycles=0), ("RecoveryOptions.cycles", ">= 1")),
    (lambda: o.RecoveryOptions(method=o.RecoveryBreak.PAUSE_SOURCE, proxy=o.ProxyShape(delay_ms=5)),
     ("RecoveryOptions.proxy", "proxy-cut")),
    (lambda: o.ProxyShape(delay_ms=-1), ("ProxyShape.delay_ms",)),
    (lambda: o.FileOptions(offset=True), ("FileOptions.offset",)),
    (lambda: o.FileOptions(offset=-1), ("FileOptions.offset",)),
    (lambda: o.FileOptions(fdset_fds=2), ("FileOptions.fdset_fds", "fdset=True")),
    (lambda: o.FileOptions(fdset="yes"), ("FileOptions.fdset", "true/false")),
    (lambda: o.CancelOptions(at=o.CancelPoint.DEVICE, attempts=0), ("CancelOptions.attempts",)),
    (lambda: o.CprRebootOptions(shared_ram=1), ("CprRebootOptions.shared_ram",)),
    (lambda: o.CprTransferOptions(defer="no"), ("CprTransferOptions.defer",)),
    (lambda: o.ColoOptions(checkpoints=0), ("ColoOptions.checkpoints",)),
    (lambda: o.PingPongOptions(hops=0), ("PingPongOptions.hops",)),
    (lambda: o.PostcopyOptions(attempt="migrate cancel"), ("PostcopyOptions.attempt",)),
    (lambda: o.PostcopyOptions(precopy_bytes=0), ("PostcopyOptions.precopy_bytes",)),
    (lambda: o.RdmaOptions(host=""), ("RdmaOptions.host",)),
])
def test_bad_field_is_one_line(make, parts):
    with pytest.raises(SpecError) as ei:
        make()
    _one_line(ei, *parts)


def test_enum_values_as_text_become_members():
    c = o.ColoOptions(failover="secondary", at="checkpoint", peer="killed")
    assert (c.failover, c.at, c.peer) == (o.ColoSide.SECONDARY, o.ColoAt.CHECKPOINT,
                                          o.ColoPeer.KILLED)
    assert o.CancelOptions(at="pre-switchover").at is o.CancelPoint.PRE_SWITCHOVER
    assert o.RecoveryOptions(method="proxy-cut", double_failure="reconnect").double_failure \
        is o.DoubleFailure.RECONNECT


def test_options_are_frozen():
    opts = o.PrecopyOptions(during=hooks.dirty_pass)
    assert opts.during == (hooks.dirty_pass,)          # one hook becomes a 1-tuple
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.during = ()


def test_options_decide_local_only_and_one_host():
    fd = Scenario("/migration/x/f", flow=Flow.FILE, transport=Transport.FILE,
                  options=o.FileOptions(fdset=True))
    assert "SCM_RIGHTS" in fd.local_only and fd.needs_one_host
    assert Scenario("/migration/x/g", flow=Flow.FILE, transport=Transport.FILE).local_only is None
    dbl = Scenario("/migration/x/r", flow=Flow.POSTCOPY_RECOVERY,
                   options=o.RecoveryOptions(double_failure=o.DoubleFailure.HANDSHAKE))
    assert "socketpairs" in dbl.local_only and not dbl.needs_one_host
    assert Scenario("/migration/x/r2", flow=Flow.POSTCOPY_RECOVERY).local_only is None
    by = catalog.by_path()
    assert by["/migration/precopy/file/offset/fdset"].local_only
    assert by["/migration/postcopy/recovery/double-failures/reconnect"].local_only
    assert by["/migration/precopy/fd/socketpair"].local_only
    assert by["/migration/precopy/tcp/plain"].local_only is None


def test_summary_is_plain_values():
    s = o.PrecopyOptions(during=(hooks.dirty_pass, hooks.pause_before_switchover), tls=Psk())
    assert s.summary() == {"during": ("dirty_pass", "pause_before_switchover"),
                           "destination": "listening", "tls": Psk(), "accel_props": None}
    assert o.RecoveryOptions().summary()["method"] == "pause-source"
