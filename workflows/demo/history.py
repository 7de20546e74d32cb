"""A year of history for the demo bureau (演示数据：近一年的办理记录), made through the engine.

So that every flow can be tried at once, `civflow demo` replays the last twelve months on a
moving clock: each action is an ordinary `Engine.start_case` / `fire` / `fire_bulk` call
with the engine's clock set to the moment it happened, and the auto timers (feedback
accepted after 5 working days of silence) are fired by a `TimerWorker` at their own due
moment. The hash-chained history is therefore real: `civflow verify-history` checks it, the
ledger counts it, and the rules read it (the annual 优秀 linkage reads the year's approved
regular grades).

What it makes, relative to `now` (month M0 is the current one):

- **平时考核**, months M-12 … M-1: opened at the cycle's moment; weekly records (周记实) in
  the last months; the self summary in the first working days after the month; the
  leader's grades (好 within the definition's quota in every pool, read from the `quota`
  rule of `approve`: never more than the pool's limit), accepted by the person or by the
  timer; approved by the committee after each quarter (季审定). Months of the quarter still
  running wait in 审定 for the committee. M0 is opened, with this month's weekly records.
  People nobody in the bureau evaluates (who evaluates whom: workflows/actors.py) have no
  regular cases: the deputy head 陈建国, and 林晓燕, a 副职 at the bureau level whom only
  the bureau's 主要负责人 would grade — the demo bureau has none. The cycle skips them too,
  and logs it.
- **下沉一线**: 胡志鹏 (考核奖惩处) as 第一书记, nominated and approved three months ago, in
  post since the first day of M-2, two monthly check-ins, one below the minimum days.
- **职级晋升**: 刘思远 (公务员管理处) to 一级主任科员, through recommendation, candidate
  confirmation and vetting, in public notice since the last working day (its 5 working
  days run on the real calendar).
- **联系点**: 考核奖惩处 is a contact point (联系点) of the years covered, 梁宇航 its
  liaison (联络员); its monthly reports (信息月报) of M-3 … M-1 are filed (M-2 late) and
  reviewed by 干部科 (hr-office); M0's is open, waiting for the liaison.

Deterministic: the choices (grades, days, minutes) come from `random.Random` seeded with
the person, the month and `SEED`; with the same `now` two databases get the same history.
Idempotent: nothing happens when any demo person already has a case. Not one transaction:
each action commits on its own, as it would have in the service.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, select

from workflows import actors, contact_register, notify, quotas
from workflows.calendar import DEFAULT_TZ, WorkCalendar, period_days
from workflows.claims import claim_batch
from workflows.cycles import opening_moment, previous_period
from workflows.db import Database
from workflows.engine import Actor, Engine, utcnow
from workflows.errors import CivflowError, NotFound
from workflows.models import (
    Case,
    ContactPoint,
    HistoryRecord,
    Person,
    RoleAssignment,
    Sanction,
    Timer,
    Unit,
)
from workflows.periods import period_key
from workflows.spec import FlowSpec, RoleSpec, RuleSpec
from workflows.timers import AUTO, CLAIMABLE, STALE, TIMERS, TimerWorker

log = logging.getLogger("civflow.demo")

REGULAR, DISPATCH, PROMOTION = "regular-assessment", "frontline-dispatch", "rank-promotion"
REPORT = "contact-point-report"
SEED = "civflow-demo"
MONTHS = 12  # months of regular assessment before the current one
WEEKLY_MONTHS = 2  # the last months (and the current one) carry weekly records
NODE = "civflow-demo"  # the timer worker's name in the timers it fires

# How each demo person usually does (demo data, not a rule): a base score and a spread
# drawn each month; the best of a pool get 好 up to the pool's quota.
PROFILES: dict[str, tuple[float, float]] = {
    "strong": (0.70, 0.30),
    "solid": (0.45, 0.40),
    "uneven": (0.25, 0.45),
}
PROFILE_OF = {
    "RS0102": "strong", "RS0103": "strong", "RS0104": "strong", "RS0201": "strong",
    "RS0205": "strong", "RS0303": "strong",
    "RS0106": "uneven", "RS0207": "uneven", "RS0305": "uneven",
}
GOOD_FROM, WEAK_BELOW = 0.75, 0.30  # scores for 好 (when the quota allows) and for 一般

COMMENTS = {
    "好": "工作主动，成效突出，同事和服务对象评价好。",
    "较好": "能按要求完成各项工作任务，工作质量较好。",
    "一般": "个别工作完成不够及时，需加强学习、提高效率。",
}
SANCTION_COMMENT = "本月受{kind}处分，等次定为一般。"
WEEK_WORK = [
    "完成{post}相关材料起草和报送。",
    "办结{post}事项，按时答复来文来电。",
    "参加处内业务学习，整理{post}工作台账。",
    "配合处里专项检查，完成{post}数据核对。",
    "牵头推进{post}重点任务，形成阶段性报告。",
]
MONTH_WORK = [
    "本月围绕{post}工作，按时完成各项任务，无差错。",
    "本月{post}工作稳步推进，重点任务已形成初稿，下月继续完善。",
    "本月完成{post}日常工作，并承担处里交办的专项任务。",
]

CONTACT_UNIT, LIAISON = "RSJ-KHJC", "RS0208"  # 考核奖惩处, 梁宇航
CONTACT_TARGETS = ["将政务服务“好差评”结果与平时考核审核评鉴相结合", "形成一个平时考核创新案例"]
# The last three months' reports: working days after the month it is filed on, and the
# quality 干部科 gives it (demo data; the second is filed after the 5-working-day deadline).
REPORTS = [(2, "好"), (7, "一般"), (3, "较好")]
REPORT_WORK = "本月完成平时考核指标体系修订，召开座谈会一次，收集意见建议若干条。"

DISPATCHED = "RS0204"  # 胡志鹏, 考核奖惩处: 第一书记
NOMINATION = {"post_type": "第一书记", "receiving_unit": "青山镇石桥村",
              "nomination_reason": "熟悉考核和基层工作，年富力强，本人自愿到村任职。"}
CHECK_INS = [(22, None), (17, "参加县委组织部第一书记集中轮训 5 天")]
TERM_MONTHS = 24

CANDIDATE = "RS0104"  # 刘思远, 公务员管理处: 二级主任科员 → 一级主任科员
PROMOTION_PLAN = {"target_rank": "一级主任科员", "category": "实干家",
                  "plan_reason": "任二级主任科员满四年，历年考核称职以上，2024 年度优秀。"}
VOTES = {"votes_cast": 24, "votes_for": 21, "votes_against": 3}
VETTING = {"vetting_opinion": "政治素质好，业务能力强，工作实绩突出，群众公认度高。",
           "personal_matters_checked": True}


@dataclass(frozen=True)
class HistoryResult:
    """What a replay wrote: cases started and history records (their starts included)."""

    cases: int = 0
    records: int = 0


@dataclass(frozen=True)
class _Member:
    id: int
    code: str
    name: str
    unit_id: int
    tier: str
    post: str
    evaluator: int | None  # who evaluates the person (评鉴人, workflows/actors.py)
    committee: int | None


@dataclass
class _Clock:
    now: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass(order=True)
class _Event:
    at: dt.datetime
    seq: int
    run: Callable[[], None] = field(compare=False)


def default_calendar() -> WorkCalendar:
    """The calendar the service uses when none is given (`service.runtime.load_calendar`
    passes the definitions folder's): `calendar.yaml` of $CIVFLOW_DEFINITIONS, the zone of
    $CIVFLOW_TIMEZONE."""
    return WorkCalendar.load(os.environ.get("CIVFLOW_DEFINITIONS", "definitions"),
                             os.environ.get("CIVFLOW_TIMEZONE") or DEFAULT_TZ)


def has_history(db: Database, codes: list[str]) -> bool:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(Case.id).join(Person, Person.id == Case.subject_id)
                         .where(Person.code.in_(codes)).limit(1)).first() is not None


def seed(db: Database, codes: list[str], now: dt.datetime | None = None,
         calendar: WorkCalendar | None = None) -> HistoryResult:
    """Replay the demo year for the people with `codes` up to `now` (an aware moment;
    default: the wall clock); nothing when any of them already has a case. Flows that are
    not published (or a regular flow without its `quota` rule) are left out."""
    if not codes or has_history(db, codes):
        return HistoryResult()
    now = now or utcnow()
    base = calendar or default_calendar()
    # The calendar itself: working days are memoised in `workflows.calendar`, and a copy
    # would lose the years the calendar file covers.
    replay = _Replay(db, now, base, codes)
    with db.unit_of_work(write=False) as s:
        before = s.execute(select(func.max(Case.id))).scalar() or 0
    replay.plan()
    replay.run()
    with db.unit_of_work(write=False) as s:
        cases = s.execute(select(func.count()).select_from(Case)
                          .where(Case.id > before)).scalar()
        records = s.execute(select(func.count()).select_from(HistoryRecord)
                            .where(HistoryRecord.case_id > before)).scalar()
    return HistoryResult(cases, records)


class _Replay:
    """The planned actions, on a heap by moment, run in order on the engine's clock."""

    def __init__(self, db: Database, now: dt.datetime, calendar: WorkCalendar,
                 codes: list[str]):
        self.db, self.now, self.cal = db, now, calendar
        self.clock = _Clock(now)
        self.engine = Engine(db, clock=self.clock, calendar=calendar)
        self.auto = _AutoTimers(self.engine, node=NODE)
        self.events: list[_Event] = []
        self.order = itertools.count()  # events of one moment run in the order planned
        self.cases: dict[tuple[str, str], int] = {}  # (person code, period) → case id
        self.members = _members(db, codes)
        self.by_code = {m.code: m for m in self.members}

    # ------------------------------------------------------------------ the loop

    def at(self, moment: dt.datetime, run: Callable[[], None]) -> None:
        """Plan `run` at `moment`; what would happen after `now` does not happen."""
        if moment <= self.now:
            heapq.heappush(self.events, _Event(moment, next(self.order), run))

    def run(self) -> None:
        while self.events:
            event = heapq.heappop(self.events)
            self.clock.now = event.at
            event.run()
        self.clock.now = self.now
        # Reminders, deadlines and weekly prompts due by now are spent as a running
        # scheduler would have spent them, and notify as it would (消息): the reminders and
        # overdue notices of the steps the cases are in now, written to the outbox by
        # `notify.on_timer_event` (in-app only: no mail server or webhook is configured
        # here). Timers of the steps a case has left notify nobody (dropped).
        TimerWorker(self.engine, node=NODE, on_event=notify.on_timer_event(
            notify.NotifyConfig(), clock=self.clock)).tick(self.now)
        self.notify_waiting()

    def notify_waiting(self) -> None:
        """One notice (消息) per approver and step with cases waiting for them now — the
        committee's 审定, the leaders' 评鉴, 干部科's public notice — so that the approvers'
        message pages are not empty either: `notify.recipients` finds who holds the step's
        roles, `notify.queue` writes the notice (keyed: a second run writes nothing)."""
        ids = [m.id for m in self.members]
        waiting: dict[tuple[int, str, str], list[Any]] = {}
        with self.db.unit_of_work() as s:
            cases = s.execute(select(Case).where(Case.closed_at.is_(None),
                                                 Case.subject_id.in_(ids))
                              .order_by(Case.id)).scalars().all()
            specs: dict[tuple[str, str], Any] = {}
            for case in cases:
                spec = self.engine.compiled(s, case.version_id).spec
                state = spec.states[case.state]
                roles = [r for r in state.actor
                         if r in spec.roles and spec.roles[r].resolve != "subject"]
                specs[(spec.flow, case.state)] = (spec, state)
                for person in notify.recipients(s, case, spec, roles):
                    if person != case.subject_id:
                        waiting.setdefault((person, spec.flow, case.state), []).append(case)
            for (person, flow, name), found in waiting.items():
                spec, state = specs[(flow, name)]
                what = f"{spec.title.zh}「{state.label.zh}」"
                notify.queue(s, person_ids=[person],
                             case_id=found[0].id if len(found) == 1 else None,
                             kind=notify.REMINDER, title=f"待办：{what}{len(found)} 件",
                             body=f"{what}有 {len(found)} 件等待您办理，请到审批队列查看。",
                             key_prefix=f"demo-waiting:{flow}:{name}", now=self.now,
                             config=notify.NotifyConfig())

    def watch(self, case_ids: list[int]) -> None:
        """Plan a tick at the due moment of each auto timer the cases have armed (the
        feedback accepted after 5 working days of silence): it fires there, as `system`."""
        with self.db.unit_of_work(write=False) as s:
            due = s.execute(select(Timer.due_at).distinct().where(
                Timer.case_id.in_(case_ids), Timer.status == "pending", ~STALE,
                Timer.kind == AUTO)).scalars().all()
        for moment in due:
            self.at(moment, lambda moment=moment: self.auto.tick(moment))

    # ------------------------------------------------------------------ helpers

    def workday(self, day: dt.date, n: int) -> dt.date:
        """The n-th working day after `day` (n ≥ 1), or before it (n ≤ -1)."""
        step = dt.timedelta(days=1 if n > 0 else -1)
        while n:
            day += step
            if self.cal.is_workday(day):
                n += -1 if n > 0 else 1
        return day

    def moment(self, day: dt.date, hhmm: str, minutes: int = 0) -> dt.datetime:
        return self.cal.at_time(day, hhmm) + dt.timedelta(minutes=minutes)

    def published(self, flow: str) -> FlowSpec | None:
        try:
            return self.engine.flow(flow).spec
        except NotFound:
            log.info("demo history: flow %s is not published; left out", flow)
            return None

    # ------------------------------------------------------------------ the plan

    def plan(self) -> None:
        today = self.cal.local(self.now).date()
        regular = self.published(REGULAR)
        if regular is not None and regular.period == "month" and _quota_rule(regular):
            self.plan_regular(regular, today)
        if self.published(DISPATCH) is not None and DISPATCHED in self.by_code:
            self.plan_dispatch(today)
        if self.published(PROMOTION) is not None and CANDIDATE in self.by_code:
            self.plan_promotion(today)
        report = self.published(REPORT)
        if report is not None and LIAISON in self.by_code:
            self.plan_reports(report, today)

    # 平时考核 ----------------------------------------------------------------------

    def plan_regular(self, spec: FlowSpec, today: dt.date) -> None:
        current = period_key("month", today)
        months = [current]
        for _ in range(MONTHS):
            months.insert(0, previous_period("month", months[0]))
        assessed = [m for m in self.members if m.evaluator and m.committee]
        grades = _Grades(spec, self.db, assessed)
        weekly = set(months[-WEEKLY_MONTHS - 1:])
        for key in months:
            self.at(opening_moment(spec, key, self.cal), self._opener(key, assessed))
            if key in weekly:
                self.plan_weeks(key, assessed)
            if key != current:
                self.plan_month(key, assessed, grades.of(key))
        quarters: dict[str, list[str]] = {}
        for key in months[:-1]:
            quarters.setdefault(period_key("quarter", period_days("month", key)[0]),
                                []).append(key)
        for quarter, keys in quarters.items():
            last = period_days("quarter", quarter)[1]
            # 季审定: after the quarter's last month is through feedback (its silent ones
            # are accepted by the timer at the end of the 8th working day).
            self.at(self.moment(self.workday(last, 9), "10:00"),
                    self._approver(keys, assessed))

    def _opener(self, key: str, assessed: list[_Member]) -> Callable[[], None]:
        def run() -> None:
            for m in assessed:
                self.cases[(m.code, key)] = self.engine.start_case(
                    REGULAR, m.id, period_key=key).id
        return run

    def plan_weeks(self, key: str, assessed: list[_Member]) -> None:
        first, last = period_days("month", key)
        fridays = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)
                   if (first + dt.timedelta(days=i)).weekday() == 4
                   and self.cal.is_workday(first + dt.timedelta(days=i))]
        for m in assessed:
            rng = random.Random(f"{SEED}|week|{m.code}|{key}")
            for friday in sorted(rng.sample(fridays, min(2, len(fridays)))):
                iso = friday.isocalendar()
                record = {"week": f"{iso.year}-W{iso.week:02d}",
                          "content": rng.choice(WEEK_WORK).format(post=m.post)}
                self.at(self.moment(friday, "16:30", rng.randrange(60)),
                        self._action(m, key, "record_week", {"weekly_records": [record]}))

    def plan_month(self, key: str, assessed: list[_Member], grades: dict[str, str]) -> None:
        last = period_days("month", key)[1]
        sanctions = _sanctions_in(self.db, key)
        by_evaluator: dict[tuple[int, str, str], list[str]] = {}
        for m in assessed:
            rng = random.Random(f"{SEED}|month|{m.code}|{key}")
            summary = {"summary": rng.choice(MONTH_WORK).format(post=m.post),
                       "individual_indicators": [{"indicator": f"{m.post}任务按时办结",
                                                  "target": "100%", "actual": "100%"}]}
            self.at(self.moment(self.workday(last, rng.choice((1, 2))), "09:00",
                                rng.randrange(8 * 60)),
                    self._action(m, key, "submit", summary))
            grade = grades[m.code]
            comment = COMMENTS[grade]
            if m.id in sanctions:
                comment = SANCTION_COMMENT.format(kind=sanctions[m.id])
            by_evaluator.setdefault((m.evaluator, grade, comment), []).append(m.code)
            if rng.random() >= 0.2:  # one in five stays silent: the timer accepts
                self.at(self.moment(self.workday(last, 4), "09:30", rng.randrange(7 * 60)),
                        self._action(m, key, "accept", None))
        for n, ((evaluator, grade, comment), codes) in enumerate(sorted(by_evaluator.items())):
            self.at(self.moment(self.workday(last, 3), "14:00", n),
                    self._bulk(evaluator, key, codes, "evaluate",
                               {"grade": grade, "evaluation_comment": comment}))

    def _action(self, m: _Member, key: str, trigger: str,
                data: dict[str, Any] | None) -> Callable[[], None]:
        def run() -> None:
            self.engine.fire(self.cases[(m.code, key)], trigger, Actor.person(m.id), data=data)
        return run

    def _bulk(self, actor: int, key: str, codes: list[str], trigger: str,
              data: dict[str, Any]) -> Callable[[], None]:
        def run() -> None:
            ids = [self.cases[(c, key)] for c in codes]
            _all_done(self.engine.fire_bulk(ids, trigger, Actor.person(actor), data=data),
                      trigger)
            self.watch(ids)
        return run

    def _approver(self, keys: list[str], assessed: list[_Member]) -> Callable[[], None]:
        def run() -> None:
            by_committee: dict[int, list[int]] = {}
            for m in assessed:
                for key in keys:
                    by_committee.setdefault(m.committee, []).append(self.cases[(m.code, key)])
            for committee, ids in sorted(by_committee.items()):
                _all_done(self.engine.fire_bulk(ids, "approve", Actor.person(committee),
                                                comment="季度审定"), "approve")
        return run

    # 下沉一线 ----------------------------------------------------------------------

    def plan_dispatch(self, today: dt.date) -> None:
        m = self.by_code[DISPATCHED]
        first = period_days("month", period_key("month", today))[0]
        start = _add_months(first, -2)
        end = _add_months(start, TERM_MONTHS) - dt.timedelta(days=1)
        nominated = self.workday(_add_months(first, -3) + dt.timedelta(days=9), 1)
        approved = self.workday(nominated, 5)
        story = _Story(f"dispatch of {m.code}")
        data = {**NOMINATION, "term_start": start.isoformat(), "term_end": end.isoformat()}
        order = f"示人社党〔{approved.year}〕12号"

        def nominate() -> None:
            case = self.engine.start_case(DISPATCH, m.id, actor=Actor.person(m.evaluator))
            story.case = case.id
            self.engine.fire(case.id, "nominate", Actor.person(m.evaluator), data=data)

        self.at(self.moment(nominated, "10:00"), story.step(nominate))
        self.at(self.moment(approved, "15:00"), story.step(
            lambda: self.engine.fire(story.case, "approve_dispatch", Actor.person(m.committee),
                                     data={"dispatch_order": order})))
        for month_start, (days, note) in zip((start, _add_months(start, 1)), CHECK_INS,
                                             strict=True):
            item = {"month": period_key("month", month_start), "days_in_post": days}
            if note:
                item["note"] = note
            last_day = self.workday(_add_months(month_start, 1), -1)
            self.at(self.moment(last_day, "17:00"), story.step(
                lambda item=item: self.engine.fire(story.case, "check_in", Actor.person(m.id),
                                                   data={"check_ins": [item]})))

    # 职级晋升 ----------------------------------------------------------------------

    def plan_promotion(self, today: dt.date) -> None:
        m = self.by_code[CANDIDATE]
        hr = _group_member(self.db, "hr-office", m.id)
        if hr is None:
            log.info("demo history: nobody holds hr-office; the promotion round is left out")
            return
        notice = self.workday(today, -1)  # the notice's 5 working days are still running
        confirmed = self.workday(notice, -3)
        voted = self.workday(confirmed, -5)
        proposed = self.workday(voted, -5)
        story = _Story(f"promotion of {m.code}")
        plan = {**PROMOTION_PLAN, "round": f"{confirmed.year}-1"}

        def propose() -> None:
            case = self.engine.start_case(PROMOTION, m.id, actor=Actor.person(m.evaluator))
            story.case = case.id
            self.engine.fire(case.id, "propose", Actor.person(m.evaluator), data=plan)

        self.at(self.moment(proposed, "10:00"), story.step(propose))
        self.at(self.moment(voted, "16:00"), story.step(
            lambda: self.engine.fire(story.case, "record_votes", Actor.person(hr), data=VOTES)))
        self.at(self.moment(confirmed, "10:00"), story.step(
            lambda: self.engine.fire(story.case, "confirm", Actor.person(m.committee),
                                     data={"decision_date": confirmed.isoformat()})))
        self.at(self.moment(notice, "10:00"), story.step(
            lambda: self.engine.fire(story.case, "pass", Actor.person(m.committee),
                                     data=VETTING)))


    # 联系点月度信息报送 ------------------------------------------------------------

    def plan_reports(self, spec: FlowSpec, today: dt.date) -> None:
        m = self.by_code[LIAISON]
        hr = _group_member(self.db, "hr-office", m.id)
        if hr is None or spec.period != "month":
            log.info("demo history: nobody holds hr-office; the contact point is left out")
            return
        current = period_key("month", today)
        months = [current]
        for _ in REPORTS:
            months.insert(0, previous_period("month", months[0]))
        with self.db.unit_of_work() as s:
            unit = s.execute(select(Unit.code).where(Unit.id == m.unit_id)).scalar()
            if unit != CONTACT_UNIT:
                log.info("demo history: %s is not in %s; the contact point is left out",
                         LIAISON, CONTACT_UNIT)
                return
            known = set(s.execute(select(ContactPoint.year).where(
                ContactPoint.unit_id == m.unit_id)).scalars())
            for year in sorted({int(k[:4]) for k in months} - known):
                first = self.cal.at_time(dt.date(year, 1, 1), "00:00")
                contact_register.add_entry(s, {
                    "unit_code": CONTACT_UNIT, "year": year, "liaison_id": m.id,
                    "level": "市级联系点", "targets": CONTACT_TARGETS}, by=None, now=first)
        for key, plan in zip(months, [*REPORTS, None], strict=True):
            story = _Story(f"contact-point report {key}")

            def open_(key: str = key, story: _Story = story) -> None:
                story.case = self.engine.start_case(REPORT, m.id, period_key=key).id

            self.at(opening_moment(spec, key, self.cal), story.step(open_))
            if plan is None:
                continue
            after, quality = plan
            filed = self.workday(period_days("month", key)[1], after)
            report = {"progress": f"{key}：{REPORT_WORK}"}
            self.at(self.moment(filed, "15:00"), story.step(
                lambda story=story, report=report: self.engine.fire(
                    story.case, "submit", Actor.person(m.id), data=report)))
            review = {"quality": quality}
            if quality == "一般":
                review["review_comment"] = "报送逾期，内容较简略。"
            self.at(self.moment(self.workday(filed, 1), "10:00"), story.step(
                lambda story=story, review=review: self.engine.fire(
                    story.case, "approve", Actor.person(hr), data=review)))


