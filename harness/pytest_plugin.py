"""pytest plugin: options, fixtures, markers and the exit-verdict hook.

Thin on purpose: everything real lives in harness.* and is usable without pytest.
"""
from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from harness import dirs, proctree
from harness.config import HarnessConfig
from harness.hosts import inventory as inventory_mod
from harness.hosts.base import HostError
from harness.hosts.local import LocalHost
from harness.qemu import accel as accel_mod
from harness.qemu.binary import BinaryError, probe
from harness.qemu.machine import Machine, MachineFailure
from harness.qemu.spec import GuestSpec, MachineSpec, SpecError
from harness.run import TestRun, safe_dirname

RUN_STAMP_KEY = "harness_run_stamp"
_run_key = pytest.StashKey[TestRun]()
_failed_key = pytest.StashKey[bool]()
_session_runs_key = pytest.StashKey[list]()
_runs_key = pytest.StashKey[int]()
_placements_key = pytest.StashKey[int]()


def pytest_addoption(parser):
    g = parser.getgroup("qemu-migration-harness")
    g.addoption("--qemu", default=os.environ.get("QTEST_QEMU_BINARY"),
                help="QEMU binary for both sides (default: $QTEST_QEMU_BINARY or qemu-system-x86_64)")
    g.addoption("--qemu-src", default=os.environ.get("QTEST_QEMU_BINARY_SRC"),
                help="QEMU binary for the source (default: --qemu)")
    g.addoption("--qemu-dst", default=os.environ.get("QTEST_QEMU_BINARY_DST"),
                help="QEMU binary for the destination (default: --qemu)")
    g.addoption("--accel", default="auto", help="tcg, kvm or auto (measured per binary, cached)")
    g.addoption("--guest", default="bootblock", help="bootblock or linux")
    g.addoption("--machine-type", default=None, help="QEMU -machine type (default q35)")
    g.addoption("--artifacts", default="artifacts", help="root dir for per-test artifacts")
    g.addoption("--hammer-seed", type=int, default=None,
                help="seed for every random choice (default: random, printed and recorded)")
    g.addoption("--hammer", type=int, default=1, metavar="N",
                help="run every selected test N times (copies spread over xdist workers)")
    g.addoption("--chaos-seconds", type=float, default=None, metavar="SECONDS",
                help="run the chaos engine as tests (tests/migration/test_chaos.py): one explorer per "
                     "xdist worker for SECONDS each; without it those tests skip")
    g.addoption("--chaos-kinds", default="", metavar="KIND,...",
                help="with --chaos-seconds: draw only these action kinds (as `harness chaos --kinds`)")
    g.addoption("--hammer-time", type=float, default=None, metavar="SECONDS",
                help="repeat the selected tests until SECONDS have passed")
    g.addoption("--until-crash", action="store_true",
                help="stop the session at the first QEMU crash, hang or lost VM (known bug or not)")
    g.addoption("--until-new", action="store_true",
                help="stop the session at the first crash, hang or lost VM no known bug explains")
    g.addoption("--no-malloc-perturb", action="store_true",
                help="do not set a random MALLOC_PERTURB_ for each QEMU")
    g.addoption("--keep-artifacts", action="store_true",
                help="keep artifacts of passing tests too (failures are always kept)")
    g.addoption("--inventory", default=os.environ.get("HARNESS_INVENTORY"), metavar="TOML",
                help="run QEMU on the inventory's hosts over SSH (--qemu* then name a "
                     "label of the host's [qemu] table or a path on the host)")
    g.addoption("--place", default="auto", metavar="SRC:DST",
                help="with --inventory: 'auto' (free slots, seeded order) or host names SRC:DST")
    g.addoption("--host-tags", default="", metavar="TAG,...",
                help="with --inventory: only hosts carrying all these tags")
    g.addoption("--shard", default=None, metavar="K/N",
                help="run only the K-th of N deterministic, duration-balanced parts of the "
                     "selected tests (CI: GitLab parallel: N, a GitHub matrix)")
    g.addoption("--durations-file", default=None, metavar="JSON",
                help="measured test durations for --shard (default: tests/durations.json "
                     "under the rootdir)")
    g.addoption("--store-durations", action="store_true",
                help="merge this run's measured durations into --durations-file")


