"""Sessions racing on the same case or the same quota pool.

A barrier inside the engine's clock (called after the checks, just before the versioned
UPDATE) holds each racer until both have read the case, so the race really happens. When
the database makes one racer wait (SQLite's write lock, PostgreSQL's row lock on the case
read FOR UPDATE, its advisory lock on a quota pool) the barrier times out and the first
racer goes on alone: that is the point.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from workflows.db import Database
from workflows.engine import Actor, Engine, utcnow
from workflows.errors import ActionNotAllowed, Conflict, RuleViolation

from .conftest import REGULAR

P = Actor.person


def _racing_engines(url: str, n: int = 2) -> list[Engine]:
    barrier = threading.Barrier(n)

    def clock():
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=1.5)
        return utcnow()

    return [Engine(Database(url), clock=clock) for _ in range(n)]


def _race(calls):
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(c) for c in calls]
    results, errors = [], []
    for f in futures:
        try:
            results.append(f.result())
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
    return results, errors


@pytest.mark.parametrize("expected", [1, None], ids=["if-match", "no-if-match"])
def test_two_sessions_race_on_one_case(db_url, engine, org, regular, expected):
    case = engine.start_case("regular-assessment", org.s1, period_key="2026-11")
    a, b = _racing_engines(db_url)
    results, errors = _race([
        lambda: a.fire(case.id, "submit", P(org.s1), data={"summary": "A"},
                       expected_version=expected),
        lambda: b.fire(case.id, "submit", P(org.s1), data={"summary": "B"},
                       expected_version=expected),
    ])
    assert len(results) == 1 and len(errors) == 1, (results, errors)
    if expected is None:
        # The loser waits (SQLite's BEGIN IMMEDIATE; PostgreSQL's row lock, the case being
        # read FOR UPDATE) and then reads the moved case: submit is no longer possible.
        assert isinstance(errors[0], ActionNotAllowed)
    else:
        assert isinstance(errors[0], Conflict) and errors[0].current_version == 2
    final = engine.get_case(case.id)
    assert final.version == 2 and final.data["summary"] in ("A", "B")
    history = engine.history(case.id)
    assert [h["trigger"] for h in history] == ["start", "submit"]
    assert history[1]["data"]["summary"] == final.data["summary"]


def test_two_approvals_race_for_the_last_quota_place(pg_only_url):
    """Two committee members approve different cases of one pool with one 好 place left."""
    db = Database(pg_only_url)
    eng = Engine(db)
    org = _build_org(db)
    eng.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
    cases = []
    for code in ("s1", "s2"):  # pool SEC1/staff has 2 cases → limit max(floor(0.8), 1) = 1
        c = eng.start_case("regular-assessment", org[code], period_key="2026-11")
        eng.fire(c.id, "submit", P(org[code]), data={"summary": "x"})
        eng.fire(c.id, "evaluate", P(org["l1"]), data={"grade": "好"})
        eng.fire(c.id, "accept", P(org[code]))
        cases.append(c.id)
    a, b = _racing_engines(pg_only_url)
    results, errors = _race([
        lambda: a.fire(cases[0], "approve", P(org["c1"])),
        lambda: b.fire(cases[1], "approve", P(org["c2"])),
    ])
    assert len(results) == 1 and len(errors) == 1, (results, errors)
    assert isinstance(errors[0], RuleViolation)
    assert errors[0].details["limit"] == 1 and errors[0].details["used"] == 1
    states = sorted(eng.get_case(c).state for c in cases)
    assert states == ["approval", "approved"]
    db.dispose()


def _build_org(db) -> dict[str, int]:
    from workflows.org import add_person, add_unit, assign_role

    with db.unit_of_work() as s:
        root = add_unit(s, "ORG", "部机关")
        sec1 = add_unit(s, "SEC1", "干部一科", root)
        made = {code: add_person(s, code.upper(), code, unit, tier) for code, unit, tier in [
            ("c1", root, "staff"), ("c2", root, "staff"), ("l1", sec1, "chief"),
            ("s1", sec1, "staff"), ("s2", sec1, "staff")]}
        assign_role(s, made["c1"], "committee", root)
        assign_role(s, made["c2"], "committee", root)
        assign_role(s, made["l1"], "leader", sec1)
        return {k: v.id for k, v in made.items()}


def test_overlapping_bulk_requests_do_not_deadlock(pg_only_url):
    db = Database(pg_only_url)
    eng = Engine(db)
    org = _build_org(db)
    eng.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
    ids = []
    for period in (f"2026-{m:02d}" for m in range(1, 13)):
        for who in ("s1", "s2"):
            c = eng.start_case("regular-assessment", org[who], period_key=period)
            eng.fire(c.id, "submit", P(org[who]), data={"summary": "x"})
            ids.append(c.id)
    results, errors = _race([
        lambda: Engine(Database(pg_only_url)).fire_bulk(ids, "evaluate", P(org["l1"]),
                                                        data={"grade": "较好"}),
        lambda: Engine(Database(pg_only_url)).fire_bulk(ids[::-1], "evaluate", P(org["l1"]),
                                                        data={"grade": "较好"}),
    ])
    assert errors == []
    done = sorted(r.case_id for result in results for r in result.done)
    assert done == sorted(ids)  # each case evaluated once, by one request or the other
    db.dispose()


def test_a_key_sent_again_while_its_first_run_holds_the_case_is_replayed(pg_only_url):
    """The second run of a request waits on the case's row lock while the first writes. Its
    read then sees the moved case; the key's first use and the case's history must be read
    as of then too (not from the snapshot taken before the wait), or the weekly record,
    a step that stays in its state, would be recorded twice."""
    import time

    from sqlalchemy import event, text

    db = Database(pg_only_url)
    eng = Engine(db)
    org = _build_org(db)
    eng.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
    case = eng.start_case("regular-assessment", org["s1"], period_key="2026-11")
    go = threading.Event()

    def held_clock():  # the first run holds the case locked until the second waits on it
        go.wait(timeout=30)
        return utcnow()

    first, second = Engine(Database(pg_only_url), clock=held_clock), Engine(Database(pg_only_url))
    writes: list[str] = []  # what the second run sends to write (nothing: it replays)
    event.listen(second.db.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, *_a: writes.append(sql) if "INSERT" in sql else None)
    week = {"weekly_records": [{"week": "W1", "content": "整理档案"}]}

    def fire(engine):
        return engine.fire(case.id, "record_week", P(org["s1"]), data=week,
                           idempotency_key="week-1")

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(fire, first)
        with db.engine.connect() as conn:  # wait until the first run holds the lock
            while not conn.execute(text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname = 'cases' AND l.mode = 'RowShareLock' AND l.database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())")
                    ).scalar():
                time.sleep(0.01)
        b = pool.submit(fire, second)
        with db.engine.connect() as conn:  # wait until the second run waits for it
            while not conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")).scalar():
                conn.rollback()  # pg_stat_activity is read once per transaction
                time.sleep(0.01)
        go.set()
        results = [a.result(timeout=60), b.result(timeout=60)]
    assert [r.replayed for r in results] == [False, True]
    assert writes == []  # it read the key's first use, not the snapshot from before the wait
    assert results[0].version == results[1].version == 2
    history = eng.history(case.id)
    assert [h["trigger"] for h in history] == ["start", "record_week"]
    assert eng.get_case(case.id).data["weekly_records"] == week["weekly_records"]
    db.dispose()


def test_a_sweep_passes_over_the_timers_another_node_holds(pg_only_url):
    """Two nodes sweeping (or one sweeping while another fires) never wait on each other:
    a stale timer whose row another transaction holds is left to it, and swept later."""
    from sqlalchemy import select, text

    from workflows.models import Timer
    from workflows.timers import TimerWorker

    db = Database(pg_only_url)
    eng = Engine(db)
    org = _build_org(db)
    eng.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
    cid = eng.start_case("regular-assessment", org["s1"], period_key="2026-11").id
    eng.fire(cid, "submit", P(org["s1"]), data={"summary": "x"})  # visit 1's three are stale
    with db.unit_of_work(write=False) as s:
        stale = s.execute(select(Timer.id).where(Timer.case_id == cid, Timer.state_visit == 1)
                          .order_by(Timer.id)).scalars().all()
    assert len(stale) == 3
    later = utcnow().replace(year=utcnow().year + 1)
    held = db.engine.connect()
    try:
        held.execute(text("SELECT 1 FROM timers WHERE id = :id FOR UPDATE"), {"id": stale[0]})
        worker = TimerWorker(eng)
        assert worker.sweep(later) == 2  # not blocked by the held row
        held.rollback()
        assert worker.sweep(later) == 1
    finally:
        held.close()
    with db.unit_of_work(write=False) as s:
        assert set(s.execute(select(Timer.status).where(Timer.id.in_(stale))).scalars()) == {
            "dropped"}
    db.dispose()
