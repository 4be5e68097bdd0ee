"""/migration/multifd/...: multifd channel counts x compression methods, zero-copy,
zero-page detection, the channels argument, cancel, mapped-ram files, the Linux guest."""
from harness.migration import hooks
from harness.migration.hooks import ITERATE_BANDWIDTH
from harness.migration.options import CancelOptions, CancelPoint, FileOptions, PrecopyOptions
from harness.migration.requirements import (Capability, Compression, DirectIO, LockedMemory,
                                            MinVersion, Parameter)
from harness.migration.scenario import Expect, Flow, Result, Scenario
from harness.migration.transports import Transport
from harness.qemu.spec import GuestKind

SMOKE = frozenset({"smoke", "full"})
MULTIFD = {"multifd": True}


# Live multifd: multifd threads read guest pages while the guest rewrites them, so every
# scenario is held non-converging through real dirty passes before it may converge.
LIVE = dict(converge=False, options=PrecopyOptions(during=(hooks.dirty_pass,)))
# Compressed, the boot sector's 99 MiB shrink to ~1.4 MB and the bulk pass would end
# inside QEMU's first 100 ms bandwidth sample: with threshold_size still 0, QEMU 10.0.2
# then switches over on the zero *estimate* without an exact dirty sync (trace:
# migrate_pending_estimate 0 -> migration_thread_low_pending 0), ignoring downtime-limit.
# Rate-limit the compressed stream so the first pass outlasts the first sample.
COMPRESSED_ITERATE_BANDWIDTH = 5_000_000


def _channels(n: int, method: str, tiers=frozenset({"full"}), **kw) -> Scenario:
    params = {"multifd-channels": n, "multifd-compression": method}
    bw = ITERATE_BANDWIDTH if method == "none" else COMPRESSED_ITERATE_BANDWIDTH
    return Scenario(f"/migration/multifd/tcp/channels/{n}/{method}", transport=Transport.TCP,
                    caps=MULTIFD, params={**params, "max-bandwidth": bw},
                    dst_params=params, tiers=tiers,
                    requires=(Capability("multifd"), Compression(method)), **LIVE, **kw)


ZLIB_NOTE = ("zlib compresses random data at ~35 MiB/s on these 2 cores (too slow to keep up "
             "with the Linux guest's dirtying); the boot sector's pages hold one byte each and "
             "compress to almost nothing, so zlib iterates and converges like zstd here "
             "(measured: 3.5-4.7 s per scenario). Under --guest linux expect it to be slow")

