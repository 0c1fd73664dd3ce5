"""Small inline SVG plots rendered server-side (no JS, no plotting library, readable in any
browser and in the tests). Every function returns ``Markup`` safe to drop into a template."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup


def finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick positions covering [lo, hi] (the usual 1-2-5 steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(hi - lo)):
        return []
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks: list[float] = []
    t = start
    while t <= hi + step * 0.5 and len(ticks) < 50:
        ticks.append(round(t, 10))
        t += step
    return ticks


def fmt(v: float | None, digits: int = 3) -> str:
    if v is not None and math.isinf(v):
        return "∞" if v > 0 else "−∞"  # e.g. the PSNR of a perfect sCT
    if v is None or not math.isfinite(v):
        return "–"
    if v != 0 and (abs(v) >= 10**5 or abs(v) < 10 ** -(digits - 1)):
        return f"{v:.{digits - 1}e}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels with just enough decimals to tell neighbouring ticks apart."""
    if len(ticks) < 2:
        return [fmt(t) for t in ticks]
    step = abs(ticks[1] - ticks[0]) or 1.0
    if step >= 10**5:
        return [f"{t:.3g}" for t in ticks]
    decimals = min(10, max(0, math.ceil(-math.log10(step) - 1e-9)))
    if decimals < 10 and any(
        abs(t * 10**decimals - round(t * 10**decimals)) > 1e-6 for t in ticks
    ):
        decimals += 1
    return [f"{t:.{decimals}f}" for t in ticks]


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of already sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# An extreme value is drawn at the plot's edge (with its number) instead of setting the axis
# when its gap to the next value is this many times the spread of the others: one MAE of
# 1e30 squeezed every other team into one pixel.
OUTLIER_RATIO = 20


