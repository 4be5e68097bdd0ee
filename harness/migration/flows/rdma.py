"""RDMA precopy: `rdma:HOST:PORT`, optionally with rdma-pin-all.

RDMA has no socket-address to read back, so the port is chosen by binding
TCP port 0 on HOST and releasing it (the RDMA CM port space follows TCP's for
iWARP/RoCE soft devices). HOST is $HARNESS_RDMA_HOST, else the first IPv4
address of the netdev behind the first RDMA device, else 127.0.0.1.

A completed migration gets the precopy proof (byte compare with the paused
destination, then a fresh bootblock pass / Linux verify). Where RDMA cannot
work, the QEMU error (the QMP error of migrate-incoming or migrate, plus any
RDMA line on stderr) is put into the failure text as is; scenarios that
expect it declare Expect(REFUSED, error_match=...).

RdmaOptions.side = RdmaSide.SOURCE skips the destination's migrate-incoming and lets
the source's `migrate` meet the error (refusal scenarios only).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from harness.migration import drivers, tuning
from harness.migration.context import ScenarioContext
from harness.migration.expectations import check_refusal
from harness.migration.metrics import MigrationMetrics, write_metrics
from harness.migration.options import RdmaSide
from harness.migration.runner import register
from harness.migration.scenario import Flow, Result
from harness.migration.states import wait_status
from harness.qemu.machine import Machine
from harness.qemu.qmp import QMPCommandError


class RdmaError(AssertionError):
    """QEMU could not do RDMA; the message carries QEMU's own words."""


def rdma_host() -> str:
    env = os.environ.get("HARNESS_RDMA_HOST")
    if env:
        return env
    ib = Path("/sys/class/infiniband")
    try:
        for dev in sorted(ib.iterdir()):
            for ndev in sorted(dev.glob("ports/*/gid_attrs/ndevs/*")):
                name = ndev.read_text().strip()
                if not name:
                    continue
                out = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", name],
                                     capture_output=True, text=True, timeout=10).stdout
                for link in json.loads(out or "[]"):
                    for a in link.get("addr_info", []):
                        if a.get("local"):
                            return a["local"]
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return "127.0.0.1"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _rdma_stderr(*machines: Machine) -> str:
    lines = []
    for m in machines:
        for line in m.stderr_text().splitlines():
            if "rdma" in line.lower():
                lines.append(f"{m.name} stderr: {line.strip()}")
    return "; ".join(lines[-4:])


@register(Flow.RDMA)
def run(ctx: ScenarioContext) -> dict:
    s = ctx.scenario
    pair = ctx.pair()
    src, dst = pair.src, pair.dst
    host = s.options.host or rdma_host()
    uri = f"rdma:{host}:{free_port(host)}"
    pair.wait_guest_ready()
    for m in (src, dst):
        tuning.set_capabilities(m, {"events": True, **s.caps})
    tuning.set_parameters(dst, dict(s.dst_params))
    tuning.ensure_converge(src) if s.converge else tuning.ensure_non_converge(src)
    tuning.set_parameters(src, dict(s.params))
    step = "destination migrate-incoming"
    try:
        if s.options.side is not RdmaSide.SOURCE:
            dst.cmd("migrate-incoming", {"uri": uri})
        step = "source migrate"
        if not s.live:
            src.cmd("stop")
        mark = src.qmp.events.mark()
        src.cmd("migrate", {"uri": uri})
    except QMPCommandError as exc:
        if s.expect.result is Result.REFUSED:
            check_refusal(exc, s)
            res = {"refused": str(exc), "step": step, "uri": uri}
            write_metrics(ctx.run.artifacts / "metrics.json", res)
            return res
        extra = _rdma_stderr(src, dst)
        raise RdmaError(f"{s.path}: {step} {uri} refused: {exc.desc} ({exc.error_class})"
                        + (f"; {extra}" if extra else "")) from None
    if s.expect.result is Result.REFUSED:
        raise AssertionError(f"{s.path}: expected a refusal ({s.expect.error_match}), "
                             f"but {uri} was accepted on both sides")
    try:
        wait_status(src, {"completed"}, since=mark, timeout=s.timeout)
        wait_status(dst, {"completed"}, timeout=s.timeout)
    except drivers.MigrationStateError as exc:
        extra = _rdma_stderr(src, dst)
        raise RdmaError(f"{s.path}: {exc}" + (f"; {extra}" if extra else "")) from None
    info = src.cmd("query-migrate")
    metrics = MigrationMetrics.from_query_migrate(info)
    metrics.extra["uri"] = uri
    write_metrics(ctx.run.artifacts / "metrics.json",
                  {"migration": metrics.to_dict(), "source_query_migrate": info})
    proof = drivers.prove_integrity(pair, timeout=s.timeout)
    return {"metrics": metrics.to_dict(), "integrity": proof}
