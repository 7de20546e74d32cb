"""Bar charts as plain geometry, drawn as inline SVG by `templates/owner/_macros.html`.

No chart library and no script: the server works out every rectangle and line here, the
template writes them out with a `<title>` and `<desc>`, and a table of the same numbers sits
beside each chart. Pure functions of the ledger's dictionaries (`workflows.ledger.rates`,
`grade_distribution`).

The charts are fluid: across, positions are percentages of the chart's width; down, they
are pixels. So a chart fills a wide desktop column or a phone's screen, and its text keeps
its size (a scaled `viewBox` would shrink the text to nothing on a phone).

- `rate_chart`: completion rate (完成率) and overdue rate (逾期率) per period, two bars per
  period on a 0–100 % scale.
- `grade_chart`: one row per quota pool (同级竞技池): its graded cases stacked by grade, the
  quota value (好) first, the ungraded after, on a common count scale, and the pool's limit
  (限额) as a line across the bar — a 好 bar running past the line is over the quota.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_LABELS = 16  # period labels under a rate chart; more periods: every k-th is labelled


@dataclass
class Rect:
    x: float  # % of the width
    y: float  # px
    w: float  # % of the width
    h: float  # px
    css: str  # the CSS class that colours it
    tip: str = ""  # its <title>: what it shows, in words


@dataclass
class Text:
    x: float  # % of the width
    y: float
    text: str
    anchor: str = "middle"
    css: str = ""


@dataclass
class Line:
    x1: float  # % of the width
    y1: float
    x2: float
    y2: float
    css: str


@dataclass
class Chart:
    height: float  # px; the width is the box's
    rects: list[Rect] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)


def percent(value: float | None) -> str:
    """A rate as the pages show it: 0.6923 → "69.2%", None (nothing to divide) → "—"."""
    if value is None:
        return "—"
    return f"{value * 100:.1f}".rstrip("0").rstrip(".") + "%"


def rate_chart(periods: list[dict[str, Any]], names: dict[str, str]) -> Chart:
    """Two bars per period (`rates()["by_period"]`): completion and overdue rate.

    `names` gives the words of the tooltips: {"completion": …, "overdue": …, "none": …}.
    A period without cases gets no bars, only its label and `names["none"]`.
    """
    left, top, plot_h = 9.0, 14.0, 200.0
    n = max(len(periods), 1)
    rows = 1 if n <= 6 else 2  # labels of many periods are set on two rows, alternately
    every = math.ceil(n / MAX_LABELS)
    chart = Chart(top + plot_h + 22 + 14 * rows)
    for tick in (0, 25, 50, 75, 100):
        y = top + plot_h * (1 - tick / 100)
        chart.lines.append(Line(left, y, 100, y, "grid" if tick else "axis"))
        chart.texts.append(Text(0, y + 4, f"{tick}%", "start", "tick"))
    group = (100 - left) / n
    bar = group * 0.34
    for i, p in enumerate(periods):
        key = p.get("period") or "—"
        mid = left + group * (i + 0.5)
        for offset, rate_key, css, word in ((-bar, "completion_rate", "bar-done",
                                             names["completion"]),
                                            (0.0, "overdue_rate", "bar-late", names["overdue"])):
            rate = p.get(rate_key)
            if rate is None:
                continue
            h = plot_h * rate
            chart.rects.append(Rect(mid + offset, top + plot_h - h, bar, h, css,
                                    f"{key} · {word} {percent(rate)}"))
        if not p.get("total"):
            chart.texts.append(Text(mid, top + plot_h - 5, names["none"], "middle", "none"))
        if i % every == 0:
            row = (i // every) % rows
            last = i == len(periods) - 1 and n > 1  # kept inside the box: ends at its edge
            chart.texts.append(Text(100 if last else mid, top + plot_h + 18 + 14 * row, key,
                                    "end" if last else "middle", "tick"))
    return chart


def grade_order(values: list[str], quota_value: Any) -> list[str]:
    """The grades with the quota value first (its bar starts at zero, beside the limit)."""
    first = [v for v in values if v == str(quota_value)]
    return first + [v for v in values if v != str(quota_value)]


def grade_chart(pools: list[dict[str, Any]], values: list[str], names: dict[str, str]
                ) -> Chart:
    """One row per pool: its `label` and figures above a bar stacked from `graded` in
    `values`' order, then `ungraded`; a line at the pool's `limit`. `names`:
    {"ungraded": …, "limit": …}.

    Each pool is a dict with label, size, graded {value: n}, ungraded, limit, value (the
    quota value) and over (the value's count is past the limit).
    """
    row, bar_h = 54.0, 20.0
    chart = Chart(row * max(len(pools), 1) + 4)
    biggest = max([p["size"] for p in pools] + [p["limit"] for p in pools] + [1])
    scale = 99.5 / biggest  # % of the width per case (the limit line stays inside)
    for i, p in enumerate(pools):
        y = row * i
        value = str(p["value"])
        over = " over" if p["over"] else ""
        chart.texts.append(Text(0, y + 16, p["label"], "start", "pool-label"))
        chart.texts.append(Text(100, y + 16, f"{value} {p['graded'].get(value, 0)} / "
                                             f"{names['limit']} {p['limit']}", "end",
                                "pool-figure" + over))
        x, bar_y = 0.0, y + 24
        for j, v in enumerate(values):
            n = p["graded"].get(v, 0)
            if n:
                chart.rects.append(Rect(x, bar_y, n * scale, bar_h, f"g{min(j, 4)}",
                                        f"{p['label']} · {v}: {n}"))
                x += n * scale
        if p["ungraded"]:
            chart.rects.append(Rect(x, bar_y, p["ungraded"] * scale, bar_h, "gu",
                                    f"{p['label']} · {names['ungraded']}: {p['ungraded']}"))
        limit_x = p["limit"] * scale
        chart.lines.append(Line(limit_x, bar_y - 3, limit_x, bar_y + bar_h + 3, "limit" + over))
    return chart
