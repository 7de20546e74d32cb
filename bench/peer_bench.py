"""civflow against a peer engine (SpiffWorkflow), the database's own limit and an older civflow.

    .venv/bin/python bench/peer_bench.py [--db sqlite|postgresql|both] [--cases N]
                                         [--repeat R] [--baseline REV | --no-baseline]
    make bench          # bench/engine_bench.py, which ends with this comparison

What is measured
    The regular assessment (平时考核) of four steps, driven the same way by four sides:
    N cases are started, then every case is moved submit (the subject, with a summary) →
    evaluate (the leader, with a grade) → accept (the subject) → approve (the committee),
    phase by phase, one transaction per start and per step, one thread, one connection.
    Each side runs in its own process on a database of its own, made for the run on the
    same server (PostgreSQL: a scratch database ``civflow_bench_<random>`` through the admin
    URL ``$CIVFLOW_TEST_PG_URL`` or the local default, with the server's durability:
    fsync and synchronous_commit on; SQLite: a file in a temporary directory with the
    settings ``workflows.db`` uses, journal_mode=WAL and synchronous=NORMAL, for every
    side). Ten warm-up cases go through each side untimed first. Two figures per side:

    - fire-only: the 4 × N steps per second;
    - start+fire: the N starts and 4 × N steps together, transactions per second (a start
      counts as one, like a step).

    The sides take turns, repeat after repeat, in an order that rotates with the repeat;
    the figures are medians over the R repeats, and the ratios are of those medians.

    civflow: ``Engine.start_case`` and ``Engine.fire(case, trigger, Actor.person(p),
    data=…, expected_version=v)`` — what the service calls — on a migrated database with
    ``definitions/regular-assessment.yaml`` published and an organisation of a leader, a
    committee member and N staff in six units; at most 40 % of each unit's cases are graded
    好, so the quota rule runs its query on approval and never refuses.

    baseline: the same civflow workload with the engine of a git revision (default
    45d2e57, main when issue 12 was filed): ``git archive REV`` into a temporary directory,
    and this script's civflow side run there in a subprocess with PYTHONPATH set to it, on
    a database migrated by that revision's own migrations (its indexes). civflow/baseline
    is then a ratio from one run, on the same machine in the same minutes.

    SpiffWorkflow: ``bench/peer/regular.bpmn``, the same four steps as four BPMN user tasks
    (SpiffWorkflow 3, the ``bench`` extra). The spec is parsed once per process, as civflow
    compiles a flow once. What a Spiff user does to keep a workflow between requests, and
    spiff-arena does after each step: per start, build the workflow, run its engine steps,
    serialize it with Spiff's JSON serializer (``BpmnWorkflowSerializer`` with the spiff
    config) and INSERT it with a log row; per step, in one transaction (BEGIN IMMEDIATE on
    SQLite, as civflow), SELECT the serialized workflow and its version, deserialize it,
    complete the one ready user task with the step's data, run the engine steps, serialize,
    ``UPDATE … SET serialized, version = version + 1 WHERE id AND version`` (the same
    optimistic check civflow makes) and INSERT a log row (workflow, task, data, time),
    then COMMIT. The serialization is stored as TEXT (cheaper for the database than
    civflow's JSONB); its size is printed.

    raw SQL — the database's limit for this work: on civflow's real tables (migrated, flow
    published, same organisation), from Python straight through ``psycopg`` 3 or
    ``sqlite3`` on one connection, per start ``INSERT INTO cases … RETURNING id`` and
    ``INSERT INTO case_history …``, per step ``UPDATE cases SET state, data, version,
    history_seq, history_hash, updated_at, state_entered_at, state_visit, deadline_at
    WHERE id AND version`` and ``INSERT INTO case_history …`` — one transaction each, the
    values prepared in plain Python (the merged data as JSON, the sha256 chain hash). It
    reads nothing and checks nothing: no role, no rule, no timer; it is what the database
    does for the rows an action must write, with one client and synchronous commit.

Fairness notes
    civflow does more per step than Spiff here: it checks the actor's role on the unit's
    ancestors, the quota rule, the case version, keeps a hash-chained history and plans the
    state's deadline and timers (rows in ``timers``); the BPMN has no lanes, rules or
    timers. Spiff stores its whole serialized workflow (spec included, as
    ``serialize_json`` does) and has no history of its own but the log row written here.
    civflow's figure includes its own overhead (SQLAlchemy session and pool, marshmallow,
    the ``transitions`` machine); the raw SQL side has none of it. The existing replay in
    ``bench/engine_bench.py`` (“replay”) sends civflow's own statements and is not the
    database's limit; this raw SQL side is.

This is a benchmark, not a test: it never asserts on timings. It raises only when the
work itself goes wrong (a refused step, a case or workflow not finished, missing rows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BPMN = ROOT / "bench" / "peer" / "regular.bpmn"
DEFINITION = ROOT / "definitions" / "regular-assessment.yaml"
FLOW = "regular-assessment"
DEFAULT_BASELINE = "45d2e57"
INSTALL = ("pip install -e '.[bench]'  (or: pip install 'SpiffWorkflow>=3.1,<4')")
SIDES = ("civflow", "spiff", "raw", "baseline")
TITLES = {"civflow": "civflow", "spiff": "SpiffWorkflow", "raw": "raw SQL",
          "baseline": "baseline"}
TIMINGS = ("fire-only", "start+fire")
TRIGGERS = ("submit", "evaluate", "accept", "approve")
UNITS = 6
RATIO = 0.4  # the regular flow's quota: 好 at most 40 % of a pool
GOOD, FAIR = "好", "较好"
WARMUP = 10
SUMMARY = ("本月完成干部档案专项审核 230 卷，参与年度考核方案起草，按时报送人员统计报表；"
           "下月重点推进档案数字化和任前审核流程规范。")
# The flow's states, as the raw SQL side writes them (definitions/regular-assessment.yaml).
STATES = {"submit": ("summary", "evaluation"), "evaluate": ("evaluation", "feedback"),
          "accept": ("feedback", "approval"), "approve": ("approval", "approved")}
ROLES = {"submit": "subject", "evaluate": "leader", "accept": "subject",
         "approve": "committee"}


def spiff_available() -> bool:
    try:
        import SpiffWorkflow  # noqa: F401
    except ImportError:
        return False
    return True


def step_data(trigger: str, good: bool) -> dict[str, Any] | None:
    if trigger == "submit":
        return {"summary": SUMMARY}
    if trigger == "evaluate":
        return {"grade": GOOD if good else FAIR}
    return None


@dataclass
class Timed:
    """One side's run: seconds spent starting and stepping, and what it checked."""

    start: float = 0.0
    fire: float = 0.0
    n: int = 0
    check: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fire_rate(self) -> float:
        return 4 * self.n / self.fire

    @property
    def total_rate(self) -> float:
        return 5 * self.n / (self.start + self.fire)


