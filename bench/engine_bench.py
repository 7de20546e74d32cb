"""Engine throughput against a replay of its own statements, then against its peers.

    .venv/bin/python bench/engine_bench.py [--db sqlite|postgresql|both] [--cases N]
                                           [--repeat R] [--chunk C] [--profile]
                                           [--baseline REV | --no-baseline] [--no-peers]

Two parts. First the replay (below): how much of its time the engine spends above the
statements it sends. Then, unless ``--no-peers``, ``bench/peer_bench.py``: civflow against
SpiffWorkflow, against the database's own limit (a raw UPDATE + INSERT per step from
Python) and against the engine of a git revision (``--baseline``, default 45d2e57), each
as a ratio from the same run — the figures issue 12's targets are about; its docstring
says how. The replay is *not* the database's limit: it sends the engine's own statements
(reads, role and quota checks included), so it moves whenever the engine's SQL does.

What is measured
    For each database a fresh migrated database is made (SQLite: a file in a temporary
    directory; PostgreSQL: a scratch database ``civflow_bench_<random>`` created through the
    admin URL ``$CIVFLOW_TEST_PG_URL`` or the local default, dropped at the end). A small
    organisation is built: a root unit holding one leader and one committee member, and N
    staff spread over six sub-units. ``definitions/regular-assessment.yaml`` is published.
    Each repeat starts 2 × N cases in two fresh months: one set for the engine, one for the
    ceiling, so both start from identical rows written by ``Engine.start_case``. Every case
    is then driven submit (subject, summary) → evaluate (leader, grade) → accept (subject)
    → approve (committee), phase by phase, with ``expected_version`` on every call: 4 × N
    actions per side. At most 40 % of each quota pool (unit, tier, month) is graded 好, so
    the quota rule never refuses but runs its query on those approvals; the rest are graded
    较好. Engine and ceiling take turns every C cases (default 20), alternating who goes
    first, so that whatever else runs on the machine weighs on both alike. The figure is
    actions per second, the median over R repeats, single-threaded.

The replay ("ceiling" in the code)
    The replay is what ``Engine.fire`` cannot beat on the same database with the same
    driver: per action it sends exactly the statements the engine sends, in the same order
    and in one transaction (BEGIN IMMEDIATE on SQLite as ``workflows.db`` does, psycopg's
    implicit BEGIN on PostgreSQL; then COMMIT), straight through ``sqlite3`` / ``psycopg``
    on one open connection, without SQLAlchemy:

      (a) SELECT every column of the case joined with units.path, by id;
      (b) when the actor is not the subject: SELECT role, unit_id FROM role_assignments;
      (b2) on evaluate and approve (the actions with rules): SELECT the case's history
          records, from which the rules are given only values written by an entitled
          writer (``workflows.provenance.trusted``);
      (c) on approve of a case graded 好: the quota count and conditional sum over the
          pool, preceded on PostgreSQL by SELECT pg_advisory_xact_lock(<the engine's key>);
      (d) UPDATE cases SET <the columns engine._apply/_record set> WHERE id AND version;
      (e) INSERT INTO case_history <the columns engine._insert_history writes> (with
          RETURNING id on PostgreSQL, as SQLAlchemy does there).

    It makes the same checks in straight-line Python (version, state, role on the unit's
    ancestors, claim, quota limit), merges the case data and computes the same sha256
    chain hash with ``workflows.history.record_hash``; at the end
    ``workflows.history.verify`` checks every chain, the ceiling's included. What it
    leaves out is exactly the engine's own overhead: session and unit of work, connection
    pool (and its pre-ping on PostgreSQL), statement construction, compilation and caching,
    result processing, marshmallow schemas, the ``transitions`` machine, the rule registry.

    Before timing, one case graded 好 and one graded 较好 go through both sides while the
    statements are captured on the wire (SQLite's trace callback; libpq's protocol trace)
    and as text (SQLAlchemy's ``before_cursor_execute`` for the engine, the cursor for the
    ceiling). The table printed per action gives the counts and says whether both sides
    send the same statements in the same order and name the same tables and columns in
    each, so a change to the engine's SQL shows up here rather than skewing the ratio.

This is a benchmark, not a test: it never asserts on timings. It raises only when the work
itself goes wrong (a refused action, a case not approved at version 5, a broken chain).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import json
import os
import platform
import pstats
import re
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections import Counter, namedtuple
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import peer_bench
import psycopg
import sqlalchemy
from psycopg import pq
from psycopg.types.json import Jsonb
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import make_url

from workflows import provenance
from workflows.calendar import WorkCalendar
from workflows.db import Database, upgrade
from workflows.engine import Actor, Engine
from workflows.history import record_hash, verify
from workflows.models import Case, unit_path_ids
from workflows.org import add_person, add_unit, assign_role
from workflows.rules import quota_limit
from workflows.spec import load_definition
from workflows.timers import plan_state, timer_rows

ROOT = Path(__file__).resolve().parent.parent
DEFINITION = ROOT / "definitions" / "regular-assessment.yaml"
FLOW = "regular-assessment"
PG_ENV = "CIVFLOW_TEST_PG_URL"
PG_DEFAULT = "postgresql+psycopg://civflow:civflow@127.0.0.1:5432/civflow"
UNITS = 6  # staff sub-units, hence quota pools per month
GOOD, FAIR = "好", "较好"
RATIO = 0.4  # the quota of the approve transition: 好 at most 40 % of a pool, floor, min 1
SUMMARY = ("本月完成干部档案专项审核 230 卷，参与年度考核方案起草，按时报送人员统计报表；"
           "下月重点推进档案数字化和任前审核流程规范。")

# The flow as the ceiling needs it: trigger -> (from, to, role that acts, final?).
STEPS = {
    "submit": ("summary", "evaluation", "subject", False),
    "evaluate": ("evaluation", "feedback", "leader", False),
    "accept": ("feedback", "approval", "subject", False),
    "approve": ("approval", "approved", "committee", True),
}
TRIGGERS = tuple(STEPS)

Script = list[tuple[str, list[tuple[int, int, dict[str, Any] | None]]]]


# --------------------------------------------------------------------------- databases


def pg_admin_url() -> str:
    url = os.environ.get(PG_ENV) or PG_DEFAULT
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain):]
    return url


@contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """A new, migrated, empty database; removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="civflow_bench_") as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            upgrade(url)
            yield url
        return
    admin = create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"civflow_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        benchlib.drop_database(name)  # (its admin URL is this one's)
        admin.dispose()


