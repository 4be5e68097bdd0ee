"""ci/qemu-build without building: configure arguments, source-tree preparation, wrapper,
and bad input (one line, exit 2). The build itself: tests/integration/test_asan_build.py."""
import importlib.machinery
import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ci" / "qemu-build"


@pytest.fixture(scope="module")
def qb():
    loader = importlib.machinery.SourceFileLoader("qemu_build", str(SCRIPT))
    spec = importlib.util.spec_from_loader("qemu_build", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def fake_tree(tmp_path: Path) -> Path:
    t = tmp_path / "qemu"
    t.mkdir()
    (t / "configure").write_text("#!/bin/sh\n# --disable-download\n")
    (t / "VERSION").write_text("10.0.2\n")
    (t / "meson_options.txt").write_text("option('slirp', type: 'feature')\noption('install_blobs', type : 'boolean')\n")
    (t / "meson.build").write_text("unpack_edk2_blobs = false\nforeach t : x\n    unpack_edk2_blobs = bzip2.found()\n"
                                   "endforeach\n")
    return t


def test_configure_args_x86_64_softmmu_debug_info_sanitizers(qb, tmp_path):
    t = fake_tree(tmp_path)
    args = qb.configure_args(t, tmp_path / "b", Path("/venv/bin/python"), asan=True, ubsan=False)
    for want in ("--target-list=x86_64-softmmu", "--enable-debug-info", "--enable-asan", "--disable-install-blobs",
                 "--python=/venv/bin/python", "--disable-download", "--enable-slirp"):
        assert want in args
    assert "--enable-ubsan" not in args and any("-fno-omit-frame-pointer" in a for a in args)
    assert "--enable-ubsan" in qb.configure_args(t, tmp_path / "b", Path("/p"), asan=False, ubsan=True)


def test_edk2_blob_unpacking_forced_off(qb, tmp_path):
    t = fake_tree(tmp_path)
    qb.prepare_tree(t)
    text = (t / "meson.build").read_text()
    assert "bzip2.found()" not in text and text.count("unpack_edk2_blobs = false") == 2


def test_wrapper_sets_sanitizer_defaults_only_when_unset(qb, tmp_path):
    (tmp_path / "build").mkdir()
    w = qb.write_wrapper(tmp_path, tmp_path / "build", tmp_path, asan=True, ubsan=True)
    text = w.read_text()
    assert f': "${{ASAN_OPTIONS:={qb.ASAN_DEFAULTS}}}"' in text and "UBSAN_OPTIONS" in text
    assert text.rstrip().endswith('"$@"')
    assert ("-L /usr/share/qemu" in text) == Path("/usr/share/qemu").is_dir()  # the system's firmware


@pytest.mark.parametrize("args,code,msg", [
    (["--src", "/nonexistent-tree"], 2, "no configure script there"),
    (["--jobs", "0"], 2, "--jobs must be >= 1"),
])
def test_bad_input_is_one_line(tmp_path, args, code, msg):
    cp = subprocess.run([str(SCRIPT), "--prefix", str(tmp_path), *args], capture_output=True, text=True, timeout=60)
    assert cp.returncode == code and msg in cp.stderr and "Traceback" not in cp.stderr


def test_print_wrapper_without_a_build_exits_1(tmp_path):
    cp = subprocess.run([str(SCRIPT), "--prefix", str(tmp_path), "--asan", "--print-wrapper"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 1 and cp.stdout == ""
