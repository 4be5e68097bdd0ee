"""harness.faults.link against the real kernel: two private network namespaces joined by veth.

ns a (where LinkFaults acts, through `ip netns exec`) <-veth-> ns b. Traffic is real:
small python3 scripts run in either namespace as child processes tracked by PID and
bounded by timeouts. Needs root; everything created here is deleted by a finalizer.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from harness.faults.link import QDISC_HANDLE, LinkFaultError, LinkFaults

PID = os.getpid()
NS_A, NS_B = f"qmhlt-a-{PID}", f"qmhlt-b-{PID}"
IF_A, IF_B = f"qmhlt{PID}a", f"qmhlt{PID}b"     # <= 15 characters, only inside our namespaces
P1, P2 = 5201, 5202
PY = sys.executable

# One script, several roles; every role ends by itself (lifetime / timeouts).
SCRIPT = r'''
import errno, json, socket, sys, threading, time
mode, args = sys.argv[1], sys.argv[2:]

def result(exc):
    if exc is None: return "ok"
    if isinstance(exc, (socket.timeout, TimeoutError)): return "timeout"
    return errno.errorcode.get(getattr(exc, "errno", None) or 0, repr(exc))

if mode == "serve":               # serve HOST LIFETIME PORT...: tcp sink + udp echo
    host, lifetime, ports = args[0], float(args[1]), [int(p) for p in args[2:]]
    def sink(c):
        with c:
            try:
                while c.recv(65536): pass
            except OSError: pass
    def tcp(s):
        while True:
            c, _ = s.accept(); threading.Thread(target=sink, args=(c,), daemon=True).start()
    def udp(s):
        while True:
            data, peer = s.recvfrom(2048); s.sendto(data, peer)
    for p in ports:
        t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((host, p)); t.listen(64)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((host, p))
        for fn, s in ((tcp, t), (udp, u)):
            threading.Thread(target=fn, args=(s,), daemon=True).start()
    print("ready", flush=True); time.sleep(lifetime)
elif mode == "probe":             # probe tcp|udp HOST PORT TIMEOUT -> {"result", "seconds"}
    proto, host, port, timeout = args[0], args[1], int(args[2]), float(args[3])
    t0, exc = time.monotonic(), None
    try:
        if proto == "tcp":
            socket.create_connection((host, port), timeout=timeout).close()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(timeout)
            s.connect((host, port)); s.send(b"ping")
            if s.recv(16) != b"ping": raise OSError(errno.EPROTO, "bad echo")
    except OSError as e:
        exc = e
    print(json.dumps({"result": result(exc), "seconds": time.monotonic() - t0}))
elif mode == "recv":              # recv HOST PORT WARMUP WINDOW -> {"bytes", "seconds"}
    host, port, warmup, window = args[0], int(args[1]), float(args[2]), float(args[3])
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(1); s.settimeout(10)
    print("ready", flush=True)
    c, _ = s.accept(); c.settimeout(10)
    c.recv(65536)
    start = time.monotonic() + warmup   # past the initial burst and the buffers filling
    while time.monotonic() < start: c.recv(65536)
    n = 0
    while (now := time.monotonic()) < start + window: n += len(c.recv(65536))
    print(json.dumps({"bytes": n, "seconds": now - start}), flush=True)
elif mode == "send":              # send HOST PORT SECONDS: zeros until time is up or peer goes
    host, port, seconds = args[0], int(args[1]), float(args[2])
    c = socket.create_connection((host, port), timeout=5); c.settimeout(5)
    end, chunk = time.monotonic() + seconds, bytes(65536)
    try:
        while time.monotonic() < end: c.sendall(chunk)
    except OSError: pass
'''


def _sh(argv: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _ok(argv: list[str], timeout: float = 10.0) -> str:
    cp = _sh(argv, timeout)
    assert cp.returncode == 0, f"{' '.join(argv)}: rc {cp.returncode}: {cp.stderr.strip()}"
    return cp.stdout


def run_in_a(argv, timeout: float) -> tuple[int, str, str]:
    """The runner LinkFaults gets: argv executed inside ns a (like LocalHost.run)."""
    try:
        cp = _sh(["ip", "netns", "exec", NS_A, *argv], timeout)
    except subprocess.TimeoutExpired:
        return 124, "", f"timeout after {timeout}s"
    except OSError as exc:
        return 127, "", f"cannot run ip: {exc.strerror}"
    return cp.returncode, cp.stdout, cp.stderr


def _free_prefix() -> str:
    """A 10.251.x.0/30 that no address or route in the root namespace overlaps."""
    text = _ok(["ip", "-4", "-o", "addr", "show"]) + _ok(["ip", "-4", "route", "show",
                                                          "table", "all"])
    used = [ipaddress.ip_network(m, strict=False)
            for m in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", text)]
    for i in range(200):
        x = (PID + i) % 200 + 50
        net = ipaddress.ip_network(f"10.251.{x}.0/30")
        if not any(net.overlaps(u) for u in used):
            return f"10.251.{x}."
    pytest.skip("no free 10.251.x.0/30 in the root namespace")


@dataclass
class Lab:
    a: str                              # ns a's address (LinkFaults acts on ns a's IF_A)
    b: str
    procs: list = field(default_factory=list)
    missing: dict = field(default_factory=dict)     # tool -> why it cannot be used here

    def need(self, tool: str) -> None:
        if tool in self.missing:
            pytest.skip(self.missing[tool])

    def spawn(self, ns: str, *args: str) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", ns, PY, "-c", SCRIPT, *args],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def wait_ready(self, p: subprocess.Popen, timeout: float = 5.0) -> None:
        ready, _, _ = select.select([p.stdout], [], [], timeout)
        line = p.stdout.readline() if ready else ""
        if line.strip() != "ready":
            p.kill()
            raise AssertionError(f"helper {p.args[5:]} not ready: {p.stderr.read()[-500:]}")

    def finish(self, p: subprocess.Popen, timeout: float) -> dict:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()        # only ever our own child, by its PID
            p.communicate()
            raise AssertionError(f"helper {p.args[5:]} still running after {timeout}s") from None
        assert p.returncode == 0 and out.strip(), f"helper {p.args[5:]}: rc {p.returncode}: {err}"
        return json.loads(out.strip().splitlines()[-1])

    def probes(self, *specs: tuple[str, str, str, int, float]) -> list[dict]:
        """(ns, proto, host, port, timeout)... run at once; [{"result", "seconds"}...]."""
        procs = [self.spawn(ns, "probe", proto, host, str(port), str(t))
                 for ns, proto, host, port, t in specs]
        return [self.finish(p, t + 10) for p, (*_, t) in zip(procs, specs)]

    def probe(self, ns: str, host: str, port: int, timeout: float = 1.0,
              proto: str = "tcp") -> dict:
        return self.probes((ns, proto, host, port, timeout))[0]

    def rate(self, seconds: float = 0.8, warmup: float = 0.3) -> float:
        """Bytes/s a bulk tcp stream a -> b achieves, measured at the receiver."""
        rx = self.spawn(NS_B, "recv", self.b, "5300", str(warmup), str(seconds))
        self.wait_ready(rx)
        tx = self.spawn(NS_A, "send", self.b, "5300", str(warmup + seconds + 1))
        got = self.finish(rx, warmup + seconds + 10)
        tx.kill()
        tx.wait(5)
        return got["bytes"] / got["seconds"]


def _snapshot() -> dict:
    """What LinkFaults may touch in ns a: filter rules, qdiscs, link flags."""
    link = _ok(["ip", "-n", NS_A, "-br", "link", "show", "dev", IF_A]).split()
    return {"iptables": run_in_a(["iptables", "-w", "5", "-S"], 10)[1],
            "qdisc": _ok(["ip", "netns", "exec", NS_A, "tc", "qdisc", "show"]),
            "link": link[1:2] + link[3:]}     # state and flags (not the MAC)


def _wait_snapshot(want: dict, timeout: float = 3.0) -> dict:
    """Link state settles a moment after `up` (carrier): poll instead of sleeping."""
    deadline = time.monotonic() + timeout
    while (got := _snapshot()) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


@pytest.fixture(scope="module")
def lab(request) -> Lab:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces, a veth pair, iptables rules, qdiscs")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` (iproute2) in PATH")
    prefix = _free_prefix()
    lab = Lab(a=prefix + "1", b=prefix + "2")

    def teardown() -> None:
        try:
            for p in lab.procs:     # our children only, by PID; a namespace outlives its processes
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
                for pipe in (p.stdout, p.stderr):
                    pipe.close()
        finally:
            for ns in (NS_A, NS_B):     # deleting ns a also deletes the veth pair
                if ns in _sh(["ip", "netns", "list"]).stdout.split():
                    _ok(["ip", "netns", "del", ns])
    request.addfinalizer(teardown)     # before creating anything: a half-built lab goes too

    cp = _sh(["ip", "netns", "add", NS_A])
    if cp.returncode != 0:
        pytest.skip(f"`ip netns add` unusable: {cp.stderr.strip()}")
    _ok(["ip", "netns", "add", NS_B])
    # Created inside the namespaces: the root namespace never sees these names.
    _ok(["ip", "link", "add", IF_A, "netns", NS_A, "type", "veth", "peer", "name", IF_B,
         "netns", NS_B])
    for ns, dev, addr in ((NS_A, IF_A, lab.a), (NS_B, IF_B, lab.b)):
        _ok(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev])
        _ok(["ip", "-n", ns, "link", "set", "dev", dev, "up"])
        _ok(["ip", "-n", ns, "link", "set", "dev", "lo", "up"])

    rc, _, err = run_in_a(["iptables", "-w", "5", "-S"], 10)
    if rc != 0:
        lab.missing["iptables"] = f"iptables unusable in a network namespace: {err.strip()[:200]}"
    rc, _, err = run_in_a(["tc", "qdisc", "replace", "dev", IF_A, "root", "tbf", "rate", "1mbit",
                           "burst", "16k", "latency", "50ms"], 10)
    if rc != 0:
        lab.missing["tc"] = f"tc tbf unusable: {err.strip()[:200]}"
    else:
        run_in_a(["tc", "qdisc", "del", "dev", IF_A, "root"], 10)

    for ns, host in ((NS_A, lab.a), (NS_B, lab.b)):
        srv = lab.spawn(ns, "serve", host, "120", str(P1), str(P2))
        lab.wait_ready(srv)
    return lab


@pytest.fixture
def faults(lab):
    """LinkFaults on ns a's veth; afterwards ns a must be exactly as before."""
    before = _snapshot()
    f = LinkFaults(run_in_a, IF_A, label="ns-a")
    yield f
    f.restore()
    assert _wait_snapshot(before) == before


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- link