def server_version(kind: str, url: str) -> str:
    if kind == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    with psycopg.connect(dbapi_url(url)) as conn:
        return f"PostgreSQL {conn.execute('SHOW server_version').fetchone()[0]}"


def dbapi_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq conninfo URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# --------------------------------------------------------------------------- org and cases


@dataclass
class Org:
    leader: int
    committee: int
    staff: list[int]  # in unit order, UNITS sub-units
    good: set[int]  # graded 好: at most 40 % of each unit's staff (one pool per month)


def build_org(db: Database, n: int) -> Org:
    with db.unit_of_work() as s:
        root = add_unit(s, "ORG", "部机关")
        units = [add_unit(s, f"SEC{i + 1}", f"干部{i + 1}科", root) for i in range(UNITS)]
        leader = add_person(s, "LEADER", "主管领导", root, "chief")
        committee = add_person(s, "COMMITTEE", "审定委员", root, "staff")
        assign_role(s, leader, "leader", root)
        assign_role(s, committee, "committee", root)
        members: list[list[int]] = [[] for _ in units]
        for i in range(n):
            person = add_person(s, f"S{i:05d}", f"干部{i}", units[i % UNITS], "staff")
            members[i % UNITS].append(person.id)
        good = {pid for pool in members for pid in pool[:int(len(pool) * RATIO)]}
        return Org(leader.id, committee.id, [pid for pool in members for pid in pool], good)


def month(i: int) -> str:
    return f"{2001 + i // 12}-{i % 12 + 1:02d}"


def start_cases(engine: Engine, subjects: list[int], period: str) -> list[tuple[int, int]]:
    return [(engine.start_case(FLOW, pid, period_key=period).id, pid) for pid in subjects]


def script(cases: list[tuple[int, int]], org: Org, good: set[int] | None = None) -> Script:
    """Per phase: (case id, actor id, data) for every case."""
    good = org.good if good is None else good
    return [
        ("submit", [(cid, pid, {"summary": SUMMARY}) for cid, pid in cases]),
        ("evaluate", [(cid, org.leader, {"grade": GOOD if pid in good else FAIR})
                      for cid, pid in cases]),
        ("accept", [(cid, pid, None) for cid, pid in cases]),
        ("approve", [(cid, org.committee, None) for cid, _pid in cases]),
    ]


# --------------------------------------------------------------------------- the two sides


class EngineSide:
    """Fires actions through the engine API, as the service and the scheduler do."""

    name = "engine"

    def __init__(self, engine: Engine):
        self.engine = engine
        self.version: dict[int, int] = {}
        self.actors: dict[int, Actor] = {}

    def run(self, trigger: str, steps: list[tuple[int, int, dict[str, Any] | None]]
            ) -> tuple[float, float]:
        """Fire `trigger` on each (case, actor, data); (seconds, seconds of this process's CPU)."""
        fire, version, actors = self.engine.fire, self.version, self.actors
        for _cid, pid, _data in steps:
            actors.setdefault(pid, Actor.person(pid))
        t0, c0 = time.perf_counter(), time.process_time()
        for cid, pid, data in steps:
            version[cid] = fire(cid, trigger, actors[pid], data=data,
                                expected_version=version.get(cid, 1)).version
        return time.perf_counter() - t0, time.process_time() - c0


