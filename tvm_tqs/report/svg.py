"""Inline SVG charts for the HTML report: no plotting library, no network, the same bytes every run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def fmt(v: float) -> str:
    """A short number for ticks and labels."""
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.1e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{v:.3g}"


@dataclass
class Scale:
    """A linear or log10 map from data [lo, hi] onto pixels [a, b]."""

    lo: float
    hi: float
    a: float
    b: float
    log: bool = False

    @classmethod
    def fit(cls, values, a: float, b: float, log: bool = False, pad: float = 0.05) -> Scale:
        vals = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
        if not vals:
            return cls(1.0, 10.0, a, b, log) if log else cls(0.0, 1.0, a, b, log)
        lo, hi = min(vals), max(vals)
        if log:
            lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
            if lo == hi:
                hi = lo * 10
            return cls(lo, hi, a, b, True)
        if lo == hi:
            lo, hi = lo - (abs(lo) or 1.0) * 0.5, hi + (abs(hi) or 1.0) * 0.5
        span = hi - lo
        start = 0.0 if 0 <= lo <= 0.25 * hi else lo - pad * span  # near-zero data keeps its zero
        return cls(start, hi + pad * span, a, b)

    def __call__(self, v: float) -> float:
        if self.log:
            v = max(v, self.lo)
            t = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            t = (v - self.lo) / (self.hi - self.lo)
        return self.a + t * (self.b - self.a)

    def ticks(self) -> list[float]:
        if self.log:
            lo, hi = round(math.log10(self.lo)), round(math.log10(self.hi))
            step = max(1, math.ceil((hi - lo) / 6))
            return [10.0**e for e in range(lo, hi + 1, step)]
        raw = (self.hi - self.lo) / 5
        mag = 10 ** math.floor(math.log10(raw))
        step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
        first = math.ceil(self.lo / step) * step
        return [first + i * step for i in range(int((self.hi - first) / step + 1e-9) + 1)]


@dataclass
class Series:
    """One legend entry: points, how to draw them, and a tooltip per point."""

    label: str
    xs: list
    ys: list
    color: str
    line: bool = True
    marker: str = ""  # "", "circle", "square", "star"
    titles: list = field(default_factory=list)
    step: bool = False  # draw the line as a staircase (a Pareto front)


def _marker(kind: str, x: float, y: float, color: str, title: str) -> str:
    tip = f"<title>{escape(title)}</title>" if title else ""
    if kind == "square":
        return f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{color}" stroke="#222">{tip}</rect>'
    if kind == "star":
        pts = []
        for i in range(10):
            r = 8 if i % 2 == 0 else 3.5
            ang = -math.pi / 2 + i * math.pi / 5
            pts.append(f"{x + r * math.cos(ang):.1f},{y + r * math.sin(ang):.1f}")
        return f'<polygon points="{" ".join(pts)}" fill="{color}" stroke="#222">{tip}</polygon>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}">{tip}</circle>'


def _x_ticks(sx: Scale, top: float, base: float) -> list[str]:
    """Vertical grid lines from `top` to `base` and tick labels under `base`."""
    out = []
    for t in sx.ticks():
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{base}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{base + 14}" text-anchor="middle">{fmt(t)}</text>')
    return out


def chart(
    series: list[Series],
    *,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    width: int = 560,
    height: int = 320,
    title: str = "",
) -> str:
    """A line / scatter chart with axes, ticks, grid and a legend, as one ``<svg>`` element."""
    left, right, top, bottom = 64, 150, 24, 44
    xs = [x for s in series for x in s.xs]
    ys = [y for s in series for y in s.ys]
    sx = Scale.fit(xs, left, width - right, logx)
    sy = Scale.fit(ys, height - bottom, top, logy)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title or ylabel)}" {FONT}>'
    ]
    out += _x_ticks(sx, top, height - bottom)
    for t in sy.ticks():
        y = sy(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
    out.append(
        f'<rect x="{left}" y="{top}" width="{width - right - left}" height="{height - bottom - top}" '
        'fill="none" stroke="#999"/>'
    )
    out.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 8}" text-anchor="middle">{escape(xlabel)}</text>'
    )
    out.append(
        f'<text x="14" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(top + height - bottom) / 2:.0f})">{escape(ylabel)}</text>'
    )
    if title:
        out.append(f'<text x="{left}" y="14" font-weight="bold">{escape(title)}</text>')
    for i, s in enumerate(series):
        pts = [(sx(x), sy(y)) for x, y in zip(s.xs, s.ys, strict=True)]
        if s.line and len(pts) > 1:
            if s.step:
                path = [pts[0]]
                for p in pts[1:]:
                    path += [(p[0], path[-1][1]), p]
                pts_line = path
            else:
                pts_line = pts
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts_line)
            out.append(f'<polyline points="{d}" fill="none" stroke="{s.color}" stroke-width="1.6"/>')
        if s.marker:
            titles = s.titles or [""] * len(pts)
            out.extend(_marker(s.marker, x, y, s.color, t) for (x, y), t in zip(pts, titles, strict=True))
        ly = top + 8 + 16 * i
        lx = width - right + 10
        out.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 16}" y2="{ly}" stroke="{s.color}" stroke-width="2"/>'
        )
        if s.marker:
            out.append(_marker(s.marker, lx + 8, ly, s.color, ""))
        out.append(f'<text x="{lx + 22}" y="{ly + 4}">{escape(s.label)}</text>')
    out.append("</svg>")
    return "".join(out)


@dataclass
class Bar:
    """One row of a horizontal bar chart, with an optional interval (whiskers)."""

    label: str
    value: float
    color: str
    lo: float | None = None
    hi: float | None = None
    title: str = ""


def bars(rows: list[Bar], *, xlabel: str, width: int = 560, row_height: int = 16, legend=()) -> str:
    """Horizontal bars (one per row, top to bottom), whiskers where an interval is given."""
    left, right, top = 150, 24, 10
    height = top + row_height * len(rows) + 40 + 16 * len(legend)
    values = [v for r in rows for v in (r.value, r.lo, r.hi) if v is not None] + [0.0]
    sx = Scale.fit(values, left, width - right, pad=0.02)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(xlabel)}" {FONT}>'
    ]
    base = top + row_height * len(rows)
    out += _x_ticks(sx, top, base)
    out.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{base + 30}" text-anchor="middle">{escape(xlabel)}</text>'
    )
    zero = sx(0.0)
    for i, r in enumerate(rows):
        y = top + i * row_height
        x0, x1 = sorted((zero, sx(r.value)))
        tip = f"<title>{escape(r.title or f'{r.label}: {fmt(r.value)}')}</title>"
        out.append(
            f'<text x="{left - 6}" y="{y + row_height - 4}" text-anchor="end">{escape(r.label)}</text>'
        )
        out.append(
            f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(x1 - x0, 0.5):.1f}" height="{row_height - 4}" '
            f'fill="{r.color}">{tip}</rect>'
        )
        if r.lo is not None and r.hi is not None:
            a, b, m = sx(r.lo), sx(r.hi), y + row_height / 2
            out.append(f'<line x1="{a:.1f}" y1="{m:.1f}" x2="{b:.1f}" y2="{m:.1f}" stroke="#222"/>')
            for e in (a, b):
                out.append(
                    f'<line x1="{e:.1f}" y1="{m - 4:.1f}" x2="{e:.1f}" y2="{m + 4:.1f}" stroke="#222"/>'
                )
    for j, (label, color) in enumerate(legend):
        y = base + 44 + 16 * j
        out.append(f'<rect x="{left}" y="{y - 9}" width="12" height="10" fill="{color}"/>')
        out.append(f'<text x="{left + 18}" y="{y}">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
