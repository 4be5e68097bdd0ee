"""Machine: one QEMU process with its QMP monitor(s), serial console and evidence.

Lifecycle: launch() -> use .qmp / .serial -> shutdown() -> Outcome.
Every wait is bounded; on a crash or hang the Machine classifies what happened
and the caller raises MachineFailure carrying the Outcome.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any, Callable

from harness.hosts.base import Host, Process
from harness.qemu import debug, sanitizer
from harness.qemu.cmdline import GuestFiles, RunPaths, build_argv
from harness.qemu.outcome import CORE_SIGNALS, Outcome, OutcomeKind, classify
from harness.qemu.qmp import (Monitor, QMPCommandError, QMPDisconnected, QMPTimeout,
                              accept_until, listen_unix)
from harness.qemu.serial import SerialConsole
from harness.qemu.spec import MachineSpec


class MachineFailure(Exception):
    """A machine crashed, hung, or exited unexpectedly. str() starts with the signature."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.failure_message())
        self.outcome = outcome


# pytest prints "module.Class: message" in its summary; keep the signature near the
# front ("MachineFailure: crash SIGABRT: ...") rather than behind a dotted path.
MachineFailure.__module__ = "builtins"


class LaunchError(Exception):
    """QEMU did not come up (bad arguments, missing binary...)."""


# Deadlines (seconds). Generous for TCG on 2 loaded cores, never infinite.
QMP_CONNECT_TIMEOUT = 30.0
QUIT_TIMEOUT = 10.0
TERM_TIMEOUT = 10.0
KILL_TIMEOUT = 10.0
HUNG_TERM_TIMEOUT = 2.0


