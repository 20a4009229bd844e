"""Usage charts as inline SVG, drawn on the server: no chart library, no JavaScript, readable without CSS.

Colours come from CSS classes (``s1`` .. ``s8``) so that light and dark themes both apply; every chart
carries a ``<title>`` and a ``<desc>`` for screen readers, and the page shows the same numbers in a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import count

from markupsafe import Markup, escape

__all__ = ["PALETTE_SIZE", "Series", "bar_chart", "format_count", "format_usd", "line_chart", "nice_ceiling"]

PALETTE_SIZE = 8
_ids = count(1)


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[datetime, float]]  # sorted by time, one per bucket (zeros included)

    @property
    def total(self) -> float:
        return sum(v for _, v in self.points)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is >= value (axis maximum)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value * (1 - 1e-9):
            return float(candidate)
    return float(10 ** (exponent + 1))


def format_count(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}" if value != int(value) else str(int(value))


def format_usd(value: float) -> str:
    if value == 0:
        return "$0"
    if abs(value) < 0.01:
        # Enough decimals for two significant digits: a handful of test calls costs a few millionths.
        decimals = min(9, max(4, 1 - math.floor(math.log10(abs(value)))))
        return f"${value:.{decimals}f}"
    return f"${value:,.2f}"


def _time_label(moment: datetime, span: timedelta) -> str:
    if span <= timedelta(days=2):
        return moment.strftime("%H:%M")
    return moment.strftime("%b %d")


def line_chart(
    series: Sequence[Series],
    start: datetime,
    end: datetime,
    title: str,
    value_format: Callable[[float], str] = format_count,
    width: int = 600,
    height: int = 240,
) -> Markup:
    uid = next(_ids)
    left, right, top, bottom = 56, 12, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    span = max(end - start, timedelta(seconds=1))
    peak = max((v for s in series for _, v in s.points), default=0.0)
    y_max = nice_ceiling(peak)

    def x(moment: datetime) -> float:
        return left + plot_w * min(max((moment - start) / span, 0.0), 1.0)

    def y(value: float) -> float:
        return top + plot_h * (1 - value / y_max)

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="chart-{uid}-title chart-{uid}-desc" preserveAspectRatio="xMidYMid meet">',
        f'<title id="chart-{uid}-title">{escape(title)}</title>',
        f'<desc id="chart-{uid}-desc">{escape(_describe(series, value_format))}</desc>',
    ]
    for i in range(5):
        value = y_max * i / 4
        py = y(value)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{py:.1f}" y2="{py:.1f}"/>')
        parts.append(
            f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{escape(value_format(value))}</text>'
        )
    for i in range(6):
        moment = start + span * (i / 5)
        px = x(moment)
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        parts.append(
            f'<text x="{px:.1f}" y="{height - 8}" text-anchor="{anchor}">{escape(_time_label(moment, span))}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
    )
    for index, s in enumerate(series):
        css = f"s{index % PALETTE_SIZE + 1}"
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s.points)
        if len(s.points) == 1:
            (t, v) = s.points[0]
            parts.append(f'<circle class="{css}" cx="{x(t):.1f}" cy="{y(v):.1f}" r="3"/>')
        elif coords:
            parts.append(
                f'<polyline class="line {css}" points="{coords}"><title>{escape(s.label)}</title></polyline>'
            )
    if not series or peak == 0:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle">No usage in this period</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    bars: Sequence[tuple[str, float]],
    title: str,
    value_format: Callable[[float], str] = format_count,
    width: int = 600,
    bar_height: int = 22,
) -> Markup:
    """Horizontal bars, largest first, labelled with their value."""
    uid = next(_ids)
    label_w, value_w, gap = 170, 80, 6
    plot_w = width - label_w - value_w
    height = max(len(bars), 1) * (bar_height + gap) + gap
    peak = max((v for _, v in bars), default=0.0) or 1.0
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="chart-{uid}-title chart-{uid}-desc">',
        f'<title id="chart-{uid}-title">{escape(title)}</title>',
        f'<desc id="chart-{uid}-desc">'
        + escape("; ".join(f"{label}: {value_format(v)}" for label, v in bars) or "No usage in this period")
        + "</desc>",
    ]
    for index, (label, value) in enumerate(bars):
        top = gap + index * (bar_height + gap)
        length = max(plot_w * value / peak, 1.0 if value > 0 else 0.0)
        short = label if len(label) <= 26 else label[:25] + "…"
        css = f"s{index % PALETTE_SIZE + 1}"
        parts.append(
            f'<text x="{label_w - 8}" y="{top + bar_height * 0.7:.1f}" text-anchor="end">{escape(short)}</text>'
        )
        parts.append(
            f'<rect class="{css}" x="{label_w}" y="{top}" width="{length:.1f}" height="{bar_height}" rx="3">'
            f"<title>{escape(label)}: {escape(value_format(value))}</title></rect>"
        )
        parts.append(
            f'<text x="{label_w + length + 6:.1f}" y="{top + bar_height * 0.7:.1f}">{escape(value_format(value))}</text>'
        )
    if not bars:
        parts.append(
            f'<text x="{width / 2:.1f}" y="{height / 2 + 4:.1f}" text-anchor="middle">No usage in this period</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _describe(series: Sequence[Series], value_format: Callable[[float], str]) -> str:
    if not series:
        return "No usage in this period."
    return "; ".join(f"{s.label}: {value_format(s.total)} in total" for s in series)
