"""Cycles: a periodic flow opens one case per eligible person per period, by itself.

The clock is controlled: the flow is published at a known moment (the engine's clock) and
`open_due_periods` is called with the `now` of the test. The shipped regular assessment
opens monthly at 08:00 Asia/Shanghai on the 1st — 00:00 UTC — and the tests vary its
`cycle` block. The organisation is the `org` fixture plus a sub-unit of SEC1 and an
inactive person.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from workflows import cycles
from workflows.calendar import WorkCalendar
from workflows.cycles import (
    due_periods,
    latest_due,
    next_period,
    open_due_periods,
    opening_moment,
    previous_period,
)
from workflows.db import Database
from workflows.engine import Actor, Engine
from workflows.history import GENESIS, verify
from workflows.models import Case, CycleRun, HistoryRecord, Person, Timer, Unit
from workflows.org import add_person, add_unit, assign_role
from workflows.spec import load_definition

REGULAR = Path(__file__).resolve().parent.parent / "definitions" / "regular-assessment.yaml"
SOURCE = REGULAR.read_text(encoding="utf-8")
FLOW = "regular-assessment"
UTC = dt.UTC
PUBLISHED = dt.datetime(2026, 1, 10, 3, 0, tzinfo=UTC)
MARCH_OPENS = dt.datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # 08:00 on 1 March in Shanghai
CAL = WorkCalendar()


def source(cycle: dict[str, Any] | None, period: str = "month") -> str:
    """The shipped definition with another cycle block (None: without one)."""
    block = "" if cycle is None else "cycle: " + json.dumps(cycle, ensure_ascii=False)
    text = re.sub(r"^cycle:.*$", block, SOURCE, flags=re.M)
    return text.replace("period: month", f"period: {period}")


class Clock:
    def __init__(self, moment: dt.datetime):
        self.moment = moment

    def __call__(self) -> dt.datetime:
        return self.moment


@pytest.fixture
def clock() -> Clock:
    return Clock(PUBLISHED)


@pytest.fixture
def eng(db, clock) -> Engine:
    return Engine(db, clock=clock)


@pytest.fixture
def people(db, org) -> dict[str, int]:
    """`org` (13 active people) plus SEC1A under SEC1 with u1 (staff) and u2 (deputy), and
    x1 (staff in SEC1) who is no longer active."""
    with db.unit_of_work() as s:
        sec1 = s.get(Unit, org.units["SEC1"])
        sec1a = add_unit(s, "SEC1A", "干部一科一组", sec1)
        org.units["SEC1A"] = sec1a.id
        for code, unit, tier in (("u1", sec1a, "staff"), ("u2", sec1a, "deputy"),
                                 ("x1", sec1, "staff")):
            org.ids[code] = add_person(s, code.upper(), code, unit, tier).id
        s.get(Person, org.ids["x1"]).active = False
    return dict(org.ids)


def publish(eng: Engine, clock: Clock, cycle: dict[str, Any] | None, at: dt.datetime = PUBLISHED,
            period: str = "month"):
    clock.moment = at
    return eng.publish(source(cycle, period), "regular-assessment.yaml")


def subjects(db: Database, period: str | None = None) -> list[int]:
    """Subject ids of the flow's cases (of one period), sorted; duplicates would show."""
    with db.unit_of_work(write=False) as s:
        q = select(Case.subject_id).where(Case.flow_id == FLOW)
        if period:
            q = q.where(Case.period_key == period)
        return sorted(s.execute(q).scalars())


def runs(db: Database) -> dict[str, Any]:
    with db.unit_of_work(write=False) as s:
        return {r.period_key: r for r in s.execute(select(CycleRun).where(
            CycleRun.flow_id == FLOW)).scalars()}


def chains_ok(db: Database) -> int:
    with db.unit_of_work(write=False) as s:
        cases, _records, breaks = verify(s)
    assert breaks == [], [str(b) for b in breaks]
    return cases


def ids(people: dict[str, int], *codes: str) -> list[int]:
    return sorted(people[c] for c in codes)


# The people the cycle opens: the active ones but `chief`, the top of the organisation —
# nobody evaluates him (the definition's `evaluator` role), so the cycle skips him and logs
# it (tests/test_actors.py). u1 and u2 in SEC1A are evaluated by SEC1's leader (escalate).
ACTIVE = ("c1", "c2", "l1", "d1", "l2", "s1", "s2", "s3", "s4", "s5", "t1", "t2",
          "u1", "u2")


