"""The standalone side of a chaos reproducer: QEMU processes, QMP, a TCP relay and
an Env for harness.runtime.actions, with the standard library only.

An exported reproducer embeds this module and actions.py verbatim and runs
`main(CONFIG, contract)` (the reproducer contract's options, RESULT line and exit codes); the steps it replays go through the same Action.apply code as
the engine's. CONFIG holds the two command lines (@RUNDIR@ for the run dir,
@DISK@ for the shared qcow2 disk, @BOOT@ for the boot sector), the base's
caps and params, the steps and what counts as a hit; @BOOT@ is the boot sector,
@ROM@ its paced firmware form (whichever the attempt booted). A file base
(transport "file") saves to a file in the destination's run dir (the source
stopped first unless "live") and loads it into the destination as soon as the
save completed (harness.runtime.fileload, embedded too). A COLO base
(transport "colo") makes the COLO-FT disks under @COLO@, sets up NBD and the
replication child (harness.runtime.colo, embedded too) and treats 'colo' as a
resting state.

Exit status follows `git bisect run`: 0 the violation did not show in the
attempts, 1 it showed, 125 QEMU could not start or nothing could be decided.
The last line is `RESULT hits=H attempts=A signature=S`.
"""
import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib

from harness.runtime import actions as act
from harness.runtime import colo
from harness.runtime.fileload import FileLoad, file_uri
from harness.faults.proxy import TcpProxy     # the engine's relay, embedded too: one implementation

TERMINAL = ("completed", "failed", "cancelled")
END_WAIT_S = 10.0     # quit, then SIGTERM: each gets this long (the engine's QUIT/TERM_TIMEOUT)


def die_with_parent():
    """QEMU gets SIGKILL when this script ends, however it ends (Linux prctl)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class SetupError(Exception):
    """QEMU could not be started or set up: the attempt decides nothing."""


class Mon:
    """QMP over an accepted socket: replies by id; MIGRATION/STOP/RESUME events kept."""

    def __init__(self, sock):
        self.sock, self.replies, self.events = sock, {}, []
        self.lock, self.n, self.closed = threading.Condition(), 0, False
        self.f = sock.makefile("rb")
        greeting = json.loads(self.f.readline())
        self.oob = "oob" in greeting["QMP"].get("capabilities", [])
        sock.sendall(json.dumps({"execute": "qmp_capabilities",
                                 "arguments": {"enable": ["oob"]} if self.oob else {}}).encode() + b"\n")
        json.loads(self.f.readline())
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        try:
            for line in self.f:
                msg = json.loads(line)
                with self.lock:
                    if "id" in msg:
                        self.replies[msg["id"]] = msg
                    elif "event" in msg:
                        self.events.append((time.monotonic(), msg["event"], msg.get("data", {})))
                    self.lock.notify_all()
        except (OSError, ValueError):
            pass
        with self.lock:
            self.closed = True
            self.lock.notify_all()

    def send(self, name, args=None, oob=False):
        with self.lock:
            self.n += 1
            rid = f"r{self.n}"
        msg = {"exec-oob" if oob and self.oob else "execute": name, "id": rid}
        if args:
            msg["arguments"] = args
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError:
            self.closed = True
        return rid

    def cmd(self, name, args=None, timeout=5.0, oob=False):
        rid = self.send(name, args, oob)
        deadline = time.monotonic() + timeout
        with self.lock:
            while rid not in self.replies:
                if self.closed:
                    raise act.Gone(name)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise act.NoReply(name)
                self.lock.wait(left)
            return self.replies.pop(rid)


_LIVE = set()   # Vms whose QEMU may still run: an interrupt kills them first
_DIRS = []      # every temporary dir made: main() removes what is left of them, however it ends


def _mkdtemp(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    _DIRS.append(d)
    return d


def _interrupted(signum, _frame):
    """SIGINT/SIGTERM: kill our QEMUs at once, then unwind (the finally blocks end
    the attempt and main() removes every temporary dir we made)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    for vm in list(_LIVE):
        vm.kill()
    raise SystemExit(128 + signum)


