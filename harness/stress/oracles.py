"""Chaos oracles: small checks composed into one verdict (Jepsen's checkers).

After a plan ran, the migration is settled (converging knobs, a paused
postcopy recovered once, a pre-switchover continued) and then judged:

- crash: any signal or assertion on either side (from the exits; outranks all);
- hang: a live QEMU that stops answering, or a migration stuck out of a
  terminal state;
- lost VM: completed but the destination cannot run the guest, or failed /
  cancelled and the source lost it;
- agreement: no split brain, no 'completed' into a dead end;
- state machine: each side's MIGRATION events follow QEMU's migration state
  machine (rules that must never break, not a model of every path);
- stderr: internal-error lines (GLib criticals, "internal error") are violations.
"""
from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass, field

from harness.guest import integrity
from harness.migration import tuning
from harness.migration.pair import Pair
from harness.qemu.machine import Machine
from harness.qemu.spec import GuestKind

SETTLE_TIMEOUT = 40.0
STATUS_TIMEOUT = 5.0
POLL_S = 0.01          # status polls while settling: a query costs ~1 ms, a late look costs the attempt
TERMINAL = frozenset({"completed", "failed", "cancelled"})
NO_REPLY = "no-reply"
# Knobs that a plan may have turned to starve the migration; settling resets them.
SETTLE_PARAMS = {"max-bandwidth": tuning.CONVERGE_BANDWIDTH, "downtime-limit": tuning.CONVERGE_DOWNTIME_MS,
                 "max-postcopy-bandwidth": 0, "avail-switchover-bandwidth": 0}


class VerdictKind(enum.Enum):
    CLEAN = "clean"
    CRASH = "crash"
    HANG = "hang"
    LOST_VM = "lost-vm"
    INCONSISTENT = "inconsistent"
    STATE_MACHINE = "state-machine"
    STDERR = "stderr"


@dataclass
class Verdict:
    kind: VerdictKind
    signature: str
    detail: str = ""
    core: object = None
    applied: list = field(default_factory=list)    # (step, what happened)
    notes: list = field(default_factory=list)      # observations worth counting
    coverage: list = field(default_factory=list)   # coverage tuples (harness.stress.coverage)
    timing: dict = field(default_factory=dict)     # seconds per phase of the attempt

    @property
    def ok(self) -> bool:
        return self.kind is VerdictKind.CLEAN


class PairState:
    """What the plan did to the pair, which changes what the oracles may expect."""

    def __init__(self, pair: Pair, proxy=None):
        self.pair = pair
        self.proxy = proxy
        self.killed: set[str] = set()     # sides the plan shut down or killed on purpose
        self.snapshot_touched: set[str] = set()  # savevm/loadvm/snapshot jobs: status is theirs
        self.reset: set[str] = set()      # system_reset / loadvm: the guest restarted
        self.detached: set[str] = set()   # sides whose migration outcome the plan spoiled (a
        #                                   file load it took over or cancelled): not judged

    def machine(self, side: str) -> Machine:
        return self.pair.src if side == "src" else self.pair.dst


def status(m: Machine) -> str | None:
    """Migration status; None if the machine is dead, NO_REPLY if it does not answer."""
    if not m.is_running():
        return None
    r = m.qmp.try_cmd("query-migrate", timeout=STATUS_TIMEOUT)
    if r.get("timeout"):
        return NO_REPLY
    return r.get("status", "none") if "error" not in r else None


def settle(st: PairState, deadline: float, recover=None) -> str | None:
    """Let the migration finish: converge, continue a pre-switchover, recover a
    paused postcopy once (recover() does it), wait for a terminal state."""
    src = st.pair.src
    if src.is_running():
        r = src.qmp.try_cmd("migrate-set-parameters", SETTLE_PARAMS, timeout=STATUS_TIMEOUT)
        if r.get("timeout"):
            return NO_REPLY      # judged as a hang at once: no second timeout on a dead monitor
    result, peer_gone_cut, recovered = None, False, False
    while time.monotonic() < deadline:
        if st.proxy is not None and not peer_gone_cut and not st.pair.dst.is_running():
            # A dead peer's kernel resets the connection; the userspace proxy keeps
            # accepting the source's bytes unless told to do the same.
            st.proxy.cut(refuse_new=True)
            peer_gone_cut = True
        result = status(src)
        if result is None or result == NO_REPLY or result in TERMINAL:
            return result
        if result == "pre-switchover":
            src.qmp.try_cmd("migrate-continue", {"state": "pre-switchover"})
        if result == "postcopy-paused":
            if recovered or recover is None or not st.pair.dst.is_running():
                return result        # paused and waiting for a recovery: a legal resting state
            recovered = True
            recover()
        time.sleep(POLL_S)
    return result