class CeilingSide:
    """The same loop over `Ceiling.fire`."""

    name = "ceiling"

    def __init__(self, ceiling: Ceiling):
        self.ceiling = ceiling
        self.version: dict[int, int] = {}

    def run(self, trigger: str, steps: list[tuple[int, int, dict[str, Any] | None]]
            ) -> tuple[float, float]:
        fire, version = self.ceiling.fire, self.version
        t0, c0 = time.perf_counter(), time.process_time()
        for cid, pid, data in steps:
            version[cid] = fire(cid, trigger, pid, data, version.get(cid, 1))
        return time.perf_counter() - t0, time.process_time() - c0


def race(sides: list[EngineSide | CeilingSide], plans: list[Script], chunk: int
         ) -> dict[str, dict[str, float]]:
    """Drive each side through its own plan, phase by phase, taking turns every `chunk` cases.

    Short turns (and alternating who goes first) spread whatever else the machine is doing
    evenly over both sides, which back-to-back runs of several seconds would not.
    Returns seconds per side and phase, plus the process's CPU seconds under the key "cpu".
    """
    times = {side.name: dict.fromkeys((*TRIGGERS, "cpu"), 0.0) for side in sides}
    for phase, trigger in enumerate(TRIGGERS):
        steps = [dict(plan)[trigger] for plan in plans]
        for turn, k in enumerate(range(0, len(steps[0]), chunk)):
            order = list(zip(sides, steps, strict=True))
            for side, todo in order if (turn + phase) % 2 == 0 else order[::-1]:
                wall, cpu = side.run(trigger, todo[k:k + chunk])
                times[side.name][trigger] += wall
                times[side.name]["cpu"] += cpu
    return times


# --------------------------------------------------------------------------- the ceiling

# The engine reads every column of `cases` (select(CASES, Unit.path)); so does the ceiling.
CASE_COLUMNS = tuple(c.name for c in Case.__table__.columns)
# The columns engine._apply writes for the timers of the state a case enters.
TIMER_COLUMNS = ("case_id", "state_visit", "kind", "action", "due_at", "status", "attempts",
                 "dedupe_key", "payload", "created_at")
# The flow's deadlines and timers, planned by the same pure function the engine uses.
SPEC = load_definition(DEFINITION.read_text(encoding="utf-8"), str(DEFINITION))
CALENDAR = WorkCalendar()
# The columns engine._insert_history writes.
HISTORY_COLUMNS = ("case_id", "seq", "at", "actor_id", "actor_role", "trigger", "from_state",
                   "to_state", "data", "comment", "idempotency_key", "request_hash",
                   "prev_hash", "hash")
# Actions whose rules or effects read the case: the engine reads the case's history first,
# to give them only values an entitled writer wrote (engine._trusted).
JUDGED = {t.trigger for t in SPEC.transitions if t.rules or t.effects}
HistoryRow = namedtuple("HistoryRow", "case_id seq trigger from_state actor_role data")


