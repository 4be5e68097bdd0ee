"""Each sanitizer rule on a recorded report (tests/unit/samples/sanitizer/, see its README)."""
from pathlib import Path

import pytest

from harness.qemu import sanitizer
from harness.qemu.outcome import OutcomeKind, classify
from harness.stress import known_bugs

SAMPLES = Path(__file__).parent / "samples" / "sanitizer"
ABRT = -6


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


# sample, rule, tool, kind, access top frames, free top frames, alloc top frames
CASES = [
    ("uaf.stderr", "asan-memory-access", "AddressSanitizer", "heap-use-after-free",
     ("obj_mode", "fill_info", "main"), ("obj_unref", "main"), ("obj_new", "main")),
    ("overflow.stderr", "asan-memory-access", "AddressSanitizer", "heap-buffer-overflow",
     ("main",), (), ("main",)),
    ("double-free.stderr", "asan-double-free", "AddressSanitizer", "double-free",
     ("obj_unref", "main"), ("obj_unref", "main"), ("obj_new", "main")),
    ("bad-free.stderr", "asan-bad-free", "AddressSanitizer", "bad-free", ("main",), (), ("main",)),
    ("mismatch.stderr", "asan-alloc-dealloc-mismatch", "AddressSanitizer", "alloc-dealloc-mismatch",
     ("drop", "main"), (), ("main",)),
    ("segv.stderr", "asan-wild-access", "AddressSanitizer", "SEGV on unknown address",
     ("obj_mode", "fill_info", "main"), (), ()),
    ("stack-overflow.stderr", "asan-stack-overflow", "AddressSanitizer", "stack-overflow",
     ("recurse", "recurse"), (), ()),
    ("too-big.stderr", "asan-allocation", "AddressSanitizer", "allocation-size-too-big", ("main",), (), ()),
    ("overlap.stderr", "asan-other", "AddressSanitizer", "memcpy-param-overlap", ("main",), (), ()),
    ("leak.stderr", "lsan-leak", "LeakSanitizer", "memory leak", ("leaky_setup", "main"), (), ()),
    ("tsan.stderr", "tsan", "ThreadSanitizer", "data-race", ("bump", "main"), (), ()),
    ("ubsan-shift.stderr", "ubsan-runtime-error", "UndefinedBehaviorSanitizer", "shift-out-of-bounds",
     ("main",), (), ()),
    ("ubsan-overflow.stderr", "ubsan-runtime-error", "UndefinedBehaviorSanitizer",
     "signed-integer-overflow", ("main",), (), ()),
    ("ubsan-null.stderr", "ubsan-runtime-error", "UndefinedBehaviorSanitizer", "null-pointer-use",
     ("main",), (), ()),
]


def test_every_rule_has_a_sample():
    assert {c[1] for c in CASES} == {r.name for r in sanitizer.RULES}


@pytest.mark.parametrize("name,rule,tool,kind,access,free,alloc", CASES, ids=[c[0] for c in CASES])
def test_rule_on_recorded_sample(name, rule, tool, kind, access, free, alloc):
    r = sanitizer.parse(sample(name))
    assert r is not None
    assert (r.rule, r.tool, r.kind) == (rule, tool, kind)
    assert r.top("access")[:len(access)] == access
    assert r.top("free")[:len(free)] == free and (free or not r.top("free"))
    assert r.top("alloc")[:len(alloc)] == alloc


def test_qemu_seed_race_on_the_asan_build():
    """Recorded from `harness hammer shutdown-race --qemu <ci/qemu-build --asan wrapper>`."""
    r = sanitizer.parse(sample("qemu-uaf.stderr"))
    assert (r.rule, r.kind) == ("asan-memory-access", "heap-use-after-free")
    assert r.top("access", 3) == ("fill_source_migration_info", "qmp_query_migrate", "qmp_marshal_query_migrate")
    assert r.top("free", 4) == ("object_finalize", "object_unref", "migration_shutdown", "qemu_cleanup")
    assert r.top("alloc", 4)[:3] == ("object_new_with_type", "object_new", "migration_object_init")
    assert r.site("free") == "migration_shutdown ../../src/qemu-10.0.2+ds/migration/migration.c:378"
    assert r.site("alloc") == "migration_object_init ../../src/qemu-10.0.2+ds/migration/migration.c:290"
    assert r.site("access") == "fill_source_migration_info ../../src/qemu-10.0.2+ds/migration/migration.c:1305"
    assert "monitor_cleanup" in r.top("access", 10)
    out = classify(ABRT, sample("qemu-uaf.stderr"))
    assert out.signature == "crash ASan heap-use-after-free: in fill_source_migration_info <- qmp_query_migrate"
    assert known_bugs.match(out.signature) is known_bugs.SHUTDOWN_QUERY_OTHER
    seg = classify(ABRT, sample("qemu-segv.stderr"))
    assert seg.signature == "crash ASan SEGV on unknown address: in aio_co_wake <- qmp_dispatcher_co_wake"
    assert known_bugs.match(seg.signature) is known_bugs.SHUTDOWN_OOB_DISPATCHER_WAKE
    unsymbolised = sanitizer.parse(sample("qemu-segv.stderr")).access[14]
    assert unsymbolised == sanitizer.StackFrame("??", "(/lib/x86_64-linux-gnu/libglib-2.0.so.0+0x54a17)")


