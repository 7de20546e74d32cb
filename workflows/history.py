"""Tamper-evident history: each record's hash covers its content and the previous hash.

A personnel decision may be inspected years later; recomputing the chain shows whether any
record was altered, removed or inserted since it was written.

This module is the one writer of history rows (履历): every record — a case's start, an
action, a bulk action, a claim, a timer's firing, a cycle's opening, a migration to another
flow version — is an `Entry` (whose `hash` is the one place a record's hash is computed)
written by `write` (records of cases just inserted with the entry as their head) or by
`advance` (an existing case: its versioned head and the record in one go).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.orm import Session

from .db import bulk_insert, driver_execute, driver_rows, json_text
from .errors import Conflict
from .models import Case, HistoryRecord, Timer

GENESIS = "0" * 64
CASES, HISTORY, TIMERS = Case.__table__, HistoryRecord.__table__, Timer.__table__


def _instant(at: dt.datetime) -> str:
    """UTC to the microsecond; SQLite hands back naive datetimes, PostgreSQL aware ones."""
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def record_hash(*, case_id: int, seq: int, at: dt.datetime, actor_id: int | None,
                actor_role: str, trigger: str, from_state: str | None, to_state: str,
                data: dict[str, Any], comment: str | None, prev_hash: str) -> str:
    content = {
        "case": case_id, "seq": seq, "at": _instant(at), "actor": actor_id,
        "role": actor_role, "trigger": trigger, "from": from_state, "to": to_state,
        "data": data, "comment": comment, "prev": prev_hash,
    }
    raw = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One history record about to be written: the next link of a case's chain."""

    case_id: int
    seq: int
    at: dt.datetime
    actor_id: int | None
    actor_role: str
    trigger: str
    from_state: str | None
    to_state: str
    data: dict[str, Any]
    comment: str | None
    prev_hash: str
    idempotency_key: str | None = None
    request_hash: str | None = None  # what the idempotency key was used for
    hash: str = ""  # computed: leave out

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", record_hash(
            case_id=self.case_id, seq=self.seq, at=self.at, actor_id=self.actor_id,
            actor_role=self.actor_role, trigger=self.trigger, from_state=self.from_state,
            to_state=self.to_state, data=self.data, comment=self.comment,
            prev_hash=self.prev_hash))

    @classmethod
    def first(cls, case_id: int, *, at: dt.datetime, actor_id: int | None, actor_role: str,
              trigger: str, to_state: str, data: dict[str, Any], comment: str | None = None
              ) -> Entry:
        """Record 1 of a new case, chained from GENESIS."""
        return cls(case_id, 1, at, actor_id, actor_role, trigger, None, to_state, data,
                   comment, GENESIS)

    @classmethod
    def after(cls, head: Any, *, at: dt.datetime, actor_id: int | None, actor_role: str,
              trigger: str, to_state: str, data: dict[str, Any], comment: str | None = None,
              idempotency_key: str | None = None, request_hash: str | None = None) -> Entry:
        """The record after a case's current head (`head`: its row, with id, state,
        history_seq and history_hash)."""
        return cls(head.id, head.history_seq + 1, at, actor_id, actor_role, trigger,
                   head.state, to_state, data, comment, head.history_hash, idempotency_key,
                   request_hash)

    def row(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "seq": self.seq, "at": self.at,
                "actor_id": self.actor_id, "actor_role": self.actor_role,
                "trigger": self.trigger, "from_state": self.from_state,
                "to_state": self.to_state, "data": self.data, "comment": self.comment,
                "idempotency_key": self.idempotency_key, "request_hash": self.request_hash,
                "prev_hash": self.prev_hash, "hash": self.hash}


INSERT_HISTORY = insert(HISTORY)


def write(conn: Connection, entries: list[Entry]) -> None:
    """Insert history records whose cases carry them as their head already (a case just
    inserted with `history_seq = entry.seq, history_hash = entry.hash`: start, cycles).
    Many at once: one statement on PostgreSQL (`db.bulk_insert`)."""
    if len(entries) > 1 and conn.dialect.name == "postgresql":
        bulk_insert(conn, HISTORY, [e.row() for e in entries])
    elif entries:
        conn.execute(INSERT_HISTORY, [e.row() for e in entries])


