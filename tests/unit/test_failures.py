"""Failure summaries: signature first, the known bug and the peer's cause after it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import failures
from harness.migration.explain import explain, peer_cause, stderr_cause
from harness.migration.scenario import KnownBugHit
from harness.migration.states import MigrationStateError

SAMPLES = Path(__file__).parent / "samples"


@dataclass
class FakeMachine:
    name: str
    artifacts: Path
    stderr: str

    def stderr_text(self) -> str:
        return self.stderr


def _machines(tmp_path):
    src = tmp_path / "source"
    dst = tmp_path / "destination"
    for d in (src, dst):
        d.mkdir()
    (dst / "stderr.log").write_text((SAMPLES / "machine_type_mismatch.stderr").read_text())
    return [FakeMachine("source", src, "qemu-system-x86_64: Unable to write to socket: Broken pipe\n"),
            FakeMachine("destination", dst, (SAMPLES / "machine_type_mismatch.stderr").read_text())]


def _raise(exc):
    try:
        raise exc
    except BaseException as e:
        return e


def test_known_bug_wrapper_puts_the_inner_signature_first(tmp_path):
    inner = _raise(MigrationStateError("source: migration failed: Unable to write to socket: Broken pipe"))
    hit = KnownBugHit(f"known bug https://gitlab.com/qemu-project/qemu/-/commit/0b5bf4ea76: {inner}")
    hit.__cause__ = inner
    exc = _raise(hit)
    s = failures.summarize(exc, _machines(tmp_path), tmp_path)
    assert s.signature.startswith("source: migration failed: Unable to write to socket: Broken pipe; "
                                  "destination: Machine type received is 'pc-q35-10.0'")
    lines = s.text().splitlines()
    assert lines[1] == f"artifacts: {tmp_path}"
    assert "known bug: https://gitlab.com/qemu-project/qemu/-/commit/0b5bf4ea76" in lines
    assert any(ln.startswith("cause: destination: ") and "machine type mismatch" in ln for ln in lines)
    assert failures.is_harness_failure(exc)
    out = s.system_out()
    assert f"[[ATTACHMENT|{tmp_path / 'destination' / 'stderr.log'}]]" in out
    assert "--- source: last 1 stderr lines" in out


def test_a_tests_own_assert_is_not_a_harness_failure(tmp_path):
    exc = _raise(AssertionError("assert 1 == 2"))
    assert not failures.is_harness_failure(exc)
    s = failures.summarize(exc, [], None)
    assert s.signature == "assert 1 == 2" and s.text().splitlines()[1] == "artifacts: (none)"


def test_explanations_shared_with_compat_matrix():
    assert explain("Machine type received is 'a' and local is 'b'") == \
        "machine type mismatch (source a, destination b)"
    assert stderr_cause("destination", "qemu-system-x86_64: terminating on signal 15\n") is None
    c = peer_cause("migration failed: x", [("source", "qemu-system-x86_64: x\n"),
                                          ("destination", "qemu-system-x86_64: load failed: y\n")])
    assert c is not None and c.side == "destination" and c.line == "load failed: y" and c.meaning is None
