"""Working days, deadlines and timers with a controlled clock, on SQLite and PostgreSQL.

The calendar facts used: 2026's National Day holiday runs 1–7 October; Saturday 10
October is a make-up working day (调休上班); 25–27 September (Mid-Autumn) are days off.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from workflows.access import Viewer
from workflows.calendar import WorkCalendar
from workflows.engine import SYSTEM_ACTOR, Actor, Engine
from workflows.models import Case, HistoryRecord, Timer
from workflows.spec import load_definition
from workflows.timers import (
    MAX_ATTEMPTS,
    TimerWorker,
    following_repeat,
    next_repeat,
    plan_state,
)

from .conftest import CST, REGULAR, Clock, cst

P = Actor.person




# --------------------------------------------------------------------------- calendar


def test_working_days_skip_the_national_day_holiday():
    cal = WorkCalendar()
    # Wednesday 30 September → the first working day after it is Thursday 8 October.
    assert cal.add_working_days(cst(2026, 9, 30, 10), 1) == cst(2026, 10, 9)
    assert not any(cal.is_workday(dt.date(2026, 10, d)) for d in range(1, 8))


def test_a_make_up_saturday_counts_as_a_working_day():
    cal = WorkCalendar()
    assert cal.is_workday(dt.date(2026, 10, 10))  # Saturday, 调休上班
    assert not cal.is_workday(dt.date(2026, 10, 11))  # Sunday
    # Friday 9 October + 1 working day = Saturday 10 October, ending at midnight.
    assert cal.add_working_days(cst(2026, 10, 9, 15), 1) == cst(2026, 10, 11)
    # Five working days after Friday 2 October: 8, 9, 10 (Sat), 12, 13 October.
    assert cal.add_working_days(cst(2026, 10, 2, 9), 5) == cst(2026, 10, 14)


def test_calendar_file_overrides_and_uncovered_years(tmp_path):
    (tmp_path / "calendar.yaml").write_text(
        "holidays: [2026-10-12]\nworkdays: [2026-10-11]\n", encoding="utf-8")
    cal = WorkCalendar.load(tmp_path)
    assert cal.is_workday(dt.date(2026, 10, 11)) and not cal.is_workday(dt.date(2026, 10, 12))
    assert cal.add_working_days(cst(2026, 10, 9, 15), 3) == cst(2026, 10, 14)
    plain = WorkCalendar()
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("civflow.calendar").addHandler(handler)
    try:
        assert plain.is_workday(dt.date(2099, 1, 5)) and not plain.is_workday(dt.date(2099, 1, 3))
    finally:
        logging.getLogger("civflow.calendar").removeHandler(handler)
    assert len(seen) == 1 and "no official holiday data for 2099" in seen[0]


def test_working_days_agree_with_the_library_and_ask_it_once_per_year(monkeypatch):
    """The per-year table (memoized) gives chinese_calendar's answer for every day of every
    year it covers, and asks the library about each day of a year at most once, however
    many deadlines are planned (the library scans its holiday table on every call)."""
    import chinese_calendar

    from workflows import calendar as calendar_module

    first, last = (min(chinese_calendar.holidays).year, max(chinese_calendar.holidays).year)
    cal = WorkCalendar()
    for year in range(first, last + 1):
        day = dt.date(year, 1, 1)
        while day.year == year:
            assert cal.is_workday(day) == chinese_calendar.is_workday(day), day
            day += dt.timedelta(days=1)
    calls: list[dt.date] = []
    real = chinese_calendar.is_workday

    def counting(day):
        calls.append(day)
        return real(day)

    monkeypatch.setattr(chinese_calendar, "is_workday", counting)
    calendar_module.official_days_off.cache_clear()
    try:
        for hour in range(0, 24 * 200, 5):
            cal.add_working_days(cst(2026, 1, 5) + dt.timedelta(hours=hour), 5)
    finally:
        calendar_module.official_days_off.cache_clear()
    assert 0 < len(calls) <= 366 + 1 and len(set(calls)) >= len(calls) - 1


def test_time_zone_decides_the_day():
    cal = WorkCalendar()
    # 23:30 UTC on Friday 9 October is already Saturday 10 October in Beijing.
    start = dt.datetime(2026, 10, 9, 23, 30, tzinfo=dt.UTC)
    assert cal.add_working_days(start, 1) == cst(2026, 10, 13)
    utc = WorkCalendar(tz=ZoneInfo("UTC"))
    assert utc.add_working_days(start, 1) == dt.datetime(2026, 10, 11, tzinfo=dt.UTC)


def test_period_bounds_and_weekdays():
    cal = WorkCalendar()
    assert cal.period_bounds("month", "2026-02") == (cst(2026, 2, 1), cst(2026, 3, 1))
    assert cal.period_bounds("quarter", "2026-Q4") == (cst(2026, 10, 1), cst(2027, 1, 1))
    assert cal.period_bounds("week", "2026-W48") == (cst(2026, 11, 23), cst(2026, 11, 30))
    # The next Friday 17:00 after Thursday 26 November 2026, 10:00.
    assert cal.next_weekday(cst(2026, 11, 26, 10), 4, "17:00") == cst(2026, 11, 27, 17)
    assert cal.next_weekday(cst(2026, 11, 27, 18), 4, "17:00") == cst(2026, 12, 4, 17)


def test_plan_of_the_regular_assessment_summary_state():
    spec = load_definition(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
    deadline, planned = plan_state(spec, "summary", cst(2026, 10, 1, 8), "2026-09",
                                   WorkCalendar())
    # 5 working days after 30 September: 8, 9, 10, 12, 13 October → end of 13 October.
    assert deadline == cst(2026, 10, 14)
    assert [(p.kind, p.due_at) for p in planned] == [
        ("deadline", cst(2026, 10, 14)), ("reminder", cst(2026, 10, 13)),
        ("repeat", cst(2026, 10, 2, 16))]  # 周记实: the first Friday, 16:00
    _deadline, planned = plan_state(spec, "feedback", cst(2026, 9, 30, 10), "2026-09",
                                    WorkCalendar())
    (auto,) = planned
    assert (auto.kind, auto.action, auto.due_at) == ("auto", "accept", cst(2026, 10, 14))


def test_the_regular_approval_is_due_after_the_quarter_ends():
    """季审定: July's and September's grades are due on the same day, 10 working days
    after 30 September (8, 9, 10 (make-up Saturday), 12–16, 19, 20 October)."""
    spec = load_definition(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
    for month in ("2026-07", "2026-08", "2026-09"):
        deadline, planned = plan_state(spec, "approval", cst(2026, 8, 10, 9), month,
                                       WorkCalendar())
        assert deadline == cst(2026, 10, 21)
        assert [(p.kind, p.due_at) for p in planned] == [
            ("deadline", cst(2026, 10, 21)), ("reminder", cst(2026, 10, 18))]
    deadline, _planned = plan_state(spec, "approval", cst(2026, 11, 3), "2026-10",
                                    WorkCalendar())
    assert deadline.astimezone(CST).date() > dt.date(2026, 12, 31)  # Q4: after year end


DISPATCH_FILE = REGULAR.parent / "frontline-dispatch.yaml"


def test_a_monthly_repeat_lands_at_its_time_on_its_day():
    """Issue 14.5: the check-in reminder (`every: P1M, time: "09:00"`) comes at 09:00, a
    month after the day the person took up the post — not at the minute they did — and a
    late firing does not push the next one a month past the moment it fired."""
    spec = load_definition(DISPATCH_FILE.read_text(encoding="utf-8"), str(DISPATCH_FILE))
    entered = cst(2026, 8, 18, 15)  # approved at 15:00
    _deadline, planned = plan_state(spec, "dispatched", entered, None, WorkCalendar(),
                                    {"term_end": "2028-08-31"})
    (repeat,) = [p for p in planned if p.kind == "repeat"]
    assert repeat.due_at == cst(2026, 9, 18, 9)
    # September's fires late, on 4 November at 21:20 (nobody ran the scheduler): October's
    # is skipped, November's stays on 18 November at 09:00.
    assert following_repeat(repeat.payload, repeat.due_at, cst(2026, 11, 4, 21, 20),
                            WorkCalendar()) == cst(2026, 11, 18, 9)
    # On time: the next month, same day and time.
    assert following_repeat(repeat.payload, cst(2026, 11, 18, 9), cst(2026, 11, 18, 9, 0, 1),
                            WorkCalendar()) == cst(2026, 12, 18, 9)


def test_monthly_repeats_count_from_the_anchor_and_short_steps_ignore_the_time():
    cal = WorkCalendar()
    payload = {"every": "P1M", "time": "09:00", "anchor": cst(2026, 1, 31, 10).isoformat()}
    feb = next_repeat("P1M", None, "09:00", cst(2026, 1, 31, 10), cal)
    assert feb == cst(2026, 2, 28, 9)
    assert following_repeat(payload, feb, feb, cal) == cst(2026, 3, 31, 9)  # not 28 March
    # A timer planned before the anchor was stored counts from its own due moment.
    assert following_repeat({"every": "P1M", "time": "09:00"}, cst(2026, 3, 5, 9),
                            cst(2026, 3, 5, 9), cal) == cst(2026, 4, 5, 9)
    # Every 20 minutes has no time of day; missed steps are skipped in one go.
    start = cst(2026, 10, 1, 8)
    assert next_repeat("PT20M", None, "09:00", start, cal) == start + dt.timedelta(minutes=20)
    late = {"every": "PT20M", "anchor": start.isoformat()}
    assert following_repeat(late, start + dt.timedelta(minutes=20), cst(2026, 10, 3, 8, 5),
                            cal) == cst(2026, 10, 3, 8, 20)

# --------------------------------------------------------------------------- engine + worker


@pytest.fixture
def clock():
    return Clock(cst(2026, 10, 1, 8))


@pytest.fixture
def timed(db, org, clock):
    """An engine on the controlled clock with the regular flow published."""
    engine = Engine(db, clock=clock)
    engine.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
    return engine


def _timers(db, case_id):
    with db.unit_of_work(write=False) as s:
        return s.execute(select(Timer.kind, Timer.status, Timer.due_at, Timer.state_visit)
                         .where(Timer.case_id == case_id).order_by(Timer.id)).all()


def test_entering_a_state_arms_and_leaving_drops_its_timers(timed, db, org, clock):
    case = timed.start_case("regular-assessment", org.s1, period_key="2026-09")
    assert case.deadline_at == cst(2026, 10, 14)
    assert [(k, s_, d) for k, s_, d, _v in _timers(db, case.id)] == [
        ("deadline", "pending", cst(2026, 10, 14)), ("reminder", "pending", cst(2026, 10, 13)),
        ("repeat", "pending", cst(2026, 10, 2, 16))]
    clock.now = cst(2026, 10, 9, 10)
    timed.fire(case.id, "submit", P(org.s1), data={"summary": "x"})
    rows = _timers(db, case.id)
    # The action wrote no timer of the visit it left; every read shows them dropped.
    assert [r.status for r in rows[:3]] == ["pending", "pending", "pending"]
    shown = timed.timers_for(Viewer(person_id=org.s1), case.id)[::-1]  # newest first
    assert [t.status for t in shown] == ["dropped"] * 3 + ["pending"] * 2
    # evaluation: 5 working days from Friday 9 October: 10 (Sat), 12, 13, 14, 15.
    assert [(r.kind, r.status, r.due_at, r.state_visit) for r in rows[3:]] == [
        ("deadline", "pending", cst(2026, 10, 16), 2),
        ("reminder", "pending", cst(2026, 10, 15), 2)]
    assert timed.get_case(case.id).deadline_at == cst(2026, 10, 16)
    # Due, they are recorded as dropped by the tick's one sweep, never claimed or fired.
    clock.now = cst(2026, 10, 14, 1)  # the summary's three are due; evaluation's are not
    worker = TimerWorker(timed)
    claimed: list[int] = []
    claim = worker.claim
    worker.claim = lambda now: claimed.extend(ids := claim(now)) or ids
    result = worker.tick()
    assert (result.dropped, result.claimed, result.fired, claimed) == (3, 0, 0, [])
    rows = _timers(db, case.id)
    assert [r.status for r in rows] == ["dropped"] * 3 + ["pending"] * 2
    assert timed.get_case(case.id).state == "evaluation"


def _to_feedback(engine, org, who="s1", period="2026-09"):
    case = engine.start_case("regular-assessment", org.ids[who], period_key=period)
    engine.fire(case.id, "submit", P(org.ids[who]), data={"summary": "x"})
    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "较好"})
    return case.id


def test_feedback_is_accepted_by_itself_after_five_working_days(timed, db, org, clock):
    clock.now = cst(2026, 9, 30, 10)
    cid = _to_feedback(timed, org)
    worker = TimerWorker(timed)
    clock.now = cst(2026, 10, 13, 23, 59)  # the fifth working day is not over yet
    worker.tick()  # the evaluation visit's timers are long gone; feedback's is not due
    assert timed.get_case(cid).state == "feedback"
    clock.now = cst(2026, 10, 14, 0, 1)
    assert worker.tick().fired == 1
    case = timed.get_case(cid)
    assert case.state == "approval"
    last = timed.history(cid)[-1]
    assert (last["trigger"], last["actor_role"], last["actor_id"]) == ("accept", "system", None)
    assert worker.tick().fired == 0  # nothing fires twice


def test_a_timer_of_a_state_the_case_left_is_dropped_not_fired(timed, db, org, clock):
    cid = _to_feedback(timed, org)
    timed.fire(cid, "object", P(org.s1), data={"objection_reason": "有异议"})
    worker = TimerWorker(timed)
    worker.sweep = lambda now: 0  # not swept first: claimed and fired, the visit decides
    clock.now = cst(2026, 12, 31)
    worker.tick()
    with db.unit_of_work(write=False) as s:
        auto = s.execute(select(Timer).where(Timer.case_id == cid, Timer.kind == "auto")
                         ).scalar_one()
    assert auto.status == "dropped" and auto.fired_at == clock.now
    assert timed.get_case(cid).state == "evaluation"
    assert not [h for h in timed.history(cid) if h["trigger"] == "accept"]


AUTO_FLOW = """
flow: auto-demo
title: {zh: 自动流转}
start: {accepts: [flag], by: system}
fields:
  note: {type: text}
  flag: {type: enum, values: [y, n]}
