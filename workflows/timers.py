"""Durable timers: planned when a case enters a state, fired exactly once by any node.

The timers table is the truth. A process's ticker (APScheduler in `service.scheduler`, or a
test calling `tick`) claims due timers and fires each in its own transaction together with
the state change it causes:

1. **Claim** a batch: on PostgreSQL one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
   LOCKED)`, so concurrent nodes never take the same rows; on SQLite (which ignores FOR
   UPDATE) a conditional UPDATE per row whose row count says who won. A claim carries a
   lease: timers claimed by a node that died are claimed again once it runs out.
2. **Fire** each claimed timer in one transaction: lock the timer row and check that it
   is still ours and still claimed; check that the case is still in the state visit that
   armed it (else the timer is dropped, not fired); run the action through the kernel's
   one path (`Kernel.fire`, as any other entrance does); mark the timer done. Commit. A
   second node that took over after the lease waits on the row lock and then finds it done.

A timer belongs to the state visit that armed it. The action that moves a case on does not
write to the timers of the visit it leaves — that was about a third of an action's writes
on SQLite (docs/BENCHMARKS.md). They are dropped all the same: reads show them as dropped
from that moment (`SHOWN_STATUS`), nothing fires them (step 2 checks the visit under the
case's lock), and each tick first records the due ones as dropped in one statement
(`TimerWorker.sweep`) instead of claiming and firing them one by one.

A failure (a rule refuses the automatic transition, a bug) rolls the transaction back; the
timer is retried with backoff and, after `MAX_ATTEMPTS`, left as `failed` with its error.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, exists, or_, select, update
from sqlalchemy import case as sql_case
from sqlalchemy.orm import Session

from .calendar import WorkCalendar, parse_duration, period_days, quarter_end
from .claims import claim_batch
from .core import SYSTEM_ACTOR
from .db import Work
from .errors import CivflowError
from .models import Case, Timer
from .spec import WEEKDAYS, FlowSpec

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("civflow.timers")
TIMERS = Timer.__table__
CASES = Case.__table__
PENDING, CLAIMED, DONE, DROPPED, FAILED = "pending", "claimed", "done", "dropped", "failed"
LIVE = (PENDING, CLAIMED)  # a timer still to fire, unless its case has moved on
MAX_ATTEMPTS = 5
DEADLINE, REMINDER, AUTO, REPEAT = "deadline", "reminder", "auto", "repeat"


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Planned:
    kind: str
    due_at: dt.datetime
    action: str | None = None  # trigger fired by `system`
    slot: str = ""  # distinguishes timers of one visit in the dedupe key
    payload: dict[str, Any] = field(default_factory=dict)


def plan_state(spec: FlowSpec, state: str, entered: dt.datetime, period_key: str | None,
               cal: WorkCalendar, data: dict[str, Any] | None = None
               ) -> tuple[dt.datetime | None, list[Planned]]:
    """The deadline and the timers of one state visit. Pure: no I/O.

    `data` is the case's data on entering the state: a timer `at_field` fires on the date
    it holds (none is planned while the field is empty)."""
    st = spec.states[state]
    planned: list[Planned] = []
    deadline = None
    if st.deadline:
        d = st.deadline
        base = entered
        if d.start != "entered" and period_key:
            first, last = period_days(spec.period, period_key)
            anchor = {"period_start": first, "period_end": last}.get(d.start) \
                or quarter_end(last)
            # Working days are counted after the anchor day.
            base = cal.at_time(anchor, "12:00")
        deadline = (cal.add_working_days(base, d.working_days) if d.working_days is not None
                    else cal.add_duration(base, d.duration))
        planned.append(Planned(DEADLINE, deadline, d.escalate, "deadline"))
    for i, tm in enumerate(st.timers):
        notify = {"notify": list(tm.notify or st.actor)}
        if tm.message:
            notify["message"] = {"zh": tm.message.zh, "en": tm.message.en}
        if tm.kind == REMINDER and deadline is not None:
            due = max(deadline - _duration(tm.before), entered)
            planned.append(Planned(REMINDER, due, None, f"t{i}", notify))
        elif tm.kind == AUTO:
            if tm.after:
                due = cal.add_duration(entered, tm.after)
            elif tm.working_days is not None:
                due = cal.add_working_days(entered, tm.working_days)
            elif tm.at_field:
                day = (data or {}).get(tm.at_field)
                if not day:
                    continue
                due = cal.at_time(dt.date.fromisoformat(str(day)), tm.time)
            else:
                due = _boundary(spec, period_key, tm.at, tm.time, cal) or entered
            planned.append(Planned(AUTO, due, tm.fire, f"t{i}"))
        elif tm.kind == REPEAT:
            due = next_repeat(tm.every, tm.weekday, tm.time, entered, cal)
            # `anchor`: the repeats of `every` count from the visit's start, so a late
            # firing does not shift the ones after it (following_repeat); a weekday
            # repeat needs none.
            planned.append(Planned(REPEAT, due, None, f"t{i}",
                                   {**notify, "every": tm.every, "weekday": tm.weekday,
                                    "time": tm.time, "n": 1,
                                    **({"anchor": entered.isoformat()} if tm.every else {})}))
    return deadline, planned


def next_repeat(every: str | None, weekday: str | None, hhmm: str | None,
                after: dt.datetime, cal: WorkCalendar, anchor: dt.datetime | None = None
                ) -> dt.datetime:
    """The first repeat strictly after `after`.

    `weekday`: that weekday at `hhmm` local. `every`: the k-th step from `anchor` (default
    `after`), k = 1, 2, …; with `hhmm` the step's local day at that time (a monthly check-in
    at 09:00 lands at 09:00 on the same day each month, not at the minute the state was
    entered). A step shorter than a day ignores `hhmm` (every 20 minutes has no time of day).
    """
    if not every:
        return cal.next_weekday(after, WEEKDAYS.index(weekday or "mon"), hhmm)
    step = parse_duration(every)
    base = cal.local(anchor or after)
    daily = hhmm is not None and not (isinstance(step, dt.timedelta)
                                      and step < dt.timedelta(days=1))
    k = 1
    if isinstance(step, dt.timedelta) and after > base:  # jump over the missed ones at once
        k = max(1, (after - base) // step)
    while True:
        moment = base + step * k  # from the anchor each time: 31 Jan, 28 Feb, 31 Mar
        due = cal.at_time(moment.date(), hhmm) if daily else moment.astimezone(dt.UTC)
        if due > after:
            return due
        k += 1


def following_repeat(payload: dict[str, Any], due_at: dt.datetime, now: dt.datetime,
                     cal: WorkCalendar) -> dt.datetime:
    """The repeat after the one due at `due_at`, fired at `now`: the next of its schedule
    still to come. Repeats missed while no worker ran are skipped, not fired in a burst,
    and a late firing does not move the schedule (November's reminder still comes at 09:00
    on its day, not a month after the moment a late October one fired)."""
    anchor = payload.get("anchor")
    return next_repeat(payload.get("every"), payload.get("weekday"), payload.get("time"),
                       max(due_at, now), cal,
                       dt.datetime.fromisoformat(anchor) if anchor else due_at)


def _boundary(spec: FlowSpec, period_key: str | None, at: str | None, hhmm: str | None,
              cal: WorkCalendar) -> dt.datetime | None:
    if not period_key or spec.period == "none":
        return None
    first, last = period_days(spec.period, period_key)
    if at == "period_start":
        return cal.at_time(first, hhmm)
    return cal.at_time(last, hhmm) if hhmm else cal.midnight_after(last)


def _duration(iso: str | None) -> dt.timedelta:
    d = parse_duration(iso or "PT0S")
    return d if isinstance(d, dt.timedelta) else d.totimedelta(start=dt.datetime(2000, 1, 1))


def timer_rows(case_id: int, visit: int, planned: list[Planned], now: dt.datetime
               ) -> list[dict[str, Any]]:
    return [{"case_id": case_id, "state_visit": visit, "kind": p.kind, "action": p.action,
             "due_at": p.due_at, "status": PENDING, "attempts": 0,
             "dedupe_key": f"case:{case_id}:{visit}:{p.slot}", "payload": p.payload,
             "created_at": now} for p in planned]


@dataclass(frozen=True)
class AutoStep:
    """When a step with no deadline moves by itself (结果反馈: accepted after 5 working days
    of silence), and what it then does, in the reader's language."""

    due_at: dt.datetime
    action: str