def test_down_blocks_connect_and_up_restores_it(lab, faults):
    assert lab.probe(NS_A, lab.b, P1)["result"] == "ok"
    faults.down()
    out, into = lab.probes((NS_A, "tcp", lab.b, P1, 1.0), (NS_B, "tcp", lab.a, P1, 1.0))
    assert out["result"] in ("ENETUNREACH", "EHOSTUNREACH", "timeout"), out
    assert into["result"] == "timeout", into
    faults.up()
    deadline = time.monotonic() + 5
    while (got := lab.probe(NS_A, lab.b, P1, 0.5))["result"] != "ok":
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got["result"] == "ok", got


# --------------------------------------------------------------------------- filters

def test_drop_makes_connects_time_out_both_ways(lab, faults):
    lab.need("iptables")
    faults.drop()
    out, into = lab.probes((NS_A, "tcp", lab.b, P1, 1.0), (NS_B, "tcp", lab.a, P1, 1.0))
    for got in (out, into):
        assert got["result"] == "timeout" and got["seconds"] >= 0.9, got
    faults.clear_filters()
    assert lab.probe(NS_A, lab.b, P1)["result"] == "ok"


def test_reject_fails_fast_both_ways(lab, faults):
    lab.need("iptables")
    assert lab.probe(NS_B, lab.a, P1, proto="udp")["result"] == "ok"   # the echo answers
    faults.reject()
    results = lab.probes((NS_A, "tcp", lab.b, P1, 3.0), (NS_B, "tcp", lab.a, P1, 3.0),
                         (NS_B, "udp", lab.a, P1, 3.0))
    for got in results:
        assert got["result"] in ("ECONNREFUSED", "ECONNRESET"), got
        assert got["seconds"] < 0.5, got
    faults.clear_filters()
    assert lab.probe(NS_B, lab.a, P1, proto="udp")["result"] == "ok"


