"""Remote hosts over SSH against the network-namespace farm (ci/farm): pinned keys,
quoting, the remote supervisor and its watchdog, remote crash evidence, preflight,
and the catalog across hosts as a user runs it."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.hosts import inventory
from harness.hosts.base import HostError
from harness.hosts.placement import Placement
from harness.hosts.preflight import facts, gather
from harness.hosts.ssh import HostKeyRefused, SSHHost
from harness.qemu.machine import LaunchError
from harness.qemu.outcome import OutcomeKind
from harness.qemu.spec import GuestKind, GuestSpec, MachineSpec
from harness.run import TestRun

pytestmark = pytest.mark.qemu
ROOT = Path(__file__).resolve().parents[2]
FARM = ROOT / "ci" / "farm"
FARM_DIR = ROOT / ".farm"
INVENTORY = FARM_DIR / "inventory.toml"
QEMU = "/usr/bin/qemu-system-x86_64"
HOSTILE = "a b'c\"$(touch /tmp/qmh-PWNED)`;|&<>*\\\n\t-x"


@pytest.fixture(scope="module")
def farm():
    """The default farm: brought up if needed, and taken down again only if we did."""
    if os.geteuid() != 0:
        pytest.skip("the SSH farm needs root (network namespaces, sshd)")
    was_up = subprocess.run([str(FARM), "status"], capture_output=True).returncode == 0
    cp = subprocess.run([str(FARM), "up"], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    yield inventory.load(INVENTORY)
    if not was_up:
        subprocess.run([str(FARM), "down"], capture_output=True, timeout=120)


@pytest.fixture
def alpha(farm):
    h = SSHHost(farm.host("alpha"))
    yield h
    h.close()


def spec(name="source", **kw):
    return MachineSpec(binary=QEMU, name=name, accel="tcg",
                       guest=GuestSpec(kind=GuestKind.BOOTBLOCK), **kw)


@pytest.fixture
def remote_vm(tmp_path, farm):
    """remote_vm(entry=alpha) -> (host, run, launched Machine 'vm'); torn down after."""
    made = []

    def make(entry=None):
        h = SSHHost(entry or farm.host("alpha"))
        run = TestRun(tmp_path / "art", placement=Placement(h, h))
        made.append((h, run))
        return h, run, run.machine(spec("vm"))
    yield make
    for h, run in made:
        run.abort()
        h.close()


def qemu_pids_in_farm(farm) -> list[int]:
    """QEMUs inside the farm's namespaces (ours by construction)."""
    pids = []
    for e in farm.hosts:
        out = subprocess.run(["ip", "netns", "pids", e.netns], capture_output=True, text=True).stdout
        for p in out.split():
            try:
                if "qemu-system" in os.readlink(f"/proc/{p}/exe"):
                    pids.append(int(p))
            except OSError:
                pass
    return pids


def children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
        except (OSError, IndexError, ValueError):
            pass
    return out


# ------------------------------------------------------------------ host keys
def _known_hosts_with(tmp_path, farm, lines) -> Path:
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(lines))
    return kh


def test_changed_host_key_is_refused(tmp_path, farm):
    a, b = farm.host("alpha"), farm.host("beta")
    beta_key = next(l for l in b.known_hosts.read_text().splitlines() if l.startswith(b.address))
    # alpha's address pinned to beta's key: what a reinstalled (or spoofed) host looks like
    kh = _known_hosts_with(tmp_path, farm, [beta_key.replace(b.address, a.address, 1) + "\n"])
    from dataclasses import replace
    with pytest.raises(HostKeyRefused) as ei:
        SSHHost(replace(a, known_hosts=kh)).transport
    msg = str(ei.value)
    assert "\n" not in msg and "host key CHANGED" in msg and "'alpha'" in msg and "SHA256:" in msg


def test_unknown_host_key_is_refused_not_added(tmp_path, farm):
    a, b = farm.host("alpha"), farm.host("beta")
    only_beta = [l + "\n" for l in b.known_hosts.read_text().splitlines() if l.startswith(b.address)]
    kh = _known_hosts_with(tmp_path, farm, only_beta)
    from dataclasses import replace
    with pytest.raises(HostKeyRefused, match=r"is not in .*refusing \(keys are pinned, never added\)"):
        SSHHost(replace(a, known_hosts=kh)).transport
    assert kh.read_text() == "".join(only_beta)   # nothing was added


