"""SSHHost: QEMU on another machine, driven over one persistent paramiko connection.

- Host keys are pinned: only the inventory's known_hosts file is trusted; an
  unknown or changed key is refused (HostKeyRefused), never added.
- Every remote command is an argv list, quoted with shlex for the remote shell.
- QEMU runs under harness/hosts/supervisor.py, which reports PID, stderr and
  exit status over its exec channel and kills QEMU when the session drops.
- QEMU's QMP and serial UNIX sockets are reached through direct-streamlocal
  channels (socat as fallback) bridged into local socketpairs for qemu.qmp.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shlex
import socket
import stat
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, Mapping, Sequence

import paramiko

from harness.hosts.base import Host, HostError, Process
from harness.hosts.inventory import HostEntry

SUPERVISOR_SRC = (Path(__file__).with_name("supervisor.py")).read_text()
CONNECT_TIMEOUT = 15.0
SPAWN_TIMEOUT = 20.0
SOCAT_MARKER = "qmh-socat-connecting"
CORE_FETCH_TIMEOUT = 120.0
BRIDGE_LINGER = 10.0
GUARD_TIMEOUT = 30.0   # an answer from the host's fault guard (it starts python first)   # after our side closed, how long the remote side may take to close


class _QuietRetries(logging.Filter):
    """connect_unix retries until QEMU listens; paramiko logs each refusal as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open failed: Connect failed" not in record.getMessage()


logging.getLogger("paramiko.transport").addFilter(_QuietRetries())

# QEMU's own note that a server chardev waits for us: noise in every stderr.log.
_WAITING_RX = re.compile(rb"^[^\n]*: info: QEMU waiting for connection on: [^\n]*\n", re.M)


