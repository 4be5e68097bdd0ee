"""The reproducer contract: RESULT line, exit codes for `git bisect run`, a self-contained
script that runs with `python3 -I` in an empty dir and a clean environment; `harness repro`
(the differential table) over it. QEMU is a stub that crashes on demand
(tests/unit/stubs/qemu-system-x86_64)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.report import repro_contract as rc
from harness.report.reproducer import ExportInfo, export_shutdown_race, match_regex

STUB = Path(__file__).parent / "stubs" / "qemu-system-x86_64"
SIG = "crash SIGABRT: migrate_mode: Assertion 'mode >= 0 && mode < MIG_MODE__MAX' failed"
VARIANT = {"method": "sigterm", "state": "idle", "monitors": 2, "flood": 8, "commands": ["query-migrate"]}


def test_parse_result_checks_exit_code_against_counts():
    assert rc.parse_result("x\nRESULT hits=3 attempts=10 signature=crash SIGABRT: f\n", 1) == \
        rc.Result(3, 10, "crash SIGABRT: f", 1)
    assert rc.parse_result("RESULT hits=0 attempts=10 signature=-", 0).verdict == "good"
    assert rc.parse_result("RESULT hits=0 attempts=0 signature=-", 125).verdict == "skip"
    for out, code in (("RESULT hits=1 attempts=2 signature=x", 0), ("no result", 0),
                      ("RESULT hits=0 attempts=0 signature=-", 0), ("RESULT hits=3 attempts=2 signature=x", 1),
                      ("RESULT hits=0 attempts=5 signature=-\nextra line", 0)):
        with pytest.raises(rc.ContractError):
            rc.parse_result(out, code)


def test_embedded_finish_prints_result_last_and_exits_by_bisect_rules(capsys):
    for hits, attempts, code in ((2, 5, 1), (0, 5, 0), (0, 0, 125)):
        with pytest.raises(SystemExit) as exc:
            rc.finish(hits, attempts, "sig", "why")
        assert exc.value.code == code
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert rc.parse_result(last, code).hits == hits


def test_python_list_pairs_options_with_values():
    text = rc.python_list(["-name", "vm", "-S", "-m", "16"])
    assert eval(text) == ["-name", "vm", "-S", "-m", "16"]
    assert "'-name', 'vm'," in text and "'-S',\n" in text


def test_portable_argv_embeds_small_files_and_refuses_big_ones(tmp_path):
    boot = tmp_path / "bootblock.bin"
    boot.write_bytes(b"\xeb\xfe" + bytes(508) + b"\x55\xaa")
    p = rc.portable_argv([f"if=none,file={boot},format=raw", f"path={tmp_path}/run/qmp.sock"], str(tmp_path / "run"))
    assert p.args == ("if=none,file=@FILE:bootblock.bin@,format=raw", "path=@RUNDIR@/qmp.sock")
    assert dict(p.files)["bootblock.bin"].startswith("6/4AAA")
    big = tmp_path / "disk.img"
    big.write_bytes(bytes(rc.EMBED_MAX_BYTES + 1))
    with pytest.raises(ValueError, match="too big"):
        rc.portable_argv([f"file={big}"], "/nowhere")


def test_match_regex_covers_the_bugs_other_faces():
    rx = match_regex(SIG)
    import re
    assert re.search(rx, SIG)
    assert re.search(rx, "crash ASan heap-use-after-free: in fill_source_migration_info <- qmp_query_migrate")
    assert not re.search(rx, "crash SIGSEGV: in aio_co_wake")


@pytest.fixture
def script(tmp_path) -> Path:
    """An exported reproducer whose command line names a 512-byte boot sector."""
    run_dir = tmp_path / "qmh-vm-x"
    boot = tmp_path / "cache" / "bootblock.bin"
    boot.parent.mkdir()
    boot.write_bytes(b"\xeb\xfe" + bytes(508) + b"\x55\xaa")
    argv = ["/usr/bin/qemu-system-x86_64", "-name", "vm", "-machine", "none",
            "-chardev", f"socket,id=qmp0,path={run_dir}/qmp.sock", "-mon", "chardev=qmp0,mode=control",
            "-chardev", f"socket,id=qmp1,path={run_dir}/qmp1.sock", "-mon", "chardev=qmp1,mode=control",
            "-chardev", f"socket,id=serial0,path={run_dir}/serial.sock", "-serial", "chardev:serial0",
            "-drive", f"if=none,id=bootdisk,file={boot},format=raw,snapshot=on", "-S"]
    vm = tmp_path / "attempt" / "vm"
    vm.mkdir(parents=True)
    (vm / "cmdline.txt").write_text(" ".join(argv) + "\n")
    (vm / "outcome.json").write_text(json.dumps({"kind": "crash", "signature": SIG, "returncode": -6}))
    (vm / "env.txt").write_text("MALLOC_PERTURB_=77\n")
    out = export_shutdown_race(tmp_path / "attempt", VARIANT, tmp_path / "out" / "repro.py",
                               ExportInfo(hits=6, attempts=12, qemu_version="10.0.2",
                                          versions_tried=("10.0.2: 6/12", "11.1.3: 6/12")))
    shutil.rmtree(tmp_path / "cache")  # nothing of the exporting machine may be needed
    return out


def run_clean(script: Path, tmp_path: Path, mode: str, *args: str, qemu: str | None = None):
    """python3 -I in an empty dir with a minimal environment: no harness importable."""
    cwd = tmp_path / f"empty-{mode}"
    cwd.mkdir()
    env = {"PATH": "/usr/bin:/bin", "STUB_MODE": mode}
    cp = subprocess.run(["/usr/bin/python3", "-I", str(script), "--qemu", qemu or str(STUB), *args],
                        cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return cp


def test_script_is_self_contained_and_readable(script):
    text = script.read_text()
    assert "/usr/bin/qemu-system-x86_64" not in text and "cache" not in text.split('"""', 2)[2]
    assert "QEMU_ARGS = [\n    '-name', 'vm'," in text
    assert "Hit rate at export: 6 of 12 attempts (50%)" in text
    assert "QEMU versions tried: 10.0.2: 6/12, 11.1.3: 6/12" in text
    assert "125 = QEMU could not start" in text
    assert rc.EMBED in text
    assert max(len(ln) for ln in text.splitlines()) < 400


