"""Chaos without QEMU: the schema surface, plan drawing and validation, oracles,
coverage and corpus, the minimiser, and the exported script's contract."""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from harness.runtime.actions import ALL, BY_KIND, DrawContext
from harness.runtime.surface import Param, from_schema
from harness.stress.coverage import Corpus, Coverage, action_tuple
from harness.stress.minimise import ddmin, minimise, trials_for
from harness.stress.oracles import Verdict, VerdictKind, state_machine_violation, stderr_violation
from harness.stress.plans import ChaosPlan, PlanError, Step, generate, mutate

SCHEMA = Path(__file__).parent / "samples" / "qmp_schema_10.0.2_migration.json"


@pytest.fixture(scope="module")
def surface():
    return from_schema(json.loads(SCHEMA.read_text()))


@pytest.fixture
def dc(surface):
    return DrawContext(surface=surface, postcopy=True, snapshots=True, hotplug=True)


def test_surface_is_read_from_the_schema_not_a_list(surface):
    assert "postcopy-preempt" in surface.capabilities and "mapped-ram" in surface.capabilities
    assert len(surface.capabilities) == 22
    kinds = {p.name: p.kind for p in surface.parameters}
    assert kinds["max-bandwidth"] == "int" and kinds["tls-creds"] == "str-or-null"
    assert surface.param("multifd-compression").values == ("none", "zlib", "zstd")
    assert kinds["block-bitmap-mapping"] == "array"


def test_same_seed_same_plan_and_json_round_trip(dc):
    a = generate(random.Random(99), dc, 10, 800)
    assert a == generate(random.Random(99), dc, 10, 800) and len(a) == 10
    plan = ChaosPlan(1, "/migration/precopy/tcp/plain", tuple(a), 800)
    assert ChaosPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_every_drawable_action_is_drawn_and_phase_triggers_occur(dc):
    steps = generate(random.Random(3), dc, 3000, 1000)
    drawn = {s.kind for s in steps}
    drawable = {a.kind for a in ALL if a.weight > 0 and a.enabled(dc)}
    assert drawn == drawable and "freeze" not in drawn
    assert any(s.on and s.on.endswith("postcopy-active") for s in steps)
    assert {s.side for s in steps if s.kind == "recover"} == {"dst"}


def test_mutation_keeps_plans_valid(dc):
    rng = random.Random(5)
    plan = ChaosPlan(1, "/migration/precopy/tcp/plain", tuple(generate(rng, dc, 4, 500)), 500)
    for _ in range(200):
        plan = mutate(rng, plan, dc, 12)
        assert 1 <= len(plan.steps) <= 12
        assert ChaosPlan.from_dict(plan.to_dict()) == plan


GOOD = {"kind": "set-param", "side": "dst", "at_ms": 10, "args": ["max-bandwidth", 1]}


@pytest.mark.parametrize("change, message", [
    ({"kind": "nope"}, "plan step 0: unknown kind 'nope'"),
    ({"side": "both"}, "plan step 0: side must be src or dst"),
    ({"at_ms": 100000000}, "plan step 0: at_ms 100000000 is outside the plan's span 0..500"),
    ({"at_ms": "10"}, "plan step 0: at_ms must be an integer"),
    ({"args": ["max-bandwidth"]}, "takes 2 argument(s), got 1"),
    ({"args": [5, 1]}, "should be a string"),
    ({"args": "x"}, "args must be a list"),
    ({"on": "src:lunch"}, "trigger 'src:lunch' must be side:STATUS"),
])
def test_bad_plans_are_one_line_errors(change, message):
    d = {"seed": 1, "span_ms": 500, "steps": [dict(GOOD, **change)]}
    with pytest.raises(PlanError) as ei:
        ChaosPlan.from_dict(d)
    assert message in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.parametrize("plan, message", [
    ([], "expected a JSON object"),
    ({"seed": "x", "span_ms": 1, "steps": []}, "seed must be an integer"),
    ({"seed": 1, "span_ms": 10**9, "steps": []}, "span_ms 1000000000 must be within"),
    ({"seed": 1, "span_ms": 10, "steps": {}}, "steps must be a list"),
    ({"seed": 1, "span_ms": 10, "steps": [], "base": "/migration/nope"}, "is not a chaos base here"),
])
def test_bad_plan_files(plan, message):
    with pytest.raises(PlanError, match=message):
        ChaosPlan.from_dict(plan, known_bases={"/migration/chaos/precopy/tcp"})


