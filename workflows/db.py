"""Database connections, the unit of work, and schema upgrades.

SQLite is the embedded default; PostgreSQL (psycopg 3) is the real deployment. On SQLite the
pysqlite driver's own transaction handling is switched off (SQLAlchemy's documented
"serializable isolation / savepoints" recipe) so that we emit BEGIN ourselves — BEGIN
IMMEDIATE for units of work that write, which takes SQLite's write lock up front instead of
failing half-way through an action when another writer got there first.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from .errors import CivflowError

T = TypeVar("T")
log = logging.getLogger(__name__)
# A pooled connection is replaced after this long instead of being pinged at every
# checkout (a round trip per unit of work); one found dead is retried once (`Database.run`).
POOL_RECYCLE = 1800

DEFAULT_URL = "sqlite:///civflow.db"
ENV_URL = "CIVFLOW_DATABASE_URL"
# JSON as stored: Chinese as itself, not as `\uXXXX` escapes (a third of the bytes, and
# legible in the database). Reads accept both; hashes have their own canonical form.
json_text = functools.partial(json.dumps, ensure_ascii=False)


def database_url(url: str | None = None) -> str:
    """The URL given, else $CIVFLOW_DATABASE_URL, else `civflow.db` in the working directory."""
    url = url or os.environ.get(ENV_URL) or DEFAULT_URL
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        # psycopg 3 is the driver we ship; plain URLs would ask for psycopg2.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str | None = None, **kwargs) -> Engine:
    url = database_url(url)
    kwargs.setdefault("json_serializer", json_text)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _sqlite_setup(engine)
    else:
        kwargs.setdefault("pool_recycle", POOL_RECYCLE)
        engine = create_engine(url, **kwargs)
        _count_statements(engine)
    return engine


def _count_statements(engine: Engine) -> None:
    """Count the statements a connection ran: `Database.run` retries a unit of work only
    when its connection turned out dead before any of its statements ran, and a refused
    unit that only read ends with COMMIT (`_keeps_prepared`). PostgreSQL only: an SQLite
    connection does not die under a unit, nor does SQLite keep prepared statements."""
    @event.listens_for(engine, "after_cursor_execute")
    def _ran(conn, _cursor, statement, _parameters, _context, _executemany):
        ran = conn.info.get("civflow_ran")
        if ran is not None:
            ran[0] += 1
            if statement.lstrip()[:6].upper() != "SELECT":  # may have written (see `_end`)
                ran[1] = 1


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            # The WAL goes back into the database on a thread of its own (`Checkpointer`);
            # a commit checkpoints only should that thread fall this far behind.
            cur.execute(f"PRAGMA wal_autocheckpoint={WAL_FALLBACK_PAGES}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        write = conn.get_execution_options().get("civflow_write", False)
        # Straight to the driver (announced as any statement; "database is locked" still
        # SQLAlchemy's error): `exec_driver_sql` cost every unit of work about 8 µs.
        driver_rows(conn, "BEGIN IMMEDIATE" if write else "BEGIN", ())


# SQLite: write units between two checkpoints by the `Checkpointer` (SQLite's own default
# is 1,000 WAL pages, some 80 actions), and the WAL size at which a commit checkpoints
# itself after all (about 40 MB).
CHECKPOINT_EVERY = 64
WAL_FALLBACK_PAGES = 10_000


class Checkpointer:
    """Copies an SQLite database's WAL back into the database file on a thread of its own,
    every `CHECKPOINT_EVERY` write units of the process.

    Left to SQLite, the commit that crosses 1,000 WAL pages copies them all before it
    returns: every eightieth action took milliseconds instead of half of one, and the
    copies were about a tenth of the time of every action (docs/BENCHMARKS.md).
    A PASSIVE checkpoint waits for no reader or writer and blocks none; durability is
    SQLite's WAL with `synchronous=NORMAL` either way. The thread starts with the first
    write and holds its connection only while it checkpoints."""

    def __init__(self, path: str, every: int = CHECKPOINT_EVERY):
        # mode=rw: a database file removed under us is not created again, empty
        self.uri = Path(path).resolve().as_uri() + "?mode=rw"
        self.every = every
        self.pending = 0  # write units since the last checkpoint (approximate, unlocked)
        self.done = 0  # checkpoints run
        self.last: tuple[int, int, int] | None = None  # what the last one reported
        self._due = False
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pid = 0  # the process the thread runs in: a forked worker starts its own
        self._start = threading.Lock()

    def wrote(self) -> None:
        """A write unit committed; every `every`-th wakes the thread."""
        self.pending += 1
        if self.pending >= self.every:
            self.pending = 0
            if self._thread is None or self._pid != os.getpid():
                self._run_thread()
            self._due = True
            self._wake.set()

    def _run_thread(self) -> None:
        with self._start:
            if self._thread is None or self._pid != os.getpid():
                self._stopping = False
                self._wake = threading.Event()
                self._thread = threading.Thread(target=self._loop, args=(self._wake,),
                                                name="civflow-sqlite-checkpoint", daemon=True)
                self._pid = os.getpid()
                self._thread.start()

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint now: (busy, WAL frames, frames copied), as SQLite says."""
        conn = sqlite3.connect(self.uri, uri=True, timeout=30)
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()
        self.done += 1
        self.last = (busy, frames, copied)
        return self.last

    def _loop(self, wake: threading.Event) -> None:
        while True:
            wake.wait()
            wake.clear()
            if self._due:
                self._due = False
                try:
                    self.checkpoint()
                except sqlite3.Error as exc:  # SQLite checkpoints at its fallback size
                    busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
                    # busy: another process's checkpoint is running; this one is not needed
                    (log.debug if busy else log.warning)(
                        "background checkpoint of %s failed: %s", self.uri, exc)
            if self._stopping:
                return

    def stop(self) -> None:
        """End the thread, after the checkpoint that is due, if one is; the next write
        units start another."""
        with self._start:
            thread, self._thread = self._thread, None
            if thread is None or self._pid != os.getpid():
                return
            self._stopping = True
            self._wake.set()
            thread.join()


