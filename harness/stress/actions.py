"""The chaos engine's action catalogue: what can be done to a migrating pair.

An Action is plain data (kind, side, time, arguments) so a run is a list of
them: it can be recorded, replayed, minimised and exported to a script. Each
kind maps to one primitive the standalone reproducer also implements:
a QMP command, a signal, bytes or a stray connection to the destination's
listening port, or a cut of the migration link.
"""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class Kind(enum.Enum):
    QUERY = "query"
    SET_CAP = "set-cap"
    SET_PARAM = "set-param"
    CANCEL = "cancel"
    PAUSE = "pause"
    RECOVER = "recover"
    CONTINUE = "continue"
    STOP = "stop"
    CONT = "cont"
    QUIT = "quit"
    SAVEVM = "savevm"
    YANK = "yank"
    TERM = "sigterm"              # SIGTERM to this side: a management-style shutdown
    SIGSTOP = "sigstop"           # freeze this side: never drawn, exercises the hang oracle
    KILL_PEER = "kill-peer"       # SIGKILL of the *other* side
    GARBAGE = "garbage"           # random bytes to the destination's listening port
    STRAY = "stray-connection"    # connect to the listening port and hold it open
    LINK_CUT = "link-cut"         # reset the migration connection (proxy in the path)


class Side(enum.Enum):
    SRC = "src"
    DST = "dst"


@dataclass(frozen=True)
class Action:
    kind: Kind
    side: Side
    at_ms: int
    args: tuple = ()              # JSON-able values only

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "side": self.side.value, "at_ms": self.at_ms,
                "args": list(self.args)}

    @classmethod
    def from_dict(cls, d: dict) -> "Action":
        return cls(Kind(d["kind"]), Side(d["side"]), int(d["at_ms"]), tuple(d.get("args", ())))

    def describe(self) -> str:
        a = f" {' '.join(map(str, self.args))}" if self.args else ""
        return f"+{self.at_ms}ms {self.side.value} {self.kind.value}{a}"


QUERIES = ("query-migrate", "query-status", "query-migrate-parameters",
           "query-migrate-capabilities", "query-migrationthreads", "query-dirty-rate")
CAPS = ("xbzrle", "auto-converge", "events", "postcopy-ram", "pause-before-switchover",
        "multifd", "return-path", "zero-copy-send", "validate-uuid", "late-block-activate")
# Valid, boundary and out-of-range values: QEMU must refuse the bad ones cleanly.
PARAMS = {
    "max-bandwidth": (0, 1, 3_000_000, 1_000_000_000, 2**63 - 1),
    "downtime-limit": (0, 1, 300, 2_000_000, 2_000_001),
    "multifd-channels": (1, 2, 255, 256),
    "xbzrle-cache-size": (0, 4096, 1 << 20, 1 << 40),
    "cpu-throttle-initial": (1, 50, 99, 100),
    "cpu-throttle-increment": (1, 99),
    "max-postcopy-bandwidth": (0, 1),
    "avail-switchover-bandwidth": (0, 1, 1 << 30),
    "announce-rounds": (0, 1000),
    "x-checkpoint-delay": (0, 1, 100000),
}

# Weights: queries and parameter changes are cheap and common; killers rare.
WEIGHTS = {
    Kind.QUERY: 8, Kind.SET_CAP: 3, Kind.SET_PARAM: 6, Kind.CANCEL: 1, Kind.PAUSE: 1,
    Kind.RECOVER: 1, Kind.CONTINUE: 1, Kind.STOP: 2, Kind.CONT: 2, Kind.QUIT: 1, Kind.SAVEVM: 1,
    Kind.YANK: 1, Kind.TERM: 1, Kind.SIGSTOP: 0, Kind.KILL_PEER: 1, Kind.GARBAGE: 1, Kind.STRAY: 1, Kind.LINK_CUT: 1,
}


CLUSTER = 0.35  # races need near-simultaneous events: often reuse an earlier time


def generate(rng: random.Random, count: int, span_ms: int) -> list[Action]:
    """A seeded random schedule of `count` actions within [0, span_ms]."""
    kinds = [k for k in WEIGHTS if WEIGHTS[k] > 0]
    weights = [WEIGHTS[k] for k in kinds]
    out: list[Action] = []
    for _ in range(count):
        kind = rng.choices(kinds, weights)[0]
        if out and rng.random() < CLUSTER:
            prev = rng.choice(out)
            side, at = prev.side, min(span_ms, prev.at_ms + rng.randint(0, 5))
        else:
            side, at = rng.choice(list(Side)), rng.randint(0, span_ms)
        out.append(Action(kind, side, at, _args(rng, kind)))
    return sorted(out, key=lambda a: a.at_ms)


def _args(rng: random.Random, kind: Kind) -> tuple:
    if kind is Kind.QUERY:
        return (rng.choice(QUERIES), rng.randint(1, 16))          # command, burst size
    if kind is Kind.SET_CAP:
        return (rng.choice(CAPS), rng.random() < 0.5)
    if kind is Kind.SET_PARAM:
        name = rng.choice(sorted(PARAMS))
        return (name, rng.choice(PARAMS[name]))
    if kind is Kind.GARBAGE:
        return (rng.randbytes(rng.randint(1, 64)).hex(),)
    return ()


def primitive(action: Action) -> tuple:
    """What the action does, as the standalone reproducer implements it."""
    k, a = action.kind, action.args
    if k is Kind.QUERY:
        return ("qmp-burst", a[0], {}, a[1])
    if k is Kind.SET_CAP:
        return ("qmp", "migrate-set-capabilities", {"capabilities": [{"capability": a[0], "state": a[1]}]})
    if k is Kind.SET_PARAM:
        return ("qmp", "migrate-set-parameters", {a[0]: a[1]})
    if k is Kind.CANCEL:
        return ("qmp", "migrate_cancel", {})
    if k is Kind.PAUSE:
        return ("qmp-oob", "migrate-pause", {})
    if k is Kind.RECOVER:
        return ("qmp-oob", "migrate-recover", {"uri": "tcp:127.0.0.1:0"})
    if k is Kind.CONTINUE:
        return ("qmp", "migrate-continue", {"state": "pre-switchover"})
    if k in (Kind.STOP, Kind.CONT, Kind.QUIT):
        return ("qmp", k.value, {})
    if k is Kind.SAVEVM:
        return ("qmp", "human-monitor-command", {"command-line": "savevm chaos"})
    if k is Kind.YANK:
        return ("qmp", "yank", {"instances": [{"type": "migration"}]})
    if k is Kind.TERM:
        return ("signal", "SIGTERM")
    if k is Kind.SIGSTOP:
        return ("signal", "SIGSTOP")
    if k is Kind.KILL_PEER:
        return ("kill-peer",)
    if k is Kind.GARBAGE:
        return ("garbage", a[0])
    if k is Kind.STRAY:
        return ("stray",)
    if k is Kind.LINK_CUT:
        return ("cut",)
    raise ValueError(f"unknown action kind {k}")