# --------------------------------------------------------------------------- civflow side


def civflow_side(url: str, n: int) -> Timed:
    """The engine's API, as the service calls it (also the baseline's, run in its tree)."""
    from sqlalchemy import func, select

    from workflows.db import Database, upgrade
    from workflows.engine import Actor, Engine
    from workflows.models import Case
    from workflows.org import add_person, add_unit, assign_role

    upgrade(url)
    db = Database(url)
    try:
        engine = Engine(db)
        # The definition of the code under test (the baseline's own, in its tree).
        definition = Path(sys.modules[Engine.__module__].__file__).parent.parent / \
            "definitions" / DEFINITION.name
        engine.publish(definition.read_text(encoding="utf-8"), str(definition))
        total = n + WARMUP
        with db.unit_of_work() as s:
            root = add_unit(s, "ORG", "部机关")
            units = [add_unit(s, f"SEC{i + 1}", f"干部{i + 1}科", root) for i in range(UNITS)]
            leader = add_person(s, "LEADER", "主管领导", root, "chief")
            committee = add_person(s, "COMMITTEE", "审定委员", root, "staff")
            assign_role(s, leader, "leader", root)
            assign_role(s, committee, "committee", root)
            members: list[list[int]] = [[] for _ in units]
            for i in range(total):
                members[i % UNITS].append(
                    add_person(s, f"S{i:05d}", f"干部{i}", units[i % UNITS], "staff").id)
            leader_id, committee_id = leader.id, committee.id
        good = {p for pool in members for p in pool[:int(len(pool) * RATIO)]}
        staff = [p for pool in members for p in pool]
        actor_of = {"evaluate": Actor.person(leader_id), "approve": Actor.person(committee_id)}
        people = {p: Actor.person(p) for p in staff}

        def drive(subjects: list[int], period: str) -> tuple[float, float, list[int]]:
            t0 = time.perf_counter()
            cases = [(engine.start_case(FLOW, p, period_key=period).id, p) for p in subjects]
            started = time.perf_counter() - t0
            fired = 0.0
            for v, trigger in enumerate(TRIGGERS, start=1):
                t0 = time.perf_counter()
                for cid, p in cases:
                    engine.fire(cid, trigger, actor_of.get(trigger) or people[p],
                                data=step_data(trigger, p in good), expected_version=v)
                fired += time.perf_counter() - t0
            return started, fired, [c for c, _ in cases]

        warm = staff[::max(1, total // WARMUP)][:WARMUP]
        # Months of a year the holiday library covers, as real periods are: deadlines
        # count working days on the official calendar.
        drive(warm, "2025-11")
        started, fired, ids = drive(staff[:n], "2025-12")
        with db.unit_of_work(write=False) as s:
            rows = s.execute(select(Case.state, Case.version, func.count()).where(
                Case.id.in_(ids)).group_by(Case.state, Case.version)).all()
        if [(r[0], r[1], r[2]) for r in rows] != [("approved", 5, n)]:
            raise RuntimeError(f"civflow: cases did not all end approved at version 5: {rows}")
        return Timed(started, fired, n, f"{n} cases approved at version 5")
    finally:
        db.dispose()


# --------------------------------------------------------------------------- SpiffWorkflow


SPIFF_TABLES = {
    "sqlite": ["CREATE TABLE spiff_workflow (id INTEGER PRIMARY KEY, subject TEXT NOT NULL, "
               "serialized TEXT NOT NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL)",
               "CREATE TABLE spiff_log (id INTEGER PRIMARY KEY, workflow_id INTEGER NOT NULL "
               "REFERENCES spiff_workflow(id), task TEXT NOT NULL, data TEXT, at TEXT NOT NULL)",
               "CREATE INDEX ix_spiff_log_workflow_id ON spiff_log (workflow_id)"],
    "postgresql": ["CREATE TABLE spiff_workflow (id serial PRIMARY KEY, subject text NOT NULL, "
                   "serialized text NOT NULL, version integer NOT NULL, "
                   "updated_at timestamptz NOT NULL)",
                   "CREATE TABLE spiff_log (id serial PRIMARY KEY, workflow_id integer NOT NULL "
                   "REFERENCES spiff_workflow(id), task text NOT NULL, data text, "
                   "at timestamptz NOT NULL)",
                   "CREATE INDEX ix_spiff_log_workflow_id ON spiff_log (workflow_id)"],
}


class Store:
    """One DBAPI connection with civflow's settings; `tx()` is one transaction."""

    def __init__(self, kind: str, url: str):
        self.kind = kind
        if kind == "sqlite":
            self.conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
            self.conn.isolation_level = None  # BEGIN IMMEDIATE ourselves, as workflows.db does
            for pragma in ("foreign_keys=ON", "busy_timeout=30000", "journal_mode=WAL",
                           "synchronous=NORMAL"):
                self.conn.execute(f"PRAGMA {pragma}")
            self.p = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(libpq(url))
            self.p = "%s"
        self.cur = self.conn.cursor()

    def sql(self, text: str) -> str:
        return text.replace("?", self.p)

    @contextmanager
    def tx(self) -> Iterator[Any]:
        if self.kind == "sqlite":
            self.cur.execute("BEGIN IMMEDIATE")
        try:
            yield self.cur
        except BaseException:
            if self.kind == "sqlite":
                self.cur.execute("ROLLBACK")
            else:
                self.conn.rollback()
            raise
        if self.kind == "sqlite":
            self.cur.execute("COMMIT")
        else:
            self.conn.commit()

    def close(self) -> None:
        self.conn.close()


def now_value(kind: str) -> Any:
    moment = dt.datetime.now(dt.UTC)
    return moment.isoformat() if kind == "sqlite" else moment


def spiff_side(kind: str, url: str, n: int) -> Timed:
    """SpiffWorkflow 3, the workflow serialized and stored after every step."""
    from SpiffWorkflow.bpmn import BpmnWorkflow
    from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
    from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
    from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
    from SpiffWorkflow.util.task import TaskState

    parser = SpiffBpmnParser()
    parser.add_bpmn_file(str(BPMN))
    spec = parser.get_spec("regular")
    serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))
    store = Store(kind, url)
    with store.tx() as cur:
        for ddl in SPIFF_TABLES[kind]:
            cur.execute(ddl)
    insert_wf = store.sql("INSERT INTO spiff_workflow (subject, serialized, version, updated_at)"
                          " VALUES (?, ?, 1, ?) RETURNING id")
    insert_log = store.sql("INSERT INTO spiff_log (workflow_id, task, data, at) "
                           "VALUES (?, ?, ?, ?)")
    load = store.sql("SELECT serialized, version FROM spiff_workflow WHERE id = ?")
    save = store.sql("UPDATE spiff_workflow SET serialized = ?, version = version + 1, "
                     "updated_at = ? WHERE id = ? AND version = ?")
    sizes: list[int] = []

    def start(subject: str) -> int:
        with store.tx() as cur:
            wf = BpmnWorkflow(spec)
            wf.do_engine_steps()
            cur.execute(insert_wf, (subject, serializer.serialize_json(wf), now_value(kind)))
            wid = cur.fetchone()[0]
            cur.execute(insert_log, (wid, "start", None, now_value(kind)))
        return wid

    def step(wid: int, trigger: str, data: dict[str, Any] | None) -> None:
        with store.tx() as cur:
            cur.execute(load, (wid,))
            serialized, version = cur.fetchone()
            wf = serializer.deserialize_json(serialized)
            ready = wf.get_tasks(state=TaskState.READY, manual=True)
            if [t.task_spec.name for t in ready] != [trigger]:
                raise RuntimeError(f"spiff: workflow {wid} is not ready for {trigger}: "
                                   f"{[t.task_spec.name for t in ready]}")
            task = ready[0]
            if data:
                task.data.update(data)
            task.run()
            wf.do_engine_steps()
            out = serializer.serialize_json(wf)
            sizes.append(len(out))
            cur.execute(save, (out, now_value(kind), wid, version))
            if cur.rowcount != 1:
                raise RuntimeError(f"spiff: workflow {wid} changed under us")
            cur.execute(insert_log, (wid, trigger, json.dumps(data, ensure_ascii=False)
                                     if data else None, now_value(kind)))

    def drive(count: int, tag: str) -> tuple[float, float, list[int]]:
        t0 = time.perf_counter()
        ids = [start(f"{tag}-{i}") for i in range(count)]
        started = time.perf_counter() - t0
        fired = 0.0
        for trigger in TRIGGERS:
            t0 = time.perf_counter()
            for i, wid in enumerate(ids):
                step(wid, trigger, step_data(trigger, i % 5 < 2))
            fired += time.perf_counter() - t0
        return started, fired, ids

    try:
        drive(WARMUP, "warm")
        sizes.clear()
        started, fired, ids = drive(n, "run")
        done = 0
        for wid in ids:
            store.cur.execute(load, (wid,))
            serialized, version = store.cur.fetchone()
            done += serializer.deserialize_json(serialized).is_completed() and version == 5
        store.cur.execute("SELECT count(*) FROM spiff_log")
        logs = store.cur.fetchone()[0]
        if done != n or logs != 5 * (n + WARMUP):
            raise RuntimeError(f"spiff: {done} of {n} workflows completed, {logs} log rows")
        return Timed(started, fired, n, f"{n} workflows completed at version 5, {logs} log rows",
                     {"serialized_bytes": statistics.median(sizes)})
    finally:
        store.close()


