"""The TOML host inventory: parsing, defaults, one-line errors, `harness hosts check`."""
import subprocess
from pathlib import Path

import pytest

from harness.hosts.inventory import DEFAULT_QEMU, HostEntry, InventoryError, load

PYTHON = "/work/main/.venv/bin/python"

DEFAULTS = """
[defaults]
user = "root"
identity = "keys/id_ed25519"
known_hosts = "keys/known_hosts"
"""

VALID = """
[defaults]
user = "root"
port = 22
identity = "keys/id_ed25519"
known_hosts = "keys/known_hosts"
slots = 2
tags = ["farm"]
python = "/usr/bin/python3"
run_root = "/tmp"

[hosts.alpha]
address = "10.231.0.11"
migration_address = "10.232.0.11"
migration_interface = "mig0"
netns = "qmh-farm-alpha"
run_root = "/tmp/qmh-farm-alpha"
[hosts.alpha.qemu]
default = "/usr/bin/qemu-system-x86_64"
"11.1.3" = "/opt/qemu-versions/11.1.3/qemu-system-x86_64"

[hosts.beta]
address = "beta.farm"
port = 2222
user = "qa"
tags = ["farm", "big"]
slots = 8
known_hosts = "~/kh"
"""


@pytest.fixture
def farm(tmp_path, monkeypatch):
    """A farm dir with keys/ and a fake home (for ~ paths); returns a writer for farm.toml."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "id_ed25519").write_text("PRIVATE KEY\n")
    (keys / "known_hosts").write_text("10.231.0.11 ssh-ed25519 AAAA\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "kh").write_text("# pinned\nbeta.farm ssh-ed25519 AAAA\n")
    monkeypatch.setenv("HOME", str(home))

    def write(text: str) -> Path:
        path = tmp_path / "farm.toml"
        path.write_text(text)
        return path
    return write


def error(path) -> str:
    with pytest.raises(InventoryError) as info:
        load(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"inventory {path}: ")
    # no chained traceback: raised outside an except block, or `from None`
    exc = info.value
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    return msg


def host(body: str, name: str = "alpha", defaults: str = DEFAULTS) -> str:
    return f'{defaults}\n[hosts.{name}]\naddress = "10.0.0.1"\n{body}\n'


def test_valid_inventory_with_defaults_and_relative_paths(farm, tmp_path):
    inv = load(farm(VALID))
    assert [h.name for h in inv.hosts] == ["alpha", "beta"]
    alpha, beta = inv.hosts
    assert alpha == HostEntry(
        name="alpha", address="10.231.0.11", port=22, user="root",
        identity=tmp_path / "keys" / "id_ed25519", known_hosts=tmp_path / "keys" / "known_hosts",
        migration_address="10.232.0.11", migration_interface="mig0", netns="qmh-farm-alpha",
        qemu=(("default", "/usr/bin/qemu-system-x86_64"),
              ("11.1.3", "/opt/qemu-versions/11.1.3/qemu-system-x86_64")),
        slots=2, tags=frozenset({"farm"}), python="/usr/bin/python3", run_root="/tmp/qmh-farm-alpha")
    assert (beta.port, beta.user, beta.slots, beta.tags) == (2222, "qa", 8, {"farm", "big"})
    assert beta.migration_address == "beta.farm"     # defaults to address
    assert beta.migration_interface is None and beta.netns is None
    assert beta.known_hosts == tmp_path / "home" / "kh"   # ~ expanded
    assert beta.qemu == (("default", DEFAULT_QEMU),)
    assert beta.run_root == "/tmp" and beta.python == "/usr/bin/python3"
    assert hash(alpha) != hash(beta)   # frozen and hashable


def test_relative_paths_are_relative_to_the_inventory_not_the_cwd(farm, tmp_path, monkeypatch):
    path = farm(VALID)
    monkeypatch.chdir(tmp_path / "home")
    assert load(path).host("alpha").identity == tmp_path / "keys" / "id_ed25519"
    monkeypatch.chdir(tmp_path)
    assert load("farm.toml").host("alpha").identity == tmp_path / "keys" / "id_ed25519"


def test_builtin_defaults(farm):
    h = load(farm(host(""))).host("alpha")
    assert (h.port, h.slots, h.tags, h.python, h.run_root) == (22, 1, frozenset(), "python3", "/tmp")


def test_qemu_binary(farm):
    alpha = load(farm(VALID)).host("alpha")
    assert alpha.qemu_binary(None) == "/usr/bin/qemu-system-x86_64"
    assert alpha.qemu_binary("11.1.3") == "/opt/qemu-versions/11.1.3/qemu-system-x86_64"
    assert alpha.qemu_binary("/srv/qemu/bin/qemu-system-x86_64") == "/srv/qemu/bin/qemu-system-x86_64"
    with pytest.raises(InventoryError) as info:
        alpha.qemu_binary("11.2")
    assert str(info.value) == ("host 'alpha': no QEMU labelled '11.2' "
                               "(labels: default, 11.1.3; or give an absolute path)")


def test_host_and_select(farm):
    path = farm(VALID)
    inv = load(path)
    assert inv.host("beta").address == "beta.farm"
    with pytest.raises(InventoryError, match=r"^inventory .*farm\.toml: no host 'zeta' "
                                             r"\(hosts: alpha, beta\)$"):
        inv.host("zeta")
    assert [h.name for h in inv.select()] == ["alpha", "beta"]
    assert [h.name for h in inv.select(["farm"])] == ["alpha", "beta"]
    assert [h.name for h in inv.select(["farm", "big"])] == ["beta"]
    assert [h.name for h in inv.select("big")] == ["beta"]   # a str is one tag
    with pytest.raises(InventoryError) as info:
        inv.select(["gpu", "big"])
    assert str(info.value) == f"inventory {path}: no host has tags big, gpu (tags in inventory: big, farm)"


# (inventory text, substrings the one-line message must contain)
RULES = {
    "host-name": (f'{DEFAULTS}\n[hosts."bad name"]\naddress = "x"\n',
                  ["host 'bad name'", "name must match"]),
    "address-missing": (f'{DEFAULTS}\n[hosts.alpha]\nport = 22\n',
                        ["host 'alpha'", "field 'address' is required"]),
    "address-empty": (f'{DEFAULTS}\n[hosts.alpha]\naddress = ""\n',
                      ["host 'alpha'", "field 'address'", "non-empty string without whitespace"]),
    "address-space": (f'{DEFAULTS}\n[hosts.alpha]\naddress = "10.0.0.1 x"\n',
                      ["host 'alpha'", "field 'address'", "'10.0.0.1 x'"]),
    "address-type": (f'{DEFAULTS}\n[hosts.alpha]\naddress = 10\n',
                     ["host 'alpha'", "field 'address'", "not 10"]),
    "migration-address": (host('migration_address = " "'),
                          ["host 'alpha'", "field 'migration_address'", "without whitespace"]),
    "port-zero": (host("port = 0"), ["host 'alpha'", "field 'port' must be an integer 1..65535, not 0"]),
    "port-big": (host("port = 65536"), ["host 'alpha'", "field 'port'", "not 65536"]),
    "port-bool": (host("port = true"), ["host 'alpha'", "field 'port'", "not True"]),
    "port-str": (host('port = "22"'), ["host 'alpha'", "field 'port'", "not '22'"]),
    "user-empty": (host('user = ""'), ["host 'alpha'", "field 'user' must be a login name"]),
    "user-space": (host('user = "root x"'), ["host 'alpha'", "field 'user' must be a login name",
                                             "'root x'"]),
    "user-missing": (host("", defaults=DEFAULTS.replace('user = "root"', "")),
                     ["host 'alpha'", "field 'user' is required"]),
    "identity-missing": (host("", defaults=DEFAULTS.replace('identity = "keys/id_ed25519"', "")),
                         ["host 'alpha'", "field 'identity' is required"]),
    "identity-no-file": (host('identity = "keys/nope"'),
                         ["host 'alpha'", "field 'identity'", "/keys/nope, which is not a file"]),
    "identity-dir": (host('identity = "keys"'), ["host 'alpha'", "field 'identity'", "not a file"]),
    "known-hosts-missing": (host("", defaults=DEFAULTS.replace('known_hosts = "keys/known_hosts"', "")),
                            ["host 'alpha'", "field 'known_hosts' is required"]),
    "known-hosts-no-file": (host('known_hosts = "keys/nope"'),
                            ["host 'alpha'", "field 'known_hosts'", "/keys/nope, which is not a file"]),
    "known-hosts-empty": (host('known_hosts = "keys/empty"'),
                          ["host 'alpha'", "field 'known_hosts'", "/keys/empty, which is empty",
                           "pinned", "no accept-new mode"]),
    "known-hosts-comments-only": (host('known_hosts = "keys/comments"'),
                                  ["host 'alpha'", "field 'known_hosts'", "which is empty"]),
    "slots-zero": (host("slots = 0"), ["host 'alpha'", "field 'slots' must be a positive integer, not 0"]),
    "slots-float": (host("slots = 1.5"), ["host 'alpha'", "field 'slots'", "not 1.5"]),
    "tags-str": (host('tags = "farm"'), ["host 'alpha'", "field 'tags' must be a list of non-empty strings"]),
    "tags-empty-item": (host('tags = ["farm", ""]'), ["host 'alpha'", "field 'tags'", "['farm', '']"]),
    "tags-int-item": (host('tags = [1]'), ["host 'alpha'", "field 'tags'"]),
    "python-empty": (host('python = ""'), ["host 'alpha'", "field 'python'"]),
    "qemu-relative": (host('[hosts.alpha.qemu]\n"11.1" = "bin/qemu"'),
                      ["host 'alpha'", "field 'qemu'", "label '11.1'", "absolute path, not 'bin/qemu'"]),
    "qemu-default-relative": (host('[hosts.alpha.qemu]\ndefault = "qemu-system-x86_64"'),
                              ["host 'alpha'", "field 'qemu'", "label 'default'"]),
    "qemu-not-table": (host('qemu = "/usr/bin/qemu"'), ["host 'alpha'", "field 'qemu' must be a table"]),
    "qemu-empty-label": (host('[hosts.alpha.qemu]\n"" = "/usr/bin/qemu"'),
                         ["host 'alpha'", "field 'qemu' has an empty label"]),
    "run-root-relative": (host('run_root = "tmp/x"'),
                          ["host 'alpha'", "field 'run_root' must be an absolute path, not 'tmp/x'"]),
    "run-root-long": (host(f'run_root = "/{"r" * 60}"'),
                      ["host 'alpha'", "field 'run_root' is 61 characters, at most 60",
                       "below 108 bytes"]),
    "unknown-field": (host('adress = "10.0.0.2"'),
                      ["host 'alpha'", "unknown field 'adress'", "did you mean 'address'?"]),
    "unknown-top-level": (f'host = 1\n{DEFAULTS}\n[hosts.alpha]\naddress = "x"\n',
                          ["unknown top-level key 'host'"]),
    "defaults-unknown": (DEFAULTS + 'slot = 2\n[hosts.alpha]\naddress = "x"\n',
                         ["[defaults]: unknown field 'slot'", "did you mean 'slots'?"]),
    "defaults-address": (DEFAULTS + 'address = "x"\n[hosts.alpha]\naddress = "x"\n',
                         ["[defaults]: field 'address' is per host"]),
    "defaults-migration-address": (DEFAULTS + 'migration_address = "x"\n[hosts.alpha]\naddress = "x"\n',
                                   ["[defaults]: field 'migration_address' is per host"]),
    "defaults-qemu": (DEFAULTS + '[defaults.qemu]\ndefault = "/q"\n[hosts.alpha]\naddress = "x"\n',
                      ["[defaults]: field 'qemu' is per host"]),
    "defaults-bad-value": (DEFAULTS + 'slots = 0\n[hosts.alpha]\naddress = "x"\n',
                           ["host 'alpha': field 'slots' (from [defaults]) must be a positive integer, "
                            "not 0"]),
    "no-hosts": (DEFAULTS, ["no hosts"]),
    "empty-hosts": (DEFAULTS + "[hosts]\n", ["no hosts"]),
    "host-not-table": (DEFAULTS + "[hosts]\nalpha = 1\n", ["host 'alpha': must be a table"]),
    "duplicate-address-port": (host("", "alpha") + '[hosts.beta]\naddress = "10.0.0.1"\nport = 22\n',
                               ["hosts 'alpha' and 'beta' both use address 10.0.0.1 port 22"]),
    "not-toml": ("[hosts.alpha\n", ["not valid TOML: ", "line 1"]),
}


@pytest.mark.parametrize("rule", RULES)
def test_rule_gives_one_line(farm, tmp_path, rule):
    (tmp_path / "keys" / "empty").write_text("")
    (tmp_path / "keys" / "comments").write_text("# nothing yet\n\n")
    text, expected = RULES[rule]
    msg = error(farm(text))
    for part in expected:
        assert part in msg, msg


def test_error_names_the_resolved_path(farm, tmp_path):
    msg = error(farm(host('identity = "keys/../keys/nope"')))
    assert f"names {tmp_path / 'keys' / 'nope'}, which is not a file" in msg


def test_duplicate_migration_address_and_same_address_other_port_are_fine(farm):
    inv = load(farm(host('migration_address = "10.9.0.1"')
                    + '[hosts.beta]\naddress = "10.0.0.1"\nport = 2222\nmigration_address = "10.9.0.1"\n'))
    assert [h.name for h in inv.hosts] == ["alpha", "beta"]


def test_qemu_without_default_gets_the_path_lookup_default(farm):
    h = load(farm(host('[hosts.alpha.qemu]\n"9.2" = "/opt/q/9.2/qemu-system-x86_64"'))).host("alpha")
    assert h.qemu_labels == ("default", "9.2")
    assert h.qemu_binary() == DEFAULT_QEMU


def test_missing_file(tmp_path):
    assert error(tmp_path / "farm.toml") == f"inventory {tmp_path / 'farm.toml'}: no such file"


def test_file_is_a_directory(tmp_path):
    assert "cannot read" in error(tmp_path)


def test_not_utf8(tmp_path):
    path = tmp_path / "farm.toml"
    path.write_bytes(b'[hosts.alpha]\naddress = "\xff"\n')
    assert "not valid TOML" in error(path)


def cli(*args, cwd=None):
    return subprocess.run([PYTHON, "-m", "harness.cli", "hosts", *args], capture_output=True,
                          text=True, cwd=cwd or "/work/main", timeout=60)


def test_cli_check_prints_one_line_per_host(farm):
    path = farm(VALID)
    cp = cli("check", str(path))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines() == [
        "alpha root@10.231.0.11:22 migration 10.232.0.11 (mig0) slots 2 tags farm qemu default,11.1.3",
        "beta qa@beta.farm:2222 migration beta.farm slots 8 tags big,farm qemu default",
    ]
    assert cp.stderr == ""


def test_cli_check_bad_inventory_is_one_line_exit_2(farm):
    path = farm(host("slots = 0"))
    cp = cli("check", str(path))
    assert cp.returncode == 2
    assert cp.stdout == ""
    assert cp.stderr == (f"harness: error: inventory {path}: host 'alpha': field 'slots' "
                         f"must be a positive integer, not 0\n")


def test_cli_check_missing_file_exit_2(tmp_path):
    cp = cli("check", str(tmp_path / "nope.toml"))
    assert cp.returncode == 2
    assert cp.stderr == f"harness: error: inventory {tmp_path / 'nope.toml'}: no such file\n"
