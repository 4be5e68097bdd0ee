"""Inline SVG plots, generated in Python: no script, no fonts or files to fetch.

Three kinds, each returning one <svg> string with a <title>, axis ticks and a
<title> tooltip on every data mark (the browser shows it on hover):
line_chart (progress curves, trends), strip_chart (distributions per scenario:
box, median, whiskers and every run as a dot), stacked_bars (test outcomes).
"""
from __future__ import annotations

import math
import statistics
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22")
FONT = 'font-family="sans-serif" font-size="11"'


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1/2/5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v < hi + step * 0.999:
        ticks.append(round(v, 10))
        v += step
    return ticks


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:g}G"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:.4g}"


class _Axes:
    """Maps data to pixels inside a frame with margins for labels."""

    def __init__(self, width: int, height: int, xr: tuple[float, float], yr: tuple[float, float],
                 left: int = 56, right: int = 12, top: int = 26, bottom: int = 36):
        self.w, self.h = width, height
        self.l, self.r, self.t, self.b = left, right, top, bottom
        self.x0, self.x1 = xr if xr[1] > xr[0] else (xr[0], xr[0] + 1)
        self.y0, self.y1 = yr if yr[1] > yr[0] else (yr[0], yr[0] + 1)

    def x(self, v: float) -> float:
        return round(self.l + (v - self.x0) / (self.x1 - self.x0) * (self.w - self.l - self.r), 2)

    def y(self, v: float) -> float:
        return round(self.h - self.b - (v - self.y0) / (self.y1 - self.y0) * (self.h - self.t - self.b), 2)

    def frame(self, xticks, yticks, x_label: str, y_label: str, xtick_text=None) -> list[str]:
        out = [f'<rect x="{self.l}" y="{self.t}" width="{self.w - self.l - self.r}" '
               f'height="{self.h - self.t - self.b}" fill="#fff" stroke="#999"/>']
        for v in yticks:
            y = self.y(v)
            out.append(f'<line x1="{self.l}" x2="{self.w - self.r}" y1="{y}" y2="{y}" stroke="#eee"/>')
            out.append(f'<text x="{self.l - 4}" y="{y + 4}" text-anchor="end" {FONT}>{fmt(v)}</text>')
        for v in xticks:
            x = self.x(v)
            label = xtick_text(v) if xtick_text else fmt(v)
            out.append(f'<line x1="{x}" x2="{x}" y1="{self.h - self.b}" y2="{self.h - self.b + 4}" '
                       f'stroke="#999"/>')
            for k, line in enumerate(label.split("\n")[:2]):   # a second line: a run's QEMU build
                out.append(f'<text x="{x}" y="{self.h - self.b + 15 + 11 * k}" text-anchor="middle" '
                           f'{FONT}>{escape(line)}</text>')
        out.append(f'<text x="{(self.l + self.w - self.r) / 2}" y="{self.h - 4}" text-anchor="middle" '
                   f'{FONT}>{escape(x_label)}</text>')
        out.append(f'<text x="12" y="{(self.t + self.h - self.b) / 2}" text-anchor="middle" {FONT} '
                   f'transform="rotate(-90 12 {(self.t + self.h - self.b) / 2})">{escape(y_label)}</text>')
        return out


def _svg(kind: str, width: int, height: int, title: str, body: list[str], n: int) -> str:
    return (f'<svg class="chart" data-kind="{kind}" data-points="{n}" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<title>{escape(title)}</title>'
            f'<text x="{width / 2}" y="15" text-anchor="middle" font-family="sans-serif" '
            f'font-size="13" font-weight="bold">{escape(title)}</text>'
            + "".join(body) + "</svg>")


DASHES = ("", "6 3", "2 2", "8 3 2 3")   # after the palette's colours run out
LEGEND_ROW = 14


