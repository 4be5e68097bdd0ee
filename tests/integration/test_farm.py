"""ci/farm: the network-namespace SSH host farm, brought up and torn down for real.

Bridges, namespaces, veths and run roots are global on this machine, and the
default farm (prefix qmh, 10.231/10.232) may be up at the same time: these tests
use their own prefix and subnets (qmt, 10.241/10.242; qmtN, 10.241+2N/... on
xdist worker gwN) and their own DIR under tmp_path, and always run `down`.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FARM = REPO / "ci" / "farm"
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_N = int(_WORKER[2:]) if _WORKER.startswith("gw") and _WORKER[2:].isdigit() else 0
PREFIX = "qmt" if _N == 0 else f"qmt{_N}"
BASE = 241 + 2 * _N
MGMT = f"10.{BASE}.0"
MIG = f"10.{BASE + 1}.0"
ALIAS_TAG = "ci/farm dir="


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "ci/farm needs root (network namespaces, bridges, sshd); running as uid %d" % os.geteuid()
    if shutil.which("ip") is None:
        return "iproute2 `ip` is not installed"
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if p.returncode != 0:
        return f"`ip netns list` fails here: {p.stderr.strip()}"
    if not os.access("/usr/sbin/sshd", os.X_OK) or shutil.which("ssh-keygen") is None:
        return "openssh-server (/usr/sbin/sshd) and ssh-keygen are needed"
    if BASE + 1 > 254:
        return f"xdist worker {_WORKER}: no subnet base left"
    return None


_SKIP = _why_skip()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")

paramiko = pytest.importorskip("paramiko")


def farm(*args: str, dir: Path | None = None, exe: list[str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [*(exe or []), str(FARM), *args]
    if dir is not None:
        cmd += ["--prefix", PREFIX, "--subnet-base", str(BASE), "--dir", str(dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMH_FARM_")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"rc {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p.stdout


def one_line_usage_error(p: subprocess.CompletedProcess, *words: str, rc: int = 2) -> str:
    assert p.returncode == rc, f"rc {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def ip_json(*args: str) -> list:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


OUR_LINK_PREFIXES = (f"{PREFIX}-", f"{PREFIX}m-", f"{PREFIX}g-")    # not another worker's qmt1-...


def our_links() -> list[str]:
    return [l["ifname"] for l in ip_json("link") if l["ifname"].startswith(OUR_LINK_PREFIXES)]


def our_netns() -> list[str]:
    return [n["name"] for n in ip_json("netns", "list") if n["name"].startswith(f"{PREFIX}-")]


def our_run_roots() -> list[Path]:
    return sorted(Path("/tmp").glob(f"{PREFIX}-farm-*"))


def gone(pid: int, cfg_marker: str, timeout: float = 5.0) -> bool:
    """True once pid is dead (a zombie counts) or belongs to someone else (pid reuse)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X") or cfg_marker.encode() not in cmdline:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _owner_alive(farm_dir: Path) -> int | None:
    """The pid of the live pytest that made the farm in farm_dir, if any."""
    try:
        pid = int((farm_dir.parent / "farm.owner").read_text())
        return pid if b"pytest" in Path(f"/proc/{pid}/cmdline").read_bytes() else None
    except (OSError, ValueError):
        return None


@pytest.fixture
def farm_dir(tmp_path):
    """A DIR for this test's farm; `ci/farm down` always runs afterwards."""
    bridge = next((l for l in ip_json("link") if l["ifname"] == f"{PREFIX}-mgmt0"), None)
    if bridge is not None:
        alias = bridge.get("ifalias", "")
        owner = Path(alias[len(ALIAS_TAG):]) if alias.startswith(ALIAS_TAG) else None
        if owner is None or not owner.name == "farm":
            pytest.skip(f"prefix {PREFIX} is in use by something else ({PREFIX}-mgmt0 alias {alias!r})")
        if (pid := _owner_alive(owner)) is not None:
            pytest.skip(f"prefix {PREFIX} is in use by a concurrent test run (pytest pid {pid}, {owner})")
        ok(farm("down", dir=owner))     # left behind by a killed run
    (tmp_path / "farm.owner").write_text(str(os.getpid()))
    d = tmp_path / "farm"
    yield d
    p = farm("down", dir=d)
    assert p.returncode == 0, f"ci/farm down failed: {p.stderr}"


@pytest.fixture
def up(farm_dir):
    out = ok(farm("up", dir=farm_dir))
    return farm_dir, out


