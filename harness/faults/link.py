"""Real network faults on one interface of one host: link down, drop, reject, rate limit.

    with LinkFaults(host.run, "eth1", label="alpha") as link:
        link.drop(port=4444)        # migration stream stalls (both directions, tcp port 4444)
        link.clear_filters()
        link.reject()               # every connection on eth1 is reset / refused at once
        link.limit(50_000_000)      # egress of eth1 shaped to 50 MB/s (tbf)
        link.down()                 # carrier gone: the kernel's view, not a proxy's
    # leaving the block (or restore()) undoes all of it

`run` is a host's command runner, `run(argv, timeout) -> (rc, stdout, stderr)`
(LocalHost.run, or the SSH host's): this module only builds argv lists, so the
same code drives the local kernel, a network namespace or a remote host.

What it touches, and nothing else:
  * `ip link set dev IF down|up`;
  * one iptables chain of its own (default QMH-FAULT-<IF>), jumped to from
    INPUT (-i IF) and OUTPUT (-o IF): cleanup deletes exactly that chain and
    those two jumps, so other rules (docker, ufw, a colleague's) are never seen;
  * a tbf root qdisc on IF with handle f417:; it refuses to replace a root
    qdisc somebody configured, so removing ours brings back the kernel default
    that was there before.
Filters act on traffic this host sends or receives over IF (IPv4 only; not
forwarded or bridged traffic); limit() shapes IF's egress only. Faulting the
interface a remote host is driven through cuts off the runner too: use the
migration interface.
"""
from __future__ import annotations

import re
import shlex
from typing import Callable, Sequence

Runner = Callable[[Sequence[str], float], tuple[int, str, str]]

QDISC_HANDLE = "f417:"          # ours; a root qdisc with any other non-zero handle is not
CMD_TIMEOUT = 10.0
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_CHAIN = re.compile(r"[A-Za-z0-9_.-]{1,28}")     # iptables: at most 28 characters
_MISSING_DEVICE = "Cannot find device"
_BUILTIN_CHAINS = ("INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING")


class LinkFaultError(Exception):
    """One line: which host and interface, the command, its stderr."""


