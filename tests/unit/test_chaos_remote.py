"""harness.stress.remote without QEMU or hosts: which commands a chaos link cut runs where.

The farm test (tests/integration/test_farm_chaos.py) applies them for real.
"""
import os
from types import SimpleNamespace

import pytest

from harness.hosts.placement import Placement
from harness.migration.transports import Transport
from harness.runtime.actions import Recover
from harness.stress import remote


class FakeGuard:
    def __init__(self, log):
        self.log = log

    def record(self, key, undo):
        self.log.append(("record", key))

    def forget(self, key):
        self.log.append(("forget", key))


class FakeHost:
    is_local = False

    def __init__(self, name, iface="mig0", log=None):
        self.name = name
        self.entry = SimpleNamespace(migration_interface=iface)
        self.listen_address = "10.9.0.2"
        self.log = log if log is not None else []

    def run(self, argv, timeout):
        self.log.append((self.name, list(argv)))
        return 0, "", ""

    def fault_guard(self):
        return FakeGuard(self.log)


def _iptables(log, host):
    return [a for h, a in (e for e in log if e[0] == host) if a[0] == "iptables"]


def test_cut_rejects_the_watched_ports_on_the_destination_host_only():
    log = []
    src, dst = FakeHost("alpha", log=log), FakeHost("beta", log=log)
    link = remote.ChaosLink(Placement(src, dst))
    chain = f"QMH-FAULT-mig0-{os.getpid() % 10**7}"
    assert link.faults.chain == chain and len(chain) <= 28
    link.restore()
    assert log == []                      # never armed: no remote command at all
    link.watch(4444)
    assert link.cut() == 0                # the fake ss reset no connection
    rules = [" ".join(a[3:]) for a in _iptables(log, "beta")]
    assert f"-A {chain} -p tcp --dport 4444 -j REJECT --reject-with tcp-reset" in rules
    assert f"-A {chain} -p tcp --sport 4444 -j REJECT --reject-with tcp-reset" in rules
    assert f"-I INPUT 1 -i mig0 -j {chain}" in rules
    assert not [e for e in log if e[0] == "alpha"]
    first_guard = next(i for i, e in enumerate(log) if e[0] == "record")
    first_fault = next(i for i, e in enumerate(log) if e[0] == "beta" and "REJECT" in e[1])
    assert first_guard < first_fault      # the host can undo it before it exists
    kills = [a for h, a in log if h == "beta" and a[:2] == ["ss", "-K"]]
    assert kills == [["ss", "-K", "-t", "-n", "-H", "state", "established", "sport", "=", ":4444"]]
    n = len(log)
    link.cut()                            # an already refused port: only its connections reset
    assert [a[0] for _, a in log[n:]] == ["ss"]
    link.watch(5555)                      # a recovery listener appears
    link.cut()
    assert any("--dport 5555" in " ".join(a) for _, a in log[n:] if isinstance(a, list))
    assert log[-1][1][-7:] == ["sport", "=", ":4444", "or", "sport", "=", ":5555"]
    link.restore()
    assert ("forget", f"filter:mig0:{chain}") in log


def test_one_host_pairs_fault_loopback_and_a_missing_interface_is_one_line():
    h = FakeHost("alpha")
    assert remote.ChaosLink(Placement(h, h)).faults.interface == "lo"
    with pytest.raises(ValueError) as exc:
        remote.ChaosLink(Placement(FakeHost("alpha"), FakeHost("beta", iface=None)))
    assert "\n" not in str(exc.value) and "beta" in str(exc.value) and "migration_interface" in str(exc.value)


def test_unix_bases_are_refused_between_hosts_in_one_line():
    base = SimpleNamespace(transport=Transport.UNIX, path="/migration/precopy/unix")
    with pytest.raises(ValueError) as exc:
        remote.incoming(SimpleNamespace(), base)
    assert "\n" not in str(exc.value) and "unix" in str(exc.value) and "tcp only" in str(exc.value)


def test_recover_listens_and_resumes_on_the_envs_listen_host():
    calls = []

    class Env:
        def listen_host(self):
            return "10.9.0.2"

        def qmp(self, side, command, args, timeout, oob):
            calls.append((side, command, args))
            if command == "query-migrate":
                return {"return": {"socket-address": [{"port": "4321"}]}}
            return {"return": {}}

        def set_recover_port(self, port):
            calls.append(("port", port))

    outcome, _ = Recover().apply(Env(), "dst", ())
    assert outcome == "ok"
    assert ("dst", "migrate-recover", {"uri": "tcp:10.9.0.2:0"}) in calls
    assert ("src", "migrate", {"uri": "tcp:10.9.0.2:4321", "resume": True}) in calls
