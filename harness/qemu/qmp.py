"""A synchronous, always-listening QMP facade over qemu.qmp.

qemu.qmp is asyncio; tests are synchronous. Each Monitor owns a connection
whose reader runs on a shared background event loop, so events are recorded
from the greeting on, even while the test is not calling anything. Every call
has a deadline; the transcript (both directions, timestamps) goes to a JSON
lines file.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from qemu.qmp import ConnectError, ExecuteError, QMPClient
from qemu.qmp.message import Message


class QMPTimeout(Exception):
    """A QMP command got no reply within its deadline."""


class QMPDisconnected(Exception):
    """The monitor connection is gone (QEMU exited or closed it)."""


class QMPCommandError(Exception):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error_class: str, desc: str):
        super().__init__(f"{command}: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class _Loop:
    """One daemon event-loop thread per process, started on first use."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name="qmp-loop", daemon=True)
                t.start()
                cls._loop = loop
            return cls._loop


def run_async(coro, timeout: float):
    fut = asyncio.run_coroutine_threadsafe(coro, _Loop.get())
    try:
        return fut.result(timeout)
    except TimeoutError:
        fut.cancel()
        raise


@dataclass
class Event:
    name: str
    data: dict
    timestamp: float  # QEMU's own timestamp (seconds)
    received: float   # our monotonic clock


class _RecordingClient(QMPClient):
    """QMPClient that records every message and keeps all events."""

    def __init__(self, name: str, transcript: Path | None, on_event: Callable[[Event], None]):
        super().__init__(name)
        self._transcript = open(transcript, "a", buffering=1) if transcript else None
        self._on_event = on_event
        self._tlock = threading.Lock()

    def _log(self, direction: str, msg: Message) -> None:
        if self._transcript is None:
            return
        line = json.dumps({"t": time.time(), "dir": direction, "msg": dict(msg)},
                          default=str)
        with self._tlock:
            try:
                self._transcript.write(line + "\n")
            except ValueError:  # closed
                pass

    def _cb_outbound(self, msg: Message) -> Message:
        self._log("out", msg)
        return msg

    def _cb_inbound(self, msg: Message) -> Message:
        self._log("in", msg)
        if "event" in msg:
            ts = msg.get("timestamp", {})
            self._on_event(Event(
                name=msg["event"], data=dict(msg.get("data", {})),
                timestamp=ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6,
                received=time.monotonic()))
        return msg

    async def _negotiate(self) -> None:
        """qmp_capabilities, tolerating events ahead of its return.

        QEMU switches a monitor out of negotiation mode inside the command, before
        it writes the return; an event emitted by another thread in between (a
        cpr-transfer destination's incoming migration does this) arrives first.
        qemu.qmp's own negotiation takes any first message for the reply and fails;
        here events are recorded (_cb_inbound) and skipped until the reply."""
        from qemu.qmp.qmp_client import NegotiationError
        arguments = {"enable": ["oob"]} if self._greeting and "oob" in self._greeting.QMP.capabilities else {}
        await self._send(self.make_execute_msg("qmp_capabilities", arguments=arguments))
        while True:
            reply = await self._recv()
            if "event" in reply:
                continue
            if "return" not in reply or "error" in reply:
                raise NegotiationError("Negotiation failed", AssertionError(f"reply {dict(reply)}"))
            return

    def close_transcript(self) -> None:
        if self._transcript:
            with self._tlock:
                self._transcript.close()


@dataclass
class EventLog:
    """All events of one monitor, waitable from any thread."""

    events: list[Event] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, ev: Event) -> None:
        with self.cond:
            self.events.append(ev)
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def wait_for(self, match: Callable[[Event], bool], deadline: float, start: int = 0,
                 alive: Callable[[], bool] = lambda: True) -> Event | None:
        """First event at index >= start matching; None at deadline or if not alive."""
        with self.cond:
            idx = start
            while True:
                while idx < len(self.events):
                    if match(self.events[idx]):
                        return self.events[idx]
                    idx += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not alive():
                    return None
                self.cond.wait(min(remaining, 0.2))


