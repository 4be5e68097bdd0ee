"""The guest serial port: QEMU connects to our socket; we log and match lines."""
from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path


class SerialConsole:
    """Reads everything the guest prints into a log file and a buffer.

    Offsets are byte positions in the buffer, so a test can say "after the
    migration, wait for the next heartbeat" with mark() + wait_for(start=mark).
    """

    def __init__(self, sock: socket.socket, log_path: Path):
        self._sock = sock
        self._log = open(log_path, "ab", buffering=0)
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._reader, name=f"serial-{log_path.parent.name}",
                                        daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buf += data
                try:
                    self._log.write(data)
                except ValueError:
                    pass
                self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self._buf)

    def text(self, start: int = 0) -> str:
        with self._cond:
            return self._buf[start:].decode(errors="replace")

    def wait_for(self, pattern: str | bytes, deadline: float, start: int = 0) -> re.Match | None:
        """Regex search in output from `start`; None at the deadline or EOF."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern, re.M)
        with self._cond:
            while True:
                m = rx.search(self._buf, start)
                if m:
                    return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    return None
                self._cond.wait(min(remaining, 0.2))

    def count(self, pattern: bytes, start: int = 0) -> int:
        with self._cond:
            return self._buf.count(pattern, start)

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(2)
        self._log.close()
