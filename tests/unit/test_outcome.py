"""Exit classification and crash-evidence parsing, on recorded samples (no QEMU)."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from harness.qemu import debug
from harness.qemu.outcome import (
    Frame,
    Outcome,
    OutcomeKind,
    classify,
    crash_lines,
    crashing_thread_frames,
    crashing_thread_stack,
    gdb_signal_name,
    normalize_assertion,
    normalize_returncode,
    parse_assertion,
    parse_gdb_threads,
    signal_name,
    top_frames,
)

SAMPLES = Path(__file__).parent / "samples"
ABRT, SEGV = -signal.SIGABRT, -signal.SIGSEGV
SEED = "migrate_mode: Assertion 'mode >= 0 && mode < MIG_MODE__MAX' failed"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


# ---------------------------------------------------------------- assertions


def test_parse_glibc_assertion_keeps_raw_line():
    line = parse_assertion(sample("glibc_assert.stderr"))
    assert line == (
        "qemu-system-x86_64: ../migration/options.c:855: migrate_mode: "
        "Assertion `mode >= 0 && mode < MIG_MODE__MAX' failed."
    )
    assert normalize_assertion(line) == SEED


def test_normalized_assertion_ignores_program_path_and_line():
    a = "/home/dev/qemu/build/qemu-system-x86_64: ../migration/options.c:901: migrate_mode: Assertion `mode >= 0 && mode < MIG_MODE__MAX' failed."
    b = "qemu-system-x86_64: ../migration/options.c:855: migrate_mode: Assertion `mode >= 0 && mode < MIG_MODE__MAX' failed."
    assert normalize_assertion(a) == normalize_assertion(b) == SEED
    # the recorded one from a real glibc abort
    assert normalize_assertion(parse_assertion(sample("fake_assert_thread.stderr"))) == SEED


def test_parse_assertion_expression_with_colons_and_quotes():
    line = ("qemu-system-x86_64: ../util/qemu-thread-posix.c:92: qemu_mutex_lock_impl: "
            "Assertion `mutex->initialized && (x ? a : b)' failed.")
    assert parse_assertion("noise\n" + line + "\n") == line
    assert normalize_assertion(line) == (
        "qemu_mutex_lock_impl: Assertion 'mutex->initialized && (x ? a : b)' failed")


def test_parse_glib_assertion_prefers_error_line_over_bail_out():
    s = sample("gassert.stderr")
    line = parse_assertion(s)
    assert line.startswith("ERROR:../migration/ram.c:2218:ram_save_host_page")
    assert normalize_assertion(line) == (
        "ram_save_host_page: assertion failed: (pss->host_page_start <= pss->page)")
    only_bail = "\n".join(ln for ln in s.splitlines() if ln.startswith("Bail out!"))
    assert normalize_assertion(parse_assertion(only_bail)) == normalize_assertion(line)


def test_parse_glib_not_reached():
    line = parse_assertion(sample("gassert_not_reached.stderr"))
    assert normalize_assertion(line) == "migrate_fd_cleanup: code should not be reached"


@pytest.mark.parametrize("name", ["bind_error.stderr", "machine_type_mismatch.stderr",
                                  "terminating.stderr", "clean.stderr", "g_error.stderr"])
def test_no_assertion(name):
    assert parse_assertion(sample(name)) is None


def test_crash_lines():
    assert crash_lines(sample("glibc_assert.stderr")) == (sample("glibc_assert.stderr").splitlines()[1],)
    assert len(crash_lines(sample("gassert.stderr"))) == 2  # ERROR: + Bail out!
    assert crash_lines(sample("g_error.stderr"))[0].endswith("Too many open files")
    ea = crash_lines(sample("error_abort.stderr"))
    assert ea[0].startswith("Unexpected error in object_property_find_err()") and "not found" in ea[1]
    asan = crash_lines(sample("asan.stderr"))
    assert asan[0].startswith("==48213==ERROR: AddressSanitizer: heap-use-after-free")
    assert asan[-1].startswith("SUMMARY: AddressSanitizer")
    assert crash_lines(sample("shell_segv.stderr"))
    for name in ("bind_error.stderr", "machine_type_mismatch.stderr", "terminating.stderr", "clean.stderr"):
        assert crash_lines(sample(name)) == (), name
    # QEMU's own words are not a shell's job message
    assert crash_lines("qemu-system-x86_64: migration Aborted by user\n") == ()
    assert crash_lines("qemu: fatal: Trying to execute code outside RAM or ROM at 0x00000000000a0000\n")
    # runstate_set() prints this, then aborts (seen by chaos: loadvm during a migration)
    line = "qemu-system-x86_64: invalid runstate transition: 'restore-vm' -> 'finish-migrate'"
    assert crash_lines("qemu-system-x86_64: load of migration failed: Invalid argument\n" + line + "\n") == (line,)


# ---------------------------------------------------------------- gdb parsing


def test_crashing_thread_from_markers_non_main_thread():
    bt = sample("fake_assert_thread.gdb")
    assert gdb_signal_name(bt) == "SIGABRT"
    frames = crashing_thread_frames(bt)
    assert frames[:6] == ("__pthread_kill_implementation", "__pthread_kill_internal", "__GI_raise",
                          "__GI_abort", "__assert_fail_base", "__GI___assert_fail")
    assert "migrate_mode" in frames and "main" not in frames
    assert top_frames(crashing_thread_stack(bt)) == (
        "migrate_mode", "qmp_query_migrate", "??", "monitor_cleanup", "iothread_run")
    threads = parse_gdb_threads(bt)
    assert sorted(threads) == [1, 2, 3]
    assert [f.func for f in threads[3]] == ["__libc_pause", "main"]


def test_crashing_thread_without_markers_uses_current_thread():
    bt = sample("gassert.gdb")
    assert crashing_thread_frames(bt)[0] == "__pthread_kill_implementation"
    # libglib's assertion machinery and the "?? () from libglib" frame are skipped
    assert top_frames(crashing_thread_stack(bt))[:3] == (
        "ram_save_host_page", "ram_find_and_save_block", "ram_save_iterate")
    # without [Current thread]: the lowest-numbered thread (for a core, the one that dumped)
    no_current = "\n".join(ln for ln in bt.splitlines() if not ln.startswith("[Current thread"))
    assert crashing_thread_frames(no_current)[0] == "__pthread_kill_implementation"
    # just "thread apply all bt" of a live process: thread 1 is the main thread
    assert crashing_thread_frames(sample("qemu_stopped_pid.gdb"))[-1] == "main"


def test_segv_in_libc_called_from_qemu():
    bt = sample("fake_segv_strlen.gdb")
    assert crashing_thread_frames(bt)[0] == "__strlen_evex"
    assert top_frames(crashing_thread_stack(bt))[:2] == ("qmp_query_migrate", "??")


def test_frames_after_signal_handler():
    bt = sample("signal_handler.gdb")
    assert top_frames(crashing_thread_stack(bt)) == (
        "qemu_put_buffer_async", "save_normal_page", "qemu_thread_start")


def test_stripped_debian_qemu_frames():
    bt = sample("qemu_sigsegv_idle.gdb")
    assert gdb_signal_name(bt) == "SIGSEGV"
    assert crashing_thread_frames(bt) == (
        "__ppoll", "qemu_poll_ns", "main_loop_wait", "qemu_main_loop", "??", "main")
    assert top_frames(crashing_thread_stack(bt)) == (
        "qemu_poll_ns", "main_loop_wait", "qemu_main_loop", "??", "main")


def test_live_pid_backtrace_threads():
    bt = sample("qemu_stopped_pid.gdb")
    threads = parse_gdb_threads(bt)
    assert len(threads) >= 3 and all(threads.values())
    assert gdb_signal_name(bt) is None


@pytest.mark.parametrize("line,func,loc", [
    ("#3  0x000055d0c3b1e0f4 in ?? ()", "??", ""),
    ("#1  0x00007f1e34a64472 in __GI_abort () at ./stdlib/abort.c:79", "__GI_abort", "at ./stdlib/abort.c:79"),
    ("#4  0x00007f1e34d2aa04 in ?? () from /lib/x86_64-linux-gnu/libglib-2.0.so.0", "??",
     "from /lib/x86_64-linux-gnu/libglib-2.0.so.0"),
    ("#0  __futex_abstimed_wait_common64 (private=0, cancel=true) at ./nptl/futex-internal.c:57",
     "__futex_abstimed_wait_common64", "at ./nptl/futex-internal.c:57"),
    ("#2  qemu_event_wait (ev=ev@entry=0x5601f6b0e5a8 <rcu_call_ready_event>) at ../util/qemu-thread-posix.c:465",
     "qemu_event_wait", "at ../util/qemu-thread-posix.c:465"),
    ("#5  0x1 in f (s=0x2 \"a (b) c\") at x.c:1", "f", "at x.c:1"),
    ("#3  <signal handler called>", "<signal handler called>", ""),
])
def test_frame_line_forms(line, func, loc):
    assert crashing_thread_stack(line) == [Frame(func, loc)]


def test_top_frames_all_library_falls_back():
    frames = [Frame("__GI_abort", "at ./stdlib/abort.c:79"),
              Frame("g_main_context_dispatch", "from /lib/x86_64-linux-gnu/libglib-2.0.so.0"),
              Frame("start_thread", "at ./nptl/pthread_create.c:442")]
    assert top_frames(frames) == ("g_main_context_dispatch",)


# ---------------------------------------------------------------- classify


def test_classify_seed_assertion():
    bt = sample("fake_assert_thread.gdb")
    out = classify(ABRT, sample("glibc_assert.stderr"), core=Path("/run/x/core"), backtrace=bt,
                   artifact_dir=Path("/art/t1"))
    assert out.kind is OutcomeKind.CRASH
    assert out.signal_name == "SIGABRT"
    assert out.assertion.endswith("failed.")
    assert out.signature == "crash SIGABRT: " + SEED
    assert out.top_frames[0] == "migrate_mode"
    assert not out.ok and not out.expected
    msg = out.failure_message()
    lines = msg.splitlines()
    assert lines[0] == out.signature
    assert lines[1] == "artifacts: /art/t1"
    assert "core: /run/x/core" in msg
    assert "frames: migrate_mode <- qmp_query_migrate" in msg
    assert "Assertion `mode" in msg  # raw line kept


def test_classify_assertion_signature_stable_across_runs():
    a = classify(ABRT, sample("glibc_assert.stderr"))
    b = classify(ABRT, sample("fake_assert_thread.stderr"), backtrace=sample("fake_assert_thread.gdb"))
    assert a.signature == b.signature


def test_classify_glib_assert():
    out = classify(ABRT, sample("gassert.stderr"), backtrace=sample("gassert.gdb"))
    assert out.kind is OutcomeKind.CRASH
    assert out.signature == ("crash SIGABRT: ram_save_host_page: assertion failed: "
                             "(pss->host_page_start <= pss->page)")
    assert out.top_frames[0] == "ram_save_host_page"


def test_classify_segv_without_text_uses_frames():
    out = classify(SEGV, "", backtrace=sample("fake_segv_strlen.gdb"))
    assert out.kind is OutcomeKind.CRASH
    assert out.signature == "crash SIGSEGV: in qmp_query_migrate <- monitor_cleanup"
    bare = classify(SEGV, "")
    assert bare.kind is OutcomeKind.CRASH and bare.signature == "crash SIGSEGV"


def test_classify_g_error_and_error_abort():
    g = classify(-signal.SIGTRAP, sample("g_error.stderr"))
    assert g.kind is OutcomeKind.CRASH
    assert g.signature == ("crash SIGTRAP: (qemu-system-x86_64): GLib-ERROR **: "
                           "Creating pipes for GWakeup: Too many open files")
    e = classify(ABRT, sample("error_abort.stderr"))
    assert e.signature == ("crash SIGABRT: Unexpected error in object_property_find_err(): "
                           "Property 'migration.x-preempt-pre-7-2' not found")


def test_classify_asan_exit_1_is_crash():
    out = classify(1, sample("asan.stderr"), expected_returncodes=(0, 1))
    assert out.kind is OutcomeKind.CRASH
    assert out.sanitizer == ("AddressSanitizer", "heap-use-after-free")
    assert out.signal_name is None
    assert out.top_frames[:3] == ("migrate_mode", "fill_source_migration_info", "qmp_query_migrate")
    assert out.signature == "crash ASan heap-use-after-free: in migrate_mode <- fill_source_migration_info"
    lsan = classify(1, sample("lsan.stderr"))
    assert lsan.kind is OutcomeKind.CRASH
    assert lsan.signature == "crash LSan memory leak: in multifd_send_setup"


def test_classify_ubsan():
    s = "../migration/ram.c:881:13: runtime error: load of misaligned address 0x55d0c3b1e0f5 for type 'uint64_t'\n"
    out = classify(ABRT, s)
    assert out.kind is OutcomeKind.CRASH
    assert out.signature == "crash UBSan misaligned-access"


def test_classify_shell_reported_segv():
    out = classify(139, sample("shell_segv.stderr"))
    assert out.kind is OutcomeKind.CRASH and out.signal_name == "SIGSEGV"
    assert out.signature == "crash SIGSEGV"
    assert normalize_returncode(139) == -11 and normalize_returncode(1) == 1
    assert normalize_returncode(139, from_shell=False) == 139


def test_classify_error_exit():
    out = classify(1, sample("bind_error.stderr"))
    assert out.kind is OutcomeKind.ERROR
    assert out.signature == "error exit 1: -incoming tcp:127.0.0.1:N: Failed to bind socket: Address already in use"
    assert "expected 0" in out.detail
    msg = out.failure_message()
    assert msg.startswith(out.signature + "\nartifacts: (none)")
    assert "Failed to bind socket" in msg


def test_classify_expected_error():
    s = sample("machine_type_mismatch.stderr")
    out = classify(1, s, expected_returncodes=(1,), expected_stderr_regex=r"Machine type received is")
    assert out.kind is OutcomeKind.EXPECTED_ERROR and out.ok and out.expected
    assert out.signature == "expected error exit 1: load of migration failed: Invalid argument"
    # right code, wrong message -> ERROR
    wrong = classify(1, s, expected_returncodes=(1,), expected_stderr_regex=re.compile("Failed to bind"))
    assert wrong.kind is OutcomeKind.ERROR and "did not match" in wrong.detail
    # declared-expected failure that exited cleanly
    cl = classify(0, "", expected_returncodes=(1,))
    assert cl.kind is OutcomeKind.UNEXPECTED_CLEAN and not cl.ok


def test_classify_clean():
    out = classify(0, sample("clean.stderr"))
    assert out.kind is OutcomeKind.CLEAN and out.ok and out.signature == "clean exit"
    term = classify(0, sample("terminating.stderr"))
    assert term.kind is OutcomeKind.CLEAN and "terminating on signal 15" in term.detail


def test_classify_killed_and_expected_kill():
    k = classify(-signal.SIGKILL, "")
    assert k.kind is OutcomeKind.KILLED and k.signature == "killed SIGKILL" and not k.ok
    e = classify(-signal.SIGKILL, "", expected_returncodes=(0, -signal.SIGKILL))
    assert e.kind is OutcomeKind.EXPECTED_ERROR and e.ok
    # an expected kill with an assertion on stderr is still a crash
    c = classify(ABRT, sample("glibc_assert.stderr"), expected_returncodes=(ABRT,))
    assert c.kind is OutcomeKind.CRASH


def test_classify_hang_and_running():
    bt = sample("qemu_stopped_pid.gdb")
    h = classify(-signal.SIGKILL, "", hang="migration did not complete within 60 s", backtrace=bt,
                 artifact_dir="/art/t2")
    assert h.kind is OutcomeKind.HANG
    assert h.signature == "hang: migration did not complete within 60 s"
    assert h.failure_message().startswith(h.signature + "\nartifacts: /art/t2")
    assert h.top_frames == ()
    r = classify(None, "")
    assert r.kind is OutcomeKind.RUNNING


def test_signature_normalises_run_specific_text():
    a = classify(1, "qemu-system-x86_64: Failed to connect to '/tmp/harness-ab12/dst/mig.sock': No such file or directory\n")
    b = classify(1, "/usr/local/bin/qemu-system-x86_64: Failed to connect to '/tmp/harness-zz99/dst/mig.sock': No such file or directory\n")
    assert a.signature == b.signature == (
        "error exit 1: Failed to connect to '.../mig.sock': No such file or directory")


def test_outcome_is_frozen_and_signal_names():
    out = classify(0, "")
    with pytest.raises(Exception):
        out.kind = OutcomeKind.CRASH  # type: ignore[misc]
    assert isinstance(out, Outcome)
    assert signal_name(6) == "SIGABRT" and signal_name(99) == "SIG99"


# ---------------------------------------------------------------- debug.py, no QEMU


@pytest.mark.parametrize("pattern,uses_pid,expected", [
    ("core", False, "/run/m1/core"),
    ("core", True, "/run/m1/core.4242"),
    ("core.%p", True, "/run/m1/core.4242"),
    ("/var/crash/core.%e.%p.%t", False, "/var/crash/core.*.4242.*"),
    ("/cores/%f-%P-%%", False, "/cores/qemu-system-x86_64-4242-%"),
    ("cores/core-%s-%e", False, "/run/m1/cores/core-*-*"),
])
def test_core_path_glob(pattern, uses_pid, expected):
    g = debug.core_path_glob(pattern, uses_pid=uses_pid, cwd="/run/m1", pid=4242,
                             exe="/usr/bin/qemu-system-x86_64")
    assert g.replace("'", "") == expected


def test_core_path_glob_quotes_spaces_and_pipe_is_none():
    g = debug.core_path_glob("core", uses_pid=False, cwd="/tmp/a b", pid=1, exe="q")
    assert g == "'/tmp/a b/core'"
    assert debug.core_path_glob("|/usr/lib/systemd/systemd-coredump %P %u", uses_pid=False,
                                cwd="/x", pid=1, exe="q") is None


class FakeRun:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, argv, timeout):
        assert timeout > 0
        self.calls.append(argv)
        for match, reply in self.answers:
            if match in " ".join(argv):
                return reply
        return 127, "", "not found"


def test_search_core_pipe_to_apport_is_a_note():
    run = FakeRun([("core_pattern", (0, "|/usr/share/apport/apport -p%p -s%s -c%c\n0\n", ""))])
    found = debug.search_core("/run/m1", 42, "qemu", run=run)
    assert found.path is None
    assert found.note == "core piped to /usr/share/apport/apport, not collected"


def test_search_core_systemd_coredump_via_coredumpctl():
    run = FakeRun([("core_pattern", (0, "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h\n0\n", "")),
                   ("coredumpctl", (0, "", ""))])
    found = debug.search_core("/run/m1", 42, "qemu", run=run)
    assert found.path == Path("/run/m1/core.42")
    assert run.calls[-1][:5] == ["coredumpctl", "--no-pager", "--quiet", "dump", "42"]
    run = FakeRun([("core_pattern", (0, "|/usr/lib/systemd/systemd-coredump %P\n0\n", ""))])
    found = debug.search_core("/run/m1", 42, "qemu", run=run)
    assert found.path is None and "no coredumpctl" in found.note


def test_search_core_waits_for_stable_size(tmp_path):
    sizes = iter([100, 200, 300, 300])

    def run(argv, timeout):
        if "core_pattern" in " ".join(argv):
            return 0, "core\n1\n", ""
        size = next(sizes)
        return 0, f"{size} 8 {time.time():.3f} {tmp_path}/core.42\n", ""

    found = debug.search_core(tmp_path, 42, "qemu", run=run)
    assert found.path == tmp_path / "core.42" and found.size == 300


def test_search_core_real_files(tmp_path):
    """The default (local) runner, on real files: stale cores are ignored."""
    (tmp_path / "core").write_bytes(b"\0" * 4096)
    assert debug.find_core(tmp_path, 42, "qemu", since=time.time() + 60) is None
    found = debug.search_core(tmp_path, 42, "qemu", since=time.time() - 5, core_pattern=("core", False))
    assert found.path == tmp_path / "core" and found.size == 4096
    t = time.monotonic()
    missing = debug.search_core(tmp_path / "nope", 42, "qemu", core_pattern=("core", False))
    assert missing.path is None and "core_pattern 'core'" in missing.note
    assert time.monotonic() - t < 3


def test_local_run_timeout_and_missing():
    t = time.monotonic()
    rc, out, err = debug.local_run(["sh", "-c", "echo hi; sleep 30"], 0.5)
    assert rc == debug.TIMEOUT_RC and out == "hi\n" and "timed out" in err
    assert time.monotonic() - t < 5
    assert debug.local_run(["/nonexistent/gdb"], 1)[0] == 127


def test_gdb_helpers_with_fake_runner():
    seen = {}

    def run(argv, timeout):
        seen["argv"], seen["timeout"] = argv, timeout
        return 0, sample("fake_assert_thread.gdb"), ""

    bt = debug.backtrace_from_core("/usr/bin/qemu-system-x86_64", "/run/core", timeout=7, run=run)
    assert seen["timeout"] == 7
    assert seen["argv"][0] == "gdb" and seen["argv"][-2:] == ["/usr/bin/qemu-system-x86_64", "/run/core"]
    assert "thread apply all bt" in seen["argv"] and "-batch" in seen["argv"]
    assert debug.crashing_thread_frames(bt)[6] == "migrate_mode"
    debug.backtrace_of_pid(1234, timeout=3, run=run)
    assert seen["argv"][-2:] == ["-p", "1234"]
    # failures are text, not exceptions
    t = debug.backtrace_of_pid(1, run=lambda a, t: (124, "", "gdb hung"))
    assert "timed out" in t
    t = debug.backtrace_from_core("q", "c", run=lambda a, t: (127, "", "gdb: not found"))
    assert "gdb not available" in t


def test_debug_build_frames_carry_file_and_line():
    out = classify(ABRT, sample("gassert.stderr"), backtrace=sample("gassert.gdb"))
    locs = out.top_locations()
    assert locs and all("(" in x and ".c:" in x for x in locs[:2]), locs
    assert "frames: " + " <- ".join(out.top_locations(8)) in out.failure_message()
    stripped = classify(ABRT, "", backtrace=sample("qemu_sigabrt_idle.gdb"))
    assert stripped.top_locations() == ()  # Debian's build: names only
    asan = classify(1, sample("asan.stderr"))
    assert asan.top_locations()[:2] == ("migrate_mode (options.c:855)", "fill_source_migration_info (migration.c:1180)")