def test_catalog_run_with_a_wrong_key_fails_with_one_clear_line(tmp_path, farm):
    shutil.copytree(FARM_DIR / "keys", tmp_path / "keys")
    a, b = farm.host("alpha"), farm.host("beta")
    lines = (tmp_path / "keys" / "known_hosts").read_text().splitlines()
    beta_key = next(l for l in lines if l.startswith(b.address))
    (tmp_path / "keys" / "known_hosts").write_text(
        "\n".join(l for l in lines if not l.startswith(a.address)) + "\n"
        + beta_key.replace(b.address, a.address, 1) + "\n")
    inv = tmp_path / "inventory.toml"
    inv.write_text(INVENTORY.read_text())
    cp = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "tests/migration/test_precopy.py"),
                         "-k", "tcp/plain", "-p", "no:cacheprovider", "--inventory", str(inv),
                         "--place", "alpha:beta", "--artifacts", str(tmp_path / "art")],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 1, out[-3000:]
    assert "host key CHANGED" in out and "Traceback" not in out, out[-3000:]


# ------------------------------------------------------------------ commands and files
def test_remote_arguments_are_quoted(tmp_path, alpha):
    rc, out, _ = alpha.run(["printf", "%s", HOSTILE], 10)
    assert rc == 0 and out == HOSTILE
    assert not Path("/tmp/qmh-PWNED").exists()


def test_files_with_hostile_names_round_trip(tmp_path, alpha):
    local = tmp_path / HOSTILE.replace("/", "_").replace("\n", "_")
    local.write_bytes(b"guest image \x00\xff")
    staged = alpha.stage_file(local)
    assert alpha.read_file(staged) == b"guest image \x00\xff"
    run_dir = alpha.make_run_dir("quoting")
    try:
        target = run_dir / HOSTILE.replace("/", "_")
        alpha.put_file(local, target)
        assert alpha.read_file(target) == b"guest image \x00\xff"
        assert alpha.run(["ls", "--", str(target)], 10)[0] == 0
    finally:
        alpha.remove_run_dir(run_dir)
    assert alpha.run(["test", "-e", str(run_dir)], 10)[0] == 1
    with pytest.raises(HostError, match="not a harness run dir"):
        alpha.remove_run_dir(Path("/etc"))


def test_run_timeout_kills_the_remote_command(alpha):
    t0 = time.monotonic()
    rc, _, err = alpha.run(["sleep", "30"], 1)
    assert rc == 124 and "timeout after 1" in err and time.monotonic() - t0 < 10


# ------------------------------------------------------------------ processes
def test_remote_qemu_pid_exit_and_stderr(tmp_path, farm):
    a, b = SSHHost(farm.host("alpha")), SSHHost(farm.host("beta"))
    run = TestRun(tmp_path / "art", placement=Placement(a, b))
    src = run.machine(spec())
    dst = run.machine(spec("destination", incoming="defer", paused=True))
    assert a.run(["kill", "-0", str(src.pid)], 10)[0] == 0
    assert b.run(["kill", "-0", str(dst.pid)], 10)[0] == 0
    assert (tmp_path / "art/source/host.txt").read_text().strip() == "alpha"
    assert src.cmd("query-status")["status"] == "running"
    outcomes = run.finish()
    assert all(o.kind is OutcomeKind.CLEAN for o in outcomes)
    assert "waiting for connection" not in (tmp_path / "art/source/stderr.log").read_text()
    # A QEMU that refuses its arguments: its exit status and stderr come back from the host.
    bad = TestRun(tmp_path / "bad", placement=Placement(b, b))
    with pytest.raises(LaunchError, match=r"QEMU exited with 1 before start: .*-no-such-option"):
        bad.machine(spec("vm", extra_args=("-no-such-option",)))
    assert "-no-such-option" in (tmp_path / "bad/vm/stderr.log").read_text()
    bad.abort()
    a.close()
    b.close()


