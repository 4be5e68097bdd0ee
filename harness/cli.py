"""`harness` console script: images | qemu | hammer | chaos | report | hosts."""
from __future__ import annotations

import argparse
import json
import os
import sys

# qtest's variables: the default binary of every subcommand's --qemu/--qemu-src/--qemu-dst.
QEMU_ENV = {"qemu": "QTEST_QEMU_BINARY", "qemu_src": "QTEST_QEMU_BINARY_SRC",
            "qemu_dst": "QTEST_QEMU_BINARY_DST"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown after every option's help."""

    def _get_help_string(self, action):
        # A flag's False, an unset None or an empty list says nothing; a help text that
        # already explains its default keeps its own words.
        if action.default in (None, False, [], ()) or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Every (sub)parser shows defaults: subparsers inherit the parser class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def version_text() -> str:
    """`harness --version`: this harness and the QEMU it would use by default."""
    from harness import __version__
    from harness.qemu.binary import BinaryError, probe
    binary = os.environ.get(QEMU_ENV["qemu"]) or "qemu-system-x86_64"
    try:
        b = probe(binary)
        qemu = f"QEMU {b.version} ({b.path}{', ' + b.package if b.package else ''})"
    except BinaryError as exc:
        qemu = f"QEMU: {exc}"
    return f"harness {__version__}\n{qemu}"


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit(0)


def env_defaults(parser: argparse.ArgumentParser) -> None:
    """QTEST_QEMU_BINARY* become the defaults of --qemu/--qemu-src/--qemu-dst (and of a
    positional `binary`) in every subcommand, so one exported variable steers them all."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in dict.fromkeys(action.choices.values()):
                env_defaults(sp)
            continue
        dest = "qemu" if action.dest == "binary" else action.dest
        value = os.environ.get(QEMU_ENV.get(dest, ""), "") if dest in QEMU_ENV else ""
        if value and action.default in (None, "qemu-system-x86_64"):
            action.default = value


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


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (every subcommand), QTEST_QEMU_BINARY* applied."""
    parser = Parser(prog="harness", description="QEMU migration test harness")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the harness version and the default QEMU's version")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("images", help="build or locate guest images (harness images --help)",
                   add_help=False)
    q = sub.add_parser("qemu", help="show what the harness knows about a QEMU binary")
    q.add_argument("binary", nargs="?", default="qemu-system-x86_64",
                   help="QEMU binary (path or name on PATH; $QTEST_QEMU_BINARY if set)")
    q.add_argument("--accel", action="store_true", help="also measure accel=auto (boots guests)")
    from harness.stress import command as hammer_cmd
    hammer_cmd.add_parser(sub)
    from harness.stress import chaos_command
    chaos_command.add_parser(sub)
    from harness.report import command as report_cmd
    report_cmd.add_parser(sub)
    from harness.hosts import command as hosts_cmd
    hosts_cmd.add_parser(sub)
    from harness.report import repro_command
    repro_command.add_parser(sub)
    env_defaults(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from harness import proctree
    # From the first moment: a Ctrl-C while the subcommands import is one line too.
    try:
        with proctree.interruptible(argv[0] if argv else "harness"):
            return _main(argv)
    except proctree.Interrupted as exc:
        return proctree.print_interrupted(exc)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    from harness.hosts import command as hosts_cmd
    from harness.report import command as report_cmd
    from harness.report import repro_command
    from harness.stress import chaos_command
    from harness.stress import command as hammer_cmd
    if argv[:1] == ["images"]:
        from harness.guest import images
        return _guard(lambda: images.main(argv[1:]))
    args = parser.parse_args(argv)
    if args.cmd == "qemu":
        return _guard(lambda: _cmd_qemu(args), "qemu")
    if args.cmd == "hammer":
        return _guard(lambda: hammer_cmd.main(args), f"hammer {args.recipe}")
    if args.cmd == "chaos":
        return _guard(lambda: chaos_command.main(args), "chaos")
    if args.cmd == "report":
        return _guard(lambda: report_cmd.main(args), "report")
    if args.cmd == "hosts":
        return _guard(lambda: hosts_cmd.main(args), "hosts")
    if args.cmd == "repro":
        return _guard(lambda: repro_command.main(args), "repro")
    return 2


def _guard(fn, what: str = "") -> int:
    """Known errors become one line on stderr, never a traceback: exit 2 for bad input
    (options, binaries, directories, inventories), 1 for the environment failing us.
    An interrupt (SIGINT/SIGTERM) is one line too: what was interrupted, where its
    artifacts are; exit 128+signal."""
    from harness import dirs, proctree
    from harness.hosts.inventory import InventoryError
    from harness.qemu.binary import BinaryError
    from harness.qemu.spec import SpecError
    usage: tuple[type[BaseException], ...] = (BinaryError, SpecError, dirs.DirError, InventoryError)
    known: tuple[type[BaseException], ...] = (OSError,)
    try:
        from harness.guest.images import ImageError
        known += (ImageError,)
    except ImportError:
        pass
    try:
        with proctree.interruptible(what):
            return fn() or 0
    except proctree.Interrupted as exc:
        return proctree.print_interrupted(exc)
    except usage as exc:        # bad input: a usage error
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except known as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
