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


def test_summaries_give_the_same_verdicts_as_full_dumps(tmp_path):
    """The remote path (first bytes + page digests computed on the host) agrees with the
    byte-level rules; the summary script runs as it would on a host."""
    import subprocess
    import sys
    from harness.guest.integrity import (_SUMMARY_PY, PageSummary, check_first_bytes,
                                         compare_summaries, summarise)

    def summary(data):
        f = tmp_path / "dump.bin"
        f.write_bytes(data)
        out = subprocess.run([sys.executable, "-c", _SUMMARY_PY, str(f), "1"], capture_output=True,
                             text=True, check=True).stdout.split()
        return PageSummary(bytes.fromhex(out[0]), bytes.fromhex(out[1]))

    a = dump([8] * 10 + [7] * 10)
    b = bytearray(a)
    b[5 * PAGE + 100] ^= 1
    assert check_first_bytes(summary(a).firsts) == check_bootblock_pattern(a)
    assert compare_summaries(summary(a), summary(bytes(b))) == compare_pages(a, bytes(b))
    assert compare_summaries(summary(a), summary(a)).ok
    assert summarise(a) == summary(a) and summarise(bytes(b)) == summary(bytes(b))
    assert summarise(a, digests=False).firsts == summary(a).firsts


def _area(first: int = 7, pages: int = 64) -> bytearray:
    from harness.guest.integrity import PAGE
    data = bytearray(pages * PAGE)
    data[::PAGE] = bytes([first]) * pages
    return data


def test_whole_pages_catch_a_byte_the_first_byte_rule_misses():
    from harness.guest.integrity import (BOOTBLOCK_START, PAGE, check_bodies, check_first_bytes,
                                         page_bodies)
    data = _area()
    assert check_bodies(page_bodies(bytes(data))) is None
    data[5 * PAGE + 0x87b] ^= 0xFF
    rep = page_bodies(bytes(data))
    assert check_first_bytes(rep.firsts).ok            # the old rule passes...
    msg = check_bodies(rep)                            # ...the whole-page one does not
    assert msg == (f"page at {BOOTBLOCK_START + 5 * PAGE:#x} is not its first byte followed by "
                   f"zeros (byte 0x87b of the page is 0xff)")
    data[9 * PAGE + 1] = 1
    assert "1 more such page(s)" in check_bodies(page_bodies(bytes(data)))


def test_zero_first_bytes_are_not_mistaken_for_corruption():
    from harness.guest.integrity import check_bodies, page_bodies
    data = _area(first=0)
    assert check_bodies(page_bodies(bytes(data))) is None


def test_the_remote_body_check_agrees_with_the_local_one(tmp_path):
    import subprocess
    import sys
    from harness.guest.integrity import BODIES_SCRIPT, PAGE, page_bodies
    data = _area()
    data[3 * PAGE + 100] = 9
    data[40 * PAGE + PAGE - 1] = 1
    f = tmp_path / "dump.bin"
    f.write_bytes(bytes(data))
    out = subprocess.run([sys.executable, "-c", BODIES_SCRIPT, str(f)], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    local = page_bodies(bytes(data))
    assert bytes.fromhex(out[0]) == local.firsts
    assert tuple(int(x) for x in out[1].split(",")) == local.bad_pages == (3, 40)