def test_remote_crash_has_signal_core_and_remote_backtrace(tmp_path, remote_vm):
    a, run, m = remote_vm()
    m.kill(signal.SIGABRT)
    outcome = m.wait_exit(60)
    assert outcome is not None and outcome.kind is OutcomeKind.CRASH
    assert outcome.signal_name == "SIGABRT"
    core = tmp_path / "art/vm/core"
    assert core.is_file() and core.stat().st_size > 1 << 20
    assert os.stat(core).st_blocks * 512 < core.stat().st_size   # holes kept
    bt = (tmp_path / "art/vm/backtrace.txt").read_text()
    assert "Thread" in bt and "#0" in bt
    run.abort()
    assert a.run(["sh", "-c", f"ls {a.tmp_root} | grep -c '^qmh-vm-' || true"], 10)[1].strip() == "0"


def test_dropped_session_kills_remote_qemu(tmp_path, farm):
    a = SSHHost(farm.host("alpha"))
    run = TestRun(tmp_path / "art", placement=Placement(a, a))
    m = run.machine(spec("vm"))
    pid = m.pid
    a.transport.sock.close()   # the controller's connection dies without goodbye
    watcher = SSHHost(farm.host("alpha"))
    deadline = time.monotonic() + 20
    while watcher.run(["kill", "-0", str(pid)], 5)[0] == 0:
        assert time.monotonic() < deadline, f"remote QEMU {pid} survived its session"
        time.sleep(0.2)
    assert m.wait_exit(10) is not None
    watcher.run(["rm", "-rf", "--", str(m.run_dir)], 10)
    m.run_dir = None
    run.abort()
    watcher.close()


def test_killed_worker_mid_migration_leaves_no_qemu(tmp_path, farm):
    """kill -9 of the xdist worker while a migration runs: the watchdogs end every QEMU."""
    assert not qemu_pids_in_farm(farm)
    ctl = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(ROOT / "tests/migration/test_postcopy.py"),
         "-k", "recovery/plain", "-n", "1", "--max-worker-restart", "0", "-p", "no:cacheprovider",
         "--inventory", str(INVENTORY), "--place", "alpha:beta",
         "--artifacts", str(tmp_path / "art")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(qemu_pids_in_farm(farm)) < 2:   # source and destination up
            assert time.monotonic() < deadline and ctl.poll() is None, "migration never started"
            time.sleep(0.2)
        time.sleep(2)  # into the migration
        workers = children_of(ctl.pid)
        assert workers, "no xdist worker found"
        for w in workers:
            os.kill(w, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while qemu_pids_in_farm(farm):
            assert time.monotonic() < deadline, f"QEMU left on the farm: {qemu_pids_in_farm(farm)}"
            time.sleep(0.2)
    finally:
        os.killpg(ctl.pid, signal.SIGKILL)
        ctl.wait(30)


# ------------------------------------------------------------------ preflight
def test_preflight_reads_facts_over_pinned_keys_and_caches_them(tmp_path, alpha):
    f = gather(alpha)
    assert f.host == "alpha" and f.python.startswith("Python 3")
    assert f.userfaultfd is None          # root on the farm
    assert f.rdma_devices == ()           # no RDMA on these kernels
    assert f.qemu_versions["default"].startswith("QEMU emulator version")
    assert f.free_bytes > 0 and f.blocking_reason() is None
    cached = facts(alpha, tmp_path)
    assert (tmp_path / "alpha.json").is_file() and facts(alpha, tmp_path) == cached


# ------------------------------------------------------------------ the catalog across hosts
def inner_catalog(tmp_path, *args):
    cp = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "tests/migration"),
                         "-p", "no:cacheprovider", "--inventory", str(INVENTORY),
                         "--artifacts", str(tmp_path / "art"), "-rs", *args],
                        capture_output=True, text=True, timeout=900, cwd=ROOT)
    return cp, cp.stdout + cp.stderr


@pytest.mark.parametrize("place", ["alpha:beta", "beta:alpha"])
def test_smoke_tier_across_hosts(tmp_path, farm, place):
    cp, out = inner_catalog(tmp_path, "-m", "smoke", "-n", "2", "--place", place)
    assert cp.returncode == 0, out[-4000:]
    # RDMA's no-device scenario counts apart: it exercises the error path only
    assert "8 passed, 2 xfailed, 1 passed (error path only)" in out, out[-2000:]


def test_postcopy_recovers_after_real_link_cut_across_hosts(tmp_path, farm):
    """Plus the tbf-shaped precopy: the three scenarios that act on real links."""
    cp, out = inner_catalog(tmp_path, "-k", "recovery/link-down or recovery/link-reject "
                            "or link-shaped", "--place", "beta:alpha")
    assert cp.returncode == 0 and "3 passed" in out, out[-4000:]
    assert not qemu_pids_in_farm(farm)