def pytest_configure(config):
    for line in ("qemu: needs a real QEMU binary",
                 "linux_guest: boots the Linux guest",
                 "smoke: fast tier", "full: full tier", "slow: slow tier",
                 "error_path_only: passing shows only an error path (a refusal): reported as "
                 "'passed (error path only)'"):
        config.addinivalue_line("markers", line)
    if hasattr(config, "workerinput"):
        stamp = config.workerinput[RUN_STAMP_KEY]
        # An xdist worker dies with its controller and, on SIGTERM, kills its QEMUs and
        # removes its run dirs first (SIGINT stays pytest's: teardown, then the summary).
        proctree.become_worker(signals=())
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        proctree.exit_cleanly_on((signal.SIGTERM,))
    config._harness_run_stamp = stamp
    if config.option.hammer_seed is None:
        # Workers must share the controller's seed so a run can be replayed.
        config.option.hammer_seed = (config.workerinput["harness_seed"] if hasattr(config, "workerinput")
                                     else random.SystemRandom().getrandbits(32))
    config.stash[_session_runs_key] = []
    config.pluginmanager.register(JUnitEvidence(config), "harness_junit_evidence")
    if config.option.store_durations and not hasattr(config, "workerinput"):
        config.pluginmanager.register(DurationRecorder(config), "harness_durations")
    _validate_options(config)
    config._harness_artifacts_root = Path(config.option.artifacts).resolve() / stamp
    from harness.stress.pytest_hammer import HammerPlugin
    config.pluginmanager.register(HammerPlugin(config), "harness_hammer")


def _validate_options(config) -> None:
    """Bad options are a one-line usage error before anything runs."""
    o = config.option
    try:
        HarnessConfig.from_options(qemu=o.qemu, qemu_src=o.qemu_src, qemu_dst=o.qemu_dst,
                                   accel=o.accel, guest=o.guest, artifacts=o.artifacts,
                                   keep=o.keep_artifacts, machine=o.machine_type)
        if o.inventory:
            from harness.hosts.placement import parse_place
            inv = inventory_mod.load(o.inventory)
            parse_place(o.place, inv)
            hosts = inv.select(_tags(o))
            for b in filter(None, (o.qemu, o.qemu_src, o.qemu_dst)):
                for e in hosts:
                    e.qemu_binary(b)   # a label every host knows, or a path
        else:
            for b in (o.qemu, o.qemu_src, o.qemu_dst):
                if b:  # only binaries the user named; the default is checked when first needed
                    probe(b)
            if o.machine_type:
                _check_machine_type(o)
        dirs.local_run_root()      # exists, ours, private, short enough for socket paths
        dirs.writable_dir(o.artifacts, "--artifacts", create=False)
        if o.shard:
            from harness import shard
            shard.parse(o.shard)
            shard.load_durations(_durations_file(config))
        if o.hammer < 1:
            raise SpecError(f"--hammer {o.hammer} must be >= 1")
        if o.hammer_time is not None and o.hammer_time <= 0:
            raise SpecError(f"--hammer-time {o.hammer_time} must be > 0")
        if o.chaos_seconds is not None and o.chaos_seconds <= 0:
            raise SpecError(f"--chaos-seconds {o.chaos_seconds:g} must be > 0")
        if o.chaos_kinds:
            from harness.runtime.actions import BY_KIND
            for k in filter(None, o.chaos_kinds.split(",")):
                if k not in BY_KIND:
                    raise SpecError(f"--chaos-kinds {k}: no such action (have {', '.join(sorted(BY_KIND))})")
    except (SpecError, BinaryError, HostError, inventory_mod.InventoryError, ValueError,
            dirs.DirError) as exc:
        raise pytest.UsageError(str(exc)) from None


def _durations_file(config) -> Path:
    o = config.option
    return Path(o.durations_file) if o.durations_file else Path(config.rootpath) / "tests" / "durations.json"


@pytest.hookimpl(trylast=True)   # after -k/-m: split what is selected
def pytest_collection_modifyitems(config, items):
    if not config.option.shard:
        return
    from harness import shard
    part = shard.parse(config.option.shard)
    mine = shard.select((i.nodeid for i in items), shard.load_durations(_durations_file(config)), part)
    keep = [i for i in items if i.nodeid in mine]
    dropped = [i for i in items if i.nodeid not in mine]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def pytest_sessionstart(session):
    """JUnit says which shard it holds (harness report checks the shards are complete)."""
    config = session.config
    if config.option.shard and not hasattr(config, "workerinput"):
        from _pytest.junitxml import xml_key
        xml = config.stash.get(xml_key, None)
        if xml is not None:
            xml.add_global_property("harness_shard", config.option.shard)