def _wait_dst_terminal(dst: Machine, deadline: float) -> str | None:
    result = None
    while time.monotonic() < deadline:
        result = status(dst)
        if result is None or result in TERMINAL:
            return result
        time.sleep(POLL_S)
    return result


def last_stderr_line(m: Machine) -> str:
    lines = [ln for ln in m.stderr_text().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no stderr)"


def _linux(m: Machine) -> bool:
    return m.spec.guest.kind is GuestKind.LINUX


def guest_alive(m: Machine, timeout: float = 15.0) -> str | None:
    """Continue m if needed and see the guest progress (a boot-sector pass, a Linux
    heartbeat); None if fine."""
    st = m.qmp.try_cmd("query-status", timeout=STATUS_TIMEOUT)
    if "error" in st:
        return f"{m.name} does not answer query-status"
    if st["status"] not in ("running",):
        r = m.qmp.try_cmd("cont", timeout=STATUS_TIMEOUT)
        if "error" in r:
            return f"{m.name} cannot continue from '{st['status']}': {r['error'][:100]}"
    mark = m.serial.mark()
    if m.serial.wait_for(integrity.HB_RX if _linux(m) else rb"B", time.monotonic() + timeout, mark) is None:
        if not _linux(m) and _area_advances(m):
            return f"{m.name} guest runs (its memory advances) but its serial output stopped"
        return f"{m.name} guest made no progress in {timeout:.0f}s"
    return None


def _area_advances(m: Machine) -> bool:
    """Does the boot sector still make passes (the first page's counter moves), whatever
    its console says? Tells a silent UART from a stuck guest."""
    start, _ = integrity.bootblock_area(m)
    probe = m.run_dir / "probe.bin"
    seen = []
    for _ in range(2):
        r = m.qmp.try_cmd("pmemsave", {"val": start, "size": 1, "filename": str(probe)}, timeout=STATUS_TIMEOUT)
        if "error" in r:
            return False
        seen.append(m.host.read_file(probe))   # the QEMU's host (SFTP when remote)
        time.sleep(0.5)
    m.host.remove_file(probe)
    return seen[0] != seen[1]


def _answers(st: PairState, settled) -> Verdict | None:
    for side in ("src", "dst"):
        m = st.machine(side)
        if not m.is_running() or side in st.killed:
            continue
        if side == "src" and settled == NO_REPLY:
            r = {"error": "query-migrate got no reply while settling", "timeout": True}
        else:
            r = m.qmp.try_cmd("query-status", timeout=STATUS_TIMEOUT)
        if r.get("timeout"):
            m.declare_hang(f"{m.name}: query-status got no reply within {STATUS_TIMEOUT:.0f}s",
                           qmp_dead=True)
            return Verdict(VerdictKind.HANG, f"hang: {side} does not answer query-status", r["error"])
    return None