@pytest.mark.parametrize("seq, bad", [
    (["setup", "active", "device", "completed"], None),
    (["setup", "active", "postcopy-active", "postcopy-paused", "postcopy-recover", "postcopy-active",
      "completed"], None),
    (["setup", "active", "cancelling", "cancelled", "setup", "active", "completed"], None),
    (["setup", "active", "completed", "active"], "'completed' -> 'active'"),
    (["setup", "active", "cancelled"], "without 'cancelling'"),
    (["setup", "completed"], None),            # savevm reuses the migration state this way
    (["setup", "active", "cancelling", "completed"], "'cancelling' -> 'completed'"),
    (["setup", "failed", "postcopy-active"], "'failed' -> 'postcopy-active'"),
])
def test_state_machine_rules(seq, bad):
    got = state_machine_violation(seq)
    assert (got is None) if bad is None else (bad in got)


def test_stderr_oracle_flags_internal_errors_only():
    assert stderr_violation("qemu-system-x86_64: warning: TSC frequency mismatch\n") is None
    assert stderr_violation("qemu-system-x86_64: Unexpected RAM flags: 512\n") is None
    line = stderr_violation("(qemu:123): GLib-CRITICAL **: 12:00:01.5: g_source_remove: assertion 'tag > 0'")
    assert line and "GLib-CRITICAL" in line and "12:00" not in line


def test_coverage_and_corpus(tmp_path, dc):
    cov = Coverage()
    t = action_tuple("dst", "active", "running", "set-cap:multifd", "ok")
    assert cov.add([t, t]) == [t] and cov.add([t]) == []
    assert cov.counts()["tuples"] == 1
    plan = ChaosPlan(7, "/migration/precopy/tcp/plain", tuple(generate(random.Random(1), dc, 3, 300)), 300)
    Corpus(tmp_path).add(plan, [t])
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "bad.json").write_text(json.dumps({"seed": 1, "span_ms": 1, "steps": [{"kind": "x"}]}))
    c = Corpus(None)
    assert c.load(tmp_path) == 1 and c.plans[0] == plan
    assert c.pick(random.Random(0)) == plan


def test_ddmin_and_trials():
    assert sorted(ddmin(list(range(10)), lambda sub: 3 in sub and 7 in sub)) == [3, 7]
    assert ddmin([1, 2, 3], lambda sub: True) == []
    assert trials_for(1.0) == 1 and trials_for(0.5) == 4 and trials_for(0.0) == 8


def test_minimise_keeps_a_flaky_cause_and_drops_the_noise(tmp_path):
    """A fake QEMU: the bug needs stop and quit on the source and shows half the time."""
    from harness.qemu.spec import MachineSpec
    coin = random.Random(5)

    def fake_attempt(run, base, plan):
        kinds = {(s.kind, s.side) for s in plan.steps}
        late = any(s.at_ms > 500 for s in plan.steps if s.kind == "quit")
        if {("stop", "src"), ("quit", "src")} <= kinds and not late and coin.random() < 0.5:
            return Verdict(VerdictKind.CRASH, "crash SIGABRT: fake")
        return Verdict(VerdictKind.CLEAN, "clean")

    noise = [Step("query-flood", "dst", t, ("query-status", 1, False)) for t in (10, 40, 90, 300)]
    cause = [Step("stop", "src", 200), Step("quit", "src", 400, ("qmp",))]
    plan = ChaosPlan(1, "/migration/precopy/tcp/plain", tuple(noise + cause), 500).with_actions(noise + cause)
    res = minimise(plan, "crash SIGABRT: fake", MachineSpec(binary="q"), tmp_path,
                   budget_s=60, rate_runs=8, attempt=fake_attempt)
    assert res.reproducible and 0 < res.original_rate < 1
    assert sorted(s.kind for s in res.minimal.steps) == ["quit", "stop"], res.log
    assert all(s.at_ms == 0 for s in res.minimal.steps), res.log


