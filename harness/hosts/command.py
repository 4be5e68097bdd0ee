"""`harness hosts check INVENTORY`: parse a host inventory and show what the harness will use.

Parsing and printing only; no connections are made here.
"""
from __future__ import annotations

import sys

from harness.hosts.inventory import HostEntry, InventoryError, load


def add_parser(sub) -> None:
    p = sub.add_parser("hosts", help="farm host inventory (TOML)")
    hosts_sub = p.add_subparsers(dest="hosts_cmd", metavar="{check}", required=True)
    c = hosts_sub.add_parser("check", help="validate an inventory file and print one line per host")
    c.add_argument("inventory", metavar="INVENTORY", help="TOML host inventory")


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
    for h in inv.hosts:
        print(describe(h))
    return 0
