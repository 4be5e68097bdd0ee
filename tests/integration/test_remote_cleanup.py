"""Remote state is undone by the host side, and remote caches are verified (ci/farm):

- kill -9 of the controller mid-fault (link-reject, postcopy recovery): the host's fault
  guard removes the QMH-FAULT chain and its jumps, the watchdog kills QEMU and removes
  its run dir;
- a zeroed image in a host's image cache is detected by sha256 and sent again;
- an image cache dir owned by someone else is refused in one line.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.guest import images
from harness.hosts import inventory
from harness.hosts.base import HostError
from harness.hosts.ssh import SSHHost

pytestmark = pytest.mark.qemu
ROOT = Path(__file__).resolve().parents[2]
FARM = ROOT / "ci" / "farm"
INVENTORY = ROOT / ".farm" / "inventory.toml"


@pytest.fixture(scope="module")
def farm():
    if os.geteuid() != 0:
        pytest.skip("the SSH farm needs root (network namespaces, sshd)")
    was_up = subprocess.run([str(FARM), "status"], capture_output=True).returncode == 0
    cp = subprocess.run([str(FARM), "up"], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    yield inventory.load(INVENTORY)
    if not was_up:
        subprocess.run([str(FARM), "down"], capture_output=True, timeout=120)


def in_ns(entry, *argv) -> str:
    return subprocess.run(["ip", "netns", "exec", entry.netns, *argv], capture_output=True,
                          text=True, timeout=30).stdout


def fault_rules(entry) -> list[str]:
    return [ln for ln in in_ns(entry, "iptables", "-w", "5", "-S").splitlines() if "QMH-FAULT" in ln]


def qemus_in(entry) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", entry.netns], capture_output=True, text=True).stdout
    pids = []
    for p in out.split():
        try:
            if "qemu-system" in Path(f"/proc/{p}/cmdline").read_text():
                pids.append(int(p))
        except OSError:
            pass
    return pids


def run_dirs(entry) -> list[str]:
    return sorted(p.name for p in Path(entry.run_root).glob("qmh-*") if p.name != "qmh-images")


def test_killed_controller_mid_fault_leaves_no_chain_qemu_or_run_dir(tmp_path, farm):
    beta = farm.host("beta")
    assert not fault_rules(beta), "a QMH-FAULT chain is already there"
    ctl = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(ROOT / "tests/migration"), "-p", "no:cacheprovider",
         "--inventory", str(INVENTORY), "--place", "alpha:beta",
         "--artifacts", str(tmp_path / "art"), "-k", "recovery/link-reject"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        seen = []
        while time.monotonic() < deadline and ctl.poll() is None:
            seen = fault_rules(beta)
            if any(r.startswith("-A INPUT") for r in seen):
                break
            time.sleep(0.05)
        assert seen, "the link-reject fault was never seen on the destination host"
        ctl.send_signal(signal.SIGKILL)     # mid-fault: nobody on our side restores it
        ctl.wait(30)
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait(30)
    for _ in range(150):                    # the host side notices the dropped session
        if not fault_rules(beta) and not qemus_in(beta) and not qemus_in(farm.host("alpha")) \
                and not run_dirs(beta) and not run_dirs(farm.host("alpha")):
            break
        time.sleep(0.2)
    assert fault_rules(beta) == []          # chain, INPUT and OUTPUT jumps all gone
    assert qemus_in(beta) == [] and qemus_in(farm.host("alpha")) == []
    assert run_dirs(beta) == [] and run_dirs(farm.host("alpha")) == []


def test_zeroed_remote_image_is_detected_and_sent_again(farm):
    local = images.build_bootblock()
    h = SSHHost(farm.host("alpha"))
    try:
        remote = h.stage_file(local)
        assert Path(remote).read_bytes() == local.read_bytes()   # the farm shares our filesystem
        Path(remote).write_bytes(bytes(local.stat().st_size))     # zeroed, same name and size
        again = h.stage_file(local)
        assert again == remote and Path(again).read_bytes() == local.read_bytes()
    finally:
        h.close()


def test_image_cache_owned_by_someone_else_is_refused(farm, tmp_path):
    entry = farm.host("alpha")
    cache = Path(entry.run_root) / "qmh-images"
    h = SSHHost(entry)
    st = os.stat(cache) if cache.exists() else None
    try:
        h.stage_file(images.build_bootblock())       # makes it if missing
        os.chown(cache, 65534, -1)                    # nobody's now
        h2 = SSHHost(entry)
        try:
            with pytest.raises(HostError) as err:
                h2.stage_file(images.build_bootblock())
        finally:
            h2.close()
        msg = str(err.value)
        assert "\n" not in msg and "qmh-images" in msg and "owned by uid 65534" in msg, msg
    finally:
        os.chown(cache, st.st_uid if st else 0, -1)
        h.close()