def test_a_bare_crash_is_minimised_towards_the_frames_its_first_core_shows(tmp_path):
    """Seen without a core as 'crash SIGSEGV': two SEGV bugs hide behind it. The first
    framed hit fixes which one is minimised; the other stops counting as a hit."""
    from harness.qemu.spec import MachineSpec
    from harness.stress.chaos_command import mark_duplicates

    def fake_attempt(run, base, plan):
        kinds = {s.kind for s in plan.steps}
        if "stop" in kinds:
            return Verdict(VerdictKind.CRASH, "crash SIGSEGV: in f <- g")
        if "quit" in kinds:
            return Verdict(VerdictKind.CRASH, "crash SIGSEGV: in h <- i")
        return Verdict(VerdictKind.CLEAN, "clean")

    steps = [Step("stop", "src", 10), Step("quit", "dst", 20, ("qmp",)), Step("cont", "src", 30)]
    plan = ChaosPlan(1, "/migration/precopy/tcp/plain", tuple(steps), 500)
    res = minimise(plan, "crash SIGSEGV", MachineSpec(binary="q"), tmp_path, budget_s=60,
                   rate_runs=2, attempt=fake_attempt)
    assert res.signature == "crash SIGSEGV: in f <- g", res.log
    assert [s.kind for s in res.minimal.steps] == ["stop"], res.log
    found = mark_duplicates([{"signature": "crash SIGSEGV: in f <- g"}, {"signature": "x"},
                             {"signature": "crash SIGSEGV: in f <- g"}])
    assert found[2]["duplicate_of"] == 0 and "duplicate_of" not in found[0] and "duplicate_of" not in found[1]


def _fake_attempt_dir(tmp_path: Path, boot: Path) -> Path:
    d = tmp_path / "attempt"
    for side in ("source", "destination"):
        (d / side).mkdir(parents=True)
        (d / side / "cmdline.txt").write_text(
            f"/no/such/qemu -chardev socket,id=qmp0,path=/run/x/qmp.sock "
            f"-drive if=none,id=bootdisk,file={boot},format=raw\n")
        (d / side / "outcome.json").write_text(json.dumps({"kind": "crash", "returncode": -6}))
    return d


def test_exported_script_is_self_contained_and_bisect_ready(tmp_path):
    """Runs with python3 -I from an empty dir (nothing of the harness importable); a
    QEMU that cannot start is exit 125 (git bisect run: skip)."""
    from harness.report.chaos_reproducer import export_chaos
    from harness.stress.bases import PLAIN
    boot = tmp_path / "bootblock.bin"
    boot.write_bytes(b"\xeb\xfe" + b"\0" * 508 + b"\x55\xaa")
    plan = ChaosPlan(1, PLAIN.path, (Step("snapshot-load", "src", 400, ("chaos1", 7)),), 500)
    out = export_chaos(plan, "crash SIGABRT: in runstate_set", _fake_attempt_dir(tmp_path, boot),
                       tmp_path / "repro.py", base=PLAIN)
    text = out.read_text()
    assert str(boot) not in text and str(tmp_path) not in text
    assert "'src_args': ['-chardev'," in text and "+400ms src snapshot-load" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    help_ = subprocess.run([sys.executable, "-I", str(out), "--help"], cwd=empty, capture_output=True, text=True)
    assert help_.returncode == 0 and "git bisect run" in " ".join(help_.stdout.split())
    cp = subprocess.run([sys.executable, "-I", str(out), "--qemu", "/bin/false", "--attempts", "2",
                         "--seconds", "60"], cwd=empty, capture_output=True, text=True, timeout=120)
    assert cp.returncode == 125, cp.stdout + cp.stderr
    assert cp.stdout.strip().splitlines()[-1] == "RESULT hits=0 attempts=0 signature=-"


