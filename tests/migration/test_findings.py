"""Findings as regression tests: one test per findings/*.json entry (data, not code;
`harness repro SCRIPT --qemu ... --to-catalog NAME` writes one).

The entry's reproducer runs against this session's QEMU (--qemu/--qemu-src/--qemu-dst)
under the reproducer contract. Where the finding hits (or on a version never
measured) it is a strict xfail carrying the signature: a hit is the expected
failure, no hit in the entry's attempts is an XPASS alarm (fixed on this build?).
On a version measured unaffected, a hit fails the test as a regression.
"""
import subprocess
import sys

import pytest

from harness.pytest_plugin import side_binaries
from harness.report import findings, repro_contract

ENTRIES = findings.load_all()


class FindingReproduced(AssertionError):
    """The finding's reproducer hit: the expected failure where the bug is known to hit."""


@pytest.mark.full
@pytest.mark.parametrize("finding", ENTRIES, ids=[f.name for f in ENTRIES])
def test_finding(finding, harness_config, harness_run, request):
    p = harness_run.placement
    if not (p.src.is_local and p.dst.is_local):
        pytest.skip("findings reproducers run QEMU on this machine: local only with --inventory")
    src, dst = side_binaries(harness_config, harness_run)
    version = src.version
    expect_hit = finding.expect_hit(version)
    if expect_hit:
        request.applymarker(pytest.mark.xfail(
            reason=f"{finding.signature} (finding {finding.name}, hits on {', '.join(finding.affected)})",
            strict=True, raises=FindingReproduced))
    argv = [sys.executable, "-I", str(finding.script), "--qemu-src", src.path, "--qemu-dst", dst.path,
            "--qemu", src.path, "--attempts", str(finding.attempts), "--seconds", str(finding.seconds)]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=finding.seconds + 180,
                        cwd=harness_run.artifacts)
    (harness_run.artifacts / "reproducer.out").write_text(cp.stdout + "\n--- stderr ---\n" + cp.stderr)
    try:
        res = repro_contract.parse_result(cp.stdout, cp.returncode)
    except repro_contract.ContractError as exc:
        pytest.fail(f"{finding.script.name} breaks the reproducer contract: {exc}", pytrace=False)
    if res.exit_code == repro_contract.EXIT_SKIP:
        tail = (cp.stderr.strip().splitlines() or ["no reason given"])[-1]
        pytest.skip(f"{finding.name}: the reproducer cannot decide on {src.path}: {tail}")
    if res.hits and expect_hit:
        raise FindingReproduced(f"{res.signature}: {res.hits}/{res.attempts} attempts on QEMU {version}")
    assert res.hits == 0, (f"regression: {finding.name} hits on QEMU {version} ({res.hits}/{res.attempts}: "
                           f"{res.signature}), measured unaffected at export")
