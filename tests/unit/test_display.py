"""hammer's live progress: a bar with target, ETA and counts on a terminal; plain lines
every N seconds in CI."""
from __future__ import annotations

import io

from harness.stress import display
from harness.stress.display import HammerStatus


def _st(elapsed, final=False, **kw):
    base = dict(attempts=int(elapsed * 4), crashes=1, hangs=0, errors=0, signatures=1,
                target_seconds=60.0)
    base.update(kw)
    return HammerStatus(elapsed=elapsed, final=final, **base)


def test_plain_prints_every_n_seconds_and_the_last():
    out = io.StringIO()
    show = display.plain(out, every=10)
    for t in range(1, 26):
        show(_st(float(t)))
    show(_st(25.5, final=True))
    lines = out.getvalue().splitlines()
    assert [ln.split("]")[0].strip("[ ") for ln in lines] == ["1.0s", "11.0s", "21.0s", "25.5s"]
    assert "attempts 102 (4.0/s) crashes 1" in lines[-1]


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_bar_on_a_terminal_shows_target_eta_and_counts(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    out = Tty()
    show = display.for_terminal(out)
    assert isinstance(show, display.Bar)
    show(_st(15.0))
    text = out.getvalue()
    assert "15/60s" in text and "<00:" in text          # target and ETA
    assert "attempts 60" in text and "crashes 1" in text
    show(_st(61.0, final=True))                          # past the target: clamped, closed
    assert "60/60s" in out.getvalue()


def test_attempt_target_counts_attempts(monkeypatch):
    out = Tty()
    bar = display.Bar(out)
    bar(_st(2.0, target_seconds=None, target_attempts=100, attempts=25))
    assert "25/100" in out.getvalue()


def test_ci_or_no_tty_means_plain(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert not isinstance(display.for_terminal(Tty()), display.Bar)
    monkeypatch.delenv("CI")
    assert not isinstance(display.for_terminal(io.StringIO()), display.Bar)