class Vm:
    def __init__(self, side, binary, args, subst, perturb):
        self.side, self.dir = side, _mkdtemp(f"repro-{side}-")
        subst = dict(subst, **{"@RUNDIR@": self.dir})
        argv = [binary]
        for a in args:
            for k, v in subst.items():
                a = a.replace(k, v)
            argv.append(a)
        listeners = {}
        for a in argv:
            m = re.match(r"socket,id=((?:qmp|serial)\d*),path=([^,]+)$", a)   # ours, not COLO's
            if m:
                s = socket.socket(socket.AF_UNIX)
                s.bind(m.group(2))
                s.listen(1)
                listeners[m.group(1)] = s
        self.err = os.path.join(self.dir, "stderr")
        env = dict(os.environ)
        if perturb:  # glibc fills freed memory: a use-after-free becomes a crash
            env["MALLOC_PERTURB_"] = str(perturb)
        with open(self.err, "w") as e:
            try:
                self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=e, cwd=self.dir, start_new_session=True, env=env,
                                          preexec_fn=die_with_parent)
            except OSError as exc:
                raise SetupError(f"{side}: cannot run {binary}: {exc}") from None
        _LIVE.add(self)
        try:
            self._connect(listeners, side)
        except BaseException:
            self.kill()       # half set up: nobody will end() it
            self.p.wait()
            _LIVE.discard(self)
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _connect(self, listeners, side):
        conns = {}
        deadline = time.monotonic() + 20
        for name, s in listeners.items():
            s.settimeout(0.2)
            while name not in conns:
                try:
                    conns[name], _ = s.accept()
                except OSError:
                    if self.p.poll() is not None or time.monotonic() > deadline:
                        raise SetupError(f"{side}: QEMU never connected its {name} socket: "
                                         f"{open(self.err, errors='replace').read().strip()[-300:]}") from None
            conns[name].settimeout(None)
            s.close()
        try:
            self.mons = [Mon(conns[n]) for n in sorted(conns) if n.startswith("qmp")]
        except (OSError, ValueError):
            raise SetupError(f"{side}: no QMP greeting: {open(self.err, errors='replace').read()[-300:]}") from None
        self.mon = self.mons[0]
        self.serial, self.ser = b"", conns.get("serial0")
        if self.ser is not None:
            threading.Thread(target=self._serial, daemon=True).start()

    def _serial(self):
        while True:
            try:
                d = self.ser.recv(65536)
            except OSError:
                return
            if not d:
                return
            self.serial += d

    def wait_b(self, start, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if b"B" in self.serial[start:]:
                return True
            time.sleep(0.02)
        return False

    def alive(self):
        return self.p.poll() is None

    def status(self):
        if not self.alive():
            return None
        try:
            r = self.mon.cmd("query-migrate", timeout=5)
        except act.NoReply:
            return "no-reply"
        except act.Gone:
            return None
        return r.get("return", {}).get("status", "none") if "return" in r else None

    def kill(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except OSError:
            pass

    def end(self):
        """quit, then SIGTERM, then SIGKILL, 10 s each, as the engine ends a QEMU;
        self.stuck: it outlived quit and SIGTERM (the engine's shutdown hang)."""
        self.stuck = False
        if self.alive():
            try:
                self.mon.cmd("quit", timeout=END_WAIT_S)
            except (act.NoReply, act.Gone):
                pass
            try:
                self.p.wait(END_WAIT_S)
            except subprocess.TimeoutExpired:
                self.p.send_signal(signal.SIGTERM)
                try:
                    self.p.wait(END_WAIT_S)
                except subprocess.TimeoutExpired:
                    self.stuck = True
                    self.kill()
        self.p.wait()
        _LIVE.discard(self)
        rc = self.p.returncode
        err = open(self.err, errors="replace").read()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc, err


class Env:
    """harness.runtime.actions' Env over the standalone Vms."""

    def __init__(self, vms, relay, main, migrate_uri):
        self.vms, self.relay, self.main, self.uri = vms, relay, main, migrate_uri
        self.recover, self.held, self.killed = None, [], set()
        self.snapshot_touched = set()        # sides whose migration status became a snapshot's
        self.failover_requested = set()      # sides whose x-colo-lost-heartbeat was accepted

    def qmp(self, side, command, args, timeout, oob):
        if not self.vms[side].alive():
            raise act.Gone(command)
        return self.vms[side].mon.cmd(command, args, timeout, oob)

    def flood(self, side, command, count, oob):
        for mon in self.vms[side].mons:
            for _ in range(count):
                mon.send(command, None, oob)

    def signal(self, side, signame):
        if self.vms[side].alive():
            self.vms[side].p.send_signal(getattr(signal, signame))

    def expect_exit(self, side, rc):
        self.killed.add(side)

    def alive(self, side):
        return self.vms[side].alive()

    def listener(self, channel):
        return self.main if channel == "main" else self.recover

    def set_recover_port(self, port):
        self.recover = ("127.0.0.1", port)

    def migrate_uri(self):
        return self.uri

    def listen_host(self):
        return "127.0.0.1"

    def cut(self):
        return self.relay.cut() if self.relay else 0

    def hold(self, sock):
        self.held.append(sock)

    def pending_listener(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.held.append(s)
        return f"tcp:127.0.0.1:{s.getsockname()[1]}"

    def release(self):
        for s in self.held:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                s.close()
            except OSError:
                pass
        self.held = []


def _first_seen(vm, key):
    side_what = key.split(":", 1)[1]
    for t, name, data in list(vm.mon.events):
        if (name == "MIGRATION" and data.get("status") == side_what) or name == side_what:
            return t
    return None


def src_seq(vms):
    """The source's MIGRATION statuses and other event names, in order (FileLoad.tick)."""
    return [d.get("status") if name == "MIGRATION" else name for _, name, d in list(vms["src"].mon.events)]


def run_steps(cfg, env, vms, loader=None):
    t0 = time.monotonic()
    end = t0 + cfg["span_ms"] / 1000   # phase-triggered steps whose phase has not come are dropped
    pending = list(cfg["steps"])
    while pending:
        if loader is not None:
            loader.tick(env, src_seq(vms))
        now = time.monotonic()
        due = []
        for i, s in enumerate(pending):
            if s.get("on"):
                seen = _first_seen(vms[s["on"].split(":")[0]], s["on"])
                if seen is not None:
                    due.append((max(seen, t0) + s["at_ms"] / 1000, i))
            else:
                due.append((t0 + s["at_ms"] / 1000, i))
        ready = [d for d in due if d[0] <= now]
        if ready:
            s = pending.pop(min(ready)[1])
            action = act.BY_KIND[s["kind"]]
            if action.needs_alive and not env.alive(s["side"]):
                continue
            outcome, _ = action.apply(env, s["side"], tuple(s["args"]))
            if outcome == "ok" and act.SNAPSHOT in action.effects(tuple(s["args"])):
                env.snapshot_touched.add(s["side"])
            if s["kind"] == "colo-lost-heartbeat" and outcome == "ok":
                env.failover_requested.add(s["side"])
            if loader is not None:
                loader.step_applied(s["side"], s["kind"], s["args"], outcome)
            continue
        if now >= end and not due:
            return
        time.sleep(0.005)


def observe(cfg, env, vms, loader=None):
    """Settle as the engine does and name what is seen (the engine's phrases)."""
    src, dst = vms["src"], vms["dst"]
    poll = cfg.get("poll_s", 0.05)
    try:
        if src.alive():
            src.mon.cmd("migrate-set-parameters", cfg["settle"], timeout=5)
    except act.NoReply:
        return "hang: src does not answer query-status"
    except act.Gone:
        pass
    end, status, recovered = time.monotonic() + 40, None, False
    is_colo = cfg["transport"] == "colo"
    while time.monotonic() < end:
        if not dst.alive() and env.relay:
            env.relay.cut(refuse_new=True)   # as the engine: a dead peer's kernel resets the link
        status = src.status()
        if status in TERMINAL or status is None or status == "no-reply" or (
                is_colo and status == colo.RESTING and not _failed_over(src)):
            break
        if status == "pre-switchover":
            try:
                src.mon.cmd("migrate-continue", {"state": "pre-switchover"}, timeout=5)
            except (act.NoReply, act.Gone):
                pass
        if status == "postcopy-paused":
            if recovered or not dst.alive():
                return "clean"
            recovered = True
            act.Recover().apply(env, "dst", ())
        time.sleep(poll)
    for name, vm in vms.items():
        if vm.alive() and name not in env.killed:
            try:
                vm.mon.cmd("query-status", timeout=5)
            except act.NoReply:
                return f"hang: {name} does not answer query-status"
            except act.Gone:
                pass
    if is_colo:
        return observe_colo(env, vms, status)
    if "src" in env.killed or "src" in env.snapshot_touched:
        return "clean"     # as the engine: the source is gone, or its status is a snapshot's
    if status is not None and status not in TERMINAL:
        return f"hang: migration stuck in '{status}'"
    if loader is not None and status == "completed":
        loader.tick(env, src_seq(vms))     # a save that completed after the plan: load it
        if loader.excuse():
            return "clean"
    if status == "completed" and "dst" not in env.killed and "dst" not in env.snapshot_touched:
        end = time.monotonic() + 15
        dstat = dst.status()
        while dst.alive() and dstat not in TERMINAL and time.monotonic() < end:
            time.sleep(poll)
            dstat = dst.status()
        if not dst.alive() or dstat == "failed":
            return "lost-vm: source completed, destination failed to load"
        if dstat != "completed":
            return f"inconsistent: source completed, destination '{dstat}'"
    return "clean"


def _failed_over(vm):
    return any(n == "COLO_EXIT" for _, n, _ in list(vm.mon.events))


def observe_colo(env, vms, status):
    """harness.stress.colo_base.judge's phrases: 'colo' rests; a side that failed over
    keeps running its guest; a primary never in 'colo' must not end 'completed'."""
    history = [s for s in src_seq(vms) if s and s.islower()]
    if status is not None and status not in TERMINAL and status != colo.RESTING and "src" not in env.killed:
        return f"hang: migration stuck in '{status}'"
    if status == "completed" and colo.RESTING not in history and "cancelling" not in history \
            and "src" not in env.killed:
        return "inconsistent: COLO primary completed without entering 'colo'"
    for side in ("src", "dst"):
        vm = vms[side]
        if side in env.killed or side not in env.failover_requested or not vm.alive() or not _failed_over(vm):
            continue
        try:
            end, state = time.monotonic() + 15, "?"
            while time.monotonic() < end and vm.alive():     # the failover finishes first
                state = vm.mon.cmd("query-status", timeout=5).get("return", {}).get("status", "?")
                if state in ("running", "paused"):
                    break
                time.sleep(0.05)
            if state not in ("running", "paused"):
                return f"lost-vm: {side} failed over and lost its guest"
            if state == "paused":
                vm.mon.cmd("cont", timeout=5)
        except (act.NoReply, act.Gone):
            continue
        if not vm.wait_b(len(vm.serial), 15):
            return f"lost-vm: {side} failed over and lost its guest"
    return "clean"


def attempt(cfg, subst, perturb, bins):
    vms, relay, env, loader, colo_dir = {}, None, None, None, None
    try:
        if cfg["transport"] == "colo":   # the COLO-FT disks, under the recorded @COLO@ dir
            colo_dir = _mkdtemp("repro-colo-")
            colo.make_images(colo_dir, cfg.get("qemu_img", "qemu-img"))
            subst = dict(subst, **{"@COLO@": colo_dir})
        vms["src"] = Vm("src", bins["src"], cfg["src_args"], subst, perturb)
        vms["dst"] = Vm("dst", bins["dst"], cfg["dst_args"], subst, perturb)
        src, dst = vms["src"], vms["dst"]
        if not src.wait_b(0, 30):
            raise SetupError("the source guest never ran")
        try:
            if colo_dir is not None:
                setup_env = Env(vms, None, None, None)
                colo.setup(setup_env, os.path.join(colo_dir, colo.NBD_SOCK))
                colo.caps(setup_env, {k: v for k, v in cfg["caps"] if k != "events"})
            for side in ("src", "dst") if colo_dir is None else ():
                vms[side].mon.cmd("migrate-set-capabilities", {"capabilities": [
                    {"capability": k, "state": v} for k, v in cfg["caps"]]})
            for side in ("src", "dst"):
                params = cfg[f"{side}_params"]
                if params:
                    vms[side].mon.cmd("migrate-set-parameters", params)
            if cfg["transport"] == "file":   # save to a file; the destination loads it after
                uri = file_uri(os.path.join(dst.dir, "migration.bin"), cfg.get("file_offset"))
                loader = FileLoad(uri)
                env = Env(vms, None, None, uri)
            elif cfg["transport"] == "unix":
                path = os.path.join(dst.dir, "mig.sock")
                dst.mon.cmd("migrate-incoming", {"uri": f"unix:{path}"})
                env = Env(vms, None, path, f"unix:{path}")
            else:
                dst.mon.cmd("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
                port = int(dst.mon.cmd("query-migrate")["return"]["socket-address"][0]["port"])
                relay = TcpProxy(("127.0.0.1", port), name="repro").start()
                env = Env(vms, relay, ("127.0.0.1", port), f"tcp:127.0.0.1:{relay.port}")
            src.mon.cmd("migrate-set-parameters", cfg["hold"])
            if not cfg.get("live", True):
                src.mon.cmd("stop")
            src.mon.cmd("migrate", {"uri": env.migrate_uri()})
        except (act.NoReply, act.Gone, KeyError, colo.ColoSetupError) as exc:
            raise SetupError(f"migration setup failed: {exc!r}") from None
        run_steps(cfg, env, vms, loader)
        env.release()
        seen = observe(cfg, env, vms, loader)
    finally:
        if env is not None:
            env.release()
        if relay:
            relay.stop()
        exits = {side: vm.end() for side, vm in vms.items()}
        if colo_dir is not None:
            shutil.rmtree(colo_dir, ignore_errors=True)
    for side, vm in vms.items():   # as the engine: a shutdown hang shows when nothing else did
        if seen == "clean" and getattr(vm, "stuck", False):
            seen = f"hang: {NAMES[side]}: did not exit within 20s of quit and SIGTERM"
    return seen, exits


NAMES = {"src": "source", "dst": "destination"}


def hit(cfg, seen, exits):
    m = cfg["match"]
    if m["signature"].startswith("crash"):
        side = {"source": "src", "destination": "dst"}.get(m.get("side"))
        for s, (rc, err) in exits.items():
            if side and s != side:
                continue
            if isinstance(rc, int) and rc == m.get("returncode") and (
                    not m.get("stderr") or re.search(m["stderr"], err)):
                return True
        return False
    if m["signature"].startswith("stderr:"):
        return any(m["stderr_text"] in err for _, err in exits.values())
    return seen == m["signature"]


def main(cfg, contract):
    """contract: the reproducer contract (harness/report/repro_contract.py EMBED, loaded
    as a module by the script): its options, RESULT line and exit codes."""
    def extra(ap):
        ap.add_argument("--stop-on-hit", action="store_true", help="stop at the first hit (bisecting)")
        ap.add_argument("--no-malloc-perturb", action="store_true",
                        help="do not set a random MALLOC_PERTURB_ (use-after-free then rarely crashes)")
    a = contract.contract_args(f"Standalone QEMU migration reproducer: {cfg['match']['signature']}. "
                               "For git bisect run: exit 0 not seen, 1 seen, 125 cannot decide.", attempts=cfg.get("attempts", 20),
                               seconds=600.0, extra=extra)
    bins = {"src": a.qemu_src, "dst": a.qemu_dst}
    work = _mkdtemp("repro-shared-")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted)
    image = cfg["guest_image"]      # the boot sector (@BOOT@) or its firmware form (@ROM@)
    boot = os.path.join(work, image["name"])
    with open(boot, "wb") as f:
        f.write(zlib.decompress(base64.b64decode(image["zb64"])))
    disk = os.path.join(work, "disk0.qcow2")
    subst = {image["marker"]: boot, "@DISK@": disk}
    print("plan:", "; ".join(s["text"] for s in cfg["steps"]) or "(no steps)", flush=True)
    t0, n, hits, skips, why = time.monotonic(), 0, 0, 0, ""
    try:
        while n < a.attempts and time.monotonic() - t0 < a.seconds:
            if os.path.exists(disk):
                os.unlink(disk)
            try:
                subprocess.run([cfg.get("qemu_img", "qemu-img"), "create", "-q", "-f", "qcow2", disk, "16M"],
                               check=True, timeout=30)
                seen, exits = attempt(cfg, subst, None if a.no_malloc_perturb else random.randint(1, 255), bins)
            except (SetupError, OSError, subprocess.SubprocessError) as exc:
                skips += 1
                why = str(exc)
                print(f"attempt {n + 1}: cannot decide: {exc}", flush=True)
                if skips >= 3 and not n:
                    break
                continue
            n += 1
            h = hit(cfg, seen, exits)
            hits += h
            print(f"attempt {n}: {'HIT' if h else 'miss'}: {seen}; exits "
                  f"{ {s: rc for s, (rc, _) in exits.items()} }", flush=True)
            if h and a.stop_on_hit:
                break
    finally:
        for d in _DIRS:
            shutil.rmtree(d, ignore_errors=True)
    contract.finish(hits, n, cfg["match"]["signature"], why)