states:
  - name: waiting
    actor: subject
    deadline: {duration: PT12H, escalate: escalate}
    timers:
      - {kind: auto, after: PT1H, fire: expire}
      - {kind: repeat, every: PT20M}
  - name: escalated
    actor: leader
  - name: done
    final: true
transitions:
  - {trigger: expire, from: waiting, to: done, by: system, accepts: [note],
     rules: [{required_when: {field: note, if_field: flag, in: [y]}}]}
  - {trigger: escalate, from: waiting, to: escalated, by: system}
  - {trigger: finish, from: escalated, to: done, by: leader}
"""


def test_escalation_repeat_and_retries(db, org, clock):
    engine = Engine(db, clock=clock)
    engine.publish(AUTO_FLOW, "auto.yaml")
    events = []
    worker = TimerWorker(engine, on_event=lambda s, t, c, cf: events.append((t.kind, c.id)))
    start = clock.now
    cid = engine.start_case("auto-demo", org.s1, data={"flag": "y"}).id
    # 20 minutes: the repeat fires and arms the next one.
    clock.now = start + dt.timedelta(minutes=21)
    assert worker.tick().fired == 1 and events == [("repeat", cid)]
    with db.unit_of_work(write=False) as s:
        keys = s.execute(select(Timer.dedupe_key, Timer.status).where(
            Timer.case_id == cid, Timer.kind == "repeat").order_by(Timer.id)).all()
    assert [k.rsplit(":", 1)[-1] for k, _s in keys] == ["t1", "t1#2"]
    assert [st for _k, st in keys] == ["done", "pending"]
    # One hour: `expire` requires a note the scheduler cannot give → retried with backoff.
    clock.now = start + dt.timedelta(minutes=61)
    result = worker.tick()
    assert result.retried == 1
    with db.unit_of_work(write=False) as s:
        t = s.execute(select(Timer).where(Timer.case_id == cid, Timer.kind == "auto")).scalar_one()
    assert t.status == "pending" and t.attempts == 1 and "note" in t.last_error
    assert engine.get_case(cid).state == "waiting"
    for _ in range(MAX_ATTEMPTS):  # backoff: 10 s, 20 s, 40 s, 80 s
        clock.now += dt.timedelta(minutes=2)
        worker.tick()
    with db.unit_of_work(write=False) as s:
        t = s.execute(select(Timer).where(Timer.case_id == cid, Timer.kind == "auto")).scalar_one()
    assert t.status == "failed" and t.attempts == MAX_ATTEMPTS
    assert engine.get_case(cid).state == "waiting"
    # After 12 hours the deadline passes: `escalate` fires by itself; the repeats stop.
    clock.now = start + dt.timedelta(hours=12, minutes=1)
    worker.tick()
    case = engine.get_case(cid)
    assert case.state == "escalated"
    assert ("deadline", cid) in events
    escalations = [h for h in engine.history(cid) if h["trigger"] == "escalate"]
    assert len(escalations) == 1 and escalations[0]["actor_role"] == "system"
    # The waiting visit's next repeat is not due yet: stored pending, shown and kept dropped.
    assert "pending" not in {t.status for t in engine.timers_for(Viewer(person_id=org.s1), cid)}
    clock.now += dt.timedelta(days=1)
    assert worker.tick().fired == 0


def test_a_lost_lease_is_taken_over_and_fires_once(timed, db, org, clock):
    cid = _to_feedback(timed, org)
    clock.now = cst(2026, 12, 31)
    a = TimerWorker(timed, node="a", lease=dt.timedelta(seconds=30))
    b = TimerWorker(timed, node="b", lease=dt.timedelta(seconds=30))
    claimed = a.claim(clock.now)  # a claims, then "dies" before firing
    assert len(claimed) >= 1
    assert b.tick().fired == 0  # the lease still holds
    clock.now += dt.timedelta(seconds=31)
    assert b.tick().fired >= 1
    assert all(a.fire(t, clock.now) == "skipped" for t in claimed)  # a comes back: too late
    accepts = [h for h in timed.history(cid) if h["trigger"] == "accept"]
    assert len(accepts) == 1


def test_two_workers_racing_fire_each_timer_once(timed, db, org, clock):
    cases = [_to_feedback(timed, org, who) for who in ("s1", "s2", "s3", "s4", "s5", "t1")
             if who != "t1"]
    clock.now = cst(2026, 12, 31)
    workers = [TimerWorker(timed, node=f"n{i}", batch=2) for i in range(3)]
    threads = [threading.Thread(target=w.tick) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.unit_of_work(write=False) as s:
        accepts = dict(s.execute(select(HistoryRecord.case_id, func.count())
                                 .where(HistoryRecord.trigger == "accept")
                                 .group_by(HistoryRecord.case_id)).all())
        states = set(s.execute(select(Case.state).where(Case.id.in_(cases))).scalars())
    assert accepts == dict.fromkeys(cases, 1)
    assert states == {"approval"}


def test_system_actor_cannot_act_for_people(timed, org):
    cid = _to_feedback(timed, org)
    with pytest.raises(Exception) as exc:  # noqa: PT011
        timed.fire(cid, "object", SYSTEM_ACTOR, data={"objection_reason": "x"})
    assert "system" in str(exc.value)


def test_the_weekly_record_reminder_comes_every_friday_while_the_summary_is_open(
        timed, db, org, clock):
    events = []
    worker = TimerWorker(timed, on_event=lambda s, t, c, cf: events.append(
        (t.kind, t.due_at, t.payload.get("message", {}).get("zh"))))
    case = timed.start_case("regular-assessment", org.s1, period_key="2026-10")
    clock.now = cst(2026, 10, 2, 16, 1)  # Friday
    worker.tick()
    clock.now = cst(2026, 10, 9, 16, 1)  # the next Friday
    worker.tick()
    assert events == [("repeat", cst(2026, 10, 2, 16), "请记录本周工作纪实"),
                      ("repeat", cst(2026, 10, 9, 16), "请记录本周工作纪实")]
    timed.fire(case.id, "submit", P(org.s1), data={"summary": "本月小结"})
    clock.now = cst(2026, 10, 16, 16, 1)
    worker.tick()
    repeats = [e for e in events if e[0] == "repeat"]
    assert len(repeats) == 2  # the summary is in: no more weekly reminders


def test_a_failure_reported_after_losing_the_claim_changes_nothing(timed, db, org, clock):
    cid = _to_feedback(timed, org)
    clock.now = cst(2026, 12, 31)
    a = TimerWorker(timed, node="a", lease=dt.timedelta(seconds=30))
    b = TimerWorker(timed, node="b", lease=dt.timedelta(seconds=30))
    claimed = a.claim(clock.now)
    clock.now += dt.timedelta(seconds=31)
    assert b.tick().fired >= 1  # b took over and fired
    # a's hook had failed meanwhile: its report must not bring the timer back to life.
    assert all(a._failed(t, clock.now, "RuntimeError: late") == "skipped" for t in claimed)
    with db.unit_of_work(write=False) as s:
        auto = s.execute(select(Timer).where(Timer.case_id == cid, Timer.kind == "auto")
                         ).scalar_one()
    assert (auto.status, auto.attempts, auto.last_error) == ("done", 0, None)


DISPATCH = """
flow: dispatch-demo
title: {zh: 选派}
start: {accepts: [term_end], by: system}
fields:
  term_end: {type: date, label: 任期届满}
  checkins:
    type: list
    label: 月度在岗
    fields:
      month: {type: text}
      days: {type: int, min: 0, max: 31}
