"""Opening a period's cases for 100,000 people, against plain bulk inserts of the same rows.

    .venv/bin/python bench/cycle_bench.py [--people 100000] [--db postgresql|sqlite|both]
                                          [--repeat 1] [--chunk 1000] [--json PATH]

What is measured (issue 7)
    For each database a scratch database is made (PostgreSQL: ``civflow_bench_<random>``
    through ``$CIVFLOW_TEST_PG_URL`` or the local default, dropped at the end; SQLite: a
    file in a temporary directory) holding 100 units and ``--people`` active people, and
    ``definitions/regular-assessment.yaml`` (平时考核, monthly, a cycle) is published. Each
    repeat opens two months:

    engine   ``workflows.cycles.open_period`` — what the scheduler's cycle check runs: the
             claim of the period (``cycle_runs``), then chunks of ``--chunk`` people, one
             transaction each (lease renewal, keyset read of the eligible people, case ids
             drawn, cases inserted with ON CONFLICT DO NOTHING RETURNING, first history
             records with their hashes, the initial state's timers, the run's count);
    ceiling  the same rows — every column of the cases, their first history records (the
             same ``history.record_hash``) and their timers (``timers.plan_state`` /
             ``timer_rows``), plus a finished ``cycle_runs`` row — written in one
             transaction by plain bulk loading: COPY through psycopg on PostgreSQL, one
             ``executemany`` per table through ``sqlite3`` on SQLite. It reads the people
             once and skips what makes the engine safe to run on several nodes (the lease,
             the chunks, ON CONFLICT), which is why it is a ceiling.

    The two alternate which goes first from one repeat to the next. Figures: seconds and
    cases per second per side, the ratio engine / ceiling (rates), medians over repeats.

Correctness, checked on both sides' months every repeat: one case per person in the
initial state at version 1 with the state's deadline; one history record per case (seq 1,
``start`` by ``system``) whose hash is recomputed and equals the case's chain head; every
timer of the initial state armed (pending) per case; the run row ``done`` with the count.
It raises when any of that is wrong; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import statistics
import sys
import time
from dataclasses import dataclass, field

import benchlib
import psycopg
from benchlib import DEFINITIONS, libpq_url, say
from psycopg.types.json import Jsonb
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from workflows import forms
from workflows.cycles import open_period, opening_moment
from workflows.db import Database
from workflows.engine import START, Engine
from workflows.history import GENESIS, hash_of, record_hash
from workflows.machine import CompiledFlow
from workflows.models import Case, CycleRun, HistoryRecord, Person, RoleAssignment, Timer, Unit
from workflows.spec import SYSTEM
from workflows.timers import plan_state, timer_rows

FLOW = "regular-assessment"
DEFINITION = DEFINITIONS / f"{FLOW}.yaml"
UNITS = 100
HEAD = "HEAD"  # the person at the top: evaluates everyone, has no evaluator himself
CASE_COLUMNS = ("id", "flow_id", "version_id", "subject_id", "unit_id", "tier", "period_key",
                "state", "data", "version", "history_seq", "state_visit", "history_hash",
                "created_at", "updated_at", "state_entered_at", "deadline_at")
HISTORY_COLUMNS = ("case_id", "seq", "at", "actor_id", "actor_role", "trigger", "from_state",
                   "to_state", "data", "comment", "idempotency_key", "prev_hash", "hash")
TIMER_COLUMNS = ("case_id", "state_visit", "kind", "action", "due_at", "status", "attempts",
                 "dedupe_key", "payload", "created_at")


def build_org(db: Database, people: int) -> None:
    """UNITS units under a root and `people` active people, by bulk INSERT."""
    with db.unit_of_work() as s:
        conn = s.connection()
        conn.execute(insert(Unit.__table__), [{"id": 1, "code": "ROOT", "name": "部机关",
                                               "parent_id": None, "path": "/1/"}])
        conn.execute(insert(Unit.__table__), [
            {"id": u, "code": f"U{u:03d}", "name": f"第{u - 1}处", "parent_id": 1,
             "path": f"/1/{u}/"} for u in range(2, UNITS + 2)])
        conn.execute(insert(Person.__table__), [
            {"id": i, "code": f"P{i:06d}", "name": f"干部{i}", "unit_id": 2 + i % UNITS,
             "tier": ("chief", "deputy", "staff", "staff", "staff")[i % 5], "active": True}
            for i in range(1, people + 1)])
        # The head above the units: the evaluator of every case (the regular flow's
        # `evaluator` escalates to him). Nobody evaluates him, so the cycle skips him and
        # the ceiling leaves him out: `people` cases either way.
        conn.execute(insert(Person.__table__), [
            {"id": people + 1, "code": HEAD, "name": "局长", "unit_id": 1, "tier": "chief",
             "active": True}])
        conn.execute(insert(RoleAssignment.__table__), [
            {"person_id": people + 1, "unit_id": 1, "role": "leader"}])
        if db.dialect == "postgresql":
            for table in ("units", "people"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT max(id) FROM {table}))")


def month(i: int) -> str:
    return f"{2024 + i // 12}-{i % 12 + 1:02d}"  # within the official holiday data


# --------------------------------------------------------------------------- the ceiling


@dataclass
class Rows:
    """The rows a period's opening writes, computed as the engine computes them."""

    cases: list[tuple]
    history: list[tuple]
    timers: list[tuple]


