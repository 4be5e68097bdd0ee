"""The guest images boot under real QEMU (TCG) and behave as the harness
expects: the boot sector (and its paced firmware form) prints 'A' then 'B's
and keeps the page pattern;
the Linux guest reaches WORKLOAD READY, beats, and verifies its memory.

Each test starts one QEMU, and kills exactly that PID when it is done."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness.guest import images

pytestmark = pytest.mark.qemu

MiB = 1 << 20


def _qemu_binary() -> str:
    q = os.environ.get("QTEST_QEMU_BINARY") or shutil.which("qemu-system-x86_64")
    if not q:
        pytest.skip("qemu-system-x86_64 not found")
    return q


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _qemu(argv: list[str], workdir: Path) -> Iterator[subprocess.Popen]:
    stderr = open(workdir / "qemu.stderr", "wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                            preexec_fn=_die_with_parent)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        stderr.close()


def _stderr(workdir: Path) -> str:
    try:
        return (workdir / "qemu.stderr").read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def _connect_when_listening(path: Path, deadline: float) -> socket.socket:
    """QEMU's server socket appears a little after the process starts."""
    while True:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(str(path))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class _QMP:
    """Minimal synchronous QMP over a UNIX socket (just for this test)."""

    def __init__(self, path: Path, deadline: float):
        self.sock = _connect_when_listening(path, deadline)
        self.sock.settimeout(10)
        self.buf = b""
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name: str, **args) -> dict:
        self.sock.sendall(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        while True:
            msg = self._read()
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise RuntimeError(f"QMP {name}: {msg['error']}")

    def close(self) -> None:
        self.sock.close()


def bootblock_pattern_ok(firsts: bytes) -> bool:
    """The integrity rule: all equal, except that the pages at and after at
    most one boundary are exactly one behind (mod 256)."""
    breaks = [i for i in range(1, len(firsts)) if firsts[i] != firsts[i - 1]]
    if not breaks:
        return True
    return len(breaks) == 1 and (firsts[0] - firsts[breaks[0]]) % 256 == 1


def test_bootblock_pattern_rule_examples():
    assert bootblock_pattern_ok(bytes([5] * 10))
    assert bootblock_pattern_ok(bytes([6] * 4 + [5] * 6))
    assert bootblock_pattern_ok(bytes([0] * 4 + [255] * 6))
    assert not bootblock_pattern_ok(bytes([5] * 4 + [6] * 6))
    assert not bootblock_pattern_ok(bytes([6] * 4 + [4] * 6))
    assert not bootblock_pattern_ok(bytes([6, 5, 6, 5]))


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_bootblock_boots_and_dirties_memory(machine):
    qemu = _qemu_binary()
    bootblock = images.build_bootblock()
    with tempfile.TemporaryDirectory(prefix="hbb-") as tmp:
        work = Path(tmp)
        serial, qmp_sock, dump = work / "serial.log", work / "qmp.sock", work / "ram.bin"
        argv = [qemu, "-accel", "tcg", "-machine", machine, "-m", "256", "-display", "none",
                "-nodefaults", "-serial", f"file:{serial}",
                "-qmp", f"unix:{qmp_sock},server=on,wait=off",
                *images.bootblock_drive_args(bootblock)]
        with _qemu(argv, work) as proc:
            t0 = time.monotonic()
            deadline = t0 + 10
            first_b = None
            out = b""
            while time.monotonic() < deadline:
                assert proc.poll() is None, f"QEMU exited {proc.returncode}: {_stderr(work)}"
                out = serial.read_bytes() if serial.exists() else b""
                if first_b is None and b"B" in out:
                    first_b = (time.monotonic(), len(out))
                if first_b and time.monotonic() - first_b[0] >= 2 and out.count(b"B") >= 5:
                    break
                time.sleep(0.05)
            assert out[:1] == b"A", f"serial starts {out[:20]!r}, want 'A' then 'B's"
            assert set(out[1:]) <= {ord("B")}, f"unexpected serial output {out[:40]!r}"
            assert out.count(b"B") >= 5, f"only {out.count(b'B')} 'B' in 10 s"
            rate = (len(out) - first_b[1]) / (time.monotonic() - first_b[0])
            print(f"bootblock ({machine}): {rate:.0f} passes/s under TCG")

            qmp = _QMP(qmp_sock, time.monotonic() + 10)
            try:
                qmp.cmd("stop")
                qmp.cmd("pmemsave", val=MiB, size=99 * MiB, filename=str(dump))
            finally:
                qmp.close()
            ram = dump.read_bytes()
            firsts = ram[::4096]
            assert len(firsts) == 99 * 256
            assert firsts[0] != 0 or firsts[-1] != 0, "memory was never dirtied"
            assert bootblock_pattern_ok(firsts), "bootblock page pattern broken"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_bootrom_paces_its_passes_idles_and_keeps_the_pattern(machine):
    """The chaos guest: firmware (-bios) with no SeaBIOS, ~50 passes/s over
    [1 MiB, 33 MiB) with the vCPU halted in between (far below a core), and
    the same page rule."""
    qemu = _qemu_binary()
    rom = images.build_bootrom()
    with tempfile.TemporaryDirectory(prefix="hbr-") as tmp:
        work = Path(tmp)
        serial, qmp_sock, dump = work / "serial.log", work / "qmp.sock", work / "ram.bin"
        argv = [qemu, "-accel", "tcg", "-machine", machine, "-m", "64", "-display", "none",
                "-nodefaults", "-serial", f"file:{serial}", "-bios", str(rom),
                "-qmp", f"unix:{qmp_sock},server=on,wait=off"]
        with _qemu(argv, work) as proc:
            deadline = time.monotonic() + 10
            out = b""
            while b"B" not in out and time.monotonic() < deadline:
                assert proc.poll() is None, f"QEMU exited {proc.returncode}: {_stderr(work)}"
                out = serial.read_bytes() if serial.exists() else b""
                time.sleep(0.02)
            assert out[:2] == b"AB", f"serial starts {out[:20]!r}, want 'A' then 'B's"
            n0, c0, t0 = out.count(b"B"), _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(2.0)
            out = serial.read_bytes()
            passes, cpu = out.count(b"B") - n0, _cpu_seconds(proc.pid) - c0
            elapsed = time.monotonic() - t0
            print(f"bootrom ({machine}): {passes / elapsed:.0f} passes/s, "
                  f"{100 * cpu / elapsed:.0f}% of a core")
            assert set(out[1:]) <= {ord("B")}, f"unexpected serial output {out[:40]!r}"
            # paced by the PIT at 50 Hz: not a spinning loop (hundreds/s), not stalled
            assert 20 <= passes / elapsed <= 60, f"{passes} passes in {elapsed:.1f}s"
            assert cpu / elapsed < 0.6, f"{cpu:.2f} CPU-s in {elapsed:.1f}s: the vCPU does not idle"
            qmp = _QMP(qmp_sock, time.monotonic() + 10)
            try:
                qmp.cmd("stop")
                qmp.cmd("pmemsave", val=MiB, size=32 * MiB, filename=str(dump))
            finally:
                qmp.close()
            firsts = dump.read_bytes()[::4096]
            assert firsts[0] != 0 or firsts[-1] != 0, "memory was never dirtied"
            assert bootblock_pattern_ok(firsts), "bootblock page pattern broken"


class _Serial:
    """The guest console: a QEMU socket chardev (server) we connect to."""

    def __init__(self, path: Path, deadline: float):
        self.sock = _connect_when_listening(path, deadline)
        self.sock.settimeout(0.2)
        self.text = ""
        self.pos = 0  # parse position in self.text

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def wait_line(self, prefix: str, deadline: float, proc: subprocess.Popen) -> str:
        """The next complete line starting with prefix (after self.pos)."""
        while True:
            while True:
                nl = self.text.find("\n", self.pos)
                if nl < 0:
                    break
                line = self.text[self.pos:nl].strip("\r")
                self.pos = nl + 1
                if line.startswith(prefix):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no {prefix!r} line in time; console tail:\n"
                                     f"{self.text[-1500:]}")
            if proc.poll() is not None:
                raise AssertionError(f"QEMU exited {proc.returncode}; console tail:\n"
                                     f"{self.text[-1500:]}")
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise AssertionError("serial socket closed")
            self.text += chunk.decode(errors="replace")

    def close(self) -> None:
        self.sock.close()