class DurationRecorder:
    """--store-durations: setup + call + teardown seconds per test, written at the end."""

    def __init__(self, config):
        self.config = config
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report):
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self, session):
        if self.seconds:
            from harness import shard
            shard.store_durations(_durations_file(self.config), self.seconds)


def _check_machine_type(o) -> None:
    """--machine-type against `-machine help` of each binary: QEMU's own reason, once,
    before any test starts (else every test fails launching)."""
    mt = o.machine_type.split(",", 1)[0]
    for b in {o.qemu_src or o.qemu or "qemu-system-x86_64", o.qemu_dst or o.qemu or "qemu-system-x86_64"}:
        qb = probe(b)
        if mt not in qb.machines:
            raise SpecError(f"--machine-type {o.machine_type}: {qb.path} ({qb.version}) says "
                            f"unsupported machine type \"{mt}\" (its '-machine help' lists the "
                            f"supported ones)")


def _tags(o) -> tuple[str, ...]:
    return tuple(t for t in (o.host_tags or "").split(",") if t)


@pytest.hookimpl(optionalhook=True)   # an xdist hook: -p no:xdist must still work
def pytest_configure_node(node):  # xdist hook: workers share the controller's run stamp
    node.workerinput[RUN_STAMP_KEY] = node.config._harness_run_stamp
    node.workerinput["harness_seed"] = node.config.option.hammer_seed
    node.workerinput["harness_workers"] = node.config.option.numprocesses or 1


def pytest_report_header(config):
    return f"harness: seed {config.option.hammer_seed} (replay with --hammer-seed {config.option.hammer_seed})"


@pytest.fixture(scope="session")
def harness_config(pytestconfig) -> HarnessConfig:
    """Session: the validated command-line choices (HarnessConfig): source and destination
    QEMU binaries (--qemu*, $QTEST_QEMU_BINARY*), --accel, --guest, --machine-type,
    artifact root. A bad binary is a usage error before any test runs."""
    o = pytestconfig.option
    try:
        cfg = HarnessConfig.from_options(qemu=o.qemu, qemu_src=o.qemu_src, qemu_dst=o.qemu_dst,
                                         accel=o.accel, guest=o.guest, artifacts=o.artifacts,
                                         keep=o.keep_artifacts, machine=o.machine_type)
        if not o.inventory:
            for b in {cfg.qemu_src, cfg.qemu_dst}:
                probe(b)
    except (SpecError, BinaryError) as exc:
        raise pytest.UsageError(str(exc)) from None
    return cfg


@pytest.fixture(scope="session")
def harness_fleet(pytestconfig):
    """Session: with --inventory, this worker's Fleet (SSH connections, slots, preflight
    facts of the inventory's hosts); None when QEMU runs locally."""
    o = pytestconfig.option
    if not o.inventory:
        yield None
        return
    from harness.hosts.fleet import Fleet
    root = Path(o.artifacts).resolve() / pytestconfig._harness_run_stamp
    fleet = Fleet.load(o.inventory, place=o.place, tags=_tags(o), facts_dir=root / "preflight")
    yield fleet
    fleet.close()


def side_binaries(cfg: HarnessConfig, run: TestRun):
    """(source, destination) QemuBinary, probed on the hosts they run on."""
    p = run.placement
    if p.src.is_local and p.dst.is_local:
        return probe(cfg.qemu_src), probe(cfg.qemu_dst)
    label = lambda b: None if b == "qemu-system-x86_64" else b  # noqa: E731 - the default
    return (probe(p.src.entry.qemu_binary(label(cfg.qemu_src)), p.src),
            probe(p.dst.entry.qemu_binary(label(cfg.qemu_dst)), p.dst))


def _one_host(request) -> bool:
    callspec = getattr(request.node, "callspec", None)
    s = callspec.params.get("scenario") if callspec else None
    return bool(getattr(s, "needs_one_host", False))


def _place(request, fleet):
    """Slots on inventory hosts for this test, and a skip if preflight rules a host out."""
    # Seeded like malloc_perturb (session seed, test id, round): a replay places alike.
    n = request.node.stash.get(_placements_key, 0)
    request.node.stash[_placements_key] = n + 1
    seed = f"{request.config.option.hammer_seed}:{request.node.nodeid}:{n}"
    placement, error, reason = None, None, None
    try:
        placement = fleet.place(one_host=_one_host(request), seed=seed)
        reason = next(filter(None, (fleet.facts(h).blocking_reason()
                                    for h in (placement.src, placement.dst))), None)
    except HostError as exc:
        error = str(exc)
    if (error or reason) and placement is not None:
        placement.release()
    if error:
        pytest.fail(error, pytrace=False)   # outside the except: no chained traceback
    if reason:
        pytest.skip(reason)
    _set_property(request.node, "hosts", placement.describe())
    return placement