def rows_for(cf: CompiledFlow, engine: Engine, key: str, at: dt.datetime,
             people: list[tuple[int, int, str]], ids: list[int]) -> Rows:
    spec = cf.spec
    values = forms.load(cf.start_schema, None)
    deadline, planned = plan_state(spec, spec.initial, at, key, engine.calendar)
    cases, history, timers = [], [], []
    for case_id, (pid, unit, tier) in zip(ids, people, strict=True):
        h = record_hash(case_id=case_id, seq=1, at=at, actor_id=None, actor_role=SYSTEM,
                        trigger=START, from_state=None, to_state=spec.initial, data=values,
                        comment=None, prev_hash=GENESIS)
        cases.append((case_id, spec.flow, cf.version_id, pid, unit, tier, key, spec.initial,
                      values, 1, 1, 1, h, at, at, at, deadline))
        history.append((case_id, 1, at, None, SYSTEM, START, None, spec.initial, values, None,
                        None, GENESIS, h))
        timers.extend(tuple(r[c] for c in TIMER_COLUMNS)
                      for r in timer_rows(case_id, 1, planned, at))
    return Rows(cases, history, timers)


def ceiling_postgresql(url: str, cf: CompiledFlow, engine: Engine, key: str,
                       at: dt.datetime) -> float:
    """The same rows by COPY, one transaction; returns the seconds spent computing them."""
    with psycopg.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        people = cur.execute(f"SELECT id, unit_id, tier FROM people WHERE active AND code <> '{HEAD}' "
                             "ORDER BY id").fetchall()
        ids = [r[0] for r in cur.execute(
            "SELECT nextval(pg_get_serial_sequence('cases', 'id')) FROM generate_series(1, %s)",
            (len(people),))]
        t0 = time.perf_counter()
        rows = rows_for(cf, engine, key, at, people, ids)
        computing = time.perf_counter() - t0
        json_at = {"cases": CASE_COLUMNS.index("data"), "history": HISTORY_COLUMNS.index("data"),
                   "timers": TIMER_COLUMNS.index("payload")}
        for table, name, columns, data in (
                ("cases", "cases", CASE_COLUMNS, rows.cases),
                ("case_history", "history", HISTORY_COLUMNS, rows.history),
                ("timers", "timers", TIMER_COLUMNS, rows.timers)):
            j = json_at[name]
            with cur.copy(f"COPY {table} ({quoted(columns)}) FROM STDIN") as cp:
                for row in data:
                    cp.write_row((*row[:j], Jsonb(row[j]), *row[j + 1:]))
        cur.execute("INSERT INTO cycle_runs (flow_id, period_key, status, opened_at, "
                    "finished_at, cases_opened) VALUES (%s, %s, 'done', %s, %s, %s)",
                    (cf.spec.flow, key, at, at, len(people)))
    return computing


def quoted(columns: tuple[str, ...]) -> str:
    return ", ".join(f'"{c}"' for c in columns)  # "trigger" is a keyword


def _sqlite_value(v):
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False)
    return v


