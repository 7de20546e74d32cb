"""How every civflow process builds its engine and its scheduled jobs, from the environment.

One place, so that `serve`, `worker`, gunicorn workers and the CLI agree on the time zone,
the working-day calendar and what runs in the background:

- `CIVFLOW_DATABASE_URL` — the database (SQLite `civflow.db` by default);
- `CIVFLOW_TIMEZONE` — periods, deadlines and working days (Asia/Shanghai by default);
- `CIVFLOW_DEFINITIONS` — the folder of flow definitions that `serve` and `demo` publish,
  whose `calendar.yaml` adds to the official holidays (default: the folder shipped with
  civflow, `shipped_definitions`; `--definitions` of `serve`/`demo` overrides both);
- the notification variables of `workflows.notify.NotifyConfig` (SMTP, webhooks).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workflows.calendar import DEFAULT_TZ, WorkCalendar
from workflows.cycles import open_due_periods
from workflows.engine import Engine
from workflows.frontdoor import open_engine
from workflows.notify import NotifyConfig, on_timer_event
from workflows.timers import node_name


def shipped_definitions() -> Path:
    """The definitions shipped with civflow: the copy a wheel carries in
    `service/definitions` (setup.py copies the repository's `definitions/` there), else
    the repository's `definitions/` beside this package (a checkout, an editable install)."""
    here = Path(__file__).resolve().parent
    packaged = here / "definitions"
    return packaged if packaged.is_dir() else here.parent / "definitions"


def definitions_folder(given: str | Path | None = None) -> Path:
    """The definitions folder in use: `given` (`--definitions`), else
    $CIVFLOW_DEFINITIONS, else the shipped one — whatever the working directory."""
    chosen = given or os.environ.get("CIVFLOW_DEFINITIONS")
    return Path(chosen) if chosen else shipped_definitions()


def load_calendar(definitions: str | Path | None = None) -> WorkCalendar:
    """The working-day calendar: `calendar.yaml` of the definitions folder, the zone of
    $CIVFLOW_TIMEZONE."""
    return WorkCalendar.load(definitions_folder(definitions),
                             os.environ.get("CIVFLOW_TIMEZONE") or DEFAULT_TZ)


def make_engine(db_url: str | None = None, definitions: str | Path | None = None) -> Engine:
    return open_engine(db_url, calendar=load_calendar(definitions))


def background(engine: Engine) -> dict[str, Any]:
    """Keyword arguments for `service.scheduler.build_scheduler`: the cycle check every
    minute, notification delivery every 5 seconds, and notifications on timer events."""
    config = NotifyConfig.from_env()
    node = node_name()
    deliverer = engine.door.notifications.deliverer(config=config, node=node)

    def open_cycles(now):
        return open_due_periods(engine, now, node=node)

    def deliver(now):
        result = deliverer.deliver_due(now)
        return result if result.claimed else None

    return {"jobs": [("cycles.open", open_cycles, 60.0), ("notify.deliver", deliver, 5.0)],
            "on_event": on_timer_event(config, clock=engine.clock)}
