"""Export a chaos plan as a self-contained standalone reproducer script.

The script holds the engine's own action code (harness/runtime/actions.py) and
the standalone driver (harness/runtime/standalone.py) verbatim, so it replays
each step through the very implementation the engine used; the boot sector and
any TLS credentials are embedded; command lines and steps are readable Python
literals. It needs python3 and QEMU only. Exit codes follow `git bisect run`.
"""
from __future__ import annotations

import base64
import json
import pprint
import re
import shlex
import sys
import zlib
from pathlib import Path

import harness.runtime.actions as actions_mod
import harness.runtime.colo as colo_mod
import harness.runtime.fileload as fileload_mod
import harness.runtime.standalone as standalone_mod
import harness.faults.proxy as proxy_mod
from harness.report import repro_contract
from harness.report.reproducer import match_for, run_script_tree
from harness.stress import oracles
from harness.stress.plans import ChaosPlan


def _argv(machine_dir: Path, subst: dict) -> tuple[str, list[str]]:
    argv = shlex.split((machine_dir / "cmdline.txt").read_text())
    rundir = next(re.search(r"path=(\S+?)/qmp\.sock", a).group(1) for a in argv if "qmp.sock" in a)
    out = []
    for a in argv[1:]:
        a = a.replace(rundir, "@RUNDIR@")
        for old, new in subst.items():
            a = a.replace(old, new)
        out.append(a)
    return argv[0], out


def _guest_image(argv_text: str) -> tuple[str, Path]:
    """The guest the attempt booted: ("@BOOT@", the boot sector on a disk) or
    ("@ROM@", its paced firmware form given to -bios)."""
    m = re.search(r"-bios (\S+?bootrom[^\s]*\.bin)", argv_text)
    if m is not None:
        return "@ROM@", Path(m.group(1))
    m = re.search(r"file=(\S+?bootblock[^,\s]*\.bin)", argv_text)
    if m is None:
        raise ValueError("no boot-sector image in the recorded command line")
    return "@BOOT@", Path(m.group(1))


LINUX_NOTE = ("seen with the Linux guest; this script boots the boot sector instead (it cannot "
              "carry a kernel and initramfs), so it may not show the violation")


def export_chaos(plan: ChaosPlan, signature: str, attempt_dir: Path, out: Path, *, base,
                 hit_rate: str = "not measured", versions: str = "", guest_note: str = "") -> Path:
    """attempt_dir: artifacts of a boot-sector run of the plan (command lines, outcomes).
    The script always boots the boot sector; guest_note says so when the violation was
    seen with another guest (LINUX_NOTE)."""
    attempt_dir = attempt_dir.resolve()   # the recorded command lines hold absolute paths
    src_text = (attempt_dir / "source" / "cmdline.txt").read_text()
    marker, boot = _guest_image(src_text)
    subst = {str(boot): marker, str(attempt_dir / "shared" / "disk0.qcow2"): "@DISK@"}
    colo_dir = re.search(r"(/[^\s,=]*?qmh-colo-[^/,\s]+)", src_text)
    if colo_dir is not None:      # the COLO-FT disks: made again by the script
        subst[colo_dir.group(1)] = "@COLO@"
    tls_files = {}
    tls_dir = attempt_dir / "tls"
    if tls_dir.is_dir():
        subst[str(tls_dir)] = "@TLS@"
        tls_files = {str(p.relative_to(tls_dir)): base64.b64encode(p.read_bytes()).decode()
                     for p in sorted(tls_dir.rglob("*")) if p.is_file()}
    src_bin, src_args = _argv(attempt_dir / "source", subst)
    # The engine spawns a source paused (-S) and continues it when the attempt starts
    # (so that a pair can be spawned ahead); the reproducer starts it running.
    src_args = [a for a in src_args if a != "-S"]
    dst_bin, dst_args = _argv(attempt_dir / "destination", subst)
    match: dict = {"signature": signature}
    if signature.startswith("crash"):
        for side in ("source", "destination"):
            o = json.loads((attempt_dir / side / "outcome.json").read_text())
            if o.get("kind") == "crash":
                match.update(match_for(o), side=side)
                break
    elif signature.startswith("stderr:"):
        match["stderr_text"] = signature.split(": ", 1)[1].split("N")[0][:60]
    tls = base.tls.materialize if base.tls is not None else None
    config = {
        "signature": signature,
        "base": plan.base,
        "src_binary": src_bin, "dst_binary": dst_bin,
        "src_args": src_args, "dst_args": dst_args,
        "transport": "colo" if base.colo else base.transport.value,
        "caps": [list(c) for c in base.caps],
        "src_params": {**dict(base.src_params), **({"tls-creds": "tlscreds0"} if tls else {}),
                       **({"x-checkpoint-delay": base.checkpoint_delay_ms} if base.colo else {})},
        "dst_params": {**dict(base.dst_params), **({"tls-creds": "tlscreds0"} if tls else {})},
        # a file base's save must end for its load to begin: it runs converging
        "hold": dict(oracles.SETTLE_PARAMS) if base.file or base.colo else {"max-bandwidth": 3_000_000,
                                                                             "downtime-limit": 1},
        "live": base.live,
        "file_offset": base.file_offset,
        "settle": oracles.SETTLE_PARAMS,
        "poll_s": oracles.POLL_S,      # how soon after a status change the engine looks (and ends)
        "span_ms": plan.span_ms + (colo_mod.ENTRY_MS if base.colo else 0),   # as the engine's window
        "steps": [dict(s.to_dict(), text=s.describe()) for s in plan.steps],
        "match": match,
        "tls_files": tls_files,
        # the guest image, zlib'd (the 64 KiB firmware form is mostly zeros)
        "guest_image": {"marker": marker, "name": boot.name,
                        "zb64": base64.b64encode(zlib.compress(boot.read_bytes(), 9)).decode()},
        "guest": guest_note or "bootblock",
    }
    if tls:   # x509 server names must stay valid: the cert files are embedded as they were
        config["tls_note"] = "TLS credentials embedded under @TLS@"
    text = _script(config, signature, hit_rate, versions, guest_note)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.chmod(0o755)
    return out


