"""Guest images: build them reproducibly from this repo's sources and Debian
packages, cache them, and find them.

Two guests:

* the boot sector (``images/bootblock/bootblock.S``): 512 bytes, 'A' then a
  'B' per pass over [1 MiB, 100 MiB), incrementing the first byte of every page;
  and its chaos form (``images/bootblock/bootrom.S``): the same loop and page
  rule over [1 MiB, 33 MiB), as a 64 KiB ``-bios`` image (no SeaBIOS) that
  halts between passes until a PIT tick (50 passes/s), so a chaos attempt's
  guests idle instead of spinning a host core each;
* the Linux guest: Debian's pinned cloud kernel (``images/linux/kernel.pin``)
  and a gzip'd newc initramfs holding busybox (package ``busybox-static``),
  ``/init`` (``images/linux/init``) and ``/workload`` (``images/linux/workload.c``,
  built ``gcc -static``).

Each image lives in ``image_dir()/<kind>-<key>/`` where ``key`` hashes every
input (sources, pin, busybox binary, build format), so editing a source gives
a new directory and an old checkout keeps finding its own.  A directory only
appears complete (built in a temporary directory, then renamed) and holds a
``manifest.json`` with the sha256 of every output.  Builds take an fcntl lock
on ``image_dir()/.lock``, so pytest-xdist workers can all call ``build_*``.

The boot sector is exactly 512 bytes.  SeaBIOS on q35 only boots a one-sector
disk when given its geometry (as qtest does); ``bootblock_drive_args()`` gives::

    -drive if=none,id=bootdisk,file=BOOTBLOCK,format=raw,snapshot=on
    -device ide-hd,drive=bootdisk,secs=1,cyls=1,heads=1
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

# Bump when the build procedure changes the outputs: it is part of every key.
BUILD_FORMAT = 1

BUSYBOX = Path("/bin/busybox")
BUSYBOX_PACKAGE = "busybox-static"
CMDLINE_BASE = "console=ttyS0 panic=-1 quiet"
DEFAULT_MEM_MIB = 64
DEFAULT_RATE_MIB_S = 0
DEFAULT_HB_MS = 100

# Applets linked into /bin (all present in bookworm's busybox-static 1.35).
BUSYBOX_APPLETS = (
    "ash", "cat", "dmesg", "echo", "free", "grep", "ls", "mkdir", "mount",
    "poweroff", "ps", "reboot", "sh", "sleep", "stty", "sync", "umount",
)

BOOTBLOCK_FILE = "bootblock.bin"
BOOTROM_FILE = "bootrom.bin"
BOOTROM_SIZE = 64 * 1024
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.img"
WORKLOAD_FILE = "workload"
MANIFEST = "manifest.json"

_SUBPROCESS_TIMEOUT = 600


class ImageError(RuntimeError):
    """A guest image cannot be built or found.  The message is one line that
    names what is missing or wrong."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------
# locations


def source_dir() -> Path:
    """The image sources: ``$HARNESS_IMAGE_SRC``, else ``harness/guest/sources``.

    In a checkout that is a symlink to the repo's top-level ``images/``; a built
    wheel carries a copy of it as package data, so an installed harness builds its
    guest images without the repository."""
    env = os.environ.get("HARNESS_IMAGE_SRC")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "sources"


