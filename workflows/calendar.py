"""Working days on the Chinese calendar, periods, and deadline arithmetic.

Official holidays and make-up workdays (调休) come from `chinesecalendar`, which follows
the State Council's yearly notices; `definitions/calendar.yaml` can add or correct days
(a local holiday, a year the library does not know yet). For a year the library does not
cover and the file does not mention, weekends are the only days off — and a warning says so.

All arithmetic happens in the calendar's time zone (Asia/Shanghai by default): "5 working
days" ends at midnight after the fifth working day, local time.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar
import isodate

log = logging.getLogger("civflow.calendar")
DEFAULT_TZ = "Asia/Shanghai"
CALENDAR_FILE = "calendar.yaml"
# The years the installed chinesecalendar knows (2004–2026 in 1.11.0).
LIBRARY_YEARS = (min(chinese_calendar.holidays).year, max(chinese_calendar.holidays).year)


@dataclass
class WorkCalendar:
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TZ))
    holidays: set[dt.date] = field(default_factory=set)  # extra days off
    workdays: set[dt.date] = field(default_factory=set)  # extra working days
    years: set[int] = field(default_factory=set)  # years the file gives in full (`covers`)
    source: Path | None = None  # the calendar file applied, if any
    _warned: set[int] = field(default_factory=set, repr=False)

    @classmethod
    def load(cls, definitions: str | Path | None = None, tz: str | None = None) -> WorkCalendar:
        """The calendar with `definitions/calendar.yaml` applied when it exists:

        ```yaml
        holidays: [2027-01-01]      # days off the library does not know
        workdays: [2027-02-07]      # make-up working days (调休上班)
        ```
        """
        from .calendar_file import read_calendar  # raises DefinitionInvalid when bad

        cal = cls(tz=ZoneInfo(tz or DEFAULT_TZ))
        path = Path(definitions) / CALENDAR_FILE if definitions else None
        if path and path.is_file():
            data = read_calendar(path.read_text(encoding="utf-8"), str(path))
            cal.holidays, cal.workdays = set(data.holidays), set(data.workdays)
            cal.years, cal.source = set(data.years), path
        return cal

    def covers(self, year: int) -> bool:
        """Whether the official holidays of `year` are known (the library's years and the
        file's `years`); elsewhere only weekends are days off (workflows/calendar_file.py)."""
        return year in self.years or LIBRARY_YEARS[0] <= year <= LIBRARY_YEARS[1]

    def is_workday(self, day: dt.date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        days_off = official_days_off(day.year)
        if days_off is None:
            if day.year not in self._warned:
                self._warned.add(day.year)
                log.warning("no official holiday data for %s: only weekends are days off; "
                            "add the year's holidays to %s", day.year, CALENDAR_FILE)
            return day.weekday() < 5
        return day not in days_off

    def local(self, moment: dt.datetime) -> dt.datetime:
        return moment.astimezone(self.tz)

    def midnight_after(self, day: dt.date) -> dt.datetime:
        """The end of `day` in the calendar's zone, as an aware UTC instant."""
        nxt = day + dt.timedelta(days=1)
        return dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=self.tz).astimezone(dt.UTC)

    def add_working_days(self, start: dt.datetime, n: int) -> dt.datetime:
        """The end of the n-th working day after `start`'s local date (0: end of that day,
        or of the next working day when `start` falls on a day off)."""
        day = self.local(start).date()
        if n == 0:
            while not self.is_workday(day):
                day += dt.timedelta(days=1)
            return self.midnight_after(day)
        counted = 0
        while counted < n:
            day += dt.timedelta(days=1)
            if self.is_workday(day):
                counted += 1
        return self.midnight_after(day)

    def add_duration(self, start: dt.datetime, iso: str) -> dt.datetime:
        """Calendar arithmetic for ISO 8601 durations (P1M is a month, not 30 days)."""
        return (self.local(start) + parse_duration(iso)).astimezone(dt.UTC)

    def at_time(self, day: dt.date, hhmm: str | None) -> dt.datetime:
        hour, minute = (int(x) for x in (hhmm or "00:00").split(":"))
        return dt.datetime(day.year, day.month, day.day, hour, minute,
                           tzinfo=self.tz).astimezone(dt.UTC)

    def period_bounds(self, period: str, key: str) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) of a period key (2026-W48, 2026-11, 2026-Q4, 2026) as UTC instants."""
        first, last = period_days(period, key)
        return self.at_time(first, None), self.midnight_after(last)

    def next_weekday(self, after: dt.datetime, weekday: int, hhmm: str | None) -> dt.datetime:
        """The first `weekday` (0 = Monday) at `hhmm` local strictly after `after`."""
        day = self.local(after).date()
        for i in range(8):
            candidate = day + dt.timedelta(days=i)
            if candidate.weekday() == weekday:
                moment = self.at_time(candidate, hhmm)
                if moment > after:
                    return moment
        raise AssertionError("unreachable: a week always holds the weekday")


@functools.lru_cache(maxsize=256)
def parse_duration(iso: str) -> dt.timedelta | isodate.Duration:
    """An ISO 8601 duration, parsed once per text: a step plans its timers from the same
    few (P1D, P3D), and isodate's parser cost a tenth of that planning."""
    return isodate.parse_duration(iso)


@functools.cache
def official_days_off(year: int) -> frozenset[dt.date] | None:
    """The year's days off (weekends and holidays, less the make-up workdays 调休上班) per
    `chinese_calendar`, or None when the library has no data for the year.

    Built once per year and process: the library checks its year range against its whole
    holiday table on every call, which made a 5-working-day deadline cost ~140 µs."""
    first = dt.date(year, 1, 1)
    try:
        chinese_calendar.is_workday(first)
    except NotImplementedError:
        return None
    days = (first + dt.timedelta(days=i) for i in range((dt.date(year + 1, 1, 1) - first).days))
    return frozenset(d for d in days if not chinese_calendar.is_workday(d))


def period_days(period: str, key: str) -> tuple[dt.date, dt.date]:
    """First and last day of a period key."""
    if period == "week":
        year, week = int(key[:4]), int(key[6:])
        first = dt.date.fromisocalendar(year, week, 1)
        return first, first + dt.timedelta(days=6)
    if period == "month":
        year, month = int(key[:4]), int(key[5:7])
        nxt = dt.date(year + month // 12, month % 12 + 1, 1)
        return dt.date(year, month, 1), nxt - dt.timedelta(days=1)
    if period == "quarter":
        year, q = int(key[:4]), int(key[-1])
        first = dt.date(year, 3 * q - 2, 1)
        nxt = dt.date(year + (q == 4), 1 if q == 4 else 3 * q + 1, 1)
        return first, nxt - dt.timedelta(days=1)
    if period == "year":
        year = int(key)
        return dt.date(year, 1, 1), dt.date(year, 12, 31)
    raise ValueError(f"{period!r} has no days")


def quarter_end(day: dt.date) -> dt.date:
    """The last day of the quarter holding `day`: 季审定 — the months of a quarter are
    approved together after it ends."""
    return period_days("quarter", f"{day.year}-Q{(day.month - 1) // 3 + 1}")[1]