def test_actions_module_is_stdlib_only():
    """Embedded verbatim into reproducers: it may not import harness.* at module level."""
    import harness.runtime.actions as a
    import harness.runtime.standalone as s
    import harness.runtime.fileload as f
    import harness.runtime.colo as c
    import harness.faults.proxy as p
    from harness.report import chaos_reproducer
    embedded = {"harness.runtime.actions", "harness.runtime.standalone", "harness.runtime.fileload",
                "harness.runtime.colo", "harness.faults.proxy"}
    loader = chaos_reproducer.LOADER
    assert all(f'_install("{name}"' in loader for name in embedded - {"harness.runtime.standalone"})
    for mod in (a, s, f, c, p):
        top = [ln for ln in Path(mod.__file__).read_text().splitlines()
               if ln.startswith(("import ", "from ")) and "__future__" not in ln]
        for ln in top:
            name = ln.split()[1]
            assert name in sys.stdlib_module_names or name.split(".")[0] in sys.stdlib_module_names \
                or name in embedded or (ln.startswith("from harness.runtime import") and all(
                    f"harness.runtime.{m.split()[0]}" in embedded for m in ln.split("import", 1)[1].split(","))), ln
    assert set(BY_KIND) == {x.kind for x in ALL} and Param("x", "int")


def test_stray_connection_reaches_unix_and_tcp_listeners(tmp_path):
    """The unix transport's listener is a path: a stray connection must reach it too."""
    import socket as so
    from harness.runtime.actions import StrayConnection

    class Env:
        def __init__(self, addr):
            self.addr, self.held = addr, []

        def listener(self, channel):
            return self.addr

        def hold(self, s):
            self.held.append(s)

    path = str(tmp_path / "mig.sock")
    u = so.socket(so.AF_UNIX)
    u.bind(path)
    u.listen(1)
    t = so.socket()
    t.bind(("127.0.0.1", 0))
    t.listen(1)
    for addr in (path, t.getsockname()):
        env = Env(addr)
        outcome, words = StrayConnection().apply(env, "dst", ("main", "garbage", "00ff"))
        assert outcome == "sent" and len(env.held) == 1, words
        env.held[0].close()
    u.close()
    t.close()


# ---------------------------------------------------------------- file bases, guests, families
def test_file_and_mapped_ram_scenarios_are_bases():
    from harness.stress import bases
    got = {b.path: b for b in bases.eligible(("file",))}
    assert {"/migration/precopy/file", "/migration/precopy/file/offset",
            "/migration/precopy/file/mapped-ram/live", "/migration/multifd/file/mapped-ram"} <= set(got)
    assert all(b.file for b in got.values())
    assert got["/migration/precopy/file/offset"].file_offset == 0x20
    assert not got["/migration/precopy/file"].live and got["/migration/precopy/file/mapped-ram/live"].live
    mr = got["/migration/multifd/file/mapped-ram"]
    assert dict(mr.caps) == {"events": True, "mapped-ram": True, "multifd": True} and mr.multifd
    # add-fd hands over descriptors opened here; a string offset is for QEMU to refuse
    assert "/migration/precopy/file/offset/fdset" not in got and "/migration/precopy/file/offset/bad" not in got
    assert set(b.path for b in bases.eligible(("mapped-ram",))) < set(got)
    assert not any(b.file for b in bases.eligible(("tls",)))