@pytest.fixture
def qemu_accel(harness_config, harness_run) -> str:
    """The accelerator this test's QEMUs use: 'tcg' or 'kvm' (--accel auto is measured
    once per binary on the source's host and cached)."""
    src = side_binaries(harness_config, harness_run)[0].path
    p = harness_run.placement
    return accel_mod.resolve(src, harness_config.accel, None if p.src.is_local else p.src)


@pytest.fixture
def harness_run(request, harness_config, harness_fleet) -> TestRun:
    """This test's TestRun: owns every QEMU the test starts (harness_run.machine(spec)),
    its artifact dir (harness_run.artifacts) and, with --inventory, its host placement.
    After the test it shuts each machine down and judges how it exited: a crash or hang
    fails the test with the signature first. Artifacts of passing tests are removed
    unless --keep-artifacts."""
    stamp = request.config._harness_run_stamp
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    # A worker killed with -9 left its run dirs (its QEMUs died by PDEATHSIG): they
    # carry its PID, and the next test anywhere removes them.
    proctree.reap_orphans(Path(LocalHost().tmp_root))
    art = harness_config.artifacts_root / stamp / safe_dirname(request.node.nodeid)
    if art.exists():  # same test id twice (hammer/repeat): keep both
        art = art.with_name(f"{art.name}-{worker}-{time.monotonic_ns()}")
    placement = _place(request, harness_fleet) if harness_fleet is not None else None
    from harness.evidence import SharedEvidenceBudget
    # Cores and backtraces for the first few crashes of each class in the session only.
    budget = SharedEvidenceBudget(harness_config.artifacts_root / stamp / ".evidence")
    run = TestRun(art, placement=placement, want_evidence=budget)
    # In JUnit (a property of the item, as junitxml reads them at teardown): where this
    # run's evidence is. Replaced each round when a test is hammered.
    _set_property(request.node, "artifacts", str(art))
    request.node.stash[_run_key] = run
    request.config.stash[_session_runs_key].append(run)
    yield run
    run.abort()  # no-op if the verdict hook already finished it
    run.placement.release()
    failed = request.node.stash.get(_failed_key, True)
    if not failed and not harness_config.keep_artifacts:
        run.discard_artifacts()
        _set_property(request.node, "artifacts", None)


@pytest.fixture
def malloc_perturb(request) -> int | None:
    """A seeded random MALLOC_PERTURB_ for this test run (None with --no-malloc-perturb).

    Like meson's test runner: glibc then fills freed memory with a pattern, so
    use-after-free turns into crashes instead of silence."""
    if request.config.option.no_malloc_perturb:
        return None
    # Seeded by session seed, test id and how often this item ran: replayable.
    n = request.node.stash.get(_runs_key, 0)
    request.node.stash[_runs_key] = n + 1
    rng = random.Random(f"{request.config.option.hammer_seed}:{request.node.nodeid}:{n}")
    value = rng.randint(1, 255)
    _set_property(request.node, "malloc_perturb", value)
    return value


def _set_property(node, name: str, value) -> None:
    """One value per name: --hammer-time re-runs an item's fixtures every round, and
    appending would hand every round the earlier rounds' values in JUnit. None removes."""
    node.user_properties[:] = [(k, v) for k, v in node.user_properties if k != name]
    if value is not None:
        node.user_properties.append((name, value))


@pytest.fixture
def base_spec(harness_config, harness_run, qemu_accel, malloc_perturb, pytestconfig) -> MachineSpec:
    """The MachineSpec the command line asks for: source binary, accelerator, machine type
    (with two binaries the newest pc-q35-X.Y both have), guest, seeded MALLOC_PERTURB_.
    Derive your own with base_spec.with_(smp=2, memory_mib=512, extra_args=(...))."""
    env = (("MALLOC_PERTURB_", str(malloc_perturb)),) if malloc_perturb else ()
    src, dst = side_binaries(harness_config, harness_run)
    machine_type = _machine_type(harness_config, src, dst)
    _record_environment(harness_run, src, dst, qemu_accel, machine_type,
                        pytestconfig.option.hammer_seed)
    return MachineSpec(binary=src.path, accel=qemu_accel, machine_type=machine_type,
                       guest=GuestSpec(kind=harness_config.guest), env=env)