# The record and the timers a write on PostgreSQL adds to the case row `{head}` returns: the
# common tail of `PG_OPEN` and `PG_ADVANCE` (the record's `at` is the case's updated_at).
_PG_RECORD_AND_ARM = """recorded AS (
  INSERT INTO case_history (case_id, seq, at, actor_id, actor_role, trigger, from_state,
    to_state, data, comment, idempotency_key, request_hash, prev_hash, hash)
  SELECT id, %(history_seq)s, %(updated_at)s, %(actor_id)s, %(actor_role)s, %(trigger)s,
    %(from_state)s, %(to_state)s, %(entry_data)s, %(comment)s, %(idempotency_key)s,
    %(request_hash)s, %(prev_hash)s, %(history_hash)s FROM {head}),
armed AS (
  INSERT INTO timers (case_id, state_visit, kind, action, due_at, status, attempts,
    dedupe_key, payload, created_at)
  SELECT m.id, t.visit, t.kind, t.action, t.due_at, 'pending', 0, t.dedupe_key, t.payload,
    t.created_at
  FROM {head} m, jsonb_to_recordset(%(timers)s::jsonb)
    AS t(visit int, kind text, action text, due_at timestamptz, dedupe_key text,
         payload jsonb, created_at timestamptz))
SELECT count(*) FROM {head}"""
OPEN_COLUMNS = ("id", "flow_id", "version_id", "subject_id", "unit_id", "tier", "period_key",
                "state", "data", "version", "history_seq", "state_visit", "history_hash",
                "created_at", "updated_at", "state_entered_at", "deadline_at")
# Opening one case on PostgreSQL: the case with the head of its chain, its first record and
# the timers of its first state visit, in one statement (`open_case`).
PG_OPEN = f"""
WITH opened AS (
  INSERT INTO cases ({", ".join(OPEN_COLUMNS)})
  VALUES ({", ".join(f"%({c})s" for c in OPEN_COLUMNS)})
  RETURNING id),
""" + _PG_RECORD_AND_ARM.format(head="opened")


def open_case(conn: Connection, case: dict[str, Any], entry: Entry,
              arm: list[dict[str, Any]], commit: bool = False) -> None:
    """Insert a new case whose head is `entry` (its first record), the record, and the
    timers of its first state visit; with `commit` (as `advance`) the transaction commits
    with it — one round trip on PostgreSQL. A duplicate case is the driver's
    IntegrityError, and nothing of it was written."""
    if conn.dialect.name == "postgresql":
        from psycopg.types.json import Jsonb

        params = {**case, "data": Jsonb(case["data"], json_text), **_pg_entry_params(entry, arm)}
        driver_rows(conn, PG_OPEN, params, commit)
        return
    # SQLite: the same statements `advance` sends, straight to sqlite3 (the unit holds the
    # write lock since BEGIN IMMEDIATE); the case first, its duplicate the error translated.
    driver_rows(conn, SQLITE_OPEN, {c: sqlite_value(case.get(c)) for c in OPEN_COLUMNS})
    cur = conn.connection.dbapi_connection.cursor()
    try:
        driver_execute(conn, cur, SQLITE_INSERT_HISTORY,
                       {k: sqlite_value(v) for k, v in entry.row().items()})
        if arm:
            driver_execute(conn, cur, SQLITE_ARM,
                           [{c: sqlite_value(r[c]) for c in TIMER_COLUMNS} for r in arm],
                           many=True)
    finally:
        cur.close()


# The columns `advance` sets on the case on PostgreSQL, in its one statement; a change to
# another column (a migration's version_id) takes the statement-per-table way.
HEAD = ("state", "data", "version", "history_seq", "history_hash", "updated_at",
        "state_entered_at", "state_visit", "deadline_at", "closed_at", "claimed_by",
        "claimed_at")
