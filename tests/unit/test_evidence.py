"""Light artifacts: a session-wide core budget per crash class, cores gzipped."""
from __future__ import annotations

import json
import os
import tarfile
import time

from harness.evidence import SharedEvidenceBudget, compress_cores

ABRT = "qemu-system-x86_64: ../x.c:12: f: Assertion `a' failed.\n"


def test_budget_is_shared_between_processes(tmp_path):
    a, b = SharedEvidenceBudget(tmp_path, 2), SharedEvidenceBudget(tmp_path, 2)  # two workers
    assert [a(-6, ABRT), b(-6, ABRT), a(-6, ABRT), b(-6, ABRT)] == [True, True, False, False]
    assert a(-11, "") and b(-6, ABRT.replace("a'", "b'"))   # other classes have their own slots
    # without an assertion line, crashes differ only in their backtraces: a larger budget
    assert sum(a(-11, "") for _ in range(30)) == 19


def test_cores_are_gzipped_with_holes_and_outcome_updated(tmp_path):
    d = tmp_path / "test" / "source"
    d.mkdir(parents=True)
    core = d / "core"
    with open(core, "wb") as f:
        f.write(b"\x7fELF" + b"x" * 100)
        f.seek(256 << 20)              # a 256 MiB hole, as a guest's untouched RAM
        f.write(b"end")
    (d / "outcome.json").write_text(json.dumps({"kind": "crash", "core": str(core)}))
    t0 = time.monotonic()
    done = compress_cores(tmp_path / "test")
    assert time.monotonic() - t0 < 5            # the hole is skipped, not compressed
    assert done == [d / "core.tar.gz"] and not core.exists()
    assert os.path.getsize(d / "core.tar.gz") < 64 << 10
    with tarfile.open(d / "core.tar.gz") as t:
        m = t.getmember("core")
        assert m.size == (256 << 20) + 3 and t.extractfile(m).read(4) == b"\x7fELF"
    assert json.loads((d / "outcome.json").read_text())["core"] == str(d / "core.tar.gz")