def test_use_free_alloc_sites_carry_file_and_line():
    r = sanitizer.parse(sample("uaf.stderr"))
    assert r.access_op.startswith("READ of size 4")
    assert r.site("access") == "obj_mode /tmp/sanrec/san.c:11"
    assert r.site("free") == "obj_unref /tmp/sanrec/san.c:10"
    assert r.site("alloc") == "obj_new /tmp/sanrec/san.c:9"
    assert r.summary.startswith("SUMMARY: AddressSanitizer: heap-use-after-free")
    text = sanitizer.report_text(sample("uaf.stderr"))
    assert "# free site: obj_unref /tmp/sanrec/san.c:10" in text
    assert "previously allocated by thread T0 here:" in text and "Shadow bytes" not in text


def test_outcome_signature_is_kind_plus_normalised_top_frames():
    out = classify(ABRT, sample("uaf.stderr"))
    assert out.kind is OutcomeKind.CRASH and out.sanitizer == ("AddressSanitizer", "heap-use-after-free")
    assert out.signature == "crash ASan heap-use-after-free: in obj_mode <- fill_info"
    assert out.to_dict()["sanitizer"]["free_site"] == "obj_unref /tmp/sanrec/san.c:10"
    segv = classify(ABRT, sample("segv.stderr"))
    assert segv.signature == "crash ASan SEGV on unknown address: in obj_mode <- fill_info"


def test_ubsan_report_with_exit_0_is_still_a_crash():
    out = classify(0, "some output\n" + sample("ubsan-shift.stderr"))
    assert out.kind is OutcomeKind.CRASH
    assert out.signature == "crash UBSan shift-out-of-bounds: in main"


def test_ubsan_prints_many_reports():
    reports = sanitizer.parse_all(sample("ubsan-shift.stderr") + sample("ubsan-overflow.stderr"))
    assert [r.kind for r in reports] == ["shift-out-of-bounds", "signed-integer-overflow"]


def test_clone_suffixes_group_as_one_function():
    assert sanitizer.normalize_func("fill_source_migration_info.isra.0") == "fill_source_migration_info"
    assert sanitizer.normalize_func("qmp_query_migrate.constprop.2.cold") == "qmp_query_migrate"
    a = "    #0 0x1 in f.part.0 /x.c:1\n    #1 0x2 in g /x.c:2\n"
    b = "    #0 0x1 in f /x.c:3\n    #1 0x2 in g.isra.1 /x.c:4\n"
    head = "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1 at pc 0x1 bp 0x1 sp 0x1\n"
    assert classify(ABRT, head + a).signature == classify(ABRT, head + b).signature


def test_child_env_defaults_never_override():
    assert sanitizer.child_env({}, {})["ASAN_OPTIONS"].startswith("fast_unwind_on_malloc=0")
    assert "ASAN_OPTIONS" not in sanitizer.child_env({"ASAN_OPTIONS": "x=1"}, {})
    assert "UBSAN_OPTIONS" not in sanitizer.child_env({}, {"UBSAN_OPTIONS": "y=1"})


def test_no_report_in_plain_stderr():
    assert sanitizer.parse("qemu-system-x86_64: terminating on signal 15 from pid 1\n") is None


def test_qemu_build_wrapper_defaults_match_the_harness():
    """ci/qemu-build's wrapper sets the same sanitizer defaults the harness gives QEMU."""
    import re
    text = (Path(__file__).resolve().parents[2] / "ci" / "qemu-build").read_text()
    asan = "".join(re.findall(r'"([^"]*)"', text.split("ASAN_DEFAULTS = (", 1)[1].split(")", 1)[0]))
    ubsan = re.search(r'UBSAN_DEFAULTS = "([^"]*)"', text).group(1)
    assert asan == sanitizer.CHILD_ENV["ASAN_OPTIONS"]
    assert ubsan == sanitizer.CHILD_ENV["UBSAN_OPTIONS"]
