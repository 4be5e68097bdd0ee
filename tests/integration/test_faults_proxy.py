"""harness.faults.proxy in a real migration path (QEMU on both ends)."""
import time

import pytest

from harness.faults.proxy import TcpProxy
from harness.migration import drivers
from harness.migration.pair import make_pair
from harness.migration.states import wait_status
from harness.migration.transports import Transport

pytestmark = pytest.mark.qemu


def _port(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1])


def _transferred(m) -> int:
    return m.cmd("query-migrate").get("ram", {}).get("transferred", 0)


def test_cut_fails_a_precopy_on_both_sides_quickly(harness_run, base_spec):
    pair = make_pair(harness_run, base_spec)
    src, dst = pair.src, pair.dst
    uri = drivers.prepare(pair, Transport.TCP, converge=False)
    dst.expect_exit((1,), r"load of migration failed|Failed to load|Input/output error")
    with TcpProxy(("127.0.0.1", _port(uri))) as proxy:
        mark = src.qmp.events.mark()
        src.cmd("migrate", {"uri": proxy.uri})
        deadline = time.monotonic() + 30
        while _transferred(src) < 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        assert proxy.cut() == 1
        wait_status(src, {"failed"}, since=mark, timeout=10, ungoals=set())
        out = dst.wait_exit(10)
        took = time.monotonic() - t0
    assert out is not None and out.ok, out
    assert took < 5, f"both sides noticed the cut only after {took:.1f}s"
    assert src.status() == "running"   # a failed precopy leaves the guest on the source


def test_throttle_bounds_the_migration_rate(harness_run, base_spec):
    pair = make_pair(harness_run, base_spec)
    src, dst = pair.src, pair.dst
    # QEMU itself unlimited, but never converging (1 ms downtime): the proxy is the limit,
    # and no stop-and-copy (which holds the BQL, so migrate_cancel would wait for it).
    uri = drivers.prepare(pair, Transport.TCP, converge=False,
                          params={"max-bandwidth": 1_000_000_000, "downtime-limit": 1})
    dst.expect_exit((1,), r"load of migration failed|Failed to load|Input/output error|"
                          r"Unable to read")
    rate = 8_000_000
    with TcpProxy(("127.0.0.1", _port(uri))) as proxy:
        proxy.throttle(rate)
        proxy.delay(2)
        mark = src.qmp.events.mark()
        src.cmd("migrate", {"uri": proxy.uri})
        time.sleep(0.5)   # past the socket buffers' initial fill
        b0, t0 = proxy.stats.bytes_up, time.monotonic()
        time.sleep(2.0)
        b1, t1 = proxy.stats.bytes_up, time.monotonic()
        measured = (b1 - b0) / (t1 - t0)
        src.cmd("migrate_cancel")
        wait_status(src, {"cancelled"}, since=mark, timeout=10, ungoals=set())
        dst.wait_exit(10)
    assert 0.6 * rate <= measured <= 1.15 * rate, f"{measured:.0f} B/s through a {rate} B/s throttle"
    assert src.status() == "running"   # the guest stayed on the source
