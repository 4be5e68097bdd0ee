"""Keep QMP requests in flight on a raw monitor socket until QEMU is gone.

Why raw: the shutdown race needs the monitor's request queue full at the very
moment QEMU leaves its main loop. A client that sends a burst and then waits
(or pays Python/asyncio cost per request) lets the queue run dry before the
signal lands. Here the whole request stream is written into the socket's
kernel buffer up front: QEMU's monitor reads it as fast as it dispatches,
its queue stays full through the signal, and the harness spends no CPU on it.
Replies are never read beyond the first one (QEMU buffers the rest).

Standard library only (an exported reproducer can use the same technique).
"""
from __future__ import annotations

import functools
import json
import socket
import time


class PumpError(Exception):
    """The monitor did not greet or negotiate as QMP should."""


class RawMonitor:
    def __init__(self, sock: socket.socket, name: str):
        self.sock = sock
        self.name = name
        self._buf = b""

    def _line(self, deadline: float) -> bytes:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PumpError(f"{self.name}: no QMP message within the deadline")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise PumpError(f"{self.name}: monitor closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def _reply(self, deadline: float) -> dict:
        while True:
            msg = json.loads(self._line(deadline))
            if "event" not in msg:
                return msg

    def negotiate(self, oob: bool, timeout: float = 10.0) -> None:
        """Read the greeting, enter command mode (with out-of-band if asked and offered)."""
        deadline = time.monotonic() + timeout
        greeting = self._reply(deadline)
        offered = "oob" in greeting.get("QMP", {}).get("capabilities", [])
        args = {"enable": ["oob"]} if oob and offered else {}
        self.sock.sendall(json.dumps({"execute": "qmp_capabilities", "arguments": args}).encode() + b"\n")
        reply = self._reply(deadline)
        if "return" not in reply:
            raise PumpError(f"{self.name}: qmp_capabilities refused: {reply}")

    def preload(self, payload: bytes) -> int:
        """Write as much of payload as the socket buffer takes without blocking."""
        self.sock.settimeout(0.0)
        sent = 0
        try:
            while sent < len(payload):
                n = self.sock.send(payload[sent:])
                if n <= 0:
                    break
                sent += n
        except (BlockingIOError, socket.timeout, InterruptedError):
            pass
        except OSError:   # QEMU already gone
            pass
        return sent

    def wait_reply(self, timeout: float) -> bool:
        """True once one more command reply has arrived (the stream is being dispatched)."""
        try:
            self._reply(time.monotonic() + timeout)
            return True
        except (PumpError, OSError, ValueError):
            return False


@functools.lru_cache(maxsize=16)   # built once per worker: thousands of dumps() cost ~45 ms
def requests(commands: tuple[str, ...], count: int, insert: str | None = None,
             at: int | None = None) -> bytes:
    """count requests cycling through commands; `insert` (e.g. quit) after `at` of them."""
    lines = [json.dumps({"execute": commands[i % len(commands)]}).encode() + b"\n" for i in range(count)]
    if insert is not None:
        lines.insert(count // 2 if at is None else at, json.dumps({"execute": insert}).encode() + b"\n")
    return b"".join(lines)
