"""Guest image builds: no QEMU.  These build real images (binutils, gcc,
busybox-static, and the pinned kernel .deb via apt the first time)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.guest import images
from harness.guest.images import ImageError, KernelPin


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _default_cached_deb() -> str | None:
    """The pinned kernel .deb from the user's normal cache, if there, so the
    tests need not fetch it again (it is verified against the pin anyway)."""
    pin = images.load_pin()
    env = os.environ.get("HARNESS_KERNEL_DEB")
    if env:
        return env
    saved = os.environ.pop("HARNESS_IMAGE_DIR", None)
    try:
        deb = images.image_dir() / "downloads" / f"{pin.package}_{pin.version}_amd64.deb"
    finally:
        if saved is not None:
            os.environ["HARNESS_IMAGE_DIR"] = saved
    return str(deb) if deb.is_file() else None


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One full build into a fresh cache dir; returns (dir, combined manifest)."""
    d = tmp_path_factory.mktemp("images-a")
    mp = pytest.MonkeyPatch()
    mp.setenv("HARNESS_IMAGE_DIR", str(d))
    deb = _default_cached_deb()
    if deb:
        mp.setenv("HARNESS_KERNEL_DEB", deb)
    try:
        combined = images.build_all()
    finally:
        mp.undo()
    return d, combined


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_IMAGE_DIR", str(d))
    return d


@pytest.fixture
def src_copy(tmp_path, monkeypatch):
    """A private copy of images/ used as the source dir."""
    d = tmp_path / "src"
    shutil.copytree(images.source_dir(), d, ignore=shutil.ignore_patterns("build"))
    monkeypatch.setenv("HARNESS_IMAGE_SRC", str(d))
    return d


