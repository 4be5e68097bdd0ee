"""Where the migration stream goes. No fixed ports: listen on 0, read it back.

Socket-like transports (tcp, unix, fd, exec, channels) have a live
destination: incoming() starts it and returns the Target the source migrates
to. The file transport is a two-step flow (the source writes, then the
destination loads): file_uri() and add_fdset() serve harness.migration.flows.file.
"""
from __future__ import annotations

import enum
import json
import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

from harness.qemu.machine import Machine


class Transport(enum.Enum):
    TCP = "tcp"
    UNIX = "unix"
    FD = "fd"              # socketpair, one end passed to each side with getfd
    EXEC = "exec"
    FILE = "file"
    CHANNELS = "channels"  # the 'channels' argument instead of a URI
    RDMA = "rdma"


FD_NAME = "migfd"


@dataclass(frozen=True)
class Target:
    """What the source's `migrate` gets: a URI, or the 'channels' list."""

    transport: Transport
    uri: str | None = None
    channels: tuple | None = None

    def migrate_args(self) -> dict:
        if self.channels is not None:
            return {"channels": [dict(c) for c in self.channels]}
        return {"uri": self.uri}

    def __str__(self) -> str:
        return self.uri if self.uri is not None else json.dumps(list(self.channels or ()))


def listen_uri(transport: Transport, dst: Machine, host: str | None = None) -> str:
    if transport is Transport.TCP:
        host = host or dst.host.listen_address
        return f"tcp:{host}:0"
    if transport is Transport.UNIX:
        assert dst.run_dir is not None
        return f"unix:{Path(dst.run_dir) / 'migrate.sock'}"
    raise ValueError(f"listen_uri: transport {transport.value} needs incoming() (it has no listen URI)")


def connect_uri(transport: Transport, dst: Machine) -> str:
    """The URI the source must use, read back from the destination's query-migrate."""
    a = _socket_address(dst)
    if a["type"] == "inet":
        return f"tcp:{a['host']}:{a['port']}"
    if a["type"] == "unix":
        return f"unix:{a['path']}"
    raise AssertionError(f"{dst.name}: unexpected socket-address {a}")


def _socket_address(dst: Machine) -> dict:
    info = dst.cmd("query-migrate")
    addrs = info.get("socket-address") or []
    if not addrs:
        raise AssertionError(f"{dst.name}: query-migrate shows no socket-address after migrate-incoming: {info}")
    return addrs[0]


def start_incoming(transport: Transport, dst: Machine) -> str:
    """migrate-incoming on the deferred destination; return the URI to connect to (tcp/unix)."""
    dst.cmd("migrate-incoming", {"uri": listen_uri(transport, dst)})
    return connect_uri(transport, dst)


def incoming(transport: Transport, src: Machine, dst: Machine, *, host: str | None = None,
             exit_on_error: bool | None = None) -> Target:
    """Start the deferred destination listening on `transport`; return the source's Target.

    fd: a socketpair, one end handed to each QEMU with getfd (SCM_RIGHTS).
    exec: a FIFO in the destination's run dir; the destination runs `cat FIFO`,
        the source `cat > FIFO` (QEMU runs both through /bin/sh -c).
    channels: migrate-incoming and migrate with the 'channels' argument.
    exit_on_error=False keeps a failed destination alive for inspection.
    """
    extra = {} if exit_on_error is None else {"exit-on-error": exit_on_error}
    host = host or dst.host.listen_address   # the destination host's migration address
    if transport in (Transport.TCP, Transport.UNIX):
        dst.cmd("migrate-incoming", {"uri": listen_uri(transport, dst, host), **extra})
        return Target(transport, uri=connect_uri(transport, dst))
    if transport is Transport.FD:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pass_fd(dst, a.fileno(), FD_NAME)
            dst.cmd("migrate-incoming", {"uri": f"fd:{FD_NAME}", **extra})
            pass_fd(src, b.fileno(), FD_NAME)
        finally:
            a.close()
            b.close()
        return Target(transport, uri=f"fd:{FD_NAME}")
    if transport is Transport.EXEC:
        assert dst.run_dir is not None
        fifo = Path(dst.run_dir) / "migrate.fifo"
        if dst.host.is_local:
            os.mkfifo(fifo, 0o600)
        else:   # the FIFO lives where both QEMUs run (exec scenarios are placed on one host)
            dst.host.check(["mkfifo", "-m", "600", "--", str(fifo)])
        q = shlex.quote(str(fifo))
        dst.cmd("migrate-incoming", {"uri": f"exec:cat {q}", **extra})
        return Target(transport, uri=f"exec:cat > {q}")
    if transport is Transport.CHANNELS:
        listen = {"transport": "socket", "type": "inet", "host": host, "port": "0"}
        dst.cmd("migrate-incoming", {"channels": [{"channel-type": "main", "addr": listen}], **extra})
        a = _socket_address(dst)
        addr = {"transport": "socket", "type": "inet", "host": a["host"], "port": str(a["port"])}
        return Target(transport, channels=({"channel-type": "main", "addr": addr},))
    raise ValueError(f"incoming: transport {transport.value} has no live destination "
                     "(file: use the file flow; rdma: its own flow)")


def pass_fd(m: Machine, fd: int, name: str) -> None:
    """Hand fd to QEMU over its monitor (SCM_RIGHTS), named for fd:NAME URIs."""
    assert m.qmp is not None
    _local_only(m, "passing a file descriptor (SCM_RIGHTS)")
    m.qmp.send_fd(fd)
    m.cmd("getfd", {"fdname": name})


def _local_only(m: Machine, what: str) -> None:
    if not m.host.is_local:
        from harness.hosts.base import HostError
        raise HostError(f"{m.name} runs on host '{m.host.name}': {what} needs a local QEMU")


# ---------------------------------------------------------------------------- file

def file_uri(path: str | Path, offset: int | str | None = None) -> str:
    uri = f"file:{path}"
    if offset is not None:
        uri += f",offset={offset:#x}" if isinstance(offset, int) else f",offset={offset}"
    return uri


FDSET_ID = 1


def add_fdset(m: Machine, path: Path, flags: int, count: int = 1, *, direct_io: bool = False,
              fdset_id: int = FDSET_ID) -> None:
    """Open `path` count times and add the fds to fdset fdset_id (file:/dev/fdset/N).

    Like qtest: only the secondary (multifd) channels use O_DIRECT, so with
    direct_io the first fd is opened without it and the others with it.
    """
    assert m.qmp is not None
    _local_only(m, "add-fd with a file opened here")
    for i in range(count):
        f = flags | (os.O_DIRECT if direct_io and i else 0)
        fd = os.open(path, f, 0o600)
        try:
            m.qmp.send_fd(fd)
            m.cmd("add-fd", {"fdset-id": fdset_id})
        finally:
            os.close(fd)


def fdset_uri(offset: int | str | None = None, fdset_id: int = FDSET_ID) -> str:
    return file_uri(f"/dev/fdset/{fdset_id}", offset)
