"""Scenario: one declared migration case, frozen, with a qtest-style path id.

Adding a mode to the catalog is adding one Scenario to a family module in
harness/migration/families/; a flow driver (harness/migration/flows/) is only
added when the flow itself is new.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from harness.migration import options as opts
from harness.migration.options import FlowOptions
from harness.migration.transports import Transport
from harness.qemu.spec import GuestKind, SpecError

TIERS = frozenset({"smoke", "full", "slow"})
PATH_RX = re.compile(r"^/migration(/[a-z0-9][a-z0-9_.+-]*)+$")


class Flow(enum.Enum):
    PRECOPY = "precopy"
    POSTCOPY = "postcopy"
    POSTCOPY_RECOVERY = "postcopy-recovery"
    FILE = "file"                       # migrate to a file, then load it
    BACKGROUND_SNAPSHOT = "background-snapshot"
    CANCEL = "cancel"
    CPR_REBOOT = "cpr-reboot"
    CPR_TRANSFER = "cpr-transfer"
    COLO = "colo"
    PING_PONG = "ping-pong"             # A -> B -> A -> B, binaries swapping sides
    RDMA = "rdma"                       # rdma:HOST:PORT (its own flow: no socket-address)


# The one options class each flow takes (harness.migration.options).
OPTIONS_FOR: Mapping[Flow, type[FlowOptions]] = MappingProxyType({
    Flow.PRECOPY: opts.PrecopyOptions,
    Flow.POSTCOPY: opts.PostcopyOptions,
    Flow.POSTCOPY_RECOVERY: opts.RecoveryOptions,
    Flow.FILE: opts.FileOptions,
    Flow.BACKGROUND_SNAPSHOT: opts.SnapshotOptions,
    Flow.CANCEL: opts.CancelOptions,
    Flow.CPR_REBOOT: opts.CprRebootOptions,
    Flow.CPR_TRANSFER: opts.CprTransferOptions,
    Flow.COLO: opts.ColoOptions,
    Flow.PING_PONG: opts.PingPongOptions,
    Flow.RDMA: opts.RdmaOptions,
})

# fd passing and exec FIFOs/unix sockets live in one host's kernel or filesystem; file,
# snapshot and cpr flows hand a file from source to destination; COLO shares disks.
_ONE_HOST_TRANSPORTS = frozenset({Transport.UNIX, Transport.FD, Transport.EXEC, Transport.FILE})
_ONE_HOST_FLOWS = frozenset({Flow.FILE, Flow.BACKGROUND_SNAPSHOT, Flow.CPR_REBOOT,
                             Flow.CPR_TRANSFER, Flow.COLO})


class Result(enum.Enum):
    COMPLETED = "completed"             # both sides completed, integrity proven
    REFUSED = "refused"                 # a QMP command is refused with an error class
    FAILED = "failed"                   # source 'failed'; destination exits non-zero
    CANCELLED = "cancelled"             # source 'cancelled', still running its guest


@dataclass(frozen=True)
class Expect:
    result: Result = Result.COMPLETED
    error_class: str | None = None      # REFUSED: QMP error class, e.g. GenericError
    error_match: str | None = None      # regex on the error text (QMP desc or stderr)
    dst_exit: tuple[int, ...] = (1,)    # FAILED: the destination's exit codes

    def __post_init__(self):
        if self.result is Result.REFUSED and not (self.error_class or self.error_match):
            raise SpecError("Expect(REFUSED) needs error_class or error_match")

    @property
    def error_path_only(self) -> bool:
        """Passing shows only that QEMU refuses: no migration ran (reported as
        "passed (error path only)", never as a plain pass)."""
        return self.result is Result.REFUSED


@dataclass(frozen=True)
class KnownBug:
    """A QEMU bug this scenario hits: the test becomes a strict expected failure."""

    url: str
    summary: str
    fixed_in: tuple[int, int, int] | None = None  # first QEMU version with the fix
    signature: str | None = None  # regex on the failure signature this bug produces

    def matches(self, failure_signature: str) -> bool:
        return self.signature is not None and re.search(self.signature, failure_signature) is not None

    def affects(self, version: tuple[int, int, int]) -> bool:
        return self.fixed_in is None or tuple(version) < self.fixed_in


class KnownBugHit(AssertionError):
    """A scenario failed exactly the way its KnownBug.signature says (strict xfail on this only)."""


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class Scenario:
    path: str
    flow: Flow = Flow.PRECOPY
    transport: Transport = Transport.TCP
    caps: Mapping[str, bool] = field(default_factory=dict)       # both sides
    params: Mapping[str, Any] = field(default_factory=dict)      # source
    dst_params: Mapping[str, Any] = field(default_factory=dict)  # destination
    converge: bool = True
    live: bool = True                    # False: source stopped before migrate
    expect: Expect = field(default_factory=Expect)
    tiers: frozenset[str] = frozenset({"full"})
    guest: GuestKind | None = None       # None: the session's --guest
    memory_mib: int | None = None
    src_args: tuple[str, ...] = ()
    dst_args: tuple[str, ...] = ()
    requires: tuple[Any, ...] = ()       # harness.migration.requirements objects
    options: FlowOptions | None = None  # OPTIONS_FOR[flow]; None: that class's defaults
    known_bug: KnownBug | None = None
    timeout: float = 120.0
    note: str = ""

    def __post_init__(self):
        if not PATH_RX.match(self.path):
            raise SpecError(f"scenario path '{self.path}' is not a /migration/... path id")
        bad = set(self.tiers) - TIERS
        if bad or not self.tiers:
            raise SpecError(f"scenario {self.path}: tiers {sorted(bad) or '[]'} not in {sorted(TIERS)}")
        for name in ("caps", "params", "dst_params"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        for k, v in self.caps.items():
            if not isinstance(v, bool):
                raise SpecError(f"scenario {self.path}: capability {k} must be true/false, got {v!r}")
        if not isinstance(self.flow, Flow) or not isinstance(self.transport, Transport):
            raise SpecError(f"scenario {self.path}: flow/transport must be Flow/Transport members")
        self._check_options()
        if isinstance(self.src_args, str) or isinstance(self.dst_args, str):
            raise SpecError(f"scenario {self.path}: src_args/dst_args must be tuples of strings")
        object.__setattr__(self, "tiers", frozenset(self.tiers))

    def _check_options(self) -> None:
        want = OPTIONS_FOR[self.flow]
        if self.options is None:
            try:
                object.__setattr__(self, "options", want())
            except SpecError as exc:
                raise SpecError(f"scenario {self.path}: {exc}") from None
        elif type(self.options) is not want:
            raise SpecError(f"scenario {self.path}: flow {self.flow.value} takes "
                            f"options={want.__name__}(...), not {type(self.options).__name__}")

    @property
    def local_only(self) -> str | None:
        """Why this scenario needs its QEMUs on the controller itself, or None."""
        if self.transport is Transport.FD:
            return "hands QEMU file descriptors opened here (SCM_RIGHTS)"
        why = self.options.local_only()
        if why:
            return why
        if self.flow is Flow.CPR_TRANSFER:
            return "cpr-transfer watches its UNIX sockets in a directory here"
        return None

    @property
    def needs_one_host(self) -> bool:
        """Both QEMUs share files or descriptors: placed on one host (see hosts.placement)."""
        return self.transport in _ONE_HOST_TRANSPORTS or self.flow in _ONE_HOST_FLOWS

    @property
    def family(self) -> str:
        return self.path.split("/")[2]
