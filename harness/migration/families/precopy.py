"""/migration/precopy/...: plain precopy on every transport, and the precopy features
(xbzrle, auto-converge, dirty-limit, pause-before-switchover, validate-uuid, bad
destination, file and mapped-ram, the Linux guest). Names follow qtest where it has
the case."""
from harness.migration import hooks
from harness.migration.hooks import ITERATE_BANDWIDTH
from harness.migration.options import Destination, FileOptions, PrecopyOptions
from harness.migration.requirements import Accel, Capability, Command, MigrationLink, MinVersion
from harness.migration.scenario import Expect, Flow, Result, Scenario
from harness.migration.transports import Transport
from harness.qemu.spec import GuestKind

SMOKE = frozenset({"smoke", "full"})
UUID_A = "5b4a1c2e-0d3f-4e5a-9b6c-7d8e9f0a1b2c"
UUID_B = "5b4a1c2e-0d3f-4e5a-9b6c-000000000000"
ITERATE = {"max-bandwidth": ITERATE_BANDWIDTH}
# Held non-converging until memory sent once was dirtied and sent again (hooks.dirty_pass),
# like qtest's live tests; the plain tcp/unix scenarios keep the lead's direct convergence.
LIVE = dict(params=ITERATE, converge=False, options=PrecopyOptions(during=(hooks.dirty_pass,)))

