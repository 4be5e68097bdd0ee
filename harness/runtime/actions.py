"""Chaos actions: one small class per thing that can be done to a migrating pair.

Like a Jepsen nemesis, each action draws its own arguments (from the binary's
schema surface and the base's setup), applies itself through an Env, and says
what happened as an outcome class. The engine (harness.stress.engine) and the
exported standalone reproducer both call `apply` here: one implementation.

Env is whatever drives the two QEMUs; it needs:
  qmp(side, command, args, timeout, oob) -> reply dict ({"return": ..} or
      {"error": {"class", "desc"}}); raises NoReply on timeout, Gone if the
      monitor is closed
  flood(side, command, count, oob)   queue `count` commands on every monitor of side
  signal(side, signame)              send a signal to that QEMU
  expect_exit(side, rc)              that exit code is no longer news
  alive(side) -> bool
  listener(channel) -> (host, port) | None   main: the destination's migration
                                     listener; recover: the last recovery listener
  migrate_uri() -> str               where the source migrates to (maybe a relay)
  listen_host() -> str               the address the destination listens on (a
                                     recovery listener too; 127.0.0.1 locally)
  set_recover_port(port)             remember the recovery listener
  cut() -> int                       reset the migration connection(s): a relay's
                                     locally (how many connections), an iptables
                                     reject on remote hosts (how many ports)
  hold(sock)                         keep a socket open until the attempt ends
  pending_listener() -> str          a URI of a socket that listens but never accepts

Nothing here imports from harness.* (see harness.runtime).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass

SIDES = ("src", "dst")
QMP_TIMEOUT = 5.0


class NoReply(Exception):
    """A QMP command got no reply within its timeout."""


class Gone(Exception):
    """The monitor is closed (QEMU exited or closed it)."""


@dataclass(frozen=True)
class DrawContext:
    """What an action may draw from: the binary's surface and the base's setup."""

    surface: object            # harness.runtime.surface.Surface
    postcopy: bool = False     # the base has postcopy-ram on
    tls: bool = False
    multifd: bool = False
    snapshots: bool = False    # the pair has a writable qcow2 disk
    hotplug: bool = False      # the pair has a free hotplug port
    colo: bool = False         # a COLO pair (primary = src, secondary = dst)
    only: tuple = ()           # draw only these kinds (weight-0 ones too), e.g. ("freeze",)


def outcome_class(reply: dict) -> str:
    if "error" in reply:
        return "refused:" + str(reply["error"].get("class", "?"))
    return "ok"


def _qmp(env, side, cmd, args=None, oob=False, timeout=QMP_TIMEOUT) -> tuple[str, str]:
    """(outcome class, words) of one QMP command."""
    try:
        r = env.qmp(side, cmd, args, timeout, oob)
    except NoReply:
        return "no-reply", f"{cmd}: no reply in {timeout:.0f}s"
    except Gone:
        return "disconnected", f"{cmd}: monitor gone"
    cls = outcome_class(r)
    if cls == "ok":
        return cls, f"{cmd}: ok"
    return cls, f"{cmd}: {r['error'].get('class')}: {str(r['error'].get('desc', ''))[:120]}"


class Action:
    """Base: `kind` names it in plans; draw/apply/describe are the whole contract."""

    kind = ""
    weight = 1
    sides = SIDES
    needs_alive = True

    def enabled(self, dc: DrawContext) -> bool:
        return True

    def weight_in(self, dc: DrawContext) -> int:
        """The draw's weight on this base (default: the class's)."""
        return self.weight

    def draw(self, rng, dc: DrawContext) -> tuple:
        return ()

    def apply(self, env, side: str, args: tuple) -> tuple[str, str]:
        raise NotImplementedError

    def key(self, args: tuple) -> str:
        """Coverage key: the kind, plus the name it acts on."""
        return self.kind

    def describe(self, args: tuple) -> str:
        return self.kind + ("" if not args else " " + " ".join(map(str, args)))

    def effects(self, args: tuple) -> frozenset:
        """What this step, once accepted, does to its side that the judging must know:
        SNAPSHOT (its migration status is now a snapshot's), RESET (its guest restarted).
        The engine and the standalone reproducer judge alike from it."""
        return frozenset()


SNAPSHOT, RESET = "snapshot", "reset"


# ---------------------------------------------------------------- configuration
class SetCapability(Action):
    kind = "set-cap"
    weight = 4

    def enabled(self, dc):
        return dc.surface.has("migrate-set-capabilities") and bool(dc.surface.capabilities)

    def draw(self, rng, dc):
        return (rng.choice(dc.surface.capabilities), rng.random() < 0.6)

    def apply(self, env, side, args):
        return _qmp(env, side, "migrate-set-capabilities",
                    {"capabilities": [{"capability": args[0], "state": args[1]}]})

    def key(self, args):
        return f"set-cap:{args[0]}"


class SetParameter(Action):
    kind = "set-param"
    weight = 6

    def enabled(self, dc):
        return dc.surface.has("migrate-set-parameters") and bool(dc.surface.parameters)

    def draw(self, rng, dc):
        from harness.runtime.surface import draw_value  # drawing only: reproducers replay
        p = rng.choice(dc.surface.parameters)
        return (p.name, draw_value(rng, p))

    def apply(self, env, side, args):
        return _qmp(env, side, "migrate-set-parameters", {args[0]: args[1]})

    def key(self, args):
        return f"set-param:{args[0]}"


# ---------------------------------------------------------------- migration commands
class Simple(Action):
    """One QMP command with fixed arguments."""

    command = ""
    arguments: dict | None = None
    oob = False

    def enabled(self, dc):
        return dc.surface.has(self.command)

    def apply(self, env, side, args):
        return _qmp(env, side, self.command, self.arguments, oob=self.oob)


class StartPostcopy(Simple):
    kind, command, sides, weight = "start-postcopy", "migrate-start-postcopy", ("src", "src", "dst"), 3


class Pause(Simple):
    kind, command, oob, weight = "pause", "migrate-pause", True, 2


class Cancel(Simple):
    kind, command, weight = "cancel", "migrate_cancel", 2


class ContinueSwitchover(Simple):
    kind, command, sides = "continue", "migrate-continue", ("src",)
    arguments = {"state": "pre-switchover"}


class Yank(Simple):
    """yank the migration instance: QEMU drops the migration's connections at once."""

    kind, command = "yank", "yank"
    arguments = {"instances": [{"type": "migration"}]}


class ColoLostHeartbeat(Simple):
    """Failover: drawn on every base (elsewhere it must be refused), often on COLO ones."""

    kind, command = "colo-lost-heartbeat", "x-colo-lost-heartbeat"

    def weight_in(self, dc):
        return 4 if dc.colo else self.weight


class ColoTeardown(Action):
    """The failover's documented teardown of one side (docs/COLO-FT.txt): the primary
    drops its replication child and its proxy objects, the secondary its NBD server
    and redirectors. Each command is sent whatever the previous one said."""

    kind, weight = "colo-teardown", 2
    PRIMARY = (("x-blockdev-change", {"parent": "colo-disk0", "child": "children.1"}),
               ("human-monitor-command", {"command-line": "drive_del replication0"}),
               *(("object-del", {"id": o}) for o in ("comp0", "iothread1", "m0", "redire0", "redire1")))
    SECONDARY = (("nbd-server-stop", None), ("object-del", {"id": "f2"}), ("object-del", {"id": "f1"}),
                 ("chardev-remove", {"id": "red1"}), ("chardev-remove", {"id": "red0"}))

    def enabled(self, dc):
        return dc.colo

    def apply(self, env, side, args):
        outcomes = [_qmp(env, side, cmd, a) for cmd, a in (self.PRIMARY if side == "src" else self.SECONDARY)]
        bad = [w for c, w in outcomes if c != "ok"]
        return (outcomes[0][0] if bad else "ok"), (bad[0] if bad else f"{len(outcomes)} commands: ok")


class Recover(Action):
    """migrate-recover on the destination with a fresh listener, then a resuming
    migrate from the source to it."""

    kind, sides, weight = "recover", ("dst",), 2

    def enabled(self, dc):
        return dc.surface.has("migrate-recover")

    def apply(self, env, side, args):
        host = env.listen_host()
        cls, words = _qmp(env, "dst", "migrate-recover", {"uri": f"tcp:{host}:0"}, oob=True)
        if cls != "ok":
            return cls, words
        port = None
        try:
            r = env.qmp("dst", "query-migrate", None, QMP_TIMEOUT, False)
            addrs = r.get("return", {}).get("socket-address") or []
            port = int(addrs[-1]["port"]) if addrs else None
        except (NoReply, Gone, KeyError, ValueError):
            pass
        if port is None:
            return cls, words + "; no recovery port"
        env.set_recover_port(port)
        cls2, words2 = _qmp(env, "src", "migrate", {"uri": f"tcp:{host}:{port}", "resume": True})
        return cls2, f"{words}; {words2}"


class IncomingAgain(Action):
    """migrate-incoming again: the same kind of URI, or another transport."""

    kind, sides = "incoming-again", ("dst", "dst", "src")

    def enabled(self, dc):
        return dc.surface.has("migrate-incoming")

    def draw(self, rng, dc):
        return (rng.choice(["tcp:127.0.0.1:0", "tcp:127.0.0.1:0", "exec:cat /dev/null", "defer"]),)

    def apply(self, env, side, args):
        return _qmp(env, side, "migrate-incoming", {"uri": args[0]})


class MigrateAgain(Action):
    """A second `migrate`: to the real destination, or to a socket that never accepts."""

    kind, sides = "migrate-again", ("src", "src", "dst")

    def enabled(self, dc):
        return dc.surface.has("migrate")

    def draw(self, rng, dc):
        return (rng.choice(["same", "pending"]),)

    def apply(self, env, side, args):
        uri = env.migrate_uri() if args[0] == "same" else env.pending_listener()
        return _qmp(env, side, "migrate", {"uri": uri})


# ---------------------------------------------------------------- snapshots
SNAP_DISK = "disk0"


class SnapshotJob(Action):
    """snapshot-save / -load / -delete as jobs on the pair's qcow2 disk."""

    weight = 1
    command = ""

    def enabled(self, dc):
        return dc.snapshots and dc.surface.has(self.command)

    def draw(self, rng, dc):
        return (rng.choice(["chaos0", "chaos1"]), rng.getrandbits(16))

    def apply(self, env, side, args):
        a = {"job-id": f"{self.kind}-{args[1]}", "tag": args[0], "devices": [SNAP_DISK]}
        if self.command != "snapshot-delete":
            a["vmstate"] = SNAP_DISK
        return _qmp(env, side, self.command, a)

    def effects(self, args):
        return frozenset({SNAPSHOT, RESET} if self.command == "snapshot-load" else {SNAPSHOT})


class SnapshotSave(SnapshotJob):
    kind, command = "snapshot-save", "snapshot-save"


class SnapshotLoad(SnapshotJob):
    kind, command = "snapshot-load", "snapshot-load"


class SnapshotDelete(SnapshotJob):
    kind, command = "snapshot-delete", "snapshot-delete"


class Hmp(Action):
    """A human-monitor-command line (savevm, loadvm, quit, info migrate)."""

    kind, weight = "hmp", 2

    def enabled(self, dc):
        return dc.surface.has("human-monitor-command")

    def draw(self, rng, dc):
        lines = ["info migrate", "info status", "info migrate_parameters"]
        if dc.snapshots:
            lines += ["savevm chaos", "loadvm chaos", "delvm chaos"]
        lines += ["stop", "cont"]
        return (rng.choice(lines),)

    def apply(self, env, side, args):
        return _qmp(env, side, "human-monitor-command", {"command-line": args[0]})

    def key(self, args):
        return "hmp:" + args[0].split()[0] + (":" + args[0].split()[1] if args[0].startswith("info") else "")

    def effects(self, args):
        verb = args[0].split()[0]
        if verb not in ("savevm", "loadvm", "delvm"):
            return frozenset()
        return frozenset({SNAPSHOT, RESET} if verb == "loadvm" else {SNAPSHOT})


class BlockActivate(Action):
    kind = "block-activate"

    def enabled(self, dc):
        return dc.snapshots and dc.surface.has("blockdev-set-active")

    def draw(self, rng, dc):
        return (rng.random() < 0.5,)

    def apply(self, env, side, args):
        return _qmp(env, side, "blockdev-set-active", {"active": args[0]})


# ---------------------------------------------------------------- vm control
class RunControl(Simple):
    weight = 2


class Stop(RunControl):
    kind, command = "stop", "stop"


class Cont(RunControl):
    kind, command = "cont", "cont"


class Reset(RunControl):
    kind, command, weight = "system-reset", "system_reset", 1

    def effects(self, args):
        return frozenset({RESET})


class Quit(Action):
    """quit by QMP or HMP: QEMU exits 0 (a crash on the way out is still news)."""

    kind = "quit"

    def draw(self, rng, dc):
        return (rng.choice(["qmp", "hmp"]),)

    def apply(self, env, side, args):
        env.expect_exit(side, 0)
        if args[0] == "hmp":
            return _qmp(env, side, "human-monitor-command", {"command-line": "quit"})
        return _qmp(env, side, "quit")


class Signal(Action):
    """SIGTERM / SIGINT: a management-style shutdown, exit 0 expected."""

    kind = "signal"

    def draw(self, rng, dc):
        return (rng.choice(["SIGTERM", "SIGTERM", "SIGINT"]),)

    def apply(self, env, side, args):
        env.expect_exit(side, 0)
        env.signal(side, args[0])
        return "sent", f"sent {args[0]}"


class Freeze(Action):
    """SIGSTOP: never drawn (weight 0); hand-written plans use it to exercise the hang oracle."""

    kind, weight = "freeze", 0

    def apply(self, env, side, args):
        env.signal(side, "SIGSTOP")
        return "sent", "sent SIGSTOP"


class KillPeer(Action):
    """SIGKILL of the other side: this side must cope with a vanished peer."""

    kind = "kill-peer"

    def apply(self, env, side, args):
        peer = "dst" if side == "src" else "src"
        env.expect_exit(peer, -9)
        env.signal(peer, "SIGKILL")
        return "sent", f"killed {peer}"


class DeviceHotplug(Action):
    """device_add / device_del of a migratable device on a free root port."""

    kind = "device"

    def enabled(self, dc):
        return dc.hotplug and dc.surface.has("device_add")

    def draw(self, rng, dc):
        return (rng.choice(["add", "add", "del"]),)

    def apply(self, env, side, args):
        if args[0] == "add":
            return _qmp(env, side, "device_add", {"driver": "virtio-rng-pci", "id": "hot0", "bus": "hp0"})
        return _qmp(env, side, "device_del", {"id": "hot0"})


# ---------------------------------------------------------------- pressure
QUERIES = ("query-migrate", "query-migrate-parameters", "query-migrate-capabilities",
           "query-status", "query-migrationthreads", "query-jobs", "query-named-block-nodes",
           "query-yank", "query-dirty-rate", "query-block-jobs")


class QueryFlood(Action):
    """Queries queued on every monitor of one side (out-of-band where offered)."""

    kind, weight = "query-flood", 6

    def draw(self, rng, dc):
        known = [q for q in QUERIES if dc.surface.has(q)] or ["query-status"]
        return (rng.choice(known), rng.choice((1, 4, 16, 64)), rng.random() < 0.3)

    def apply(self, env, side, args):
        try:
            env.flood(side, args[0], args[1], args[2])
        except (Gone, OSError):
            return "disconnected", f"{args[0]}: monitor gone"
        return "sent", f"queued {args[1]} {args[0]}{' (oob)' if args[2] else ''}"

    def key(self, args):
        return f"query-flood:{args[0]}"


# ---------------------------------------------------------------- connections and links
class StrayConnection(Action):
    """Connect to a listening migration channel and hold it, or send garbage."""

    kind, sides, weight = "stray", ("dst",), 2
    needs_alive = False

    def draw(self, rng, dc):
        what = rng.choice(["hold", "garbage", "qemu-magic"])
        return (rng.choice(["main", "main", "recover"]), what, rng.randbytes(rng.randint(1, 48)).hex())

    def apply(self, env, side, args):
        addr = env.listener(args[0])
        if addr is None:
            return "skipped", f"no {args[0]} listener"
        try:
            if isinstance(addr, str):          # a UNIX socket path (unix transport)
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(1.0)
                s.connect(addr)
            else:
                s = socket.create_connection(addr, timeout=1.0)
            if args[1] == "garbage":
                s.sendall(bytes.fromhex(args[2]))
            elif args[1] == "qemu-magic":   # QEMU's stream magic, then junk: a channel that looks real
                s.sendall(b"QEVM\x00\x00\x00\x03" + bytes.fromhex(args[2]))
            env.hold(s)
        except OSError as exc:
            return "socket-error", f"{args[0]} listener: {exc.strerror or exc}"
        return "sent", f"{args[1]} connection to {args[0]} listener"

    def key(self, args):
        return f"stray:{args[0]}:{args[1]}"


class LinkCut(Action):
    kind, sides = "link-cut", ("src",)
    needs_alive = False

    def apply(self, env, side, args):
        return "sent", f"cut {env.cut()} connection(s)"


ALL: tuple = (SetCapability(), SetParameter(), StartPostcopy(), Pause(), Cancel(), ContinueSwitchover(),
              ColoLostHeartbeat(), ColoTeardown(), Yank(), Recover(), IncomingAgain(), MigrateAgain(), SnapshotSave(),
              SnapshotLoad(), SnapshotDelete(), Hmp(), BlockActivate(), Stop(), Cont(), Reset(),
              Quit(), Signal(), Freeze(), KillPeer(), DeviceHotplug(), QueryFlood(), StrayConnection(),
              LinkCut())
BY_KIND = {a.kind: a for a in ALL}