class Monitor:
    """One QMP monitor connection, synchronous API, every call bounded."""

    def __init__(self, name: str, transcript: Path | None = None, default_timeout: float = 30.0):
        self.name = name
        self.default_timeout = default_timeout
        self.events = EventLog()
        self._client = _RecordingClient(name, transcript, self.events.add)
        self._closed = False

    # -- connection -------------------------------------------------------
    def attach(self, sock: socket.socket, timeout: float = 30.0) -> dict:
        """Take over an already-connected socket; greet and negotiate."""
        try:
            run_async(self._client.connect(sock), timeout)
        except TimeoutError as exc:
            raise QMPTimeout(f"{self.name}: no QMP greeting within {timeout}s") from exc
        except (EOFError, ConnectionError, OSError, ConnectError) as exc:
            raise QMPDisconnected(f"{self.name}: QMP closed during greeting: {exc}") from exc
        greeting = self._client.greeting
        return greeting._raw if greeting else {}

    @property
    def oob_enabled(self) -> bool:
        g = self._client.greeting
        return bool(g and "oob" in g.QMP.capabilities)

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            run_async(self._client.disconnect(), timeout)
        except BaseException:  # noqa: BLE001 - EOF after quit is normal
            pass
        self._client.close_transcript()

    # -- commands ----------------------------------------------------------
    def cmd(self, command: str, args: dict | None = None, *, timeout: float | None = None,
            oob: bool = False) -> Any:
        """Execute; return 'return' or raise QMPCommandError/QMPTimeout/QMPDisconnected."""
        timeout = self.default_timeout if timeout is None else timeout
        msg = QMPClient.make_execute_msg(command, args, oob=oob)
        try:
            return run_async(self._client.execute_msg(msg), timeout)
        except ExecuteError as exc:
            raise QMPCommandError(command, exc.error_class, str(exc)) from None
        except TimeoutError:
            raise QMPTimeout(f"{self.name}: {command} got no reply within {timeout}s") from None
        except Exception as exc:  # StateError, ExecInterruptedError, EOFError...
            raise QMPDisconnected(f"{self.name}: {command}: connection lost "
                                  f"({type(exc).__name__}: {exc})") from None

    def flood(self, command: str, count: int, args: dict | None = None, oob: bool = False) -> None:
        """Pipeline `count` commands without waiting for replies (race recipes).

        Replies (or the disconnect errors when QEMU exits) are drained and dropped.
        """
        async def _fire():
            for _ in range(count):
                msg = QMPClient.make_execute_msg(command, args, oob=oob)
                t = asyncio.ensure_future(self._client.execute_msg(msg))
                t.add_done_callback(_swallow)
        asyncio.run_coroutine_threadsafe(_fire(), _Loop.get()).result(10)

    def send_nowait(self, command: str, args: dict | None = None) -> None:
        """Issue one command and return at once (e.g. quit in a race recipe)."""
        self.flood(command, 1, args)

    def send_fd(self, fd: int) -> None:
        """Pass a file descriptor (SCM_RIGHTS) before a getfd/add-fd command."""
        self._client.send_fd_scm(fd)

    def try_cmd(self, command: str, args: dict | None = None, timeout: float = 5.0) -> Any:
        """cmd that returns the exception text instead of raising (for state dumps)."""
        try:
            return self.cmd(command, args, timeout=timeout)
        except QMPTimeout as exc:
            return {"error": str(exc), "timeout": True}
        except (QMPCommandError, QMPDisconnected) as exc:
            return {"error": str(exc)}


def _swallow(task: "asyncio.Future") -> None:
    if not task.cancelled():
        task.exception()


def listen_unix(path: Path) -> socket.socket:
    """A listening UNIX socket QEMU will connect to as a client (no missed bytes)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)
    return srv


def accept_until(srv: socket.socket, deadline: float, alive: Callable[[], bool]) -> socket.socket | None:
    """Accept one connection, giving up at the deadline or when the peer process died."""
    srv.settimeout(0.05)
    while time.monotonic() < deadline:
        try:
            conn, _ = srv.accept()
            conn.settimeout(None)
            return conn
        except socket.timeout:
            if not alive():
                return None
    return None


def names(events: Iterable[Event]) -> list[str]:
    return [e.name for e in events]