# --------------------------------------------------------------------------- opening


def test_opens_one_case_per_active_person_once(db, eng, clock, people):
    publish(eng, clock, {"open": "period_start", "time": "08:00", "catch_up": "latest"})
    opened = open_due_periods(eng, MARCH_OPENS, node="a")
    assert opened == [(FLOW, "2026-03", len(ACTIVE))]
    assert subjects(db, "2026-03") == ids(people, *ACTIVE)  # x1 is inactive
    run = runs(db)["2026-03"]
    assert (run.status, run.cases_opened, run.claimed_by, run.claim_until) == \
        ("done", len(ACTIVE), None, None)
    assert run.finished_at is not None

    # Again, from this node or another, now or later in the month: nothing more.
    assert open_due_periods(eng, MARCH_OPENS, node="a") == []
    assert open_due_periods(eng, MARCH_OPENS + dt.timedelta(days=12), node="b") == []
    assert subjects(db) == ids(people, *ACTIVE)
    assert list(runs(db)) == ["2026-03"]
    assert chains_ok(db) == len(ACTIVE)


def test_nothing_opens_before_the_opening_moment(db, eng, clock, people):
    publish(eng, clock, {"open": "period_start", "time": "08:00", "catch_up": "none"})
    before = MARCH_OPENS - dt.timedelta(seconds=1)  # 07:59:59 in Shanghai
    assert open_due_periods(eng, before) == []
    assert subjects(db) == []
    assert open_due_periods(eng, MARCH_OPENS) == [(FLOW, "2026-03", len(ACTIVE))]


@pytest.mark.parametrize(("who", "expected"), [
    ({"tiers": ["staff"]}, ("c1", "c2", "s1", "s2", "s3", "s4", "s5", "t1", "t2", "u1")),
    ({"units": ["SEC1"]}, ("l1", "d1", "s1", "s2", "s3", "s4", "s5", "u1", "u2")),
    ({"units": ["SEC1A", "SEC2"]}, ("u1", "u2", "l2", "t1", "t2")),
    ({"tiers": ["staff", "deputy"], "units": ["SEC1"]},
     ("d1", "s1", "s2", "s3", "s4", "s5", "u1", "u2")),
    ({"tiers": ["chief"], "units": ["ORG"]}, ("l1", "l2")),  # chief: nobody evaluates him
    ({"units": ["NOPE"]}, ()),  # an unknown unit code matches nobody (and is logged)
], ids=["staff", "SEC1-subtree", "two-units", "tiers-and-unit", "chiefs", "unknown-unit"])
def test_who_filters_tiers_and_unit_subtrees(db, eng, clock, people, who, expected):
    publish(eng, clock, {"time": "08:00", "who": who})
    assert open_due_periods(eng, MARCH_OPENS) == [(FLOW, "2026-03", len(expected))]
    assert subjects(db) == ids(people, *expected)
    assert runs(db)["2026-03"].status == "done"


