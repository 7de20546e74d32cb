"""The engine's structure and its action path (issue 12): capability modules that import
each other in no circle, one writer of history records, one unit of work per entrance, and
a pooled connection found dead (the server restarted) replaced without a pre-ping.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from workflows.db import Database, Work
from workflows.engine import Actor, Engine
from workflows.errors import DuplicateCase
from workflows.history import GENESIS, Entry, verify
from workflows.models import Case, HistoryRecord, Timer
from workflows.org import add_person, add_unit, assign_role
from workflows.timers import SHOWN_STATUS

from .conftest import REGULAR, ROOT

P = Actor.person
WORKFLOWS = ROOT / "workflows"
# The engine's capability modules: the facade and what it delegates to, and the two
# workers that enter the kernel (timers, cycles).
CAPABILITIES = {"engine", "core", "versions", "kernel", "history", "reads", "timers", "cycles",
                "db"}


def _imports(path: Path, lazy: bool) -> set[str]:
    """The workflows modules `path` imports (not under TYPE_CHECKING; with `lazy`, also the
    imports inside functions, which run too, only later)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                for n in node.orelse:
                    self.visit(n)
                return
            self.generic_visit(node)

        def visit_FunctionDef(self, node: ast.AST) -> None:
            if lazy:
                self.generic_visit(node)

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(a.name for a in node.names)
            elif node.module and node.module.startswith("workflows."):
                found.add(node.module.split(".")[1])

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_workflows_module_imports_another_in_a_circle():
    modules = {p.stem: p for p in WORKFLOWS.glob("*.py")}
    top_level = {m: _imports(p, lazy=False) & set(modules) for m, p in modules.items()}
    assert _cycles(top_level) == []
    # The engine's own modules not even through an import inside a function (the timer
    # worker once reached the engine that way, and the engine the timer module).
    with_lazy = {m: _imports(modules[m], lazy=True) & CAPABILITIES for m in CAPABILITIES}
    assert _cycles(with_lazy) == []


@pytest.mark.parametrize("module", sorted(CAPABILITIES))
def test_each_engine_module_imports_on_its_own(module):
    done = subprocess.run([sys.executable, "-c", f"import workflows.{module}"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_history_records_have_one_writer():
    """Only `workflows/history.py` inserts history records or computes their hashes: start,
    fire, bulk, claims, timers, cycles (and migrations) all write through it."""
    writes = re.compile(r"insert\(HISTORY|HISTORY\.insert\(|INSERT INTO case_history|"
                        r"[^s ]HistoryRecord\(|record_hash\(|\binsert\(HistoryRecord")
    offenders = sorted(p.name for p in WORKFLOWS.glob("*.py")
                       if p.name != "history.py" and writes.search(p.read_text("utf-8")))
    assert offenders == []


def test_an_entry_chains_from_its_head_and_is_written_once(engine, org, regular, db):
    case = engine.start_case("regular-assessment", org.s1, period_key="2026-11")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "小结"})
    with db.unit_of_work(write=False) as s:
        first, second = s.execute(select(HistoryRecord).where(
            HistoryRecord.case_id == case.id).order_by(HistoryRecord.seq)).scalars()
        head = Entry.first(case.id, at=first.at, actor_id=None, actor_role="system",
                           trigger="start", to_state="summary", data={})
        assert head.hash == first.hash == second.prev_hash
        assert verify(s) == (1, 2, [])


def test_chinese_is_stored_as_itself_not_as_escapes(engine, org, regular, db):
    """The case's data and its record keep 小结 legible in the database (on SQLite the
    JSON text itself; a third of the bytes of `\\u5c0f\\u7ed3`)."""
    case = engine.start_case("regular-assessment", org.s1, period_key="2026-11")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "小结"})
    cast = "::text" if db.dialect == "postgresql" else ""
    with db.unit_of_work(write=False) as s:
        stored = s.execute(text(f"SELECT c.data{cast}, h.data{cast} FROM cases c JOIN "
                                f"case_history h ON h.case_id = c.id AND h.seq = 2 "
                                f"WHERE c.id = {case.id}")).one()
    assert all("小结" in t and "\\u" not in t for t in stored), stored
    assert engine.get_case(case.id).data["summary"] == "小结"