# ------------------------------------------------------------------ socat fallback, hangs
@pytest.fixture
def alpha_without_streamlocal(tmp_path, farm):
    """A second sshd on alpha (a free port) with AllowStreamLocalForwarding no."""
    a = farm.host("alpha")
    cfg_dir = FARM_DIR / "hosts" / "alpha"
    cfg = tmp_path / "sshd_config"
    pidfile = tmp_path / "sshd.pid"
    port = int(subprocess.run(   # a free port on alpha's address, asked inside its namespace
        ["ip", "netns", "exec", a.netns, sys.executable, "-c",
         f"import socket; s=socket.socket(); s.bind(({a.address!r}, 0)); print(s.getsockname()[1])"],
        capture_output=True, text=True, check=True, timeout=30).stdout)
    lines = [l for l in (cfg_dir / "sshd_config").read_text().splitlines()
             if not l.startswith(("Port ", "PidFile ", "AllowStreamLocalForwarding", "StrictModes"))]
    cfg.write_text("\n".join(lines + [f"Port {port}", f"PidFile {pidfile}",
                                      "AllowStreamLocalForwarding no", "StrictModes no"]) + "\n")
    subprocess.run(["ip", "netns", "exec", a.netns, "/usr/sbin/sshd", "-f", str(cfg),
                    "-E", str(tmp_path / "sshd.log")], check=True, timeout=30)
    key = next(l for l in a.known_hosts.read_text().splitlines() if l.startswith(a.address + " "))
    kh = tmp_path / "known_hosts"
    kh.write_text(key.replace(a.address, f"[{a.address}]:{port}", 1) + "\n")
    from dataclasses import replace
    deadline = time.monotonic() + 10
    while not pidfile.exists():
        assert time.monotonic() < deadline, (tmp_path / "sshd.log").read_text()
        time.sleep(0.05)
    yield replace(a, port=port, known_hosts=kh)
    os.kill(int(pidfile.read_text()), signal.SIGTERM)


def test_qmp_falls_back_to_socat_when_sshd_forbids_streamlocal(remote_vm, alpha_without_streamlocal):
    h, run, m = remote_vm(alpha_without_streamlocal)
    assert h._streamlocal is False            # refused once, then socat every time
    assert m.cmd("query-status")["status"] == "running"
    assert m.serial.wait_for(rb"AB", time.monotonic() + 30) is not None
    run.finish()


def test_remote_hang_dump_has_gdb_threads_from_the_host(tmp_path, remote_vm):
    _h, run, m = remote_vm()
    outcome = m.declare_hang("test: pretend a deadline passed")
    assert outcome.kind is OutcomeKind.HANG
    bt = (tmp_path / "art/vm/hang-backtrace.txt").read_text()
    assert "Thread" in bt and "main" in bt
    assert '"status": "running"' in (tmp_path / "art/vm/hang.json").read_text()


def test_hosts_check_connect_reports_each_host(tmp_path, farm):
    cp = subprocess.run([sys.executable, "-m", "harness.cli", "hosts", "check", "--connect",
                         str(INVENTORY)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0].startswith("alpha root@10.231.0.11:22") and lines[1].startswith("  ok ")
    assert "QEMU emulator version" in lines[1] and "rdma none" in lines[1]


def test_bad_inventory_is_a_one_line_usage_error(tmp_path, farm):
    shutil.copytree(FARM_DIR / "keys", tmp_path / "keys")   # paths are relative to the file
    bad = tmp_path / "inv.toml"
    bad.write_text(INVENTORY.read_text().replace("slots = 2", "slots = 0"))
    cp = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "tests/migration/test_precopy.py"),
                         "-p", "no:cacheprovider", "--inventory", str(bad)],
                        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert cp.returncode == 4, cp.stdout + cp.stderr
    err = [l for l in cp.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and "field 'slots' (from [defaults]) must be a positive integer, not 0" in err[0], cp.stderr
    cp = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "tests/migration/test_precopy.py"),
                         "-p", "no:cacheprovider", "--inventory", str(INVENTORY), "--place", "alpha:zeta"],
                        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert cp.returncode == 4 and "no host 'zeta'" in cp.stderr, cp.stderr