SCENARIOS = (
    # -- transports ------------------------------------------------------------------
    Scenario("/migration/precopy/tcp/plain", transport=Transport.TCP, tiers=SMOKE),
    Scenario("/migration/precopy/unix/plain", transport=Transport.UNIX),
    Scenario("/migration/precopy/tcp/link-shaped", transport=Transport.TCP, params=ITERATE,
             converge=False, options=PrecopyOptions(during=(hooks.link_shaped,)), requires=(MigrationLink(),),
             note="a tbf on the source host's migration link caps the stream: QEMU's "
                  "throughput follows the real link, then it converges unshaped"),
    Scenario("/migration/precopy/tcp/plain/notlive", transport=Transport.TCP, live=False,
             note="source stopped before migrate: the stream is one consistent pass"),
    Scenario("/migration/precopy/fd/socketpair", transport=Transport.FD, **LIVE,
             note="qtest /migration/precopy/fd/tcp: a socketpair, one end to each QEMU via "
                  "getfd over SCM_RIGHTS, uri fd:NAME; dirty passes before converging"),
    Scenario("/migration/precopy/exec/fifo", transport=Transport.EXEC, **LIVE,
             note="exec:cat > FIFO on the source, exec:cat FIFO on the destination; dirty "
                  "passes before converging"),
    Scenario("/migration/precopy/tcp/channels", transport=Transport.CHANNELS, **LIVE,
             requires=(MinVersion((9, 1, 0)),),
             note="migrate/migrate-incoming with the 'channels' argument instead of a URI"),
    Scenario("/migration/precopy/tcp/plain/switchover-ack", transport=Transport.TCP,
             caps={"return-path": True, "switchover-ack": True},
             requires=(Capability("switchover-ack"),)),

    # -- features that act per pass: prove they acted, then converge ------------------
    Scenario("/migration/precopy/unix/xbzrle", transport=Transport.UNIX, caps={"xbzrle": True},
             params={"xbzrle-cache-size": 256 << 20, "max-bandwidth": ITERATE_BANDWIDTH},
             converge=False, options=PrecopyOptions(during=(hooks.xbzrle,)),
             note="iterates until query-migrate shows XBZRLE-encoded pages, then converges"),
    Scenario("/migration/precopy/unix/auto-converge", transport=Transport.UNIX,
             caps={"auto-converge": True},
             params={"cpu-throttle-initial": 20, "cpu-throttle-increment": 10,
                     "max-cpu-throttle": 99, "max-bandwidth": ITERATE_BANDWIDTH},
             converge=False, options=PrecopyOptions(during=(hooks.auto_converge,)),
             note="qtest /migration/auto_converge: cpu-throttle-percentage sampled while the "
                  "migration cannot converge must start >= initial and rise; then converge"),
    Scenario("/migration/precopy/unix/dirty-limit", transport=Transport.UNIX,
             caps={"dirty-limit": True},
             params={"x-vcpu-dirty-limit-period": 1000, "vcpu-dirty-limit": 50,
                     "max-bandwidth": ITERATE_BANDWIDTH},
             converge=False,
             options=PrecopyOptions(during=(hooks.dirty_limit,),
                                    accel_props="dirty-ring-size=4096"),
             requires=(Accel("kvm"), Capability("dirty-limit"), Command("query-vcpu-dirty-limit")),
             note="qtest /migration/dirty_limit: needs KVM with a dirty ring "
                  "(PrecopyOptions.accel_props -> -accel kvm,dirty-ring-size=4096)"),
    Scenario("/migration/precopy/unix/dirty-limit/refused", transport=Transport.UNIX,
             caps={"dirty-limit": True}, requires=(Capability("dirty-limit"),),
             expect=Expect(Result.REFUSED, error_class="GenericError",
                           error_match="dirty-limit requires KVM with accelerator property "
                                       "'dirty-ring-size' set"),
             note="without -accel kvm,dirty-ring-size=N the capability must be refused"),
    Scenario("/migration/precopy/tcp/pause-before-switchover", transport=Transport.TCP,
             caps={"pause-before-switchover": True}, params=ITERATE, converge=False,
             options=PrecopyOptions(during=(hooks.dirty_pass, hooks.pause_before_switchover)),
             note="after real dirty passes: status pre-switchover with the source's guest "
                  "stopped (finish-migrate) and the destination still active, then "
                  "migrate-continue"),
    Scenario("/migration/precopy/tcp/plain/dirty-pass", transport=Transport.TCP,
             params=ITERATE, converge=False,
             options=PrecopyOptions(during=(hooks.dirty_pass,)),
             note="qtest's live precopy: held non-converging until memory sent once was "
                  "dirtied and sent again (dirty-sync-count >= 3), then converged"),

    # -- validate-uuid, bad destination -----------------------------------------------
    Scenario("/migration/precopy/tcp/validate-uuid", transport=Transport.TCP,
             caps={"validate-uuid": True}, src_args=("-uuid", UUID_A), dst_args=("-uuid", UUID_A),
             note="qtest /migration/validate_uuid"),
    Scenario("/migration/precopy/tcp/validate-uuid/mismatch", transport=Transport.TCP,
             caps={"validate-uuid": True}, src_args=("-uuid", UUID_A), dst_args=("-uuid", UUID_B),
             expect=Expect(Result.FAILED, dst_exit=(1,),
                           error_match=f"UUID received is {UUID_A} and local is {UUID_B}"),
             note="qtest /migration/validate_uuid_error: the destination refuses the stream "
                  "and exits 1; the source fails and keeps running its guest"),
    Scenario("/migration/precopy/tcp/bad-dest", transport=Transport.TCP,
             options=PrecopyOptions(destination=Destination.CLOSED_PORT),
             expect=Expect(Result.FAILED, error_match=r"Connection refused"),
             note="qtest /migration/bad_dest: 'failed' with error-desc, guest keeps running, "
                  "then a real migration from the same source succeeds"),

    # -- file -------------------------------------------------------------------------
    Scenario("/migration/precopy/file", flow=Flow.FILE, transport=Transport.FILE, live=False),
    Scenario("/migration/precopy/file/offset", flow=Flow.FILE, transport=Transport.FILE,
             live=False, options=FileOptions(offset=0x20),
             note="file:PATH,offset=0x20: the first 0x20 bytes stay zero, QEVM magic after"),
    Scenario("/migration/precopy/file/offset/fdset", flow=Flow.FILE, transport=Transport.FILE,
             live=False, options=FileOptions(offset=0x20, fdset=True),
             note="the file handed over with add-fd; uri file:/dev/fdset/1,offset=0x20"),
    Scenario("/migration/precopy/file/offset/bad", flow=Flow.FILE, transport=Transport.FILE,
             live=False, options=FileOptions(offset="0x20M"),
             expect=Expect(Result.REFUSED, error_class="GenericError", error_match="offset"),
             note="an offset qemu_strtosz() cannot parse is refused by migrate"),
    Scenario("/migration/precopy/file/mapped-ram", flow=Flow.FILE, transport=Transport.FILE,
             live=False, caps={"mapped-ram": True}, requires=(Capability("mapped-ram"),)),
    Scenario("/migration/precopy/file/mapped-ram/live", flow=Flow.FILE, transport=Transport.FILE,
             caps={"mapped-ram": True}, requires=(Capability("mapped-ram"),),
             note="live: dirtied pages are rewritten in place at their fixed file offsets"),

    # -- Linux guest --------------------------------------------------------------------
    Scenario("/migration/precopy/tcp/linux", transport=Transport.TCP, guest=GuestKind.LINUX,
             memory_mib=512, timeout=180.0, params=ITERATE, converge=False,
             options=PrecopyOptions(during=(hooks.dirty_pass,)),
             note="Debian cloud kernel + the self-verifying workload rewriting its pages as fast "
                  "as it can; dirty passes, then converge; in-guest verify after"),
)