def test_opened_case_is_the_case_start_case_makes(db, eng, clock, people):
    """Field by field: a cycle's case and Engine.start_case's for the same period."""
    publish(eng, clock, {"time": "08:00", "who": {"tiers": ["staff"]}})
    clock.moment = MARCH_OPENS
    assert open_due_periods(eng, MARCH_OPENS) == [(FLOW, "2026-03", 10)]
    by_hand = eng.start_case(FLOW, people["l1"], period_key="2026-03")  # a chief: not opened
    with db.unit_of_work(write=False) as s:
        auto = s.execute(select(Case).where(Case.subject_id == people["s1"])).scalar_one()
        manual = s.get(Case, by_hand.id)
        for col in ("flow_id", "version_id", "period_key", "state", "data", "version",
                    "history_seq", "state_visit", "deadline_at", "closed_at", "claimed_by",
                    "claimed_at"):
            assert getattr(auto, col) == getattr(manual, col), col
        assert (auto.unit_id, auto.tier) == (org_unit(s, people["s1"]), "staff")
        for col in ("created_at", "updated_at", "state_entered_at"):
            assert abs(getattr(auto, col) - MARCH_OPENS) < dt.timedelta(seconds=5), col
        assert auto.created_at == auto.updated_at == auto.state_entered_at

        def record(case_id):
            r = s.execute(select(HistoryRecord).where(HistoryRecord.case_id == case_id)
                          ).scalar_one()
            return {c: getattr(r, c) for c in ("seq", "actor_id", "actor_role", "trigger",
                                                "from_state", "to_state", "data", "comment",
                                                "idempotency_key", "prev_hash")}, r

        (auto_rec, rec), (manual_rec, _r) = record(auto.id), record(manual.id)
        assert auto_rec == manual_rec
        assert auto_rec["seq"] == 1 and auto_rec["trigger"] == "start"
        assert auto_rec["actor_role"] == "system" and auto_rec["prev_hash"] == GENESIS
        assert rec.hash == auto.history_hash and rec.at == auto.created_at

        def timers(case_id):
            return sorted((t.kind, t.action, t.due_at, t.status, t.attempts, t.state_visit,
                           json.dumps(t.payload, sort_keys=True),
                           t.dedupe_key.removeprefix(f"case:{case_id}:"))
                          for t in s.execute(select(Timer).where(Timer.case_id == case_id))
                          .scalars())

        armed = timers(auto.id)
        assert armed == timers(manual.id)
        # summary: a deadline 5 working days after the end of March, a reminder a day before
        assert [t[0] for t in armed] == ["deadline", "reminder", "repeat"]
        assert armed[0][2] == CAL.add_working_days(CAL.at_time(dt.date(2026, 3, 31), "12:00"), 5)
        assert armed[0][2] == auto.deadline_at
        assert {t[-1] for t in armed} == {"1:deadline", "1:t0", "1:t1"}
        assert s.execute(select(func.count()).select_from(Timer)).scalar() == 3 * 11
    assert chains_ok(db) == 11
    # The opened case works like any other.
    view = eng.get_case(auto.id)
    assert (view.flow_version, view.state, view.period_key) == (1, "summary", "2026-03")
    eng.fire(auto.id, "submit", Actor.person(people["s1"]), data={"summary": "本月小结"})
    assert [h["trigger"] for h in eng.history(auto.id)] == ["start", "submit"]
    assert chains_ok(db) == 11


def org_unit(s, person_id: int) -> int:
    return s.get(Person, person_id).unit_id


def test_cases_pin_the_latest_published_version(db, eng, clock, people):
    publish(eng, clock, {"time": "08:00"})
    v2 = publish(eng, clock, {"time": "08:00", "catch_up": "latest"},
                 at=PUBLISHED + dt.timedelta(days=20))
    assert v2.version == 2
    open_due_periods(eng, MARCH_OPENS)
    with db.unit_of_work(write=False) as s:
        assert set(s.execute(select(Case.version_id)).scalars()) == {v2.version_id}


def test_a_person_who_already_has_the_case_is_skipped(db, eng, clock, people):
    publish(eng, clock, {"time": "08:00"})
    clock.moment = MARCH_OPENS - dt.timedelta(hours=1)
    early = eng.start_case(FLOW, people["s3"], period_key="2026-03")
    assert open_due_periods(eng, MARCH_OPENS) == [(FLOW, "2026-03", len(ACTIVE) - 1)]
    assert subjects(db) == ids(people, *ACTIVE)
    assert eng.get_case(early.id).created_at == MARCH_OPENS - dt.timedelta(hours=1)
    assert runs(db)["2026-03"].cases_opened == len(ACTIVE) - 1
    assert chains_ok(db) == len(ACTIVE)


def test_flows_without_a_cycle_open_nothing(db, eng, clock, people):
    publish(eng, clock, {"time": "08:00"})
    publish(eng, clock, None, at=PUBLISHED + dt.timedelta(days=1))  # v2 drops the cycle
    assert open_due_periods(eng, MARCH_OPENS) == []
    assert subjects(db) == [] and runs(db) == {}


# --------------------------------------------------------------------------- catch-up


DOWN_UNTIL = dt.datetime(2026, 5, 20, 6, 0, tzinfo=UTC)  # published 10 January, back in May


