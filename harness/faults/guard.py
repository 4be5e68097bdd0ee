"""The controller's side of the host-side fault guard (supervisor.py in guard mode).

Before a fault is applied on a host, how to undo it is recorded with a process
on that host; once the controller undid it, the record is dropped. If the
controller dies or its connection drops, the host-side process undoes whatever
is still recorded (iptables chain and jumps, a downed link, a qdisc), just as
the supervisor's watchdog kills QEMU.
"""
from __future__ import annotations

import json
import threading
from typing import Callable, Sequence


class GuardError(Exception):
    """The guard cannot be reached: the fault must not be applied unguarded."""


class FaultGuard:
    """`send(bytes)` writes to the guard's stdin; `readline()` reads one reply line
    (b"" at EOF) and must time out on its own (raise) rather than block for ever."""

    def __init__(self, send: Callable[[bytes], None], readline: Callable[[], bytes],
                 close: Callable[[], None], label: str = "host"):
        self._send, self._readline, self._close = send, readline, close
        self.label = label
        self._lock = threading.Lock()
        self.closed = False

    def record(self, key: str, undo: Sequence[Sequence[str]]) -> None:
        """Before applying a fault: the argv lists that undo it, run in order by the host."""
        self._call({"record": key, "undo": [list(a) for a in undo]}, key)

    def forget(self, key: str) -> None:
        """After undoing a fault ourselves."""
        self._call({"forget": key}, key)

    def _call(self, msg: dict, key: str) -> None:
        with self._lock:
            if self.closed:
                raise GuardError(f"{self.label}: fault guard already closed")
            try:
                self._send((json.dumps(msg) + "\n").encode())
                reply = self._readline()
            except Exception as exc:  # noqa: BLE001 - any transport error: unguarded
                self.closed = True
                raise GuardError(f"{self.label}: fault guard unreachable: {exc}") from None
            try:
                ok = json.loads(reply).get("ok") == key
            except ValueError:
                ok = False
            if not ok:
                self.closed = True
                raise GuardError(f"{self.label}: fault guard answered {reply[:80]!r}")

    def close(self) -> None:
        """Close our end: the guard undoes what is still recorded, then exits."""
        with self._lock:
            if not self.closed:
                self.closed = True
                try:
                    self._close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass


def local_guard(python: str, supervisor_src: str, label: str = "local") -> FaultGuard:
    """A guard process on this machine (faults on the local kernel or its namespaces):
    its own session, so a Ctrl-C of ours does not stop it before it undid things."""
    import subprocess
    p = subprocess.Popen([python, "-c", supervisor_src], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, start_new_session=True)
    p.stdin.write(b'{"guard": true}\n')
    p.stdin.flush()

    def send(data: bytes) -> None:
        p.stdin.write(data)
        p.stdin.flush()

    def close() -> None:
        p.stdin.close()
        p.wait(60)
    return FaultGuard(send, p.stdout.readline, close, label)
