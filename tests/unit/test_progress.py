"""ProgressSampler, /proc CPU accounting and the guest-observed stall, on recorded data.

Samples: query-migrate replies recorded from a Linux-guest precopy (QEMU 10.0.2,
TCG, 64 MiB/s, 300 ms downtime limit) and the two serial logs of that run.
"""
import json
import threading
from pathlib import Path

import pytest

from harness.migration import progress
from harness.migration.progress import (CpuTracker, ProgressSampler, cpu_percent, parse_stat,
                                        sample_from, summarize, thread_role)
from harness.migration.stall import guest_stall, guest_stall_from_logs, heartbeats

SAMPLES = Path(__file__).parent / "samples"
REPLIES = json.loads((SAMPLES / "query-migrate-precopy-linux.json").read_text())


class FakeMachine:
    """Replays recorded query-migrate replies; the last one repeats."""

    name = "source"
    host = None  # not a LocalHost: no /proc reading

    def __init__(self, tmp_path, replies, running=True):
        self.artifacts = tmp_path / "test" / "source"
        self.replies = list(replies)
        self.running = running
        self.calls = 0
        self.lock = threading.Lock()

    def is_running(self):
        return self.running

    def try_cmd(self, command, args=None, timeout=5.0):
        assert command == "query-migrate"
        with self.lock:
            self.calls += 1
            r = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(r, Exception):
            raise r
        return r


def run_sampler(m, **kw):
    s = ProgressSampler(m, interval=0.001, **kw).start()
    s._thread.join(10)
    assert not s._thread.is_alive()
    s.stop()
    return s


def test_sample_keeps_qemu_figures_under_flat_names():
    s = sample_from(REPLIES[-1])
    assert s["status"] == "completed"
    assert s["downtime_ms"] == REPLIES[-1]["downtime"]
    assert s["mbps"] == REPLIES[-1]["ram"]["mbps"]
    assert s["transferred"] == REPLIES[-1]["ram"]["transferred"]
    assert s["dirty_sync_count"] == REPLIES[-1]["ram"]["dirty-sync-count"]
    assert "expected_downtime_ms" not in s  # absent keys are dropped, not None
    active = sample_from(REPLIES[5])
    assert active["status"] == "active" and active["expected_downtime_ms"] == 300
    assert sample_from({}) == {"status": "none"}
    assert sample_from({"status": "failed", "error-desc": "boom"})["error"] == "boom"


def test_sampler_replays_a_migration_and_stops_on_completed(tmp_path):
    m = FakeMachine(tmp_path, REPLIES)
    s = run_sampler(m)
    assert s.ended == "completed"
    assert m.calls == len(REPLIES)  # stopped at the terminal status, no extra queries
    statuses = [x["status"] for x in s.samples]
    assert statuses == ["active"] * (len(REPLIES) - 2) + ["completed"]  # the idle {} is skipped
    elapsed = [x["elapsed_s"] for x in s.samples]
    assert elapsed == sorted(elapsed)
    written = json.loads((tmp_path / "test" / "progress.json").read_text())
    assert written == s.samples
    summary = json.loads((tmp_path / "test" / "metrics.json").read_text())["progress"]
    assert summary["samples"] == len(s.samples) and summary["ended"] == "completed"
    assert summary["peak_mbps"] == max(r["ram"]["mbps"] for r in REPLIES if "ram" in r)


def test_a_leftover_terminal_status_does_not_end_sampling(tmp_path):
    old, new = dict(REPLIES[-1]), dict(REPLIES[-1], **{"total-time": 1})
    m = FakeMachine(tmp_path, [old, old, {"status": "setup"}, REPLIES[5], new])
    s = run_sampler(m)
    assert [x["status"] for x in s.samples] == ["setup", "active", "completed"]
    assert s.samples[-1]["total_time_ms"] == 1


def test_monitor_gone_or_qemu_dead_ends_sampling(tmp_path):
    s = run_sampler(FakeMachine(tmp_path, [REPLIES[5], {"error": "x: connection lost"}]))
    assert s.ended == "monitor gone" and len(s.samples) == 1
    s = run_sampler(FakeMachine(tmp_path, REPLIES, running=False))
    assert s.ended == "qemu exited" and s.samples == []


def test_an_unexpected_error_never_reaches_the_test(tmp_path):
    s = run_sampler(FakeMachine(tmp_path, [REPLIES[5], RuntimeError("surprise")]))
    assert s.ended == "sampler error: RuntimeError: surprise"
    assert len(s.samples) == 1
    assert (tmp_path / "test" / "progress.json").exists()


def test_stop_ends_a_migration_that_never_finishes(tmp_path):
    s = ProgressSampler(FakeMachine(tmp_path, [REPLIES[5]]), interval=0.01).start()
    s.stop()
    assert s.ended == "stopped" and not s._thread.is_alive()
    with pytest.raises(ValueError):
        ProgressSampler(FakeMachine(tmp_path, REPLIES), interval=0)


# ---------------------------------------------------------------- /proc
STAT = ("{tid} ({comm}) S 1 {tid} {tid} 0 -1 4194560 1234 0 0 0 {ut} {st} 0 0 20 0 7 0 "
        "12345 1000000 100 18446744073709551615 0 0 0 0 0 0 0 4096 0 0 0 0 -1 0 0 0 0 0 0")


def fake_proc(root: Path, pid: int, threads: dict[int, tuple[str, int, int]]):
    base = root / str(pid)
    if base.exists():
        import shutil
        shutil.rmtree(base)
    (base / "task").mkdir(parents=True)
    ut = sum(u for _, u, _ in threads.values())
    st = sum(s for _, _, s in threads.values())
    (base / "stat").write_text(STAT.format(tid=pid, comm="qemu-system-x86", ut=ut, st=st))
    for tid, (comm, u, s) in threads.items():
        (base / "task" / str(tid)).mkdir()
        (base / "task" / str(tid) / "stat").write_text(STAT.format(tid=tid, comm=comm, ut=u, st=s))


