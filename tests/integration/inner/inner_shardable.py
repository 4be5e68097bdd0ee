"""Inner tests for test_shards.py: no QEMU, a mix of outcomes and durations."""
import time

import pytest


@pytest.mark.parametrize("n", range(9))
def test_param(n):
    time.sleep(0.01 * n)


def test_fails():
    assert 1 == 2


def test_skips():
    pytest.skip("no reason at all")


@pytest.mark.xfail(reason="known", strict=True)
def test_xfails():
    raise AssertionError("expected")