def test_colo_is_a_base_where_the_probe_passes_and_says_why_once_where_not():
    """COLO eligibility is the binaries' (a probe: the pair must enter 'colo'), not a version's."""
    from harness.migration.scenario import Flow
    from harness.qemu.spec import SpecError
    from harness.stress import bases
    colo = bases.eligible(("colo",))                 # no check: every COLO scenario is a candidate
    assert colo and all(b.colo and b.checkpoint_delay_ms > 0 for b in colo)
    never = "a COLO pair of these binaries never enters 'colo' (primary: setup -> active -> device -> completed)"

    def check(s):
        return never if s.flow is Flow.COLO else None
    why = bases.skipped(("colo", "precopy"), check, version=(10, 0, 2))
    assert set(why) == {"colo"} and why["colo"].startswith(never), why
    assert "QEMU 10.0.2 has the known bug 'COLO: the primary's migration ends 'completed'" in why["colo"]
    assert "known bug" not in bases.skipped(("colo",), check, version=(11, 1, 3))["colo"]
    with pytest.raises(SpecError, match=r"no catalog scenario of colo can run under chaos on these binaries "
                                        r"\(colo: a COLO pair of these binaries never enters 'colo'"):
        bases.eligible(("colo",), check=check)


def test_colo_plans_draw_failover_actions_and_the_colo_trigger(surface):
    plain = DrawContext(surface=surface, snapshots=True, hotplug=True)
    import dataclasses      # the sample schema is the migration subset: add the COLO command
    colo = DrawContext(surface=dataclasses.replace(surface, commands=surface.commands | {"x-colo-lost-heartbeat"}),
                       colo=True)
    kinds = {s.kind for s in generate(random.Random(5), colo, 400, 500)}
    assert {"colo-lost-heartbeat", "colo-teardown"} <= kinds
    assert not {"snapshot-save", "device"} & kinds
    assert "colo-teardown" not in {s.kind for s in generate(random.Random(5), plain, 400, 500)}
    assert any(s.on and s.on.endswith(":colo") for s in generate(random.Random(6), colo, 400, 500))
    assert not any(s.on and s.on.endswith(":colo") for s in generate(random.Random(6), plain, 400, 500))


def test_plans_record_their_guest_and_linux_is_drawn_now_and_then():
    from harness.stress import guests
    plan = ChaosPlan(3, "/migration/precopy/file", (Step("cont", "src", 10),), 100, "linux")
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["guest"] == "linux" and ChaosPlan.from_dict(d) == plan
    assert "guest" not in ChaosPlan(3, "/x", (), 100).to_dict()      # old plan files stay as they were
    with pytest.raises(PlanError, match="plan: guest must be one of bootblock, linux, got 'windows'"):
        ChaosPlan.from_dict(dict(d, guest="windows"))
    drawn = [guests.draw(seed, True) for seed in range(2000)]
    assert drawn == [guests.draw(seed, True) for seed in range(2000)]        # from the seed alone
    assert 50 < drawn.count("linux") < 160, drawn.count("linux")
    assert {guests.draw(seed, False) for seed in range(200)} == {"bootblock"}
    assert guests.spec("linux")[0].kind.value == "linux" and guests.spec("bootblock", paced=False)[1] >= 128
    assert guests.spec("bootblock")[0].paced_rom and not guests.spec("bootblock", paced=False)[0].paced_rom


class _FileEnv:
    """FileLoad's Env: QMP replies from dicts; records what was sent."""

    def __init__(self, src_caps=None, dst_caps=None, incoming=None):
        self.caps = {"src": src_caps or {"mapped-ram": True}, "dst": dst_caps or {"mapped-ram": True}}
        self.incoming = incoming or {"return": {}}
        self.sent = []

    def qmp(self, side, command, args, timeout, oob):
        self.sent.append((side, command, args))
        if command == "query-migrate-capabilities":
            return {"return": [{"capability": k, "state": v} for k, v in self.caps[side].items()]}
        if command == "query-migrate-parameters":
            return {"return": {"multifd-compression": "none"}}
        return self.incoming