def _record_environment(run: TestRun, src, dst, accel: str, machine_type: str, seed) -> None:
    """metrics.json's "environment": what this result depends on (report table, trends)."""
    from harness import environment
    from harness.migration.metrics import write_metrics
    p = run.placement
    remote = not (p.src.is_local and p.dst.is_local)
    env = environment.Environment(
        qemu_src=environment.identify(src, local=p.src.is_local),
        qemu_dst=environment.identify(dst, local=p.dst.is_local),
        accel=accel, machine_type=machine_type, host=environment.controller_host(),
        hosts=p.describe() if remote else "local", seed=seed)
    run.artifacts.mkdir(parents=True, exist_ok=True)
    write_metrics(run.artifacts / "metrics.json", {"environment": env.to_dict()})


def _machine_type(cfg: HarnessConfig, src, dst) -> str:
    """--machine-type, else q35 for one binary, else the newest pc-q35-X.Y both binaries have."""
    if cfg.machine_type:
        return cfg.machine_type
    if src.path == dst.path and src.version == dst.version:
        return "q35"
    from harness.qemu.binary import common_machine_type
    mt = common_machine_type(src, dst)
    if mt is None:
        raise pytest.UsageError(f"no pc-q35-X.Y machine type shared by {src.path} ({src.version}) "
                                f"and {dst.path} ({dst.version}): pass --machine-type")
    return mt


@pytest.fixture
def machine_factory(harness_run, base_spec):
    """machine_factory(name='vm', launch=True, **spec_changes) -> Machine: one QEMU from
    base_spec with the changes (any MachineSpec field), owned by harness_run. Use it for
    single-VM tests or pairs with unusual wiring; machine.cmd('query-status') talks QMP."""
    def make(name: str = "vm", launch: bool = True, **changes) -> Machine:
        return harness_run.machine(base_spec.with_(name=name, **changes), launch=launch)
    return make


