"""Line charts drawn on the server as inline SVG: nothing to download, no script needed
to see them, the same in every browser, offline.

:func:`line_chart` takes points ``(time, {series: value})`` and draws one polyline per
series over a fixed time range, with a few horizontal grid lines, time labels and a
legend. Each polyline carries ``data-points`` (how many points it has), which the
browser test reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 640, 170
LEFT, RIGHT, TOP, BOTTOM = 48, 22, 10, 34


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    color: str


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _label(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


def line_chart(
    *,
    name: str,
    title: str,
    points: list[tuple[datetime, dict]],
    series: list[Series],
    start: datetime,
    end: datetime,
    unit: str = "",
) -> SafeString:
    """An ``<svg>`` line chart of ``points`` between ``start`` and ``end``."""
    span = max(1.0, (end - start).total_seconds())
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [p[1].get(s.key) or 0 for p in points for s in series]
    top = _nice_max(max(values, default=0))

    def x(moment: datetime) -> float:
        return LEFT + plot_w * min(1.0, max(0.0, (moment - start).total_seconds() / span))

    def y(value: float) -> float:
        return TOP + plot_h * (1 - min(1.0, (value or 0) / top))

    grid = []
    for i in range(5):
        level = top * i / 4
        grid.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/>'
                '<text x="{}" y="{}" class="axis" text-anchor="end">{}</text>',
                LEFT,
                WIDTH - RIGHT,
                f"{y(level):.1f}",
                f"{y(level):.1f}",
                LEFT - 4,
                f"{y(level) + 4:.1f}",
                _label(level),
            )
        )
    local = timezone.localtime
    fmt = "%H:%M" if span <= 86400 * 1.01 else "%d %b"
    ticks = [start + (end - start) * i / 4 for i in range(5)]
    labels = format_html_join(
        "",
        '<text x="{}" y="{}" class="axis" text-anchor="middle">{}</text>',
        ((f"{x(t):.1f}", HEIGHT - BOTTOM + 14, local(t).strftime(fmt)) for t in ticks),
    )
    lines = []
    for s in series:
        coords = " ".join(f"{x(moment):.1f},{y(row.get(s.key) or 0):.1f}" for moment, row in points)
        lines.append(
            format_html(
                '<polyline class="series" data-series="{}" data-points="{}" points="{}" '
                'fill="none" stroke="{}" stroke-width="1.8"/>',
                s.key,
                len(points),
                coords,
                s.color,
            )
        )
    legend = format_html_join(
        "",
        '<tspan fill="{}">■</tspan><tspan dx="3" dy="0">{}</tspan><tspan dx="10"> </tspan>',
        ((s.color, s.label) for s in series),
    )
    empty = (
        format_html(
            '<text x="{}" y="{}" class="empty" text-anchor="middle">no samples yet</text>',
            LEFT + plot_w / 2,
            TOP + plot_h / 2,
        )
        if not points
        else ""
    )
    return format_html(
        '<figure class="edm-chart" id="chart-{}" data-points="{}">'
        "<figcaption>{}{}</figcaption>"
        '<svg viewBox="0 0 {} {}" width="100%" role="img" aria-label="{}">{}{}{}{}'
        '<text x="{}" y="{}" class="legend">{}</text></svg></figure>',
        name,
        len(points),
        title,
        format_html(" <small>({})</small>", unit) if unit else "",
        WIDTH,
        HEIGHT,
        title,
        mark_safe("".join(grid)),
        labels,
        mark_safe("".join(lines)),
        empty,
        LEFT,
        HEIGHT - 4,
        legend,
    )
