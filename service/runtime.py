"""How every civflow process builds its engine and its scheduled jobs, from the environment.

One place, so that `serve`, `worker`, gunicorn workers and the CLI agree on the time zone,
the working-day calendar and what runs in the background:

- `CIVFLOW_DATABASE_URL` — the database (SQLite `civflow.db` by default);
- `CIVFLOW_TIMEZONE` — periods, deadlines and working days (Asia/Shanghai by default);
- `CIVFLOW_DEFINITIONS` — the folder whose `calendar.yaml` overrides the official
  holidays (`definitions` in the working directory by default);
- the notification variables of `workflows.notify.NotifyConfig` (SMTP, webhooks).
"""

from __future__ import annotations

import os
from typing import Any

from workflows.calendar import DEFAULT_TZ, WorkCalendar
from workflows.cycles import open_due_periods
from workflows.engine import Engine
from workflows.frontdoor import open_engine
from workflows.notify import NotifyConfig, on_timer_event
from workflows.timers import node_name


def make_engine(db_url: str | None = None) -> Engine:
    calendar = WorkCalendar.load(os.environ.get("CIVFLOW_DEFINITIONS", "definitions"),
                                 os.environ.get("CIVFLOW_TIMEZONE") or DEFAULT_TZ)
    return open_engine(db_url, calendar=calendar)


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