@pytest.fixture
def migration_pair(harness_run, base_spec, harness_config):
    """A launched Pair: pair.src runs the guest, pair.dst waits with -incoming defer, paused
    (-S) so its RAM can be compared byte for byte. Drive it with
    harness.migration.drivers.precopy(pair, Transport.TCP, caps=..., params=...) and check
    it with drivers.prove_integrity(pair). Build your own with
    harness.migration.pair.make_pair(harness_run, spec, src_extra=..., dst_extra=...)."""
    from harness.migration.pair import make_pair
    return make_pair(harness_run, base_spec,
                     dst_binary=side_binaries(harness_config, harness_run)[1].path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After the test body: shut down every machine and judge how each exited."""
    run = item.stash.get(_run_key, None)
    try:
        result = yield
    except BaseException as exc:
        if run is not None:
            run.abort()
            crash = _worst_unexpected(run)
            if crash is not None and not isinstance(exc, MachineFailure):
                raise MachineFailure(crash) from exc
        raise
    if run is not None:
        run.finish()
    return result


def _worst_unexpected(run: TestRun):
    from harness.qemu.outcome import OutcomeKind
    for kind in (OutcomeKind.CRASH, OutcomeKind.HANG):
        for o in run.outcomes.values():
            if o.kind is kind and o.is_failure:
                return o
    return None


ERROR_PATH_ONLY = "passed (error path only)"


def pytest_report_teststatus(report, config):
    """A pass that only exercised an error path is not counted as a plain pass."""
    if report.when == "call" and report.passed and "error_path_only" in report.keywords:
        return ERROR_PATH_ONLY, "e", ("PASSED (error path only)", {"yellow": True})
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.passed and item.get_closest_marker("error_path_only"):
        _set_property(item, "harness_result", ERROR_PATH_ONLY)   # JUnit reads it at teardown
    run = item.stash.get(_run_key, None)
    if report.when == "call":
        # Keep the evidence of expected failures too: their message points at it.
        item.stash[_failed_key] = report.failed or getattr(report, "wasxfail", None) is not None
    elif report.failed:
        item.stash[_failed_key] = True
    elif report.when == "setup" and report.skipped and not hasattr(report, "wasxfail"):
        item.stash[_failed_key] = False  # skipped before running: nothing worth keeping
    if getattr(report, "wasxfail", None) is not None and call.excinfo is not None:
        from harness.stress.known_bugs import KnownBugReproduced
        if call.excinfo.errisinstance(KnownBugReproduced):
            report.wasxfail = str(call.excinfo.value)  # which bug, seen where
    if run is not None and (report.when == "call" or (report.when == "setup" and report.failed)):
        # Every crash, hang or lost VM of this run (and of its inner attempts) is a
        # hit for the triage, whatever the test's xfail status.
        from harness.stress.pytest_hammer import record_hits
        record_hits(report, run)
    if run is not None and report.when == "call" and run.artifacts.is_dir():
        from harness.evidence import compress_cores
        compress_cores(run.artifacts)   # after gdb read them; before the message names them
    if run is not None and report.failed:
        if report.when == "call" and call.excinfo is not None:
            _signature_first(item, report, call.excinfo, run)
        else:
            report.sections.append(("harness artifacts", str(run.artifacts)))
    return report


def _signature_first(item, report, excinfo, run: TestRun) -> None:
    """The failure's signature leads everywhere: the summary line and JUnit's message
    (reprcrash.message), the text (signature, artifacts, cause); the harness's own
    traceback only with -v (a test's own assert keeps its traceback). JUnit's system-out
    gets GitLab attachment lines and each QEMU's last stderr lines."""
    from _pytest._code.code import ReprEntryNative, ReprExceptionInfo, ReprFileLocation, ReprTraceback

    from harness import failures
    old = report.longrepr
    crash = getattr(old, "reprcrash", None)
    exc = excinfo.value
    harness_raised = failures.is_harness_failure(exc)
    summary = failures.summarize(exc, run.all_machines(), run.artifacts)
    signature = summary.signature
    if not harness_raised and crash is not None:
        signature = crash.message.splitlines()[0] if crash.message else signature
    lines = [signature, *summary.text().splitlines()[1:]]
    where = f"{crash.path}:{crash.lineno}" if crash is not None else ""
    if not harness_raised:
        lines += ["", str(old)]
    elif item.config.option.verbose > 0:
        lines += ["", "harness traceback:", str(old)]
    else:
        lines += [f"raised at {summary.location or where} (-v shows the traceback)"]
    report.longrepr = ReprExceptionInfo(
        reprtraceback=ReprTraceback([ReprEntryNative([ln + "\n" for ln in lines])], None, "native"),
        reprcrash=ReprFileLocation(crash.path if crash else str(item.path),
                                   crash.lineno if crash else 0,
                                   # JUnit's message names the evidence too; pytest's summary
                                   # line shows the first line only
                                   f"{signature}\n{lines[1]}"))
    # A plain attribute: xdist ships it to the controller with the report.
    report.harness_system_out = summary.system_out()


class JUnitEvidence:
    """Writes a failed test's attachments and stderr tails into JUnit's system-out."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_logreport(self, report):
        text = getattr(report, "harness_system_out", None)
        if not text:
            return
        import xml.etree.ElementTree as ET

        from _pytest.junitxml import bin_xml_escape, xml_key
        xml = self.config.stash.get(xml_key, None)   # pytest's LogXML, with --junitxml
        if xml is not None:
            el = ET.Element("system-out")
            el.text = bin_xml_escape(text)
            xml.node_reporter(report).append(el)


def _exists_on(host, path: Path) -> bool:
    if host.is_local:
        return path.exists()
    try:
        return host.run(["test", "-e", str(path)], 10)[0] == 0
    except HostError:
        return False   # host unreachable: its supervisors' watchdogs clean up


def pytest_sessionfinish(session, exitstatus):
    """Leak check: every QEMU this session started must be gone, every run dir removed."""
    if not hasattr(session.config, "workerinput"):
        proctree.reap_orphans(Path(LocalHost().tmp_root))   # of workers killed meanwhile
    leaks = []
    for run in session.config.stash.get(_session_runs_key, []):
        for m in run.all_machines():
            if m.is_running():
                leaks.append(f"QEMU pid {m.pid} ({m.name}) still running")
                m.proc.kill_group()
                m.proc.wait(10)
            if m.run_dir is not None and _exists_on(m.host, m.run_dir):
                leaks.append(f"run dir {m.host.name}:{m.run_dir} left behind")
                m.host.remove_run_dir(m.run_dir)
    if leaks:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line("harness leak check FAILED: " + "; ".join(leaks), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
