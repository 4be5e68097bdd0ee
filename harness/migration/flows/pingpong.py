"""Ping-pong: A -> B -> A -> B, the two binaries swapping sides on every hop.

The guest starts on the source binary (A); each hop migrates it into a new
destination QEMU of the other binary (B, then A, ...), so with --qemu-src OLD
--qemu-dst NEW the guest goes old -> new -> old -> new: forward and backward
compatibility of the same guest state in one test. The machine type is the
session's (the newest pc-q35-X.Y both binaries have when they differ).

Each hop: precopy (PingPongOptions.mode, CrossVersionMode.PRECOPY by default) with a
byte compare of the stopped source and the paused new destination, or POSTCOPY
with the page rule after completion; then the destination runs a bootblock
pass (or the Linux verify), is continued, and becomes the next hop's source;
the old source is shut down (its exit judged). PingPongOptions.prove = Prove.LAST keeps
the full proof for the last hop only (intermediate hops: the guest runs a
bootblock pass on the new side), for the smoke tier.
"""
from __future__ import annotations

import time

from harness.migration import drivers, tuning
from harness.migration.context import ScenarioContext
from harness.migration.flows import postcopy as pc
from harness.migration.metrics import MigrationMetrics, write_metrics
from harness.migration.pair import Pair, wait_guest_ready
from harness.migration.runner import register
from harness.migration.scenario import Flow
from harness.migration.states import wait_runstate, wait_status
from harness.migration.transports import start_incoming
from harness.qemu.binary import probe
from harness.qemu.machine import Machine, MachineFailure


def _machine(ctx: ScenarioContext, hop: int, binary: str, incoming: bool, paused: bool) -> Machine:
    s = ctx.scenario
    side = "a" if hop % 2 == 0 else "b"
    extra = s.src_args if hop == 0 else s.dst_args
    spec = ctx.spec.with_(name=f"hop{hop}-{side}", binary=binary,
                          incoming="defer" if incoming else None, paused=paused,
                          extra_args=ctx.spec.extra_args + extra)
    # Side a lives on the source host, side b on the destination host.
    return ctx.run.machine(spec, role="src" if side == "a" else "dst")


def _light_proof(pair: Pair, timeout: float) -> dict:
    """Intermediate hop with PingPongOptions.prove=Prove.LAST: the guest runs on the new side."""
    dst = pair.dst
    wait_runstate(pair.src, {"postmigrate"}, timeout)
    if dst.spec.paused:
        dst.cmd("cont")
    wait_runstate(dst, {"running"}, timeout)
    mark = dst.serial.mark()
    if dst.spec.guest.kind.value == "bootblock" and \
            dst.serial.wait_for(rb"B", time.monotonic() + timeout, mark) is None:
        raise MachineFailure(dst.declare_hang(f"{dst.name}: no bootblock pass after the hop"))
    dst.cmd("stop")
    return {"runs": True}


def _prove(pair: Pair, full: bool, ram_compare: bool, timeout: float) -> dict:
    if full:
        return drivers.prove_integrity(pair, ram_compare=ram_compare, timeout=timeout)
    return _light_proof(pair, timeout)


def _hop_precopy(ctx: ScenarioContext, pair: Pair, caps: dict, full: bool) -> dict:
    s = ctx.scenario
    src, dst = pair.src, pair.dst
    for m in (src, dst):
        tuning.set_capabilities(m, {"events": True, **caps})
    tuning.set_parameters(dst, dict(s.dst_params))
    uri = start_incoming(s.transport, dst)
    tuning.ensure_converge(src)
    tuning.set_parameters(src, dict(s.params))
    smark, dmark = src.qmp.events.mark(), dst.qmp.events.mark()
    src.cmd("migrate", {"uri": uri})
    wait_status(src, {"completed"}, since=smark, timeout=s.timeout)
    wait_status(dst, {"completed"}, since=dmark, timeout=s.timeout)
    info = src.cmd("query-migrate")
    return {"query_migrate": info, "integrity": _prove(pair, full, True, s.timeout)}


def _hop_postcopy(ctx: ScenarioContext, pair: Pair, caps: dict, full: bool) -> dict:
    s = ctx.scenario
    src, dst = pair.src, pair.dst
    for m in (src, dst):
        tuning.set_capabilities(m, {"events": True, "postcopy-ram": True, **caps})
    tuning.set_parameters(dst, dict(s.dst_params))
    uri = start_incoming(s.transport, dst)
    tuning.ensure_non_converge(src)
    tuning.set_parameters(src, dict(s.params))
    src.cmd("migrate", {"uri": uri})
    deadline = time.monotonic() + s.timeout
    while src.cmd("query-migrate").get("ram", {}).get("transferred", 0) < pc.PRECOPY_BYTES:
        if time.monotonic() > deadline:
            raise MachineFailure(src.declare_hang(f"{src.name}: no precopy progress"))
        time.sleep(0.05)
    pc.switch_to_postcopy(pair, s.timeout)
    wait_status(src, {"completed"}, timeout=s.timeout)
    wait_status(dst, {"completed"}, timeout=s.timeout)
    info = src.cmd("query-migrate")
    return {"query_migrate": info, "integrity": _prove(pair, full, False, s.timeout)}


@register(Flow.PING_PONG)
def run(ctx: ScenarioContext) -> dict:
    s = ctx.scenario
    o = s.options
    mode, hops, prove = o.mode.value, o.hops, o.prove.value
    binaries = (ctx.src_binary, ctx.dst_binary)
    versions = tuple(probe(b).version for b in binaries)
    cur = _machine(ctx, 0, binaries[0], incoming=False, paused=False)
    wait_guest_ready(cur)
    results = []
    for hop in range(1, hops + 1):
        b = binaries[hop % 2]
        nxt = _machine(ctx, hop, b, incoming=True, paused=(mode == "precopy"))
        pair = Pair(cur, nxt)
        t0 = time.monotonic()
        full = prove == "each" or hop == hops
        with pc.peer_exit_noted(nxt, cur):
            res = (_hop_precopy if mode == "precopy" else _hop_postcopy)(ctx, pair, dict(s.caps), full)
        m = MigrationMetrics.from_query_migrate(res["query_migrate"])
        results.append({"hop": hop, "from": f"{cur.name} ({versions[(hop - 1) % 2]})",
                        "to": f"{nxt.name} ({versions[hop % 2]})", "seconds": round(time.monotonic() - t0, 3),
                        "metrics": m.to_dict(), "integrity": res["integrity"]})
        # The proof stopped the new guest: it runs again and is the next source.
        nxt.cmd("cont")
        wait_runstate(nxt, {"running"}, s.timeout)
        out = cur.shutdown()
        if out.is_failure:
            raise MachineFailure(out)
        cur = nxt
    data = {"mode": mode, "machine_type": ctx.spec.machine_type,
            "binaries": {"a": f"{binaries[0]} ({versions[0]})", "b": f"{binaries[1]} ({versions[1]})"},
            "hops": results}
    write_metrics(ctx.run.artifacts / "metrics.json", {"ping_pong": data})
    return data
