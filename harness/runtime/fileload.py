"""File bases: the destination loads the file the source saved, as soon as the save
completed; and whether the load's end may be judged at all.

A file base saves with `migrate file:PATH` and loads with `migrate-incoming
file:PATH` on a destination started with `-incoming defer`. Unlike a socket
migration, the two halves are decoupled, so a plan can legitimately spoil the
load: take over the destination's incoming first, reconfigure its capabilities
before the load (a stream the destination is not set up for fails to load),
cancel the load, have the source write the file again while it is read, or
resume the source after the save (it takes the shared disk's lock back, so the
destination cannot activate it).
`excuse()` names such a cause; the engine and the exported reproducer then do
not judge the destination's migration outcome (crashes, hangs, the state
machine and stderr are still judged). Same code in both (harness.runtime).

Env: harness.runtime.actions' Env (only qmp() is used).
Nothing here imports from harness.* (see harness.runtime).
"""
from __future__ import annotations

from harness.runtime.actions import Gone, NoReply

QMP_TIMEOUT = 5.0
# Steps that may end an incoming migration on purpose (applied to the destination
# while it loads, with the command accepted).
ENDS_LOAD = frozenset({"cancel", "yank", "incoming-again", "pause", "quit", "signal"})
# Source steps that take the shared disk back after the save (image locking then keeps
# the destination from activating it: QEMU refusing two writers, not a bug).
SOURCE_DISK = frozenset({"cont", "block-activate", "snapshot-save", "snapshot-load", "snapshot-delete"})
SOURCE_DISK_HMP = ("cont", "savevm", "loadvm", "delvm")
# Parameters that shape the stream besides the capabilities.
STREAM_PARAMS = ("multifd-compression",)


def file_uri(path: str, offset: int | None) -> str:
    return f"file:{path}" + (f",offset={offset:#x}" if offset is not None else "")


class FileLoad:
    """Starts the destination's load once; records what may excuse its end."""

    def __init__(self, uri: str):
        self.uri = uri
        self.started = False
        self.result = ""              # what migrate-incoming said
        self.refused = ""             # why the load could not start
        self.mismatch = ""            # a stream setting the plan left different
        self.rewritten = False        # the source started another migration after the save
        self.ended_by = ""            # a step that may end the load on purpose
        self.saved = False            # the source reported 'completed'
        self.source_disk = ""         # the source ran or used its disk after the save

    def tick(self, env, src_seq) -> None:
        """src_seq: the source's MIGRATION statuses (lower case) and STOP/RESUME event
        names (upper case) so far, in order."""
        if "completed" not in src_seq:
            return
        self.saved = True
        after = src_seq[src_seq.index("completed") + 1:]
        if "setup" in after:
            self.rewritten = True
        if "RESUME" in after and not self.source_disk:
            self.source_disk = "the source ran again"
        if not self.started:
            self.start(env)

    def start(self, env) -> None:
        self.started = True
        self.mismatch = _mismatch(env)
        try:
            r = env.qmp("dst", "migrate-incoming", {"uri": self.uri}, QMP_TIMEOUT, False)
        except NoReply:
            self.result = "migrate-incoming: no reply"
            return
        except Gone:
            self.refused = self.result = "the destination is gone"
            return
        if "error" in r:
            self.refused = self.result = f"migrate-incoming refused: {str(r['error'].get('desc', ''))[:120]}"
        else:
            self.result = "migrate-incoming: ok"

    def step_applied(self, side: str, kind: str, args, outcome: str) -> None:
        """Called after every applied step (outcome class: ok, sent, refused:...)."""
        if outcome not in ("ok", "sent"):
            return
        if self.started and side == "dst" and kind in ENDS_LOAD and not self.ended_by:
            self.ended_by = kind
        if self.saved and side == "src" and not self.source_disk and (
                kind in SOURCE_DISK or (kind == "hmp" and str(args[0]).startswith(SOURCE_DISK_HMP))):
            self.source_disk = f"{kind} on the source"

    def excuse(self) -> str | None:
        """Why the destination's load is not judged, or None (judge it)."""
        if not self.started:
            return None
        if self.refused:
            return f"load not started: {self.refused}"
        if self.rewritten:
            return "the source migrated again after the save (the file was rewritten)"
        if self.ended_by:
            return f"the plan ended the load ({self.ended_by} on the destination)"
        if self.source_disk:
            return f"the source took the shared disk back after the save ({self.source_disk})"
        if self.mismatch:
            return f"the sides' stream settings differed when the load began ({self.mismatch})"
        return None


def _settings(env, side):
    caps = env.qmp(side, "query-migrate-capabilities", None, QMP_TIMEOUT, False).get("return", [])
    params = env.qmp(side, "query-migrate-parameters", None, QMP_TIMEOUT, False).get("return", {})
    out = {c["capability"]: c["state"] for c in caps}
    out.update({p: params.get(p) for p in STREAM_PARAMS})
    return out


def _mismatch(env) -> str:
    try:
        src, dst = _settings(env, "src"), _settings(env, "dst")
    except (NoReply, Gone, KeyError, TypeError, AttributeError):
        return ""      # a side that does not answer: its own oracles judge it
    for k in sorted(set(src) | set(dst)):
        if k == "events":
            continue
        if src.get(k) != dst.get(k):
            return f"{k}: source {src.get(k)}, destination {dst.get(k)}"
    return ""