@pytest.mark.parametrize("mode,code,hits", [("crash", 1, 3), ("asan", 1, 3), ("clean", 0, 0), ("other", 0, 0),
                                            ("nostart", 125, 0)])
def test_exit_codes_follow_git_bisect_run(script, tmp_path, mode, code, hits):
    cp = run_clean(script, tmp_path, mode, "--attempts", "3", "--seconds", "60")
    assert cp.returncode == code, cp.stdout + cp.stderr
    res = rc.parse_result(cp.stdout, cp.returncode)
    assert (res.hits, res.attempts if mode != "nostart" else 0) == (hits, 3 if mode != "nostart" else 0)
    if mode == "asan":
        assert res.signature == "crash ASan heap-use-after-free: in fill_source_migration_info <- qmp_query_migrate"
    if mode == "other":
        assert "other  crash SIGSEGV" in cp.stdout


def test_missing_binary_cannot_decide(script, tmp_path):
    cp = run_clean(script, tmp_path, "crash", "--attempts", "2", qemu=str(tmp_path / "no-such-qemu"))
    assert cp.returncode == 125 and cp.stdout.strip().splitlines()[-1] == "RESULT hits=0 attempts=0 signature=-"
    assert "cannot decide" in cp.stderr


def test_usage_error_exits_2(script, tmp_path):
    cp = run_clean(script, tmp_path, "crash", "--attempts", "0")
    assert cp.returncode == 2 and "--attempts" in cp.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_bisect_run_finds_the_first_bad_commit_and_skips_unbuildable(script, tmp_path):
    """Commits 1-3 and 5 good, 4 (the first midpoint) does not start (skip), 6-7 bad:
    bisect skips 4 and names commit 6."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*a):
        return subprocess.run(["git", *a], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout
    git("init", "-q")
    for i, mode in enumerate(["clean", "clean", "clean", "nostart", "clean", "crash", "crash"], 1):
        (repo / "mode").write_text(mode)
        git("add", "mode")
        git("commit", "-q", "--allow-empty", "-m", f"commit {i}")
    log = git("log", "--format=%H %s").splitlines()
    first_bad = next(h for h, s in (ln.split(" ", 1) for ln in log) if s == "commit 6")
    git("bisect", "start", log[0].split()[0], log[-1].split()[0])
    cmd = (f"STUB_MODE=$(cat mode) /usr/bin/python3 -I {script} --qemu {STUB} --attempts 3 --seconds 60")
    out = subprocess.run(["git", "bisect", "run", "sh", "-c", cmd], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=300)
    assert f"{first_bad} is the first bad commit" in out.stdout, out.stdout + out.stderr
    assert "RESULT hits=0 attempts=0 signature=-" in out.stdout  # commit 4 was skipped (125)


# ----------------------------------------------------------------------------- harness repro


def harness(*args, cwd):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def wrapper(tmp_path: Path, mode: str) -> Path:
    w = tmp_path / f"qemu-{mode}"
    w.write_text(f"#!/bin/sh\nSTUB_MODE={mode} exec {STUB} \"$@\"\n")
    w.chmod(0o755)
    return w


def test_differential_table_and_json(script, tmp_path):
    out = tmp_path / "diff.json"
    cp = harness("repro", str(script), "--qemu", str(wrapper(tmp_path, "crash")),
                 "--qemu", str(wrapper(tmp_path, "clean")), "--qemu", str(wrapper(tmp_path, "nostart")),
                 "--attempts", "4", "--seconds", "60", "--json", str(out), cwd=tmp_path)
    assert cp.returncode == 1, cp.stdout + cp.stderr       # found: it hits somewhere
    lines = cp.stdout.splitlines()
    assert lines[0].startswith("signature: crash SIGABRT: migrate_mode")
    rows = {ln.split()[-1].rsplit("-", 1)[-1]: ln for ln in lines[2:5]}
    assert "4/4" in rows["crash"] and "affected" in rows["crash"] and "[51.0%, 100.0%]" in rows["crash"]
    assert "0/4" in rows["clean"] and "not seen" in rows["clean"]
    assert "skip" in rows["nostart"]
    js = json.loads(out.read_text())
    assert [r["verdict"] for r in js["rows"]] == ["affected", "not seen", "skip"]
    assert js["rows"][0]["version"] == "99.0.0"


@pytest.mark.parametrize("args,msg", [
    (["--qemu", "x"], "give either SCRIPT or --recipe"),
    (["nope.py", "--qemu", "x"], "nope.py: no such file"),
    (["--recipe", "shutdown-race", "--qemu", "x"], "--recipe needs --seed"),
    (["f.py", "--qemu", "x", "--attempts", "0"], "--attempts must be >= 1"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, msg):
    cp = harness("repro", *args, cwd=tmp_path)
    assert cp.returncode == 2 and msg in cp.stderr and "Traceback" not in cp.stderr
