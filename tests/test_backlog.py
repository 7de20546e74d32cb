"""The backlog an operator watches: due and failed timers, waiting deliveries (/metrics)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from workflows.backlog import read_backlog
from workflows.engine import Actor, Engine
from workflows.models import Timer
from workflows.notify import NotifyConfig, queue

from .conftest import REGULAR, Clock, cst

P = Actor.person


def test_due_timers_their_lag_and_failures(db, org):
    clock = Clock(cst(2026, 11, 2, 9))
    engine = Engine(db, clock=clock)
    engine.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
    for who in ("s1", "s2"):
        engine.start_case("regular-assessment", org.ids[who], period_key="2026-10")
    # Nothing is due yet: the summaries of October are due 5 working days into November.
    b = read_backlog(db, clock())
    assert (b.timers_due, b.timers_oldest_due, b.timers_failed) == (0, None, 0)
    # A week later, with no scheduler running, the reminders and deadlines wait.
    clock.now = cst(2026, 11, 9, 9)
    b = read_backlog(db, clock())
    assert b.timers_due > 0 and b.timers_oldest_due is not None
    assert b.lag(clock(), b.timers_oldest_due) > 0
    assert b.timers_oldest_due == min(_due(db))
    with db.unit_of_work() as s:
        s.execute(update(Timer).where(Timer.id == min(_ids(db))).values(status="failed"))
    again = read_backlog(db, clock())
    assert (again.timers_failed, again.timers_due) == (1, b.timers_due - 1)


def _due(db) -> list[dt.datetime]:
    with db.unit_of_work(write=False) as s:
        return [t.due_at for t in s.query(Timer).filter(Timer.due_at <= cst(2026, 11, 9, 9))]


def _ids(db) -> list[int]:
    with db.unit_of_work(write=False) as s:
        return [t.id for t in s.query(Timer).filter(Timer.due_at <= cst(2026, 11, 9, 9))]


def test_waiting_deliveries_show_in_the_metrics(api, db, org):
    t0 = dt.datetime(2026, 11, 26, 1, tzinfo=dt.UTC)
    config = NotifyConfig(webhook_urls=("http://127.0.0.1:9/hook",))
    with db.unit_of_work() as s:
        queue(s, person_ids=[org.s1, org.s2], case_id=None, kind="reminder", title="提醒",
              body="正文", key_prefix="evt:1", now=t0, config=config)
    b = read_backlog(db, t0 + dt.timedelta(minutes=5))
    assert b.deliveries == {"pending": 2, "claimed": 0, "failed": 0}
    assert b.lag(t0 + dt.timedelta(minutes=5), b.deliveries_oldest_due) == 300
    text = api.get("admin", "/metrics").get_data(as_text=True)
    assert 'civflow_deliveries{status="pending"} 2.0' in text
    assert "civflow_timers_due " in text and "civflow_timer_lag_seconds " in text
    assert "civflow_delivery_lag_seconds " in text
    assert api.get("s1", "/metrics").status_code == 403
