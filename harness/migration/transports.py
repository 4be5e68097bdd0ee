"""Where the migration stream goes. No fixed ports: listen on 0, read it back."""
from __future__ import annotations

import enum
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


def listen_uri(transport: Transport, dst: Machine, host: str = "127.0.0.1") -> str:
    if transport is Transport.TCP:
        return f"tcp:{host}:0"
    if transport is Transport.UNIX:
        assert dst.run_dir is not None
        return f"unix:{Path(dst.run_dir) / 'migrate.sock'}"
    raise ValueError(f"listen_uri: transport {transport.value} needs its own flow helper")


def connect_uri(transport: Transport, dst: Machine) -> str:
    """The URI the source must use, read back from the destination's query-migrate."""
    info = dst.cmd("query-migrate")
    addrs = info.get("socket-address") or []
    if not addrs:
        raise AssertionError(f"{dst.name}: query-migrate shows no socket-address after migrate-incoming: {info}")
    a = addrs[0]
    if a["type"] == "inet":
        return f"tcp:{a['host']}:{a['port']}"
    if a["type"] == "unix":
        return f"unix:{a['path']}"
    raise AssertionError(f"{dst.name}: unexpected socket-address {a}")


def start_incoming(transport: Transport, dst: Machine) -> str:
    """migrate-incoming on the deferred destination; return the URI to connect to."""
    dst.cmd("migrate-incoming", {"uri": listen_uri(transport, dst)})
    return connect_uri(transport, dst)
