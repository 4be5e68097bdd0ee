"""The TOML host inventory: which farm hosts exist and how to reach them.

    [defaults]              # optional; any host field except address, migration_address, qemu
    user = "root"
    identity = "keys/id_ed25519"        # local paths: relative to this file, ~ expanded
    known_hosts = "keys/known_hosts"

    [hosts.alpha]
    address = "10.231.0.11"
    migration_address = "10.232.0.11"   # default: address
    [hosts.alpha.qemu]                  # label -> absolute path on that host
    "11.1.3" = "/opt/qemu-versions/11.1.3/qemu-system-x86_64"

Every problem is one InventoryError line naming the file, the host and the field:
whoever reads it is fixing a config file, not debugging the harness.
"""
from __future__ import annotations

import difflib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.9/3.10: the backport, same API
    import tomli as tomllib

DEFAULT_QEMU = "qemu-system-x86_64"
# sun_path is 108 bytes; the harness puts "<run_root>/<private dir>/<socket>" there.
RUN_ROOT_MAX = 60
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")   # POSIX portable login names
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PER_HOST_ONLY = ("address", "migration_address", "qemu")
# Built-in defaults; `user`, `identity` and `known_hosts` have none: say who you log in as, with what.
_DEFAULTS = {"port": 22, "slots": 1, "tags": [], "python": "python3",
             "run_root": "/tmp", "migration_interface": None, "netns": None}
_FIELDS = ("address", "migration_address", "migration_interface", "netns", "user", "port",
           "identity", "known_hosts", "slots", "tags", "python", "run_root", "qemu")


class InventoryError(Exception):
    """One line: what is wrong, in which inventory file, host and field."""


@dataclass(frozen=True)
class HostEntry:
    name: str
    address: str                    # management (SSH) address
    port: int
    user: str
    identity: Path                  # local files, absolute
    known_hosts: Path
    migration_address: str          # where QEMU listens for migration streams
    migration_interface: str | None
    netns: str | None
    qemu: tuple[tuple[str, str], ...]   # (label, path on the host); always has "default"
    slots: int
    tags: frozenset[str]
    python: str
    run_root: str

    @property
    def qemu_labels(self) -> tuple[str, ...]:
        return tuple(label for label, _ in self.qemu)

    def qemu_binary(self, label_or_path: str | None = None) -> str:
        """None -> the default binary; a label -> its path; an absolute path -> itself."""
        if label_or_path is None:
            label_or_path = "default"
        for label, path in self.qemu:
            if label == label_or_path:
                return path
        if label_or_path.startswith("/"):
            return label_or_path
        raise InventoryError(f"host {self.name!r}: no QEMU labelled {label_or_path!r} "
                             f"(labels: {', '.join(self.qemu_labels)}; or give an absolute path)")


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: tuple[HostEntry, ...]

    def host(self, name: str) -> HostEntry:
        for h in self.hosts:
            if h.name == name:
                return h
        raise InventoryError(f"inventory {self.path}: no host {name!r} "
                             f"(hosts: {', '.join(h.name for h in self.hosts)})")

    def select(self, tags: Iterable[str] = ()) -> tuple[HostEntry, ...]:
        """Hosts carrying all of tags (all hosts for no tags); never empty."""
        want = frozenset([tags] if isinstance(tags, str) else tags)  # "farm" is one tag, not 4
        found = tuple(h for h in self.hosts if want <= h.tags)
        if not found:
            have = sorted(set().union(*(h.tags for h in self.hosts)))
            raise InventoryError(f"inventory {self.path}: no host has tags {', '.join(sorted(want))} "
                                 f"(tags in inventory: {', '.join(have) or 'none'})")
        return found


def load(path: str | Path) -> Inventory:
    path = Path(path)
    where = f"inventory {path}"
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise InventoryError(f"{where}: no such file") from None
    except OSError as exc:
        raise InventoryError(f"{where}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{where}: not valid TOML: {exc}") from None

    _unknown(where, data, ("defaults", "hosts"), "top-level key")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InventoryError(f"{where}: [defaults] must be a table")
    _unknown(f"{where}: [defaults]", defaults, _FIELDS, "field")
    for key in _PER_HOST_ONLY:
        if key in defaults:
            raise InventoryError(f"{where}: [defaults]: field {key!r} is per host; "
                                 f"set it in each [hosts.NAME] table")
    hosts = data.get("hosts", {})
    if not isinstance(hosts, dict) or not hosts:
        raise InventoryError(f"{where}: no hosts (add a [hosts.NAME] table with an address)")

    base = path.absolute().parent
    entries = tuple(_host(where, base, name, table, defaults) for name, table in hosts.items())
    seen: dict[tuple[str, int], str] = {}
    for h in entries:
        key = (h.address.lower(), h.port)   # DNS names are case-insensitive
        if key in seen:
            raise InventoryError(f"{where}: hosts {seen[key]!r} and {h.name!r} both use "
                                 f"address {h.address} port {h.port}")
        seen[key] = h.name
    return Inventory(path=path, hosts=entries)


def _unknown(where: str, table: dict, known: Iterable[str], what: str) -> None:
    for key in table:
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise InventoryError(f"{where}: unknown {what} {key!r}{hint}")