HEAD_SET = frozenset(HEAD)
VERSIONED_UPDATE = update(CASES).where(CASES.c.id == bindparam("_id"),
                                       CASES.c.version == bindparam("_version"))
PG_ADVANCE = """
WITH moved AS (
  UPDATE cases SET state = %(state)s, data = %(data)s, version = %(version)s,
    history_seq = %(history_seq)s, history_hash = %(history_hash)s,
    updated_at = %(updated_at)s, state_entered_at = %(state_entered_at)s,
    state_visit = %(state_visit)s, deadline_at = %(deadline_at)s, closed_at = %(closed_at)s,
    claimed_by = %(claimed_by)s, claimed_at = %(claimed_at)s
  WHERE id = %(case_id)s AND version = %(old_version)s
  RETURNING id),
""" + _PG_RECORD_AND_ARM.format(head="moved")


def advance(conn: Connection, head: Any, entry: Entry, changes: dict[str, Any], *,
            arm: list[dict[str, Any]] | None = None, commit: bool = False) -> int:
    """Write `entry` on an existing case and move the case's head to it, returning the
    case's new version: the versioned UPDATE (`changes` plus version + 1, history_seq,
    history_hash, updated_at — Conflict when the version moved since `head` was read), the
    history INSERT and, when a state visit begins, its timers (the `arm` rows) — one
    statement on PostgreSQL. The timers of the visit the case leaves are not written to:
    a timer belongs to its visit, and one whose case has moved on is dropped, not fired
    (`timers.STALE`), so the action does not pay for them (docs/architecture.md).

    `head` is the case row as read (id, version, state, history_seq, history_hash and, on
    PostgreSQL, the columns of `HEAD`). With `commit` (the unit's last statement, in a unit
    of work that is `Database.run`'s own) the transaction commits with it, in the same
    round trip on PostgreSQL. The COMMIT goes out whether or not the row moved, so the
    caller must hold the case locked (`FOR UPDATE`; SQLite's write lock): then the version
    cannot have moved, and the unit's earlier writes (an action's effects) never commit
    without their case's move. Conflict is still raised if it did."""
    version = head.version + 1
    changes = {**changes, "version": version, "history_seq": entry.seq,
               "history_hash": entry.hash, "updated_at": entry.at}
    dialect = conn.dialect.name
    if dialect == "postgresql" and changes.keys() <= HEAD_SET:
        moved = _pg_advance(conn, head, entry, changes, arm or [], commit)
    elif dialect == "sqlite" and changes.keys() <= HEAD_SET:
        moved = _sqlite_advance(conn, head, entry, changes, arm or [])
    else:
        moved = conn.execute(VERSIONED_UPDATE, {**changes, "_id": head.id,
                                                "_version": head.version}).rowcount
        if moved == 1:
            conn.execute(INSERT_HISTORY, [entry.row()])
            if arm:
                conn.execute(TIMERS.insert(), arm)
    if moved != 1:
        current = conn.execute(select(CASES.c.version).where(CASES.c.id == head.id)).scalar()
        raise Conflict(head.id, current or 0, head.version)
    return version


def _pg_advance(conn: Connection, head: Any, entry: Entry, changes: dict[str, Any],
                arm: list[dict[str, Any]], commit: bool) -> int:
    """`advance` as one statement (a data-modifying CTE) in the driver's own SQL: built
    once, never compiled, prepared by psycopg after a few runs; one round trip."""
    from psycopg.types.json import Jsonb

    params = {name: changes[name] if name in changes else getattr(head, name)
              for name in HEAD}
    params["data"] = Jsonb(params["data"], json_text)
    params.update(_pg_entry_params(entry, arm), case_id=head.id, old_version=head.version)
    return driver_rows(conn, PG_ADVANCE, params, commit)[0][0]