def line_chart(series: list[tuple[str, list[tuple[float, float]]]], *, title: str, x_label: str,
               y_label: str, width: int = 560, height: int = 240,
               x_names: list[str] | None = None,
               markers: list[tuple[float, str]] = (), legend_below: bool = False) -> str:
    """One polyline per series. x_names: categorical x (the x values are indexes).
    markers: (x, label) vertical phase lines. legend_below: a full-width legend under the
    plot with whole labels (many series: trends), instead of a narrow one on the right."""
    pts = [p for _, s in series for p in s]
    if not pts:
        return _svg("line", width, 60, title, [f'<text x="10" y="40" {FONT}>no data</text>'], 0)
    xs, ys = [p[0] for p in pts] + [m[0] for m in markers], [p[1] for p in pts]
    yt = nice_ticks(min(0.0, min(ys)), max(ys))
    right = 12 if legend_below else 130
    plot_h = height
    if legend_below:
        height = plot_h + LEGEND_ROW * len(series) + 8
    if x_names is not None:
        xt = list(range(len(x_names)))
        ax = _Axes(width, plot_h, (-0.3, len(x_names) - 0.7), (yt[0], yt[-1]), right=right,
                   bottom=48)
        body = ax.frame(xt, yt, x_label, y_label, xtick_text=lambda v: "\n".join(
            _tail(part, 18) for part in x_names[int(v)].split("\n")))
    else:
        xt = nice_ticks(min(xs), max(xs))
        ax = _Axes(width, plot_h, (xt[0], xt[-1]), (yt[0], yt[-1]), right=right)
        body = ax.frame(xt, yt, x_label, y_label)
    labelled: list[float] = []
    for mx, label in markers:
        x = ax.x(mx)
        body.append(f'<line class="marker" x1="{x}" x2="{x}" y1="{ax.t}" y2="{plot_h - ax.b}" '
                    f'stroke="#888" stroke-dasharray="3 3"><title>{escape(label)} at {fmt(mx)}</title></line>')
        # Labels of close markers stack in up to three rows; beyond that the tooltip says it.
        row = sum(1 for lx in labelled if x - lx < 34)
        if row < 3:
            labelled.append(x)
            body.append(f'<text x="{x + 2}" y="{ax.t + 10 + 10 * row}" font-family="sans-serif" '
                        f'font-size="9" fill="#555">{escape(_tail(label, 12))}</text>')
    for i, (name, s) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        dash = DASHES[(i // len(PALETTE)) % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        coords = " ".join(f"{ax.x(x)},{ax.y(y)}" for x, y in s)
        body.append(f'<polyline class="series" data-series="{escape(name)}" points="{coords}" '
                    f'fill="none" stroke="{color}" stroke-width="1.8"{dash_attr}/>')
        for x, y in s:
            xl = x_names[int(x)] if x_names is not None else fmt(x)
            body.append(f'<circle cx="{ax.x(x)}" cy="{ax.y(y)}" r="2.4" fill="{color}">'
                        f'<title>{escape(name)}: {escape(xl)}, {fmt(y)}</title></circle>')
        if legend_below:
            ly = plot_h + 4 + LEGEND_ROW * i + 10
            body.append(f'<line x1="{ax.l}" x2="{ax.l + 22}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" '
                        f'stroke-width="2"{dash_attr}/>'
                        f'<text class="legend" x="{ax.l + 28}" y="{ly}" {FONT}>{escape(name)}</text>')
        else:
            ly = ax.t + 12 + 14 * i
            body.append(f'<rect x="{width - 124}" y="{ly - 8}" width="10" height="3" fill="{color}"/>'
                        f'<text class="legend" x="{width - 110}" y="{ly}" {FONT}>{escape(_tail(name, 20))}'
                        f'<title>{escape(name)}</title></text>')
    return _svg("line", width, height, title, body, len(pts))


def _tail(text: str, n: int) -> str:
    """The distinguishing end of a long label (scenario paths differ at the end)."""
    return text if len(text) <= n else "\u2026" + text[-(n - 1):]


def quartiles(vals: list[float]) -> tuple[float, float, float]:
    if len(vals) < 2:
        return vals[0], vals[0], vals[0]
    q = statistics.quantiles(vals, n=4, method="inclusive")
    return q[0], q[1], q[2]


def strip_chart(groups: list[tuple[str, list[float]]], *, title: str, unit: str,
                width: int = 720, row: int = 26) -> str:
    """One row per group: whiskers min..max, box q1..q3, median tick, a dot per value."""
    groups = [(g, v) for g, v in groups if v]
    if not groups:
        return _svg("strip", width, 60, title, [f'<text x="10" y="40" {FONT}>no data</text>'], 0)
    allv = [x for _, v in groups for x in v]
    xt = nice_ticks(min(0.0, min(allv)), max(allv))
    left = 260
    height = 26 + 40 + row * len(groups)
    ax = _Axes(width, height, (xt[0], xt[-1]), (0, len(groups)), left=left)
    body = ax.frame(xt, [], unit, "")
    n = 0
    for i, (label, vals) in enumerate(groups):
        yc = ax.y(len(groups) - i - 0.5)
        q1, med, q3 = quartiles(sorted(vals))
        body.append(f'<text x="{left - 6}" y="{yc + 4}" text-anchor="end" {FONT}>'
                    f'{escape(_tail(label, 42))}</text>')
        body.append(f'<line x1="{ax.x(min(vals))}" x2="{ax.x(max(vals))}" y1="{yc}" y2="{yc}" '
                    f'stroke="#888"/>')
        body.append(f'<rect class="box" x="{ax.x(q1)}" y="{yc - 7}" width="{max(ax.x(q3) - ax.x(q1), 1)}" '
                    f'height="14" fill="#cfe2f3" stroke="#1f77b4"><title>{escape(label)}: '
                    f'median {fmt(med)} {escape(unit)}, q1 {fmt(q1)}, q3 {fmt(q3)}, n={len(vals)}'
                    f'</title></rect>')
        body.append(f'<line x1="{ax.x(med)}" x2="{ax.x(med)}" y1="{yc - 7}" y2="{yc + 7}" '
                    f'stroke="#08306b" stroke-width="2"/>')
        for j, v in enumerate(vals):
            jitter = ((j * 37) % 11 - 5) * 0.9   # deterministic spread
            body.append(f'<circle cx="{ax.x(v)}" cy="{round(yc + jitter, 2)}" r="2.2" fill="#d62728" '
                        f'fill-opacity="0.7"><title>{escape(label)}: {fmt(v)} {escape(unit)}</title></circle>')
            n += 1
    return _svg("strip", width, height, title, body, n)


def stacked_bars(rows: list[tuple[str, dict[str, int]]], order: list[tuple[str, str]], *,
                 title: str, width: int = 720, row: int = 22) -> str:
    """One horizontal bar per row, segments in `order` [(key, color)]."""
    if not rows:
        return _svg("bars", width, 60, title, [f'<text x="10" y="40" {FONT}>no data</text>'], 0)
    left, legend = 160, 24
    height = 26 + legend + row * len(rows) + 8
    top = 26 + legend
    most = max(sum(c.values()) for _, c in rows) or 1
    scale = (width - left - 60) / most
    body = []
    for i, (key, color) in enumerate(order):
        body.append(f'<rect x="{left + i * 90}" y="24" width="10" height="10" fill="{color}"/>'
                    f'<text x="{left + i * 90 + 14}" y="33" {FONT}>{escape(key)}</text>')
    n = 0
    for r, (label, counts) in enumerate(rows):
        y = top + r * row
        body.append(f'<text x="{left - 6}" y="{y + row / 2 + 3}" text-anchor="end" {FONT}>'
                    f'{escape(label)}</text>')
        x = float(left)
        for key, color in order:
            c = counts.get(key, 0)
            if not c:
                continue
            w = round(c * scale, 2)
            body.append(f'<rect class="seg" x="{round(x, 2)}" y="{y + 3}" width="{w}" height="{row - 6}" '
                        f'fill="{color}"><title>{escape(label)}: {c} {escape(key)}</title></rect>')
            x += w
            n += 1
        body.append(f'<text x="{round(x + 4, 2)}" y="{y + row / 2 + 3}" {FONT}>{sum(counts.values())}</text>')
    return _svg("bars", width, height, title, body, n)
