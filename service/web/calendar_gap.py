"""The calendar-gap banner (节假日安排未收录) for process owners and admins.

When the next quarter reaches a year whose official holidays the working-day calendar does
not know (`workflows.calendar_file.years_to_add`: e.g. 2027 before its State Council notice
is in chinesecalendar or calendar.yaml), its deadlines count only weekends as days off and
may be early. Every page of an owner or admin says so above its content, with the file to
edit; each such deadline carries its own mark (`macros.due`). docs/calendar.md says how.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g

from workflows.calendar import CALENDAR_FILE
from workflows.calendar_file import years_to_add

from ..runtime import definitions_folder
from .nav import owners


def gap() -> dict[str, Any] | None:
    """The years to add and the file to add them to, for an owner or admin; else None."""
    viewer = g.get("viewer")
    if viewer is None or not owners(viewer):
        return None
    engine = current_app.extensions["civflow"]
    years = years_to_add(engine.calendar, engine.clock())
    if not years:
        return None
    source = engine.calendar.source or definitions_folder() / CALENDAR_FILE
    return {"years": ", ".join(map(str, years)), "file": str(source)}


def init_app(app: Flask) -> None:
    app.jinja_env.globals["calendar_gap"] = gap
