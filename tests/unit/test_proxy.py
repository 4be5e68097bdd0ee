"""harness.faults.proxy against real loopback sockets (no QEMU)."""
import socket
import threading
import time

import pytest

from harness.faults.proxy import ProxyError, TcpProxy


class Sink:
    """A TCP server on 127.0.0.1:0: echo mode or count-bytes mode, one thread per client."""

    def __init__(self, echo: bool = True):
        self.echo = echo
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self.received = 0
        self.conns: list[socket.socket] = []
        self.errors: list[str] = []
        self._stop = False
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self):
        while not self._stop:
            try:
                c, _ = self.srv.accept()
            except OSError:
                continue
            self.conns.append(c)
            threading.Thread(target=self._client, args=(c,), daemon=True).start()

    def _client(self, c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                self.received += len(d)
                if self.echo:
                    c.sendall(d)
        except OSError as exc:
            self.errors.append(type(exc).__name__)

    def close(self):
        self._stop = True
        self._t.join(2)
        self.srv.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


def connect(proxy: TcpProxy) -> socket.socket:
    c = socket.create_connection(proxy.address, timeout=5)
    return c


def recv_exact(c: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        d = c.recv(n - len(buf))
        if not d:
            break
        buf += d
    return buf


def test_forwards_both_directions_and_counts(sink):
    with TcpProxy(("127.0.0.1", sink.port)) as p:
        assert p.port and p.port != sink.port and p.uri == f"tcp:127.0.0.1:{p.port}"
        c = connect(p)
        payload = bytes(range(256)) * 4096  # 1 MiB
        threading.Thread(target=c.sendall, args=(payload,), daemon=True).start()
        assert recv_exact(c, len(payload)) == payload
        assert p.stats.accepted == 1 and p.stats.bytes_up == len(payload) == p.stats.bytes_down
        c.close()


def test_several_connections(sink):
    with TcpProxy(("127.0.0.1", sink.port)) as p:
        cs = [connect(p) for _ in range(3)]
        for i, c in enumerate(cs):
            c.sendall(b"x%d" % i)
        assert [recv_exact(c, 2) for c in cs] == [b"x0", b"x1", b"x2"]
        assert p.wait_connections(3, 2)
        for c in cs:
            c.close()


def test_cut_resets_both_ends_quickly(sink):
    with TcpProxy(("127.0.0.1", sink.port)) as p:
        c = connect(p)
        c.sendall(b"hello")
        assert recv_exact(c, 5) == b"hello"
        t0 = time.monotonic()
        assert p.cut() == 1
        c.settimeout(2)
        with pytest.raises((ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            d = c.recv(10)
            if d == b"":
                raise ConnectionResetError("EOF")  # pragma: no cover - RST expected
        # The target side saw it too.
        deadline = time.monotonic() + 2
        while not sink.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.errors and sink.errors[0] in ("ConnectionResetError", "ConnectionAbortedError")
        assert time.monotonic() - t0 < 1.0
        assert p.stats.cuts == 1 and p.stats.active == 0
        # New connections still work after a plain cut.
        c2 = connect(p)
        c2.sendall(b"again")
        assert recv_exact(c2, 5) == b"again"
        c2.close()


def test_cut_refuse_new_then_heal(sink):
    with TcpProxy(("127.0.0.1", sink.port)) as p:
        p.cut(refuse_new=True)
        # The reset may land before connect() returns (a loaded machine) or at the first recv.
        with pytest.raises((ConnectionResetError, ConnectionAbortedError)):
            c = connect(p)
            c.settimeout(2)
            try:
                if c.recv(1) == b"":
                    raise ConnectionResetError("EOF")
            finally:
                c.close()
        p.heal()
        c = connect(p)
        c.sendall(b"ok")
        assert recv_exact(c, 2) == b"ok"
        c.close()


def test_delay_adds_latency_each_way(sink):
    with TcpProxy(("127.0.0.1", sink.port)) as p:
        c = connect(p)
        p.delay(100)
        t0 = time.monotonic()
        c.sendall(b"ping")
        assert recv_exact(c, 4) == b"ping"
        rtt = time.monotonic() - t0
        assert 0.19 <= rtt < 0.6, rtt
        p.delay(0)
        t0 = time.monotonic()
        c.sendall(b"pong")
        assert recv_exact(c, 4) == b"pong"
        assert time.monotonic() - t0 < 0.1
        c.close()


def test_delay_does_not_serialise_throughput(sink):
    """Latency is added per chunk in flight, not per chunk in sequence."""
    with TcpProxy(("127.0.0.1", sink.port)) as p:
        p.delay(50)
        c = connect(p)
        payload = b"z" * (4 << 20)
        t0 = time.monotonic()
        threading.Thread(target=c.sendall, args=(payload,), daemon=True).start()
        assert len(recv_exact(c, len(payload))) == len(payload)
        # 4 MiB in 64 KiB chunks would take >= 3.2 s if each chunk waited 50 ms in turn.
        assert time.monotonic() - t0 < 2.5
        c.close()


def test_throttle_limits_rate():
    s = Sink(echo=False)
    try:
        with TcpProxy(("127.0.0.1", s.port)) as p:
            p.throttle(200_000)
            c = connect(p)
            t0 = time.monotonic()
            threading.Thread(target=c.sendall, args=(b"t" * 300_000,), daemon=True).start()
            deadline = t0 + 5
            while s.received < 300_000 and time.monotonic() < deadline:
                time.sleep(0.01)
            took = time.monotonic() - t0
            assert s.received == 300_000
            assert 1.2 <= took <= 3.0, took   # 300 kB at 200 kB/s: ~1.5 s
            p.throttle(None)
            t0 = time.monotonic()
            c.sendall(b"u" * 1_000_000)
            while s.received < 1_300_000 and time.monotonic() < t0 + 5:
                time.sleep(0.01)
            assert time.monotonic() - t0 < 0.5
            c.close()
    finally:
        s.close()


def test_lifetime_stops_itself(sink):
    p = TcpProxy(("127.0.0.1", sink.port), lifetime=0.3).start()
    c = connect(p)
    deadline = time.monotonic() + 3
    while p.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not p.running and p.stopped_by_lifetime
    with pytest.raises(OSError):
        socket.create_connection(p.address, timeout=1).close()
    with pytest.raises(ProxyError):
        p.delay(1)
    p.stop()  # idempotent
    c.close()


def test_target_down_is_recorded_and_client_reset():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    with TcpProxy(("127.0.0.1", port)) as p:
        c = connect(p)
        c.settimeout(3)
        try:
            assert c.recv(1) == b""
        except (ConnectionResetError, ConnectionAbortedError):
            pass
        assert p.stats.connect_errors and "Connection refused" in p.stats.connect_errors[0] \
            or "ConnectionRefused" in p.stats.connect_errors[0]
        c.close()


def test_bad_arguments():
    p = TcpProxy(("127.0.0.1", 9))
    with pytest.raises(ProxyError):
        p.cut()  # not started
    with TcpProxy(("127.0.0.1", 9)) as p:
        with pytest.raises(ValueError):
            p.delay(-1)
        with pytest.raises(ValueError):
            p.throttle(-5)
    with pytest.raises(ProxyError):
        TcpProxy(("127.0.0.1", 9), listen_host="192.0.2.1").start()
