"""A catalog scenario as a starting point for other engines (chaos), without its checks.

describe(scenario) -> ScenarioBase: the effective setup of the scenario's migration --
flow, transport, capabilities per side (with the `events` capability and the ones the
flow itself switches on), parameters per side, the TLS setup to materialise, multifd
channels/compression, postcopy/preempt -- as one frozen value. Nothing is started.

chaos_eligible(scenario) -> None if an engine may start a migration from it, else the
one-line reason it may not (it expects a refusal or failure, needs an RDMA device, is a
multi-hop or cpr flow whose setup only its own flow builds, ...).

This is a stable interface for harness/stress: add fields, do not rename them.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from harness.migration.flows.postcopy import POSTCOPY_CAPS
from harness.migration.flows.snapshot import SOURCE_CAPS as SNAPSHOT_SOURCE_CAPS
from harness.migration.options import FlowOptions, TlsSetup
from harness.migration.scenario import Flow, Result, Scenario
from harness.migration.transports import Transport
from harness.qemu.spec import GuestKind

MULTIFD_DEFAULT_CHANNELS = 2        # QEMU's multifd-channels default
MULTIFD_DEFAULT_COMPRESSION = "none"

# Flows whose setup only the flow itself can build, with why (chaos_eligible's answer).
_FLOW_NOT_ELIGIBLE = {
    Flow.RDMA: "needs an RDMA device (rdma flow)",
    Flow.PING_PONG: "cross-version ping-pong: several hops between two binaries, not one "
                    "migration",
    Flow.CPR_TRANSFER: "cpr-transfer: the destination is launched by the flow onto the cpr "
                       "channel (memfd RAM, two -incoming)",
    Flow.CPR_REBOOT: "cpr-reboot: the source saves and quits before the destination starts "
                     "(no pair running at once)",
    Flow.COLO: "colo: the primary/secondary disks, filters and NBD are built by flows/colo.py "
               "at run time, not declared in the scenario",
}


@dataclass(frozen=True)
class ScenarioBase:
    """The effective migration setup a catalog scenario declares (see describe())."""

    path: str
    family: str
    flow: Flow
    transport: Transport
    src_caps: Mapping[str, bool]     # effective on the source: events + flow's own + scenario's
    dst_caps: Mapping[str, bool]     # effective on the destination
    src_params: Mapping[str, Any]    # scenario's; TLS parameters come from tls.materialize()
    dst_params: Mapping[str, Any]
    tls: TlsSetup | None             # .materialize(workdir, dst_address=...) -> tls.Setup
    multifd: bool
    multifd_channels: int | None     # None without multifd; QEMU's default 2 if not declared
    multifd_compression: str | None  # None without multifd; "none" if not declared
    postcopy: bool                   # postcopy-ram on (postcopy flows, or declared)
    preempt: bool                    # postcopy-preempt on
    converge: bool                   # False: params keep it iterating (max-bandwidth)
    live: bool                       # False: the source is stopped before migrate
    guest: GuestKind | None          # None: the session's --guest
    memory_mib: int | None
    accel_props: str | None          # extra -accel properties (e.g. a KVM dirty ring)
    src_args: tuple[str, ...]
    dst_args: tuple[str, ...]
    requires: tuple[Any, ...]        # harness.migration.requirements, to check per binary
    options: FlowOptions             # the flow's typed options, for what is not above


def _caps(s: Scenario) -> tuple[dict, dict]:
    both: dict = {"events": True}
    src_only: dict = {}
    if s.flow in (Flow.POSTCOPY, Flow.POSTCOPY_RECOVERY):
        both.update(POSTCOPY_CAPS)
    if s.flow is Flow.BACKGROUND_SNAPSHOT:
        src_only.update(SNAPSHOT_SOURCE_CAPS)
    both.update(s.caps)
    return {**src_only, **both}, both


def describe(s: Scenario) -> ScenarioBase:
    """The scenario's migration setup, flattened; starts nothing and checks nothing."""
    src_caps, dst_caps = _caps(s)
    multifd = bool(src_caps.get("multifd"))
    return ScenarioBase(
        path=s.path, family=s.family, flow=s.flow, transport=s.transport,
        src_caps=MappingProxyType(src_caps), dst_caps=MappingProxyType(dst_caps),
        src_params=MappingProxyType(dict(s.params)),
        dst_params=MappingProxyType(dict(s.dst_params)),
        tls=s.options.tls_setup(),
        multifd=multifd,
        multifd_channels=(int(s.params.get("multifd-channels", MULTIFD_DEFAULT_CHANNELS))
                          if multifd else None),
        multifd_compression=(str(s.params.get("multifd-compression",
                                              MULTIFD_DEFAULT_COMPRESSION))
                             if multifd else None),
        postcopy=bool(src_caps.get("postcopy-ram")),
        preempt=bool(src_caps.get("postcopy-preempt")),
        # postcopy flows always precopy without converging, then switch
        converge=s.converge and s.flow not in (Flow.POSTCOPY, Flow.POSTCOPY_RECOVERY),
        live=s.live, guest=s.guest, memory_mib=s.memory_mib,
        accel_props=s.options.accel_properties(),
        src_args=tuple(s.src_args), dst_args=tuple(s.dst_args), requires=tuple(s.requires),
        options=s.options,
    )


def chaos_eligible(s: Scenario) -> str | None:
    """None if a chaos engine may start from this scenario, else why not (one line)."""
    if s.expect.result is not Result.COMPLETED:
        return (f"expects {s.expect.result.value.upper()}: the scenario's point is that QEMU "
                f"refuses or fails it")
    return _FLOW_NOT_ELIGIBLE.get(s.flow)
