from pathlib import Path

import pytest

from harness.qemu.cmdline import GuestFiles, RunPaths, build_argv
from harness.qemu.spec import GuestKind, GuestSpec, MachineSpec, SpecError

RUN = RunPaths(Path("/tmp/qmh-x"))
BB = GuestFiles(bootblock=Path("/img/bootblock.img"))


def argv_of(**kw):
    return build_argv(MachineSpec(binary="/q/qemu", **kw), RUN, BB)


def test_basic_argv_has_monitor_serial_guest_and_no_defaults():
    argv = argv_of(name="source")
    assert argv[0] == "/q/qemu"
    joined = " ".join(argv)
    assert "-nodefaults" in argv and "-no-user-config" in argv
    assert "socket,id=qmp0,path=/tmp/qmh-x/qmp.sock" in joined
    assert "-mon chardev=qmp0,mode=control" in joined
    assert "-serial chardev:serial0" in joined
    assert "file=/img/bootblock.img,format=raw" in joined and "secs=1,cyls=1,heads=1" in joined
    assert "-S" not in argv and "-incoming" not in argv
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-m") + 1] == "256"


def test_destination_is_paused_and_deferred():
    argv = argv_of(name="destination", paused=True, incoming="defer")
    assert "-S" in argv
    assert argv[argv.index("-incoming") + 1] == "defer"


def test_extra_monitors_and_extra_args_appended_last():
    argv = argv_of(extra_monitors=2, extra_args=("-global", "x=y"))
    assert "socket,id=qmp2,path=/tmp/qmh-x/qmp2.sock" in argv
    assert argv[-2:] == ["-global", "x=y"]


def test_linux_guest_args():
    spec = MachineSpec(binary="q", guest=GuestSpec(kind=GuestKind.LINUX), memory_mib=512)
    argv = build_argv(spec, RUN, GuestFiles(kernel=Path("/k"), initrd=Path("/i"), cmdline="console=ttyS0"))
    assert argv[argv.index("-kernel") + 1] == "/k"
    assert argv[argv.index("-append") + 1] == "console=ttyS0"


@pytest.mark.parametrize("kw, msg", [
    (dict(accel="hvf"), "accel 'hvf'"),
    (dict(memory_mib=64), "bootblock guest needs memory_mib >= 128"),
    (dict(name="a b"), "name 'a b'"),
    (dict(smp=0), "smp 0"),
    (dict(extra_args="-S"), "extra_args must be a tuple"),
])
def test_spec_validation_is_one_line(kw, msg):
    with pytest.raises(SpecError) as ei:
        MachineSpec(binary="q", **kw)
    assert msg in str(ei.value)
    assert "\n" not in str(ei.value)


def test_auto_accel_must_be_resolved_before_argv():
    with pytest.raises(SpecError, match="resolved"):
        argv_of(accel="auto")


def test_guest_files_must_be_resolved():
    with pytest.raises(SpecError, match="bootblock guest"):
        build_argv(MachineSpec(binary="q"), RUN, GuestFiles())


def test_remote_qemu_serves_its_sockets_and_waits_for_us():
    argv = build_argv(MachineSpec(binary="/q/qemu", extra_monitors=1),
                      RunPaths(Path("/tmp/qmh-x"), qemu_listens=True), BB)
    chardevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-chardev"]
    assert chardevs == ["socket,id=qmp0,path=/tmp/qmh-x/qmp.sock,server=on,wait=on",
                        "socket,id=qmp1,path=/tmp/qmh-x/qmp1.sock,server=on,wait=on",
                        "socket,id=serial0,path=/tmp/qmh-x/serial.sock,server=on,wait=on"]
    assert "server=on" not in " ".join(argv_of())   # locally QEMU connects to us
