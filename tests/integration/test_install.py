"""The package installs: `pip install .` (a real, non-editable wheel) into a fresh venv,
then `harness images build` builds the guest images from the wheel's package data.

The images must come out with the same cache keys as the checkout's own (same sources,
same pins), which proves the wheel carries the sources and not something else.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.guest import images

REPO = Path(__file__).resolve().parents[2]


def _interpreters() -> list:
    """This interpreter, and the oldest supported one (3.9) when the machine has it."""
    found = [pytest.param(sys.executable, id=f"py{sys.version_info[0]}{sys.version_info[1]}")]
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    candidates += [p for p in [shutil.which("python3.9")] if p]
    old = next((p for p in candidates if subprocess.run(   # a pyenv shim may not resolve
        [p, "-c", ""], capture_output=True).returncode == 0), None)
    found.append(pytest.param(old, id="py39", marks=pytest.mark.skipif(
        old is None, reason="no python3.9 on this machine (pyenv or PATH)")))
    return found


def _copy_checkout(dst: Path) -> Path:
    """The checkout's files, not what git ignores (no .venv, no build dirs); symlinks stay
    symlinks."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src, out = REPO / f, dst / f
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            out.symlink_to(os.readlink(src))
        elif src.exists():   # a file deleted in the worktree but not yet in git
            shutil.copy2(src, out)
    return dst


@pytest.mark.parametrize("python", _interpreters())
def test_pip_install_then_images_build(tmp_path, python):
    src = _copy_checkout(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(src)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import harness, pathlib; print(pathlib.Path(harness.__file__).parent)"],
                          capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    assert site.startswith(str(venv)), f"harness imported from {site}, not the wheel"
    assert (Path(site) / "guest" / "sources" / "bootblock" / "bootblock.S").is_file()
    assert not (Path(site) / "guest" / "sources").is_symlink()
    # Every module imports on this interpreter (3.9: no match, no X | Y outside annotations).
    imports = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import importlib, pkgutil, harness\n"
                              "for m in pkgutil.walk_packages(harness.__path__, 'harness.'):\n"
                              "    importlib.import_module(m.name)"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert imports.returncode == 0, imports.stderr[-3000:]

    env = dict(os.environ, HARNESS_IMAGE_DIR=str(tmp_path / "images"))
    env.pop("HARNESS_IMAGE_SRC", None)
    # The pinned kernel .deb the checkout's build already fetched: no second download.
    debs = sorted((images.image_dir() / "downloads").glob("*.deb"))
    if debs:
        env["HARNESS_KERNEL_DEB"] = str(debs[0])
    build = subprocess.run([str(venv / "bin" / "harness"), "images", "build"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    assert f"bootblock-{images.bootblock_key()[:16]}" in build.stdout
    assert f"linux-{images.linux_key(images.load_pin())[:16]}" in build.stdout
    version = subprocess.run([str(venv / "bin" / "harness"), "--version"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "harness" in version.stdout, version.stdout + version.stderr
