"""The nightly CI examples are valid YAML, run the tiers and the report, keep artifacts,
and run only commands (and long options) the README documents."""
import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is in the project's test extra (pip install -e .[test])")

ROOT = Path(__file__).resolve().parents[2]
GITLAB = ROOT / "ci" / "examples" / "gitlab-ci.yml"
GITHUB = ROOT / "ci" / "examples" / "github-nightly.yml"
README = (ROOT / "README.md").read_text()


def command_key(line: str) -> str:
    """What identifies a command: the program, plus `-m MODULE` or a subcommand."""
    argv = shlex.split(line)
    prog = argv[0]
    if prog.endswith("python") or prog.endswith("python3"):
        if argv[1:2] == ["-m"]:
            return f"python -m {argv[2]}"
        return "python"
    if prog.endswith("bin/harness") or prog == "harness":
        return f"harness {argv[1]}"
    if prog in ("apt-get", "git"):
        return f"{prog} {argv[1]}"
    return prog


def documented() -> tuple[set[str], str]:
    """Command keys from the README's indented code blocks and `inline` commands."""
    lines = [l[4:] for l in README.splitlines() if l.startswith("    ") and l.strip()]
    lines += re.findall(r"`((?:ci/|bench/|\.venv/bin/)[^`]+)`", README)
    keys = set()
    for l in lines:
        try:
            keys.add(command_key(l.split("#", 1)[0]))
        except (ValueError, IndexError):
            continue
    return keys, README


def commands(lines: list[str]) -> list[str]:
    out = []
    for block in lines:
        for line in block.splitlines():
            for part in re.split(r"&&|\|\||;", line):
                if part.strip():
                    out.append(part.strip())
    return out


def gitlab_commands(doc: dict) -> list[str]:
    lines = []
    for name, job in doc.items():
        if isinstance(job, dict):
            for key in ("before_script", "script", "after_script"):
                lines += job.get(key, [])
    return commands(lines)


def github_commands(doc: dict) -> list[str]:
    return commands([s["run"] for j in doc["jobs"].values() for s in j["steps"] if "run" in s])


def test_gitlab_example_is_valid_and_complete():
    doc = yaml.safe_load(GITLAB.read_text())
    assert doc["stages"] == ["test", "report"]
    assert doc["smoke"]["script"][-1] == "ci/smoke"
    full = doc["full"]
    assert "-m full -n 2" in full["script"][-1]
    assert full["parallel"] == 4 and "--shard $CI_NODE_INDEX/$CI_NODE_TOTAL" in full["script"][-1]
    assert "runner_system_failure" in doc["default"]["retry"]["when"]
    assert doc["default"]["interruptible"] is True
    rep = doc["report"]
    assert rep["when"] == "always" and rep["stage"] == "report"
    assert {n["job"] for n in rep["needs"]} == {"smoke", "full"}
    assert rep["script"][-1].startswith(".venv/bin/harness report ")
    for k in range(1, full["parallel"] + 1):   # the report merges every shard
        assert f"artifacts/full-{k}" in rep["script"][-1]
    assert rep["artifacts"]["expose_as"] and "artifacts/report.html" in rep["artifacts"]["paths"]
    for job in ("smoke", "full", "report"):
        assert doc[job]["artifacts"]["when"] == "always"
    farm = doc["farm"]
    assert farm["tags"] == ["qemu-farm"] and farm["artifacts"]["when"] == "always"
    assert "hosts check --connect farm.toml" in farm["script"][1]
    assert "--inventory farm.toml" in farm["script"][-1]


def test_github_example_is_valid_and_complete():
    doc = yaml.safe_load(GITHUB.read_text())
    on = doc.get("on", doc.get(True))            # YAML 1.1 reads a bare `on` as true
    assert "schedule" in on and "workflow_dispatch" in on
    jobs = doc["jobs"]
    runs = [s.get("run", "") for s in jobs["nightly"]["steps"]]
    assert "ci/setup" in runs and "ci/smoke" in runs
    after_smoke = jobs["nightly"]["steps"][[s.get("id") for s in jobs["nightly"]["steps"]].index("smoke") + 1:]
    assert all(s.get("if") == "${{ !cancelled() }}" for s in after_smoke)  # results kept after failures
    full = jobs["full"]
    shards = full["strategy"]["matrix"]["shard"]
    full_run = next(s["run"] for s in full["steps"] if s.get("id") == "full")
    assert "-m full -n 2" in full_run and f"--shard ${{{{ matrix.shard }}}}/{len(shards)}" in full_run
    report = jobs["report"]
    assert set(report["needs"]) == {"nightly", "full"} and report["if"] == "${{ !cancelled() }}"
    rruns = [s.get("run", "") for s in report["steps"]]
    rep = next(r for r in rruns if r.startswith(".venv/bin/harness report "))
    assert all(f"results-full-{k}" in rep for k in shards) and '--markdown "$GITHUB_STEP_SUMMARY"' in rep
    uses = [s.get("uses", "") for s in report["steps"]]
    assert any(u.startswith("mikepenz/action-junit-report@") for u in uses)   # JUnit rendered
    assert report["permissions"]["checks"] == "write"
    assert any(u.startswith("actions/upload-artifact") for u in uses)
    farm_runs = [s.get("run", "") for s in doc["jobs"]["farm"]["steps"]]
    assert any("--inventory farm.toml" in r for r in farm_runs)
    assert any(r.startswith(".venv/bin/harness hosts check --connect") for r in farm_runs)


@pytest.mark.parametrize("path,extract", [(GITLAB, gitlab_commands), (GITHUB, github_commands)],
                         ids=["gitlab", "github"])
def test_every_command_is_documented_in_the_readme(path, extract):
    keys, readme = documented()
    cmds = extract(yaml.safe_load(path.read_text()))
    assert len(cmds) >= 5
    for c in cmds:
        assert command_key(c) in keys, f"{path.name}: '{c}' is not a command the README documents"
        for opt in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", c):
            assert opt in readme, f"{path.name}: option {opt} of '{c}' is not in the README"
    for script in {c.split()[0] for c in cmds if c.startswith("ci/")}:
        assert (ROOT / script).is_file(), script


SANITIZERS = ROOT / "ci" / "examples" / "github-nightly-sanitizers.yml"


def test_sanitizer_nightly_builds_asan_and_runs_every_command_documented():
    doc = yaml.safe_load(SANITIZERS.read_text())
    job = doc["jobs"]["asan"]
    runs = [s.get("run", "") for s in job["steps"]]
    assert "ci/qemu-build --asan" in runs
    assert any(s.get("uses", "").startswith("actions/cache") and s["with"]["path"] == "/opt/qemu-builds"
               for s in job["steps"])
    keys, readme = documented()
    for c in github_commands(doc):
        assert command_key(c) in keys, f"{SANITIZERS.name}: '{c}' is not a command the README documents"
        for opt in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", c):
            assert opt in readme, f"{SANITIZERS.name}: option {opt} of '{c}' is not in the README"