def auto_step(spec: FlowSpec, state: str, timers: Iterable[Any], lang: str
              ) -> AutoStep | None:
    """The first pending auto timer of `timers` (rows with kind, status, action, due_at):
    what the case page, the lists and the queue show for such a step."""
    waiting = sorted((t for t in timers if t.kind == AUTO and t.status == PENDING),
                     key=lambda t: t.due_at)
    if not waiting:
        return None
    t = waiting[0]
    found = spec.transition(t.action or "", state)
    return AutoStep(t.due_at, found.label.text(lang) if found else (t.action or ""))


# --------------------------------------------------------------------------- firing


@dataclass
class TickResult:
    claimed: int = 0
    fired: int = 0
    dropped: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0  # claimed by us, then lost (another node took it over)


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


CLAIMABLE = or_(and_(TIMERS.c.status == PENDING, TIMERS.c.due_at <= bindparam("now")),
                and_(TIMERS.c.status == CLAIMED, TIMERS.c.claim_until < bindparam("now")))
# The timer's case has moved on: to another state visit, or closed. Such a timer is dropped
# whatever its stored status says (`SHOWN_STATUS`, `TimerWorker.sweep`).
STALE = exists().where(CASES.c.id == TIMERS.c.case_id,
                       or_(CASES.c.state_visit != TIMERS.c.state_visit,
                           CASES.c.closed_at.is_not(None)))
