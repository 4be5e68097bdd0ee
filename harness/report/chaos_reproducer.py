"""Export a minimised chaos plan as a standalone reproducer script.

The script uses only the standard library: it starts both QEMUs with the
recorded command lines, drives QMP itself, relays the migration through a
tiny TCP relay (so a link cut can be replayed), applies the plan's actions at
their times, lets the migration settle and checks for the same violation. It
prints its own hit rate.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from harness.report.reproducer import _match_for, run_script_tree
from harness.stress.actions import primitive
from harness.stress.chaos import ChaosPlan

SCRIPT = Path(__file__).with_name("chaos_reproducer.py.tmpl")


def _args_of(machine_dir: Path) -> tuple[str, list[str]]:
    argv = shlex.split((machine_dir / "cmdline.txt").read_text())
    m = next(re.search(r"path=(\S+?)/qmp\.sock", a) for a in argv if "qmp.sock" in a)
    rundir = m.group(1)
    return argv[0], [a.replace(rundir, "@RUNDIR@") for a in argv[1:]]


def export_chaos(plan: ChaosPlan, signature: str, attempt_dir: Path, out: Path,
                 converge: dict, non_converge: dict) -> Path:
    """attempt_dir: artifacts of a run that showed `signature` (for command lines, outcome)."""
    src_bin, src_args = _args_of(attempt_dir / "source")
    dst_bin, dst_args = _args_of(attempt_dir / "destination")
    match: dict = {"signature": signature}
    if signature.startswith("crash"):
        for side in ("source", "destination"):
            o = json.loads((attempt_dir / side / "outcome.json").read_text())
            if o.get("kind") == "crash":
                match.update(_match_for(o), side=side)
                break
    config = {
        "src": {"binary": src_bin, "args": src_args},
        "dst": {"binary": dst_bin, "args": dst_args},
        "actions": [{"at_ms": a.at_ms, "side": a.side.value, "do": list(primitive(a)),
                     "text": a.describe()} for a in plan.actions],
        "converge": converge, "non_converge": non_converge, "match": match,
    }
    text = SCRIPT.read_text().replace("@@SIGNATURE@@", signature).replace(
        "@@CONFIG@@", repr(json.dumps(config, indent=1)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.chmod(0o755)
    return out


def run_script(script: Path, attempts: int, seconds: float) -> tuple[bool, str]:
    # Its own process group, killed whole on a timeout or an interrupt; its temp
    # dirs go into a run dir of ours (reaped if we die).
    cp = run_script_tree([sys.executable, str(script), "--attempts", str(attempts),
                         "--seconds", str(seconds)],
                         timeout=seconds + 180)
    last = (cp.stdout.strip().splitlines() or ["no output"])[-1]
    return cp.returncode == 0, last