def ceiling_sqlite(url: str, cf: CompiledFlow, engine: Engine, key: str,
                   at: dt.datetime) -> float:
    """The same rows by one executemany per table through sqlite3, one transaction;
    returns the seconds spent computing them."""
    conn = sqlite3.connect(make_url(url).database, timeout=30, isolation_level=None)
    try:
        for pragma in ("foreign_keys=ON", "busy_timeout=30000", "journal_mode=WAL",
                       "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("BEGIN IMMEDIATE")
        people = conn.execute(f"SELECT id, unit_id, tier FROM people WHERE active AND code <> '{HEAD}' "
                              "ORDER BY id").fetchall()
        top = conn.execute("SELECT coalesce(max(id), 0) FROM cases").fetchone()[0]
        t0 = time.perf_counter()
        rows = rows_for(cf, engine, key, at, people, list(range(top + 1, top + 1 + len(people))))
        computing = time.perf_counter() - t0
        for table, columns, data in (("cases", CASE_COLUMNS, rows.cases),
                                     ("case_history", HISTORY_COLUMNS, rows.history),
                                     ("timers", TIMER_COLUMNS, rows.timers)):
            conn.executemany(
                f"INSERT INTO {table} ({quoted(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                [tuple(_sqlite_value(v) for v in row) for row in data])
        conn.execute("INSERT INTO cycle_runs (flow_id, period_key, status, opened_at, "
                     "finished_at, cases_opened) VALUES (?, ?, 'done', ?, ?, ?)",
                     (cf.spec.flow, key, _sqlite_value(at), _sqlite_value(at), len(people)))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return computing


# --------------------------------------------------------------------------- checks


def check_period(db: Database, cf: CompiledFlow, engine: Engine, key: str, at: dt.datetime,
                 people: int) -> str:
    """Raise unless the period holds exactly what opening it must write."""
    spec = cf.spec
    deadline, planned = plan_state(spec, spec.initial, at, key, engine.calendar)
    problems = []
    with db.unit_of_work(write=False) as s:
        cases = s.execute(select(Case.id, Case.state, Case.version, Case.history_seq,
                                 Case.history_hash, Case.deadline_at)
                          .where(Case.flow_id == spec.flow, Case.period_key == key)).all()
        head = {c.id: c for c in cases}
        if len(cases) != people:
            problems.append(f"{len(cases)} cases, expected {people}")
        odd = [c.id for c in cases if (c.state, c.version, c.history_seq, c.deadline_at)
               != (spec.initial, 1, 1, deadline)]
        if odd:
            problems.append(f"{len(odd)} cases not in {spec.initial} at version 1 with the "
                            f"deadline {deadline}, e.g. {odd[:3]}")
        records = s.execute(select(HistoryRecord).join(Case, Case.id == HistoryRecord.case_id)
                            .where(Case.flow_id == spec.flow, Case.period_key == key)
                            ).scalars().all()
        bad = [r.case_id for r in records
               if (r.seq, r.trigger, r.actor_role, r.prev_hash) != (1, START, SYSTEM, GENESIS)
               or hash_of(r) != r.hash or head.get(r.case_id) is None
               or head[r.case_id].history_hash != r.hash]
        if len(records) != people or len({r.case_id for r in records}) != people:
            problems.append(f"{len(records)} history records, expected one for each of "
                            f"{people} cases")
        if bad:
            problems.append(f"{len(bad)} history records whose hash does not check out, "
                            f"e.g. cases {bad[:3]}")
        per_case = dict(s.execute(
            select(Timer.case_id, func.count()).join(Case, Case.id == Timer.case_id)
            .where(Case.flow_id == spec.flow, Case.period_key == key,
                   Timer.status == "pending", Timer.state_visit == 1)
            .group_by(Timer.case_id)).all())
        short = [cid for cid in head if per_case.get(cid, 0) != len(planned)]
        if short:
            problems.append(f"{len(short)} cases without their {len(planned)} pending "
                            f"timers, e.g. {short[:3]}")
        run = s.get(CycleRun, (spec.flow, key))
        if run is None or run.status != "done" or run.cases_opened != people:
            problems.append(f"cycle run {run and (run.status, run.cases_opened)}, expected "
                            f"('done', {people})")
    if problems:
        raise RuntimeError(f"period {key}: " + "; ".join(problems))
    return (f"{people:,} cases, {people:,} history records with valid hashes, "
            f"{people * len(planned):,} timers ({', '.join(p.kind for p in planned)})")


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    kind: str
    version: str
    engine: list[float] = field(default_factory=list)  # seconds per opening
    ceiling: list[float] = field(default_factory=list)
    computing: list[float] = field(default_factory=list)  # of the ceiling: rows in Python
    checks: list[str] = field(default_factory=list)

    def rate(self, side: str, people: int) -> float:
        return people / statistics.median(getattr(self, side))

    def ratio(self, people: int) -> float:
        return self.rate("engine", people) / self.rate("ceiling", people)


def bench(kind: str, people: int, repeats: int, chunk: int) -> Result:
    with benchlib.scratch_database(kind) as url:
        db = Database(url)
        engine = Engine(db)
        try:
            say(f"{kind}: {people:,} people")
            build_org(db, people)
            engine.publish(DEFINITION.read_text(encoding="utf-8"), str(DEFINITION))
            cf = engine.flow(FLOW)
            result = Result(kind, benchlib.pg_version() if kind == "postgresql"
                            else f"SQLite {sqlite3.sqlite_version}")
            ceiling = ceiling_postgresql if kind == "postgresql" else ceiling_sqlite
            for r in range(repeats):
                keys = {"engine": month(2 * r), "ceiling": month(2 * r + 1)}
                for side in ("engine", "ceiling") if r % 2 == 0 else ("ceiling", "engine"):
                    key = keys[side]
                    at = opening_moment(cf.spec, key, engine.calendar)
                    t0 = time.perf_counter()
                    if side == "engine":
                        n = open_period(engine, cf, key, at, "bench-node", chunk=chunk)
                        if n != people:
                            raise RuntimeError(f"open_period opened {n}, expected {people}")
                    else:
                        result.computing.append(ceiling(url, cf, engine, key, at))
                    seconds = time.perf_counter() - t0
                    getattr(result, side).append(seconds)
                    say(f"{kind}: repeat {r + 1} {side}: {key} in {seconds:.1f} s "
                        f"({people / seconds:,.0f} cases/s)")
                    result.checks.append(f"{side} {key}: "
                                         + check_period(db, cf, engine, key, at, people))
        finally:
            db.dispose()
    return result


def report(results: list[Result], people: int, repeats: int, chunk: int, command: str,
           load: tuple) -> None:
    print(f"\ncivflow cycle benchmark: opening one month of 平时考核 for {people:,} active "
          f"people; median of {repeats} repeat(s); engine chunks of {chunk}")
    print(f"command  {command}")
    for line in benchlib.machine_lines():
        print(line)
    print(benchlib.load_line(*load))
    med = statistics.median
    print(f"\n{'database':<12}{'engine s':>10}{'cases/s':>10}{'ceiling s':>11}{'cases/s':>10}"
          f"{'engine/ceiling':>16}{'ceiling: rows in Python':>25}")
    for r in results:
        print(f"{r.kind:<12}{med(r.engine):>10.1f}{r.rate('engine', people):>10,.0f}"
              f"{med(r.ceiling):>11.1f}{r.rate('ceiling', people):>10,.0f}"
              f"{r.ratio(people):>16.0%}{med(r.computing):>24.1f}s")
    print("(ceiling: the same rows by COPY on PostgreSQL / one executemany per table on "
          "SQLite, one transaction, no lease, chunks or ON CONFLICT; of its time, the last "
          "column computed the rows — hashes, timers — in Python, as the engine also does)")
    for r in results:
        for line in r.checks:
            print(f"checked  {r.kind} {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--people", type=int, default=100_000)
    ap.add_argument("--db", choices=("postgresql", "sqlite", "both"), default="both")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=1000, help="people per transaction (1000)")
    ap.add_argument("--json", default=None, help="write a summary for run_all.py here")
    args = ap.parse_args(argv)
    if args.people < 1 or args.repeat < 1 or args.chunk < 1:
        ap.error("--people, --repeat and --chunk must be at least 1")
    command = benchlib.command_line("bench/cycle_bench.py", argv)
    kinds = ("postgresql", "sqlite") if args.db == "both" else (args.db,)
    load = os.getloadavg()
    results = [bench(k, args.people, args.repeat, args.chunk) for k in kinds]
    load = (load, os.getloadavg())
    report(results, args.people, args.repeat, args.chunk, command, load)
    med = statistics.median
    benchlib.write_summary(args.json, "cycle", [
        {"what": f"open a period, {args.people:,} people, {r.kind}",
         "value": round(r.rate("engine", args.people)), "ceiling":
         round(r.rate("ceiling", args.people)), "ratio": round(r.ratio(args.people), 3),
         "unit": "cases/s", "note": f"{med(r.engine):.1f} s vs {med(r.ceiling):.1f} s"}
        for r in results], command, load, True,
        [f"checked {r.kind} {c}" for r in results for c in r.checks])
    return 0


if __name__ == "__main__":
    sys.exit(main())