class Work:
    """One unit of work: the connection its transaction runs on and, made when first asked
    for, an ORM session joined to that transaction (for the rules and effects that use the
    ORM). The action path runs its statements on `conn` and never pays for a session."""

    __slots__ = ("conn", "_session", "_own", "owned", "ran")

    def __init__(self, conn: Connection, session: Session | None = None,
                 owned: bool = False):
        self.conn = conn
        self._session = session
        self._own = session is None  # a session we made is flushed and closed by us
        # The unit is `Database.run`'s own: its last write may go out with its COMMIT
        # (`driver_rows`). A caller's transaction (the timer worker's) is never ended here.
        self.owned = owned
        # Statements of this unit that ran (`Database.run` reads it), and whether any of
        # them was other than a SELECT.
        self.ran = [0, 0]

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(bind=self.conn, expire_on_commit=False)
        return self._session

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    def finish(self) -> None:
        """Flush what the session holds (before the transaction commits)."""
        if self._own and self._session is not None:
            self._session.flush()

    def close(self) -> None:
        if self._own and self._session is not None:
            self._session.close()


class Database:
    """One engine and session factory per process; hands out units of work."""

    def __init__(self, url: str | None = None, **engine_kwargs):
        self.url = database_url(url)
        self.engine = make_engine(self.url, **engine_kwargs)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Write units on SQLite take the write lock at BEGIN (`_sqlite_setup`): connected
        # through an engine that carries the option, not set on each connection (a few µs
        # of every action).
        self._writes = (self.engine.execution_options(civflow_write=True)
                        if self.engine.dialect.name == "sqlite" else self.engine)
        file = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        self.checkpointer = (Checkpointer(file) if file not in (None, "", ":memory:")
                             else None)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def unit_of_work(self, write: bool = True) -> Iterator[Session]:
        """A session whose transaction commits when the block ends and rolls back on error."""
        session = self.sessions()
        try:
            conn = session.connection(execution_options={"civflow_write": write})
            ran = conn.info["civflow_ran"] = [0, 0]
            yield session
            session.commit()
            if write and self.checkpointer is not None:
                self.checkpointer.wrote()
        except CivflowError:
            if _keeps_prepared(conn, ran) and not (session.new or session.dirty
                                                  or session.deleted):
                session.commit()
            else:
                session.rollback()
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def work(self, write: bool = True) -> Iterator[Work]:
        """A `Work` on a connection of its own, committed when the block ends and rolled
        back on error; write units take SQLite's write lock at BEGIN (BEGIN IMMEDIATE)."""
        conn = (self._writes if write else self.engine).connect()
        try:
            w = Work(conn, owned=True)
            conn.info["civflow_ran"] = w.ran
            try:
                with conn.begin() as tx:
                    try:
                        yield w
                        w.finish()
                    except CivflowError:
                        if _keeps_prepared(conn, w.ran):
                            tx.commit()
                        raise
            finally:
                w.close()
        finally:
            conn.close()
        if write and self.checkpointer is not None:
            self.checkpointer.wrote()

    def run(self, fn: Callable[[Work], T], write: bool = True) -> T:
        """`fn` in one unit of work (`work`). A connection that turned out dead before any
        statement of the unit ran (the server restarted since the pool last used it) is
        dropped and the unit run once more on a fresh one: nothing of it reached the
        database, so running it again cannot do anything twice. So is a unit whose last
        statement found its prepared statement gone (`_pg_around`): it was rolled back."""
        for attempt in (1, 2):
            ran = [0, 0]
            try:
                with self.work(write) as w:
                    ran = w.ran
                    return fn(w)
            except DBAPIError as exc:
                lost = exc.connection_invalidated and not ran[0]
                if attempt == 2 or not (lost or getattr(exc.orig, "sqlstate", None) == _GONE):
                    raise
        raise AssertionError("unreachable")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            conn.commit()  # not the ROLLBACK of closing: see `_keeps_prepared`

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()