def test_port_drop_leaves_another_port_working(lab, faults):
    lab.need("iptables")
    faults.drop(port=P1)
    results = lab.probes((NS_A, "tcp", lab.b, P1, 1.0), (NS_B, "tcp", lab.a, P1, 1.0),
                         (NS_A, "tcp", lab.b, P2, 1.0), (NS_B, "tcp", lab.a, P2, 1.0))
    assert [r["result"] for r in results] == ["timeout", "timeout", "ok", "ok"], results


def test_port_reject_resets_only_that_port(lab, faults):
    lab.need("iptables")
    faults.reject(port=P2)
    results = lab.probes((NS_A, "tcp", lab.b, P2, 2.0), (NS_B, "tcp", lab.a, P2, 2.0),
                         (NS_A, "tcp", lab.b, P1, 2.0), (NS_B, "tcp", lab.a, P1, 2.0))
    assert [r["result"] for r in results] == ["ECONNREFUSED", "ECONNREFUSED", "ok", "ok"], results


# --------------------------------------------------------------------------- rate

def test_limit_throttles_a_bulk_transfer_and_unlimit_restores(lab, faults):
    lab.need("tc")
    rate = 200_000
    faults.limit(rate)
    limited = lab.rate(seconds=2.0, warmup=0.5)
    faults.unlimit()
    after = lab.rate()
    print(f"limited {limited:.0f} B/s, unlimited {after:.0f} B/s")
    assert 0.5 * rate < limited < 1.5 * rate, f"{limited:.0f} B/s through a {rate} B/s limit"
    assert after > 10 * rate, f"only {after:.0f} B/s after unlimit()"
    faults.unlimit()    # nothing left: fine