def test_claims_and_timers_go_through_the_one_writer(engine, org, regular, db):
    """A claim and a state change write head, record and timers together; the record's
    version and seq agree with the case's."""
    case = engine.start_case("regular-assessment", org.s1, period_key="2026-11")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "小结"})
    claimed = engine.claim(case.id, P(org.l1))
    released = engine.release(case.id, P(org.l1), expected_version=claimed.version)
    assert (claimed.version, released.version) == (3, 4)
    assert [h["trigger"] for h in engine.history(case.id)] == ["start", "submit", "claim",
                                                               "release"]
    with db.unit_of_work(write=False) as s:
        timers = s.execute(select(Timer.state_visit, SHOWN_STATUS).order_by(Timer.id)).all()
        # The summary visit's timers dropped, the evaluation visit's (seq 2) pending.
        assert {st for v, st in timers if v == 1} == {"dropped"}
        assert {st for v, st in timers if v == 2} == {"pending"}
        assert verify(s)[2] == []


# --------------------------------------------------------------------------- dead connections


def _small_org(db: Database) -> tuple[int, int]:
    with db.unit_of_work() as s:
        root = add_unit(s, "ORG", "部机关")
        chief = add_person(s, "CHIEF", "主要负责人", root, "chief")
        staff = add_person(s, "S1", "干部", root, "staff")
        assign_role(s, chief, "leader", root)
        return chief.id, staff.id


def _kill_other_backends(url: str) -> int:
    """Terminate every other session on the test database (as a server restart would)."""
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as c:
        return len(c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                             ).fetchall())


@pytest.fixture
def pg_small(pg_only_url):
    """PostgreSQL itself, migrated, with the regular flow and `_small_org`:
    (db, engine, chief, staff)."""
    from workflows.db import upgrade

    upgrade(pg_only_url)
    db = Database(pg_only_url)
    engine = Engine(db)
    engine.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
    chief, staff = _small_org(db)
    yield db, engine, chief, staff
    db.dispose()


def test_no_pre_ping_a_dead_pooled_connection_is_replaced_and_the_action_runs_once(
        pg_only_url):
    db = Database(pg_only_url)
    try:
        assert db.engine.pool._pre_ping is False  # no round trip per checkout
        engine = Engine(db)
        engine.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
        _chief, staff = _small_org(db)
        case = engine.start_case("regular-assessment", staff, period_key="2026-11")
        connects: list[int] = []
        event.listen(db.engine, "connect", lambda *_a: connects.append(1))
        assert _kill_other_backends(pg_only_url) >= 1  # the pooled connection is dead now
        done = engine.fire(case.id, "submit", P(staff), data={"summary": "小结"},
                           expected_version=1)
        assert (done.to_state, done.version) == ("evaluation", 2)
        assert len(connects) == 1  # the dead one dropped, one fresh connection made
        assert [h["trigger"] for h in engine.history(case.id)] == ["start", "submit"]
    finally:
        db.dispose()


def test_a_connection_lost_after_a_statement_ran_is_not_retried(pg_only_url):
    """Only a unit none of whose statements ran is run again: after one ran, the loss is
    the caller's to see (the service answers 503), never a second run behind its back."""
    db = Database(pg_only_url)
    calls: list[int] = []

    def unit(w: Work) -> None:
        calls.append(1)
        w.conn.execute(text("SELECT 1"))
        _kill_other_backends(pg_only_url)
        w.conn.execute(select(func.count()).select_from(HistoryRecord.__table__))

    try:
        with pytest.raises(DBAPIError) as raised:
            db.run(unit)
        assert raised.value.connection_invalidated
        assert calls == [1]
        assert db.run(lambda w: w.conn.execute(text("SELECT 2")).scalar()) == 2
    finally:
        db.dispose()


def test_a_clock_set_on_the_engine_is_every_capabilitys(engine, org, regular):
    """Tests and the demo move time by setting `engine.clock`: the kernel records by it."""
    from .conftest import cst

    engine.clock = lambda: cst(2026, 11, 2, 9)
    case = engine.start_case("regular-assessment", org.s1, period_key="2026-10")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "小结"})
    assert {h["at"] for h in engine.history(case.id)} == {cst(2026, 11, 2, 9)}
    assert engine.kernel.clock is engine.reads.clock is engine.flows.clock is engine.clock


# --------------------------------------------------------------------------- effects