def robust_range(values: Sequence[float]) -> tuple[float, float]:
    """The range the axis should cover: all values but absurd extremes (at most half of
    them are left out, one at a time from either end)."""
    vals = sorted(values)
    a, b = 0, len(vals) - 1

    def spread(i: int, j: int) -> float:
        # Range of vals[i..j]; for one value (or equal ones), half its magnitude.
        return max(vals[j] - vals[i], 0.5 * max(abs(vals[i]), abs(vals[j])), 1e-12)

    for _ in range(len(vals) // 2):
        if vals[b] - vals[b - 1] > OUTLIER_RATIO * spread(a, b - 1):
            b -= 1
        elif vals[a + 1] - vals[a] > OUTLIER_RATIO * spread(a + 1, b):
            a += 1
        else:
            break
    return vals[a], vals[b]


class _Scale:
    """Value -> x; values beyond [lo, hi] (left-out outliers) land on the edge."""

    def __init__(self, lo: float, hi: float, x0: float, x1: float) -> None:
        self.lo, self.hi, self.x0, self.x1 = lo, hi, x0, x1

    def outside(self, v: float) -> int:
        return -1 if v < self.lo else 1 if v > self.hi else 0

    def __call__(self, v: float) -> float:
        if self.hi == self.lo:
            return (self.x0 + self.x1) / 2
        v = min(max(v, self.lo), self.hi)
        return self.x0 + (v - self.lo) / (self.hi - self.lo) * (self.x1 - self.x0)


def _edge_marker(sx: _Scale, value: float, y: float, label_y: float) -> str:
    """A value beyond the axis: an arrow on the edge it points past, and its number."""
    side = sx.outside(value)
    x = sx(value)
    tip, back = x + 6 * side, x - 2 * side
    text = f"{fmt(value)} →" if side > 0 else f"← {fmt(value)}"
    return (
        f'<path class="outlier" d="M{back:.1f},{y - 6:.1f} L{tip:.1f},{y:.1f} '
        f'L{back:.1f},{y + 6:.1f} Z"><title>{escape(fmt(value))} (off the scale)</title></path>'
        f'<text class="sub outlier" x="{x - 8 * side:.1f}" y="{label_y:.1f}" '
        f'text-anchor="{"end" if side > 0 else "start"}">{escape(text)}</text>'
    )


def _svg(text: str) -> Markup:
    """Every caller escapes the text it puts into the SVG (labels, names, values)."""
    return Markup(text)  # noqa: S704 - built from escaped parts only


def _anchor(x: float, left: float, right: float) -> str:
    """Keep edge tick labels inside the picture."""
    if x - left < 18:
        return "start"
    if right - x < 18:
        return "end"
    return "middle"


def _empty(width: int, height: int, message: str) -> Markup:
    return _svg(
        f'<svg class="plot" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(message)}"><text x="{width / 2}" y="{height / 2}" '
        f'text-anchor="middle">{escape(message)}</text></svg>'
    )


def distribution_plot(
    values: Sequence[tuple[str, float | None]],
    *,
    metric_label: str,
    unit: str = "",
    higher_is_better: bool | None = None,
    width: int = 420,
    height: int = 150,
) -> Markup:
    """Per-case values of one metric: a box (quartiles, median) over jittered case dots.
    Hovering a dot names its case (SVG <title>)."""
    pts = [(name, float(v)) for name, v in values if v is not None and math.isfinite(float(v))]
    if not pts:
        return _empty(width, height, f"No {metric_label} values yet")
    vals = sorted(v for _, v in pts)
    a, b = robust_range(vals)
    ticks = nice_ticks(a, b)
    if not ticks:
        return _empty(width, height, f"{metric_label} values are too large to plot")
    lo, hi = min(ticks[0], a), max(ticks[-1], b)  # the last tick may fall short of b
    left, right, top, axis_y = 16, width - 16, 40, height - 24
    sx = _Scale(lo, hi, left, right)
    mid = (top + axis_y) / 2
    parts = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Distribution of {escape(metric_label)} over {len(pts)} cases">',
    ]
    better = ""
    if higher_is_better is not None:
        better = " (higher is better)" if higher_is_better else " (lower is better)"
    parts.append(
        f'<text x="{left}" y="14" font-weight="600">{escape(metric_label)}'
        f"{escape(f' [{unit}]' if unit else '')}{escape(better)} — {len(pts)} cases</text>"
    )
    for t, text in zip(ticks, tick_labels(ticks), strict=True):
        x = sx(t)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{axis_y}"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{axis_y + 14}" '
            f'text-anchor="{_anchor(x, left, right)}">{escape(text)}</text>'
        )
    parts.append(f'<line class="axis" x1="{left}" x2="{right}" y1="{axis_y}" y2="{axis_y}"/>')
    q1, med, q3 = quantile(vals, 0.25), quantile(vals, 0.5), quantile(vals, 0.75)
    bh = (axis_y - top) * 0.5
    parts.append(
        f'<rect class="box" x="{sx(q1):.1f}" y="{mid - bh / 2:.1f}" '
        f'width="{max(sx(q3) - sx(q1), 1):.1f}" height="{bh:.1f}" rx="3"/>'
    )
    parts.append(
        f'<line class="median" x1="{sx(med):.1f}" x2="{sx(med):.1f}" '
        f'y1="{mid - bh / 2:.1f}" y2="{mid + bh / 2:.1f}"/>'
    )
    for i, (name, v) in enumerate(pts):
        # Deterministic jitter so the picture does not change between reloads.
        jitter = ((i * 7919) % 97) / 97 - 0.5
        y = mid + jitter * (axis_y - top) * 0.8
        if sx.outside(v):
            parts.append(_edge_marker(sx, v, mid, top - 2))
            continue
        parts.append(
            f'<circle class="dot" cx="{sx(v):.1f}" cy="{y:.1f}" r="3.5">'
            f"<title>{escape(name)}: {escape(fmt(v))}</title></circle>"
        )
    parts.append(
        f'<text x="{left}" y="29" class="sub">median {escape(fmt(med))}, '
        f"IQR {escape(fmt(q1))}–{escape(fmt(q3))}</text>"
    )
    parts.append("</svg>")
    return _svg("".join(parts))


@dataclass(frozen=True)
class TeamValue:
    label: str
    value: float | None
    spread: float | None = None  # e.g. the standard deviation over cases
    own: bool = False
    baseline: bool = False


