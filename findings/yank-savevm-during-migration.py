#!/usr/bin/env python3
"""Standalone chaos reproducer exported by qemu-migration-harness.

Violation: crash SIGABRT: yank_unregister_instance: Assertion 'QLIST_EMPTY(&entry->yankfns)' failed

Starts source and destination QEMU with the recorded command lines, migrates
through a local TCP relay, applies the recorded actions at their times, lets
the migration settle, and checks whether the same violation appears.
Usage: python3 THIS_SCRIPT [--attempts N] [--seconds S]. Exit 0 if it hit.
Only the Python standard library is needed.
"""
import argparse, json, os, random, re, select, shutil, signal, socket, subprocess
import sys, tempfile, threading, time

CONFIG = json.loads('{\n "src": {\n  "binary": "/usr/bin/qemu-system-x86_64",\n  "args": [\n   "-name",\n   "source,debug-threads=on",\n   "-nodefaults",\n   "-no-user-config",\n   "-machine",\n   "dump-guest-core=off",\n   "-display",\n   "none",\n   "-accel",\n   "tcg",\n   "-machine",\n   "q35",\n   "-m",\n   "256",\n   "-smp",\n   "1",\n   "-chardev",\n   "socket,id=qmp0,path=@RUNDIR@/qmp.sock",\n   "-mon",\n   "chardev=qmp0,mode=control",\n   "-chardev",\n   "socket,id=qmp1,path=@RUNDIR@/qmp1.sock",\n   "-mon",\n   "chardev=qmp1,mode=control",\n   "-chardev",\n   "socket,id=serial0,path=@RUNDIR@/serial.sock",\n   "-serial",\n   "chardev:serial0",\n   "-drive",\n   "if=none,id=bootdisk,file=/root/.cache/qemu-migration-harness/images/bootblock-72638c9e20bab54f/bootblock.bin,format=raw,snapshot=on",\n   "-device",\n   "ide-hd,drive=bootdisk,secs=1,cyls=1,heads=1,bootindex=0"\n  ]\n },\n "dst": {\n  "binary": "/usr/bin/qemu-system-x86_64",\n  "args": [\n   "-name",\n   "destination,debug-threads=on",\n   "-nodefaults",\n   "-no-user-config",\n   "-machine",\n   "dump-guest-core=off",\n   "-display",\n   "none",\n   "-accel",\n   "tcg",\n   "-machine",\n   "q35",\n   "-m",\n   "256",\n   "-smp",\n   "1",\n   "-chardev",\n   "socket,id=qmp0,path=@RUNDIR@/qmp.sock",\n   "-mon",\n   "chardev=qmp0,mode=control",\n   "-chardev",\n   "socket,id=qmp1,path=@RUNDIR@/qmp1.sock",\n   "-mon",\n   "chardev=qmp1,mode=control",\n   "-chardev",\n   "socket,id=serial0,path=@RUNDIR@/serial.sock",\n   "-serial",\n   "chardev:serial0",\n   "-drive",\n   "if=none,id=bootdisk,file=/root/.cache/qemu-migration-harness/images/bootblock-72638c9e20bab54f/bootblock.bin,format=raw,snapshot=on",\n   "-device",\n   "ide-hd,drive=bootdisk,secs=1,cyls=1,heads=1,bootindex=0",\n   "-incoming",\n   "defer"\n  ]\n },\n "actions": [\n  {\n   "at_ms": 500,\n   "side": "src",\n   "do": [\n    "qmp",\n    "yank",\n    {\n     "instances": [\n      {\n       "type": "migration"\n      }\n     ]\n    }\n   ],\n   "text": "+500ms src yank"\n  },\n  {\n   "at_ms": 500,\n   "side": "src",\n   "do": [\n    "qmp",\n    "human-monitor-command",\n    {\n     "command-line": "savevm chaos"\n    }\n   ],\n   "text": "+500ms src savevm"\n  }\n ],\n "converge": {\n  "max-bandwidth": 1000000000,\n  "downtime-limit": 30000\n },\n "non_converge": {\n  "max-bandwidth": 3000000,\n  "downtime-limit": 1\n },\n "match": {\n  "signature": "crash SIGABRT: yank_unregister_instance: Assertion \'QLIST_EMPTY(&entry->yankfns)\' failed",\n  "returncode": -6,\n  "stderr": "yank_unregister_instance:\\\\ Assertion\\\\ [`\']QLIST_EMPTY\\\\(\\\\&entry\\\\->yankfns\\\\)[`\']\\\\ failed\\\\.",\n  "side": "source"\n }\n}')
TERMINAL = ("completed", "failed", "cancelled")
RELAY = []  # the attempt's relay, for observe()