def test_an_actions_effects_commit_with_its_move_or_not_at_all(engine, org, regular, db,
                                                              monkeypatch):
    """Effects run before the case's write, so that the write can end the transaction in its
    own round trip: a write that fails takes the effects' rows with it."""
    from workflows import kernel as kernel_module
    from workflows.facts import list_facts

    case = engine.start_case("regular-assessment", org.s1, period_key="2026-03")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "小结"})
    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "好"})
    engine.fire(case.id, "accept", P(org.s1))

    def failing(*_args, **_kwargs):
        raise RuntimeError("the write failed")

    with monkeypatch.context() as m:
        m.setattr(kernel_module.history, "advance", failing)
        with pytest.raises(RuntimeError):
            engine.fire(case.id, "approve", P(org.c2))
    with db.unit_of_work(write=False) as s:
        assert list_facts(s, "consequences", org.s1) == []  # 通报表扬 not kept alone
    assert engine.get_case(case.id).state == "approval"
    result = engine.fire(case.id, "approve", P(org.c2))
    assert (result.to_state, result.version) == ("approved", 5)
    with db.unit_of_work(write=False) as s:
        assert [r["kind"] for r in list_facts(s, "consequences", org.s1)] == ["通报表扬"]


def test_on_postgresql_an_action_is_one_read_and_one_write(pg_small):
    """One statement reads the case locked with the actor's roles and the organisation the
    action asks about (the role check, the next-actor check, the dispatch host evaluate's
    effect 派出单位知情 asks for); one writes the case, its history and its timers; then
    the COMMIT. Submit, evaluate and accept send nothing else."""
    from workflows.models import Person, Unit

    db, engine, chief, staff = pg_small
    with db.unit_of_work() as s:  # someone to approve (审定) after the accept
        root = s.execute(select(Unit)).scalar_one()
        assign_role(s, s.get(Person, chief), "committee", root)
    case = engine.start_case("regular-assessment", staff, period_key="2026-11")
    sent: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: sent.append(statement))
    steps = [("submit", staff, {"summary": "小结"}), ("evaluate", chief, {"grade": "较好"}),
             ("accept", staff, None)]
    for v, (trigger, who, data) in enumerate(steps, start=1):
        sent.clear()
        engine.fire(case.id, trigger, P(who), data=data, expected_version=v)
        assert len(sent) == 2, (trigger, sent)  # nothing sent besides them
        assert "FOR UPDATE" in sent[0] and "role_assignments" in sent[0]
        assert "INSERT INTO case_history" in sent[1]


def test_on_postgresql_a_good_approval_adds_its_quota_and_its_consequence(pg_small):
    """A 好 approval sends, besides the read and the write: the pool's lock and its count
    (the quota); the consequence with its audit row as one statement; the subject with the
    干部科 (hr-office) holders as one read, and their notices."""
    from workflows.facts import list_facts
    from workflows.models import Person, Unit

    db, engine, chief, staff = pg_small
    with db.unit_of_work() as s:
        root = s.execute(select(Unit)).scalar_one()
        assign_role(s, s.get(Person, chief), "committee", root)
        assign_role(s, s.get(Person, chief), "hr-office", None)
    case = engine.start_case("regular-assessment", staff, period_key="2026-11")
    for v, (trigger, who, data) in enumerate([("submit", staff, {"summary": "小结"}),
                                              ("evaluate", chief, {"grade": "好"}),
                                              ("accept", staff, None)], start=1):
        engine.fire(case.id, trigger, P(who), data=data, expected_version=v)
    sent: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: sent.append(" ".join(statement.split())))
    engine.fire(case.id, "approve", P(chief), expected_version=4)
    assert len(sent) == 7, sent
    read, lock, count, consequence, holders, notices, write = sent
    assert "FOR UPDATE" in read and "pg_advisory_xact_lock" in lock
    assert count.startswith("SELECT cases.unit_id")
    assert "INSERT INTO consequences" in consequence and "INSERT INTO fact_audit" in consequence
    assert "people.name" in holders and "role_assignments" in holders
    assert notices.startswith("INSERT INTO notifications")
    assert "INSERT INTO case_history" in write
    with db.unit_of_work(write=False) as s:
        assert [r["kind"] for r in list_facts(s, "consequences", staff)] == ["通报表扬"]