class LinkFaults:
    """Faults on one interface of one host; everything it changes is undone by restore()."""

    ip = "ip"
    iptables = "iptables"
    tc = "tc"

    def __init__(self, run: Runner, interface: str, *, label: str = "host",
                 chain: str | None = None, timeout: float = CMD_TIMEOUT, guard=None):
        # guard: a FaultGuard on the same host (harness.faults.guard). Each fault is
        # recorded with it before it is applied, so the host undoes it if we die.
        self._guard = guard
        self.label = label
        self.interface = interface
        # Leading '-' would read as an option to ip/tc/iptables; "." and ".." are not names.
        if not _IFNAME.fullmatch(interface) or interface[0] == "-" or interface in (".", ".."):
            raise LinkFaultError(f"{label}: bad interface name {interface!r}: want 1-15 of "
                                 f"[A-Za-z0-9_.-], not starting with '-'")
        # Per interface by default: two LinkFaults on one host never flush each other's rules.
        self.chain = chain if chain is not None else f"QMH-FAULT-{interface}"
        # Never a built-in chain: restore() flushes and deletes this one.
        if not _CHAIN.fullmatch(self.chain) or self.chain[0] == "-" \
                or self.chain.upper() in _BUILTIN_CHAINS:
            raise LinkFaultError(f"{label}/{interface}: bad iptables chain name {self.chain!r}: "
                                 f"want 1-28 of [A-Za-z0-9_.-], not starting with '-', "
                                 f"not a built-in chain")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 s, not {timeout}")
        self._run = run
        self.timeout = timeout
        self._took_down = False      # restore() only brings up a link that we took down
        # Once we filtered / limited, restore() failing to even look is an error; before, it is
        # a host without (working) iptables or tc where nothing of ours can be.
        self._filtered = False
        self._limited = False
        self._checked = False        # interface existence, checked once before the first filter
        self._chain_ready = False    # chain and jumps made by us and not cleared since

    # ---------------------------------------------------------------- link
    def down(self) -> None:
        """`ip link set dev IF down`: routes via IF vanish, peers lose carrier.

        The kernel also drops IF's IPv6 addresses (unless keep_addr_on_down is set);
        up() cannot bring those back.
        """
        self._record("link", [[self.ip, "link", "set", "dev", self.interface, "up"]])
        rc, _out, _err, line = self._try([self.ip, "link", "set", "dev", self.interface, "down"])
        # A timeout or a raising runner leaves the outcome unknown: assume down, restore() ups.
        if rc in (0, -1, 124):
            self._took_down = True
        if rc != 0:
            raise LinkFaultError(line)

    def up(self) -> None:
        self._must([self.ip, "link", "set", "dev", self.interface, "up"])
        self._took_down = False
        self._forget("link")

    # ---------------------------------------------------------------- filters
    def drop(self, *, port: int | None = None) -> None:
        """Silently drop everything on IF, in and out (or only tcp `port`, either end)."""
        self._add([[*m, "-j", "DROP"] for m in self._match(port)])

    def reject(self, *, port: int | None = None) -> None:
        """Refuse at once: tcp gets a reset, anything else icmp-port-unreachable.

        Caveat: the exemptions for our own resets (and icmp unreachables, without `port`)
        also let those past rules added later, e.g. a drop() after this reject().
        """
        tcp_reset = ["-j", "REJECT", "--reject-with", "tcp-reset"]
        # The reset/icmp we send for an incoming packet leaves through OUTPUT -o IF and would
        # itself be rejected (i.e. dropped): the remote side would only see a timeout.
        rules = [["-o", self.interface, "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "RETURN"]]
        if port is None:
            rules += [["-o", self.interface, "-p", "icmp", "--icmp-type", "destination-unreachable",
                       "-j", "RETURN"],
                      ["-p", "tcp", *tcp_reset],
                      ["-j", "REJECT", "--reject-with", "icmp-port-unreachable"]]
        else:
            rules += [[*m, *tcp_reset] for m in self._match(port)]
        self._add(rules)

    def prepare(self) -> None:
        """Make our (empty) chain and its jumps now, so that a later drop() or reject()
        costs only its own rules: a fault timed by a remote runner's latency (~0.2 s an
        exec on some hosts) lands closer to when it was asked for. restore() removes them."""
        self._ensure_chain()

    def clear_filters(self) -> None:
        """Remove our chain and its two jumps (nothing else); fine if they are not there."""
        errors = self._clear_filters()
        if errors:
            raise LinkFaultError("; ".join(errors))

    # ---------------------------------------------------------------- rate
    def limit(self, rate_bytes_per_s: int, *, burst: int | None = None,
              latency_ms: int = 50) -> None:
        """Shape IF's egress to rate_bytes_per_s with tbf (replaces our earlier limit)."""
        if isinstance(rate_bytes_per_s, bool) or not isinstance(rate_bytes_per_s, int) \
                or rate_bytes_per_s <= 0:
            raise ValueError(f"rate must be an int > 0 bytes/s, not {rate_bytes_per_s!r}")
        if burst is None:
            # 20 ms worth, at least a few full-size packets: the rate holds without bursts
            # big enough to blur a short measurement.
            burst = max(rate_bytes_per_s // 50, 16 * 1024)
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1600:
            raise ValueError(f"burst must be an int >= 1600 bytes (one packet), not {burst!r}")
        if isinstance(latency_ms, bool) or not isinstance(latency_ms, int) or latency_ms <= 0:
            raise ValueError(f"latency must be an int > 0 ms, not {latency_ms!r}")
        kind, handle = self._root_qdisc(tolerate_missing=False)
        if handle not in ("0:", QDISC_HANDLE):
            raise LinkFaultError(f"{self._where()}: root qdisc {kind} {handle} was configured by "
                                 f"someone else; refusing to replace it (restore could not "
                                 f"bring it back)")
        self._limited = True
        self._record("qdisc", [[self.tc, "qdisc", "del", "dev", self.interface, "root",
                                "handle", QDISC_HANDLE]])
        # tc's "bps" means bytes/s; spelt in bits to leave no doubt.
        self._must([self.tc, "qdisc", "replace", "dev", self.interface, "root",
                    "handle", QDISC_HANDLE, "tbf", "rate", f"{rate_bytes_per_s * 8}bit",
                    "burst", str(burst), "latency", f"{latency_ms}ms"])

    def unlimit(self) -> None:
        """Remove our tbf (the kernel's default qdisc comes back); fine if it is not there."""
        errors = self._unlimit(tolerate_missing=False)
        if errors:
            raise LinkFaultError("; ".join(errors))

    # ---------------------------------------------------------------- cleanup
    def restore(self) -> None:
        """Undo everything: link up (if we took it down), chain gone, tbf gone.

        Idempotent; what is already gone (even the interface) is not an error.
        Every step is tried; other failures come back as one LinkFaultError.
        """
        errors: list[str] = []
        if self._took_down:
            rc, _out, err, line = self._try([self.ip, "link", "set", "dev", self.interface, "up"])
            if rc == 0 or _MISSING_DEVICE in err:
                self._took_down = False
                self._forget("link")
            else:
                errors.append(line)
        errors += self._clear_filters(quiet_unless_used=True)
        errors += self._unlimit(tolerate_missing=True, quiet_unless_used=True)
        if errors:
            raise LinkFaultError("; ".join(errors))

    def __enter__(self) -> "LinkFaults":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    # ---------------------------------------------------------------- internals
    def _record(self, what: str, undo: list[list[str]]) -> None:
        """Tell the host how to undo a fault before applying it; no guard, no fault."""
        if self._guard is None:
            return
        from harness.faults.guard import GuardError
        try:
            self._guard.record(f"{what}:{self.interface}:{self.chain}", undo)
        except GuardError as exc:
            raise LinkFaultError(f"{self._where()}: {exc}; not applying the fault") from None

    def _forget(self, what: str) -> None:
        if self._guard is None:
            return
        from harness.faults.guard import GuardError
        try:
            self._guard.forget(f"{what}:{self.interface}:{self.chain}")
        except GuardError:
            pass        # the guard is gone: it undid (or will undo) the same, harmlessly

    def _where(self) -> str:
        return f"{self.label}/{self.interface}"

    def _try(self, argv: list[str]) -> tuple[int, str, str, str]:
        """Run argv: (rc, stdout, stderr, one-line error text). A raising runner is rc -1."""
        try:
            rc, out, err = self._run(argv, self.timeout)
        except Exception as exc:  # noqa: BLE001 - an SSH runner may raise; report, don't leak
            rc, out, err = -1, "", f"runner raised {type(exc).__name__}: {exc}"
        detail = " ".join((err or "").split()) or "(no stderr)"
        line = f"{self._where()}: `{shlex.join(argv)}` failed (rc {rc}): {detail}"
        return rc, out or "", err or "", line

    def _must(self, argv: list[str]) -> str:
        rc, out, _err, line = self._try(argv)
        if rc != 0:
            raise LinkFaultError(line)
        return out

    def _ipt(self, *args: str) -> list[str]:
        # -w: wait for the xtables lock (legacy backend) instead of failing on a concurrent run.
        return [self.iptables, "-w", str(max(1, int(self.timeout / 2))), *args]

    def _hooks(self) -> list[list[str]]:
        return [["INPUT", "-i", self.interface, "-j", self.chain],
                ["OUTPUT", "-o", self.interface, "-j", self.chain]]

    def _rules(self) -> list[list[str]]:
        """`iptables -S` as token lists: what exists, without parsing error messages."""
        out = self._must(self._ipt("-S"))
        return [line.split() for line in out.splitlines() if line.strip()]

    def _ensure_chain(self) -> None:
        if self._chain_ready:
            return
        if not self._checked:
            # iptables takes any interface name: catch a typo here, not as a fault that never bites.
            self._must([self.ip, "link", "show", "dev", self.interface])
            self._checked = True
        rules = self._rules()
        self._filtered = True
        self._record("filter", [self._ipt("-D", *hook) for hook in self._hooks()]
                     + [self._ipt("-F", self.chain), self._ipt("-X", self.chain)])
        if ["-N", self.chain] not in rules:
            self._must(self._ipt("-N", self.chain))
        for hook in self._hooks():
            if ["-A", *hook] not in rules:
                # Position 1: ahead of any ACCEPT a firewall already has.
                self._must(self._ipt("-I", hook[0], "1", *hook[1:]))
        self._chain_ready = True

    def _add(self, rules: list[list[str]]) -> None:
        self._ensure_chain()
        for rule in rules:
            self._must(self._ipt("-A", self.chain, *rule))

    def _match(self, port: int | None) -> list[list[str]]:
        if port is None:
            return [[]]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"port must be an int in 1..65535, not {port!r}")
        # Either end: covers us as client (dport out, sport in) and as server (the reverse).
        return [["-p", "tcp", "--dport", str(port)], ["-p", "tcp", "--sport", str(port)]]

    def _clear_filters(self, *, quiet_unless_used: bool = False) -> list[str]:
        self._chain_ready = False
        try:
            rules = self._rules()
        except LinkFaultError as exc:
            return [] if quiet_unless_used and not self._filtered else [str(exc)]
        errors = []
        for hook in self._hooks():
            for _ in range(rules.count(["-A", *hook])):
                rc, _out, _err, line = self._try(self._ipt("-D", *hook))
                if rc != 0:
                    errors.append(line)
                    break
        if ["-N", self.chain] in rules:
            for op in ("-F", "-X"):
                rc, _out, _err, line = self._try(self._ipt(op, self.chain))
                if rc != 0:
                    errors.append(line)
                    break
        if not errors:
            self._forget("filter")
        return errors

    def _root_qdisc(self, *, tolerate_missing: bool) -> tuple[str, str]:
        """(kind, handle) of IF's root qdisc, e.g. ("noqueue", "0:"); ("", "") if IF is gone
        and that is tolerated."""
        rc, out, err, line = self._try([self.tc, "qdisc", "show", "dev", self.interface, "root"])
        if rc != 0:
            if tolerate_missing and _MISSING_DEVICE in err:
                return "", ""
            raise LinkFaultError(line)
        for text in out.splitlines():
            words = text.split()    # "qdisc tbf f417: root refcnt 2 rate ..."
            if len(words) >= 3 and words[0] == "qdisc":
                return words[1], words[2]
        return "", "0:"             # no root qdisc shown: nothing configured

    def _unlimit(self, *, tolerate_missing: bool, quiet_unless_used: bool = False) -> list[str]:
        try:
            _kind, handle = self._root_qdisc(tolerate_missing=tolerate_missing)
        except LinkFaultError as exc:
            return [] if quiet_unless_used and not self._limited else [str(exc)]
        if handle != QDISC_HANDLE:
            self._forget("qdisc")
            return []               # not ours (or already gone): leave it
        rc, _out, err, line = self._try([self.tc, "qdisc", "del", "dev", self.interface,
                                         "root", "handle", QDISC_HANDLE])
        if rc != 0 and not (tolerate_missing and _MISSING_DEVICE in err):
            return [line]
        self._forget("qdisc")
        return []


def migration_link(machine) -> LinkFaults:
    """Faults on the migration interface of the inventory host a Machine runs on."""
    host = machine.host
    iface = getattr(getattr(host, "entry", None), "migration_interface", None)
    if host.is_local or not iface:
        raise ValueError(f"{machine.name}: link faults need an inventory host with a "
                         f"migration_interface (runs on '{host.name}')")
    # The host side undoes these faults if our connection drops (supervisor guard mode).
    guard = host.fault_guard() if hasattr(host, "fault_guard") else None
    return LinkFaults(host.run, iface, label=host.name, guard=guard)