def _keeps_prepared(conn: Connection, ran: list[int]) -> bool:
    """Whether a refused unit of work (a `CivflowError`) may end with COMMIT: on PostgreSQL,
    when it ran nothing but SELECTs. Nothing is kept that ROLLBACK would undo — but after a
    ROLLBACK psycopg deallocates every statement it prepared on the connection, and the
    next actions plan theirs again: one refusal before every tenth submit made the submits
    about 65 % slower (docs/BENCHMARKS.md)."""
    return conn.dialect.name == "postgresql" and not ran[1]


def driver_rows(conn: Connection, sql: str, params: dict[str, Any], commit: bool = False,
                begin: bool = False) -> list[tuple]:
    """Run one statement in the driver's own SQL on the unit's connection, return its rows;
    with `commit` (the unit's last statement, in a unit that is `Database.run`'s own) the
    transaction commits with it. With `begin` (the unit's first statement) on PostgreSQL
    the transaction begins with it, when nothing began it yet.

    On PostgreSQL `BEGIN` and `COMMIT` go out in the same round trip as the statement
    (`_pg_around`); any other statement is a plain round trip, which psycopg prepares the
    sixth time it runs. Not psycopg's pipeline mode: on loopback its client time is more
    than the round trips it saves (docs/BENCHMARKS.md). Errors come out as SQLAlchemy's (a
    lost connection invalidated, as `Database.run` and the service expect).
    """
    raw = conn.connection.dbapi_connection
    dbapi = conn.dialect.loaded_dbapi
    if conn.dialect.name == "postgresql" and (commit or begin):
        from psycopg.pq import TransactionStatus

        begin = begin and raw.pgconn.transaction_status == TransactionStatus.IDLE
        if commit or begin:
            return _pg_around(conn, raw, sql, params, begin, commit)
    cur = raw.cursor()
    try:
        rows = driver_execute(conn, cur, sql, params).fetchall()
        if commit:
            raw.commit()
    except dbapi.Error as exc:
        raise _translated(conn, raw, cur, sql, params, exc) from exc
    finally:
        with contextlib.suppress(dbapi.Error):
            cur.close()
    return rows


# --------------------------------------------------------------------------- PostgreSQL:
# BEGIN with a unit's first statement, COMMIT with its last.

# The statements prepared in SQL (`PREPARE`) on each connection, by the connection.
_PREPARED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_PARAM = re.compile(r"%\((\w+)\)s|%%")
_GONE = "26000"  # invalid_sql_statement_name: a prepared statement that no longer exists
_TWICE = "42P05"  # duplicate_prepared_statement