def comparison_plot(
    teams: Sequence[TeamValue],
    *,
    metric_label: str,
    unit: str = "",
    higher_is_better: bool = False,
    width: int = 420,
    row_height: int = 22,
    own_note: str = " (you)",
) -> Markup:
    """One row per team, best first: the value as a dot with ±spread whiskers; the row of the
    submission shown highlighted (``own_note`` after its name: "(you)" only when it is the
    viewer's), baselines grey. A value far off the others' scale sits on the edge, labelled."""
    rows = [(float(t.value), t) for t in teams if t.value is not None and math.isfinite(t.value)]
    if not rows:
        return _empty(width, 80, f"No {metric_label} values to compare yet")
    rows.sort(key=lambda vt: -vt[0] if higher_is_better else vt[0])
    a, b = robust_range([v for v, _ in rows])
    # Whiskers of the values on the scale widen it, but by no more than its own width.
    reach = max(b - a, 0.5 * max(abs(a), abs(b)), 1e-12)
    lows = [max(v - (t.spread or 0), a - reach) for v, t in rows if a <= v <= b]
    highs = [min(v + (t.spread or 0), b + reach) for v, t in rows if a <= v <= b]
    ticks = nice_ticks(min(lows), max(highs))
    if not ticks:
        return _empty(width, 80, f"{metric_label} values are too large to plot")
    lo, hi = min(ticks[0], *lows), max(ticks[-1], *highs)
    label_w, right, top = 140, width - 14, 24
    height = top + row_height * len(rows) + 24
    axis_y = top + row_height * len(rows)
    sx = _Scale(lo, hi, label_w, right)
    word = "higher is better" if higher_is_better else "lower is better"
    parts = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(metric_label)} of {len(rows)} teams">',
        f'<text x="4" y="14" font-weight="600">{escape(metric_label)}'
        f"{escape(f' [{unit}]' if unit else '')} ({word})</text>",
    ]
    for t, text in zip(ticks, tick_labels(ticks), strict=True):
        x = sx(t)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{axis_y}"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{axis_y + 14}" '
            f'text-anchor="{_anchor(x, label_w, right)}">{escape(text)}</text>'
        )
    for i, (value, team) in enumerate(rows):
        y = top + row_height * i + row_height / 2
        cls = "own" if team.own else "baseline" if team.baseline else ""
        if team.own:
            parts.append(
                f'<rect x="0" y="{y - row_height / 2:.1f}" width="{width}" '
                f'height="{row_height}" fill="#fff6d6"/>'
            )
        name = team.label if len(team.label) <= 20 else team.label[:19] + "…"
        suffix = own_note if team.own else " (baseline)" if team.baseline else ""
        weight = ' font-weight="700"' if team.own else ""
        parts.append(
            f'<text x="4" y="{y + 4:.1f}"{weight}>{i + 1}. {escape(name)}{escape(suffix)}</text>'
        )
        if sx.outside(value):
            parts.append(_edge_marker(sx, value, y, y + 4))
            continue
        if team.spread:
            parts.append(
                f'<line class="axis" x1="{sx(value - team.spread):.1f}" '
                f'x2="{sx(value + team.spread):.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
            )
        parts.append(
            f'<rect class="box {cls}" x="{sx(value) - 5:.1f}" y="{y - 5:.1f}" width="10" '
            f'height="10" rx="5"><title>{escape(team.label)}: {escape(fmt(value))}</title></rect>'
        )
    parts.append(f'<line class="axis" x1="{label_w}" x2="{right}" y1="{axis_y}" y2="{axis_y}"/>')
    parts.append("</svg>")
    return _svg("".join(parts))


def rank_interval(rank: int | None, low: float | None, high: float | None, n: int) -> Markup:
    """A tiny bar: the rank range seen in bootstrap resamples, with the actual rank as a dot."""
    if rank is None or low is None or high is None or n < 1:
        return Markup("")
    width, height, pad = 90, 14, 5
    sx = _Scale(1, max(n, 2), pad, width - pad)
    label = f"rank {rank}, {fmt(low)}–{fmt(high)} in resamples"
    return _svg(
        f'<svg class="interval-bar" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f'<line x1="{pad}" x2="{width - pad}" y1="7" y2="7" stroke="#dde1e8" stroke-width="2"/>'
        f'<line x1="{sx(low):.1f}" x2="{sx(high):.1f}" y1="7" y2="7" stroke="#1f5fae" '
        f'stroke-width="4" stroke-linecap="round"/>'
        f'<circle cx="{sx(rank):.1f}" cy="7" r="3.5" fill="#13233f"/></svg>'
    )