states:
  - name: dispatched
    actor: subject
    timers:
      - {kind: auto, at_field: term_end, time: "09:00", fire: term_end}
  - name: ended
    final: true
transitions:
  - {trigger: check_in, from: dispatched, to: dispatched, by: subject,
     requires: [checkins], appends: [checkins]}
  - {trigger: term_end, from: dispatched, to: ended, by: system}
"""


def test_a_term_ends_by_itself_on_its_date_and_check_ins_add_up(db, org, clock):
    engine = Engine(db, clock=clock)
    engine.publish(DISPATCH, "dispatch.yaml")
    case = engine.start_case("dispatch-demo", org.s1, data={"term_end": "2027-09-30"})
    (timer,) = [t for t in _timers(db, case.id) if t.kind == "auto"]
    assert timer.due_at == cst(2027, 9, 30, 9)
    for month, days in (("2026-10", 22), ("2026-11", 18)):
        engine.fire(case.id, "check_in", P(org.s1),
                    data={"checkins": [{"month": month, "days": days}]})
    data = engine.get_case(case.id).data
    assert data["checkins"] == [{"month": "2026-10", "days": 22},
                                {"month": "2026-11", "days": 18}]
    # A self-loop keeps the state visit: the term-end timer is still the one armed at start.
    assert [t.status for t in _timers(db, case.id)] == ["pending"]
    clock.now = cst(2027, 9, 30, 9, 1)
    assert TimerWorker(engine).tick().fired == 1
    assert engine.get_case(case.id).state == "ended"
    # Without a date there is nothing to fire on.
    other = engine.start_case("dispatch-demo", org.s2)
    assert _timers(db, other.id) == []


def test_appends_and_at_field_are_validated():
    from workflows.errors import DefinitionInvalid

    bad = DISPATCH.replace("appends: [checkins]", "appends: [term_end]").replace(
        "at_field: term_end", "at_field: checkins")
    with pytest.raises(DefinitionInvalid) as exc:
        load_definition(bad, "d.yaml")
    messages = {p.path: p.message for p in exc.value.problems}
    assert messages["transitions[0].appends[0]"] == (
        "field 'term_end' must be listed in requires or accepts to be appended")
    assert messages["states[0].timers[0].at_field"] == (
        "at_field must name a date field; 'checkins' is list")