def test_file_load_starts_once_after_the_save_and_names_what_spoils_it():
    from harness.runtime.fileload import FileLoad, file_uri
    uri = file_uri("/r/migration.bin", 0x20)
    assert uri == "file:/r/migration.bin,offset=0x20" and file_uri("/p", None) == "file:/p"
    env = _FileEnv()
    ld = FileLoad(uri)
    ld.tick(env, ["setup", "active"])
    assert not ld.started and ld.excuse() is None
    ld.tick(env, ["setup", "active", "STOP", "completed"])
    ld.tick(env, ["setup", "active", "STOP", "completed"])
    assert [c for c in env.sent if c[1] == "migrate-incoming"] == [("dst", "migrate-incoming", {"uri": uri})]
    assert ld.excuse() is None                                   # a clean load is judged
    ld.step_applied("dst", "query-flood", ("query-status", 4, False), "sent")
    ld.step_applied("dst", "cancel", (), "refused:GenericError")
    assert ld.excuse() is None
    ld.step_applied("dst", "cancel", (), "ok")
    assert ld.excuse() == "the plan ended the load (cancel on the destination)"

    def excuse(env=None, seq=("setup", "completed"), steps=()):
        ld = FileLoad("file:/f")
        ld.tick(env or _FileEnv(), list(seq))
        for st in steps:
            ld.step_applied(*st)
        return ld.excuse()
    assert excuse(seq=("setup", "completed", "setup")) == \
        "the source migrated again after the save (the file was rewritten)"
    assert excuse(seq=("setup", "completed", "RESUME")).startswith("the source took the shared disk back")
    assert excuse(steps=[("src", "block-activate", (True,), "ok")]) == \
        "the source took the shared disk back after the save (block-activate on the source)"
    assert excuse(steps=[("src", "hmp", ("info status",), "ok")]) is None
    assert excuse(steps=[("src", "hmp", ("savevm chaos",), "ok")]) is not None
    assert excuse(_FileEnv(dst_caps={"mapped-ram": False})) == \
        "the sides' stream settings differed when the load began (mapped-ram: source True, destination False)"
    refused = _FileEnv(incoming={"error": {"class": "GenericError", "desc": "already started"}})
    assert excuse(refused) == "load not started: migrate-incoming refused: already started"


def test_exported_file_plan_carries_the_load(tmp_path):
    from harness.report.chaos_reproducer import LINUX_NOTE, export_chaos
    from harness.stress import bases
    base = {b.path: b for b in bases.eligible(("file",))}["/migration/precopy/file/offset"]
    boot = tmp_path / "bootblock.bin"
    boot.write_bytes(b"\xeb\xfe" + b"\0" * 508 + b"\x55\xaa")
    plan = ChaosPlan(1, base.path, (Step("freeze", "dst", 0, (), on="dst:active"),), 300)
    out = export_chaos(plan, "hang: dst does not answer query-status", _fake_attempt_dir(tmp_path, boot),
                       tmp_path / "repro.py", base=base, guest_note=LINUX_NOTE)
    text = out.read_text()
    assert "'transport': 'file'" in text and "'live': False" in text and "'file_offset': 32" in text
    assert "FILELOAD_SOURCE" in text and "dst:active+0ms dst freeze" in text
    assert "Guest:     boot sector (seen with the Linux guest;" in text
    assert "'hold': {'max-bandwidth': 1000000000" in text      # the save must end for the load to begin


def test_a_bare_crash_signature_matches_the_same_crash_with_frames():
    from harness.stress.minimise import same_violation
    assert same_violation("crash SIGSEGV", "crash SIGSEGV: in multifd_send_sync_main <- qemu_savevm_state_setup")
    assert same_violation("hang: dst does not answer query-status", "hang: dst does not answer query-status")
    assert not same_violation("crash SIGSEGV", "crash SIGABRT: in abort <- g")
    assert not same_violation("crash SIGSEGV: in f <- g", "crash SIGSEGV: in h <- i")
    assert not same_violation("crash SIGSEGV", "lost-vm: source completed, destination failed to load")