# --------------------------------------------------------------------------- restore

def test_restore_after_a_mix_leaves_the_namespace_as_before(lab):
    lab.need("iptables")
    lab.need("tc")
    # Somebody else's rules, including a chain with the generic name: they must survive.
    for rule in (["-N", "QMH-FAULT"], ["-A", "QMH-FAULT", "-p", "udp", "-j", "ACCEPT"],
                 ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]):
        assert run_in_a(["iptables", "-w", "5", *rule], 10)[0] == 0
    before = _snapshot()
    f = LinkFaults(run_in_a, IF_A, label="ns-a")
    f.drop(port=P1)
    f.reject(port=P2)
    f.drop()
    f.limit(1_000_000, burst=32_000, latency_ms=20)
    f.limit(2_000_000)              # replaces our own tbf
    f.down()
    during = _snapshot()
    assert f"-A INPUT -i {IF_A} -j {f.chain}" in during["iptables"]
    assert f"-A OUTPUT -o {IF_A} -j {f.chain}" in during["iptables"]
    assert f"tbf {QDISC_HANDLE}" in during["qdisc"]
    assert "DOWN" in during["link"]
    f.restore()
    assert _wait_snapshot(before) == before
    f.restore()                     # idempotent
    with LinkFaults(run_in_a, IF_A, label="ns-a") as g:
        g.reject()
        g.limit(500_000)
    assert _wait_snapshot(before) == before
    assert lab.probe(NS_A, lab.b, P1)["result"] == "ok"
    for rule in (["-D", "INPUT", "-i", "lo", "-j", "ACCEPT"], ["-F", "QMH-FAULT"],
                 ["-X", "QMH-FAULT"]):
        run_in_a(["iptables", "-w", "5", *rule], 10)


