"""Convergence knobs, like qtest's migrate_ensure_(non_)converge.

The boot sector dirties ~99 MiB continuously; QEMU's default 128 MiB/s
bandwidth never converges, so every test sets both knobs explicitly.
"""
from __future__ import annotations

from harness.qemu.machine import Machine

CONVERGE_BANDWIDTH = 1_000_000_000     # bytes/s: effectively unlimited on loopback
CONVERGE_DOWNTIME_MS = 30_000          # allow a long stop-and-copy
NON_CONVERGE_BANDWIDTH = 3_000_000     # 3 MB/s: can never keep up with ~99 MiB dirty
NON_CONVERGE_DOWNTIME_MS = 1


def ensure_converge(src: Machine) -> None:
    src.cmd("migrate-set-parameters", {"max-bandwidth": CONVERGE_BANDWIDTH,
                                       "downtime-limit": CONVERGE_DOWNTIME_MS})


def ensure_non_converge(src: Machine) -> None:
    src.cmd("migrate-set-parameters", {"max-bandwidth": NON_CONVERGE_BANDWIDTH,
                                       "downtime-limit": NON_CONVERGE_DOWNTIME_MS})


def set_capabilities(m: Machine, caps: dict[str, bool]) -> None:
    if caps:
        m.cmd("migrate-set-capabilities",
              {"capabilities": [{"capability": k, "state": v} for k, v in caps.items()]})


def set_parameters(m: Machine, params: dict) -> None:
    if params:
        m.cmd("migrate-set-parameters", dict(params))