def image_dir() -> Path:
    """The image cache: ``$HARNESS_IMAGE_DIR`` or
    ``~/.cache/qemu-migration-harness/images``."""
    env = os.environ.get("HARNESS_IMAGE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "qemu-migration-harness" / "images"


def _src(*parts: str) -> Path:
    p = source_dir().joinpath(*parts)
    if not p.is_file():
        raise ImageError(f"image source {p} is missing")
    return p


# --------------------------------------------------------------------------
# kernel pin


@dataclasses.dataclass(frozen=True)
class KernelPin:
    package: str
    version: str
    sha256: str

    def __str__(self) -> str:
        return f"{self.package}={self.version}"


def load_pin(path: Path | None = None) -> KernelPin:
    """Parse ``images/linux/kernel.pin`` (``key = value`` lines, # comments)."""
    path = path or _src("linux", "kernel.pin")
    fields: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, val = line.partition("=")
        if not sep:
            raise ImageError(f"{path}: bad line {raw.strip()!r} (want key = value)")
        fields[key.strip()] = val.strip()
    missing = [k for k in ("package", "version", "sha256") if not fields.get(k)]
    if missing:
        raise ImageError(f"{path}: missing {', '.join(missing)}")
    if not re.fullmatch(r"[0-9a-f]{64}", fields["sha256"]):
        raise ImageError(f"{path}: sha256 must be 64 lowercase hex digits")
    return KernelPin(fields["package"], fields["version"], fields["sha256"])


# --------------------------------------------------------------------------
# helpers


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ImageError(f"'{name}' not found: install the Debian package {package}")
    return path


def _run(argv: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                              timeout=_SUBPROCESS_TIMEOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ImageError(f"{what}: '{argv[0]}' not found") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: '{argv[0]}' timed out after {_SUBPROCESS_TIMEOUT}s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errs = [ln for ln in lines if "error" in ln.lower() or ln.startswith("E:")]
        detail = (errs or lines or [f"exit status {proc.returncode}"])[-1].strip()
        raise ImageError(f"{what}: {detail}")
    return proc


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.splitlines()[0].strip() if out else "unknown"


def _package_version(package: str) -> str | None:
    try:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", package],
                              capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    status, _, version = proc.stdout.partition("\t")
    if proc.returncode != 0 or "install ok installed" not in status:
        return None
    return version.strip()


def _hash_inputs(items: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in items:
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked() -> Iterator[Path]:
    """Exclusive build lock on the cache; removes leftovers of crashed builds."""
    root = image_dir()
    _private(root)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in root.glob(".build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in root.glob(".old-*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield root
    finally:
        os.close(fd)


def _private(root: Path) -> None:
    """The cache dir must be ours and not writable by others (created 0700)."""
    from harness import dirs
    try:
        dirs.private_dir(root, "image cache")
    except dirs.DirError as exc:
        raise ImageError(str(exc)) from None


def _read_manifest(d: Path) -> dict | None:
    try:
        data = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    outputs = data.get("outputs") if isinstance(data, dict) else None
    if not isinstance(outputs, dict) or not outputs:
        return None
    if not all((d / name).is_file() for name in outputs):
        return None
    return data


def _verify_outputs(d: Path, manifest: dict) -> list[str]:
    bad = []
    for name, info in sorted(manifest["outputs"].items()):
        if _sha256_file(d / name) != info.get("sha256"):
            bad.append(name)
    return bad


# Outputs this process has hashed, by file identity (device, inode, size, mtime, ctime):
# any write to a file, or a replacement, changes that identity and forces a new hash.
_hashed: dict[Path, tuple] = {}
_ALWAYS_HASH = 1 << 20      # small images (the boot sector) are hashed on every use


def _intact(d: Path, manifest: dict) -> bool:
    """Every output still has its manifest sha256 (a zeroed or edited cache is rebuilt)."""
    for name, info in manifest["outputs"].items():
        p = d / name
        try:
            st = p.stat()
        except OSError:
            return False
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if st.st_size > _ALWAYS_HASH and _hashed.get(p) == ident:
            continue
        if st.st_size != info.get("size", st.st_size) or _sha256_file(p) != info.get("sha256"):
            _hashed.pop(p, None)
            return False
        _hashed[p] = ident
    return True


def _install(root: Path, tmp: Path, final: Path) -> None:
    """Move a finished build into place atomically (replacing an old one)."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=".old-", dir=root))
        os.rename(final, old / "d")
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


def _build_into(kind: str, key: str, force: bool, builder) -> tuple[Path, dict]:
    """Return the (directory, manifest) for an image, building it if needed."""
    _private(image_dir())
    final = image_dir() / f"{kind}-{key[:16]}"
    if not force:
        manifest = _read_manifest(final)
        if manifest is not None and manifest.get("key") == key and _intact(final, manifest):
            return final, manifest
    with _locked() as root:
        if not force:  # someone else may have built it while we waited
            manifest = _read_manifest(final)
            if manifest is not None and manifest.get("key") == key:
                if _intact(final, manifest):
                    return final, manifest
                log.warning("%s image in %s does not match its manifest sha256: rebuilding",
                            kind, final)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{kind}-", dir=root))
        try:
            inputs = builder(tmp)
            outputs = {}
            for p in sorted(tmp.iterdir()):
                if p.is_file():
                    outputs[p.name] = {"sha256": _sha256_file(p), "size": p.stat().st_size}
            manifest = {"format": BUILD_FORMAT, "kind": kind, "key": key,
                        "inputs": inputs, "outputs": outputs}
            _write_json_atomic(tmp / MANIFEST, manifest)
            os.chmod(tmp, 0o755)
            _install(root, tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("built %s image in %s", kind, final)
    return final, manifest


# --------------------------------------------------------------------------
# boot sector


def bootblock_key() -> str:
    return _hash_inputs([
        ("format", str(BUILD_FORMAT).encode()),
        ("bootblock.S", _src("bootblock", "bootblock.S").read_bytes()),
    ])


def _assemble(out: Path, source: str, binary_name: str, text_addr: str) -> tuple[Path, dict]:
    """as --32 + ld (flat binary linked at text_addr) of images/bootblock/<source>:
    the binary's path and the manifest's sources/tools (no object file left)."""
    src = _src("bootblock", source)
    as_ = _need_tool("as", "binutils")
    ld = _need_tool("ld", "binutils")
    obj = out / (Path(source).stem + ".o")
    binary = out / binary_name
    _run([as_, "--32", "-o", str(obj), str(src)], f"assembling {source}")
    _run([ld, "-m", "elf_i386", f"-Ttext={text_addr}", "--oformat=binary", "-o", str(binary), str(obj)],
         f"linking {Path(source).stem}")
    obj.unlink()
    binary.chmod(0o644)
    return binary, {
        "sources": {source: _sha256_file(src)},
        "tools": {"as": _tool_version([as_, "--version"]), "ld": _tool_version([ld, "--version"])},
    }


def _build_bootblock_into(out: Path) -> dict:
    binary, manifest = _assemble(out, "bootblock.S", BOOTBLOCK_FILE, "0x7c00")
    data = binary.read_bytes()
    if len(data) != 512 or data[-2:] != b"\x55\xaa":
        raise ImageError(f"bootblock is {len(data)} bytes ending {data[-2:].hex()}, "
                         "want 512 bytes ending 55aa")
    return manifest


def build_bootblock(force: bool = False) -> Path:
    """Path of the 512-byte boot sector, built if missing or stale."""
    d, _ = _build_into("bootblock", bootblock_key(), force, _build_bootblock_into)
    return d / BOOTBLOCK_FILE


# --------------------------------------------------------------------------
# the boot sector's workload as firmware, paced (the chaos engine's guest)


def bootrom_key() -> str:
    return _hash_inputs([
        ("format", str(BUILD_FORMAT).encode()),
        ("bootrom.S", _src("bootblock", "bootrom.S").read_bytes()),
    ])


def _build_bootrom_into(out: Path) -> dict:
    binary, manifest = _assemble(out, "bootrom.S", BOOTROM_FILE, "0xf0000")
    data = binary.read_bytes()
    # The reset vector (ROM offset 0xfff0) must hold the far jump (0xea) to F000:real.
    if len(data) != BOOTROM_SIZE or data[0xfff0] != 0xEA:
        raise ImageError(f"bootrom is {len(data)} bytes with {data[0xfff0:0xfff1].hex() or 'nothing'} "
                         f"at the reset vector, want {BOOTROM_SIZE} bytes and a far jump (ea)")
    return manifest


def build_bootrom(force: bool = False) -> Path:
    """Path of the 64 KiB paced boot-sector firmware (-bios), built if missing or stale."""
    d, _ = _build_into("bootrom", bootrom_key(), force, _build_bootrom_into)
    return d / BOOTROM_FILE


def bootblock_drive_args(path: Path, snapshot: bool = True, drive_id: str = "bootdisk") -> list[str]:
    """QEMU arguments that boot the boot sector on pc and q35.

    The disk is one sector: SeaBIOS on q35 (AHCI) refuses it ("could not read
    the boot disk") unless the geometry is given, as qtest does.  snapshot=on
    keeps the cached file untouched (the guest never writes the disk anyway).
    """
    drive = f"if=none,id={drive_id},file={str(path).replace(',', ',,')},format=raw"  # QEMU: ',,' is a comma
    if snapshot:
        drive += ",snapshot=on"
    # bootindex=0: a second disk (COLO, tests) must not become the boot disk.
    return ["-drive", drive, "-device", f"ide-hd,drive={drive_id},secs=1,cyls=1,heads=1,bootindex=0"]


# --------------------------------------------------------------------------
# Linux guest


@dataclasses.dataclass(frozen=True)
class LinuxImage:
    kernel: Path
    initrd: Path
    cmdline_base: str = CMDLINE_BASE
    manifest: Path | None = None

    def cmdline(self, mem_mib: int = DEFAULT_MEM_MIB, rate_mib_s: int = DEFAULT_RATE_MIB_S,
                hb_ms: int = DEFAULT_HB_MS) -> str:
        """Kernel command line: base plus the workload parameters read by /init."""
        for name, val, low in (("mem_mib", mem_mib, 1), ("rate_mib_s", rate_mib_s, 0),
                               ("hb_ms", hb_ms, 1)):
            if not isinstance(val, int) or isinstance(val, bool) or val < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {val!r}")
        return (f"{self.cmdline_base} harness.mem={mem_mib} harness.rate={rate_mib_s} "
                f"harness.hb_ms={hb_ms}")


def _busybox_checked() -> Path:
    if _package_version(BUSYBOX_PACKAGE) is None or not BUSYBOX.is_file():
        raise ImageError(f"Debian package {BUSYBOX_PACKAGE} is not installed "
                         f"(need a static {BUSYBOX})")
    return BUSYBOX


def linux_key(pin: KernelPin | None = None) -> str:
    pin = pin or load_pin()
    bb = _busybox_checked()
    return _hash_inputs([
        ("format", str(BUILD_FORMAT).encode()),
        ("pin", f"{pin.package}\0{pin.version}\0{pin.sha256}".encode()),
        ("init", _src("linux", "init").read_bytes()),
        ("workload.c", _src("linux", "workload.c").read_bytes()),
        ("busybox", _sha256_file(bb).encode()),
        ("applets", " ".join(BUSYBOX_APPLETS).encode()),
    ])


def _download_dir() -> Path:
    return image_dir() / "downloads"


def fetch_kernel_deb(pin: KernelPin, download_dir: Path | None = None) -> Path:
    """The pinned kernel .deb, verified against the pin's sha256.

    ``$HARNESS_KERNEL_DEB`` names a local copy to use instead of apt; otherwise
    it is fetched once with ``apt-get download`` into ``download_dir``.
    """
    local = os.environ.get("HARNESS_KERNEL_DEB")
    if local:
        path = Path(local)
        if not path.is_file():
            raise ImageError(f"HARNESS_KERNEL_DEB={local} does not exist "
                             f"(want pinned kernel {pin})")
        got = _sha256_file(path)
        if got != pin.sha256:
            raise ImageError(f"pinned kernel {pin}: sha256 mismatch for {path} "
                             f"(got {got}, pinned {pin.sha256})")
        return path

    ddir = download_dir or _download_dir()
    ddir.mkdir(parents=True, exist_ok=True)
    cached = ddir / f"{pin.package}_{pin.version.replace(':', '%3a')}_amd64.deb"
    if cached.is_file():
        if _sha256_file(cached) == pin.sha256:
            return cached
        cached.unlink()

    apt = shutil.which("apt-get")
    if not apt:
        raise ImageError(f"'apt-get' not found: cannot fetch pinned kernel {pin} "
                         "(set HARNESS_KERNEL_DEB to a local copy)")
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=ddir) as tmp:
        try:
            _run([apt, "download", "-q", f"{pin.package}={pin.version}"], "apt-get download",
                 cwd=Path(tmp))
        except ImageError as e:
            raise ImageError(f"pinned kernel {pin} unavailable: {e} "
                             "(run apt-get update, or set HARNESS_KERNEL_DEB)") from None
        debs = sorted(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise ImageError(f"pinned kernel {pin}: apt-get download gave {len(debs)} files")
        got = _sha256_file(debs[0])
        if got != pin.sha256:
            raise ImageError(f"pinned kernel {pin}: sha256 mismatch of the downloaded package "
                             f"(got {got}, pinned {pin.sha256})")
        os.replace(debs[0], cached)
    return cached


def _extract_vmlinuz(deb: Path, dest: Path, pin: KernelPin) -> str:
    """Copy boot/vmlinuz-* out of the .deb; returns the member name."""
    dpkg_deb = _need_tool("dpkg-deb", "dpkg")
    proc = subprocess.Popen([dpkg_deb, "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    found = None
    try:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile() and re.fullmatch(r"(\./)?boot/vmlinuz-[^/]+", member.name):
                    src = tar.extractfile(member)
                    assert src is not None
                    with open(dest, "wb") as f:
                        shutil.copyfileobj(src, f)
                    found = member.name
                    break
    except tarfile.TarError as e:
        raise ImageError(f"pinned kernel {pin}: cannot read {deb.name}: {e}") from None
    finally:
        if proc.stdout:
            proc.stdout.close()
        if proc.poll() is None:
            proc.kill()  # boot/ comes first: the rest of the archive is not needed
        proc.wait()
    if not found:
        raise ImageError(f"pinned kernel {pin}: no boot/vmlinuz-* in {deb.name}")
    dest.chmod(0o644)
    return found.lstrip("./")


def _build_workload(src: Path, out: Path) -> str:
    gcc = _need_tool("gcc", "gcc")
    _run([gcc, "-static", "-O2", "-s", "-Wall",
          f"-ffile-prefix-map={src.parent}=.", "-Wl,--build-id=none",
          "-o", str(out), str(src)],
         "compiling workload.c (gcc -static needs the Debian package libc6-dev)")
    return _tool_version([gcc, "--version"])


class _Newc:
    """A newc ("070701") cpio archive with fixed metadata: sorted names,
    inode numbers in that order, uid/gid 0, mtime 0."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, bytes, int, int]] = {}

    def dir(self, name: str, perm: int = 0o755) -> None:
        self.entries[name] = (0o040000 | perm, b"", 0, 0)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self.entries[name] = (0o100000 | perm, data, 0, 0)

    def symlink(self, name: str, target: str) -> None:
        self.entries[name] = (0o120000 | 0o777, target.encode(), 0, 0)

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self.entries[name] = (0o020000 | perm, b"", major, minor)

    @staticmethod
    def _header(ino: int, mode: int, nlink: int, size: int, rmaj: int, rmin: int,
                namesize: int) -> bytes:
        fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, namesize, 0)
        return b"070701" + b"".join(b"%08X" % f for f in fields)

    def _entry(self, buf: io.BytesIO, ino: int, name: str, mode: int, data: bytes,
               rmaj: int, rmin: int) -> None:
        bname = name.encode() + b"\0"
        nlink = 2 if mode & 0o170000 == 0o040000 else 1
        buf.write(self._header(ino, mode, nlink, len(data), rmaj, rmin, len(bname)))
        buf.write(bname)
        buf.write(b"\0" * (-buf.tell() % 4))
        buf.write(data)
        buf.write(b"\0" * (-buf.tell() % 4))

    def bytes(self) -> bytes:
        buf = io.BytesIO()
        for ino, name in enumerate(sorted(self.entries), start=1):
            mode, data, rmaj, rmin = self.entries[name]
            self._entry(buf, ino, name, mode, data, rmaj, rmin)
        self._entry(buf, 0, "TRAILER!!!", 0, b"", 0, 0)
        buf.write(b"\0" * (-buf.tell() % 512))
        return buf.getvalue()


def _build_initramfs(init: Path, workload: Path, busybox: Path, out: Path) -> None:
    listed = set(_run([str(busybox), "--list"], "busybox --list").stdout.split())
    missing = [a for a in BUSYBOX_APPLETS if a not in listed]
    if missing:
        raise ImageError(f"{busybox} lacks applets: {' '.join(missing)}")
    cpio = _Newc()
    for d in ("bin", "dev", "proc", "sys", "root"):
        cpio.dir(d, 0o700 if d == "root" else 0o755)
    cpio.dir("tmp", 0o1777)
    cpio.chardev("dev/console", 5, 1, 0o600)
    cpio.chardev("dev/ttyS0", 4, 64, 0o660)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in BUSYBOX_APPLETS:
        cpio.symlink(f"bin/{applet}", "busybox")
    cpio.file("init", init.read_bytes(), 0o755)
    cpio.file("workload", workload.read_bytes(), 0o755)
    out.write_bytes(gzip.compress(cpio.bytes(), compresslevel=9, mtime=0))
    out.chmod(0o644)


def _linux_builder(pin: KernelPin):
    def build(out: Path) -> dict:
        init = _src("linux", "init")
        wsrc = _src("linux", "workload.c")
        busybox = _busybox_checked()
        deb = fetch_kernel_deb(pin)
        member = _extract_vmlinuz(deb, out / KERNEL_FILE, pin)
        gcc_version = _build_workload(wsrc, out / WORKLOAD_FILE)
        (out / WORKLOAD_FILE).chmod(0o755)
        _build_initramfs(init, out / WORKLOAD_FILE, busybox, out / INITRD_FILE)
        return {
            "kernel": {"package": pin.package, "version": pin.version,
                       "deb_sha256": pin.sha256, "member": member},
            "busybox": {"package": BUSYBOX_PACKAGE,
                        "version": _package_version(BUSYBOX_PACKAGE),
                        "sha256": _sha256_file(busybox), "applets": list(BUSYBOX_APPLETS)},
            "sources": {"init": _sha256_file(init), "workload.c": _sha256_file(wsrc)},
            "tools": {"gcc": gcc_version},
            "cmdline_base": CMDLINE_BASE,
        }
    return build


def build_linux(force: bool = False) -> LinuxImage:
    """The Linux guest (kernel, initramfs), built if missing or stale."""
    pin = load_pin()
    d, _ = _build_into("linux", linux_key(pin), force, _linux_builder(pin))
    return LinuxImage(kernel=d / KERNEL_FILE, initrd=d / INITRD_FILE,
                      cmdline_base=CMDLINE_BASE, manifest=d / MANIFEST)


# --------------------------------------------------------------------------
# all images


def build_all(force: bool = False) -> dict:
    """Build both guests; write and return the combined manifest
    (``image_dir()/manifest.json``)."""
    bootblock = build_bootblock(force=force)
    bootrom = build_bootrom(force=force)
    linux = build_linux(force=force)
    combined = {
        "format": BUILD_FORMAT,
        "bootblock": {"path": str(bootblock),
                      "manifest": json.loads((bootblock.parent / MANIFEST).read_text())},
        "bootrom": {"path": str(bootrom),
                    "manifest": json.loads((bootrom.parent / MANIFEST).read_text())},
        "linux": {"kernel": str(linux.kernel), "initrd": str(linux.initrd),
                  "cmdline_base": linux.cmdline_base,
                  "manifest": json.loads(linux.manifest.read_text()) if linux.manifest else None},
    }
    with _locked() as root:
        _write_json_atomic(root / MANIFEST, combined)
    return combined


def _check_image(kind: str, key_fn, tools: list[tuple[str, str]]) -> list[str]:
    try:
        key = key_fn()
    except ImageError as e:
        return [f"{kind}: {e}"]
    d = image_dir() / f"{kind}-{key[:16]}"
    manifest = _read_manifest(d)
    if manifest is None or manifest.get("key") != key:
        problems = [f"{kind}: not built for the current sources (would be {d})"]
        problems += [f"{kind}: build needs '{t}' (Debian package {pkg})"
                     for t, pkg in tools if not shutil.which(t)]
        return problems
    bad = _verify_outputs(d, manifest)
    return [f"{kind}: {name} in {d} does not match its manifest sha256" for name in bad]


def check() -> list[str]:
    """What is missing or stale, one line each; empty when everything is built
    for the current sources and pins and matches its manifest."""
    problems = _check_image("bootblock", bootblock_key, [("as", "binutils"), ("ld", "binutils")])
    problems += _check_image("bootrom", bootrom_key, [("as", "binutils"), ("ld", "binutils")])
    linux_tools = [("gcc", "gcc"), ("dpkg-deb", "dpkg")]
    if not os.environ.get("HARNESS_KERNEL_DEB"):
        linux_tools.append(("apt-get", "apt"))
    problems += _check_image("linux", linux_key, linux_tools)
    return problems


# --------------------------------------------------------------------------
# command line: harness images ...


def main(argv: list[str] | None = None) -> int:
    """``harness images build [--force] [--check-only]`` and
    ``harness images path {bootblock,kernel,initrd}``."""
    parser = argparse.ArgumentParser(prog="harness images",
                                     description="Build and find the guest images.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build missing or stale images (cached)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--check-only", action="store_true",
                   help="build nothing; list what is missing or stale, exit 1 if anything is")
    p = sub.add_parser("path", help="print the path of an image (building it if needed)")
    p.add_argument("what", choices=("bootblock", "bootrom", "kernel", "initrd"))
    args = parser.parse_args(argv)

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="harness images: %(message)s",
                            stream=sys.stderr)
    try:
        if args.cmd == "build" and args.check_only:
            problems = check()
            for line in problems:
                print(line)
            if not problems:
                print(f"images up to date in {image_dir()}")
            return 1 if problems else 0
        if args.cmd == "build":
            combined = build_all(force=args.force)
            bb = combined["bootblock"]
            print(f"bootblock {bb['path']} "
                  f"sha256={bb['manifest']['outputs'][BOOTBLOCK_FILE]['sha256']}")
            br = combined["bootrom"]
            print(f"bootrom   {br['path']} "
                  f"sha256={br['manifest']['outputs'][BOOTROM_FILE]['sha256']}")
            lx = combined["linux"]
            outs = lx["manifest"]["outputs"]
            print(f"kernel    {lx['kernel']} sha256={outs[KERNEL_FILE]['sha256']}")
            print(f"initrd    {lx['initrd']} sha256={outs[INITRD_FILE]['sha256']}")
            print(f"cmdline   {lx['cmdline_base']}")
            return 0
        if args.what == "bootblock":
            print(build_bootblock())
        elif args.what == "bootrom":
            print(build_bootrom())
        else:
            img = build_linux()
            print(img.kernel if args.what == "kernel" else img.initrd)
        return 0
    except ImageError as e:
        print(f"harness images: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
