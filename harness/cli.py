"""`harness` console script: images | qemu (more subcommands land with their issues)."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_qemu(args) -> int:
    from harness.qemu import accel
    from harness.qemu.binary import probe
    b = probe(args.binary)
    info = {"path": b.path, "version": b.version, "package": b.package,
            "default_machine": b.default_machine,
            "newest_q35": b.newest_versioned("pc-q35-"),
            "kvm_accessible": accel.kvm_accessible()}
    if args.accel:
        info["accel_auto"] = accel.resolve(b.path, "auto")
    print(json.dumps(info, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="harness", description="QEMU migration test harness")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("images", help="build or locate guest images", add_help=False)
    q = sub.add_parser("qemu", help="show what the harness knows about a QEMU binary")
    q.add_argument("binary", nargs="?", default="qemu-system-x86_64")
    q.add_argument("--accel", action="store_true", help="also measure accel=auto (boots guests)")
    from harness.stress import command as hammer_cmd
    hammer_cmd.add_parser(sub)
    from harness.stress import chaos_command
    chaos_command.add_parser(sub)
    from harness.report import command as report_cmd
    report_cmd.add_parser(sub)
    from harness.hosts import command as hosts_cmd
    hosts_cmd.add_parser(sub)
    if argv[:1] == ["images"]:
        from harness.guest import images
        return _guard(lambda: images.main(argv[1:]))
    args = parser.parse_args(argv)
    if args.cmd == "qemu":
        return _guard(lambda: _cmd_qemu(args))
    if args.cmd == "hammer":
        return _guard(lambda: hammer_cmd.main(args))
    if args.cmd == "chaos":
        return _guard(lambda: chaos_command.main(args))
    if args.cmd == "report":
        return _guard(lambda: report_cmd.main(args))
    if args.cmd == "hosts":
        return _guard(lambda: hosts_cmd.main(args))
    return 2


def _guard(fn) -> int:
    """Known errors become one line on stderr, never a traceback."""
    from harness.qemu.binary import BinaryError
    from harness.qemu.spec import SpecError
    known: tuple[type[BaseException], ...] = (BinaryError, SpecError, OSError)
    try:
        from harness.guest.images import ImageError
        known += (ImageError,)
    except ImportError:
        pass
    try:
        return fn() or 0
    except known as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