@functools.lru_cache(maxsize=128)
def _sql_prepared(sql: str) -> tuple[str, str, tuple[str, ...], str]:
    """A statement in psycopg's SQL (`%(name)s`) as `PREPARE`: its name, the PREPARE
    statement, the parameter names in the order of its `$n` and the `EXECUTE` that their
    literals complete (`EXECUTE name(` before them, or the whole call without any)."""
    names: list[str] = []

    def number(m: re.Match) -> str:
        if m.group(1) is None:
            return "%"  # `%%`: a literal %
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"
    body = _PARAM.sub(number, sql)
    name = "civflow_" + hashlib.sha256(sql.encode()).hexdigest()[:20]
    call = f"EXECUTE {name}(" if names else f"EXECUTE {name}"
    return name, f"PREPARE {name} AS {body}", tuple(names), call


def _pg_around(conn: Connection, raw: Any, sql: str, params: dict[str, Any], begin: bool,
               commit: bool) -> list[tuple]:
    """One statement with the `BEGIN` before it or the `COMMIT` after it, in one round trip:
    prepared in SQL once per connection and sent as a simple query (`BEGIN; EXECUTE s(…)`,
    `EXECUTE s(…); COMMIT`), its arguments quoted by psycopg. psycopg's own statements
    (the extended protocol) cannot share a round trip with another; this way an action is
    two round trips instead of four (docs/BENCHMARKS.md).

    psycopg deallocates every prepared statement of the connection after a ROLLBACK when it
    prepared any itself (`DEALLOCATE ALL`). A first statement that finds its own gone
    prepares it again and runs once more — nothing of its transaction had run; a last one
    raises, and `Database.run` runs the unit once more (it was rolled back whole)."""
    from psycopg import ClientCursor, errors
    from psycopg.adapt import Transformer
    from psycopg.pq import ExecStatus, TransactionStatus

    name, prepare, names, execute = _sql_prepared(sql)
    ready = _PREPARED.setdefault(raw, set())
    info = conn.connection.info  # lives as long as the driver's connection
    kept = info.get("civflow_quoting")
    if kept is None:  # one per connection, as a cursor keeps one for a query it reruns
        kept = info["civflow_quoting"] = (ClientCursor(raw), Transformer(raw))
    cur, tx = kept
    # psycopg's own literals (`Transformer.as_literal`, what `mogrify` calls per value),
    # by a transformer that keeps its dumpers: `mogrify` builds a new one per call.
    call = execute if not names else execute + b", ".join(
        b"NULL" if params[n] is None else tx.as_literal(params[n]) for n in names
    ).decode(raw.info.encoding) + ")"
    events = conn._has_events or conn.engine._has_events
    if events:
        conn.dispatch.before_cursor_execute(conn, cur, sql, params, None, False)
    for attempt in (1, 2):
        parts = [*([] if name in ready else [prepare]), *(["BEGIN"] if begin else []), call,
                 *(["COMMIT"] if commit else [])]
        try:
            results = _simple_query(raw, ";\n".join(parts))
        except errors.Error as exc:
            raise _translated(conn, raw, cur, sql, params, exc) from exc
        if parts[0] is prepare and results[0].status == ExecStatus.COMMAND_OK:
            ready.add(name)
        failed = next((r for r in results if r.status == ExecStatus.FATAL_ERROR), None)
        if failed is None:
            break
        exc = errors.error_from_result(failed, encoding=raw.info.encoding)
        if exc.sqlstate == _GONE:
            ready.clear()  # DEALLOCATE ALL took them all
        if attempt == 2 or not begin or exc.sqlstate not in (_GONE, _TWICE):
            raise _translated(conn, raw, cur, sql, params, exc) from exc
        # A first statement: nothing else ran in its transaction, if one began. End it, and
        # learn from the server which of our statements it holds.
        if raw.pgconn.transaction_status != TransactionStatus.IDLE:
            raw.rollback()
        held = _simple_query(raw, "SELECT name FROM pg_prepared_statements "
                                  "WHERE name LIKE 'civflow\\_%'")[0]
        ready.clear()
        ready.update(held.get_value(i, 0).decode() for i in range(held.ntuples))
    out = results[parts.index(call)]
    tx.set_pgresult(out)
    rows = tx.load_rows(0, out.ntuples, tuple)
    if events:
        conn.dispatch.after_cursor_execute(conn, cur, sql, params, None, False)
    return rows


