"""Directories the harness writes to, checked before anything starts.

Nothing unverified is trusted: a run root or cache dir must be ours (owner = our
effective uid) and private (0700 when we create it; never writable by others),
and an artifacts dir must be creatable and writable. Each problem is one line
naming the input (an option or an environment variable) and the path.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

# sun_path holds 107 bytes + NUL. Longest path the harness puts under a local run root:
# a reproducer check's run dir (/qmh-repro-xxxxxxxx, 19) holding the chaos script's temp
# dir (/repro-destination-xxxxxxxx, 27) and its socket (/serial.sock, 12): root + 58.
MAX_RUN_ROOT = 107 - 58
RUN_ROOT_ENV = "HARNESS_RUN_ROOT"


class DirError(Exception):
    """One line: which input, which path, what is wrong with it."""


def _owner_name(uid: int) -> str:
    try:
        import pwd
        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


def check_ours(path: Path, what: str) -> os.stat_result:
    """path must be an existing directory owned by us and not writable by others."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DirError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise DirError(f"{what} {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DirError(f"{what} {path} is not a directory")
    me = os.geteuid()
    if st.st_uid != me:
        raise DirError(f"{what} {path} is owned by {_owner_name(st.st_uid)} (uid {st.st_uid}), "
                       f"not by {_owner_name(me)} (uid {me}): refusing to use it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise DirError(f"{what} {path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                       f"refusing to use it (chmod go-w it)")
    return st


def private_dir(path: Path | str, what: str) -> Path:
    """Create path 0700 (parents as needed) or check an existing one is ours and private."""
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)      # mkdir's mode went through the umask
    except FileExistsError:
        pass
    except NotADirectoryError:
        raise DirError(f"{what} {path}: a parent is not a directory") from None
    except OSError as exc:
        raise DirError(f"{what} {path}: cannot create it: {exc.strerror}") from None
    check_ours(path, what)
    return path


def local_run_root() -> Path:
    """Where local run dirs (QEMU's sockets, cores) go: $HARNESS_RUN_ROOT or the temp dir.

    A root named in the environment must exist, be ours and private, and be short
    enough for QEMU's UNIX socket paths; the shared temp dir (sticky, everybody's)
    is fine as it is, since each run dir in it is a private 0700 dir of ours."""
    env = os.environ.get(RUN_ROOT_ENV)
    if not env:
        return Path(tempfile.gettempdir())
    what = f"{RUN_ROOT_ENV}="
    root = Path(env)
    if not root.is_absolute():
        raise DirError(f"{what}{env} must be an absolute path")
    if len(env) > MAX_RUN_ROOT:
        raise DirError(f"{what}{env} is {len(env)} characters: QEMU's UNIX socket paths under it "
                       f"would pass AF_UNIX's 107 bytes; use a root of at most {MAX_RUN_ROOT}")
    try:
        st = os.stat(root)
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX \
            and st.st_mode & stat.S_IWOTH:
        return root      # a shared sticky dir like /tmp: fine, as the default is
    check_ours(root, what.rstrip("="))
    return root


def writable_dir(path: Path | str, option: str, create: bool = True) -> Path:
    """An output dir (artifacts): must be a directory we can write, or creatable as one.

    Proven by writing a probe file (access(2) says yes to root even on /proc).
    create=False leaves no trace: the dirs the probe created are removed again."""
    path = Path(path).resolve()
    missing: list[Path] = []
    for parent in [path, *path.parents]:
        if os.path.lexists(parent):
            if not parent.is_dir():
                what = "is a file" if parent == path else f"is under {parent}, which is not a directory"
                raise DirError(f"{option} {path} {what}")
            break
        missing.append(parent)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DirError(f"{option} {path}: not writable: {exc.strerror or exc}") from None
    finally:
        if not create:
            for d in missing:          # deepest first
                try:
                    d.rmdir()
                except OSError:
                    break
    return path


__all__ = ["DirError", "private_dir", "check_ours", "local_run_root", "writable_dir",
           "MAX_RUN_ROOT", "RUN_ROOT_ENV"]
