"""ProgressSampler around a real precopy: samples while the migration runs, stops on its own."""
import json

import pytest

from harness.migration import drivers
from harness.migration.progress import ProgressSampler, cpu_percent

pytestmark = pytest.mark.qemu

MiB = 1 << 20


def test_sampler_follows_a_real_precopy(migration_pair):
    src = migration_pair.src
    # 96 MiB/s and a 1.5 s downtime limit: a first pass of ~128 MB (over a second)
    # before the ~99 MiB the boot sector keeps dirty fit the downtime, so there is a
    # curve to sample at 0.1 s.
    params = {"max-bandwidth": 96 * MiB, "downtime-limit": 1500}
    with ProgressSampler(src, interval=0.1) as sampler:
        res = drivers.precopy(migration_pair, params=params)
        assert sampler._thread.join(5) is None and not sampler._thread.is_alive(), \
            "sampler did not stop on 'completed' by itself"
    assert res.metrics.status == "completed"
    assert sampler.ended == "completed"
    samples = sampler.samples
    statuses = [s["status"] for s in samples]
    assert statuses[-1] == "completed" and "active" in statuses
    active = [s for s in samples if s["status"] == "active"]
    assert len(active) >= 3, statuses
    assert all(s["mbps"] >= 0 and s["transferred"] >= 0 for s in active)
    assert any(s.get("remaining", 0) > 0 for s in active)
    # (a sample taken at once on the MIGRATION 'setup' event has no RAM figures yet)
    transferred = [s["transferred"] for s in samples if "transferred" in s]
    assert transferred == sorted(transferred)
    assert samples[-1]["downtime_ms"] == res.metrics.downtime_ms
    # CPU from /proc (QEMU runs with debug-threads=on): the TCG vCPU thread and the
    # migration thread ('mig/src/main' in 10.x, 'live_migration' before) show up, the
    # latter kept after it exited at completion.
    threads = samples[-1]["cpu"]["threads"]
    assert "CPU 0/TCG" in threads, threads
    assert {"mig/src/main", "live_migration"} & set(threads), threads
    assert samples[-1]["cpu"]["roles"]["vcpu"] > 0
    assert cpu_percent(samples) and cpu_percent(samples, "migration")
    # Files: progress.json beside metrics.json, summary merged into metrics.json.
    test_dir = src.artifacts.parent
    assert json.loads((test_dir / "progress.json").read_text()) == samples
    metrics = json.loads((test_dir / "metrics.json").read_text())
    assert metrics["migration"]["status"] == "completed"
    assert metrics["progress"]["samples"] == len(samples)
    assert metrics["progress"]["peak_mbps"] > 0
    assert metrics["progress"]["cpu_s"]["vcpu"] > 0 and "migration" in metrics["progress"]["cpu_s"]
    drivers.prove_integrity(migration_pair)


def test_sampler_ends_when_qemu_dies(migration_pair):
    src = migration_pair.src
    sampler = ProgressSampler(src, interval=0.05).start()
    src.expect_exit((-9,))
    src.kill(9)
    sampler._thread.join(10)
    assert not sampler._thread.is_alive()
    assert sampler.ended in ("qemu exited", "monitor gone")
    sampler.stop()  # still fine after the fact, never raises
    migration_pair.dst.expect_exit((0, 1))
