"""File flow: the source migrates into a file, then a fresh destination loads it.

Scenario knobs:
  live                    False (qtest's default for file): stop the source first
  caps / params / dst_params
                          mapped-ram, multifd, multifd-channels, direct-io ... (caps on
                          both sides; params per side)
  FileOptions.offset      file:PATH,offset=N (an int, or a string QEMU must parse)
  FileOptions.fdset       hand QEMU the file as fds with add-fd (file:/dev/fdset/1);
                          FileOptions.fdset_fds fds per side (2 with multifd, like qtest)
  expect=Expect(REFUSED, ...)
                          the source's `migrate` is refused (e.g. a bad offset)

The file lives in the destination's private run dir (removed at shutdown),
not in the artifacts.
"""
from __future__ import annotations

import os

from harness.migration import drivers, proofs
from harness.migration.context import ScenarioContext
from harness.migration.expectations import expect_accepted, refusal_result
from harness.migration.metrics import MigrationMetrics, write_metrics
from harness.migration.runner import register
from harness.migration.scenario import Flow
from harness.migration.states import wait_status
from harness.migration.transports import FDSET_ID, add_fdset, fdset_uri, file_uri
from harness.qemu.qmp import QMPCommandError

FILE_NAME = "migration.bin"


@register(Flow.FILE)
def run(ctx: ScenarioContext) -> dict:
    s = ctx.scenario
    pair = ctx.pair()
    src, dst = pair.src, pair.dst
    caps = {"events": True, **dict(s.caps)}
    drivers.configure(pair, caps=caps, params=ctx.src_params, dst_params=ctx.dst_params)

    assert dst.run_dir is not None
    path = dst.run_dir / FILE_NAME
    offset = s.options.offset
    use_fdset = s.options.fdset
    if use_fdset:
        # qtest opens the fds itself: the file must exist; QEMU gets write-only fds on
        # the source and read-only ones on the destination.
        path.touch(mode=0o600)
        nfds = s.options.fdset_fds
        dio = bool(s.params.get("direct-io"))
        add_fdset(src, path, os.O_WRONLY, nfds, direct_io=dio)
        add_fdset(dst, path, os.O_RDONLY, nfds, direct_io=bool(s.dst_params.get("direct-io")))
        uri = fdset_uri(offset)
    else:
        uri = file_uri(path, offset)

    if not s.live:
        src.cmd("stop")
    mark = src.qmp.events.mark()
    try:
        src.cmd("migrate", {"uri": uri})
    except QMPCommandError as exc:
        return refusal_result(ctx, exc)
    expect_accepted(s, "`migrate` was accepted")
    wait_status(src, {"completed"}, since=mark, timeout=s.timeout)
    info = src.cmd("query-migrate")
    size, allocated = dst.host.file_stat(path)   # the file lives on the QEMUs' host
    file_info = {"apparent_bytes": size, "allocated_bytes": allocated}
    if caps.get("mapped-ram"):
        # mapped-ram puts every page at its fixed offset: the file spans all of RAM,
        # sparsely (zero pages are holes).
        ram = info.get("ram", {}).get("total", 0)
        if size < ram:
            raise AssertionError(f"mapped-ram file is {size} bytes, less than RAM {ram}")
    if offset is not None and isinstance(offset, int):
        head = dst.host.read_head(path, offset + 4)
        if head[:offset] != bytes(offset):
            raise AssertionError(f"QEMU wrote into the first {offset:#x} bytes it was told to skip")
        magic = head[offset:]
        if magic != b"QEVM":
            raise AssertionError(f"no migration stream magic at offset {offset:#x}: {magic!r}")

    dmark = dst.qmp.events.mark()
    dst.cmd("migrate-incoming", {"uri": uri})
    wait_status(dst, {"completed"}, since=dmark, timeout=s.timeout)
    fdsets = None
    if use_fdset:
        # As qtest: after the migration the fdset can be removed and none is left.
        for m in (src, dst):
            m.cmd("remove-fd", {"fdset-id": FDSET_ID})
        fdsets = src.cmd("query-fdsets")
        if fdsets:
            raise AssertionError(f"fdsets left on the source after remove-fd: {fdsets}")
    metrics = MigrationMetrics.from_query_migrate(info)
    write_metrics(ctx.run.artifacts / "metrics.json",
                  {"migration": metrics.to_dict(), "uri": uri, "file": file_info,
                   "source_query_migrate": info})
    modes = proofs.prove(pair, info)   # multifd really used its channels, etc.
    write_metrics(ctx.run.artifacts / "metrics.json", {"modes": modes})
    proof = drivers.prove_integrity(pair, timeout=s.timeout)
    return {"metrics": metrics.to_dict(), "file": file_info, "integrity": proof}