# --------------------------------------------------------------------------- raw SQL


CASE_INSERT = ("INSERT INTO cases (flow_id, version_id, subject_id, unit_id, tier, period_key, "
               "state, data, version, history_seq, state_visit, history_hash, created_at, "
               "updated_at, state_entered_at) VALUES (?, ?, ?, ?, 'staff', ?, 'summary', ?, 1, "
               "1, 1, ?, ?, ?, ?) RETURNING id")
CASE_UPDATE = ("UPDATE cases SET state = ?, data = ?, version = ?, history_seq = ?, "
               "history_hash = ?, updated_at = ?, state_entered_at = ?, state_visit = ?, "
               "deadline_at = ?, closed_at = ? WHERE id = ? AND version = ?")
HISTORY_INSERT = ("INSERT INTO case_history (case_id, seq, at, actor_id, actor_role, trigger, "
                  "from_state, to_state, data, comment, idempotency_key, request_hash, "
                  "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?)")


def raw_side(kind: str, url: str, n: int) -> Timed:
    """UPDATE + INSERT per step on civflow's tables, straight through the driver."""
    from workflows.db import Database, upgrade
    from workflows.engine import Engine
    from workflows.org import add_person, add_unit

    upgrade(url)
    db = Database(url)
    try:
        version_id = Engine(db).publish(DEFINITION.read_text(encoding="utf-8"),
                                        str(DEFINITION)).version_id
        with db.unit_of_work() as s:
            root = add_unit(s, "ORG", "部机关")
            units = [add_unit(s, f"SEC{i + 1}", f"干部{i + 1}科", root) for i in range(UNITS)]
            leader = add_person(s, "LEADER", "主管领导", root, "chief").id
            committee = add_person(s, "COMMITTEE", "审定委员", root, "staff").id
            staff = [(add_person(s, f"S{i:05d}", f"干部{i}", units[i % UNITS], "staff").id,
                      units[i % UNITS].id) for i in range(n + WARMUP)]
    finally:
        db.dispose()
    store = Store(kind, url)
    pg = kind == "postgresql"
    if pg:
        from psycopg.types.json import Jsonb
    case_insert, case_update, history_insert = (store.sql(q) for q in (CASE_INSERT, CASE_UPDATE,
                                                                       HISTORY_INSERT))
    actor_of = {"evaluate": leader, "approve": committee}

    def js(value: dict[str, Any]) -> Any:
        return Jsonb(value) if pg else json.dumps(value, ensure_ascii=False)

    def chain(prev: str, record: str) -> str:
        return hashlib.sha256((prev + record).encode()).hexdigest()

    def drive(people: list[tuple[int, int]], period: str
              ) -> tuple[float, float, list[tuple[int, int, str, dict[str, Any]]]]:
        cases = []
        t0 = time.perf_counter()
        for pid, unit in people:
            at = now_value(kind)
            h = chain("", f"{pid}|start")
            with store.tx() as cur:
                cur.execute(case_insert, (FLOW, version_id, pid, unit, period, js({}), h,
                                          at, at, at))
                cid = cur.fetchone()[0]
                cur.execute(history_insert, (cid, 1, at, None, "system", "start", None,
                                             "summary", js({}), "", h))
            cases.append([cid, pid, h, {}])
        started = time.perf_counter() - t0
        fired = 0.0
        for v, trigger in enumerate(TRIGGERS, start=1):
            src, dst = STATES[trigger]
            t0 = time.perf_counter()
            for i, case in enumerate(cases):
                cid, pid, prev, data = case
                step = step_data(trigger, i % 5 < 2) or {}
                data = {**data, **step}
                at = now_value(kind)
                h = chain(prev, f"{cid}|{v + 1}|{trigger}|{json.dumps(step)}")
                with store.tx() as cur:
                    cur.execute(case_update, (dst, js(data), v + 1, v + 1, h, at, at, v + 1,
                                              None, at if trigger == "approve" else None,
                                              cid, v))
                    if cur.rowcount != 1:
                        raise RuntimeError(f"raw: case {cid} is not at version {v}")
                    cur.execute(history_insert, (cid, v + 1, at, actor_of.get(trigger, pid),
                                                 ROLES[trigger], trigger, src, dst, js(step),
                                                 prev, h))
                case[2], case[3] = h, data
            fired += time.perf_counter() - t0
        return started, fired, cases

    try:
        drive(staff[:WARMUP], "2025-11")
        started, fired, cases = drive(staff[WARMUP:], "2025-12")
        ids = [c[0] for c in cases]
        store.cur.execute(store.sql(
            "SELECT count(*) FROM cases WHERE state = 'approved' AND version = 5 "
            "AND id >= ? AND id <= ?"), (min(ids), max(ids)))
        approved = store.cur.fetchone()[0]
        store.cur.execute("SELECT count(*) FROM case_history")
        records = store.cur.fetchone()[0]
        if approved != n or records != 5 * (n + WARMUP):
            raise RuntimeError(f"raw: {approved} of {n} cases approved, {records} records")
        return Timed(started, fired, n, f"{n} cases approved at version 5, {records} records")
    finally:
        store.close()