def test_parse_stat_handles_spaces_and_parentheses_in_comm():
    tick = progress.CLK_TCK
    assert parse_stat(STAT.format(tid=7, comm="CPU 0/TCG", ut=3 * tick, st=tick)) == ("CPU 0/TCG", 4.0)
    assert parse_stat(STAT.format(tid=7, comm="a) (b", ut=tick, st=0))[0] == "a) (b"
    assert parse_stat("garbage") is None


@pytest.mark.parametrize("comm,tid,role", [
    ("CPU 0/TCG", 11, "vcpu"), ("CPU 12/KVM", 11, "vcpu"),
    ("live_migration", 11, "migration"), ("mig/src/main", 11, "migration"),
    ("mig/src/rp-thr", 11, "migration"),
    ("mig/src/send_0", 11, "multifd"), ("multifdsend_3", 11, "multifd"),
    ("qemu-system-x86", 10, "main"), ("worker", 11, "other"), ("IO mon_iothread", 11, "other"),
])
def test_thread_roles(comm, tid, role):
    assert thread_role(comm, tid, pid=10) == role


def test_cpu_tracker_keeps_the_time_of_threads_that_exited(tmp_path):
    tick = progress.CLK_TCK
    fake_proc(tmp_path, 10, {10: ("qemu-system-x86", tick, 0), 11: ("CPU 0/TCG", 2 * tick, 0),
                             12: ("mig/src/main", tick, tick), 13: ("mig/src/send_0", tick, 0)})
    t = CpuTracker(10, proc=tmp_path)
    a = t.read()
    assert a["roles"] == {"main": 1.0, "vcpu": 2.0, "migration": 2.0, "multifd": 1.0}
    assert a["threads"]["CPU 0/TCG"] == 2.0 and a["process_s"] == 6.0
    # The migration thread exits at completion; the vCPU goes on.
    fake_proc(tmp_path, 10, {10: ("qemu-system-x86", tick, 0), 11: ("CPU 0/TCG", 4 * tick, 0)})
    b = t.read()
    assert b["roles"]["migration"] == 2.0 and b["roles"]["vcpu"] == 4.0
    import shutil
    shutil.rmtree(tmp_path / "10")
    assert t.read() is None


def test_cpu_percent_and_summary_from_cpu_samples():
    samples = [{"elapsed_s": 0.0, "status": "active", "mbps": 10,
                "cpu": {"process_s": 1.0, "roles": {"vcpu": 1.0}}},
               {"elapsed_s": 0.5, "status": "active", "mbps": 800,
                "cpu": {"process_s": 1.5, "roles": {"vcpu": 1.25, "migration": 0.2}}},
               {"elapsed_s": 1.0, "status": "completed", "mbps": 400,
                "cpu": {"process_s": 2.0, "roles": {"vcpu": 1.5, "migration": 0.3}}}]
    assert cpu_percent(samples) == [(0.5, 100.0), (1.0, 100.0)]
    assert cpu_percent(samples, "vcpu") == [(0.5, 50.0), (1.0, 50.0)]
    assert cpu_percent(samples, "migration") == [(0.5, 40.0), (1.0, 20.0)]
    s = summarize(samples, "completed")
    assert s["peak_mbps"] == 800 and s["samples"] == 3
    assert s["cpu_s"] == {"migration": 0.3, "vcpu": 0.5, "process": 1.0}
    assert s["sampled_wall_s"] == 1.0
    assert summarize([])["peak_mbps"] is None


# ---------------------------------------------------------------- guest stall
def test_guest_stall_from_a_recorded_linux_precopy():
    src = SAMPLES / "linux-precopy-src.serial.log"
    dst = SAMPLES / "linux-precopy-dst.serial.log"
    st = guest_stall_from_logs(src, dst)
    assert st.src_last_seq == 34 and st.dst_first_seq == 35
    assert st.interval_ms == 100 and st.missing == 0
    # The destination sat paused for the RAM compare for seconds: the guest clock
    # stood still, so the boundary step is one heartbeat interval, not the pause.
    assert st.boundary_gap_ms == 101
    assert st.max_gap_ms == 112 and st.gap_after_seq == 32
    # src_offset skips output before the migration
    text = src.read_bytes()
    later = guest_stall_from_logs(src, dst, src_offset=text.index(b"HB 30 "))
    assert later.heartbeats == 7


def test_guest_stall_synthetic_cases():
    src = "noise\nHB 1 1000\nHB 2 1100\r\nHB 3 1200\nHB 4 12"     # last line cut mid-write
    dst = "HB 3 1200\nHB 4 1900\nHB 6 2100\nHB 7 2200\n"          # 3 seen twice, 5 lost
    st = guest_stall(src, dst)
    assert heartbeats(src) == [(1, 1000), (2, 1100), (3, 1200)]
    assert (st.max_gap_ms, st.gap_after_seq) == (700, 3)
    assert st.src_last_seq == 3 and st.dst_first_seq == 4 and st.boundary_gap_ms == 700
    assert st.missing == 1 and st.heartbeats == 6
    assert guest_stall("HB 1 5\n", "") is None
    only_dst = guest_stall("", "HB 1 0\nHB 2 100\n")
    assert only_dst.src_last_seq is None and only_dst.boundary_gap_ms is None
    assert guest_stall_from_logs(Path("/nonexistent/a"), Path("/nonexistent/b")) is None
