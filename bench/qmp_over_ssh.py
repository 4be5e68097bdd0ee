"""QMP over SSH vs local: per-command round trip of a remote QEMU's monitor
(direct-streamlocal channel bridged into qemu.qmp) against the same QEMU binary
run locally. Batches alternate local/remote to share machine noise; prints the
median and p99 per command and the remote/local ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.hosts.base import HostError
from harness.hosts.inventory import InventoryError, load
from harness.hosts.local import LocalHost
from harness.hosts.placement import Placement
from harness.hosts.ssh import SSHHost
from harness.qemu.spec import GuestKind, GuestSpec, MachineSpec
from harness.run import TestRun

DEFAULT_INVENTORY = Path(__file__).resolve().parents[1] / ".farm" / "inventory.toml"


def batch(m, command: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        m.cmd(command)
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inventory", default=str(DEFAULT_INVENTORY))
    ap.add_argument("--host", default=None, help="inventory host (default: the first)")
    ap.add_argument("--qemu", default=None, help="label or path on the host (default: its default)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=200, help="commands per batch")
    ap.add_argument("--command", default="query-status")
    args = ap.parse_args()
    if args.rounds < 1 or args.batch < 1:
        print("qmp-over-ssh: --rounds and --batch must be >= 1", file=sys.stderr)
        return 2
    try:
        inv = load(args.inventory)
        entry = inv.host(args.host) if args.host else inv.hosts[0]
        binary = entry.qemu_binary(args.qemu)
        remote = SSHHost(entry)
        remote.transport
    except (InventoryError, HostError) as exc:
        print(f"qmp-over-ssh: {exc} (bring the farm up with: ci/farm up)", file=sys.stderr)
        return 2
    spec = MachineSpec(binary=binary, accel="tcg", machine_type="none", memory_mib=16,
                       guest=GuestSpec(kind=GuestKind.NONE), paused=True)
    with tempfile.TemporaryDirectory(prefix="bench-qmp-") as d:
        local_run = TestRun(Path(d) / "local", placement=Placement(LocalHost(), LocalHost()))
        remote_run = TestRun(Path(d) / "remote", placement=Placement(remote, remote))
        try:
            lm = local_run.machine(spec.with_(name="local"))
            rm = remote_run.machine(spec.with_(name="remote"))
            batch(lm, args.command, 50)
            batch(rm, args.command, 50)   # warm both paths
            loc, rem = [], []
            for i in range(args.rounds):
                loc += batch(lm, args.command, args.batch)
                rem += batch(rm, args.command, args.batch)
            t0 = time.perf_counter()
            for _ in range(20):
                remote.run(["true"], 10)
            exec_ms = (time.perf_counter() - t0) / 20 * 1000
            local_run.finish()
            remote_run.finish()
        finally:
            local_run.abort()
            remote_run.abort()
            remote.close()
    us = lambda xs, q=None: (statistics.median(xs) if q is None else statistics.quantiles(xs, n=100)[q - 1]) * 1e6  # noqa: E731
    print(f"{args.command} x {len(loc)} each, host '{entry.name}' ({entry.address})")
    print(f"local : median {us(loc):8.1f} us  p99 {us(loc, 99):8.1f} us")
    print(f"remote: median {us(rem):8.1f} us  p99 {us(rem, 99):8.1f} us")
    print(f"ratio remote/local (median): {us(rem) / us(loc):.2f}")
    print(f"(for scale: one remote exec of 'true' over the same connection: {exec_ms:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
