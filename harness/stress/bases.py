"""Chaos bases: where a chaos attempt starts, drawn from the catalog.

A base is a catalog scenario's migration setup (caps and params on both sides,
transport, TLS credentials, multifd channels and compression, postcopy with or
without preempt, file and mapped-ram, COLO) without the scenario's own checks:
the chaos oracles judge instead. Scenarios whose flow cannot run under chaos
(expected refusals or failures, RDMA, fd/exec transports, fdsets, hops, cpr)
are not eligible, each with its reason; `harness chaos` prints once, per
family left without a base, why (`skipped()`).

COLO bases (/migration/colo/...) are eligible where a probe of the binaries
shows a COLO pair entering 'colo' (harness.stress.colo_base.probe, cached per
binary; QEMU before 10.2 ends 'completed' instead and fails it); their attempt,
settling and judging are colo_base's. The scenario's failover side/point are
its own checks: under chaos, failovers are drawn as actions.

File bases (flow file: /migration/precopy/file..., /migration/multifd/file/
mapped-ram...) save to `file:PATH[,offset=N]` in the destination's run dir,
the source stopped first unless the scenario is live, and the destination
loads that file (`migrate-incoming file:...`) as soon as the source reports
'completed': the plan's steps land in the save, in the load, or between them
(harness.runtime.fileload, the code the exported reproducer runs too).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from harness.migration import catalog
from harness.migration.base import chaos_eligible, describe
from harness.migration.scenario import Flow, Result, Scenario
from harness.migration.transports import Transport
from harness.qemu.spec import SpecError

CHAOS_FLOWS = frozenset({Flow.PRECOPY, Flow.POSTCOPY, Flow.POSTCOPY_RECOVERY, Flow.CANCEL, Flow.FILE,
                         Flow.COLO})
CHAOS_TRANSPORTS = frozenset({Transport.TCP, Transport.UNIX, Transport.FILE})
# Setup parameters that only shape a scenario's own checks; chaos sets bandwidth itself.
SHAPING = frozenset({"max-bandwidth", "downtime-limit", "max-postcopy-bandwidth",
                     "avail-switchover-bandwidth"})
# Relative cost (an attempt's wall time): the draw favours cheap bases.
COST = {Flow.PRECOPY: 1.0, Flow.CANCEL: 1.0, Flow.POSTCOPY: 1.5, Flow.POSTCOPY_RECOVERY: 1.5,
        Flow.FILE: 1.5, Flow.COLO: 4.0}


@dataclass(frozen=True)
class ChaosBase:
    path: str
    transport: Transport
    caps: tuple            # ((name, bool), ...) on both sides
    src_params: tuple      # ((name, value), ...)
    dst_params: tuple
    tls: object = None     # harness.migration.tls.Psk / X509 (materialize(workdir))
    cost: float = 1.0
    live: bool = True      # False: the source is stopped before `migrate` (file bases)
    file_offset: int | None = None   # file bases: file:PATH,offset=N
    colo: bool = False     # a COLO pair (harness.stress.colo_base)
    checkpoint_delay_ms: int = 0     # COLO bases: x-checkpoint-delay

    @property
    def file(self) -> bool:
        """Save to a file, then load it (transport file)."""
        return self.transport is Transport.FILE

    @property
    def postcopy(self) -> bool:
        return dict(self.caps).get("postcopy-ram", False)

    @property
    def multifd(self) -> bool:
        return dict(self.caps).get("multifd", False)


def ineligible(s: Scenario) -> str | None:
    """Why scenario s cannot be a chaos base, or None. COLO scenarios are bases whose
    binaries pass the COLO probe (requirement_check), whatever their known bug."""
    if s.flow is Flow.COLO:
        return None if s.transport is Transport.TCP and s.expect.result is Result.COMPLETED \
            else "colo: only the plain COLO setup over tcp is run under chaos"
    reason = chaos_eligible(s)
    if reason:
        return reason
    if s.flow not in CHAOS_FLOWS:
        return f"flow {s.flow.value} is not run under chaos"
    if s.transport not in CHAOS_TRANSPORTS:
        return f"transport {s.transport.value} is not run under chaos"
    if (s.flow is Flow.FILE) != (s.transport is Transport.FILE):
        return f"flow {s.flow.value} over transport {s.transport.value} is not run under chaos"
    if s.flow is Flow.FILE and not isinstance(s.options.offset, (int, type(None))):
        return f"file offset {s.options.offset!r} is for QEMU to refuse"
    if s.expect.result is not Result.COMPLETED and s.flow is not Flow.CANCEL:
        return f"expects {s.expect.result.value}: its setup is meant to fail"
    if s.known_bug is not None:
        return "its known bug fails the setup itself"
    if s.local_only or s.src_args or s.dst_args:
        return "needs its own QEMU arguments or local descriptors"
    if s.guest is not None and s.guest.value != "bootblock":
        return "boots the Linux guest (chaos draws the guest itself)"
    if getattr(describe(s).tls, "mismatch", False):
        return "mismatched TLS credentials"
    return None


def from_scenario(s: Scenario) -> ChaosBase:
    """The scenario's migration setup as harness.migration.base.describe() gives it;
    chaos flows set the same caps on both sides (describe's per-side split only
    differs for background snapshots, which are not chaos bases)."""
    reason = ineligible(s)
    if reason:
        raise SpecError(f"{s.path} cannot be a chaos base: {reason}")
    d = describe(s)
    return ChaosBase(path=s.path, transport=s.transport, caps=tuple(sorted(d.src_caps.items())),
                     src_params=tuple((k, v) for k, v in d.src_params.items() if k not in SHAPING),
                     dst_params=tuple((k, v) for k, v in d.dst_params.items() if k not in SHAPING),
                     tls=d.tls, cost=COST.get(s.flow, 1.0), live=s.live,
                     file_offset=s.options.offset if s.flow is Flow.FILE else None,
                     colo=s.flow is Flow.COLO,
                     checkpoint_delay_ms=s.options.checkpoint_delay_ms if s.flow is Flow.COLO else 0)


# --families also takes these names, which cut across the catalog's family modules.
GROUPS = {
    "file": lambda s: s.flow is Flow.FILE,
    "mapped-ram": lambda s: s.flow is Flow.FILE and bool(s.caps.get("mapped-ram")),
}


def in_families(s: Scenario, families) -> bool:
    return not families or any(GROUPS[f](s) if f in GROUPS else s.family == f for f in families)


PLAIN = ChaosBase(path="/migration/chaos/precopy/tcp", transport=Transport.TCP,
                  caps=(("events", True),), src_params=(), dst_params=())


def eligible(families: tuple[str, ...] | None = None, paths: tuple[str, ...] | None = None,
             check=None, version: tuple[int, int, int] | None = None) -> list[ChaosBase]:
    """Bases from the catalog, narrowed by family or exact path. check(scenario) ->
    reason|None filters by what the binaries support (requirements)."""
    known = catalog.by_path()
    if paths:
        missing = [p for p in paths if p not in known]
        if missing:
            raise SpecError(f"--scenario {missing[0]}: no such catalog scenario")
        out = [from_scenario(known[p]) for p in paths]   # an ineligible named one is an error
    else:
        fams = {s.family for s in known.values()} | set(GROUPS)
        for f in families or ():
            if f not in fams:
                raise SpecError(f"--families {f}: no such family (have {', '.join(sorted(fams))})")
        out = [from_scenario(s) for s in known.values()
               if in_families(s, families) and ineligible(s) is None
               and (check is None or check(s) is None)]
        if not out:
            why = "; ".join(f"{f}: {r}" for f, r in skipped(families, check, version).items())
            raise SpecError(f"no catalog scenario of {', '.join(families or ['any family'])} "
                            f"can run under chaos on these binaries ({why or 'none eligible'})")
    return out


def by_path(bases: list[ChaosBase]) -> dict[str, ChaosBase]:
    return {b.path: b for b in [PLAIN, *bases]}


def draw(rng: random.Random, bases: list[ChaosBase]) -> ChaosBase:
    """Weighted by inverse cost: cheap bases run more often."""
    return rng.choices(bases, [1.0 / b.cost for b in bases])[0]


def requirement_check(src_binary: str, dst_binary: str, accel: str):
    """check(scenario) -> the first unmet requirement on these binaries, or None."""
    from harness.migration.requirements import Env
    from harness.qemu.binary import probe
    src, dst = probe(src_binary), probe(dst_binary)
    env = Env(src_binary=src.path, dst_binary=dst.path, accel=accel,
              src_version=src.version_tuple, dst_version=dst.version_tuple)

    def check(s: Scenario) -> str | None:
        unmet = next(filter(None, (r.check(env) for r in s.requires)), None)
        if unmet is None and s.flow is Flow.COLO:
            from harness.stress import colo_base
            unmet = colo_base.probe(src.path, dst.path, accel)   # cached per binary
        return unmet
    return check


def skipped(families: tuple[str, ...] | None = None, check=None,
            version: tuple[int, int, int] | None = None) -> dict[str, str]:
    """family -> why none of its scenarios is a chaos base here (for the families asked
    for, or every family), one line each: what `harness chaos` prints once per run.
    version: the source binary's; a known bug of the scenarios that affects it is named."""
    out: dict[str, str] = {}
    by_family: dict[str, list[Scenario]] = {}
    for s in catalog.by_path().values():
        for f in (families or (s.family,)):
            if in_families(s, (f,)):
                by_family.setdefault(f, []).append(s)
    for family, scenarios in sorted(by_family.items()):
        reasons = []
        for s in scenarios:
            why = ineligible(s) or (check(s) if check is not None else None)
            if why is None:
                break
            bug = s.known_bug
            if version is not None and bug is not None and bug.affects(version):
                why += (f"; and QEMU {'.'.join(map(str, version))} has the known bug '{bug.summary}' "
                        f"({bug.url})")
            reasons.append(why)
        else:
            common = max(set(reasons), key=reasons.count)
            out[family] = common if reasons.count(common) == len(reasons) else \
                f"{common} (and {len(set(reasons)) - 1} other reason(s))"
    return out