class Ceiling:
    """`Engine.fire` for this flow as straight-line DBAPI code: the same statements, no layers."""

    def __init__(self, kind: str, url: str):
        self.pg = kind == "postgresql"
        if self.pg:
            self.conn: Any = psycopg.connect(dbapi_url(url))
            self.p = "%s"
            grade = "CAST((cases.data ->> %s) AS VARCHAR)"
        else:
            self.conn = sqlite3.connect(make_url(url).database, timeout=30)
            self.conn.isolation_level = None  # BEGIN IMMEDIATE ourselves, as workflows.db does
            for pragma in ("foreign_keys=ON", "busy_timeout=30000", "journal_mode=WAL",
                           "synchronous=NORMAL"):
                self.conn.execute(f"PRAGMA {pragma}")
            self.p = "?"
            grade = "CAST(JSON_EXTRACT(cases.data, ?) AS VARCHAR)"
        p = self.p
        self.cur = self.conn.cursor()
        self.names = (*CASE_COLUMNS, "path")
        self.select_case = (f"SELECT {', '.join(f'cases.{c}' for c in CASE_COLUMNS)}, "
                            f"units.path FROM cases JOIN units ON units.id = cases.unit_id "
                            f"WHERE cases.id = {p}")
        self.select_roles = (f"SELECT role_assignments.role, role_assignments.unit_id "
                             f"FROM role_assignments WHERE role_assignments.person_id = {p}")
        self.lock = f"SELECT pg_advisory_xact_lock({p})"
        self.select_history = (
            "SELECT case_history.case_id, case_history.seq, case_history.\"trigger\", "
            "case_history.from_state, case_history.actor_role, case_history.data "
            f"FROM case_history WHERE case_history.case_id IN ({p}) "
            "ORDER BY case_history.case_id, case_history.seq")
        self.quota = (f"SELECT count(*), coalesce(sum(CASE WHEN (cases.state IN ({p}) AND "
                      f"{grade} = {p}) THEN 1 ELSE 0 END), 0) FROM cases WHERE "
                      f"cases.flow_id = {p} AND cases.period_key = {p} AND cases.tier = {p} "
                      f"AND cases.unit_id = {p}")
        self.grade_path = "grade" if self.pg else '$."grade"'
        quoted = ", ".join(f'"{c}"' for c in HISTORY_COLUMNS)  # "trigger" is a keyword
        self.insert = (f"INSERT INTO case_history ({quoted}) "
                       f"VALUES ({', '.join([p] * len(HISTORY_COLUMNS))})")
        if self.pg:  # SQLAlchemy fetches the new key this way on PostgreSQL (lastrowid on SQLite)
            self.insert += " RETURNING case_history.id"
        self._updates: dict[tuple[str, ...], str] = {}
        self.arm = (f"INSERT INTO timers ({', '.join(TIMER_COLUMNS)}) "
                    f"VALUES ({', '.join([p] * len(TIMER_COLUMNS))})")

    def close(self) -> None:
        self.conn.close()

    def _db_json(self, value: dict[str, Any]) -> Any:
        return Jsonb(value) if self.pg else json.dumps(value)

    def _db_time(self, at: dt.datetime) -> Any:
        # SQLAlchemy stores SQLite timestamps as naive UTC text to the microsecond.
        return at if self.pg else at.replace(tzinfo=None).isoformat(" ", "microseconds")

    def _update(self, columns: tuple[str, ...]) -> str:
        sql = self._updates.get(columns)
        if sql is None:
            sets = ", ".join(f"{c}={self.p}" for c in columns)
            sql = self._updates[columns] = (f"UPDATE cases SET {sets} "
                                            f"WHERE cases.id = {self.p} AND cases.version = {self.p}")
        return sql

    def fire(self, case_id: int, trigger: str, actor_id: int, data: dict[str, Any] | None,
             expected_version: int) -> int:
        """One action in one transaction; returns the case's new version."""
        source, dest, by, final = STEPS[trigger]
        cur = self.cur
        try:
            if not self.pg:
                cur.execute("BEGIN IMMEDIATE")
            cur.execute(self.select_case, (case_id,))
            found = cur.fetchone()
            if found is None:
                raise LookupError(f"case {case_id} does not exist")
            row = dict(zip(self.names, found, strict=True))
            state, version = row["state"], row["version"]
            if version != expected_version:
                raise RuntimeError(f"case {case_id}: version {version}, not {expected_version}")
            if state != source:
                raise RuntimeError(f"case {case_id}: {trigger} is not possible in {state}")
            if actor_id == row["subject_id"]:  # the subject's role needs no query (engine too)
                if by != "subject":
                    raise PermissionError(f"case {case_id}: {by} acts on their own case")
            else:
                cur.execute(self.select_roles, (actor_id,))
                ancestors = unit_path_ids(row["path"])
                if not any(r == by and u in ancestors for r, u in cur.fetchall()):
                    raise PermissionError(f"case {case_id}: person {actor_id} is no {by}")
                if row["claimed_by"] not in (None, actor_id):
                    raise PermissionError(f"case {case_id} is claimed by {row['claimed_by']}")
            values = dict(data) if data else {}
            stored = row["data"] if self.pg else json.loads(row["data"])
            merged = {**stored, **values}
            seen = merged  # what the rules see: of the stored data, what was written by right
            if trigger in JUDGED:
                cur.execute(self.select_history, (case_id,))
                records = [HistoryRow(*r[:5], r[5] if self.pg else json.loads(r[5]))
                           for r in cur.fetchall()]
                seen = {**provenance.trusted(SPEC, stored, records), **values}
            if trigger == "approve" and seen.get("grade") == GOOD:
                self._check_quota(row["flow_id"], row["unit_id"], row["tier"], row["period_key"])
            # The UPDATE sets what engine._apply and engine._record set, in their order.
            now = dt.datetime.now(dt.UTC)
            changes: dict[str, Any] = {"state": dest, "data": self._db_json(merged)}
            seq, prev = row["history_seq"] + 1, row["history_hash"]
            planned = []
            if dest != state:
                deadline, planned = plan_state(SPEC, dest, now, row["period_key"], CALENDAR)
                changes.update(deadline_at=None if deadline is None else self._db_time(deadline),
                               claimed_by=None, claimed_at=None, state_visit=seq)
            if final:
                changes["closed_at"] = self._db_time(now)
            h = record_hash(case_id=case_id, seq=seq, at=now, actor_id=actor_id,
                            actor_role=by, trigger=trigger, from_state=state, to_state=dest,
                            data=values, comment=None, prev_hash=prev)
            at = self._db_time(now)
            changes.update(version=version + 1, history_seq=seq, history_hash=h, updated_at=at)
            if dest != state:
                changes["state_entered_at"] = at
            cur.execute(self._update(tuple(changes)), (*changes.values(), case_id, version))
            if cur.rowcount != 1:
                raise RuntimeError(f"case {case_id} changed underneath")
            cur.execute(self.insert, (case_id, seq, at, actor_id, by, trigger, state, dest,
                                      self._db_json(values), None, None, None, prev, h))
            if self.pg:
                cur.fetchone()
            if dest != state and planned:  # the new visit's (the old visit's stay as they are)
                cur.executemany(self.arm, [
                    tuple(self._db_json(v) if k == "payload" else
                          self._db_time(v) if isinstance(v, dt.datetime) else v
                          for k, v in r.items())
                    for r in timer_rows(case_id, seq, planned, now)])
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return version + 1

    def _check_quota(self, flow: str, unit: int, tier: str, period: str) -> None:
        if self.pg:  # the same advisory lock key as engine._SqlFacts.quota_figures
            pool = {"period": period, "tier": tier, "unit": unit}
            key = f"quota|{flow}|{sorted(pool.items())}|grade|{GOOD}"
            lock_id = struct.unpack(">q", hashlib.sha256(key.encode()).digest()[:8])[0]
            self.cur.execute(self.lock, (lock_id,))
        self.cur.execute(self.quota, ("approved", self.grade_path, GOOD, flow, period, tier,
                                      unit))
        size, used = self.cur.fetchone()
        if used + 1 > quota_limit(size, RATIO, "floor", 1):
            raise RuntimeError(f"quota for {GOOD} in unit {unit} is used up")


