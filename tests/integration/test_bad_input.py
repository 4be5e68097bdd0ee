"""Every bad input is one line naming it, a usage exit status, no traceback, and nothing
started (no QEMU, nothing in the run root, no artifacts dir).

One table: a new option joins it with one BadInput row. `make` builds files the case
needs under the test's tmp dir and returns the arguments; `{tmp}` in args and env is
that dir.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from harness import leakcheck

pytestmark = pytest.mark.qemu
ROOT = Path(__file__).resolve().parents[2]
USAGE = 2          # harness subcommands
PYTEST_USAGE = 4   # pytest's own usage-error status (pytest.UsageError), kept for pytest runs


@dataclass(frozen=True)
class BadInput:
    id: str
    tool: str                         # "harness" or "pytest"
    args: tuple[str, ...]
    message: str                      # must appear in the one line
    env: dict = field(default_factory=dict)
    make: Callable[[Path], None] | None = None   # files the case needs, under tmp
    status: int | None = None         # default: USAGE / PYTEST_USAGE


def _inventory(tmp: Path, user: str = "root", known_hosts: str = "host ssh-ed25519 AAAAC3Nz\n") -> None:
    (tmp / "id").write_text("key\n")
    (tmp / "known_hosts").write_text(known_hosts)
    (tmp / "inv.toml").write_text(
        f'[defaults]\nuser = "{user}"\nidentity = "id"\nknown_hosts = "known_hosts"\n'
        '[hosts.alpha]\naddress = "10.0.0.1"\n')


def _file(tmp: Path) -> None:
    (tmp / "afile").write_text("x\n")


def _triage(tmp: Path) -> None:
    (tmp / "res").mkdir()
    (tmp / "res" / "triage.json").write_text('{"signatures": []}\n')


MISSING = f"/tmp/qmh-bad-missing-{os.getpid()}"   # short (the length is checked first)
THEIRS = f"/tmp/qmh-bad-theirs-{os.getpid()}"


def _theirs(tmp: Path) -> None:
    os.mkdir(THEIRS, 0o700)
    os.chown(THEIRS, 65534, 65534)
HAMMER = ("hammer", "shutdown-race", "--seconds", "1", "--accel", "tcg")
PYTEST = (str(ROOT / "tests/migration"), "-k", "precopy/tcp/plain", "-p", "no:cacheprovider")

TABLE = [
    BadInput("machine-type", "pytest", (*PYTEST, "--machine-type", "bogus"),
             'unsupported machine type "bogus"'),
    BadInput("artifacts-file", "pytest", (*PYTEST, "--artifacts", "{tmp}/afile"),
             "--artifacts {tmp}/afile is a file", make=_file),
    BadInput("artifacts-under-file", "pytest", (*PYTEST, "--artifacts", "{tmp}/afile/sub"),
             "is under {tmp}/afile, which is not a directory", make=_file),
    BadInput("artifacts-unwritable", "pytest", (*PYTEST, "--artifacts", "/proc/qmh-nope"),
             "--artifacts /proc/qmh-nope: not writable"),
    BadInput("run-root-missing", "pytest", PYTEST, f"HARNESS_RUN_ROOT {MISSING} does not exist",
             env={"HARNESS_RUN_ROOT": MISSING}),
    BadInput("run-root-too-long", "pytest", PYTEST, "would pass AF_UNIX's 107 bytes",
             env={"HARNESS_RUN_ROOT": "/tmp/" + "x" * 60}),
    BadInput("run-root-not-ours", "pytest", PYTEST,
             f"HARNESS_RUN_ROOT {THEIRS} is owned by nobody (uid 65534)",
             env={"HARNESS_RUN_ROOT": THEIRS}, make=_theirs),
    BadInput("chaos-kinds-bogus", "pytest", (*PYTEST, "--chaos-kinds", "link-cut,bogus"),
             "--chaos-kinds bogus: no such action"),
    BadInput("hammer-attempts-0", "harness", (*HAMMER, "--attempts", "0"), "--attempts 0 must be >= 1"),
    BadInput("hammer-seconds-0", "harness", (*HAMMER[:2], "--seconds", "0"), "--seconds 0"),
    BadInput("hammer-seconds-negative", "harness", (*HAMMER[:2], "--seconds", "-5"), "--seconds -5"),
    BadInput("hammer-commands-bogus", "harness", (*HAMMER, "--commands", "bogus-cmd"),
             "bogus-cmd not in the QMP schema"),
    BadInput("hammer-artifacts-file", "harness", (*HAMMER, "--artifacts", "{tmp}/afile"),
             "--artifacts {tmp}/afile is a file", make=_file),
    BadInput("hammer-run-root-missing", "harness", HAMMER, f"HARNESS_RUN_ROOT {MISSING} does not exist",
             env={"HARNESS_RUN_ROOT": MISSING}),
    BadInput("hammer-qemu-missing", "harness", (*HAMMER, "--qemu", "/nonexistent"), "does not exist"),
    BadInput("known-hosts-base64", "harness", ("hosts", "check", "--connect", "{tmp}/inv.toml"),
             "line 1 has a key that is not valid base64",
             make=lambda t: _inventory(t, known_hosts="alpha ssh-ed25519 not*base64!\n")),
    BadInput("inventory-user-space", "harness", ("hosts", "check", "{tmp}/inv.toml"),
             "must be a login name ([A-Za-z0-9_][A-Za-z0-9_.-]*), not 'root x'",
             make=lambda t: _inventory(t, user="root x")),
    BadInput("report-triage-missing-field", "harness", ("report", "{tmp}/res", "-o", "{tmp}/r.html"),
             "field 'attempts' is missing", make=_triage, status=1),
]


def _fill(s: str, tmp: Path) -> str:
    return s.replace("{tmp}", str(tmp))


@pytest.mark.parametrize("case", TABLE, ids=[c.id for c in TABLE])
def test_bad_input_is_one_line_and_starts_nothing(case: BadInput, tmp_path):
    if case.make:
        case.make(tmp_path)
    run_root = Path(tempfile.mkdtemp(prefix="qmh-bad-"))
    try:
        env = dict(os.environ, HARNESS_RUN_ROOT=str(run_root), COLUMNS="300")
        env.pop("PYTEST_XDIST_WORKER", None)
        env.pop("PYTEST_ADDOPTS", None)
        env.update({k: _fill(v, tmp_path) for k, v in case.env.items()})
        args = [_fill(a, tmp_path) for a in case.args]
        if case.tool == "pytest" and not any(a == "--artifacts" for a in args):
            args += ["--artifacts", str(tmp_path / "art")]
        if case.tool == "harness" and case.args[0] == "hammer" and "--artifacts" not in args:
            args += ["--artifacts", str(tmp_path / "art")]
        argv = [sys.executable, "-m", "pytest" if case.tool == "pytest" else "harness.cli", *args]
        cp = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        out = cp.stdout + cp.stderr
        want = case.status if case.status is not None else \
            (PYTEST_USAGE if case.tool == "pytest" else USAGE)
        assert cp.returncode == want, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        msg = _fill(case.message, tmp_path)
        lines = [ln for ln in cp.stderr.splitlines() if msg in ln]
        assert len(lines) == 1, out[-3000:]
        if case.tool == "harness":
            assert cp.stderr.strip().count("\n") == 0, cp.stderr      # that one line, only
        assert not (tmp_path / "art").exists()                        # nothing started
        assert leakcheck.check(run_root) == []
    finally:
        if case.make is _theirs:
            os.rmdir(THEIRS)
        for p in run_root.iterdir() if run_root.exists() else []:
            p.rmdir() if p.is_dir() else p.unlink()
        run_root.rmdir()


def _bios_missing_wrapper(tmp: Path) -> Path:
    w = tmp / "qemu-no-bios"
    w.write_text('#!/bin/sh\nexec /usr/bin/qemu-system-x86_64 "$@" -bios /nonexistent/bios.bin\n')
    w.chmod(0o755)
    return w


def test_missing_bios_is_qemus_reason_in_one_line(tmp_path, inner_pytest):
    """QEMU connects its monitor before it loads firmware: the failure is QEMU's own
    error line, not a QMP greeting EOFError."""
    res = inner_pytest(str(ROOT / "tests/migration"), "-k", "precopy/tcp/plain", "-q", "-rf",
                       "--qemu", str(_bios_missing_wrapper(tmp_path)))
    assert res.returncode == 1, res.output[-3000:]
    summary = [ln for ln in res.output.splitlines() if ln.startswith("FAILED ")]
    assert summary and all("QEMU exited with 1 before start: qemu: could not load PC BIOS "
                           "'/nonexistent/bios.bin'" in ln for ln in summary), res.output[-3000:]
    assert "Traceback" not in res.output


def test_comma_in_run_root_is_escaped_for_qemu(tmp_path, inner_pytest):
    root = Path(tempfile.mkdtemp(prefix="qmh-a,b-"))
    try:
        res = inner_pytest(str(ROOT / "tests/migration"), "-k", "precopy/tcp/plain", "-q",
                           env={"HARNESS_RUN_ROOT": str(root)})
        assert res.returncode == 0, res.output[-3000:]
        assert list(root.iterdir()) == []
    finally:
        os.rmdir(root)