# A timer's status as every read shows it: pending or claimed in a visit its case has left
# is dropped (the ticker writes it so when it comes due).
SHOWN_STATUS = sql_case((and_(TIMERS.c.status.in_(LIVE), STALE), DROPPED),
                        else_=TIMERS.c.status).label("status")


class TimerWorker:
    """Claims and fires due timers. One per process; `tick` is what the scheduler calls."""

    def __init__(self, engine: Engine, node: str | None = None,
                 lease: dt.timedelta = dt.timedelta(seconds=30), batch: int = 200,
                 on_event: Callable[[Session, Any, Any, Any], None] | None = None):
        self.engine = engine
        self.node = node or node_name()
        self.lease = lease
        self.batch = batch
        # Called inside the firing transaction for reminders, repeats and deadlines:
        # (session, timer row, case row, compiled flow). Notifications hook in here.
        self.on_event = on_event or _no_event

    def tick(self, now: dt.datetime | None = None) -> TickResult:
        """Claim and fire what is due at `now` (a batch at a time) until nothing is due."""
        total = TickResult()
        sweep = True  # once per tick, and again only while a sweep fills its batch
        while True:
            now_ = now or self.engine.clock()
            swept = self.sweep(now_) if sweep else 0
            sweep = swept == self.batch
            total.dropped += swept
            ids = self.claim(now_)
            total.claimed += len(ids)
            for timer_id in ids:
                outcome = self.fire(timer_id, now or self.engine.clock())
                setattr(total, outcome, getattr(total, outcome) + 1)
            if len(ids) < self.batch and swept < self.batch:
                return total

    def sweep(self, now: dt.datetime) -> int:
        """Record as dropped the due timers whose case has moved on (`STALE`), up to a
        batch: one statement, not a claim and a transaction per timer. On PostgreSQL the
        rows are chosen `FOR UPDATE SKIP LOCKED`, so nodes sweeping at once never wait on
        each other (a row another node holds is its to sweep, claim or fire)."""
        chosen = (select(TIMERS.c.id)
                  .where(TIMERS.c.status == PENDING, TIMERS.c.due_at <= bindparam("now"), STALE)
                  .order_by(TIMERS.c.due_at).limit(self.batch))
        with self.engine.db.unit_of_work() as s:
            conn = s.connection()
            if conn.dialect.name == "postgresql":
                chosen = chosen.with_for_update(skip_locked=True, of=TIMERS)
            return conn.execute(
                update(TIMERS).where(TIMERS.c.id.in_(chosen.scalar_subquery()))
                .values(status=DROPPED, fired_at=bindparam("now")), {"now": now}).rowcount

    def claim(self, now: dt.datetime) -> list[int]:
        with self.engine.db.unit_of_work() as s:
            return claim_batch(s.connection(), TIMERS, CLAIMABLE, (TIMERS.c.due_at,),
                               self.batch, self.node, now, self.lease)

    def fire(self, timer_id: int, now: dt.datetime) -> str:
        """Fire one claimed timer; returns the TickResult field it counts under."""
        try:
            with self.engine.db.unit_of_work() as s:
                return self._fire(s, timer_id, now)
        except CivflowError as exc:
            return self._failed(timer_id, now, f"{exc.__class__.__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one bad timer must not stop the others
            log.exception("timer %s failed", timer_id)
            return self._failed(timer_id, now, f"{exc.__class__.__name__}: {exc}")

    def _fire(self, s: Session, timer_id: int, now: dt.datetime) -> str:
        conn = s.connection()
        # Lock the case before the timer: a person's action updates the case and then the
        # timers (dropping those of the visit it leaves); the same order here means the
        # two wait for each other instead of deadlocking.
        case_id = conn.execute(select(TIMERS.c.case_id).where(TIMERS.c.id == timer_id)).scalar()
        case = conn.execute(select(CASES).where(CASES.c.id == case_id)
                            .with_for_update()).first() if case_id is not None else None
        timer = conn.execute(select(TIMERS).where(TIMERS.c.id == timer_id)
                             .with_for_update()).first()
        if timer is None or timer.status != CLAIMED or timer.claimed_by != self.node:
            return "skipped"
        if case is None or case.state_visit != timer.state_visit or case.closed_at:
            self._finish(conn, timer_id, DROPPED, now)
            return "dropped"
        cf = self.engine.compiled(s, case.version_id)
        if timer.kind in (REMINDER, REPEAT, DEADLINE):
            self.on_event(s, timer, case, cf)
        if timer.kind == REPEAT:
            p = timer.payload
            due = following_repeat(p, timer.due_at, now, self.engine.calendar)
            n = int(p.get("n", 1)) + 1
            conn.execute(TIMERS.insert(), [{
                "case_id": timer.case_id, "state_visit": timer.state_visit, "kind": REPEAT,
                "action": None, "due_at": due, "status": PENDING, "attempts": 0,
                "dedupe_key": f"{timer.dedupe_key.rsplit('#', 1)[0]}#{n}",
                "payload": {**p, "n": n}, "created_at": now}])
        self._finish(conn, timer_id, DONE, now)
        if timer.action and timer.kind in (AUTO, DEADLINE):
            self.engine.kernel.fire(Work(conn, s), timer.case_id, timer.action, SYSTEM_ACTOR,
                                    expected_version=case.version)
        return "fired"

    def _finish(self, conn, timer_id: int, status: str, now: dt.datetime) -> None:
        conn.execute(update(TIMERS).where(TIMERS.c.id == timer_id)
                     .values(status=status, fired_at=now, claimed_by=None, claim_until=None))

    def _failed(self, timer_id: int, now: dt.datetime, error: str) -> str:
        """Back off and retry, or give up after MAX_ATTEMPTS; the error stays visible."""
        with self.engine.db.unit_of_work() as s:
            conn = s.connection()
            # Only while the claim is still ours: another node may have taken over after
            # our lease ran out, and fired the timer; it must not come back to life.
            mine = (TIMERS.c.id == timer_id, TIMERS.c.status == CLAIMED,
                    TIMERS.c.claimed_by == self.node)
            row = conn.execute(select(TIMERS.c.attempts).where(*mine).with_for_update()).first()
            if row is None:
                return "skipped"
            attempts = row.attempts + 1
            give_up = attempts >= MAX_ATTEMPTS
            conn.execute(update(TIMERS).where(*mine).values(
                status=FAILED if give_up else PENDING, attempts=attempts, last_error=error,
                claimed_by=None, claim_until=None,
                due_at=now + dt.timedelta(seconds=min(2 ** attempts * 5, 3600))))
        log.warning("timer %s: %s (attempt %s%s)", timer_id, error, attempts,
                    ", giving up" if give_up else "")
        return "failed" if give_up else "retried"


def _no_event(s: Session, timer: Any, case: Any, cf: Any) -> None:
    return None
