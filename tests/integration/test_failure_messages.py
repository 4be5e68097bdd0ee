"""Signature first everywhere: the summary line, JUnit's <failure message> and text, then
`artifacts: DIR`; the peer's stderr cause in a failed migration's message; GitLab
attachment lines and QEMU stderr tails in system-out; harness tracebacks only with -v."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.qemu

INNER = Path(__file__).parent / "inner" / "inner_signatures.py"


def _cases(junit: Path) -> dict[str, ET.Element]:
    return {tc.get("name"): tc for tc in ET.parse(junit).iter("testcase")}




def test_signature_first_in_summary_and_junit(inner_pytest):
    res = inner_pytest(str(INNER), "-o", "python_files=inner_*.py", "-rf", "-q")
    assert res.returncode == 1, res.output[-3000:]
    cases = _cases(res.junit)

    mismatch = cases["test_machine_type_mismatch"].find("failure")
    msg, text = mismatch.get("message"), mismatch.text.splitlines()
    # what the source saw, then what the destination said: the real cause
    assert msg.startswith("source: migration failed: "), msg
    assert "destination: Machine type received is 'pc-q35-" in msg, msg
    assert msg.splitlines() == text[:2]                       # signature, then artifacts
    assert text[1].startswith("artifacts: ") and Path(text[1][len("artifacts: "):]).is_dir()
    assert any(ln.startswith("cause: destination: Machine type received") and "machine type mismatch" in ln
               for ln in text), text
    assert "-v shows the traceback" in mismatch.text
    assert "Traceback" not in mismatch.text and "conftest.py" not in mismatch.text
    out = cases["test_machine_type_mismatch"].find("system-out").text
    assert "[[ATTACHMENT|" in out and "destination/stderr.log]]" in out
    assert "--- destination: last" in out and "Machine type received" in out
    assert "--- source: last" in out
    # pytest's own one-line summary carries the signature
    line = next(ln for ln in res.stdout.splitlines()
                if ln.startswith("FAILED") and "test_machine_type_mismatch" in ln)
    assert "source: migration failed" in line, line

    own = cases["test_own_assert"].find("failure")
    assert own.get("message").startswith("AssertionError: assert "), own.get("message")
    lines = own.text.splitlines()
    assert lines[1].startswith("artifacts: ") and own.get("message").splitlines()[1] == lines[1]
    assert "def test_own_assert" in own.text     # a test's own assert keeps its traceback


def test_verbose_shows_the_harness_traceback(inner_pytest):
    res = inner_pytest(str(INNER) + "::test_machine_type_mismatch", "-o", "python_files=inner_*.py", "-v")
    assert res.returncode == 1, res.output[-3000:]
    failure = _cases(res.junit)["test_machine_type_mismatch"].find("failure")
    assert failure.get("message").startswith("source: migration failed: ")
    assert "harness traceback:" in failure.text and "wait_status" in failure.text
