"""The command line: every option explains itself, defaults show, --version, and qtest's
QEMU variables steer every subcommand."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from harness import __version__, cli

# `harness chaos` is being rewritten separately; its options are checked there.
SKIP = {"chaos"}


def _subparsers(parser, prefix=""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                if name in SKIP or not sp.add_help:
                    continue
                yield f"{prefix}{name}", sp
                yield from _subparsers(sp, f"{prefix}{name} ")


def test_every_option_has_help_and_defaults_show():
    missing = []
    for name, sp in _subparsers(cli.build_parser()):
        for a in sp._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not a.help:
                missing.append(f"{name} {'/'.join(a.option_strings) or a.dest}")
    assert missing == []
    text = dict(_subparsers(cli.build_parser()))["hammer"].format_help()
    assert "(default: 60.0)" in text and "(default: artifacts/hammer)" in text


def test_parallel_defaults_to_the_cpu_count():
    args = cli.build_parser().parse_args(["hammer", "shutdown-race"])
    assert args.parallel == (os.cpu_count() or 1)


def test_qtest_variables_steer_every_subcommand(monkeypatch):
    monkeypatch.setenv("QTEST_QEMU_BINARY", "/opt/q/qemu-system-x86_64")
    p = cli.build_parser()
    assert p.parse_args(["hammer", "shutdown-race"]).qemu == "/opt/q/qemu-system-x86_64"
    assert p.parse_args(["qemu"]).binary == "/opt/q/qemu-system-x86_64"
    assert p.parse_args(["chaos"]).qemu == "/opt/q/qemu-system-x86_64"
    assert p.parse_args(["hammer", "shutdown-race", "--qemu", "x"]).qemu == "x"   # explicit wins


def test_version_names_harness_and_qemu():
    cp = subprocess.run([sys.executable, "-m", "harness.cli", "--version"], capture_output=True,
                        text=True, timeout=60, env=dict(os.environ, QTEST_QEMU_BINARY="/nonexistent/qemu"))
    assert cp.returncode == 0
    lines = cp.stdout.splitlines()
    assert lines[0] == f"harness {__version__}"
    assert lines[1].startswith("QEMU: ") and "/nonexistent/qemu" in lines[1]


@pytest.mark.skipif(not os.path.exists("/usr/bin/qemu-system-x86_64"), reason="no system QEMU")
def test_version_with_the_default_qemu():
    env = {k: v for k, v in os.environ.items() if not k.startswith("QTEST_QEMU_BINARY")}
    cp = subprocess.run([sys.executable, "-m", "harness.cli", "--version"], capture_output=True,
                        text=True, timeout=60, env=env)
    assert cp.returncode == 0 and cp.stdout.splitlines()[1].startswith("QEMU ")