# --------------------------------------------------------------------------- one side, here


def libpq(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq URL."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def run_side(side: str, kind: str, url: str, n: int) -> Timed:
    if side in ("civflow", "baseline"):
        return civflow_side(url, n)
    if side == "spiff":
        return spiff_side(kind, url, n)
    return raw_side(kind, url, n)


# --------------------------------------------------------------------------- orchestration


@dataclass
class Rates:
    fire: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    hot: list[tuple[int, int]] = field(default_factory=list)  # (updates, HOT) of `cases`

    def median(self, timing: str) -> float:
        return statistics.median(self.fire if timing == "fire-only" else self.total)


@dataclass
class Comparison:
    kind: str
    n: int
    repeats: int
    baseline: str | None
    rates: dict[str, Rates] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # side -> why it did not run


def checkout(rev: str, into: Path) -> str:
    """`git archive` of `rev` into `into`; the revision's short hash."""
    short = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True,
                           capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return short


def hot_counts(url: str) -> tuple[int, int]:
    """Updates and HOT updates of `cases` in a PostgreSQL database so far."""
    import psycopg

    with psycopg.connect(libpq(url), autocommit=True) as conn:
        for _ in range(20):  # the side's backends report their counts when they exit
            row = conn.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                               "WHERE relname = 'cases'").fetchone()
            if row and row[0]:
                return int(row[0]), int(row[1])
            time.sleep(0.25)
            conn.execute("SELECT pg_stat_clear_snapshot()")
    return 0, 0