@pytest.mark.parametrize(("policy", "expected"), [
    ("latest", ["2026-05"]),
    ("all", ["2026-01", "2026-02", "2026-03", "2026-04", "2026-05"]),
    ("none", []),
])
def test_catch_up_after_downtime(db, eng, clock, people, policy, expected):
    """Down from before February's opening until 20 May: January was due at publication."""
    publish(eng, clock, {"time": "08:00", "catch_up": policy})
    opened = open_due_periods(eng, DOWN_UNTIL, node="back")
    assert opened == [(FLOW, k, len(ACTIVE)) for k in expected]
    assert sorted(runs(db)) == expected
    assert subjects(db) == sorted(ids(people, *ACTIVE) * len(expected))
    assert open_due_periods(eng, DOWN_UNTIL, node="back") == []
    # Up again for June's opening: every policy opens June, and only June.
    june = dt.datetime(2026, 6, 1, 0, 2, tzinfo=UTC)
    assert open_due_periods(eng, june) == [(FLOW, "2026-06", len(ACTIVE))]
    assert chains_ok(db) == len(ACTIVE) * (len(expected) + 1)


def test_catch_up_none_opens_only_within_the_grace_window(db, eng, clock, people):
    publish(eng, clock, {"time": "08:00", "catch_up": "none"})
    late = MARCH_OPENS + dt.timedelta(minutes=16)
    assert open_due_periods(eng, late, grace=dt.timedelta(minutes=15)) == []
    assert open_due_periods(eng, late, grace=dt.timedelta(minutes=20)) == \
        [(FLOW, "2026-03", len(ACTIVE))]


