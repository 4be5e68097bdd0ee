"""Preflight: facts about a remote host, read with pytest-testinfra.

testinfra's own paramiko backend accepts any host key; PinnedBackend hands it
the SSHHost's already-authenticated client, whose keys are pinned. Facts are
read once per host per run (cached in the run's artifact root, shared by the
xdist workers) and turned into skip reasons by harness.migration.requirements.
"""
from __future__ import annotations

import fcntl
import functools
import json
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

import testinfra.host
from testinfra.backend.paramiko import ParamikoBackend

from harness.hosts.base import HostError
from harness.hosts.ssh import SSHHost

MIN_FREE_BYTES = 1 << 30   # a run dir holds sockets, RAM dumps and maybe a core
COMMAND_TIMEOUT = 30.0


class PinnedBackend(ParamikoBackend):
    """testinfra over our SSHHost connection (pinned keys, TCP_NODELAY, keepalive)."""

    def __init__(self, ssh: SSHHost):
        e = ssh.entry
        super().__init__(f"{e.user}@{e.address}:{e.port}")
        self.ssh = ssh

    @functools.cached_property
    def client(self):
        self.ssh.transport   # connects (and verifies the host key) if needed
        return self.ssh._client

    def _exec_command(self, command: bytes) -> tuple[int, bytes, bytes]:
        """testinfra's own has no deadline: a hung host would hang the whole run."""
        chan = self.client.get_transport().open_session(timeout=COMMAND_TIMEOUT)
        chan.settimeout(COMMAND_TIMEOUT)
        try:
            chan.exec_command(command)
            out = chan.makefile("rb").read()
            err = chan.makefile_stderr("rb").read()
            return chan.recv_exit_status(), out, err
        except socket.timeout:
            raise HostError(f"host '{self.ssh.name}': preflight command {command[:60]!r} "
                            f"got no answer within {COMMAND_TIMEOUT:.0f}s") from None
        finally:
            chan.close()


def testinfra_host(ssh: SSHHost) -> testinfra.host.Host:
    backend = PinnedBackend(ssh)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host


@dataclass(frozen=True)
class HostFacts:
    host: str
    kvm_usable: bool
    userfaultfd: str | None          # None: usable; else why not
    memlock_bytes: int | None        # None: unlimited
    rdma_devices: tuple[str, ...]
    qemu_versions: dict = field(default_factory=dict)   # label -> version line or error
    free_bytes: int = 0
    python: str = ""

    def blocking_reason(self) -> str | None:
        """Why no test at all can run on this host, or None."""
        if not self.python.startswith("Python 3"):
            return f"host '{self.host}': python for the remote supervisor not usable ({self.python})"
        if self.free_bytes < MIN_FREE_BYTES:
            return (f"host '{self.host}': only {self.free_bytes >> 20} MiB free in its run root "
                    f"(need {MIN_FREE_BYTES >> 20} MiB)")
        return None


def gather(ssh: SSHHost) -> HostFacts:
    t = testinfra_host(ssh)
    e = ssh.entry
    root = t.user().name == "root"
    kvm = t.run("test -r /dev/kvm -a -w /dev/kvm").rc == 0
    uffd = None
    if not root and not t.file("/dev/userfaultfd").exists:
        knob = t.file("/proc/sys/vm/unprivileged_userfaultfd")
        if not knob.exists:
            uffd = "userfaultfd: kernel without vm.unprivileged_userfaultfd"
        elif knob.content_string.strip() != "1":
            uffd = "userfaultfd: not root, no /dev/userfaultfd and vm.unprivileged_userfaultfd=0"
    lim = t.run("ulimit -l").stdout.strip()
    memlock = None if lim == "unlimited" else int(lim or 0) * 1024
    ib = t.file("/sys/class/infiniband")
    rdma = tuple(sorted(ib.listdir())) if ib.exists and ib.is_directory else ()
    versions = {}
    for label, path in e.qemu:
        r = t.run("%s --version", path)
        versions[label] = (r.stdout.splitlines() or ["?"])[0] if r.rc == 0 else \
            f"error {r.rc}: {(r.stderr.strip().splitlines() or ['not runnable'])[-1]}"
    df = t.run("df -P -k %s", e.run_root)
    try:
        free = int(df.stdout.splitlines()[-1].split()[3]) * 1024
    except (IndexError, ValueError):
        free = 0
    py = t.run("%s --version", e.python)
    return HostFacts(host=e.name, kvm_usable=kvm, userfaultfd=uffd, memlock_bytes=memlock,
                     rdma_devices=rdma, qemu_versions=versions, free_bytes=free,
                     python=(py.stdout or py.stderr).strip() or f"exit {py.rc}")


def facts(ssh: SSHHost, cache_dir: Path) -> HostFacts:
    """gather() once per host per run; workers share the result through cache_dir."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{ssh.name}.json"
    with open(cache_dir / f"{ssh.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            d = json.loads(path.read_text())
            d["rdma_devices"] = tuple(d["rdma_devices"])
            return HostFacts(**d)
        except (OSError, ValueError, TypeError):
            pass
        f = gather(ssh)
        path.write_text(json.dumps(asdict(f), indent=2) + "\n")
        return f