def inventory(d: Path):
    from harness.hosts.inventory import load
    return load(d / "inventory.toml")


def connect(d: Path, name: str):
    h = inventory(d).host(name)
    c = paramiko.SSHClient()
    c.load_host_keys(str(h.known_hosts))
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(h.address, port=h.port, username=h.user, key_filename=str(h.identity),
              look_for_keys=False, allow_agent=False, timeout=5, banner_timeout=5, auth_timeout=5)
    return c


def sh(c, cmd: str, timeout: float = 10) -> str:
    _, out, err = c.exec_command(cmd, timeout=timeout)
    text = out.read().decode()
    rc = out.channel.recv_exit_status()
    assert rc == 0, f"{cmd!r} on the farm host: rc {rc}: {err.read().decode()}"
    return text


# ---------------------------------------------------------------------------------------------

def test_up_builds_the_farm_and_a_second_up_changes_nothing(up):
    d, out = up
    lines = out.strip().splitlines()
    assert lines[-1] == f"farm up: 2 hosts, inventory {d / 'inventory.toml'}"
    assert any(ln.startswith(f"alpha: root@{MGMT}.11:22 in netns {PREFIX}-farm-alpha") and ln.endswith("created")
               for ln in lines), out
    assert any(ln.startswith("beta: ") for ln in lines) and not any(ln.startswith("gamma") for ln in lines)

    again = ok(farm("up", dir=d)).strip().splitlines()
    assert again[-1] == f"farm up: nothing changed, 2 hosts, inventory {d / 'inventory.toml'}"
    assert [ln.rsplit(": ", 1)[1] for ln in again[:-1]] == ["ok", "ok"], again

    status = ok(farm("status", dir=d, exe=["/usr/bin/python3"]))  # runs with the system python too
    assert "farm status: all 2 hosts up" in status
    assert f"alpha: netns {PREFIX}-farm-alpha present, sshd pid" in status

    inv = inventory(d)
    alpha = inv.host("alpha")
    assert (alpha.address, alpha.migration_address, alpha.migration_interface) == \
        (f"{MGMT}.11", f"{MIG}.11", "mig0")
    assert (alpha.netns, alpha.run_root, alpha.user, alpha.port) == \
        (f"{PREFIX}-farm-alpha", f"/tmp/{PREFIX}-farm-alpha", "root", 22)
    assert alpha.slots == 2 and alpha.tags == {"farm"} and alpha.python == "/usr/bin/python3"
    assert alpha.qemu_binary() == "/usr/bin/qemu-system-x86_64"
    for label, path in alpha.qemu:
        assert label == "default" or path == f"/opt/qemu-versions/{label}/qemu-system-x86_64"
    assert [h.name for h in inv.hosts] == ["alpha", "beta"]
    assert inv.host("beta").migration_address == f"{MIG}.12"

    # the known_hosts format paramiko reads, pinned to the management addresses
    known = (d / "keys" / "known_hosts").read_text().splitlines()
    assert [ln.split()[:2] for ln in known] == [[f"{MGMT}.11", "ssh-ed25519"], [f"{MGMT}.12", "ssh-ed25519"]]
    for p in (d, d / "keys", d / "hosts", d / "hosts" / "alpha", Path(f"/tmp/{PREFIX}-farm-alpha")):
        assert p.stat().st_mode & 0o777 == 0o700, p
    for p in (d / "keys" / "id_ed25519", d / "keys" / "authorized_keys", d / "hosts" / "beta" / "ssh_host_ed25519_key"):
        assert p.stat().st_mode & 0o777 == 0o600, p

    # the global objects, with our prefix
    assert set(our_netns()) == {f"{PREFIX}-farm-alpha", f"{PREFIX}-farm-beta"}
    assert set(our_links()) == {f"{PREFIX}-mgmt0", f"{PREFIX}-mig0", f"{PREFIX}m-alpha", f"{PREFIX}g-alpha",
                                f"{PREFIX}m-beta", f"{PREFIX}g-beta"}