class Captured(logging.Handler):
    """The cycles logger's records (the suite runs with `-p no:logging`: no caplog)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> Captured:
        logging.getLogger("civflow.cycles").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("civflow.cycles").removeHandler(self)


def test_catch_up_all_is_capped(db, eng, clock, people):
    publish(eng, clock, {"time": "08:00", "catch_up": "all", "who": {"units": ["SEC2"]}})
    with Captured() as log:
        opened = open_due_periods(eng, DOWN_UNTIL, max_catch_up=3)
    assert [k for _f, k, _n in opened] == ["2026-03", "2026-04", "2026-05"]
    assert any("only the last 3 missed periods" in m and "down to 2026-01" in m
               for m in log.messages), log.messages
    with Captured() as log:  # the next checks say nothing more: the skip is old news
        assert open_due_periods(eng, DOWN_UNTIL + dt.timedelta(minutes=1), max_catch_up=3) == []
    assert log.messages == []


def test_catch_up_all_starts_with_the_cycle_not_the_flow(db, eng, clock, people):
    """v1 had no cycle; v2 (published in April) adds one: January to March were not missed."""
    publish(eng, clock, None)
    publish(eng, clock, {"time": "08:00", "catch_up": "all"},
            at=dt.datetime(2026, 4, 15, tzinfo=UTC))
    assert [k for _f, k, _n in open_due_periods(eng, DOWN_UNTIL)] == ["2026-04", "2026-05"]


# --------------------------------------------------------------------------- periods (pure)


def spec_with(cycle: dict[str, Any], period: str = "month"):
    return load_definition(source(cycle, period), "flow.yaml")


def local(y, m, d, hh=0, mm=0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=CAL.tz).astimezone(UTC)


@pytest.mark.parametrize(("cycle", "period", "key", "expected"), [
    ({}, "month", "2026-03", local(2026, 3, 1)),
    ({"time": "08:00"}, "month", "2026-03", local(2026, 3, 1, 8)),
    ({"open": "period_end", "time": "17:30"}, "month", "2026-02", local(2026, 2, 28, 17, 30)),
    ({"open": "period_end", "offset_days": -3}, "month", "2026-02", local(2026, 2, 25)),
    ({"open": "period_end", "offset_days": 1, "time": "09:00"}, "quarter", "2026-Q4",
     local(2027, 1, 1, 9)),
    ({"time": "08:00"}, "week", "2026-W53", local(2026, 12, 28, 8)),
    ({"offset_days": -7}, "year", "2027", local(2026, 12, 25)),
])
def test_opening_moment(cycle, period, key, expected):
    assert opening_moment(spec_with(cycle, period), key, CAL) == expected


def test_latest_due_moves_at_the_opening_moment_in_shanghai():
    spec = spec_with({"open": "period_end", "offset_days": -3, "time": "17:00"})
    at = local(2026, 2, 25, 17)  # three days before the last day of February, 17:00
    assert latest_due(spec, at, CAL) == "2026-02"
    assert latest_due(spec, at - dt.timedelta(seconds=1), CAL) == "2026-01"
    assert latest_due(spec, local(2026, 3, 1, 0), CAL) == "2026-02"


@pytest.mark.parametrize(("period", "key", "nxt"), [
    ("week", "2026-W53", "2027-W01"), ("month", "2026-12", "2027-01"),
    ("quarter", "2026-Q4", "2027-Q1"), ("year", "2026", "2027"), ("week", "2026-W09", "2026-W10"),
])
def test_next_and_previous_period(period, key, nxt):
    assert next_period(period, key) == nxt
    assert previous_period(period, nxt) == key


def test_cycle_tiers_are_the_person_tiers():
    from workflows.models import TIERS
    from workflows.spec import CYCLE_TIERS

    assert CYCLE_TIERS == TIERS


def test_due_periods_per_policy_without_a_database():
    published = local(2026, 1, 10)
    now = local(2026, 4, 2, 9)
    weekly = spec_with({"catch_up": "all", "open": "period_start", "time": "08:00"}, "week")
    keys = due_periods(weekly, now, published, CAL)
    assert keys[0] == "2026-W02" and keys[-1] == "2026-W14" and len(keys) == 13
    assert due_periods(weekly, now, published, CAL, max_catch_up=2) == ["2026-W13", "2026-W14"]
    assert due_periods(weekly, now, published, CAL, opened=keys[:-1]) == ["2026-W14"]
    latest = spec_with({"catch_up": "latest"}, "quarter")
    assert due_periods(latest, now, published, CAL) == ["2026-Q2"]
    none = spec_with({"catch_up": "none", "time": "08:00"}, "quarter")
    assert due_periods(none, now, published, CAL) == []  # Q2 opened at 08:00 on 1 April
    assert due_periods(none, local(2026, 4, 1, 8, 10), published, CAL) == ["2026-Q2"]


# --------------------------------------------------------------------------- nodes


def test_a_run_left_opening_by_a_dead_node_is_finished_by_another(db, eng, clock, people,
                                                                   monkeypatch):
    publish(eng, clock, {"time": "08:00"})
    real = cycles._open_chunk
    calls = []

    def dies_after_the_first_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("node a lost power")
        return real(*args, **kwargs)

    monkeypatch.setattr(cycles, "_open_chunk", dies_after_the_first_chunk)
    lease = dt.timedelta(seconds=60)
    assert open_due_periods(eng, MARCH_OPENS, node="a", lease=lease, chunk=4) == []
    monkeypatch.setattr(cycles, "_open_chunk", real)
    run = runs(db)["2026-03"]
    # The first chunk read 4 people and opened 3: chief, the top, has no evaluator.
    assert (run.status, run.claimed_by, run.cases_opened) == ("opening", "a", 3)
    assert len(subjects(db)) == 3

    # Within the lease nobody else touches the run.
    assert open_due_periods(eng, MARCH_OPENS + dt.timedelta(seconds=30), node="b",
                            lease=lease, chunk=4) == []
    assert runs(db)["2026-03"].claimed_by == "a"
    # After it, b finishes the run (under any catch-up policy), without duplicates.
    later = MARCH_OPENS + dt.timedelta(seconds=61)
    assert open_due_periods(eng, later, node="b", lease=lease, chunk=4) == \
        [(FLOW, "2026-03", len(ACTIVE) - 3)]
    assert subjects(db) == ids(people, *ACTIVE)
    run = runs(db)["2026-03"]
    assert (run.status, run.claimed_by, run.cases_opened) == ("done", None, len(ACTIVE))
    assert chains_ok(db) == len(ACTIVE)
    assert open_due_periods(eng, later, node="c") == []


def test_a_node_that_lost_its_claim_stops(db, eng, clock, people):
    publish(eng, clock, {"time": "08:00"})
    cf = eng.flow(FLOW)
    lease = dt.timedelta(seconds=10)
    assert cycles._claim(eng, FLOW, "2026-03", MARCH_OPENS, "a", lease)
    assert not cycles._claim(eng, FLOW, "2026-03", MARCH_OPENS + dt.timedelta(seconds=5), "b",
                             lease)
    assert cycles._claim(eng, FLOW, "2026-03", MARCH_OPENS + dt.timedelta(seconds=11), "b",
                         lease)
    # a wakes up and tries its next chunk: the lease renewal fails, nothing is written.
    with db.unit_of_work(write=False) as s:
        eligible = cycles._eligible(s, cf.spec, "2026-03")
    with db.unit_of_work() as s:
        result = cycles._open_chunk(eng, s, cf, "2026-03", eligible, {}, 0, MARCH_OPENS, "a",
                                    lease, 4)
    assert result == (None, 0, False)
    assert subjects(db) == []
    assert cycles.open_period(eng, cf, "2026-03", MARCH_OPENS + dt.timedelta(seconds=12),
                              "b", lease) == len(ACTIVE)


def test_threads_racing_open_each_case_once(db_url, db, eng, clock, people):
    publish(eng, clock, {"time": "08:00", "catch_up": "all"})
    barrier = threading.Barrier(3)
    results: list[Any] = []

    def node(i: int) -> None:
        own = Engine(Database(db_url))
        barrier.wait(timeout=10)
        results.append(open_due_periods(own, DOWN_UNTIL, node=f"t{i}", chunk=4))
        own.db.dispose()

    threads = [threading.Thread(target=node, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    opened = sorted(item for r in results for item in r)
    months = ["2026-01", "2026-02", "2026-03", "2026-04", "2026-05"]
    assert opened == [(FLOW, k, len(ACTIVE)) for k in months]  # each period by one node
    assert subjects(db) == sorted(ids(people, *ACTIVE) * len(months))
    assert all(r.status == "done" for r in runs(db).values())
    assert chains_ok(db) == len(ACTIVE) * len(months)


def _race_node(url: str, now: dt.datetime, name: str, barrier, results) -> None:
    """One process: its own Database and Engine, as a service node would have."""
    db = Database(url)
    engine = Engine(db)
    barrier.wait(timeout=30)
    try:
        results.put((name, open_due_periods(engine, now, node=name, chunk=7)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put((name, repr(exc)))
    finally:
        db.dispose()


def test_processes_racing_open_each_case_once(pg_only_url):
    db = Database(pg_only_url)
    with db.unit_of_work() as s:
        root = add_unit(s, "ORG", "部机关")
        units = [add_unit(s, f"U{i}", f"科{i}", root) for i in range(4)]
        # Their evaluator (the flow's `evaluator` role): the head above the sections. He
        # has none himself, so the cycle skips him: 48 cases a period.
        assign_role(s, add_person(s, "HEAD", "局长", root, "chief"), "leader", root)
        for i in range(48):
            add_person(s, f"P{i:03d}", f"人员{i}", units[i % 4], ("chief", "deputy", "staff",
                                                                  "staff")[i % 4])
    clock = Clock(PUBLISHED)
    Engine(db, clock=clock).publish(source({"time": "08:00", "catch_up": "all"}),
                                    "regular-assessment.yaml")
    now = dt.datetime(2026, 3, 10, tzinfo=UTC)  # January, February and March are due
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race_node, args=(pg_only_url, now, f"p{i}", barrier, results))
             for i in range(n)]
    for p in procs:
        p.start()
    outcome = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert all(isinstance(v, list) for v in outcome.values()), outcome
    opened = sorted(item for v in outcome.values() for item in v)
    assert opened == [(FLOW, k, 48) for k in ("2026-01", "2026-02", "2026-03")]
    with db.unit_of_work(write=False) as s:
        per_person = s.execute(select(Case.subject_id, Case.period_key, func.count())
                               .group_by(Case.subject_id, Case.period_key)).all()
        assert len(per_person) == 48 * 3 and {c for _p, _k, c in per_person} == {1}
        assert s.execute(select(func.count()).select_from(CycleRun)).scalar() == 3
        assert {r.status for r in s.execute(select(CycleRun)).scalars()} == {"done"}
        assert s.execute(select(func.count()).select_from(Timer)).scalar() == 3 * 48 * 3
    assert chains_ok(db) == 48 * 3
    db.dispose()