HEADER = '''#!/usr/bin/env python3
"""Standalone QEMU migration reproducer, exported by qemu-migration-harness (`harness chaos`).

Shows:     {signature}
Base:      {base} (catalog scenario whose migration setup it starts from)
Guest:     {guest}
Hit rate:  {hit_rate}
Versions:  {versions}

It starts a source and a destination QEMU (command lines below), migrates over a
local TCP relay (or, for a file base, saves to a file and loads it into the
destination once the save completed), replays the steps below (fired at +at_ms
after `migrate`, or after the named side first reports the `on` status/event),
settles the migration and looks for the same violation.

Needs python3 and QEMU (qemu-system-x86_64, qemu-img) only.
Usage: {name} [--qemu PATH | --qemu-src PATH --qemu-dst PATH] [--attempts N] [--seconds S]
       (--qemu defaults to qemu-system-x86_64 on PATH; the exporting run used {binaries})
Exit status (git bisect run): 0 not seen in the attempts (good), 1 seen (bad),
125 QEMU could not start or nothing could be decided (skip).
The last line is: RESULT hits=H attempts=A signature=S
"""
'''

LOADER = '''
# The harness's own action code and standalone driver, verbatim (one implementation).
import os, sys, types, base64, tempfile, atexit, shutil


def _install(name, source):
    for i in range(1, name.count(".") + 1):
        pkg = name.rsplit(".", name.count(".") - i + 1)[0]
        sys.modules.setdefault(pkg, types.ModuleType(pkg))
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    exec(compile(source, name.replace(".", "/") + ".py", "exec"), mod.__dict__)
    return mod


def _tls_dir(files):
    d = tempfile.mkdtemp(prefix="repro-tls-")
    atexit.register(shutil.rmtree, d, True)
    for rel, data in files.items():
        p = os.path.join(d, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(base64.b64decode(data))
        os.chmod(p, 0o600)
    return d


if __name__ == "__main__":
    contract = _install("qmh_repro_contract", CONTRACT_SOURCE)
    _install("harness.runtime.actions", ACTIONS_SOURCE)
    _install("harness.runtime.fileload", FILELOAD_SOURCE)
    _install("harness.runtime.colo", COLO_SOURCE)
    _install("harness.faults.proxy", PROXY_SOURCE)
    standalone = _install("harness.runtime.standalone", STANDALONE_SOURCE)
    if CONFIG["tls_files"]:
        tls = _tls_dir(CONFIG["tls_files"])
        for k in ("src_args", "dst_args"):
            CONFIG[k] = [a.replace("@TLS@", tls) for a in CONFIG[k]]
    standalone.main(CONFIG, contract)
'''


def _script(config: dict, signature: str, hit_rate: str, versions: str, guest_note: str = "") -> str:
    head = HEADER.format(signature=signature, base=config["base"], hit_rate=hit_rate,
                         guest="boot sector" + (f" ({guest_note})" if guest_note else ""),
                         versions=versions or "the exporting run's only", name="THIS_SCRIPT",
                         binaries=", ".join(sorted({config["src_binary"], config["dst_binary"]})))
    body = "CONFIG = " + pprint.pformat(config, width=100, sort_dicts=False) + "\n\n"
    sources = (f"CONTRACT_SOURCE = {repro_contract.EMBED!r}\n\n"
               f"ACTIONS_SOURCE = {Path(actions_mod.__file__).read_text()!r}\n\n"
               f"FILELOAD_SOURCE = {Path(fileload_mod.__file__).read_text()!r}\n\n"
               f"COLO_SOURCE = {Path(colo_mod.__file__).read_text()!r}\n\n"
               f"PROXY_SOURCE = {Path(proxy_mod.__file__).read_text()!r}\n\n"
               f"STANDALONE_SOURCE = {Path(standalone_mod.__file__).read_text()!r}\n")
    return head + "\n" + body + sources + LOADER


def run_script(script: Path, attempts: int, seconds: float, qemu_src: str | None = None,
               qemu_dst: str | None = None) -> tuple[int, str]:
    """(exit status, RESULT line) of a standalone run (python3 -I: nothing of the
    harness importable), in its own process group, killed whole on an interrupt.
    qemu_src/qemu_dst: the binaries explored (the script's default is PATH's)."""
    argv = [sys.executable, "-I", str(script), "--attempts", str(attempts), "--seconds", str(seconds)]
    if qemu_src:
        argv += ["--qemu-src", qemu_src]
    if qemu_dst:
        argv += ["--qemu-dst", qemu_dst]
    cp = run_script_tree(argv, timeout=seconds + 180)
    last = (cp.stdout.strip().splitlines() or ["no output"])[-1]
    return cp.returncode, last