def _pg_entry_params(entry: Entry, arm: list[dict[str, Any]]) -> dict[str, Any]:
    """The parameters of `_PG_RECORD_AND_ARM` but the case's own (seq, hash, updated_at)."""
    from psycopg.types.json import Jsonb

    return {"actor_id": entry.actor_id, "actor_role": entry.actor_role,
            "trigger": entry.trigger, "from_state": entry.from_state,
            "to_state": entry.to_state, "entry_data": Jsonb(entry.data, json_text),
            "comment": entry.comment, "idempotency_key": entry.idempotency_key,
            "request_hash": entry.request_hash, "prev_hash": entry.prev_hash,
            # One JSON text rather than an array per column: psycopg dumps arrays element
            # by element, which cost more client time than the insert took.
            "timers": json_text([{"visit": r["state_visit"], "kind": r["kind"],
                                   "action": r["action"], "due_at": r["due_at"].isoformat(),
                                   "dedupe_key": r["dedupe_key"], "payload": r["payload"],
                                   "created_at": r["created_at"].isoformat()} for r in arm])}


SQLITE_UPDATE = ("UPDATE cases SET " + ", ".join(f"{c} = :{c}" for c in HEAD)
                 + " WHERE id = :case_id AND version = :old_version")
HISTORY_COLUMNS = ("case_id", "seq", "at", "actor_id", "actor_role", "trigger", "from_state",
                   "to_state", "data", "comment", "idempotency_key", "request_hash",
                   "prev_hash", "hash")
SQLITE_INSERT_HISTORY = (f"INSERT INTO case_history ({', '.join(HISTORY_COLUMNS)}) VALUES ("
                         + ", ".join(f":{c}" for c in HISTORY_COLUMNS) + ")")
TIMER_COLUMNS = ("case_id", "state_visit", "kind", "action", "due_at", "status", "attempts",
                 "dedupe_key", "payload", "created_at")
SQLITE_ARM = (f"INSERT INTO timers ({', '.join(TIMER_COLUMNS)}) VALUES ("
              + ", ".join(f":{c}" for c in TIMER_COLUMNS) + ")")


SQLITE_OPEN = (f"INSERT INTO cases ({', '.join(OPEN_COLUMNS)}) VALUES ("
               + ", ".join(f":{c}" for c in OPEN_COLUMNS) + ")")


_PLAIN = frozenset({str, int, float, bool, type(None)})