class _AutoTimers(TimerWorker):
    """Claims only auto timers (the ones that move cases): the replay fires them at their
    due moments; reminders and weekly prompts of the past are spent once, at the end."""

    def claim(self, now: dt.datetime) -> list[int]:
        with self.engine.db.unit_of_work() as s:
            return claim_batch(s.connection(), TIMERS, and_(CLAIMABLE, TIMERS.c.kind == AUTO),
                               (TIMERS.c.due_at,), self.batch, self.node, now, self.lease)


class _Story:
    """Steps of one case: after a refusal (a rule that reads facts dated otherwise than the
    demo's `now`) the case stays where it is and the later steps are skipped."""

    def __init__(self, name: str):
        self.name = name
        self.case: int | None = None
        self.stopped = False

    def step(self, run: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            if self.stopped:
                return
            try:
                run()
            except CivflowError as exc:
                self.stopped = True
                log.warning("demo history: %s stops here: %s", self.name, exc)
        return guarded


class _Grades:
    """The month's grade of each person: the best of each quota pool get the quota value up
    to the pool's limit (the `quota` rule of `approve` in the definition); a sanction
    decided in the month gives the third grade of the scale."""

    def __init__(self, spec: FlowSpec, db: Database, assessed: list[_Member]):
        quota = quotas.quota_of(spec)
        assert quota is not None and quota.rule == "quota", "the regular flow has a quota"
        self.quota = quota
        scale = list(spec.fields[quota.field].values)
        self.good = quota.value
        self.usual, self.weak = [g for g in scale if g != self.good][:2]
        self.db, self.assessed = db, assessed
        with db.unit_of_work(write=False) as s:  # the pools as the rule forms them
            self.units = quotas.pool_units(s, quota, {m.unit_id for m in assessed})

    def of(self, key: str) -> dict[str, str]:
        pools: dict[tuple, list[_Member]] = {}
        for m in self.assessed:
            pools.setdefault(quotas.pool_key(self.quota, self.units[m.unit_id], m.tier, key),
                             []).append(m)
        sanctioned = _sanctions_in(self.db, key)
        out: dict[str, str] = {}
        for pool, members in pools.items():
            limit = self.quota.limit(len(members), dict(pool).get("tier"))
            scores = {}
            for m in members:
                base, spread = PROFILES[PROFILE_OF.get(m.code, "solid")]
                scores[m.code] = base + spread * random.Random(f"{SEED}|{m.code}|{key}").random()
            ranked = sorted(members, key=lambda m: -scores[m.code])
            for place, m in enumerate(ranked):
                if m.id in sanctioned or scores[m.code] < WEAK_BELOW:
                    out[m.code] = self.weak
                elif place < limit and scores[m.code] >= GOOD_FROM:
                    out[m.code] = self.good
                else:
                    out[m.code] = self.usual
        return out


# --------------------------------------------------------------------------- reads


def _quota_rule(spec: FlowSpec) -> RuleSpec | None:
    """The `quota` rule of the regular flow's approval: the 好 limit the grades keep."""
    found = [r for t in spec.transitions if t.trigger == "approve" for r in t.rules
             if r.name == "quota"]
    if not found:
        log.info("demo history: %s has no quota rule on approve; left out", spec.flow)
    return found[0] if found else None


def _members(db: Database, codes: list[str],
             evaluator: RoleSpec | None = None) -> list[_Member]:
    """The demo people with their evaluator (评鉴人, as the regular flow's `evaluator` role
    resolves it: workflows/actors.py) and the committee member nearest above each one."""
    evaluator = evaluator or RoleSpec(name="evaluator", resolve="evaluator", escalate=True)
    with db.unit_of_work(write=False) as s:
        people = s.execute(select(Person.id, Person.code, Person.name, Person.unit_id,
                                  Person.tier, Person.post, Unit.path)
                           .join(Unit, Unit.id == Person.unit_id)
                           .where(Person.code.in_(codes), Person.active)
                           .order_by(Person.id)).all()
        roles: dict[tuple[int, str], list[int]] = {}
        for pid, uid, role in s.execute(select(RoleAssignment.person_id, RoleAssignment.unit_id,
                                               RoleAssignment.role)
                                        .where(RoleAssignment.unit_id.is_not(None))
                                        .order_by(RoleAssignment.person_id)):
            roles.setdefault((uid, role), []).append(pid)
        unit_roles, groups = actors.role_needs([evaluator])
        org = actors.Org.read(s, {p.unit_id: p.path for p in people}, unit_roles,
                              groups).load_hosts(s, [evaluator], [p.id for p in people])

    def nearest(path: str, role: str, me: int) -> int | None:
        for uid in reversed([int(x) for x in path.strip("/").split("/") if x]):
            found = [p for p in roles.get((uid, role), []) if p != me]
            if found:
                return found[0]
        return None

    def evaluator_of(p) -> int | None:
        found = org.holders(evaluator, p.unit_id, p.tier, p.id)
        return found[0] if found else None

    return [_Member(p.id, p.code, p.name, p.unit_id, p.tier, p.post or "本职",
                    evaluator_of(p), nearest(p.path, "committee", p.id))
            for p in people]


def _sanctions_in(db: Database, key: str) -> dict[int, str]:
    """Person id → kind of a sanction decided in the month `key`."""
    first, last = period_days("month", key)
    with db.unit_of_work(write=False) as s:
        return dict(s.execute(select(Sanction.person_id, Sanction.kind)
                              .where(Sanction.decided_on >= first,
                                     Sanction.decided_on <= last)).all())


def _group_member(db: Database, group: str, other_than: int) -> int | None:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(RoleAssignment.person_id)
                         .where(RoleAssignment.role == group, RoleAssignment.unit_id.is_(None),
                                RoleAssignment.person_id != other_than)
                         .order_by(RoleAssignment.person_id).limit(1)).scalar()


def _all_done(result: Any, trigger: str) -> None:
    if result.refused:
        reasons = "; ".join(f"case {cid}: {exc}" for cid, exc in result.refused.items())
        raise RuntimeError(f"demo history: {trigger} refused: {reasons}")


def _add_months(day: dt.date, months: int) -> dt.date:
    """The first day of the month `months` after `day`'s month (day is a 1st here)."""
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)

