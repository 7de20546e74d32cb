"""The calendar file (工作日历, `calendar.yaml` beside the flow definitions): read and
checked, and which years of deadlines the calendar cannot vouch for.

```yaml
holidays: [2027-01-01]   # days off the chinesecalendar package does not know
workdays: [2027-02-07]   # make-up working days (调休上班)
years: [2027]            # years whose State Council notice is entered here in full
```

A year is *covered* when its official holidays are known: the years of the installed
`chinesecalendar` package, and the years listed under `years`. Outside them the calendar
counts only weekends as days off, so a deadline there may come a day or more early: such a
deadline is marked uncertain (`deadline_uncertain`), and the process owners see a banner.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import DefinitionInvalid, Problem

if TYPE_CHECKING:
    from .calendar import WorkCalendar

CALENDAR_KEYS = ("holidays", "workdays", "years")
# How far ahead the owners are warned of a year the calendar does not cover: deadlines are
# counted up to a quarter ahead (季审定: 10 working days after the quarter ends).
WARN_AHEAD = dt.timedelta(days=92)


@dataclass(frozen=True)
class CalendarFile:
    holidays: frozenset[dt.date] = field(default_factory=frozenset)
    workdays: frozenset[dt.date] = field(default_factory=frozenset)
    years: frozenset[int] = field(default_factory=frozenset)


def read_calendar(text: str, filename: str = "calendar.yaml") -> CalendarFile:
    """Parse and check a calendar file; raise `DefinitionInvalid` listing every problem."""
    import yaml

    def problem(path: str, message: str) -> Problem:
        return Problem(filename, path, message)

    class DatesAsText(yaml.SafeLoader):
        """Dates stay text, so 2027-02-30 is reported at its place, not a YAML crash."""

    DatesAsText.add_constructor("tag:yaml.org,2002:timestamp",
                                lambda loader, node: loader.construct_scalar(node))
    try:
        data = yaml.load(text, Loader=DatesAsText)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DefinitionInvalid([Problem(filename, "", f"not valid YAML: {exc}".splitlines()[0],
                                         mark.line + 1 if mark else None)]) from None
    if data is None:
        return CalendarFile()
    if not isinstance(data, dict):
        raise DefinitionInvalid([problem("", "a calendar file is a mapping with holidays, "
                                             "workdays and years")])
    problems = [problem(str(k), f"unknown key; a calendar file has {', '.join(CALENDAR_KEYS)}")
                for k in data if k not in CALENDAR_KEYS]
    days: dict[str, set[dt.date]] = {}
    for key in ("holidays", "workdays"):
        days[key] = set()
        items = data.get(key) or []
        if not isinstance(items, list):
            problems.append(problem(key, "must be a list of dates YYYY-MM-DD"))
            continue
        for i, item in enumerate(items):
            try:
                days[key].add(dt.date.fromisoformat(str(item)))
            except ValueError:
                problems.append(problem(f"{key}[{i}]", f"{item!r} is not a date YYYY-MM-DD"))
    for day in sorted(days["holidays"] & days["workdays"]):
        problems.append(problem("workdays", f"{day} is also listed under holidays"))
    years: set[int] = set()
    raw_years = data.get("years") or []
    if not isinstance(raw_years, list):
        problems.append(problem("years", "must be a list of years, e.g. [2027]"))
        raw_years = []
    for i, y in enumerate(raw_years):
        if isinstance(y, bool) or not isinstance(y, int) or not 1900 <= y <= 2200:
            problems.append(problem(f"years[{i}]", f"{y!r} is not a year, e.g. 2027"))
        elif not any(d.year == y for d in days["holidays"]):
            # Every State Council notice gives days off: a year listed without any is a
            # year whose notice has not been entered, which would hide the gap.
            problems.append(problem(f"years[{i}]", f"{y} is listed as entered in full but "
                                                   f"no holiday of {y} is listed"))
        else:
            years.add(y)
    if problems:
        raise DefinitionInvalid(problems)
    return CalendarFile(frozenset(days["holidays"]), frozenset(days["workdays"]),
                        frozenset(years))


def uncovered_years(cal: WorkCalendar, first: dt.date, last: dt.date) -> list[int]:
    """The years from `first` to `last` whose official holidays the calendar does not know."""
    return [y for y in range(first.year, last.year + 1) if not cal.covers(y)]


def deadline_uncertain(cal: WorkCalendar, deadline: dt.datetime | None) -> bool:
    """A deadline counted on a day of a year the calendar does not cover (working days there
    are weekdays only, so it may be early). Uncovered years lie after the covered ones, so
    the deadline's own day decides for the days counted before it too."""
    if deadline is None:
        return False
    day = cal.local(deadline).date()
    return bool(uncovered_years(cal, day, day))


def years_to_add(cal: WorkCalendar, now: dt.datetime) -> list[int]:
    """The uncovered years from today to `WARN_AHEAD` ahead: the owners' banner."""
    today = cal.local(now).date()
    return uncovered_years(cal, today, today + WARN_AHEAD)
