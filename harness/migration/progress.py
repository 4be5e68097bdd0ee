"""ProgressSampler: query-migrate and QEMU's CPU use, sampled while a migration runs.

A background thread asks the source for query-migrate every `interval` seconds
and reads the QEMU process's and each thread's CPU time from /proc (local hosts
only), so a report can draw throughput, remaining RAM, dirty rate and which
threads burned the CPU (vCPUs, the migration thread, multifd senders).

Start it before `migrate`; it stops by itself on a terminal status
(completed/failed/cancelled) seen after the migration began, when QEMU dies or
its monitor goes away, or on stop(). It never raises into the test. stop()
writes progress.json (the list of samples), phases.json (the MIGRATION status
changes and MIGRATION_PASS events, the report's phase markers, with the dirty rate
each pass implies) and a summary into metrics.json.

Sampling adapts to the migration's length so even a 0.3 s migration gets >= 10
points: the interval is elapsed/40, between 5 ms and 200 ms (QEMU answers no query during
stop-and-copy, so the samples come from the phases before it). A status change or a new
pass (events) triggers a sample at once.

    with ProgressSampler(pair.src):
        drivers.precopy(pair)
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from harness.migration.metrics import write_metrics

TERMINAL = frozenset({"completed", "failed", "cancelled"})
IDLE = frozenset({"", "none"})
MAX_SECONDS = 1800.0          # a forgotten sampler ends anyway
MIN_INTERVAL = 0.005
MAX_INTERVAL = 0.2
POINTS = 40                   # aim: this many samples over any migration's length so far
CPU_EVERY = 0.02
PHASE_EVENTS = frozenset({"MIGRATION", "MIGRATION_PASS"})
QUERY_TIMEOUT = 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

_ROLES = (
    ("vcpu", re.compile(r"^CPU \d+/\w+$")),
    ("multifd", re.compile(r"^(mig/src/send_\d+|multifdsend_\d+|mig/dst/recv_\d+|multifdrecv_\d+)$")),
    ("migration", re.compile(r"^(live_migration|mig/.*|postcopy/.*|return path)$")),
)


def thread_role(comm: str, tid: int, pid: int) -> str:
    """vcpu, migration, multifd, main (the main loop thread) or other."""
    for role, rx in _ROLES:
        if rx.match(comm):
            return role
    return "main" if tid == pid else "other"


def parse_stat(text: str) -> tuple[str, float] | None:
    """/proc/.../stat -> (comm, utime+stime seconds). comm may hold spaces and ')'."""
    try:
        head, _, rest = text.rpartition(")")
        comm = head.split("(", 1)[1]
        fields = rest.split()
        return comm, (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (IndexError, ValueError):
        return None


def read_threads(pid: int, proc: Path = Path("/proc")) -> tuple[float, dict[int, tuple[str, float]]] | None:
    """(process CPU seconds, {tid: (comm, CPU seconds)}); None once the process is gone."""
    base = proc / str(pid)
    try:
        total = parse_stat((base / "stat").read_text())
        tids = os.listdir(base / "task")
    except OSError:
        return None
    if total is None:
        return None
    threads: dict[int, tuple[str, float]] = {}
    for t in tids:
        try:
            st = parse_stat((base / "task" / t / "stat").read_text())
        except OSError:
            continue  # the thread ended between listdir and read
        if st is not None and t.isdigit():
            threads[int(t)] = st
    return total[1], threads


class CpuTracker:
    """Per-thread CPU over time. A thread that exited (the migration thread at
    completion) keeps its last reading, so per-role sums never go backwards."""

    def __init__(self, pid: int, proc: Path = Path("/proc")):
        self.pid = pid
        self.proc = proc
        self.seen: dict[int, tuple[str, float]] = {}

    def read(self) -> dict | None:
        got = read_threads(self.pid, self.proc)
        if got is None:
            return None
        process_s, live = got
        self.seen.update(live)
        threads: dict[str, float] = {}
        roles: dict[str, float] = {}
        for tid, (comm, secs) in self.seen.items():
            threads[comm] = round(threads.get(comm, 0.0) + secs, 3)
            role = thread_role(comm, tid, self.pid)
            roles[role] = round(roles.get(role, 0.0) + secs, 3)
        return {"process_s": process_s, "threads": threads, "roles": roles}


def sample_from(info: dict) -> dict:
    """The fields we keep from one query-migrate reply (QEMU's names, flattened)."""
    ram = info.get("ram") or {}
    s: dict[str, Any] = {
        "status": info.get("status", "none"),
        "total_time_ms": info.get("total-time"),
        "setup_time_ms": info.get("setup-time"),
        "downtime_ms": info.get("downtime"),
        "expected_downtime_ms": info.get("expected-downtime"),
        "cpu_throttle_percentage": info.get("cpu-throttle-percentage"),
        "transferred": ram.get("transferred"),
        "remaining": ram.get("remaining"),
        "total": ram.get("total"),
        "mbps": ram.get("mbps"),                      # megabits/s
        "dirty_pages_rate": ram.get("dirty-pages-rate"),
        "dirty_sync_count": ram.get("dirty-sync-count"),
        "pages_per_second": ram.get("pages-per-second"),
        "multifd_bytes": ram.get("multifd-bytes"),
        "postcopy_requests": ram.get("postcopy-requests"),
    }
    if "error-desc" in info:
        s["error"] = info["error-desc"]
    return {k: v for k, v in s.items() if v is not None}


class ProgressSampler:
    def __init__(self, machine, out_dir: Path | None = None, interval: float | None = None,
                 max_seconds: float = MAX_SECONDS):
        """interval None: adaptive (elapsed/POINTS, between MIN_ and MAX_INTERVAL)."""
        if interval is not None and interval <= 0:
            raise ValueError(f"interval {interval} must be > 0")
        self.machine = machine
        self.out_dir = Path(out_dir) if out_dir is not None else Path(machine.artifacts).parent
        self.interval = interval
        self.max_seconds = max_seconds
        self.samples: list[dict] = []
        self.ended: str | None = None       # why sampling ended
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._cpu: CpuTracker | None = None
        self._cpu_at = -1e9
        self._events = getattr(getattr(machine, "qmp", None), "events", None)
        self._mark = 0
        self.phases: list[dict] = []

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> "ProgressSampler":
        self._t0 = time.monotonic()
        if self._events is not None:
            self._mark = self._events.mark()
        if _is_local(self.machine) and self.machine.is_running():
            self._cpu = CpuTracker(self.machine.pid)
        self._thread = threading.Thread(target=self._run, name=f"progress-{self.machine.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[dict]:
        """Stop (if still running), write progress.json and the summary; never raises."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(QUERY_TIMEOUT + (self.interval or MAX_INTERVAL) + 5)
        self.ended = self.ended or "stopped"
        try:
            self.write()
        except OSError:
            pass
        return self.samples

    def __enter__(self) -> "ProgressSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- sampling -----------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 - sampling must never break the test
            self.ended = f"sampler error: {type(exc).__name__}: {exc}"

    def _loop(self) -> None:
        started = False
        first_status = None
        while not self._stop.is_set():
            if time.monotonic() - self._t0 > self.max_seconds:
                self.ended = f"max {self.max_seconds:.0f}s"
                return
            if not self.machine.is_running():
                self.ended = "qemu exited"
                return
            s = self.sample_once()
            if s is None:
                self.ended = "monitor gone"
                return
            status = s["status"]
            first_status = status if first_status is None else first_status
            # A terminal status left over from an earlier migration does not count.
            started = started or status not in TERMINAL | IDLE or status != first_status
            if started and status not in IDLE:
                self.samples.append(s)
                if status in TERMINAL:
                    self.ended = status
                    return
            self._pause()

    def _next_interval(self) -> float:
        if self.interval is not None:
            return self.interval
        return min(MAX_INTERVAL, max(MIN_INTERVAL, (time.monotonic() - self._t0) / POINTS))

    def _pause(self) -> None:
        """Sleep one interval, or less when a phase event arrives (then sample at once)."""
        wait = self._next_interval()
        if self._events is None:
            self._stop.wait(wait)
            return
        seen = self._events.mark()
        self._events.wait_for(lambda e: e.name in PHASE_EVENTS, time.monotonic() + wait, start=seen,
                              alive=lambda: not self._stop.is_set())

    def sample_once(self) -> dict | None:
        """One sample, or None when the monitor no longer answers."""
        t = time.time()
        info = self.machine.try_cmd("query-migrate", timeout=QUERY_TIMEOUT)
        if not isinstance(info, dict) or "error" in info and "status" not in info:
            return None
        s = {"t": round(t, 4), "elapsed_s": round(time.monotonic() - self._t0, 4),
             **sample_from(info)}
        # /proc reads cost more than the query: at most every CPU_EVERY seconds, and on
        # a terminal status (the last CPU figures).
        now = time.monotonic()
        if self._cpu is not None and (now - self._cpu_at >= CPU_EVERY or s["status"] in TERMINAL):
            cpu = self._cpu.read()
            if cpu is not None:
                s["cpu"] = cpu
                self._cpu_at = now
        return s

    # -- output ---------------------------------------------------------------
    def write(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "progress.json"
        path.write_text(json.dumps(self.samples, indent=1) + "\n")
        self.phases = phases_from(self._phase_events(), self.samples)
        (self.out_dir / "phases.json").write_text(json.dumps(self.phases, indent=1) + "\n")
        summary = summarize(self.samples, self.ended)
        summary["passes"] = sum(1 for p in self.phases if p["event"] == "MIGRATION_PASS")
        write_metrics(self.out_dir / "metrics.json", {"progress": summary})
        return path

    def _phase_events(self) -> list[tuple[float, str, dict]]:
        if self._events is None:
            return []
        with self._events.cond:
            evs = list(self._events.events[self._mark:])
        return [(round(e.received - self._t0, 4), e.name, dict(e.data)) for e in evs
                if e.name in PHASE_EVENTS]


def phases_from(events: list[tuple[float, str, dict]], samples: list[dict]) -> list[dict]:
    """Phase markers: [{elapsed_s, event, status | pass}], each pass with the dirty rate it
    implies: how much `remaining` jumped at the next pass's dirty sync (pages the guest
    dirtied that were not already waiting), over this pass's duration. A lower bound;
    QEMU's own dirty-pages-rate stays 0 in migrations shorter than its 1 s period."""
    out = [{"elapsed_s": t, "event": name,
            **({"status": data.get("status")} if name == "MIGRATION" else {"pass": data.get("pass")})}
           for t, name, data in events]
    passes = [p for p in out if p["event"] == "MIGRATION_PASS"]
    with_rem = [s for s in samples if "remaining" in s]
    for cur, nxt in zip(passes, passes[1:]):
        before = [s for s in with_rem if s["elapsed_s"] < nxt["elapsed_s"]]
        after = next((s for s in with_rem if s["elapsed_s"] >= nxt["elapsed_s"]
                      and s.get("status") == "active"), None)
        dt = nxt["elapsed_s"] - cur["elapsed_s"]
        if before and after is not None and dt > 0:
            jump = after["remaining"] - before[-1]["remaining"]
            cur["dirtied_bytes_per_s"] = round(max(jump, 0) / dt)
    return out


def summarize(samples: list[dict], ended: str | None = None) -> dict:
    """Peaks and CPU use over the sampled migration (for metrics.json and trends)."""
    def peak(key):
        vals = [s[key] for s in samples if isinstance(s.get(key), (int, float))]
        return max(vals) if vals else None
    out: dict[str, Any] = {"samples": len(samples), "ended": ended,
                           "peak_mbps": peak("mbps"), "peak_dirty_pages_rate": peak("dirty_pages_rate"),
                           "max_cpu_throttle_percentage": peak("cpu_throttle_percentage"),
                           "dirty_sync_count": peak("dirty_sync_count")}
    cpus = [s["cpu"] for s in samples if "cpu" in s]
    if len(cpus) >= 2:
        wall = samples[-1]["elapsed_s"] - next(s for s in samples if "cpu" in s)["elapsed_s"]
        roles = set(cpus[0]["roles"]) | set(cpus[-1]["roles"])
        out["cpu_s"] = {r: round(cpus[-1]["roles"].get(r, 0.0) - cpus[0]["roles"].get(r, 0.0), 3)
                        for r in sorted(roles)}
        out["cpu_s"]["process"] = round(cpus[-1]["process_s"] - cpus[0]["process_s"], 3)
        out["sampled_wall_s"] = round(wall, 3)
    return out


def cpu_percent(samples: list[dict], role: str | None = None) -> list[tuple[float, float]]:
    """(elapsed_s, CPU % of one core) between consecutive samples; role None = process."""
    out = []
    prev = None
    for s in samples:
        cpu = s.get("cpu")
        if cpu is None:
            continue
        val = cpu["process_s"] if role is None else cpu["roles"].get(role, 0.0)
        if prev is not None:
            dt = s["elapsed_s"] - prev[0]
            if dt > 0:
                out.append((s["elapsed_s"], round(100.0 * (val - prev[1]) / dt, 1)))
        prev = (s["elapsed_s"], val)
    return out


def _is_local(machine) -> bool:
    from harness.hosts.local import LocalHost
    return isinstance(getattr(machine, "host", None), LocalHost)