def _host(where: str, base: Path, name: str, table: Any, defaults: dict) -> HostEntry:
    if not _HOST_NAME.fullmatch(name):
        raise InventoryError(f"{where}: host {name!r}: name must match [A-Za-z0-9][A-Za-z0-9_.-]*")
    where = f"{where}: host {name!r}"
    if not isinstance(table, dict):
        raise InventoryError(f"{where}: must be a table ([hosts.{name}])")
    _unknown(where, table, _FIELDS, "field")
    merged = {**_DEFAULTS, **defaults, **table}

    def bad(field: str, msg: str) -> InventoryError:
        origin = " (from [defaults])" if field in defaults and field not in table else ""
        return InventoryError(f"{where}: field {field!r}{origin} {msg}")

    def word(field: str, *, required: bool = True) -> str | None:
        """A non-empty string without whitespace (or None when optional and absent)."""
        value = merged.get(field)
        if value is None and not required:
            return None
        if value is None:
            raise InventoryError(f"{where}: field {field!r} is required")
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise bad(field, f"must be a non-empty string without whitespace, not {value!r}")
        return value

    def positive(field: str, top: int | None = None) -> int:
        value = merged[field]
        # bool is an int in Python; `port = true` is a typo, not port 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (top and value > top):
            rng = f"an integer 1..{top}" if top else "a positive integer"
            raise bad(field, f"must be {rng}, not {value!r}")
        return value

    def local_file(field: str) -> Path:
        value = merged.get(field)
        if value is None:
            raise InventoryError(f"{where}: field {field!r} is required")
        if not isinstance(value, str) or not value:
            raise bad(field, f"must be a path string, not {value!r}")
        p = Path(os.path.normpath(base / Path(value).expanduser()))  # `/` keeps absolute paths
        if not p.is_file():
            raise bad(field, f"names {p}, which is not a file")
        return p

    address = word("address")
    user = merged.get("user")
    if user is None:
        raise InventoryError(f"{where}: field 'user' is required")
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise bad("user", f"must be a login name ([A-Za-z0-9_][A-Za-z0-9_.-]*), not {user!r}")
    port = positive("port", 65535)
    identity = local_file("identity")
    known_hosts = local_file("known_hosts")
    # Host keys are pinned (no accept-new mode), so an empty known_hosts could never connect.
    try:
        lines = known_hosts.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise bad("known_hosts", f"names {known_hosts}, which cannot be read: {exc.strerror}") from None
    for n, ln in enumerate(lines, 1):
        problem = _known_hosts_problem(ln)
        if problem:
            raise bad("known_hosts", f"names {known_hosts}, whose line {n} {problem}")
    if not any(ln.strip() and not ln.lstrip().startswith("#") for ln in lines):
        raise bad("known_hosts", f"names {known_hosts}, which is empty; host keys are pinned "
                                 f"(no accept-new mode), so add this host's key to it")
    tags = merged["tags"]
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise bad("tags", f"must be a list of non-empty strings, not {tags!r}")
    python = merged["python"]
    if not isinstance(python, str) or not python:
        raise bad("python", f"must be a non-empty string, not {python!r}")
    run_root = merged["run_root"]
    if not isinstance(run_root, str) or not run_root.startswith("/"):
        raise bad("run_root", f"must be an absolute path, not {run_root!r}")
    if len(run_root) > RUN_ROOT_MAX:
        raise bad("run_root", f"is {len(run_root)} characters, at most {RUN_ROOT_MAX} allowed: "
                              f"UNIX socket paths under it must stay below 108 bytes")
    return HostEntry(
        name=name, address=address, port=port, user=user, identity=identity,
        known_hosts=known_hosts,
        migration_address=word("migration_address", required=False) or address,
        migration_interface=word("migration_interface", required=False),
        netns=word("netns", required=False), qemu=_qemu(where, table.get("qemu", {})),
        slots=positive("slots"), tags=frozenset(tags), python=python, run_root=run_root)


def _qemu(where: str, table: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, dict):
        raise InventoryError(f"{where}: field 'qemu' must be a table of label = path, not {table!r}")
    for label, path in table.items():
        if not label:
            raise InventoryError(f"{where}: field 'qemu' has an empty label")
        # Paths on the remote host: checked for shape only, existence is the host's business.
        if not isinstance(path, str) or not path.startswith("/"):
            raise InventoryError(f"{where}: field 'qemu' label {label!r} must map to an absolute "
                                 f"path, not {path!r}")
    pairs = tuple(table.items())
    return pairs if "default" in table else (("default", DEFAULT_QEMU),) + pairs


def _known_hosts_problem(line: str) -> str | None:
    """What is wrong with one known_hosts line (None: fine, a comment or blank), checked
    here so paramiko never gets to raise its traceback over it."""
    import base64
    import binascii
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    if fields[0].startswith("@"):          # @cert-authority / @revoked marker
        fields = fields[1:]
    if len(fields) < 3:
        return "is not 'HOSTS KEYTYPE BASE64KEY'"
    try:
        base64.b64decode(fields[2], validate=True)
    except (binascii.Error, ValueError):
        return f"has a key that is not valid base64 ({fields[2][:20]}...)"
    return None
