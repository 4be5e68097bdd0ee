"""What this repository's own test run needs (the harness's fixtures come from its
pytest plugin, registered by the package's pytest11 entry point, not from here).

`inner_pytest` runs a pytest session in a subprocess the way a user would (the plugin
loaded from the installed package, a private run root so the leak check and this
session's QEMUs never meet, artifacts in a temp dir) and hands back what it printed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class InnerRun:
    returncode: int
    stdout: str
    stderr: str
    artifacts: Path       # --artifacts of the inner session
    junit: Path           # its --junitxml

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def inner_pytest(tmp_path):
    """inner_pytest(*args, cwd=None, env=None, timeout=600) -> InnerRun: run pytest in a
    subprocess on the given files/options with a private HARNESS_RUN_ROOT, --artifacts and
    --junitxml under tmp_path, --accel tcg unless given."""
    counter = iter(range(1_000_000))
    run_roots: list[str] = []

    def run(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600) -> InnerRun:
        n = next(counter)
        base = tmp_path / f"inner{n}"
        base.mkdir(parents=True)
        # Short: QMP and serial sockets live there (sun_path is 108 bytes).
        run_roots.append(tempfile.mkdtemp(prefix="qmh-in-"))
        art, junit = base / "artifacts", base / "junit.xml"
        full_env = dict(os.environ, HARNESS_RUN_ROOT=run_roots[-1], COLUMNS="300")
        full_env.pop("PYTEST_XDIST_WORKER", None)
        full_env.pop("PYTEST_ADDOPTS", None)
        full_env.update(env or {})
        opts = ["-p", "no:cacheprovider", "--artifacts", str(art), "--junitxml", str(junit)]
        if not any(a.startswith("--accel") for a in args):
            opts += ["--accel", "tcg"]
        cp = subprocess.run([sys.executable, "-m", "pytest", *opts, *args], cwd=cwd or base,
                            capture_output=True, text=True, env=full_env, timeout=timeout)
        return InnerRun(cp.returncode, cp.stdout, cp.stderr, art, junit)
    yield run
    for d in run_roots:   # the inner session's leak check removed what it started
        shutil.rmtree(d, ignore_errors=True)