@pytest.mark.linux_guest
def test_linux_guest_boots_beats_and_verifies():
    qemu = _qemu_binary()
    img = images.build_linux()
    mem = 64
    with tempfile.TemporaryDirectory(prefix="hlx-") as tmp:
        work = Path(tmp)
        sock, log = work / "serial.sock", work / "serial.log"
        argv = [qemu, "-accel", "tcg", "-machine", "q35", "-m", "512", "-display", "none",
                "-nodefaults", "-kernel", str(img.kernel), "-initrd", str(img.initrd),
                "-append", img.cmdline(mem_mib=mem, rate_mib_s=0, hb_ms=100),
                "-chardev", f"socket,id=ser0,path={sock},server=on,wait=off,logfile={log}",
                "-serial", "chardev:ser0"]
        with _qemu(argv, work) as proc:
            t0 = time.monotonic()
            con = _Serial(sock, t0 + 10)
            try:
                ready = con.wait_line("WORKLOAD READY", t0 + 60, proc)
                boot_s = time.monotonic() - t0
                print(f"linux: WORKLOAD READY after {boot_s:.2f} s under TCG")
                assert ready == f"WORKLOAD READY pages={mem * 256}"

                beats = [con.wait_line("HB ", time.monotonic() + 5, proc) for _ in range(3)]
                seqs = [int(b.split()[1]) for b in beats]
                stamps = [int(b.split()[2]) for b in beats]
                assert seqs == sorted(seqs) and len(set(seqs)) == 3
                assert stamps == sorted(stamps)

                con.send("verify")
                assert con.wait_line("VERIFY", time.monotonic() + 30, proc) == \
                    f"VERIFY pages={mem * 256} bad=0"

                # The verifier catches a single flipped byte (then dirtying repairs it).
                con.send("stop")
                con.wait_line("STOPPED", time.monotonic() + 10, proc)
                con.send("corrupt 1000 2049")
                con.wait_line("CORRUPTED page=1000", time.monotonic() + 10, proc)
                con.send("verify")
                assert con.wait_line("VERIFY", time.monotonic() + 30, proc) == \
                    f"VERIFY pages={mem * 256} bad=1"
                con.send("go")
                con.wait_line("GOING", time.monotonic() + 10, proc)
                con.wait_line("HB ", time.monotonic() + 5, proc)
            finally:
                con.close()
        logged = log.read_text(errors="replace")
        assert "WORKLOAD READY" in logged  # the logfile gets the console too
        assert "verify" not in logged  # no echo of what we typed