def spawn(side: str, kind: str, url: str, n: int, code_root: Path) -> Timed:
    """Run one side in a fresh process whose `workflows` is the one under `code_root`."""
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--url", url,
           "--kind", kind, "--cases", str(n)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=code_root)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} on {kind} failed:\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Timed(**data)


def compare(kind: str, n: int, repeats: int, baseline: str | None,
            say: Callable[[str], None]) -> Comparison:
    import benchlib

    result = Comparison(kind, n, repeats, None)
    sides = ["civflow", "raw"]
    if spiff_available():
        sides.append("spiff")
    else:
        result.missing["spiff"] = f"SpiffWorkflow is not installed: {INSTALL}"
    with tempfile.TemporaryDirectory(prefix="civflow_peer_") as tmp:
        roots = dict.fromkeys(("civflow", "raw", "spiff"), ROOT)
        if baseline:
            try:
                result.baseline = checkout(baseline, Path(tmp))
                roots["baseline"] = Path(tmp)
                sides.append("baseline")
            except (subprocess.CalledProcessError, OSError) as exc:
                result.missing["baseline"] = f"git archive {baseline} failed: {exc}"
        for r in range(repeats):
            turn = sides[r % len(sides):] + sides[:r % len(sides)]
            for side in turn:
                say(f"peers: {kind} repeat {r + 1}/{repeats}: {TITLES[side]}, {n} cases")
                with scratch(kind, benchlib) as url:
                    timed = spawn(side, kind, url, n, roots[side])
                    rates = result.rates.setdefault(side, Rates())
                    rates.fire.append(timed.fire_rate)
                    rates.total.append(timed.total_rate)
                    rates.checks.append(timed.check)
                    rates.extra.update(timed.extra)
                    if kind == "postgresql" and side in ("civflow", "baseline"):
                        rates.hot.append(hot_counts(url))
    return result


