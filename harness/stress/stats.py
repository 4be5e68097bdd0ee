"""Rates with honest error bars: a hit rate from n attempts is an estimate."""
from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(hits: int, attempts: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for hits/attempts (sensible at 0 and at n, unlike
    the normal approximation). (0.0, 1.0) when there were no attempts."""
    if attempts <= 0:
        return 0.0, 1.0
    if not 0 <= hits <= attempts:
        raise ValueError(f"wilson: hits {hits} not within 0..{attempts}")
    p = hits / attempts
    denom = 1 + z * z / attempts
    centre = (p + z * z / (2 * attempts)) / denom
    half = z * math.sqrt(p * (1 - p) / attempts + z * z / (4 * attempts * attempts)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