def judge(st: PairState, settled: str | None) -> Verdict | None:
    """Hang, lost VM and agreement (crashes are judged from the exits afterwards)."""
    v = _answers(st, settled)
    if v is not None:
        return v
    src, dst = st.pair.src, st.pair.dst
    if "src" in st.killed or "src" in st.snapshot_touched:
        return None  # the source is gone, or its migration status is the snapshot's
    if settled == "postcopy-paused":
        return None
    if settled is not None and settled != NO_REPLY and settled not in TERMINAL:
        src.declare_hang(f"{src.name}: migration stuck in '{settled}'")
        return Verdict(VerdictKind.HANG, f"hang: migration stuck in '{settled}'",
                       f"source status '{settled}' {SETTLE_TIMEOUT:.0f}s after the plan")
    if settled == "completed":
        if "dst" in st.killed or "dst" in st.snapshot_touched or "dst" in st.detached:
            return None
        dstat = _wait_dst_terminal(dst, time.monotonic() + 15.0)
        if not dst.is_running() or dstat == "failed":
            return Verdict(VerdictKind.LOST_VM, "lost-vm: source completed, destination failed to load",
                           f"destination: {last_stderr_line(dst)}")
        if dstat != "completed":
            return Verdict(VerdictKind.INCONSISTENT, f"inconsistent: source completed, destination '{dstat}'")
        problem = guest_alive(dst)
        if problem:
            if "serial output stopped" in problem:
                return Verdict(VerdictKind.LOST_VM, "lost-vm: destination serial output stopped after migration",
                               problem)
            return Verdict(VerdictKind.LOST_VM, "lost-vm: source completed, destination guest dead", problem)
        if "src" not in st.reset and "dst" not in st.reset:
            try:
                if _linux(dst):   # heartbeats resume, the in-guest verifier finds 0 bad pages
                    integrity.prove_linux_guest(dst, timeout=60.0)
                else:
                    integrity.prove_bootblock_pattern(dst)
            except integrity.IntegrityError as exc:
                return Verdict(VerdictKind.LOST_VM, "lost-vm: destination memory corrupt", str(exc))
        return None
    if settled in ("failed", "cancelled"):
        if dst.is_running() and "dst" not in st.killed:
            dst_st = dst.qmp.try_cmd("query-status", timeout=STATUS_TIMEOUT).get("status")
            if dst_st == "running" and "dst" not in st.snapshot_touched:
                return Verdict(VerdictKind.INCONSISTENT,
                               f"inconsistent: source {settled}, destination running the guest")
        problem = guest_alive(src)
        if problem:
            return Verdict(VerdictKind.LOST_VM, f"lost-vm: source {settled} and lost its guest", problem)
    return None


# ---------------------------------------------------------------- state machine
def state_machine_violation(statuses: list[str]) -> str | None:
    """First broken rule in one side's sequence of MIGRATION statuses, or None.

    Rules that hold on every path QEMU has (a new migration, or a savevm, which
    reuses the migration state and goes 'setup' -> 'completed', always restarts at
    'setup'): nothing leaves a terminal state except to 'setup'; 'cancelled' only
    follows 'cancelling'; 'completed' never follows 'cancelling' or 'none'.
    """
    prev = "none"
    for cur in statuses:
        if prev in TERMINAL and cur not in ("setup", prev):
            return f"'{prev}' -> '{cur}'"
        if cur == "cancelled" and prev not in ("cancelling", "cancelled"):
            return f"'{prev}' -> 'cancelled' without 'cancelling'"
        if cur == "completed" and prev in ("none", "cancelling"):
            return f"'{prev}' -> 'completed'"
        prev = cur
    return None


# ---------------------------------------------------------------- stderr
INTERNAL_ERROR = re.compile(r"(GLib(-GObject|-GIO)?-(CRITICAL|ERROR)|\binternal error\b|Bail out!)")


def stderr_violation(text: str) -> str | None:
    for line in text.splitlines():
        if INTERNAL_ERROR.search(line):
            return normalize_line(line)
    return None


def normalize_line(line: str) -> str:
    line = re.sub(r"^\S*qemu-system-\S+: ", "", line.strip())
    line = re.sub(r"0x[0-9a-fA-F]+|\b\d+\b", "N", line)
    return line[:160]


def final_verdict(run, verdict: Verdict | None) -> Verdict:
    """After every machine exited: a crash outranks what the oracles saw; an exit
    nobody declared (e.g. the source erroring out) is a lost VM."""
    crashes = [o for o in run.outcomes.values() if o.kind.name == "CRASH"]
    if crashes:
        o = crashes[0]
        return Verdict(VerdictKind.CRASH, o.signature, o.detail, core=o.core)
    if verdict is not None:
        return verdict
    unexpected = [o for o in run.outcomes.values() if not o.ok and o.kind.name != "KILLED"]
    if unexpected and unexpected[0].kind.name == "HANG":
        return Verdict(VerdictKind.HANG, unexpected[0].signature)
    if unexpected:
        o = unexpected[0]
        return Verdict(VerdictKind.LOST_VM, f"lost-vm: {o.signature}", o.detail)
    return Verdict(VerdictKind.CLEAN, "clean")
