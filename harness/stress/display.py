"""Live progress of `harness hammer` (and anything else run by stress.hammer).

On a terminal: a tqdm bar toward the target (time or attempts) with its ETA and the live
counts. tqdm because it is small, pure Python, well kept and draws a correct bar on any
terminal (rich would do too, at several times the size). In CI (no TTY, or CI=true): one
plain line every PLAIN_EVERY seconds, and the last one, so logs stay readable.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from typing import Callable, TextIO

PLAIN_EVERY = 10.0


@dataclass(frozen=True)
class HammerStatus:
    elapsed: float
    attempts: int
    crashes: int
    hangs: int
    errors: int
    signatures: int
    target_seconds: float | None = None
    target_attempts: int | None = None
    final: bool = False

    def counts(self) -> str:
        rate = self.attempts / self.elapsed if self.elapsed else 0.0
        cpm = self.crashes / self.elapsed * 60 if self.elapsed else 0.0
        return (f"attempts {self.attempts} ({rate:.1f}/s) crashes {self.crashes} ({cpm:.0f}/min) "
                f"hangs {self.hangs} harness-errors {self.errors} signatures {self.signatures}")

    def __str__(self) -> str:
        return f"[{self.elapsed:6.1f}s] {self.counts()}"


Display = Callable[[HammerStatus], None]


def plain(stream: TextIO | None = None, every: float = PLAIN_EVERY) -> Display:
    """A line every `every` seconds of the run, and the final one."""
    last = [-every]

    def show(st: HammerStatus) -> None:
        if st.final or st.elapsed - last[0] >= every:
            last[0] = st.elapsed
            print(str(st), file=stream or sys.stderr, flush=True)
    return show


class Bar:
    """A tqdm bar: seconds toward --seconds (or attempts toward --attempts), ETA, counts."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.by_attempts = False

    def __call__(self, st: HammerStatus) -> None:
        from tqdm import tqdm
        if self.bar is None:
            self.by_attempts = st.target_attempts is not None and not st.target_seconds
            total = st.target_attempts if self.by_attempts else st.target_seconds
            # A pty with no size (script(1), some CI shells) says 0x0, and tqdm then
            # draws nothing: fall back to 100x24.
            cols, rows = shutil.get_terminal_size((100, 24))
            self.bar = tqdm(total=total, file=self.stream, ncols=cols, nrows=rows, leave=True,
                            unit="attempt" if self.by_attempts else "s",
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]"
                            if not self.by_attempts else None)
        target = st.attempts if self.by_attempts else st.elapsed
        if self.bar.total is not None:
            target = min(target, self.bar.total)
        self.bar.n = target
        self.bar.set_postfix_str(st.counts(), refresh=False)
        self.bar.refresh()
        if st.final:
            self.bar.close()


def is_ci(stream: TextIO | None = None) -> bool:
    s = stream or sys.stderr
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or not s.isatty()


def for_terminal(stream: TextIO | None = None) -> Display:
    """The bar on an interactive terminal, plain periodic lines otherwise."""
    return plain(stream) if is_ci(stream) else Bar(stream)
