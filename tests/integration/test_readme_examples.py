"""The README's "Writing your own test" examples, copied out of README.md and run as a
user would run them (their own directory, the installed plugin), so they cannot drift."""
from __future__ import annotations

import re

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.qemu

SECTION = "## Writing your own test"


def readme_examples() -> dict[str, str]:
    """{file name: code} for every ```python block of the section; each starts with a
    '# test_*.py' comment naming its file."""
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    blocks = re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)
    out = {}
    for code in blocks:
        m = re.match(r"# (test_\w+\.py)\n", code)
        assert m, f"README example does not start with '# test_<name>.py':\n{code}"
        out[m.group(1)] = code
    return out


def test_readme_has_two_examples():
    assert len(readme_examples()) == 2


def test_readme_examples_pass(tmp_path, inner_pytest):
    examples = readme_examples()
    for name, code in examples.items():
        (tmp_path / name).write_text(code)
    res = inner_pytest(*(str(tmp_path / n) for n in examples), "-v", "-rA", cwd=tmp_path)
    assert res.returncode == 0, res.output[-4000:]
    passed = re.findall(r"PASSED .*?::(test_\w+)", res.stdout)
    assert len(set(passed)) == 2, res.stdout[-3000:]
