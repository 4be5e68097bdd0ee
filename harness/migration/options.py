"""Typed, frozen per-flow scenario options (the shape of QEMU qtest's MigrateCommon).

Each flow takes exactly one options class (scenario.OPTIONS_FOR maps Flow -> class;
a Scenario with another class is a SpecError at import). Closed sets of values are
enums; `during` hooks are the hook functions themselves (harness.migration.hooks),
never names. Every class validates itself in __post_init__ and raises a one-line
SpecError naming the class and field. Enum fields also accept the member's value
("primary"), converted to the member, so a value drawn as text validates the same way.

Flows convert enum members to their .value at their boundary: the value strings are
what QEMU statuses, metrics.json and the flows' own tables speak.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Union

from harness.migration.tls import X509, Psk
from harness.qemu.spec import SpecError

if TYPE_CHECKING:
    from harness.migration.pair import Pair

DuringHook = Callable[["Pair"], dict]
TlsSetup = Union[Psk, X509]   # credentials materialised per test (harness.migration.tls)


class CancelPoint(enum.Enum):
    """The source status at which migrate_cancel is sent (qtest's cancel/src/after/<status>)."""
    NONE = "none"
    SETUP = "setup"
    ACTIVE = "active"
    PRE_SWITCHOVER = "pre-switchover"
    DEVICE = "device"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"


class ColoSide(enum.Enum):
    """The COLO side that fails over (the other one dies)."""
    PRIMARY = "primary"
    SECONDARY = "secondary"


class ColoAt(enum.Enum):
    IDLE = "idle"                  # between checkpoints
    CHECKPOINT = "checkpoint"      # while the secondary is stopped in a checkpoint


class ColoPeer(enum.Enum):
    ALIVE = "alive"                # failover requested, then the peer is killed (qtest)
    KILLED = "killed"              # the peer dies first, the survivor notices


class CrossVersionMode(enum.Enum):
    """How each ping-pong hop migrates."""
    PRECOPY = "precopy"
    POSTCOPY = "postcopy"


class Prove(enum.Enum):
    EACH = "each"                  # full integrity proof after every hop
    LAST = "last"                  # intermediate hops only check the guest runs


class RecoveryBreak(enum.Enum):
    """How the postcopy channel is broken before a recovery (flows/postcopy.py)."""
    PAUSE_SOURCE = "pause-source"
    PAUSE_DESTINATION = "pause-destination"
    PAUSE_BOTH = "pause-both"
    PROXY_CUT = "proxy-cut"
    LINK_DOWN = "link-down"
    LINK_REJECT = "link-reject"


class DoubleFailure(enum.Enum):
    """qtest's recovery/double-failures: a first recovery over unpaired sockets fails."""
    HANDSHAKE = "handshake"
    RECONNECT = "reconnect"


class Destination(enum.Enum):
    LISTENING = "listening"        # a real destination
    CLOSED_PORT = "closed-port"    # a bound, non-listening TCP port (qtest bad_dest)


class RdmaSide(enum.Enum):
    BOTH = "both"                  # destination migrate-incoming, then source migrate
    SOURCE = "source"              # only the source's migrate (its refusal is the test)


# -- validation helpers ----------------------------------------------------------------
def _fail(obj: Any, name: str, why: str) -> SpecError:
    return SpecError(f"{type(obj).__name__}.{name}: {why}")


def _coerce_enum(obj: Any, name: str, cls: type[enum.Enum], optional: bool = False) -> None:
    v = getattr(obj, name)
    if v is None and optional:
        return
    if isinstance(v, cls):
        return
    try:
        member = cls(v)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise _fail(obj, name, f"{v!r} is not a {cls.__name__} ({allowed})") from None
    object.__setattr__(obj, name, member)


def _check_int(obj: Any, name: str, minimum: int, optional: bool = False) -> None:
    v = getattr(obj, name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _fail(obj, name, f"must be an integer >= {minimum}, got {v!r}")


def _check_bool(obj: Any, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, bool):
            raise _fail(obj, name, f"must be true/false, got {v!r}")


# -- the classes ----------------------------------------------------------------------
@dataclass(frozen=True)
class FlowOptions:
    """Base of every flow's options: what the scenario and its context ask of them."""

    def tls_setup(self) -> TlsSetup | None:
        """TLS credentials ScenarioContext materialises per test (None: no TLS)."""
        return None

    def accel_properties(self) -> str | None:
        """Extra -accel properties the scenario's machines need (e.g. a KVM dirty ring)."""
        return None

    def local_only(self) -> str | None:
        """Why these options need the QEMUs on the controller itself, or None."""
        return None

    def summary(self) -> dict:
        """Field -> plain value (enum values, hook names): for logs and describe()."""
        out: dict = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, enum.Enum):
                v = v.value
            elif isinstance(v, tuple) and all(callable(x) for x in v):
                v = tuple(getattr(x, "__name__", repr(x)) for x in v)
            out[f.name] = v
        return out


@dataclass(frozen=True)
class PrecopyOptions(FlowOptions):
    """Flow.PRECOPY (flows/precopy.py)."""

    during: tuple[DuringHook, ...] = ()    # hooks.* run in order while the migration is active
    destination: Destination = Destination.LISTENING
    tls: TlsSetup | None = None
    accel_props: str | None = None         # e.g. "dirty-ring-size=4096" for dirty-limit

    def __post_init__(self):
        during = self.during
        if callable(during):
            during = (during,)
        if not isinstance(during, (tuple, list)) or not all(callable(h) for h in during):
            raise _fail(self, "during", f"must be hook functions (harness.migration.hooks), "
                                        f"got {self.during!r}")
        object.__setattr__(self, "during", tuple(during))
        _coerce_enum(self, "destination", Destination)
        if self.tls is not None and not isinstance(self.tls, (Psk, X509)):
            raise _fail(self, "tls", f"must be tls.Psk or tls.X509, got {self.tls!r}")
        if self.accel_props is not None and not (isinstance(self.accel_props, str)
                                                 and self.accel_props):
            raise _fail(self, "accel_props", f"must be a non-empty string, got {self.accel_props!r}")

    def tls_setup(self) -> TlsSetup | None:
        return self.tls

    def accel_properties(self) -> str | None:
        return self.accel_props


@dataclass(frozen=True)
class PostcopyOptions(FlowOptions):
    """Flow.POSTCOPY (flows/postcopy.py)."""

    attempt: str | None = None             # a QMP command that must be refused in postcopy
    precopy_bytes: int | None = None       # precopy progress before switching (None: flow default)

    def __post_init__(self):
        if self.attempt is not None and not (isinstance(self.attempt, str) and self.attempt
                                             and " " not in self.attempt):
            raise _fail(self, "attempt", f"must be a QMP command name, got {self.attempt!r}")
        _check_int(self, "precopy_bytes", 1, optional=True)


@dataclass(frozen=True)
class ProxyShape:
    """Shaping of the userspace proxy a proxy-cut recovery routes through."""

    delay_ms: int = 0
    throttle: int | None = None            # bytes/s

    def __post_init__(self):
        _check_int(self, "delay_ms", 0)
        _check_int(self, "throttle", 1, optional=True)


@dataclass(frozen=True)
class RecoveryOptions(FlowOptions):
    """Flow.POSTCOPY_RECOVERY (flows/postcopy.py)."""

    method: RecoveryBreak = RecoveryBreak.PAUSE_SOURCE
    double_failure: DoubleFailure | None = None
    cycles: int = 1
    proxy: ProxyShape = ProxyShape()
    precopy_bytes: int | None = None

    def __post_init__(self):
        _coerce_enum(self, "method", RecoveryBreak)
        _coerce_enum(self, "double_failure", DoubleFailure, optional=True)
        _check_int(self, "cycles", 1)
        _check_int(self, "precopy_bytes", 1, optional=True)
        if not isinstance(self.proxy, ProxyShape):
            raise _fail(self, "proxy", f"must be a ProxyShape, got {self.proxy!r}")
        if self.proxy != ProxyShape() and self.method is not RecoveryBreak.PROXY_CUT:
            raise _fail(self, "proxy", f"shapes the proxy of method=proxy-cut, not "
                                       f"{self.method.value}")

    def local_only(self) -> str | None:
        if self.double_failure is not None:
            return "its double failures hand socketpairs to QEMU over SCM_RIGHTS"
        return None


@dataclass(frozen=True)
class FileOptions(FlowOptions):
    """Flow.FILE (flows/file.py)."""

    offset: int | str | None = None        # file:PATH,offset=N; a string is for QEMU to parse
    fdset: bool = False                    # hand QEMU the file with add-fd (file:/dev/fdset/1)
    fdset_fds: int = 1                     # fds per side (2 with multifd, like qtest)

    def __post_init__(self):
        o = self.offset
        if o is not None and (isinstance(o, bool) or not isinstance(o, (int, str))
                              or (isinstance(o, int) and o < 0) or o == ""):
            raise _fail(self, "offset", f"must be an integer >= 0 or a string, got {o!r}")
        _check_bool(self, "fdset")
        _check_int(self, "fdset_fds", 1)
        if self.fdset_fds != 1 and not self.fdset:
            raise _fail(self, "fdset_fds", "only applies with fdset=True")

    def local_only(self) -> str | None:
        return "hands QEMU file descriptors opened here (SCM_RIGHTS)" if self.fdset else None


@dataclass(frozen=True)
class SnapshotOptions(FlowOptions):
    """Flow.BACKGROUND_SNAPSHOT (flows/snapshot.py): nothing beyond caps/params yet."""


@dataclass(frozen=True)
class CancelOptions(FlowOptions):
    """Flow.CANCEL (flows/cancel.py)."""

    at: CancelPoint | None = None          # required; None only to give a clear error
    attempts: int = 1                      # fresh pairs to race on ('device')

    def __post_init__(self):
        if self.at is None:
            raise _fail(self, "at", "is required (the source status to cancel at)")
        _coerce_enum(self, "at", CancelPoint)
        _check_int(self, "attempts", 1)


@dataclass(frozen=True)
class CprRebootOptions(FlowOptions):
    """Flow.CPR_REBOOT (flows/cpr.py)."""

    shared_ram: bool = True                # RAM in a share=on file + x-ignore-shared

    def __post_init__(self):
        _check_bool(self, "shared_ram")


@dataclass(frozen=True)
class CprTransferOptions(FlowOptions):
    """Flow.CPR_TRANSFER (flows/cpr.py)."""

    defer: bool = False                    # destination -incoming defer for the main channel
    private_ram: bool = False              # RAM without share=on: the refusal scenarios

    def __post_init__(self):
        _check_bool(self, "defer", "private_ram")


@dataclass(frozen=True)
class ColoOptions(FlowOptions):
    """Flow.COLO (flows/colo.py)."""

    failover: ColoSide = ColoSide.PRIMARY
    at: ColoAt = ColoAt.IDLE
    peer: ColoPeer = ColoPeer.ALIVE
    checkpoints: int = 3
    checkpoint_delay_ms: int = 300

    def __post_init__(self):
        _coerce_enum(self, "failover", ColoSide)
        _coerce_enum(self, "at", ColoAt)
        _coerce_enum(self, "peer", ColoPeer)
        _check_int(self, "checkpoints", 1)
        _check_int(self, "checkpoint_delay_ms", 1)


@dataclass(frozen=True)
class PingPongOptions(FlowOptions):
    """Flow.PING_PONG (flows/pingpong.py)."""

    mode: CrossVersionMode = CrossVersionMode.PRECOPY
    hops: int = 3
    prove: Prove = Prove.EACH

    def __post_init__(self):
        _coerce_enum(self, "mode", CrossVersionMode)
        _check_int(self, "hops", 1)
        _coerce_enum(self, "prove", Prove)


@dataclass(frozen=True)
class RdmaOptions(FlowOptions):
    """Flow.RDMA (flows/rdma.py)."""

    side: RdmaSide = RdmaSide.BOTH
    host: str | None = None                # address of the RDMA netdev (None: detected)

    def __post_init__(self):
        _coerce_enum(self, "side", RdmaSide)
        if self.host is not None and not (isinstance(self.host, str) and self.host):
            raise _fail(self, "host", f"must be a non-empty address, got {self.host!r}")