def test_after_the_database_restarted_the_next_requests_are_answered(pg_small):
    """Every request signs in through `Database.run` first: a pooled connection the server
    dropped (a restart) is found dead before any statement ran and replaced, and the pool's
    other connections are renewed with it — a read and an action after the restart answer
    200, not 503."""
    import datetime as dt

    from service.app import create_app
    from workflows.accounts import BEARER, issue_token
    from workflows.engine import utcnow
    from workflows.models import User

    db, engine, _chief, staff = pg_small
    with db.unit_of_work() as s:
        user = User(username="staff", person_id=staff, password_hash="x")
        s.add(user)
        s.flush()
        user_id = user.id
    token, _ = issue_token(db, user_id, BEARER, dt.timedelta(hours=1), utcnow())
    case = engine.start_case("regular-assessment", staff, period_key="2026-11")
    client = create_app(db.url, config={"TESTING": True, "SECRET_KEY": "t"},
                        engine=engine).test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/v1/cases/{case.id}", headers=bearer).status_code == 200
    assert _kill_other_backends(db.url) >= 1
    r = client.get(f"/api/v1/cases/{case.id}", headers=bearer)
    assert r.status_code == 200, r.json
    assert _kill_other_backends(db.url) >= 1
    r = client.post(f"/api/v1/cases/{case.id}/actions/submit",
                    json={"data": {"summary": "小结"}}, headers={**bearer, "If-Match": '"1"'})
    assert r.status_code == 200 and r.json["version"] == 2, r.json
    assert engine.get_case(case.id).state == "evaluation"


def test_a_refused_action_keeps_the_connections_prepared_statements(pg_small):
    """A refusal that wrote nothing ends its transaction with COMMIT, not ROLLBACK: after a
    ROLLBACK psycopg deallocates every statement it prepared on the connection, and the
    next actions would plan theirs anew (about 65 % slower with one refusal in ten)."""
    from workflows.errors import ActionNotAllowed

    db, engine, _chief, staff = pg_small
    for period in ("2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06"):
        case = engine.start_case("regular-assessment", staff, period_key=period)
        engine.fire(case.id, "submit", P(staff), data={"summary": "小结"})

    def prepared() -> int:
        with db.engine.connect() as conn:  # the pool's one connection, used by every action
            n = conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar()
            conn.commit()  # closing with a ROLLBACK would deallocate them itself
            return n
    before = prepared()
    assert before > 0
    case = engine.start_case("regular-assessment", staff, period_key="2026-07")
    with pytest.raises(ActionNotAllowed):
        engine.fire(case.id, "approve", P(staff))
    assert prepared() >= before
    assert db.engine.pool.checkedin() == 1  # it was the same connection throughout


def _wire(monkeypatch) -> list[str]:
    """What `_pg_around` sends (BEGIN and COMMIT with a statement, one round trip each)."""
    from workflows import db as dbm

    sent: list[str] = []
    real = dbm._simple_query

    def spy(raw: Any, query: str) -> list[Any]:
        sent.append(query)
        return real(raw, query)
    monkeypatch.setattr(dbm, "_simple_query", spy)
    return sent


def test_on_postgresql_an_action_is_two_round_trips(pg_small, monkeypatch):
    """The unit's BEGIN goes out with the read and its COMMIT with the write, each a
    statement prepared in SQL once per connection: two round trips per action."""
    db, engine, _chief, staff = pg_small
    case = engine.start_case("regular-assessment", staff, period_key="2026-11")
    sent = _wire(monkeypatch)
    statements: list[str] = []  # everything, as the statement hooks see it
    event.listen(db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: statements.append(statement))
    engine.fire(case.id, "submit", P(staff), data={"summary": "小结"}, expected_version=1)
    assert len(sent) == 2 and len(statements) == 2, (sent, statements)
    read, write = sent
    assert read.startswith("PREPARE civflow_") and "FOR UPDATE" in read
    assert "BEGIN;\nEXECUTE civflow_" in read
    assert write.startswith("PREPARE civflow_") and write.endswith(";\nCOMMIT")
    case2 = engine.start_case("regular-assessment", staff, period_key="2026-12")
    sent.clear()
    engine.fire(case2.id, "submit", P(staff), data={"summary": "小结"}, expected_version=1)
    assert [q.split("(")[0] for q in sent] == [read.split(" AS ")[0].replace(
        "PREPARE", "BEGIN;\nEXECUTE"), write.split(" AS ")[0].replace("PREPARE", "EXECUTE")]
    assert engine.get_case(case2.id).version == 2