def test_image_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_IMAGE_DIR", str(tmp_path))
    assert images.image_dir() == tmp_path
    monkeypatch.delenv("HARNESS_IMAGE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert images.image_dir() == tmp_path / ".cache" / "qemu-migration-harness" / "images"


def test_bootblock_is_one_boot_sector(cache):
    path = images.build_bootblock()
    data = path.read_bytes()
    assert len(data) == 512
    assert data[-2:] == b"\x55\xaa"
    assert path.parent.parent == cache
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["outputs"]["bootblock.bin"]["sha256"] == _sha(path)
    # cached: same path, no rebuild
    mtime = path.stat().st_mtime_ns
    assert images.build_bootblock() == path
    assert path.stat().st_mtime_ns == mtime


def test_bootrom_is_a_64k_firmware_with_a_reset_jump(cache):
    path = images.build_bootrom()
    data = path.read_bytes()
    assert len(data) == 64 * 1024
    # reset vector (ROM offset 0xfff0): ljmp $0xf000, $real (real at ROM offset 0)
    assert data[0xfff0:0xfff5] == b"\xea\x00\x00\x00\xf0"
    assert path.parent.name.startswith("bootrom-") and path.parent.parent == cache
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["outputs"]["bootrom.bin"]["sha256"] == _sha(path)
    assert images.build_bootrom() == path


def test_linux_image_and_manifest(built):
    d, combined = built
    lx = combined["linux"]
    kernel, initrd = Path(lx["kernel"]), Path(lx["initrd"])
    assert kernel.is_file() and initrd.is_file()
    assert kernel.read_bytes()[0x202:0x206] == b"HdrS"  # bzImage setup header
    man = lx["manifest"]
    pin = images.load_pin()
    assert man["inputs"]["kernel"]["version"] == pin.version
    assert man["inputs"]["kernel"]["deb_sha256"] == pin.sha256
    assert man["inputs"]["busybox"]["version"]  # busybox-static's version is recorded
    for name, info in man["outputs"].items():
        assert _sha(kernel.parent / name) == info["sha256"]
    assert json.loads((d / "manifest.json").read_text()) == combined


def _newc_entries(data: bytes) -> list[dict]:
    out, off = [], 0
    while True:
        assert data[off:off + 6] == b"070701", off
        f = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        namesize, size = f[11], f[6]
        name = data[off + 110: off + 110 + namesize - 1].decode()
        off = (off + 110 + namesize + 3) & ~3
        body = data[off: off + size]
        off = (off + size + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out.append({"name": name, "mode": f[1], "uid": f[2], "gid": f[3], "mtime": f[5],
                    "rdev": (f[9], f[10]), "data": body})


def test_initramfs_contents_are_normalised(built):
    _, combined = built
    raw = Path(combined["linux"]["initrd"]).read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0 (and -n: no name flag)
    assert not raw[3] & 0x08
    entries = _newc_entries(gzip.decompress(raw))
    names = [e["name"] for e in entries]
    assert names == sorted(names)
    assert all(e["uid"] == 0 and e["gid"] == 0 and e["mtime"] == 0 for e in entries)
    by = {e["name"]: e for e in entries}
    assert by["init"]["data"] == (images.source_dir() / "linux" / "init").read_bytes()
    assert by["init"]["mode"] & 0o111
    assert by["workload"]["data"][:4] == b"\x7fELF"
    assert by["bin/busybox"]["data"] == Path("/bin/busybox").read_bytes()
    assert by["bin/sh"]["data"] == b"busybox" and by["bin/stty"]["data"] == b"busybox"
    assert by["dev/console"]["rdev"] == (5, 1)


def test_two_builds_are_byte_identical(built, tmp_path, monkeypatch):
    d1, first = built
    d2 = tmp_path / "images-b"
    monkeypatch.setenv("HARNESS_IMAGE_DIR", str(d2))
    # reuse the first build's download: the kernel is pinned, so it's the same bytes
    monkeypatch.setenv("HARNESS_KERNEL_DEB", str(next((d1 / "downloads").glob("*.deb")))
                       if (d1 / "downloads").is_dir() else _default_cached_deb())
    second = images.build_all()
    for kind in ("bootblock", "bootrom", "linux"):
        assert first[kind]["manifest"]["outputs"] == second[kind]["manifest"]["outputs"], kind
        assert first[kind]["manifest"]["key"] == second[kind]["manifest"]["key"]
    files1 = sorted(p.relative_to(d1) for p in d1.glob("*-*/*") if p.name != "manifest.json")
    files2 = sorted(p.relative_to(d2) for p in d2.glob("*-*/*") if p.name != "manifest.json")
    # bootblock.bin, bootrom.bin, vmlinuz, initrd.img, workload
    assert files1 == files2 and len(files1) == 5
    for rel in files1:
        assert _sha(d1 / rel) == _sha(d2 / rel), rel


def test_force_rebuild_gives_same_bytes(cache):
    first = images.build_bootblock()
    sha = _sha(first)
    again = images.build_bootblock(force=True)
    assert again == first and _sha(again) == sha
    assert not list(cache.glob(".build-*")) and not list(cache.glob(".old-*"))


def test_editing_a_source_rebuilds(cache, src_copy):
    first = images.build_bootblock()
    assert [p for p in images.check() if p.startswith("bootblock")] == []
    src = src_copy / "bootblock" / "bootblock.S"
    src.write_text(src.read_text() + "\n/* edited */\n")
    stale = [p for p in images.check() if p.startswith("bootblock")]
    assert len(stale) == 1 and "not built" in stale[0]
    second = images.build_bootblock()
    assert second != first and second.parent.name.startswith("bootblock-")
    assert _sha(second) == _sha(first)  # a comment changes the key, not the bytes


def test_check_lists_missing_images_then_nothing(built, monkeypatch, tmp_path):
    d, _ = built
    monkeypatch.setenv("HARNESS_IMAGE_DIR", str(tmp_path / "empty"))
    problems = images.check()
    assert any(p.startswith("bootblock: not built") for p in problems)
    assert any(p.startswith("linux: not built") for p in problems)
    assert all("\n" not in p for p in problems)
    monkeypatch.setenv("HARNESS_IMAGE_DIR", str(d))
    assert images.check() == []


def test_check_detects_corrupted_output(cache):
    path = images.build_bootblock()
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = [p for p in images.check() if p.startswith("bootblock")]
    assert problems and "sha256" in problems[0]


def _one_line(e: ImageError) -> str:
    msg = str(e)
    assert "\n" not in msg and msg
    return msg


def test_pin_mismatch_is_a_one_line_error(built, tmp_path, monkeypatch):
    pin = images.load_pin()
    wrong = KernelPin(pin.package, pin.version, "0" * 64)
    d, _ = built
    deb = next((d / "downloads").glob("*.deb"), None) or _default_cached_deb()
    monkeypatch.setenv("HARNESS_KERNEL_DEB", str(deb))
    with pytest.raises(ImageError) as ei:
        images.fetch_kernel_deb(wrong, tmp_path)
    msg = _one_line(ei.value)
    assert pin.version in msg and "sha256 mismatch" in msg


def test_pin_mismatch_through_build_linux(built, src_copy, cache, monkeypatch):
    d, _ = built
    pin_file = src_copy / "linux" / "kernel.pin"
    text = pin_file.read_text()
    pin = images.load_pin()
    pin_file.write_text(text.replace(pin.sha256, "f" * 64))
    monkeypatch.setenv("HARNESS_KERNEL_DEB", str(next((d / "downloads").glob("*.deb"), None)
                                                   or _default_cached_deb()))
    with pytest.raises(ImageError) as ei:
        images.build_linux()
    msg = _one_line(ei.value)
    assert f"{pin.package}={pin.version}" in msg and "sha256 mismatch" in msg
    assert not list(cache.glob("linux-*"))  # nothing half-built left behind
    assert not list(cache.glob(".build-*"))


@pytest.mark.skipif(not shutil.which("apt-get"), reason="needs apt-get")
def test_unavailable_kernel_version_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_KERNEL_DEB", raising=False)
    pin = KernelPin("linux-image-6.1.0-50-cloud-amd64", "0.0.0-nonexistent", "a" * 64)
    with pytest.raises(ImageError) as ei:
        images.fetch_kernel_deb(pin, tmp_path)
    msg = _one_line(ei.value)
    assert "0.0.0-nonexistent" in msg and "unavailable" in msg


def test_bad_pin_file(tmp_path):
    p = tmp_path / "kernel.pin"
    p.write_text("package = x\nversion = 1\n")
    with pytest.raises(ImageError, match="missing sha256"):
        images.load_pin(p)
    p.write_text("package = x\nversion = 1\nsha256 = nothex\n")
    with pytest.raises(ImageError, match="64 lowercase hex"):
        images.load_pin(p)


def test_missing_tool_is_named(cache, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ImageError) as ei:
        images.build_bootblock()
    msg = _one_line(ei.value)
    assert "'as'" in msg and "binutils" in msg


def test_missing_source_is_named(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_IMAGE_SRC", str(tmp_path / "nowhere"))
    with pytest.raises(ImageError, match="bootblock.S is missing"):
        images.build_bootblock()


def test_cmdline_helper():
    img = images.LinuxImage(kernel=Path("k"), initrd=Path("i"))
    assert img.cmdline_base == "console=ttyS0 panic=-1 quiet"
    assert img.cmdline() == ("console=ttyS0 panic=-1 quiet harness.mem=64 harness.rate=0 "
                             "harness.hb_ms=100")
    assert img.cmdline(128, 50, 20).endswith("harness.mem=128 harness.rate=50 harness.hb_ms=20")
    with pytest.raises(ValueError):
        img.cmdline(mem_mib=0)
    with pytest.raises(ValueError):
        img.cmdline(rate_mib_s=-1)


def test_bootblock_drive_args_give_geometry():
    args = images.bootblock_drive_args(Path("/x/bootblock.bin"))
    assert args == ["-drive", "if=none,id=bootdisk,file=/x/bootblock.bin,format=raw,snapshot=on",
                    "-device", "ide-hd,drive=bootdisk,secs=1,cyls=1,heads=1,bootindex=0"]
    assert "snapshot" not in images.bootblock_drive_args(Path("b"), snapshot=False)[1]


_CONCURRENT = """
import sys
from harness.guest import images
print(images.build_bootblock())
"""


def test_concurrent_builds_share_one_result(cache):
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ))
             for _ in range(4)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.strip())
    assert len(set(outs)) == 1
    assert [p.name for p in cache.iterdir() if p.name.startswith("bootblock-")] == \
        [Path(outs[0]).parent.name]
    assert not list(cache.glob(".build-*"))


def test_main_check_only_and_path(built, monkeypatch, capsys, tmp_path):
    d, combined = built
    monkeypatch.setenv("HARNESS_IMAGE_DIR", str(d))
    assert images.main(["build", "--check-only"]) == 0
    assert images.main(["path", "kernel"]) == 0
    assert capsys.readouterr().out.strip().endswith(combined["linux"]["kernel"])
    assert images.main(["path", "bootblock"]) == 0
    assert capsys.readouterr().out.strip() == combined["bootblock"]["path"]
    monkeypatch.setenv("HARNESS_IMAGE_DIR", str(tmp_path / "empty"))
    assert images.main(["build", "--check-only"]) == 1
    assert "not built" in capsys.readouterr().out
    assert not (tmp_path / "empty" / "bootblock").exists()
