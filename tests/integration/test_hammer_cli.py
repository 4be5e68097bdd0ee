"""`harness hammer shutdown-race` as a user runs it: triage, reproducer, replay."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.qemu
HARNESS = [sys.executable, "-m", "harness.cli"]


def run(args, timeout=240, **kw):
    return subprocess.run(HARNESS + args, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def hammered(tmp_path_factory):
    art = tmp_path_factory.mktemp("hammer")
    cp = run(["hammer", "shutdown-race", "--seconds", "20", "-j", "2", "--until-crash",
              "--seed", "3", "--verify-reproducers", "8", "--artifacts", str(art)])
    assert cp.returncode == 0, cp.stderr[-2000:]
    (root,) = [d for d in art.iterdir() if d.is_dir()]
    return cp, root


def test_hammer_finds_the_seed_crash_and_triages_it(hammered):
    cp, root = hammered
    assert "crash SIG" in cp.stdout
    tri = json.loads((root / "triage.json").read_text())
    assert tri["attempts"] >= 1 and tri["signatures"]
    top = tri["signatures"][0]
    assert top["kind"] == "crash" and top["count"] >= 1
    first = Path(top["first_artifacts"])
    assert (first / "vm" / "cmdline.txt").exists() and (first / "seed.txt").exists()
    assert (first / "vm" / "backtrace.txt").exists()  # evidence for the first of its class


def test_exported_reproducer_runs_standalone(hammered, tmp_path_factory):
    _, root = hammered
    top = json.loads((root / "triage.json").read_text())["signatures"][0]
    script = top["reproducer"].split(" (")[0]
    assert "reproduces" in top["reproducer"], top["reproducer"]
    cp = subprocess.run([sys.executable, "-I", script, "--seconds", "15", "--attempts", "400"],
                        capture_output=True, text=True, timeout=120, cwd=tmp_path_factory.mktemp("empty"))
    assert cp.returncode == 1, cp.stdout + cp.stderr  # git bisect run: 1 = the bug showed
    assert cp.stdout.splitlines()[-1].startswith("RESULT hits=")


def test_replay_of_a_recorded_seed_repeats_the_attempt(hammered, tmp_path):
    _, root = hammered
    top = json.loads((root / "triage.json").read_text())["signatures"][0]
    first = Path(top["first_artifacts"])
    seed = int((first / "seed.txt").read_text())
    cp = run(["hammer", "shutdown-race", "--replay", str(seed), "--artifacts", str(tmp_path)])
    out = json.loads(cp.stdout)
    assert out["seed"] == seed
    recorded = (first / "vm" / "env.txt").read_text().split()
    assert f"MALLOC_PERTURB_={out['malloc_perturb']}" in recorded


@pytest.mark.parametrize("args, msg", [
    (["--monitors", "0"], "monitors 0 must be 1..8"),
    (["-j", "0"], "--parallel 0 must be 1..64"),
    (["--qemu", "/nonexistent"], "does not exist"),
])
def test_bad_input_is_one_line(args, msg):
    cp = run(["hammer", "shutdown-race", "--seconds", "1"] + args, timeout=60)
    assert cp.returncode == 2       # bad input is a usage error
    assert cp.stderr.strip().count("\n") == 0 and msg in cp.stderr, cp.stderr


def test_repro_replays_a_recorded_attempt_seed_on_two_binaries(hammered, tmp_path):
    """harness repro --recipe shutdown-race --seed N: the differential for one hammer attempt."""
    _, root = hammered
    top = json.loads((root / "triage.json").read_text())["signatures"][0]
    seed = int((Path(top["first_artifacts"]) / "seed.txt").read_text())
    out = tmp_path / "d.json"
    cp = run(["repro", "--recipe", "shutdown-race", "--seed", str(seed), "--qemu", "qemu-system-x86_64",
              "--attempts", "6", "--seconds", "60", "--json", str(out)], timeout=300, cwd=tmp_path)
    js = json.loads(out.read_text())
    assert js["rows"][0]["attempts"] == 6 and js["rows"][0]["version"]
    assert cp.returncode == (1 if js["rows"][0]["hits"] else 0)
    assert "socket.send() raised exception" not in cp.stderr
