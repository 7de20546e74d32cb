"""The reliability suite (可靠性测试): shared switches, fixtures and helpers.

Everything here runs on PostgreSQL (the deployment database): `db_url` is overridden so the
`engine`, `org`, `regular` and `api` fixtures of `tests/conftest.py` use the session's
scratch PostgreSQL database. Without PostgreSQL these tests are skipped, except under
CI=true, where that is a failure (as for the rest of the suite).

`CIVFLOW_HEAVY=1` turns on the heavier variants (more threads, cases, examples, load);
`heavy(default, heavier)` picks the size. The default sizes keep the whole suite within a
couple of minutes on a small shared machine. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import TypeVar

import pytest
from sqlalchemy import insert, text, update

from workflows.calendar import WorkCalendar
from workflows.db import Database
from workflows.engine import Engine
from workflows.history import GENESIS, record_hash
from workflows.models import Case, HistoryRecord, Person, RoleAssignment, Timer, Unit
from workflows.timers import plan_state, timer_rows

from ..conftest import REGULAR, ROOT

HEAVY = os.environ.get("CIVFLOW_HEAVY", "") not in ("", "0")
T = TypeVar("T")


def heavy(default: T, heavier: T) -> T:
    """`heavier` when CIVFLOW_HEAVY=1, else `default`."""
    return heavier if HEAVY else default


@pytest.fixture
def db_url(pg_only_url):
    """The reliability suite is about PostgreSQL: locks, restarts, killed backends."""
    return pg_only_url


# --------------------------------------------------------------------------- the CLI


def civflow(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`civflow ARGS…` as a separate process (the installed entry point's module)."""
    env = {**os.environ, "CIVFLOW_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_history_intact(url: str, cases: int | None = None) -> str:
    """`civflow verify-history` exits 0 (and checked `cases` cases, when given)."""
    done = civflow("verify-history", "--db", url)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    if cases is not None:
        assert f"history intact: {cases} cases" in out, out
    return out


# --------------------------------------------------------------------------- seeding


@dataclass(frozen=True)
class Seeded:
    """Cases of the shipped regular-assessment flow (平时考核) written straight to the
    database, as the engine would have left them after the given steps."""

    case_ids: list[int]
    subjects: list[int]
    leader: int  # leader (主管领导) of the unit
    committee: int  # committee member (审定)
    unit: int
    version_id: int


# (trigger, from, to, actor: "system" | "subject" | "leader", data) as the engine records them
STEPS = [
    ("start", None, "summary", "system", {}),
    ("submit", "summary", "evaluation", "subject", {"summary": "本月小结"}),
    ("evaluate", "evaluation", "feedback", "leader", {"grade": "较好"}),
    ("accept", "feedback", "approval", "subject", {}),
]


def seed_regular_cases(url: str, n: int, state: str = "approval",
                       period: str = "2026-11") -> Seeded:
    """n cases in `state` (summary … approval) with their hash-chained history and the
    pending timers of their current state visit, planned by the engine's own `plan_state`.

    Thousands of cases through `Engine.fire` would take minutes; this takes a second and
    `civflow verify-history` accepts it (the tests check that)."""
    db = Database(url)
    engine = Engine(db)
    version_id = engine.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR)).version_id
    spec = engine.spec_of(version_id)
    steps = STEPS[:[s[2] for s in STEPS].index(state) + 1]
    calendar = WorkCalendar()
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with db.unit_of_work() as s:
        conn = s.connection()
        unit = conn.execute(insert(Unit.__table__).values(code="REL", name="可靠性测试处",
                                                          path="/")
                            .returning(Unit.id)).scalar_one()
        conn.execute(update(Unit.__table__).where(Unit.id == unit).values(path=f"/{unit}/"))
        leader, committee = conn.execute(
            insert(Person.__table__).returning(Person.id, sort_by_parameter_order=True),
            [{"code": code, "name": name, "unit_id": unit, "tier": "chief", "active": True}
             for code, name in (("REL-L", "处长"), ("REL-C", "审定委员"))]).scalars().all()
        conn.execute(insert(RoleAssignment.__table__), [
            {"person_id": leader, "unit_id": unit, "role": "leader"},
            {"person_id": committee, "unit_id": unit, "role": "committee"}])
        subjects = conn.execute(
            insert(Person.__table__).returning(Person.id, sort_by_parameter_order=True),
            [{"code": f"REL{i:05d}", "name": f"干部{i}", "unit_id": unit, "tier": "staff",
              "active": True} for i in range(n)]).scalars().all()
        ids = conn.execute(text("SELECT nextval(pg_get_serial_sequence('cases', 'id')) "
                                "FROM generate_series(1, :n)"), {"n": n}).scalars().all()
        entered = t0 + dt.timedelta(seconds=len(steps))
        deadline, planned = plan_state(spec, state, entered, period, calendar,
                                       {"summary": "本月小结", "grade": "较好"})
        cases, history, timers = [], [], []
        for case_id, subject in zip(ids, subjects, strict=True):
            prev, data = GENESIS, {}
            for seq, (trigger, src, dest, who, values) in enumerate(steps, start=1):
                at = t0 + dt.timedelta(seconds=seq)
                actor = {"leader": leader, "subject": subject}.get(who)
                h = record_hash(case_id=case_id, seq=seq, at=at, actor_id=actor,
                                actor_role=who, trigger=trigger, from_state=src,
                                to_state=dest, data=values, comment=None, prev_hash=prev)
                history.append({"case_id": case_id, "seq": seq, "at": at, "actor_id": actor,
                                "actor_role": who, "trigger": trigger, "from_state": src,
                                "to_state": dest, "data": values, "comment": None,
                                "idempotency_key": None, "prev_hash": prev, "hash": h})
                prev, data = h, {**data, **values}
            seq = len(steps)
            cases.append({"id": case_id, "flow_id": spec.flow, "version_id": version_id,
                          "subject_id": subject, "unit_id": unit, "tier": "staff",
                          "period_key": period, "state": state, "data": data,
                          "version": seq, "history_seq": seq, "state_visit": seq,
                          "history_hash": prev, "created_at": t0, "updated_at": entered,
                          "state_entered_at": entered, "deadline_at": deadline})
            timers += timer_rows(case_id, seq, planned, entered)
        conn.execute(insert(Case.__table__), cases)
        conn.execute(insert(HistoryRecord.__table__), history)
        if timers:
            conn.execute(insert(Timer.__table__), timers)
    db.dispose()
    return Seeded(list(ids), list(subjects), leader, committee, unit, version_id)


def orphan_timers(db: Database) -> list[tuple]:
    """Timers no committed state change explains: armed for a state visit whose history
    record does not exist, or that the case has not reached — what a state change that
    committed its timers without its record (or the other way round) would leave. Timers
    of a visit the case has left are not orphans: they are dropped by their visit
    (`workflows.timers.STALE`)."""
    with db.unit_of_work(write=False) as s:
        return list(s.execute(text(
            "SELECT t.id, t.case_id, t.state_visit, c.state_visit FROM timers t "
            "JOIN cases c ON c.id = t.case_id "
            "WHERE t.state_visit > c.state_visit OR NOT EXISTS (SELECT 1 FROM case_history h "
            "WHERE h.case_id = t.case_id AND h.seq = t.state_visit)"
        )).all())
