"""A userspace TCP proxy to put in a migration path: cut, delay, throttle.

    with TcpProxy(("127.0.0.1", dst_port)) as proxy:
        src.cmd("migrate", {"uri": f"tcp:127.0.0.1:{proxy.port}"})
        proxy.delay(20)            # +20 ms one-way, each direction
        proxy.throttle(1 << 20)    # 1 MiB/s each direction
        proxy.cut()                # RST every live connection: both QEMUs notice

It listens on 127.0.0.1 port 0 (the real port is `proxy.port`) and forwards
every accepted connection to the target (postcopy-preempt opens two). Data is
forwarded by one asyncio loop on a private daemon thread: each direction is a
reader task feeding a bounded queue and a writer task releasing chunks at
`received + delay` under a token bucket, so latency is added without
serialising throughput, and a slow consumer back-pressures the sender.

Bounded by construction: the proxy stops itself after `lifetime` seconds (and
closes everything) if nobody called stop(); every public call has a deadline.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

CHUNK = 64 * 1024
QUEUE_CHUNKS = 64            # per direction: at most ~4 MiB in flight inside the proxy
DEFAULT_LIFETIME = 600.0
CALL_TIMEOUT = 10.0


class ProxyError(RuntimeError):
    """The proxy could not start or a control call did not complete in time."""


@dataclass
class ProxyStats:
    accepted: int = 0
    active: int = 0
    cuts: int = 0
    bytes_up: int = 0        # client -> target
    bytes_down: int = 0      # target -> client
    connect_errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"accepted": self.accepted, "active": self.active, "cuts": self.cuts,
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                "connect_errors": list(self.connect_errors)}


class _Bucket:
    """Token bucket in bytes/s; rate None = unlimited."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self.tokens = 0.0
        self.stamp = time.monotonic()

    def set_rate(self, rate: float | None) -> None:
        self.rate = rate
        self.tokens = 0.0
        self.stamp = time.monotonic()

    def burst(self) -> int:
        """Largest grant: 1/20 s worth of bytes, at least 1, at most a chunk."""
        return max(1, min(CHUNK, int((self.rate or CHUNK) / 20)))

    def wait_time(self, n: int) -> float:
        """Seconds until n (<= burst()) bytes may pass; 0 means now, and they are taken."""
        if self.rate is None:
            return 0.0
        now = time.monotonic()
        self.tokens = min(float(self.burst()), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return max((n - self.tokens) / self.rate, 0.001)


class _Link:
    """One accepted connection and its outgoing connection to the target."""

    def __init__(self, proxy: "TcpProxy", client: tuple, target: tuple):
        self.proxy = proxy
        self.client = client      # (reader, writer)
        self.target = target
        self.tasks: list[asyncio.Task] = []
        self.closed = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for (r, _), (_, w), up in ((self.client, self.target, True),
                                   (self.target, self.client, False)):
            q: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS)
            self.tasks.append(loop.create_task(self._read(r, q)))
            self.tasks.append(loop.create_task(self._write(q, w, up)))

    async def _read(self, reader: asyncio.StreamReader, q: asyncio.Queue) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                await q.put((time.monotonic(), data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await q.put((time.monotonic(), b""))

    async def _write(self, q: asyncio.Queue, writer: asyncio.StreamWriter, up: bool) -> None:
        bucket = self.proxy._buckets[0 if up else 1]
        try:
            while True:
                stamp, data = await q.get()
                if not data:
                    # Orderly EOF from one side: half-close towards the other.
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                release = stamp + self.proxy._delay_s
                now = time.monotonic()
                if release > now:
                    await asyncio.sleep(release - now)
                view = memoryview(data)
                while view:
                    n = min(len(view), bucket.burst()) if bucket.rate else len(view)
                    wait = bucket.wait_time(n)
                    while wait > 0:
                        await asyncio.sleep(wait)
                        wait = bucket.wait_time(n)
                    # Counted before the write: once a peer has the bytes, so do the stats.
                    if up:
                        self.proxy.stats.bytes_up += n
                    else:
                        self.proxy.stats.bytes_down += n
                    writer.write(view[:n])
                    await writer.drain()
                    view = view[n:]
        except (ConnectionError, OSError):
            self.abort()

    def abort(self) -> None:
        """Close both sockets with RST (SO_LINGER 0): a cut, not a goodbye."""
        if self.closed:
            return
        self.closed = True
        for _, w in (self.client, self.target):
            sock = w.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            w.transport.abort()
        for t in self.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        if self in self.proxy._links:
            self.proxy._links.remove(self)
            self.proxy.stats.active = len(self.proxy._links)

    async def wait_done(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for _, w in (self.client, self.target):
            w.close()
        if self in self.proxy._links:
            self.proxy._links.remove(self)
            self.proxy.stats.active = len(self.proxy._links)
        self.closed = True


class TcpProxy:
    """Forward 127.0.0.1:<port> -> target, with cut(), delay(ms), throttle(bytes/s)."""

    def __init__(self, target: tuple[str, int], *, listen_host: str = "127.0.0.1",
                 lifetime: float = DEFAULT_LIFETIME, name: str = "proxy"):
        self.target = (target[0], int(target[1]))
        self.listen_host = listen_host
        self.lifetime = lifetime
        self.name = name
        self.port: int | None = None
        self.stats = ProxyStats()
        self._delay_s = 0.0
        self._buckets = (_Bucket(), _Bucket())
        self._links: list[_Link] = []
        self._refuse = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._stopped = threading.Event()
        self.stopped_by_lifetime = False

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "TcpProxy":
        if self._thread is not None:
            raise ProxyError(f"{self.name}: already started")
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, self.listen_host, 0))
                self.port = self._server.sockets[0].getsockname()[1]
                loop.call_later(self.lifetime, self._expire)
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                errors.append(exc)
                ready.set()
                loop.close()
                self._stopped.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close_all())
                loop.close()
                self._stopped.set()

        self._thread = threading.Thread(target=main, name=f"{self.name}-loop", daemon=True)
        self._thread.start()
        if not ready.wait(CALL_TIMEOUT):
            raise ProxyError(f"{self.name}: did not start within {CALL_TIMEOUT}s")
        if errors:
            raise ProxyError(f"{self.name}: cannot listen on {self.listen_host}: {errors[0]}")
        return self

    def stop(self) -> None:
        """Close the listener and every connection (orderly); idempotent, bounded."""
        loop = self._loop
        if loop is None or self._stopped.is_set():
            return
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # loop already closed
            return
        if not self._stopped.wait(CALL_TIMEOUT):
            raise ProxyError(f"{self.name}: did not stop within {CALL_TIMEOUT}s")

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stopped.is_set()

    def __enter__(self) -> "TcpProxy":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        assert self.port is not None, "proxy not started"
        return (self.listen_host, self.port)

    @property
    def uri(self) -> str:
        """The migration URI that goes through this proxy."""
        return f"tcp:{self.listen_host}:{self.address[1]}"

    # ---------------------------------------------------------------- faults
    def cut(self, refuse_new: bool = False) -> int:
        """Reset every live connection (both ends get RST); return how many.

        refuse_new: also reset connections accepted from now on (a dead path).
        """
        def do() -> int:
            self._refuse = refuse_new
            links = list(self._links)
            for link in links:
                link.abort()
            self.stats.cuts += 1
            return len(links)
        return self._call(do)

    def heal(self) -> None:
        """Accept and forward new connections again after cut(refuse_new=True)."""
        self._call(lambda: setattr(self, "_refuse", False))

    def delay(self, ms: float) -> None:
        """Add ms of one-way latency in each direction (0 removes it)."""
        if ms < 0:
            raise ValueError("delay must be >= 0 ms")
        self._call(lambda: setattr(self, "_delay_s", ms / 1000.0))

    def throttle(self, bytes_per_s: float | None) -> None:
        """Limit each direction to bytes_per_s (None or 0 removes the limit)."""
        if bytes_per_s is not None and bytes_per_s < 0:
            raise ValueError("throttle must be >= 0 bytes/s")
        rate = float(bytes_per_s) if bytes_per_s else None

        def do() -> None:
            for b in self._buckets:
                b.set_rate(rate)
        self._call(do)

    def wait_connections(self, n: int, timeout: float) -> bool:
        """Wait until at least n connections were accepted in total."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats.accepted >= n:
                return True
            time.sleep(0.01)
        return self.stats.accepted >= n

    # ---------------------------------------------------------------- internals
    def _call(self, fn):
        loop = self._loop
        if loop is None or self._stopped.is_set():
            raise ProxyError(f"{self.name}: not running")

        async def run():
            return fn()
        fut = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return fut.result(CALL_TIMEOUT)
        except TimeoutError:
            fut.cancel()
            raise ProxyError(f"{self.name}: control call did not complete in {CALL_TIMEOUT}s") from None

    def _expire(self) -> None:
        self.stopped_by_lifetime = True
        assert self._loop is not None
        self._loop.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        if self._refuse:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass       # already gone (a peer that connects and dies at once)
            writer.transport.abort()
            return
        try:
            treader, twriter = await asyncio.wait_for(
                asyncio.open_connection(*self.target), CALL_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            self.stats.connect_errors.append(f"{self.target}: {exc!r}")
            writer.transport.abort()
            return
        for w in (writer, twriter):
            sock = w.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:     # the client reset it already (its QEMU aborted): nothing to relay
                writer.transport.abort()
                twriter.transport.abort()
                return
        link = _Link(self, (reader, writer), (treader, twriter))
        self._links.append(link)
        self.stats.active = len(self._links)
        link.start()
        try:
            await link.wait_done()
        except asyncio.CancelledError:
            # stop() cancels every task; asyncio's streams callback (3.11) calls
            # .exception() on this one and would log the CancelledError as an error.
            return

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)


def local_address_towards(address: str) -> str:
    """This machine's address on the route to `address` (127.0.0.1 for loopback).

    A connected UDP socket makes the kernel pick the source address; nothing is sent.
    """
    import socket
    if address.startswith("127.") or address in ("localhost", "::1"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((address, 9))
        return s.getsockname()[0]