SCENARIOS = (
    # -- channels x compression ------------------------------------------------------
    _channels(4, "none", tiers=SMOKE),
    _channels(2, "none"),
    _channels(8, "none"),
    _channels(2, "zstd"),
    _channels(4, "zstd"),
    _channels(8, "zstd"),
    _channels(2, "zlib", note=ZLIB_NOTE),
    _channels(4, "zlib", note=ZLIB_NOTE),
    _channels(8, "zlib", note=ZLIB_NOTE),
    # Accelerator-backed methods: skipped with the reason when not built in.
    _channels(4, "qpl", note="Intel IAA (QPL); needs a QEMU built with --enable-qpl"),
    _channels(4, "uadk", note="HiSilicon UADK; needs a QEMU built with --enable-uadk"),
    _channels(4, "qatzip", note="Intel QAT; needs a QEMU built with --enable-qatzip"),

    # -- zero-copy, zero pages ----------------------------------------------------------
    Scenario("/migration/multifd/tcp/zero-copy", transport=Transport.TCP,
             caps={"multifd": True, "zero-copy-send": True},
             params={"multifd-channels": 4}, dst_params={"multifd-channels": 4},
             requires=(Capability("zero-copy-send"), LockedMemory(256 << 20)),
             note="MSG_ZEROCOPY on the send side; QEMU 10.0 refuses it with compression, TLS "
                  "or xbzrle; the kernel pins the pages (RLIMIT_MEMLOCK or CAP_IPC_LOCK)"),
    Scenario("/migration/multifd/tcp/zero-copy/compression-refused", transport=Transport.TCP,
             caps={"multifd": True, "zero-copy-send": True},
             params={"multifd-compression": "zstd"}, dst_params={"multifd-compression": "zstd"},
             requires=(Capability("zero-copy-send"), Compression("zstd")),
             expect=Expect(Result.REFUSED, error_class="GenericError",
                           error_match="Zero copy only available for non-compressed non-TLS "
                                       "multifd migration")),
    Scenario("/migration/multifd/tcp/zero-page/legacy", transport=Transport.TCP, caps=MULTIFD,
             params={"zero-page-detection": "legacy", "max-bandwidth": ITERATE_BANDWIDTH}, **LIVE,
             requires=(Parameter("zero-page-detection"),),
             note="qtest: zero pages found by the main migration thread"),
    Scenario("/migration/multifd/tcp/zero-page/none", transport=Transport.TCP, caps=MULTIFD,
             params={"zero-page-detection": "none", "max-bandwidth": ITERATE_BANDWIDTH}, **LIVE,
             requires=(Parameter("zero-page-detection"),),
             note="qtest: no zero-page detection, every page is sent in full"),

    # -- the channels argument, cancel ------------------------------------------------
    Scenario("/migration/multifd/tcp/channels-arg/none", transport=Transport.CHANNELS,
             caps=MULTIFD, requires=(MinVersion((9, 1, 0)),),
             note="qtest /migration/multifd/tcp/channels/plain/none: multifd with the "
                  "'channels' argument"),
    Scenario("/migration/multifd/tcp/cancel", flow=Flow.CANCEL, transport=Transport.TCP,
             caps=MULTIFD, params={"multifd-channels": 16}, dst_params={"multifd-channels": 16},
             options=CancelOptions(at=CancelPoint.ACTIVE),
             note="qtest /migration/multifd/tcp/plain/cancel: cancel while active, then a new "
                  "destination"),

    # -- mapped-ram files ---------------------------------------------------------------
    Scenario("/migration/multifd/file/mapped-ram", flow=Flow.FILE, transport=Transport.FILE,
             live=False, caps={"mapped-ram": True, "multifd": True},
             params={"multifd-channels": 4}, dst_params={"multifd-channels": 4},
             requires=(Capability("mapped-ram"),)),
    Scenario("/migration/multifd/file/mapped-ram/live", flow=Flow.FILE, transport=Transport.FILE,
             caps={"mapped-ram": True, "multifd": True},
             params={"multifd-channels": 4}, dst_params={"multifd-channels": 4},
             requires=(Capability("mapped-ram"),)),
    Scenario("/migration/multifd/file/mapped-ram/dio", flow=Flow.FILE, transport=Transport.FILE,
             live=False, caps={"mapped-ram": True, "multifd": True},
             params={"multifd-channels": 4, "direct-io": True},
             dst_params={"multifd-channels": 4, "direct-io": True},
             requires=(Capability("mapped-ram"), Parameter("direct-io"), DirectIO())),
    Scenario("/migration/multifd/file/mapped-ram/fdset", flow=Flow.FILE, transport=Transport.FILE,
             live=False, caps={"mapped-ram": True, "multifd": True},
             params={"multifd-channels": 4}, dst_params={"multifd-channels": 4},
             options=FileOptions(fdset=True, fdset_fds=2, offset=0x20),
             requires=(Capability("mapped-ram"),),
             note="two fds per side in fdset 1 (the main channel's and the multifd channels')"),
    Scenario("/migration/multifd/file/mapped-ram/fdset/dio", flow=Flow.FILE,
             transport=Transport.FILE, live=False, caps={"mapped-ram": True, "multifd": True},
             params={"multifd-channels": 4, "direct-io": True},
             dst_params={"multifd-channels": 4, "direct-io": True},
             options=FileOptions(fdset=True, fdset_fds=2, offset=0x20),
             requires=(Capability("mapped-ram"), Parameter("direct-io"), DirectIO()),
             note="the second fd of each side is opened O_DIRECT (only the multifd channels "
                  "use direct-io)"),

    # -- Linux guest ----------------------------------------------------------------------
    Scenario("/migration/multifd/tcp/linux", transport=Transport.TCP, guest=GuestKind.LINUX,
             memory_mib=512, caps=MULTIFD,
             params={"multifd-channels": 4, "max-bandwidth": ITERATE_BANDWIDTH},
             dst_params={"multifd-channels": 4}, timeout=180.0, **LIVE,
             note="the self-verifying workload rewrites pages while multifd sends them"),
)