def _simple_query(raw: Any, query: str) -> list[Any]:
    """Send `query` (statements separated by `;`) in the simple query protocol, in one
    round trip; the result of each statement that ran, up to the first that failed."""
    from psycopg.generators import execute

    with raw.lock:
        raw.pgconn.send_query(query.encode(raw.info.encoding))
        return raw.wait(execute(raw.pgconn))


def _translated(conn: Connection, raw: Any, cur: Any, sql: str, params: Any,
                exc: Exception) -> DBAPIError:
    """A driver error as SQLAlchemy's, the connection invalidated when it was lost (as
    `Database.run` and the service expect)."""
    dbapi = conn.dialect.loaded_dbapi
    lost = conn.dialect.is_disconnect(exc, raw, cur)
    if lost:
        conn.invalidate(exc)
    return DBAPIError.instance(sql, params, exc, dbapi.Error, connection_invalidated=lost)


@functools.lru_cache(maxsize=128)
def _compiled(stmt: Any, dialect: Any) -> Any:
    return stmt.compile(dialect=dialect)


def driver_statement(conn: Connection, stmt: Any, params: dict[str, Any]
                     ) -> tuple[str, Any]:
    """A SQLAlchemy statement built once (cached by the caller) as the driver's own SQL and
    parameters, to send with `driver_rows`: IN lists written out, values through their
    types' bind processors (a JSON path on SQLite), in order where the driver's style is
    positional (SQLite's `?`)."""
    compiled = _compiled(stmt, conn.dialect)
    state = compiled.construct_expanded_state(params)
    done = {**compiled._bind_processors, **state.processors}  # the IN lists' in the latter
    values = {k: done[k](v) if k in done else v for k, v in state.parameters.items()}
    if state.positiontup is not None:
        return state.statement, tuple(values[k] for k in state.positiontup)
    return state.statement, values


def statement_rows(conn: Connection, stmt: Any, params: dict[str, Any], begin: bool = False
                   ) -> list[tuple]:
    """`driver_rows` of a SQLAlchemy statement built once (`driver_statement`): the action
    path's reads, for which the ORM's or Core's execution path cost as much as the read."""
    return driver_rows(conn, *driver_statement(conn, stmt, params), begin=begin)


def driver_execute(conn: Connection, cur: Any, sql: str, params: Any, many: bool = False
                   ) -> Any:
    """`cur.execute` (or `executemany`) on the driver's cursor, announced to SQLAlchemy's
    statement listeners as any statement is (`before_`/`after_cursor_execute`): statement
    hooks, `Database.run`'s count and the tests' observers see these statements too."""
    events = conn._has_events or conn.engine._has_events
    if events:
        conn.dispatch.before_cursor_execute(conn, cur, sql, params, None, many)
    out = cur.executemany(sql, params) if many else cur.execute(sql, params)
    if events:
        conn.dispatch.after_cursor_execute(conn, cur, sql, params, None, many)
    return out


def bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]],
                skip_conflicts_on: tuple[Column, ...] = ()) -> list[int]:
    """Insert many rows in one statement; with `skip_conflicts_on`, ON CONFLICT DO NOTHING
    and return the ids of the rows inserted.

    PostgreSQL: `INSERT … SELECT unnest(:array), …, :value` — one array parameter per column
    that varies and one scalar per column equal in every row, instead of one parameter per
    value. SQLite: an executemany (SQLAlchemy batches it into multi-row VALUES).
    """
    if not rows:
        return []
    pg = conn.dialect.name == "postgresql"
    stmt = (postgresql.insert if pg else sqlite.insert)(table)
    if pg:
        columns = []
        names = list(rows[0])
        for n in names:
            first, col_type = rows[0][n], table.c[n].type
            if all(r[n] == first for r in rows):
                columns.append(bindparam(f"v_{n}", first, type_=col_type))
            else:
                columns.append(func.unnest(bindparam(f"a_{n}", [r[n] for r in rows],
                                                     type_=postgresql.ARRAY(col_type))))
        stmt, rows = stmt.from_select(names, select(*columns)), None
    if not skip_conflicts_on:
        conn.execute(stmt, rows)
        return []
    stmt = stmt.on_conflict_do_nothing(index_elements=list(skip_conflicts_on))
    return list(conn.execute(stmt.returning(table.c.id), rows).scalars())


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Create or upgrade the schema to `revision` (Alembic)."""
    from alembic import command

    url = database_url(url)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)