class HostKeyRefused(HostError):
    """The host's key is not the pinned one (unknown or changed)."""


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Keys are pinned: an unknown host key is an error naming what was offered."""

    def __init__(self, entry: HostEntry):
        self.entry = entry

    def missing_host_key(self, client, hostname, key):
        raise HostKeyRefused(
            f"host '{self.entry.name}' ({hostname}): {key.get_name()} key {fingerprint(key)} "
            f"is not in {self.entry.known_hosts}; refusing (keys are pinned, never added)")


class SSHHost(Host):
    is_local = False
    qemu_listens = True   # we cannot listen on its filesystem: QEMU serves, we connect

    def __init__(self, entry: HostEntry):
        self.entry = entry
        self.name = entry.name
        self.listen_address = entry.migration_address
        self.tmp_root = entry.run_root
        self.python = entry.python
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._sftp: paramiko.SFTPClient | None = None
        self._streamlocal: bool | None = None  # None: not tried yet
        self._local_digests: dict[tuple, str] = {}   # (path, size, mtime) -> sha256 of a local image
        self._uid: int | None = None
        self._guard = None
        self._guard_lock = threading.Lock()
        self._checked_dirs: set[str] = set()
        self._guarded_dirs: set[str] = set()

    # ------------------------------------------------------------------ connection
    @property
    def transport(self) -> paramiko.Transport:
        with self._lock:
            if self._client is None or not self._client.get_transport() \
                    or not self._client.get_transport().is_active():
                self._client = self._connect()
                self._sftp = None
            return self._client.get_transport()

    def _connect(self) -> paramiko.SSHClient:
        e = self.entry
        where = f"host '{e.name}' ({e.user}@{e.address}:{e.port})"
        client = paramiko.SSHClient()
        try:
            client.get_host_keys().load(str(e.known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise HostError(f"{where}: cannot read known_hosts {e.known_hosts}: {exc}") from None
        client.set_missing_host_key_policy(_RefuseUnknown(e))
        try:
            sock = socket.create_connection((e.address, e.port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise HostError(f"{where}: cannot connect: {exc.strerror or exc}") from None
        # Small QMP messages: without NODELAY each waits for Nagle (~40 ms a round trip).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            client.connect(e.address, port=e.port, username=e.user, key_filename=str(e.identity),
                           sock=sock, allow_agent=False, look_for_keys=False,
                           timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT,
                           auth_timeout=CONNECT_TIMEOUT)
        except HostKeyRefused:
            _abandon(client, sock)
            raise
        except paramiko.BadHostKeyException as exc:
            _abandon(client, sock)
            raise HostKeyRefused(
                f"{where}: host key CHANGED: {e.known_hosts} pins {fingerprint(exc.expected_key)}, "
                f"the host offered {fingerprint(exc.key)}; refusing (fix known_hosts only if "
                "the host was really reinstalled)") from None
        except paramiko.AuthenticationException as exc:
            _abandon(client, sock)
            raise HostError(f"{where}: authentication with {e.identity} failed: {exc}") from None
        except (paramiko.SSHException, OSError) as exc:
            _abandon(client, sock)
            raise HostError(f"{where}: SSH failed: {exc}") from None
        # Notice a dead link within seconds rather than at the next write.
        client.get_transport().set_keepalive(5)
        return client

    def fault_guard(self):
        """The host-side guard of this connection (supervisor.py in guard mode): faults
        recorded with it are undone on the host when this connection drops."""
        from harness.faults.guard import FaultGuard
        with self._guard_lock:
            if self._guard is not None and not self._guard.closed:
                return self._guard
            chan = self._exec(f"exec {shlex.quote(self.entry.python)} -c {shlex.quote(SUPERVISOR_SRC)}")
            chan.settimeout(GUARD_TIMEOUT)
            chan.sendall(b'{"guard": true}\n')
            reader = chan.makefile("rb")
            self._guard = FaultGuard(chan.sendall, reader.readline, chan.close, label=self.name)
            return self._guard

    def close(self) -> None:
        with self._guard_lock:
            if self._guard is not None:
                self._guard.close()     # the host undoes what is still recorded
                self._guard = None
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = self._sftp = None

    def sftp(self) -> paramiko.SFTPClient:
        t = self.transport
        with self._lock:
            if self._sftp is None:
                self._sftp = paramiko.SFTPClient.from_transport(t)
            return self._sftp

    def _exec(self, command: str) -> paramiko.Channel:
        try:
            chan = self.transport.open_session(timeout=CONNECT_TIMEOUT)
            chan.exec_command(command)
        except paramiko.SSHException as exc:
            raise HostError(f"host '{self.name}': cannot start a remote command: {exc}") from None
        return chan

    # ------------------------------------------------------------------ commands
    def run(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        # coreutils timeout on the host: the command dies there, not just our wait.
        cmd = f"exec timeout -k 2 {math.ceil(timeout)} {shlex.join(argv)}"
        chan = self._exec(cmd)
        chan.settimeout(timeout + 5)
        try:
            # Blocking reads to EOF wake on the packet itself (no polling delay); stderr
            # is buffered by paramiko meanwhile (a window's worth, plenty for commands).
            out = chan.makefile("rb").read()
            err = chan.makefile_stderr("rb").read()
            rc = chan.recv_exit_status()
        except socket.timeout:
            return 124, "", f"timeout after {timeout}s on {self.name}"
        finally:
            chan.close()
        if rc == 124:
            err += f"\ntimeout after {timeout}s on {self.name}".encode()
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def check(self, argv: Sequence[str], timeout: float = 30.0) -> str:
        rc, out, err = self.run(argv, timeout)
        if rc != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise HostError(f"host '{self.name}': {shlex.join(argv)[:120]} failed ({rc}): {last}")
        return out

    # ------------------------------------------------------------------ processes
    def spawn(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
              stdout: Path, stderr: Path, pass_fds: Sequence[int] = (),
              core_dumps: bool = True) -> Process:
        # core_dumps=False is a local speed-up only: the remote supervisor always enables cores.
        if pass_fds:
            raise HostError(f"host '{self.name}': file descriptors cannot be passed to a remote QEMU")
        chan = self._exec(f"exec {shlex.quote(self.entry.python)} -c {shlex.quote(SUPERVISOR_SRC)}")
        spec = {"argv": list(argv), "cwd": str(cwd), "env": dict(env),
                "stdout": str(Path(cwd) / "stdout.log")}
        chan.sendall((json.dumps(spec) + "\n").encode())
        return RemoteProcess(self, chan, tuple(argv), Path(stderr))

    # File operations go over SFTP where they can: sshd serves it without starting the
    # user's login shell, whose rc files may cost 100 ms per exec (pyenv here).
    def real_exe(self, pid: int, fallback: str) -> str:
        try:
            return self.sftp().readlink(f"/proc/{pid}/exe") or fallback
        except IOError:
            return fallback

    # ------------------------------------------------------------------ run dirs, files
    def make_run_dir(self, prefix: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", prefix)[:24]
        sftp = self.sftp()
        self._check_run_root(sftp)
        for _ in range(20):
            path = f"{self.tmp_root}/qmh-{safe}-{secrets.token_hex(4)}"
            try:
                sftp.mkdir(path, 0o700)   # fails if it exists: the name is ours alone
            except IOError:
                continue
            sftp.chmod(path, 0o700)       # mkdir's mode is filtered by the server's umask
            if self._uid is None:         # we just made it: its owner is us
                self._uid = sftp.stat(path).st_uid
            # Removed by the host's guard if our connection drops (a machine's run dir
            # also by its supervisor's watchdog; staged credentials, COLO and cpr work
            # dirs have no supervisor).
            self._guard_dir(path)
            return Path(path)
        raise HostError(f"host '{self.name}': cannot create a run dir in {self.tmp_root}")

    def _check_run_root(self, sftp: paramiko.SFTPClient) -> None:
        """The run root is a shared sticky dir (/tmp) or a private one of ours."""
        if self.tmp_root in self._checked_dirs:
            return
        try:
            a = sftp.stat(self.tmp_root)
        except IOError:
            raise HostError(f"host '{self.name}': run_root {self.tmp_root} does not exist") from None
        mode = a.st_mode or 0
        if not (mode & stat.S_ISVTX and mode & 0o002):   # not /tmp-like: must be ours, private
            self._private_dir(self.tmp_root, "run_root")
        self._checked_dirs.add(self.tmp_root)

    def _guard_dir(self, path: str) -> None:
        from harness.faults.guard import GuardError
        try:
            self.fault_guard().record(f"dir:{path}", [["rm", "-rf", "--", path]])
        except (GuardError, HostError) as exc:
            self._sftp_rmtree(self.sftp(), path)
            raise HostError(f"host '{self.name}': cannot guard run dir {path}: {exc}") from None
        self._guarded_dirs.add(path)

    def remove_run_dir(self, path: Path) -> None:
        if not path.name.startswith("qmh-") or str(path.parent) != self.tmp_root:
            raise HostError(f"refusing to remove {self.name}:{path}: not a harness run dir")
        if str(path) in self._guarded_dirs:
            self._guarded_dirs.discard(str(path))
            from harness.faults.guard import GuardError
            try:
                self.fault_guard().forget(f"dir:{path}")
            except (GuardError, HostError):
                pass
        try:
            self._sftp_rmtree(self.sftp(), str(path))
        except IOError:   # something SFTP cannot remove (odd permissions): the shell can
            self.run(["rm", "-rf", "--", str(path)], 60)

    def _sftp_rmtree(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            entries = sftp.listdir_attr(path)
        except FileNotFoundError:
            return
        for e in entries:
            child = f"{path}/{e.filename}"
            if stat.S_ISDIR(e.st_mode):
                self._sftp_rmtree(sftp, child)
            else:
                sftp.remove(child)
        sftp.rmdir(path)

    def stage_file(self, local: Path) -> Path:
        """Copy a guest image to the host (content-addressed); return its path there.

        Every reuse is checked by sha256 on the host (a zeroed or truncated copy made
        every later test a false hang): a copy that differs is sent again. The cache
        dir must be ours and private, like the run dirs beside it."""
        st = local.stat()
        key = (str(local), st.st_size, st.st_mtime_ns)
        digest = self._local_digests.get(key)
        if digest is None:
            digest = self._local_digests[key] = hashlib.sha256(local.read_bytes()).hexdigest()
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", local.name)
        rdir = f"{self.tmp_root}/qmh-images"
        remote = f"{rdir}/{digest[:16]}-{name}"
        self._private_dir(rdir, "image cache")
        if self._remote_sha256(remote, st.st_size) != digest:
            tmp = f"{remote}.{os.getpid()}.{threading.get_ident()}.part"
            self.sftp().put(str(local), tmp)
            self.sftp().chmod(tmp, 0o600)
            self.sftp().posix_rename(tmp, remote)   # atomic: parallel workers may race here
        return Path(remote)

    def _remote_sha256(self, path: str, size: int) -> str | None:
        """sha256 of a file on the host; None if it is missing or has another size."""
        sftp = self.sftp()
        try:
            if sftp.stat(path).st_size != size:
                return None
        except IOError:
            return None
        if size <= 1 << 20:   # small (the boot sector): read it, one round trip
            try:
                with sftp.open(path, "rb") as f:
                    return hashlib.sha256(f.read()).hexdigest()
            except IOError:
                return None
        rc, out, _err = self.run(["sha256sum", "--", path], 120)
        return out.split()[0] if rc == 0 and out.split() else None

    def remote_uid(self) -> int:
        """Our uid on the host (owner checks of shared dirs)."""
        if self._uid is None:
            self._uid = int(self.check(["id", "-u"]).strip())
        return self._uid

    def _private_dir(self, path: str, what: str) -> None:
        """Create path 0700, or check that the existing one is ours and not writable by
        others: never trust a dir somebody else made in a shared run root (/tmp)."""
        if path in self._checked_dirs:
            return
        sftp = self.sftp()
        try:
            sftp.mkdir(path, 0o700)
            sftp.chmod(path, 0o700)       # mkdir's mode is filtered by the server's umask
        except IOError:
            pass                          # exists (checked below) or cannot be made (stat says)
        try:
            a = sftp.stat(path)
        except IOError as exc:
            raise HostError(f"host '{self.name}': {what} {path}: cannot create it: {exc}") from None
        uid = self.remote_uid()
        if not stat.S_ISDIR(a.st_mode or 0):
            raise HostError(f"host '{self.name}': {what} {path} is not a directory")
        if a.st_uid != uid:
            raise HostError(f"host '{self.name}': {what} {path} is owned by uid {a.st_uid}, not by "
                            f"us (uid {uid}): refusing to use it")
        if (a.st_mode or 0) & 0o022:
            raise HostError(f"host '{self.name}': {what} {path} is writable by others "
                            f"(mode {stat.S_IMODE(a.st_mode):04o}): refusing to use it")
        self._checked_dirs.add(path)

    def put_file(self, local: Path, path: Path, mode: int = 0o600) -> None:
        sftp = self.sftp()
        parent = str(Path(path).parent)
        try:
            sftp.stat(parent)
        except IOError:
            self.check(["mkdir", "-p", "-m", "700", "--", parent])
        sftp.put(str(local), str(path))
        sftp.chmod(str(path), mode)

    def read_file(self, path: Path) -> bytes:
        try:
            with self.sftp().open(str(path), "rb") as f:
                f.prefetch()
                return f.read()
        except IOError as exc:
            raise HostError(f"host '{self.name}': cannot read {path}: {exc}") from None

    def file_stat(self, path: Path) -> tuple[int, int]:
        # SFTP attributes carry no block count: stat(1) knows the allocation.
        out = self.check(["stat", "-c", "%s %b %B", "--", str(path)])
        size, blocks, unit = (int(x) for x in out.split())
        return size, blocks * unit

    def read_head(self, path: Path, n: int) -> bytes:
        try:
            with self.sftp().open(str(path), "rb") as f:
                return f.read(n)
        except IOError as exc:
            raise HostError(f"host '{self.name}': cannot read {path}: {exc}") from None

    def remove_file(self, path: Path) -> None:
        try:
            self.sftp().remove(str(path))
        except FileNotFoundError:
            pass

    def take_file(self, src: Path, dst: Path) -> None:
        """Move a (sparse, mostly zero) core here: gzip on the host, holes kept locally."""
        chan = self._exec(f"exec gzip -1 -c -- {shlex.quote(str(src))}")
        chan.settimeout(CORE_FETCH_TIMEOUT)   # no data for this long: give up (socket.timeout)
        d = zlib.decompressobj(wbits=31)
        with open(dst, "wb") as f:
            while True:
                data = chan.recv(1 << 20)
                if not data:
                    break
                _write_sparse(f, d.decompress(data))
            _write_sparse(f, d.flush())
            f.truncate(f.tell())
        rc = chan.recv_exit_status() if chan.status_event.wait(CORE_FETCH_TIMEOUT) else -1
        chan.close()
        if rc != 0:
            raise HostError(f"host '{self.name}': cannot fetch {src} (gzip exit {rc})")
        self.remove_file(src)

    # ------------------------------------------------------------------ sockets
    def connect_unix(self, path: Path, deadline: float,
                     alive: Callable[[], bool]) -> socket.socket | None:
        """Connect to a UNIX socket on the host (retrying until QEMU listens)."""
        while True:
            chan = self._try_open_unix(str(path))
            if chan is not None:
                return bridge(chan, f"{self.name}:{path.name}")
            if time.monotonic() > deadline or not alive():
                return None
            time.sleep(0.02)

    def _is_socket(self, path: str) -> bool:
        try:
            return stat.S_ISSOCK(self.sftp().stat(path).st_mode)
        except IOError:
            return False

    def _try_open_unix(self, path: str) -> paramiko.Channel | None:
        if self._streamlocal is not False:
            try:
                chan = open_streamlocal(self.transport, path)
                self._streamlocal = True
                return chan
            except paramiko.ChannelException as exc:
                # OpenSSH answers 'Connect failed' both when nobody listens yet and when
                # AllowStreamLocalForwarding is off; until one channel has worked, an
                # existing socket tells the two apart.
                forbidden = exc.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED \
                    or (self._streamlocal is None and self._is_socket(path))
                if not forbidden:
                    return None   # not listening yet
                self._streamlocal = False   # sshd forbids it: socat from now on
        q = shlex.quote(path)
        # QEMU binds and listens in one go, so an existing socket accepts; the marker
        # line tells us the check passed (the shell's rc files may take a while).
        chan = self._exec(f"[ -S {q} ] || exit 3; echo {SOCAT_MARKER}; exec socat - UNIX-CONNECT:{q}")
        chan.settimeout(CONNECT_TIMEOUT)
        got = b""
        try:
            while not got.endswith(b"\n"):
                data = chan.recv(1)
                if not data:
                    break
                got += data
        except socket.timeout:
            pass
        if got != SOCAT_MARKER.encode() + b"\n":
            chan.close()
            return None
        chan.settimeout(None)
        return chan


def _abandon(client: paramiko.SSHClient, sock: socket.socket) -> None:
    """Stop the transport thread before closing its socket (else it prints EBADF)."""
    client.close()
    sock.close()


def open_streamlocal(transport: paramiko.Transport, path: str,
                     timeout: float = CONNECT_TIMEOUT) -> paramiko.Channel:
    """A direct-streamlocal@openssh.com channel (what `ssh -L local:/remote.sock` uses).

    paramiko has no API for it (it only writes addresses for direct-tcpip), so this
    mirrors Transport.open_channel with the streamlocal payload: socket path,
    reserved string, reserved uint32. Tested against paramiko 5.x internals.
    """
    from paramiko.channel import Channel
    from paramiko.common import cMSG_CHANNEL_OPEN
    from paramiko.message import Message

    if not transport.is_active():
        raise paramiko.SSHException("SSH session not active")
    with transport.lock:
        window = transport._sanitize_window_size(None)
        packet = transport._sanitize_packet_size(None)
        chanid = transport._next_channel()
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string("direct-streamlocal@openssh.com")
        m.add_int(chanid)
        m.add_int(window)
        m.add_int(packet)
        m.add_string(path)
        m.add_string("")
        m.add_int(0)
        chan = Channel(chanid)
        transport._channels.put(chanid, chan)
        transport.channel_events[chanid] = event = threading.Event()
        transport.channels_seen[chanid] = True
        chan._set_transport(transport)
        chan._set_window(window, packet)
    transport._send_user_message(m)
    if not event.wait(timeout) or not transport.is_active():
        raise transport.get_exception() or paramiko.SSHException("Timeout opening channel.")
    chan = transport._channels.get(chanid)
    if chan is None:
        raise transport.get_exception() or paramiko.SSHException("Unable to open channel.")
    return chan


def bridge(chan: paramiko.Channel, name: str) -> socket.socket:
    """A local socket whose peer end is pumped to/from the SSH channel.

    qemu.qmp (asyncio) and SerialConsole need a real socket with a file descriptor.
    """
    ours, theirs = socket.socketpair()
    done = []
    remote_closed = threading.Event()

    def finish():
        done.append(1)
        if len(done) == 2:
            chan.close()
            ours.close()

    def up():   # local -> remote
        try:
            while data := ours.recv(65536):
                chan.sendall(data)
            chan.shutdown_write()
        except (OSError, paramiko.SSHException):
            pass
        # We are done with it: a remote end that never closes (a hung QEMU) must not
        # keep the channel open for good.
        if not remote_closed.wait(BRIDGE_LINGER):
            chan.close()
        finish()

    def down():  # remote -> local
        try:
            while data := chan.recv(65536):
                ours.sendall(data)
        except (OSError, paramiko.SSHException):
            pass
        remote_closed.set()
        try:
            ours.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finish()

    threading.Thread(target=up, name=f"ssh-up-{name}", daemon=True).start()
    threading.Thread(target=down, name=f"ssh-down-{name}", daemon=True).start()
    return theirs


def _write_sparse(f, data: bytes, block: int = 65536) -> None:
    zero = bytes(block)
    for off in range(0, len(data), block):
        chunk = data[off:off + block]
        if chunk == zero[:len(chunk)]:
            f.seek(len(chunk), os.SEEK_CUR)
        else:
            f.write(chunk)


class RemoteProcess(Process):
    """A QEMU under the remote supervisor; stderr streams into the local artifact."""

    def __init__(self, host: SSHHost, chan: paramiko.Channel, argv: tuple[str, ...], stderr: Path):
        self.host = host
        self.argv = argv
        self._chan = chan
        self._stderr = open(stderr, "ab", buffering=0)
        self._send_lock = threading.Lock()
        self._started = threading.Event()
        self._exited = threading.Event()
        self.returncode: int | None = None
        self._err_buf = b""
        self.pid = -1
        threading.Thread(target=self._reader, name=f"ssh-proc-{host.name}", daemon=True).start()
        if not self._started.wait(SPAWN_TIMEOUT) or self.pid < 0:
            why = self._supervisor_error() or f"no PID within {SPAWN_TIMEOUT:.0f}s"
            chan.close()
            raise HostError(f"host '{host.name}': cannot start {argv[0]}: {why}")

    def _reader(self) -> None:
        f = self._chan.makefile("rb")
        try:
            for line in f:
                msg = json.loads(line)
                if "err" in msg:
                    self._err_buf += msg["err"].encode("latin-1")
                    head, _, self._err_buf = self._err_buf.rpartition(b"\n")
                    if head:
                        self._stderr.write(_WAITING_RX.sub(b"", head + b"\n"))
                elif "pid" in msg:
                    self.pid = msg["pid"]
                    self._started.set()
                elif "exit" in msg:
                    self.returncode = msg["exit"]   # (core_dumped: the core search says more)
                    break
        except (OSError, ValueError, paramiko.SSHException):
            pass
        if self._err_buf:
            self._stderr.write(self._err_buf)
        if self.returncode is None and self.pid > 0:
            # Session lost before an exit report: the supervisor's watchdog killed QEMU.
            self._stderr.write(f"harness: SSH session to {self.host.name} lost; the remote "
                               "watchdog killed QEMU\n".encode())
            self.returncode = -9
        self._stderr.close()
        self._chan.close()
        self._started.set()
        self._exited.set()

    def _supervisor_error(self) -> str:
        try:
            err = self._chan.recv_stderr(65536).decode(errors="replace").strip()
        except (OSError, paramiko.SSHException):
            return ""
        return (err.splitlines() or [""])[-1]

    def poll(self) -> int | None:
        return self.returncode if self._exited.is_set() else None

    def wait(self, timeout: float) -> int | None:
        self._exited.wait(max(0.0, timeout))
        return self.poll()

    def _send(self, msg: dict) -> None:
        if self._exited.is_set():
            return
        with self._send_lock:
            try:
                self._chan.sendall((json.dumps(msg) + "\n").encode())
            except (OSError, paramiko.SSHException):
                pass

    def send_signal(self, sig: int) -> None:
        self._send({"signal": int(sig)})

    def kill_group(self, sig: int = 9) -> None:
        self._send({"signal": int(sig), "group": True})