class Timeout(Exception):
    pass


class Mon:
    """QMP over an accepted socket: replies by id, events kept."""

    def __init__(self, sock):
        self.sock, self.buf, self.replies, self.lock = sock, b"", {}, threading.Condition()
        self.n, self.closed = 0, False
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
                if "id" in msg:
                    with self.lock:
                        self.replies[msg["id"]] = msg
                        self.lock.notify_all()
        except (OSError, ValueError):
            pass
        with self.lock:
            self.closed = True
            self.lock.notify_all()

    def send(self, name, args=None, oob=False):
        self.n += 1
        key = "exec-oob" if oob and self.oob else "execute"
        msg = {key: name, "id": f"r{self.n}"}
        if args:
            msg["arguments"] = args
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError:
            self.closed = True
        return f"r{self.n}"

    def cmd(self, name, args=None, timeout=5.0, oob=False):
        rid = self.send(name, args, oob)
        deadline = time.time() + timeout
        with self.lock:
            while rid not in self.replies:
                if self.closed:
                    return {"error": {"class": "Disconnected"}}
                left = deadline - time.time()
                if left <= 0:
                    raise Timeout(name)
                self.lock.wait(left)
            return self.replies.pop(rid)


class Vm:
    def __init__(self, side, binary, args, perturb):
        self.side, self.dir = side, tempfile.mkdtemp(prefix=f"repro-{side}-")
        argv = [binary] + [a.replace("@RUNDIR@", self.dir) for a in args]
        listeners = {}
        for a in argv:
            m = re.match(r"socket,id=([^,]+),path=([^,]+)$", a)
            if m:
                s = socket.socket(socket.AF_UNIX)
                s.bind(m.group(2))
                s.listen(1)
                listeners[m.group(1)] = s
        self.err = os.path.join(self.dir, "stderr")
        env = dict(os.environ)
        if perturb:  # glibc fills freed memory: use-after-free becomes a crash
            env["MALLOC_PERTURB_"] = str(perturb)
        with open(self.err, "w") as e:
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=e, cwd=self.dir, start_new_session=True, env=env)
        conns = {}
        for name, s in listeners.items():
            s.settimeout(20)
            conns[name], _ = s.accept()
            s.close()
        self.mon = Mon(conns["qmp0"])
        self.serial, self.ser = b"", conns["serial0"]
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
        end = time.time() + timeout
        while time.time() < end:
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
        except Timeout:
            return "no-reply"
        return r.get("return", {}).get("status", "none") if "return" in r else None

    def end(self):
        if self.alive():
            try:
                self.mon.cmd("quit", timeout=5)
            except Timeout:
                os.killpg(self.p.pid, signal.SIGKILL)  # frozen or hung: no point waiting
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        rc = self.p.returncode
        err = open(self.err, errors="replace").read()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc, err