class Machine:
    def __init__(self, host: Host, spec: MachineSpec, artifacts: Path, guest: GuestFiles,
                 qmp_timeout: float = 30.0,
                 want_evidence: Callable[[int, str], bool] | None = None):
        self.host = host
        self.spec = spec
        self.artifacts = artifacts
        self.guest = guest
        self.qmp_timeout = qmp_timeout
        self.run_dir: Path | None = None
        self.proc: Process | None = None
        self.qmp: Monitor | None = None
        self.extra_qmp: list[Monitor] = []
        # Monitors left to the caller as connected sockets (no QMP client attached):
        # race recipes speak raw QMP on them (harness.stress.pump).
        self.raw_monitors: list = []
        self.serial: SerialConsole | None = None
        self.argv: list[str] = []
        self.outcome: Outcome | None = None
        self.exe = spec.binary   # the real executable (a wrapper script execs QEMU)
        self._expected_rcs: tuple[int, ...] = (0,)
        self._expected_stderr: str | None = None
        self._hang_reason: str | None = None
        self._listeners = []
        self._paths = None         # set by start(), read by connect()
        # Hammering decides per crash whether core + gdb are worth their cost
        # (rc, stderr) -> bool; None means always collect.
        self.want_evidence = want_evidence

    # ------------------------------------------------------------------ launch
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def stderr_path(self) -> Path:
        return self.artifacts / "stderr.log"

    def launch(self) -> "Machine":
        return self.start().connect()

    def start(self) -> "Machine":
        """Spawn QEMU without waiting for it: its sockets' connections queue on our
        listeners until connect(). Starting several machines before connecting any
        lets their initialisation overlap."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.run_dir = self.host.make_run_dir(self.spec.name)
        paths = RunPaths(self.run_dir, qemu_listens=self.host.qemu_listens)
        self.argv = build_argv(self.spec, paths, _staged(self.host, self.guest))
        (self.artifacts / "cmdline.txt").write_text(_shell_join(self.argv) + "\n")
        if not self.host.is_local:
            (self.artifacts / "host.txt").write_text(f"{self.host.name}\n")
        # Sanitizer options (whole alloc/free stacks, no leak report) unless the
        # caller's environment or the spec sets its own; inert for other builds.
        explicit = dict(self.spec.env)
        env = {**sanitizer.child_env(dict(os.environ), explicit), **explicit}
        if env:
            (self.artifacts / "env.txt").write_text(
                "".join(f"{k}={v}\n" for k, v in sorted(env.items())))
        if not self.host.qemu_listens:
            self._listeners = [listen_unix(p) for p in self._socket_paths(paths)]
        try:
            self.proc = self.host.spawn(self.argv, cwd=self.run_dir, env=env,
                                        stdout=self.artifacts / "stdout.log",
                                        stderr=self.stderr_path, core_dumps=self._core_dumps())
            (self.artifacts / "pid").write_text(f"{self.proc.pid}\n")
        except BaseException:
            self._close_listeners()
            self.shutdown()
            raise
        self._paths = paths
        return self

    def connect(self) -> "Machine":
        """Connect the started QEMU's monitors and serial console (see start())."""
        paths = self._paths
        try:
            deadline = time.monotonic() + QMP_CONNECT_TIMEOUT
            # QEMU opens its chardevs in command-line order: QMP, extra monitors, raw
            # monitors, serial. Connect them all before reading the greeting: a listening
            # QEMU (wait=on) only enters its main loop, and greets, once every socket has a client.
            what = ["QMP monitor", *[f"extra QMP monitor {i + 1}" for i in range(self.spec.extra_monitors)],
                    *[f"raw QMP monitor {i}" for i in range(self.spec.raw_monitors)], "serial chardev"]
            socks = self._socket_paths(paths)
            conns = []
            for i, path in enumerate(socks):
                c = self._connect(i, path, deadline)
                if c is None:
                    raise LaunchError(self._launch_failure(f"{what[i]} never connected"))
                conns.append(c)
            self.serial = SerialConsole(conns[-1], self.artifacts / "serial.log")
            self.qmp = Monitor(f"{self.name}", self.artifacts / "qmp.jsonl", self.qmp_timeout)
            try:
                self.qmp.attach(conns[0], timeout=QMP_CONNECT_TIMEOUT)
            except (QMPDisconnected, QMPTimeout, OSError, EOFError) as exc:
                # QEMU connects its chardevs before it loads firmware or checks the
                # machine: a missing BIOS shows up as a lost greeting. Say why it died.
                raise LaunchError(self._launch_failure(f"no QMP greeting ({exc})")) from None
            self.exe = self.host.real_exe(self.proc.pid, self.spec.binary)
            n_extra = self.spec.extra_monitors
            self.raw_monitors = conns[1 + n_extra:-1]
            for i, c in enumerate(conns[1:1 + n_extra]):
                mon = Monitor(f"{self.name}-mon{i + 1}", self.artifacts / f"qmp{i + 1}.jsonl",
                              self.qmp_timeout)
                mon.attach(c, timeout=QMP_CONNECT_TIMEOUT)
                self.extra_qmp.append(mon)
        except BaseException:
            self._close_listeners()
            self.shutdown()
            raise
        self._close_listeners()
        return self

    def _core_dumps(self) -> bool:
        """An evidence budget may also say whether this launch needs a core at all."""
        wanted = getattr(self.want_evidence, "cores_wanted", None)
        return True if wanted is None else bool(wanted())

    def _socket_paths(self, paths: RunPaths) -> list[Path]:
        return [paths.qmp, *[paths.extra_qmp(i) for i in range(self.spec.extra_monitors)],
                *[paths.raw_qmp(i) for i in range(self.spec.raw_monitors)], paths.serial]

    def _connect(self, index: int, path: Path, deadline: float):
        """The index-th socket: accept QEMU's connection locally, or connect to QEMU's."""
        alive = lambda: self.proc.poll() is None  # noqa: E731
        if self.host.qemu_listens:
            return self.host.connect_unix(path, deadline, alive)
        return accept_until(self._listeners[index], deadline, alive)

    def _close_listeners(self) -> None:
        for s in self._listeners:
            s.close()
        self._listeners = []

    def _launch_failure(self, what: str) -> str:
        rc = self.proc.wait(5.0) if self.proc else None
        err = qemu_error_line(self.stderr_text())
        if rc is not None:
            return f"{self.name}: QEMU exited with {rc} before start: {err or what}"
        return f"{self.name}: {what} within {QMP_CONNECT_TIMEOUT}s"

    # ------------------------------------------------------------------ QMP
    def cmd(self, command: str, args: dict | None = None, *, timeout: float | None = None,
            oob: bool = False) -> Any:
        """QMP command; a lost connection or missing reply becomes a MachineFailure."""
        assert self.qmp is not None, "machine not launched"
        try:
            return self.qmp.cmd(command, args, timeout=timeout, oob=oob)
        except QMPDisconnected:
            raise MachineFailure(self._died(f"while executing {command}")) from None
        except QMPTimeout as exc:
            raise MachineFailure(self.declare_hang(str(exc), qmp_dead=True)) from None

    def try_cmd(self, command: str, args: dict | None = None, timeout: float = 5.0) -> Any:
        """For state dumps: never raises, returns {'error': ...} instead."""
        if self.qmp is None:
            return {"error": "no monitor"}
        return self.qmp.try_cmd(command, args, timeout)

    def status(self) -> str:
        return self.cmd("query-status")["status"]

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ expectations
    def expect_exit(self, returncodes: tuple[int, ...] = (1,), stderr_regex: str | None = None) -> None:
        """Declare that this QEMU is expected to exit with one of returncodes."""
        self._expected_rcs = returncodes
        self._expected_stderr = stderr_regex

    def allow_exit(self, returncode: int) -> None:
        """Also accept returncode as an expected exit, keeping what was declared before
        (chaos: a plan that SIGTERMs a side that may also fail its migration)."""
        self._expected_rcs = tuple(sorted(set(self._expected_rcs) | {returncode}))

    def expect_clean(self) -> None:
        self._expected_rcs = (0,)
        self._expected_stderr = None

    # ------------------------------------------------------------------ evidence
    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def dump_state(self, label: str = "state", qmp: bool = True) -> dict:
        """query-status, query-migrate, gdb thread backtraces of the live PID -> artifacts.

        qmp=False when the monitor is already known not to answer (saves two timeouts)."""
        state: dict[str, Any] = {"machine": self.name, "label": label, "time": time.time()}
        if not qmp:
            state["query-status"] = state["query-migrate"] = {"error": "monitor not answering"}
        elif self.qmp is not None and self.is_running():
            state["query-status"] = self.try_cmd("query-status", timeout=3.0)
            state["query-migrate"] = self.try_cmd("query-migrate", timeout=3.0)
        state["alive"] = self.is_running()
        path = self.artifacts / f"{label}.json"
        path.write_text(json.dumps(state, indent=2, default=str) + "\n")
        if self.is_running():
            bt = debug.backtrace_of_pid(self.pid, timeout=60, run=self.host.run)
            (self.artifacts / f"{label}-backtrace.txt").write_text(bt)
            state["backtrace_file"] = str(self.artifacts / f"{label}-backtrace.txt")
        return state

    def declare_hang(self, reason: str, qmp_dead: bool = False) -> Outcome:
        """A deadline passed: dump state first, then classify as a hang."""
        if self._hang_reason is None:
            self._hang_reason = reason
            self.dump_state("hang", qmp=not qmp_dead)
        self.outcome = classify(None, self.stderr_text(), hang=reason,
                                backtrace=_read(self.artifacts / "hang-backtrace.txt"),
                                artifact_dir=self.artifacts)
        return self.outcome

    def _died(self, context: str) -> Outcome:
        """The monitor went away: wait for the exit, then classify it."""
        rc = self.proc.wait(5.0) if self.proc else None
        if rc is None:
            return self.declare_hang(f"{self.name}: QMP connection lost {context} but QEMU "
                                     f"(pid {self.pid}) did not exit within 5s")
        return self._classify_exit(rc)

    def _classify_exit(self, rc: int) -> Outcome:
        core = bt = note = None
        collect = self.want_evidence is None or self.want_evidence(rc, self.stderr_text())
        if rc < 0 and -rc in CORE_SIGNALS and self.run_dir is not None and collect:
            found = debug.search_core(self.run_dir, self.pid, self.exe, run=self.host.run)
            note = found.note
            if found.path is not None:
                # gdb runs on the host that has the binary and the core; then the core
                # comes into the local artifacts.
                bt = debug.backtrace_from_core(self.exe, found.path, timeout=120, run=self.host.run)
                (self.artifacts / "backtrace.txt").write_text(bt)
                core = self.artifacts / "core"
                self.host.take_file(Path(found.path), core)
        self.outcome = classify(rc, self.stderr_text(), expected_returncodes=self._expected_rcs,
                                expected_stderr_regex=self._expected_stderr, core=core,
                                core_note=note, backtrace=bt, artifact_dir=self.artifacts)
        return self.outcome

    # ------------------------------------------------------------------ shutdown
    def wait_exit(self, timeout: float) -> Outcome | None:
        """Wait for QEMU to exit by itself; classify it. None if still running."""
        if self.proc is None:
            return None
        rc = self.proc.wait(timeout)
        if rc is None:
            return None
        return self._finish(self._classify_exit(rc))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)

    def shutdown(self, graceful: bool = True) -> Outcome:
        """quit, then SIGTERM, then SIGKILL, each with a deadline; classify the exit."""
        if self.outcome is not None and self.proc is not None and self.proc.poll() is not None:
            return self._finish(self.outcome)
        if self.proc is None:
            return self._finish(classify(0, "", artifact_dir=self.artifacts))
        rc = self.proc.poll()
        hang_before = self._hang_reason is not None
        if rc is None and graceful and self.qmp is not None and not hang_before:
            try:
                self.qmp.cmd("quit", timeout=QUIT_TIMEOUT)
            except (QMPDisconnected, QMPTimeout, QMPCommandError):
                pass
            rc = self.proc.wait(QUIT_TIMEOUT)
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            # A machine already declared hung (state dumped) gets a short grace only.
            rc = self.proc.wait(HUNG_TERM_TIMEOUT if hang_before else TERM_TIMEOUT)
            if rc is None and not hang_before and graceful:
                # Neither quit nor SIGTERM ended it: that is a hang at shutdown.
                self.declare_hang(f"{self.name}: did not exit within {QUIT_TIMEOUT + TERM_TIMEOUT:.0f}s "
                                  "of quit and SIGTERM")
        if rc is None:
            self.proc.kill_group(signal.SIGKILL)
            rc = self.proc.wait(KILL_TIMEOUT)
        if self._hang_reason is not None:
            return self._finish(self.outcome)
        if rc is None:
            return self._finish(self.declare_hang(f"{self.name}: survived SIGKILL for {KILL_TIMEOUT}s"))
        if rc == -signal.SIGTERM and graceful:
            rc = 0  # we asked it to stop; QEMU exiting on SIGTERM is a clean stop
        return self._finish(self._classify_exit(rc))

    def _finish(self, outcome: Outcome) -> Outcome:
        for mon in [self.qmp, *self.extra_qmp]:
            if mon is not None:
                mon.close()
        for sock in self.raw_monitors:
            sock.close()
        self.raw_monitors = []
        if self.serial is not None:
            self.serial.close()
            self.serial = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill_group(signal.SIGKILL)
            self.proc.wait(KILL_TIMEOUT)
        if self.run_dir is not None:
            self.host.remove_run_dir(self.run_dir)
            self.run_dir = None
        self.outcome = outcome
        (self.artifacts / "outcome.json").write_text(json.dumps(outcome.to_dict(), indent=2) + "\n")
        if outcome.sanitizer_report is not None:
            # access/free/alloc stacks in full (the signature keeps only the top frames)
            (self.artifacts / "asan.txt").write_text(sanitizer.report_text(self.stderr_text()))
        return outcome


def _staged(host: Host, guest: GuestFiles) -> GuestFiles:
    """Guest images where the host can read them (copied once to a remote host)."""
    if host.is_local:
        return guest
    stage = lambda p: host.stage_file(p) if p is not None else None  # noqa: E731
    return GuestFiles(bootblock=stage(guest.bootblock), bootrom=stage(guest.bootrom), kernel=stage(guest.kernel),
                      initrd=stage(guest.initrd), cmdline=guest.cmdline)


def _shell_join(argv: list[str]) -> str:
    import shlex
    return " ".join(shlex.quote(a) for a in argv)


_QEMU_ERROR = re.compile(r"^\S*qemu[^\s:]*: (?!info: |warning: )")


def qemu_error_line(stderr: str) -> str:
    """QEMU's own reason from its stderr: its first 'qemu...: ' error line (not the
    'Use -machine help ...' hint after it), else the last line."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    errors = [l for l in lines if _QEMU_ERROR.match(l)]
    return errors[0] if errors else (lines[-1] if lines else "")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


__all__ = ["Machine", "MachineFailure", "LaunchError", "OutcomeKind"]