def test_ssh_login_with_the_pinned_key_lands_in_the_hosts_netns(up):
    d, _ = up
    with connect(d, "alpha") as c:
        assert f"{MIG}.11/24" in sh(c, "ip -br addr show mig0")
        remote_ns = sh(c, "readlink /proc/self/ns/net").strip()
    assert remote_ns.startswith("net:[") and remote_ns != os.readlink("/proc/self/ns/net")
    with connect(d, "beta") as c:
        assert sh(c, "readlink /proc/self/ns/net").strip() not in (remote_ns, os.readlink("/proc/self/ns/net"))

    # a host key that is not pinned is refused (RejectPolicy, no accept-new)
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        c.connect(f"{MGMT}.11", username="root", key_filename=str(d / "keys" / "id_ed25519"),
                  look_for_keys=False, allow_agent=False, timeout=5)
    c.close()


LISTEN = r"""
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(1); s.settimeout(10)
print(s.getsockname()[1], flush=True)
conn, peer = s.accept(); print(peer[0], flush=True)
"""
CONNECT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print(s.getsockname()[0])
"""


def test_migration_network_alpha_reaches_beta_and_the_controller(up):
    d, _ = up
    with connect(d, "beta") as b, connect(d, "alpha") as a:
        _, out, _ = b.exec_command(f"/usr/bin/python3 -c '{LISTEN}' {MIG}.12", timeout=15)
        port = int(out.readline())
        src = sh(a, f"/usr/bin/python3 -c '{CONNECT}' {MIG}.12 {port}").strip()
        assert src == f"{MIG}.11"
        assert out.readline().strip() == f"{MIG}.11"      # beta saw alpha's migration address
        assert out.channel.recv_exit_status() == 0

        # the controller's migration address (where a userspace proxy sits)
        with socket.create_server((f"{MIG}.1", 0)) as srv:
            srv.settimeout(5)
            port = srv.getsockname()[1]
            assert sh(a, f"/usr/bin/python3 -c '{CONNECT}' {MIG}.1 {port}").strip() == f"{MIG}.11"
            conn, peer = srv.accept()
            conn.close()
            assert peer[0] == f"{MIG}.11"


def test_up_repairs_a_broken_farm_and_grows_and_shrinks(up):
    d, _ = up
    # Only the sleep started here: one left over from an earlier test may still be dying.
    before = set(sleeps_in(f"{PREFIX}-farm-beta"))
    with connect(d, "beta") as c:     # stands in for a QEMU the harness runs there
        c.exec_command("setsid sleep 1000 </dev/null >/dev/null 2>&1 &")
        deadline = time.monotonic() + 5
        while not (guest := [p for p in sleeps_in(f"{PREFIX}-farm-beta") if p not in before]):
            assert time.monotonic() < deadline, "the sleep never started"
            time.sleep(0.05)
    subprocess.run(["ip", "-n", f"{PREFIX}-farm-alpha", "link", "set", "mig0", "down"], check=True)
    beta_pid = int((d / "hosts" / "beta" / "sshd.pid").read_text())
    os.kill(beta_pid, 15)
    assert gone(beta_pid, "sshd_config")
    st = farm("status", dir=d)
    assert st.returncode == 1 and "beta: " in st.stdout and "NOT RUNNING" in st.stdout, st.stdout

    lines = ok(farm("up", dir=d)).strip().splitlines()
    assert lines[0].endswith("repaired: mig0 set up"), lines
    assert lines[1].endswith("repaired: sshd started"), lines
    assert lines[-1].startswith("farm up: 2 hosts")
    ok(farm("status", dir=d))
    assert not gone(guest[0], "sleep", timeout=0), "a repair killed a process inside the namespace"

    # a lost pid file: the sshd still holding the port is ours, it is replaced
    alpha_pid = int((d / "hosts" / "alpha" / "sshd.pid").read_text())
    (d / "hosts" / "alpha" / "sshd.pid").unlink()
    lines = ok(farm("up", dir=d)).strip().splitlines()
    assert lines[0].endswith(f"repaired: stray sshd {alpha_pid} killed; sshd started"), lines
    assert gone(alpha_pid, "sshd_config")
    with connect(d, "alpha") as c:
        assert "UP" in sh(c, "ip -br link show mig0")

    lines = ok(farm("up", "--hosts", "3", dir=d)).strip().splitlines()
    assert lines[-2].startswith(f"gamma: root@{MGMT}.13:22") and lines[-2].endswith("created"), lines
    assert [h.name for h in inventory(d).hosts] == ["alpha", "beta", "gamma"]
    with connect(d, "gamma") as c:
        assert f"{MIG}.13/24" in sh(c, "ip -br addr show mig0")
    # without --hosts, up keeps what is there
    assert ok(farm("up", dir=d)).strip().splitlines()[-1].startswith("farm up: nothing changed, 3 hosts")
    out = ok(farm("up", "--hosts", "2", dir=d))
    assert "removed gamma" in out
    assert f"{PREFIX}-farm-gamma" not in our_netns() and not Path(f"/tmp/{PREFIX}-farm-gamma").exists()
    assert [h.name for h in inventory(d).hosts] == ["alpha", "beta"]


def test_a_second_dir_cannot_take_over_a_prefix_in_use(up, tmp_path):
    d, _ = up
    other = tmp_path / "other"
    p = farm("up", dir=other)
    one_line_usage_error(p, f"prefix {PREFIX} is in use by the farm in {d}", rc=1)
    p = farm("down", dir=other)
    one_line_usage_error(p, f"prefix {PREFIX} is in use by the farm in {d}", rc=1)
    assert not other.exists()
    ok(farm("status", dir=d))


def sleeps_in(ns: str) -> list[int]:
    pids = []
    for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
        try:
            if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep\0"):
                pids.append(int(p))
        except OSError:
            pass    # a short-lived sshd-session child
    return pids


def test_down_leaves_nothing_and_twice_is_fine(up):
    d, _ = up
    pids = [int((d / "hosts" / n / "sshd.pid").read_text()) for n in ("alpha", "beta")]
    with connect(d, "beta") as c:     # something left running inside a namespace
        c.exec_command("setsid sleep 1000 </dev/null >/dev/null 2>&1 &")
        deadline = time.monotonic() + 5
        while not (stray := sleeps_in(f"{PREFIX}-farm-beta")):
            assert time.monotonic() < deadline, "the stray sleep never started"
            time.sleep(0.05)

    out = ok(farm("down", dir=d))
    assert out.startswith("farm down: removed alpha (sshd "), out
    assert our_netns() == [] and our_links() == [] and our_run_roots() == []
    assert not d.exists()
    for pid in pids:
        assert gone(pid, "sshd_config"), f"sshd {pid} survived down"
    assert gone(stray[0], "sleep"), "a process inside the namespace survived down"
    assert not any(r.get("dev", "").startswith(OUR_LINK_PREFIXES) for r in ip_json("route"))

    again = farm("down", dir=d)
    assert ok(again).strip() == f"farm down: nothing is up (prefix {PREFIX}, dir {d})"
    st = farm("status", dir=d)
    assert st.returncode == 1 and "nothing up" in st.stdout


def test_a_subnet_routed_by_something_else_is_refused(farm_dir):
    subprocess.run(["ip", "route", "add", "blackhole", f"{MIG}.0/24"], check=True)
    try:
        p = farm("up", dir=farm_dir)
    finally:
        subprocess.run(["ip", "route", "del", "blackhole", f"{MIG}.0/24"], check=True)
    one_line_usage_error(p, f"subnet {MIG}.0/24 is already routed", "blackhole", rc=1)
    assert our_links() == [] and our_netns() == [] and not farm_dir.exists()


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    one_line_usage_error(farm("frob"), "invalid choice: 'frob'")
    one_line_usage_error(farm(), "required")
    one_line_usage_error(farm("up", "--hosts", "5", dir=tmp_path / "f"), "--hosts", "5")
    one_line_usage_error(farm("up", "--prefix", "waytoolongprefix", "--dir", str(tmp_path / "f")), "--prefix")
    one_line_usage_error(farm("up", "--subnet-base", "254", "--dir", str(tmp_path / "f")), "--subnet-base 254")
    (tmp_path / "file").write_text("")
    one_line_usage_error(farm("up", dir=tmp_path / "file" / "farm"), "not writable", str(tmp_path / "file"))
    notfarm = tmp_path / "notfarm"
    notfarm.mkdir()
    (notfarm / "precious").write_text("x")
    one_line_usage_error(farm("up", dir=notfarm), "not a ci/farm directory")
    assert (notfarm / "precious").read_text() == "x"
    # a DIR remembers its prefix: another one is refused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "farm.json").write_text(json.dumps({"prefix": "qmo", "subnet_base": 251, "hosts": []}))
    one_line_usage_error(farm("status", "--prefix", "qmp", "--dir", str(tmp_path / "other")),
                         "--prefix qmo, not qmp")
    assert not (tmp_path / "f").exists()
    if shutil.which("setpriv"):
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "/usr/bin/python3", str(FARM), "status"],
                           capture_output=True, text=True, timeout=30, cwd="/")
        one_line_usage_error(p, "must run as root")