class Relay:
    def __init__(self, port):
        self.target, self.links = ("127.0.0.1", port), []
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
                t = socket.create_connection(self.target)
            except OSError:
                return
            self.links.append((c, t))
            for a, b in ((c, t), (t, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        for c, t in self.links:
            for s in (c, t):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                s.close()
        self.links = []

    def close(self):
        self.srv.close()
        self.cut()


def act(vms, relay, port, strays, side, do):
    vm = vms[side]
    other = vms["dst" if side == "src" else "src"]
    op = do[0]
    try:
        if op == "qmp-burst" and vm.alive():
            for _ in range(do[3]):
                vm.mon.send(do[1])
        elif op in ("qmp", "qmp-oob") and vm.alive():
            vm.mon.cmd(do[1], do[2] or None, timeout=5, oob=(op == "qmp-oob"))
        elif op == "signal" and vm.alive():
            vm.p.send_signal(getattr(signal, do[1]))
        elif op == "kill-peer" and other.alive():
            other.p.send_signal(signal.SIGKILL)
        elif op == "garbage":
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(bytes.fromhex(do[1]))
            s.close()
        elif op == "stray":
            strays.append(socket.create_connection(("127.0.0.1", port), timeout=1))
        elif op == "cut":
            relay.cut()
    except (OSError, Timeout):
        pass


def observe(vms, actions):
    """Settle like the harness does and name what we see (same phrases)."""
    src, dst = vms["src"], vms["dst"]
    if src.alive():
        try:
            src.mon.cmd("migrate-set-parameters", CONFIG["converge"], timeout=5)
        except Timeout:
            return "hang: src does not answer query-status"
    end, status = time.time() + 40, None
    while time.time() < end:
        if not dst.alive():
            RELAY[0].cut()  # a dead peer's kernel would reset the connection
        status = src.status()
        if status in TERMINAL or status is None or status == "no-reply":
            break
        if status == "pre-switchover":
            try:
                src.mon.cmd("migrate-continue", {"state": "pre-switchover"}, timeout=5)
            except Timeout:
                pass
        time.sleep(0.1)
    for name, vm in vms.items():
        if vm.alive():
            try:
                vm.mon.cmd("query-status", timeout=5)
            except Timeout:
                return f"hang: {name} does not answer query-status"
    if status is not None and status not in TERMINAL:
        return f"hang: migration stuck in '{status}'"
    if status == "completed":
        end = time.time() + 15
        dstat = dst.status()
        while dst.alive() and dstat not in TERMINAL and time.time() < end:
            time.sleep(0.1)
            dstat = dst.status()
        if not dst.alive() or dstat == "failed":
            return "lost-vm: source completed, destination failed to load"
        if dstat != "completed":
            return f"inconsistent: source completed, destination '{dstat}'"
    if status in ("failed", "cancelled") and src.alive():
        if dst.alive():
            try:
                if dst.mon.cmd("query-status", timeout=5).get("return", {}).get("status") == "running":
                    return f"inconsistent: source {status}, destination running the guest"
            except Timeout:
                pass
        try:
            src.mon.cmd("cont", timeout=5)
        except Timeout:
            pass
        if not src.wait_b(len(src.serial), 15):
            return f"lost-vm: source {status} and lost its guest"
    return "clean"


def attempt(perturb):
    vms, relay, strays = {}, None, []
    try:
        vms["src"] = Vm("src", CONFIG["src"]["binary"], CONFIG["src"]["args"], perturb)
        vms["dst"] = Vm("dst", CONFIG["dst"]["binary"], CONFIG["dst"]["args"], perturb)
        src, dst = vms["src"], vms["dst"]
        if not src.wait_b(0, 30):
            return "setup: source guest never ran", {}
        caps = {"capabilities": [{"capability": "events", "state": True}]}
        src.mon.cmd("migrate-set-capabilities", caps)
        dst.mon.cmd("migrate-set-capabilities", caps)
        dst.mon.cmd("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
        port = dst.mon.cmd("query-migrate")["return"]["socket-address"][0]["port"]
        relay = Relay(int(port))
        RELAY[:] = [relay]
        src.mon.cmd("migrate-set-parameters", CONFIG["non_converge"])
        src.mon.cmd("migrate", {"uri": f"tcp:127.0.0.1:{relay.port}"})
        t0 = time.time()
        for a in CONFIG["actions"]:
            delay = t0 + a["at_ms"] / 1000 - time.time()
            if delay > 0:
                time.sleep(delay)
            act(vms, relay, int(port), strays, a["side"], a["do"])
        seen = observe(vms, CONFIG["actions"])
    except Timeout as exc:
        seen = f"hang: no reply to {exc}"
    finally:
        for s in strays:
            s.close()
        if relay:
            relay.close()
        exits = {side: vm.end() for side, vm in vms.items()}
    return seen, exits


def hit(seen, exits):
    m = CONFIG["match"]
    if m["signature"].startswith("crash"):
        side = {"source": "src", "destination": "dst"}.get(m.get("side"))
        for s, (rc, err) in exits.items():
            if side and s != side:
                continue
            if isinstance(rc, int) and rc == m.get("returncode") and (
                    not m.get("stderr") or re.search(m["stderr"], err)):
                return True
        return False
    return seen == m["signature"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attempts", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--no-malloc-perturb", action="store_true",
                    help="do not set a random MALLOC_PERTURB_ (use-after-free then rarely crashes)")
    a = ap.parse_args()
    print("plan:", "; ".join(x["text"] for x in CONFIG["actions"]) or "(no actions)")
    t0, n, hits = time.time(), 0, 0
    while n < a.attempts and time.time() - t0 < a.seconds:
        seen, exits = attempt(None if a.no_malloc_perturb else random.randint(1, 255))
        n += 1
        h = hit(seen, exits)
        hits += h
        rcs = {s: rc for s, (rc, _) in exits.items()}
        print(f"attempt {n}: {'HIT' if h else 'miss'}: {seen}; exits {rcs}", flush=True)
    print(f"attempts {n} hits {hits} hit-rate {hits / max(n, 1):.2f} seconds {time.time() - t0:.1f}")
    sys.exit(0 if hits else 1)


if __name__ == "__main__":
    main()
