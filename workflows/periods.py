"""Period keys: `2026-W48`, `2026-11`, `2026-Q4`, `2026`. One case per person per period."""

from __future__ import annotations

import datetime as dt
import re

from .messages import msg

PATTERNS = {
    "week": re.compile(r"^\d{4}-W(0[1-9]|[1-4]\d|5[0-3])$"),
    "month": re.compile(r"^\d{4}-(0[1-9]|1[0-2])$"),
    "quarter": re.compile(r"^\d{4}-Q[1-4]$"),
    "year": re.compile(r"^\d{4}$"),
}
EXAMPLES = {"week": "2026-W48", "month": "2026-11", "quarter": "2026-Q4", "year": "2026"}


def period_key(period: str, day: dt.date) -> str | None:
    """The key of the period that contains `day` (ISO weeks for weeks)."""
    if period == "none":
        return None
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{day.year}-{day.month:02d}"
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    if period == "year":
        return f"{day.year}"
    raise ValueError(f"unknown period {period!r}")


def check_period_key(period: str, key: str | None) -> str | None:
    """None when the key fits the flow's period, else the reason it does not."""
    if period == "none":
        return None if key is None else msg("period.none")
    if key is None or not PATTERNS[period].match(key):
        return msg("period.key_format", period=msg(f"period.{period}"), example=EXAMPLES[period],
                   key=key)
    if not 1900 <= int(key[:4]) <= 9998:
        return msg("period.key_year", year=key[:4])
    if period == "week":
        year, week = int(key[:4]), int(key[6:])
        try:
            dt.date.fromisocalendar(year, week, 1)
        except ValueError:
            return msg("period.no_iso_week", year=year, week=week)
    return None