def test_on_postgresql_opening_a_case_is_two_round_trips(pg_small, monkeypatch):
    """The version, the person, the unit, a case id and the organisation the checks ask
    about are one read, sent with the unit's BEGIN; the case, its first record and its
    timers one write, sent with the COMMIT."""
    db, engine, _chief, staff = pg_small
    engine.start_case("regular-assessment", staff, period_key="2026-10")  # compiled
    sent = _wire(monkeypatch)
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: statements.append(statement))
    case = engine.start_case("regular-assessment", staff, period_key="2026-11")
    assert len(sent) == 2 and len(statements) == 2, (sent, statements)
    read, write = sent
    assert "BEGIN;\nEXECUTE civflow_" in read and "nextval" in statements[0]
    assert write.endswith(";\nCOMMIT") and "INSERT INTO timers" in statements[1]
    with db.unit_of_work(write=False) as s:
        timers = s.execute(select(Timer.kind, Timer.state_visit, Timer.status)
                           .where(Timer.case_id == case.id)).all()
        head = s.execute(select(Case.history_seq, Case.history_hash)
                         .where(Case.id == case.id)).one()
        first = s.execute(select(HistoryRecord.seq, HistoryRecord.hash, HistoryRecord.prev_hash)
                          .where(HistoryRecord.case_id == case.id)).one()
    assert sorted(t.kind for t in timers) == ["deadline", "reminder", "repeat"]
    assert {(t.state_visit, t.status) for t in timers} == {(1, "pending")}
    assert (head.history_seq, head.history_hash) == (first.seq, first.hash)
    assert first.prev_hash == GENESIS and engine.verify_history()[2] == []
    with pytest.raises(DuplicateCase):  # the write refused whole: nothing of it stays
        engine.start_case("regular-assessment", staff, period_key="2026-11")
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(Timer)).scalar() == 6
        assert s.execute(select(func.count()).select_from(HistoryRecord)).scalar() == 2


def test_statements_deallocated_under_an_action_are_prepared_again(pg_small, monkeypatch):
    """psycopg deallocates every prepared statement after a ROLLBACK (DEALLOCATE ALL): a
    read that finds its statement gone prepares it again; a write that does is rolled back
    with its unit, which runs once more — the case moves once, its history one record."""
    from workflows import db as dbm

    db, engine, _chief, staff = pg_small
    cases = [engine.start_case("regular-assessment", staff, period_key=p).id
             for p in ("2026-09", "2026-10", "2026-11")]
    engine.fire(cases[0], "submit", P(staff), data={"summary": "小结"})  # all prepared

    def deallocate() -> None:
        with db.engine.connect() as conn:  # the pool's one connection
            conn.exec_driver_sql("DEALLOCATE ALL")
            conn.commit()
    deallocate()
    assert engine.fire(cases[1], "submit", P(staff), data={"summary": "小结"}).version == 2

    real = dbm._pg_around
    runs: list[bool] = []

    def gone_before_the_write(conn, raw, sql, params, begin, commit):
        runs.append(commit)
        if commit and len(runs) == 2:  # the first write: its statement vanished meanwhile
            raw.execute("DEALLOCATE ALL", prepare=False)
        return real(conn, raw, sql, params, begin, commit)
    monkeypatch.setattr(dbm, "_pg_around", gone_before_the_write)
    result = engine.fire(cases[2], "submit", P(staff), data={"summary": "小结"})
    assert runs == [False, True, False, True]  # the unit ran twice
    assert result.version == 2
    assert [r["trigger"] for r in engine.history(cases[2])][1:] == ["submit"]

    monkeypatch.setattr(dbm, "_pg_around", real)  # the bookkeeping lost: prepared anyway
    dbm._PREPARED.clear()
    case = engine.start_case("regular-assessment", staff, period_key="2026-12")
    assert engine.fire(case.id, "submit", P(staff), data={"summary": "小结"}).version == 2


def test_a_refused_unit_that_wrote_rolls_back(db):
    """Only a refusal that ran nothing but SELECTs commits; one that wrote rolls back."""
    from sqlalchemy import text

    from workflows.errors import ActionNotAllowed

    with pytest.raises(ActionNotAllowed), db.work() as w:
        w.conn.execute(text("INSERT INTO units (code, name, path) VALUES ('X', 'x', '/')"))
        raise ActionNotAllowed("refused after a write")
    with pytest.raises(ActionNotAllowed), db.unit_of_work() as s:
        s.execute(text("INSERT INTO units (code, name, path) VALUES ('Y', 'y', '/')"))
        raise ActionNotAllowed("refused after a write")
    with db.unit_of_work(write=False) as s:
        assert s.execute(text("SELECT count(*) FROM units WHERE code IN ('X', 'Y')")
                         ).scalar() == 0


