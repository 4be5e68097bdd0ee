from harness.guest.integrity import PAGE, check_bootblock_pattern, compare_pages


def dump(values):
    return b"".join(bytes([v]) + b"\0" * (PAGE - 1) for v in values)


def test_all_equal_is_consistent():
    r = check_bootblock_pattern(dump([7] * 100))
    assert r.ok and r.boundary is None


def test_one_boundary_one_behind_is_consistent():
    r = check_bootblock_pattern(dump([8] * 40 + [7] * 60))
    assert r.ok and r.boundary == 40


def test_wraparound_boundary():
    assert check_bootblock_pattern(dump([0] * 10 + [255] * 5)).ok


def test_two_boundaries_fail():
    r = check_bootblock_pattern(dump([8] * 10 + [7] * 10 + [8] * 10))
    assert not r.ok and "expected 0x07" in r.detail


def test_corrupted_page_fails_with_address():
    vals = [5] * 50
    vals[20] = 9
    r = check_bootblock_pattern(dump(vals))
    assert not r.ok
    assert hex((1 << 20) + 20 * PAGE) in r.detail


def test_page_behind_by_two_fails():
    assert not check_bootblock_pattern(dump([9] * 5 + [7] * 5)).ok


def test_compare_pages_reports_addresses():
    a = bytearray(PAGE * 4)
    b = bytearray(a)
    b[PAGE * 2 + 17] = 1
    r = compare_pages(bytes(a), bytes(b))
    assert r.differing_pages == (2 * PAGE,)
    assert compare_pages(bytes(a), bytes(a)).ok