# --------------------------------------------------------------------------- statement capture

_MESSAGE = re.compile(r"^([FB])\t\d+\t(\w+)\t?(.*?)(?=^[FB]\t\d+\t\w+|\Z)", re.M | re.S)


def label(sql: str) -> str:
    """A short name for a statement: verb and table."""
    u = " ".join(sql.split()).upper()
    if u.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
        return u
    if u in ("", ";", "SELECT 1"):  # SQLAlchemy's pool pre-ping (";" on PostgreSQL)
        return "pool pre-ping"
    if "PG_ADVISORY_XACT_LOCK" in u:
        return "SELECT pg_advisory_xact_lock"
    m = re.search(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", u)
    table = m.group(1).lower() if m else "?"
    extra = "+units.path" if " JOIN UNITS" in u else " (quota count)" if "COUNT(" in u else ""
    return f"{u.split(' ', 1)[0]} {table}{extra}"


class SqliteTrace:
    """SQLite's trace callback on one connection: every statement it runs, from anyone."""

    def __init__(self, conn: sqlite3.Connection):
        self.log: list[str] = []
        conn.set_trace_callback(lambda sql: self.log.append(label(sql)))

    @contextmanager
    def record(self) -> Iterator[list[str]]:
        out: list[str] = []
        self.log.clear()
        try:
            yield out
        finally:
            out.extend(self.log)


class PgTrace:
    """libpq's protocol trace of one connection: every statement psycopg sends, from anyone."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.prepared: dict[str, str] = {}

    @contextmanager
    def record(self) -> Iterator[list[str]]:
        out: list[str] = []
        with tempfile.TemporaryFile() as f:
            self.conn.pgconn.trace(os.dup(f.fileno()))
            self.conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            try:
                yield out
            finally:
                self.conn.pgconn.untrace()
                f.seek(0)
                out.extend(self._statements(f.read().decode()))

    def _statements(self, trace: str) -> Iterator[str]:
        for side, kind, body in _MESSAGE.findall(trace):
            if side != "F":
                continue
            if kind == "Query":
                yield label(body.strip()[1:-1])
            elif kind == "Parse":
                name, sql = re.match(r'\s*"([^"]*)" "(.*)"[ \dN]*$', body, re.S).groups()
                self.prepared[name] = label(sql)
            elif kind == "Bind":
                yield self.prepared.get(re.match(r'\s*"[^"]*" "([^"]*)"', body).group(1), "?")


class RecordingCursor:
    """The ceiling's cursor during the capture only: notes each statement's text."""

    def __init__(self, cur: Any, log: list[str]):
        self._cur, self._log = cur, log

    def execute(self, sql: str, params: Any = None) -> Any:
        self._log.append(sql)
        return self._cur.execute(sql, params) if params is not None else self._cur.execute(sql)

    def executemany(self, sql: str, params: Any) -> Any:  # the timers of a state, at once
        self._log.append(sql)
        return self._cur.executemany(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


KNOWN_NAMES = {c.name for t in Case.metadata.tables.values() for c in t.columns} \
    | set(Case.metadata.tables)


def names_in(sql: str) -> set[str]:
    """The tables and columns a statement names (SQLAlchemy's bind names are column names)."""
    return set(re.findall(r"\w+", sql)) & KNOWN_NAMES


WIRE_ONLY = {"BEGIN", "BEGIN IMMEDIATE", "COMMIT", "pool pre-ping"}  # not in the SQL texts


@dataclass
class Captured:
    engine: list[str]  # labels of what went over the wire
    ceiling: list[str]
    engine_sql: list[str]  # statement texts: via SQLAlchemy's before_cursor_execute
    ceiling_sql: list[str]  # and as the ceiling's cursor got them

    def wire_difference(self) -> str:
        if self.engine == self.ceiling:
            return "same statements, same order"
        extra = Counter(self.engine) - Counter(self.ceiling)
        missing = Counter(self.ceiling) - Counter(self.engine)
        return "; ".join([f"engine also sends {k} ×{n}" for k, n in extra.items()]
                         + [f"ceiling also sends {k} ×{n}" for k, n in missing.items()]
                         ) or "same statements, other order"

    def column_difference(self) -> str:
        """Whether each statement names the same tables and columns on both sides."""
        engine = [s for s in self.engine_sql if label(s) not in WIRE_ONLY]
        ceiling = [s for s in self.ceiling_sql if label(s) not in WIRE_ONLY]
        if [label(s) for s in engine] != [label(s) for s in ceiling]:
            return f"statements differ: {[label(s) for s in engine]} vs {[label(s) for s in ceiling]}"
        problems = []
        for e, c in zip(engine, ceiling, strict=True):
            only_e, only_c = names_in(e) - names_in(c), names_in(c) - names_in(e)
            if only_e or only_c:
                problems.append(f"{label(e)}: engine only {sorted(only_e)}, "
                                f"ceiling only {sorted(only_c)}")
        return "; ".join(problems) or "same"


def capture(kind: str, url: str, org: Org, engine_cases: list[tuple[int, int]],
            ceiling_cases: list[tuple[int, int]]) -> dict[str, Captured]:
    """Statements per action of both sides, for two cases each: one graded 好, one 较好."""
    db = Database(url)
    engine_sql: list[str] = []
    dbapi: list[Any] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda _conn, _cur, sql, *_rest: engine_sql.append(sql))
    event.listen(db.engine, "connect", lambda conn, _rec: dbapi.append(conn))
    engine = Engine(db)
    engine.flow(FLOW)  # steady state: the flow is compiled and the pool holds a connection
    ceiling = Ceiling(kind, url)
    ceiling_sql: list[str] = []
    ceiling.cur = RecordingCursor(ceiling.cur, ceiling_sql)
    trace = SqliteTrace if kind == "sqlite" else PgTrace
    engine_wire, ceiling_wire = trace(dbapi[0]), trace(ceiling.conn)
    eng_plan = script(engine_cases, org, {engine_cases[0][1]})
    ceil_plan = script(ceiling_cases, org, {ceiling_cases[0][1]})
    version: dict[int, int] = {}
    out: dict[str, Captured] = {}
    try:
        for (trigger, e_steps), (_same, c_steps) in zip(eng_plan, ceil_plan, strict=True):
            for i, ((e_cid, e_pid, e_data), (c_cid, c_pid, c_data)) in enumerate(
                    zip(e_steps, c_steps, strict=True)):
                engine_sql.clear()
                ceiling_sql.clear()
                with engine_wire.record() as e_wire:
                    version[e_cid] = engine.fire(e_cid, trigger, Actor.person(e_pid), data=e_data,
                                                 expected_version=version.get(e_cid, 1)).version
                with ceiling_wire.record() as c_wire:
                    version[c_cid] = ceiling.fire(c_cid, trigger, c_pid, c_data,
                                                  version.get(c_cid, 1))
                if trigger == "approve":  # with and without the quota query
                    name = f"approve ({GOOD if i == 0 else FAIR})"
                elif i == 0:
                    name = trigger
                else:
                    continue
                out[name] = Captured(e_wire, c_wire, list(engine_sql), list(ceiling_sql))
    finally:
        ceiling.close()
        db.dispose()
    return out


def print_capture(kind: str, captured: dict[str, Captured]) -> None:
    how = "sqlite3 trace callback" if kind == "sqlite" else "libpq protocol trace"
    print(f"\n{kind}: statements per action on the wire ({how}, BEGIN and COMMIT included);")
    print("  SA = statements the engine ran through SQLAlchemy (before_cursor_execute);")
    print("  columns = whether each statement names the same tables and columns on both sides")
    print(f"  {'action':<16}{'engine':>7}{'ceiling':>8}{'SA':>4}  {'columns':<8} wire")
    for name, c in captured.items():
        print(f"  {name:<16}{len(c.engine):>7}{len(c.ceiling):>8}{len(c.engine_sql):>4}  "
              f"{c.column_difference():<8} {c.wire_difference()}")
    for name, c in captured.items():
        print(f"    {name:<14} {' → '.join(c.ceiling)}")


# --------------------------------------------------------------------------- checks and profile


def check_finished(db: Database, case_ids: list[int]) -> None:
    with db.unit_of_work(write=False) as s:
        rows = s.execute(select(Case.state, Case.version, func.count()).where(
            Case.id.in_(case_ids)).group_by(Case.state, Case.version)).all()
    if [(r.state, r.version) for r in rows] != [("approved", 5)]:
        raise RuntimeError(f"cases did not all end approved at version 5: {rows}")


def check_chains(db: Database) -> str:
    with db.unit_of_work(write=False) as s:
        cases, records, breaks = verify(s)
    if breaks:
        raise RuntimeError(f"{len(breaks)} broken hash chains, first: {breaks[0]}")
    return f"{cases} cases, {records} history records, no break"


def _where(filename: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


LAYERS = (  # (prefix of the location, layer) — first match wins
    ("sqlalchemy/sql/", "SQLAlchemy Core: building statements, cache keys, compiling"),
    ("sqlalchemy/engine/", "SQLAlchemy engine: execution context, parameters, results"),
    ("sqlalchemy/orm/", "SQLAlchemy ORM: Session, ORM-enabled selects"),
    ("sqlalchemy/pool/", "SQLAlchemy pool: checkout, pre-ping, reset"),
    ("sqlalchemy/", "SQLAlchemy other (util, dialects, events)"),
    ("psycopg/", "psycopg (Python side)"),
    ("marshmallow/", "marshmallow"),
    ("transitions/", "transitions"),
    ("workflows/", "workflows (own code)"),
)


def _layer(where: str) -> str:
    if where.startswith("psycopg/connection.py") and where.endswith("(wait)"):
        return "waiting for PostgreSQL (psycopg's wait: round trips, server work)"
    if "sqlite3." in where:
        return "sqlite3 driver and SQLite itself (C)"
    return next((name for prefix, name in LAYERS if where.startswith(prefix)),
                "stdlib and builtins (json, hashlib, datetime, …)")


def print_profile(profiler: cProfile.Profile, actions: int, top: int = 25) -> None:
    """Own time per layer, the functions with most own time, the engine's own functions."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = [(tt, ct, nc, f"{_where(fn)}:{line}({name})")
            for (fn, line, name), (_cc, nc, tt, ct, _callers) in stats.items()]
    total = sum(r[0] for r in rows)
    print(f"\n  profile: {total / actions * 1e6:.0f} µs per action under cProfile "
          f"({actions} actions; cProfile inflates Python-heavy code, compare shares)")
    layers: Counter[str] = Counter()
    for tt, _ct, _nc, where in rows:
        layers[_layer(where)] += tt
    print(f"  {'own µs':>8}{'share':>7}  layer")
    for name, tt in layers.most_common():
        print(f"  {tt / actions * 1e6:>8.1f}{tt / total:>7.0%}  {name}")
    print("  functions with the most own time, per action:")
    print(f"  {'own µs':>8}{'cum µs':>9}{'calls':>7}  function")
    for tt, ct, nc, where in sorted(rows, reverse=True)[:top]:
        print(f"  {tt / actions * 1e6:>8.1f}{ct / actions * 1e6:>9.1f}{nc / actions:>7.1f}  {where}")
    print("  workflows/ functions by cumulative time:")
    mine = [r for r in rows if r[3].startswith("workflows/")]
    for tt, ct, nc, where in sorted(mine, key=lambda r: r[1], reverse=True)[:top]:
        print(f"  {tt / actions * 1e6:>8.1f}{ct / actions * 1e6:>9.1f}{nc / actions:>7.1f}  {where}")


# --------------------------------------------------------------------------- the run


@dataclass
class Figures:
    """One side's measurements, one entry per repeat."""

    rate: list[float] = field(default_factory=list)  # actions/s
    cpu: list[float] = field(default_factory=list)  # this process's CPU µs per action
    phase: dict[str, list[float]] = field(default_factory=dict)  # µs per action of a trigger

    def add(self, times: dict[str, float], n: int) -> None:
        wall = sum(times[t] for t in TRIGGERS)
        self.rate.append(len(TRIGGERS) * n / wall)
        self.cpu.append(times["cpu"] / (len(TRIGGERS) * n) * 1e6)
        for t in TRIGGERS:
            self.phase.setdefault(t, []).append(times[t] / n * 1e6)


@dataclass
class Result:
    kind: str
    version: str
    engine: Figures = field(default_factory=Figures)
    ceiling: Figures = field(default_factory=Figures)
    chains: str = ""


def bench(kind: str, n: int, repeats: int, chunk: int, profile: bool,
          say: Callable[[str], None]) -> Result:
    with fresh_database(kind) as url:
        result = Result(kind, server_version(kind, url))
        db = Database(url)
        engine = Engine(db)
        try:
            org = build_org(db, n)
            engine.publish(DEFINITION.read_text(encoding="utf-8"), str(DEFINITION))
            pair = org.staff[:2]  # a pool of at most 2 cases per month: 好 fits its quota
            say(f"{kind}: capturing statements")
            print_capture(kind, capture(kind, url, org, start_cases(engine, pair, month(0)),
                                        start_cases(engine, pair, month(1))))
            ceiling = Ceiling(kind, url)
            try:
                for r in range(repeats):
                    say(f"{kind}: repeat {r + 1}/{repeats}: starting {2 * n} cases")
                    e_cases = start_cases(engine, org.staff, month(2 + 2 * r))
                    c_cases = start_cases(engine, org.staff, month(3 + 2 * r))
                    times = race([EngineSide(engine), CeilingSide(ceiling)],
                                 [script(e_cases, org), script(c_cases, org)], chunk)
                    result.engine.add(times["engine"], n)
                    result.ceiling.add(times["ceiling"], n)
                    say(f"{kind}: repeat {r + 1}: engine {result.engine.rate[-1]:,.0f} "
                        f"actions/s, ceiling {result.ceiling.rate[-1]:,.0f} actions/s")
                    check_finished(db, [c for c, _ in e_cases + c_cases])
            finally:
                ceiling.close()
            if profile:
                say(f"{kind}: profiling the engine on {n} more cases")
                side = EngineSide(engine)
                plan = script(start_cases(engine, org.staff, month(2 + 2 * repeats)), org)
                profiler = cProfile.Profile()
                profiler.enable()
                for trigger, steps in plan:
                    side.run(trigger, steps)
                profiler.disable()
                print(f"\n{kind}: profile of Engine.fire")
                print_profile(profiler, 4 * n)
            result.chains = check_chains(db)
        finally:
            db.dispose()
    return result


def machine(results: list[Result]) -> list[str]:
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    libpq = pq.version()
    return [
        f"date     {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine  {platform.platform()}, {platform.machine()}, nproc {ncpu}",
        f"python   {platform.python_implementation()} {platform.python_version()}; "
        f"SQLAlchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__} "
        f"({pq.__impl__}, libpq {libpq // 10000}.{libpq % 10000}), "
        f"sqlite3 module on SQLite {sqlite3.sqlite_version}",
        "database " + "; ".join(r.version for r in results),
    ]


def report(results: list[Result], n: int, repeats: int, chunk: int,
           load: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    print(f"\ncivflow engine benchmark: {n} cases × 4 actions per side and repeat, "
          f"median of {repeats} repeat(s); one thread, one connection per side, "
          f"turns of {chunk} cases")
    for line in machine(results):
        print(line)
    print("load     1/5/15-min load average: "
          + " → ".join("/".join(f"{x:.2f}" for x in avg) for avg in load) + " (start → end)")
    med = statistics.median
    print("\nreplay = the engine's own statements sent straight through the driver (not the "
          "database's limit: see the peers below)")
    print(f"{'database':<12}{'engine act/s':>14}{'replay act/s':>15}{'engine/replay':>16}"
          "   per repeat")
    for r in results:
        e, c = med(r.engine.rate), med(r.ceiling.rate)
        each = " ".join(f"{x / y:.0%}" for x, y in zip(r.engine.rate, r.ceiling.rate, strict=True))
        print(f"{r.kind:<12}{e:>14,.0f}{c:>15,.0f}{e / c:>16.0%}   {each}")
    print(f"\n{'µs per action (median)':<24}" + "".join(f"{t:>10}" for t in TRIGGERS)
          + f"{'all':>10}{'CPU here':>10}")
    for r in results:
        for side, f in (("engine", r.engine), ("ceiling", r.ceiling)):
            print(f"{r.kind + ' ' + side:<24}"
                  + "".join(f"{med(f.phase[t]):>10.0f}" for t in TRIGGERS)
                  + f"{1e6 / med(f.rate):>10.0f}{med(f.cpu):>10.0f}")
    print("(CPU here = this process's CPU time per action: Python, driver and, for SQLite, the "
          "database itself)")
    for r in results:
        print(f"hash chains on {r.kind} (engine and ceiling rows): {r.chains}")
    for r in results:
        if r.kind == "postgresql":
            ratio = med(r.engine.rate) / med(r.ceiling.rate)
            print(f"replay: the engine does {ratio:.0%} of the rate of its own statements "
                  "replayed on PostgreSQL")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--cases", type=int, default=300, metavar="N", help="cases per side (300)")
    ap.add_argument("--repeat", type=int, default=3, metavar="R", help="repeats (3)")
    ap.add_argument("--chunk", type=int, default=20, metavar="C",
                    help="cases per turn when engine and ceiling take turns (20)")
    ap.add_argument("--profile", action="store_true",
                    help="also drive N more cases under cProfile and print where the time goes")
    ap.add_argument("--baseline", default=peer_bench.DEFAULT_BASELINE, metavar="REV",
                    help="git revision whose engine the peers part runs as the baseline "
                         f"({peer_bench.DEFAULT_BASELINE})")
    ap.add_argument("--no-baseline", action="store_true", help="peers without the baseline")
    ap.add_argument("--no-peers", action="store_true",
                    help="the replay only, not the comparison with the peers")
    args = ap.parse_args(argv)
    if args.cases < 2 or args.repeat < 1 or args.chunk < 1:
        ap.error("--cases must be at least 2, --repeat and --chunk at least 1")
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    load = os.getloadavg()
    results = [bench(k, args.cases, args.repeat, args.chunk, args.profile, say) for k in kinds]
    report(results, args.cases, args.repeat, args.chunk, (load, os.getloadavg()))
    if not args.no_peers:
        if not peer_bench.spiff_available():
            print(f"\nSpiffWorkflow is not installed: its column stays empty. "
                  f"Install it with {peer_bench.INSTALL}")
        peer_bench.run(kinds, max(args.cases, 5), args.repeat,
                       None if args.no_baseline else args.baseline, say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
