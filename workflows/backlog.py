"""What is waiting in the database: due timers, failed timers, undelivered notifications.

These are the figures an operator watches (docs/OPERATIONS.md): a growing timer backlog or
lag means no scheduler is running, or it cannot keep up; failed timers and deliveries need
a person to look. Read with a handful of indexed aggregate queries — cheap enough for every
Prometheus scrape, whatever the number of cases.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select

from .db import Database
from .models import Delivery, Timer
from .timers import CLAIMED, FAILED, PENDING

TIMERS = Timer.__table__
DELIVERIES = Delivery.__table__
DELIVERY_STATES = ("pending", "claimed", "failed")  # `sent` grows without end: not counted


@dataclass(frozen=True)
class Backlog:
    # pending (or claimed by a lost process) and due now; those whose case has moved on
    # too: recording them as dropped is the ticker's work (`TimerWorker.sweep`)
    timers_due: int
    timers_oldest_due: dt.datetime | None
    timers_failed: int  # gave up after their retries
    deliveries: dict[str, int]  # by status, `sent` left out
    deliveries_oldest_due: dt.datetime | None  # the oldest pending delivery that is due

    def lag(self, now: dt.datetime, oldest: dt.datetime | None) -> float:
        """Seconds the oldest due item has waited (0 when nothing waits)."""
        return max((now - oldest).total_seconds(), 0.0) if oldest else 0.0


def read_backlog(db: Database, now: dt.datetime) -> Backlog:
    with db.unit_of_work(write=False) as s:
        due, oldest = s.execute(
            select(func.count(), func.min(TIMERS.c.due_at))
            .where(TIMERS.c.status.in_((PENDING, CLAIMED)), TIMERS.c.due_at <= now)).one()
        failed = s.execute(select(func.count()).where(TIMERS.c.status == FAILED)
                           .select_from(TIMERS)).scalar_one()
        deliveries = {state: s.execute(select(func.count()).select_from(DELIVERIES)
                                       .where(DELIVERIES.c.status == state)).scalar_one()
                      for state in DELIVERY_STATES}
        oldest_delivery = s.execute(
            select(func.min(DELIVERIES.c.next_attempt_at))
            .where(DELIVERIES.c.status == "pending", DELIVERIES.c.next_attempt_at <= now)
        ).scalar_one()
    # MIN() keeps the column's type, so both databases give aware UTC datetimes.
    return Backlog(timers_due=int(due), timers_oldest_due=oldest, timers_failed=int(failed),
                   deliveries=deliveries, deliveries_oldest_due=oldest_delivery)