def test_on_sqlite_a_write_unit_begins_immediate_and_a_locked_database_is_busy(tmp_path):
    """The write lock is taken at BEGIN (sent straight to the driver, still seen by the
    statement listeners); a database another writer holds past the busy timeout comes out
    as `DatabaseBusy` (the service's 503), and nothing of the unit ran."""
    import sqlite3

    from workflows.frontdoor import DatabaseBusy

    path = tmp_path / "busy.db"
    db = Database(f"sqlite:///{path}")
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: seen.append(statement))
    try:
        db.run(lambda w: w.conn.execute(text("CREATE TABLE t (x INTEGER)")))
        assert seen[:2] == ["BEGIN IMMEDIATE", "CREATE TABLE t (x INTEGER)"]
        assert db.run(lambda w: w.conn.execute(text("SELECT count(*) FROM t")).scalar(),
                      write=False) == 0
        assert seen[-2] == "BEGIN"

        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        event.listen(db.engine, "connect",
                     lambda conn, _r: conn.execute("PRAGMA busy_timeout=50"))
        db.engine.dispose()  # the next connection waits 50 ms, not 30 s
        ran: list[int] = []
        with pytest.raises(DatabaseBusy) as caught:
            db.run(lambda w: ran.append(w.conn.execute(
                text("INSERT INTO t VALUES (1)")).rowcount))
        assert isinstance(caught.value.orig, sqlite3.OperationalError)
        assert "locked" in str(caught.value.orig) and ran == []
        other.execute("ROLLBACK")
        other.close()
        assert db.run(lambda w: w.conn.execute(text("SELECT count(*) FROM t")).scalar()) == 0
    finally:
        db.dispose()


def test_on_sqlite_the_wal_goes_back_by_a_thread_not_by_a_commit(tmp_path):
    """A commit no longer copies the WAL into the database when it crosses SQLite's
    1,000 pages: every `CHECKPOINT_EVERY` write units wake a thread that does (PASSIVE),
    and SQLite's own checkpoint waits for a WAL ten times that size."""
    from workflows.db import CHECKPOINT_EVERY, WAL_FALLBACK_PAGES

    db = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    ck = db.checkpointer
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == \
                WAL_FALLBACK_PAGES
        db.run(lambda w: w.conn.execute(text("CREATE TABLE t (x INTEGER)")))
        for i in range(CHECKPOINT_EVERY - 2):
            db.run(lambda w, i=i: w.conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": i}))
        assert db.run(lambda w: w.conn.execute(text("SELECT count(*) FROM t")).scalar(),
                      write=False) == CHECKPOINT_EVERY - 2  # a read unit counts for nothing
        assert ck is not None and ck.done == 0 and ck._thread is None
        db.run(lambda w: w.conn.execute(text("INSERT INTO t VALUES (-1)")))
        ck.stop()  # returns once the checkpoint that was due has run
        assert ck.done == 1
        busy, frames, copied = ck.last
        # every unit's commit left its frames in the WAL; the thread copied them all
        assert busy == 0 and frames >= CHECKPOINT_EVERY and copied == frames
        for i in range(CHECKPOINT_EVERY):  # after a stop, the writes start another thread
            with db.unit_of_work() as s:
                s.execute(text("INSERT INTO t VALUES (:x)"), {"x": i})
        ck.stop()
        assert ck.done == 2 and ck.last[1] >= CHECKPOINT_EVERY
    finally:
        db.dispose()
    assert ck._thread is None
    assert Database("sqlite://").checkpointer is None  # in memory: no WAL


def test_a_checkpoint_of_a_removed_database_fails_without_creating_it(tmp_path):
    """The thread's connection opens the file read-write, never creates it: a database
    removed under a process is not brought back empty."""
    import sqlite3

    from workflows.db import Checkpointer

    ck = Checkpointer(str(tmp_path / "gone.db"))
    with pytest.raises(sqlite3.OperationalError):
        ck.checkpoint()
    assert not (tmp_path / "gone.db").exists() and ck.done == 0