@contextmanager
def scratch(kind: str, benchlib: Any) -> Iterator[str]:
    """An empty database (not migrated: each side migrates with its own code)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="civflow_peer_db_") as tmp:
            yield f"sqlite:///{tmp}/peer.db"
        return
    name = f"civflow_bench_{uuid.uuid4().hex[:10]}"
    benchlib.create_database(name)
    try:
        yield benchlib.pg_url(name)
    finally:
        benchlib.drop_database(name)


def ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}"


def report(results: list[Comparison]) -> None:
    """The table `bench/run_all.py` reads, then the targets of issue 12."""
    if not results:
        return
    first = results[0]
    base = f"baseline {first.baseline}" if first.baseline else "baseline"
    print(f"\ncivflow against its peers: {first.n} cases × (start + 4 steps) per side and "
          f"repeat, median of {first.repeats} repeat(s); one thread, one connection, each side "
          "in its own process and database")
    print("peers    SpiffWorkflow = bench/peer/regular.bpmn, serialized workflow stored after "
          "every step; raw SQL = UPDATE cases + INSERT case_history per step from Python "
          f"(the database's limit); {base} = civflow's engine at that git revision")
    head = (f"{'peer database':<16}{'timing':<12}{'civflow':>9}{'Spiff':>9}{'raw SQL':>9}"
            f"{'baseline':>10}{'c/Spiff':>9}{'c/raw':>8}{'c/base':>8}")
    print("\n" + head)
    for r in results:
        for timing in TIMINGS:
            med = {s: (r.rates[s].median(timing) if s in r.rates else None) for s in SIDES}
            cells = "".join(f"{med[s]:>{w},.0f}" if med[s] else f"{'—':>{w}}"
                            for s, w in (("civflow", 9), ("spiff", 9), ("raw", 9),
                                         ("baseline", 10)))
            print(f"{'peer ' + r.kind:<16}{timing:<12}{cells}"
                  f"{ratio(med['civflow'], med['spiff']):>9}{ratio(med['civflow'], med['raw']):>8}"
                  f"{ratio(med['civflow'], med['baseline']):>8}")
    print("(per second: steps for fire-only; starts and steps together for start+fire; "
          "c/x = civflow's median over x's median)")
    for r in results:
        for side, why in r.missing.items():
            print(f"not run on {r.kind}: {TITLES[side]}: {why}")
        spiff = r.rates.get("spiff")
        if spiff and spiff.extra.get("serialized_bytes"):
            print(f"SpiffWorkflow on {r.kind}: the stored workflow is "
                  f"{spiff.extra['serialized_bytes']:,.0f} bytes (median)")
        for side in ("civflow", "baseline"):
            rates = r.rates.get(side)
            if rates and rates.hot:
                upd, hot = rates.hot[-1]
                print(f"HOT updates of cases on {r.kind}, {TITLES[side]}: {hot:,} of {upd:,} "
                      f"({hot / upd if upd else 0:.0%})")
        for side, rates in r.rates.items():
            print(f"checked on {r.kind}, {TITLES[side]}: {rates.checks[-1]}")
    verdicts(results)


def verdicts(results: list[Comparison]) -> None:
    def med(r: Comparison, side: str, timing: str = "fire-only") -> float | None:
        return r.rates[side].median(timing) if side in r.rates else None

    targets = []
    for r in results:
        c = med(r, "civflow")
        if r.kind == "postgresql":
            targets += [("PostgreSQL fire-only ≥ 2× the baseline engine", c, med(r, "baseline"),
                         2.0),
                        ("PostgreSQL fire-only ≥ 1.5× SpiffWorkflow", c, med(r, "spiff"), 1.5),
                        ("PostgreSQL fire-only ≥ 50% of raw UPDATE + INSERT", c, med(r, "raw"),
                         0.5)]
        else:
            targets.append(("SQLite fire-only ≥ 1.5× SpiffWorkflow", c, med(r, "spiff"), 1.5))
    for what, mine, theirs, goal in targets:
        if not mine or not theirs:
            print(f"target (issue 12): {what}: not measured")
            continue
        verdict = "reached" if mine / theirs >= goal else "NOT reached"
        print(f"target (issue 12): {what}: {verdict} ({mine / theirs:.2f}×)")


def summary_rows(results: list[Comparison]) -> list[dict[str, Any]]:
    """The figures as rows for `bench/run_all.py`."""
    rows = []
    for r in results:
        for timing in TIMINGS:
            c = r.rates.get("civflow")
            if c is None:
                continue
            for side in ("spiff", "raw", "baseline"):
                other = r.rates.get(side)
                if other is None:
                    continue
                name = f"{TITLES[side]} {r.baseline}" if side == "baseline" else TITLES[side]
                rows.append({"what": f"civflow vs {name}, {r.kind}, {timing}",
                             "value": round(c.median(timing)),
                             "ceiling": round(other.median(timing)),
                             "ratio": round(c.median(timing) / other.median(timing), 2),
                             "unit": "actions/s" if timing == "fire-only" else "transactions/s",
                             "note": f"median of {len(c.fire)}"})
    return rows


def run(kinds: tuple[str, ...], n: int, repeats: int, baseline: str | None,
        say: Callable[[str], None]) -> list[Comparison]:
    results = [compare(k, n, repeats, baseline, say) for k in kinds]
    report(results)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--cases", type=int, default=300, metavar="N", help="cases per side (300)")
    ap.add_argument("--repeat", type=int, default=3, metavar="R", help="repeats (3)")
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, metavar="REV",
                    help=f"git revision whose engine is the baseline ({DEFAULT_BASELINE})")
    ap.add_argument("--no-baseline", action="store_true", help="leave the baseline out")
    ap.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one side, in a child
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--kind", choices=("sqlite", "postgresql"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        timed = run_side(args.side, args.kind, args.url, args.cases)
        print(json.dumps(timed.__dict__))
        return 0
    if args.cases < 5 or args.repeat < 1:
        ap.error("--cases must be at least 5 and --repeat at least 1")
    import benchlib

    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    if not spiff_available():
        print(f"SpiffWorkflow is not installed; the peer column stays empty. {INSTALL}")
    run(kinds, args.cases, args.repeat, None if args.no_baseline else args.baseline,
        benchlib.say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