def sqlite_value(value: Any) -> Any:
    """A value as SQLAlchemy stores it on SQLite: timestamps as naive UTC text
    (`UTCDateTime`), dates as ISO text, JSON as `db.json_text`; a value read raw (text)
    stays as it is."""
    if type(value) in _PLAIN:  # most values of a step: checked first, by exact type
        return value
    if isinstance(value, dt.datetime):
        return _sqlite_instant(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json_text(value)
    return value


@functools.lru_cache(maxsize=64)
def _sqlite_instant(value: dt.datetime) -> str:
    # A step writes its one `now` four to six times (updated_at, the record's at, timers).
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _sqlite_advance(conn: Connection, head: Any, entry: Entry, changes: dict[str, Any],
                    arm: list[dict[str, Any]]) -> int:
    """`advance` on SQLite: the same statements sent straight to sqlite3 (the unit holds the
    write lock since BEGIN IMMEDIATE), values stored as SQLAlchemy stores them."""
    params = {name: sqlite_value(changes[name] if name in changes else getattr(head, name))
              for name in HEAD}
    params.update(case_id=head.id, old_version=head.version)
    cur = conn.connection.dbapi_connection.cursor()
    try:
        if driver_execute(conn, cur, SQLITE_UPDATE, params).rowcount != 1:
            return 0
        driver_execute(conn, cur, SQLITE_INSERT_HISTORY,
                       {k: sqlite_value(v) for k, v in entry.row().items()})
        if arm:
            driver_execute(conn, cur, SQLITE_ARM,
                           [{c: sqlite_value(r[c]) for c in TIMER_COLUMNS} for r in arm],
                           many=True)
        return 1
    finally:
        cur.close()


def hash_of(rec: HistoryRecord) -> str:
    return record_hash(case_id=rec.case_id, seq=rec.seq, at=rec.at, actor_id=rec.actor_id,
                       actor_role=rec.actor_role, trigger=rec.trigger,
                       from_state=rec.from_state, to_state=rec.to_state, data=rec.data,
                       comment=rec.comment, prev_hash=rec.prev_hash)


@dataclass(frozen=True)
class Break:
    case_id: int
    seq: int | None
    record_id: int | None
    reason: str

    def __str__(self) -> str:
        where = f"record {self.record_id} (seq {self.seq})" if self.record_id else "chain head"
        return f"case {self.case_id}: {where}: {self.reason}"


BOOKKEEPING = ("claim", "release", "delegate")  # queue records: they change no case data
Appends = Callable[[int, str, str | None], tuple[str, ...]]


def verify(session: Session, batch: int = 2000, appends: Appends | None = None
           ) -> tuple[int, int, list[Break]]:
    """Recompute every chain; return (cases checked, records checked, first break per case).

    Beyond the chain, the case row itself must be what its history says: the state of the
    last record, and the data the records add up to (`appends(version_id, trigger, from)`
    names the list fields a transition appends to instead of replacing). A grade edited in
    the cases table behind the engine's back shows here."""
    breaks: list[Break] = []
    cases = records = 0
    heads = session.execute(select(Case.id, Case.history_seq, Case.history_hash, Case.state,
                                   Case.data, Case.version_id).order_by(Case.id))
    head_of = {r.id: r for r in heads}
    rows = session.execute(
        select(HistoryRecord).order_by(HistoryRecord.case_id, HistoryRecord.seq)
        .execution_options(yield_per=batch)
    ).scalars()
    current, prev, expected_seq, broken = None, GENESIS, 1, False
    state: str | None = None
    data: dict[str, Any] = {}

    def close(case_id: int | None) -> None:
        nonlocal cases
        if case_id is None:
            return
        cases += 1
        head = head_of.pop(case_id, None)
        seq, last = (head.history_seq, head.history_hash) if head else (None, None)
        if broken:
            return
        if seq != expected_seq - 1 or last != prev:
            breaks.append(Break(case_id, None, None,
                                f"case says its history ends at seq {seq}, the records end at "
                                f"seq {expected_seq - 1}: records were removed or added"))
        elif head.state != state:
            breaks.append(Break(case_id, None, None, f"the case is in state {head.state!r} "
                                f"but its history ends in {state!r}: the case was altered"))
        elif dict(head.data) != data:
            changed = sorted(k for k in set(head.data) | set(data)
                             if head.data.get(k) != data.get(k))
            breaks.append(Break(case_id, None, None, "the case's data differ from what its "
                                f"history records ({', '.join(changed)}): the case was altered"))

    for rec in rows:
        if rec.case_id != current:
            close(current)
            current, prev, expected_seq, broken = rec.case_id, GENESIS, 1, False
            state, data = None, {}
        records += 1
        if broken:
            continue
        reason = None
        if rec.seq != expected_seq:
            reason = f"expected seq {expected_seq}: a record is missing"
        elif rec.prev_hash != prev:
            reason = "prev_hash does not match the previous record's hash"
        elif hash_of(rec) != rec.hash:
            reason = "content does not match its hash: the record was altered"
        if reason:
            breaks.append(Break(rec.case_id, rec.seq, rec.id, reason))
            broken = True
        prev, expected_seq, state = rec.hash, expected_seq + 1, rec.to_state
        if rec.trigger not in BOOKKEEPING:
            head = head_of.get(rec.case_id)
            added = appends(head.version_id, rec.trigger, rec.from_state) \
                if appends and head is not None else ()
            for key, value in rec.data.items():
                data[key] = list(data.get(key) or []) + list(value or []) if key in added \
                    else value
    close(current)
    for case_id, head in head_of.items():
        if head.history_seq:
            cases += 1
            breaks.append(Break(case_id, None, None,
                                f"case has {head.history_seq} history records, none found"))
    return cases, records, breaks