def test_limit_refuses_to_replace_a_foreign_root_qdisc(lab, faults):
    lab.need("tc")
    assert run_in_a(["tc", "qdisc", "add", "dev", IF_A, "root", "handle", "1:", "tbf",
                     "rate", "1mbit", "burst", "16k", "latency", "50ms"], 10)[0] == 0
    try:
        with pytest.raises(LinkFaultError, match="configured by someone else") as exc:
            faults.limit(100_000)
        assert IF_A in _one_line(exc)
        faults.unlimit()            # not ours: left alone
        faults.restore()
        assert "tbf 1: root" in _ok(["ip", "netns", "exec", NS_A, "tc", "qdisc", "show",
                                     "dev", IF_A])
    finally:
        run_in_a(["tc", "qdisc", "del", "dev", IF_A, "root"], 10)


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("name", ["eth0;id", "", "x" * 16, "-h", "..", "eth 0"])
def test_bad_interface_name_is_refused_up_front(name):
    calls = []
    with pytest.raises(LinkFaultError) as exc:
        LinkFaults(lambda argv, timeout: calls.append(argv) or (0, "", ""), name, label="h1")
    msg = _one_line(exc)
    assert msg.startswith("h1: bad interface name") and repr(name) in msg
    assert calls == []


@pytest.mark.parametrize("chain", ["INPUT", "output", "-X", "x" * 29, "a b"])
def test_bad_chain_name_is_refused_up_front(chain):
    with pytest.raises(LinkFaultError, match="bad iptables chain name") as exc:
        LinkFaults(lambda argv, timeout: (0, "", ""), "eth1", label="h1", chain=chain)
    assert repr(chain) in _one_line(exc)


def test_nonexistent_interface_names_it_and_the_command(lab):
    before = _snapshot()
    f = LinkFaults(run_in_a, "qmhltnope0", label="ns-a")
    cases = [(f.down, "ip link set dev qmhltnope0 down"),
             (f.up, "ip link set dev qmhltnope0 up"),
             (f.limit, "tc qdisc show dev qmhltnope0 root")]
    if "iptables" not in lab.missing:
        cases.append((f.drop, "ip link show dev qmhltnope0"))
    for call, command in cases:
        with pytest.raises(LinkFaultError) as exc:
            call(100_000) if call == f.limit else call()
        msg = _one_line(exc)
        assert msg.startswith("ns-a/qmhltnope0: ") and f"`{command}`" in msg, msg
        assert re.search(r'Cannot find device "qmhltnope0"|Device "qmhltnope0" does not exist',
                         msg), msg
    f.restore()                     # nothing of ours anywhere: not an error
    assert _snapshot() == before


@pytest.mark.parametrize("call", [
    lambda f: f.drop(port=0), lambda f: f.reject(port=65536), lambda f: f.drop(port="22"),
    lambda f: f.limit(0), lambda f: f.limit(-5), lambda f: f.limit(1000, burst=10),
    lambda f: f.limit(1000, latency_ms=0)])
def test_bad_arguments_are_refused_before_any_command(call):
    calls = []
    f = LinkFaults(lambda argv, timeout: calls.append(argv) or (0, "", ""), "eth1")
    with pytest.raises(ValueError) as exc:
        call(f)
    assert "\n" not in str(exc.value)
    assert calls == []


def test_restore_tries_everything_and_reports_all_failures_in_one_error():
    """A fake runner: the link will not come up and iptables is broken; tc still gets its turn."""
    calls = []

    def run(argv, timeout):
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        assert timeout == 7.0
        calls.append(argv)
        if argv[:2] == ["ip", "link"] and argv[-1] == "up":
            return 2, "", "RTNETLINK answers: Operation not permitted\n"
        if argv[0] == "iptables" and "-S" in argv and len(calls) > 3:
            return 4, "", "iptables: broken.\n"
        if argv[:3] == ["tc", "qdisc", "show"]:
            return 0, f"qdisc tbf {QDISC_HANDLE} root refcnt 2 rate 8Mbit\n", ""
        return 0, "", ""

    f = LinkFaults(run, "eth1", label="h1", timeout=7.0)
    f.down()
    f.drop()
    with pytest.raises(LinkFaultError) as exc:
        f.restore()
    msg = _one_line(exc)
    assert "h1/eth1: `ip link set dev eth1 up` failed (rc 2): RTNETLINK answers" in msg
    assert "`iptables -w 3 -S` failed (rc 4): iptables: broken." in msg
    assert ["tc", "qdisc", "del", "dev", "eth1", "root", "handle", QDISC_HANDLE] in calls
