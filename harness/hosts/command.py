"""`harness hosts check INVENTORY`: parse a host inventory and show what the harness will use.

With --connect, each host is also reached over SSH (pinned keys) and its
preflight facts are printed: what a farm admin checks before a nightly run.
"""
from __future__ import annotations

import sys

from harness.hosts.inventory import HostEntry, InventoryError, load


def add_parser(sub) -> None:
    p = sub.add_parser("hosts", help="farm host inventory (TOML)")
    hosts_sub = p.add_subparsers(dest="hosts_cmd", metavar="{check}", required=True)
    c = hosts_sub.add_parser("check", help="validate an inventory file and print one line per host")
    c.add_argument("inventory", metavar="INVENTORY", help="TOML host inventory")
    c.add_argument("--connect", action="store_true",
                   help="also log in to each host and print its preflight facts")


def describe(h: HostEntry) -> str:
    """alpha root@10.231.0.11:22 migration 10.232.0.11 (mig0) slots 2 tags farm qemu default,11.1.3"""
    iface = f" ({h.migration_interface})" if h.migration_interface else ""
    return (f"{h.name} {h.user}@{h.address}:{h.port} migration {h.migration_address}{iface} "
            f"slots {h.slots} tags {','.join(sorted(h.tags)) or '-'} qemu {','.join(h.qemu_labels)}")


def main(args) -> int:
    try:
        inv = load(args.inventory)
    except InventoryError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2    # a bad inventory is a usage error, like a bad option
    rc = 0
    for h in inv.hosts:
        print(describe(h))
        if args.connect:
            line = _preflight_line(h)
            rc = rc if line.startswith("  ok") else 1
            print(line)
    return rc


def _preflight_line(h: HostEntry) -> str:
    from harness.hosts.base import HostError
    from harness.hosts.preflight import gather
    from harness.hosts.ssh import SSHHost
    ssh = SSHHost(h)
    try:
        f = gather(ssh)
    except HostError as exc:
        return f"  FAILED: {exc}"
    finally:
        ssh.close()
    why = f.blocking_reason()
    qemus = "; ".join(f"{k}: {v}" for k, v in f.qemu_versions.items())
    return (f"  {'ok' if why is None else 'BLOCKED: ' + why} /dev/kvm {'rw' if f.kvm_usable else 'no'}, "
            f"userfaultfd {f.userfaultfd or 'yes'}, memlock "
            f"{'unlimited' if f.memlock_bytes is None else f.memlock_bytes}, "
            f"rdma {','.join(f.rdma_devices) or 'none'}, free {f.free_bytes >> 20} MiB, "
            f"{f.python}; {qemus}")
