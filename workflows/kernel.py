"""The case kernel: start, fire, bulk, claim, release, delegate — every change of a case.

Each entrance runs inside one unit of work (`db.Work`, opened by the `Engine` facade or by
the caller that owns the transaction: the timer worker, the organisation import) and takes
it as its first argument. An action costs, on PostgreSQL, one round trip to read the case
`FOR UPDATE` together with the actor's role assignments (and, when the request carries an
Idempotency-Key, its first use; when the action has rules, the case's history; and the
organisation its role check and next-actor check ask about), the reads its rules need, and
one round trip that writes the case's new head, its history record and the timers of the
state visit it leaves and enters (`history.advance`) and commits. SQLite holds its write
lock from BEGIN IMMEDIATE; the same reads and writes are a few statements there, all
in-process.

The checks, in order: the case exists and the viewer may see it; the Idempotency-Key
(`replay`); the expected version; the transition from the current state; the actor's role
(and that nobody approves their own case); the claim; the fields; the next step has
someone to act; the rules (a quota under its advisory lock); then the effects, then the
write — all in the one transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import struct
from collections import namedtuple
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, select, text
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.exc import IntegrityError

from . import actors, forms, history, provenance, quotas, rules
from .access import HELD_ROLES, Viewer, can_see, check_can_start
from .calendar import WorkCalendar
from .core import (
    CLAIM,
    DELEGATE,
    PUBLISHED,
    RELEASE,
    START,
    SYSTEM_ACTOR,
    Action,
    Actor,
    BulkResult,
    CaseView,
    FireResult,
    request_hash,
)
from .db import Work, driver_rows, statement_rows
from .errors import (
    ActionNotAllowed,
    CivflowError,
    Conflict,
    DuplicateCase,
    FieldErrors,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
)
from .history import Entry
from .machine import CompiledFlow
from .messages import msg
from .models import (
    Case,
    HistoryRecord,
    Person,
    RoleAssignment,
    Unit,
    unit_path_ids,
)
from .periods import check_period_key
from .periods import period_key as period_key_of
from .spec import START_ORG_ROLES, SYSTEM, FlowSpec, RoleSpec, TransitionSpec
from .timers import plan_state, timer_rows
from .versions import Versions, published_id

CASES = Case.__table__
HISTORY = HistoryRecord.__table__
UNITS = Unit.__table__
ROLES = RoleAssignment.__table__
PEOPLE = Person.__table__

# Statements built once, with bind parameters: building a statement per action cost more
# client CPU than the database spent running it (bench/engine_bench.py).
LOAD_CASE = (select(CASES, UNITS.c.path).join(UNITS, UNITS.c.id == CASES.c.unit_id)
             .where(CASES.c.id == bindparam("case_id")))
ASSIGNMENTS = select(ROLES.c.role, ROLES.c.unit_id).select_from(HELD_ROLES).where(
    ROLES.c.person_id == bindparam("person_id"))  # an inactive person holds no role
PG_ADVISORY_LOCKS = "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%(keys)s::bigint[]) k"
# What rules may read of a case comes from its history (`provenance.trusted`).
HISTORY_OF = (select(HISTORY.c.case_id, HISTORY.c.seq, HISTORY.c.trigger,
                     HISTORY.c.from_state, HISTORY.c.actor_role, HISTORY.c.data)
              .where(HISTORY.c.case_id.in_(bindparam("ids", expanding=True)))
              .order_by(HISTORY.c.case_id, HISTORY.c.seq))
PERSON_EXISTS = select(PEOPLE.c.id).where(PEOPLE.c.id == bindparam("id"))

CASE_COLUMNS = ("id", "flow_id", "version_id", "subject_id", "unit_id", "tier", "period_key",
                "state", "data", "version", "history_seq", "state_visit", "history_hash",
                "created_at", "updated_at", "state_entered_at", "deadline_at", "closed_at",
                "claimed_by", "claimed_at")
# PostgreSQL: the case locked for the action with its unit's path, the actor's role
# assignments, the first use of the request's Idempotency-Key, (for an action with rules)
# the case's history and the organisation the action asks about — one statement, sent as a
# plain prepared statement (`pg_load_for_action`). Its text depends on what is asked (no
# flag parameters: with them PostgreSQL kept planning it anew, its custom plans looking
# cheaper than the generic one). psycopg's pipeline mode costs more client time on loopback
# than the round trips it saves (measured: 340 µs for the three statements pipelined, 230
# µs for this one plain), so none is used here.
PG_CASE = f"""SELECT {", ".join("c." + c for c in CASE_COLUMNS)}, u.path"""
PG_HELD = str(ASSIGNMENTS.compile(dialect=psycopg.dialect()))  # the one definition, as SQL
# What the statement's snapshot saw of the case: the row lock may have waited for another
# action's commit, and the row then comes back as that action left it (EvalPlanQual) while
# the subqueries still read the snapshot taken before the wait. A version that differs from
# the locked row's says so, and the statement is run again (now without waiting).
PG_SEEN = "(SELECT s.version FROM cases s WHERE s.id = c.id)"
PG_FIRST_USE = """(SELECT json_build_array(h.trigger, h.from_state, h.to_state, h.seq,
                           h.actor_id, h.request_hash)
   FROM case_history h WHERE h.case_id = c.id AND h.idempotency_key = %(key)s)"""
PG_RECORDS = """(SELECT coalesce(json_agg(json_build_array(h.seq, h.trigger, h.from_state,
                                             h.actor_role, h.data) ORDER BY h.seq), '[]')
   FROM case_history h WHERE h.case_id = c.id)"""
# The organisation an action asks about (`actors.OrgNeeds`, per trigger): the holders of its
# unit roles on the case unit and its ancestors and of its groups, then per hosted role the
# subject's dispatch host (the latest case of the dispatch flow naming one).
PG_ORG = """(SELECT coalesce(json_agg(json_build_array(r.person_id, r.role, r.unit_id,
                                                 p.unit_id, p.tier)), '[]')
   FROM role_assignments r JOIN people p ON p.id = r.person_id AND p.active
  WHERE (r.role = ANY(%(org_roles)s::text[])
         AND r.unit_id = ANY(string_to_array(btrim(u.path, '/'), '/')::int[]))
     OR (r.role = ANY(%(org_groups)s::text[]) AND r.unit_id IS NULL))"""
PG_HOST = """(SELECT hp.id FROM cases d JOIN people hp
       ON hp.id = (d.data ->> %(host_field{i})s)::int AND hp.active
  WHERE d.flow_id = %(host_flow{i})s AND d.state = ANY(%(host_states{i})s::text[])
    AND d.subject_id = {subject} AND hp.id <> d.subject_id
  ORDER BY d.id DESC LIMIT 1)"""


@functools.cache
def pg_load_for_action(lock: bool, key: bool, records: bool, org: bool, hosted: int) -> str:
    """The PostgreSQL load statement for what one kind of action asks: the case columns and
    path, then held (JSON), the version seen, first use, records, organisation (JSON or
    NULL when not asked) and one column per host source."""
    along = [f"(SELECT coalesce(json_agg(json_build_array(h.role, h.unit_id)), '[]') "
             f"FROM ({PG_HELD}) h)", PG_SEEN, PG_FIRST_USE if key else "NULL",
             PG_RECORDS if records else "NULL", PG_ORG if org else "NULL",
             *(PG_HOST.format(i=i, subject="c.subject_id") for i in range(hosted))]
    return (PG_CASE + ",\n  " + ",\n  ".join(along)
            + "\nFROM cases c JOIN units u ON u.id = c.unit_id WHERE c.id = %(case_id)s"
            + (" FOR UPDATE OF c" if lock else ""))


@functools.cache
def pg_load_for_start(by_version: bool, org: bool, hosted: int) -> str:
    """The PostgreSQL read that opening a case needs, in one statement: the flow version
    (the latest published, or the one asked for) with its status, the person with the path
    of their unit, the case unit and its path, a fresh case id (drawn only when all three
    were found) and the organisation its checks ask about (`actors.start_needs`), as
    `pg_load_for_action` reads it with a case."""
    pick = ("f.version = %(version)s" if by_version
            else f"f.status = '{PUBLISHED}' ORDER BY f.version DESC LIMIT 1")
    along = [PG_ORG if org else "NULL",
             *(PG_HOST.format(i=i, subject="p.id") for i in range(hosted))]
    return f"""SELECT v.id, v.status, p.id, p.unit_id, h.path, p.tier, u.id, u.path,
  CASE WHEN v.id IS NOT NULL AND p.id IS NOT NULL AND u.id IS NOT NULL
       THEN nextval(pg_get_serial_sequence('cases', 'id')) END,
  {", ".join(along)}
FROM (SELECT 1) one
LEFT JOIN LATERAL (SELECT f.id, f.status FROM flow_versions f
                    WHERE f.flow_id = %(flow)s AND {pick}) v ON true
LEFT JOIN people p ON p.id = %(subject_id)s
LEFT JOIN units h ON h.id = p.unit_id
LEFT JOIN units u ON u.id = coalesce(%(unit_id)s::int, p.unit_id)"""


# SQLite: the same in one statement, sent straight to sqlite3 (values as stored: JSON and
# timestamps as text; `history.sqlite_value` writes them back the same way).
SQLITE_LOAD_FOR_ACTION = f"""
SELECT {", ".join("c." + c for c in CASE_COLUMNS)}, u.path, {{org}},
  (SELECT json_group_array(json_array(r.role, r.unit_id))
     FROM role_assignments r JOIN people p ON p.id = r.person_id AND p.active
    WHERE r.person_id = :person_id) AS held,
  (SELECT json_array(h.trigger, h.from_state, h.to_state, h.seq, h.actor_id, h.request_hash)
     FROM case_history h WHERE h.case_id = c.id AND h.idempotency_key = :key) AS first_use,
  CASE WHEN :records THEN
    (SELECT json_group_array(json_array(h.seq, h.trigger, h.from_state, h.actor_role,
                                        json(h.data)))
       FROM case_history h WHERE h.case_id = c.id) END AS records
FROM cases c JOIN units u ON u.id = c.unit_id
WHERE c.id = :case_id"""
# SQLite: the same; a unit is an ancestor when its id is a segment of the case unit's path.
# The lists are one placeholder per value (`_sqlite_in`), so the statement has a shape.
SQLITE_ORG_ALONG = """CASE WHEN :org THEN json_array(
    json((SELECT json_group_array(json_array(r.person_id, r.role, r.unit_id, p.unit_id,
                                             p.tier))
       FROM role_assignments r JOIN people p ON p.id = r.person_id AND p.active
      WHERE (r.role IN {roles} AND instr(u.path, '/' || r.unit_id || '/') > 0)
         OR (r.role IN {groups} AND r.unit_id IS NULL))){hosts})
  END"""
SQLITE_HOST_ALONG = """,
    (SELECT hp.id FROM cases d JOIN people hp
         ON hp.id = CAST(json_extract(d.data, '$.' || :host_field{i}) AS INTEGER) AND hp.active
      WHERE d.flow_id = :host_flow{i}
        AND d.state IN {states}
        AND d.subject_id = {subject} AND hp.id <> d.subject_id
      ORDER BY d.id DESC LIMIT 1)"""
# The number of roles, of groups and of each host source's states an organisation read
# asks about: the shape of its SQLite statement (`_along_params`).
Shape = tuple[int, int, tuple[int, ...]]


def _sqlite_in(name: str, n: int) -> str:
    """`(:name_0, …)`, one placeholder per value (SQLite takes an empty list). Not a JSON
    array read with `json_each`: as an IN-list that cost an action about 45 µs of planning
    and scanning at two role assignments, the placeholders about 1."""
    return "(" + ", ".join(f":{name}_{k}" for k in range(n)) + ")"


def _sqlite_org_along(shape: Shape, subject: str) -> str:
    roles, groups, states = shape
    return SQLITE_ORG_ALONG.format(
        roles=_sqlite_in("org_roles", roles), groups=_sqlite_in("org_groups", groups),
        hosts="".join(SQLITE_HOST_ALONG.format(i=i, subject=subject,
                                               states=_sqlite_in(f"host_states{i}", n))
                      for i, n in enumerate(states)))


@functools.cache
def sqlite_load_for_action(shape: Shape) -> str:
    """The SQLite load statement with the organisation read along, of that shape."""
    return SQLITE_LOAD_FOR_ACTION.replace("{org}", _sqlite_org_along(shape, "c.subject_id"))


@functools.cache
def sqlite_load_for_start(by_version: bool, shape: Shape) -> str:
    """`pg_load_for_start` on SQLite: the case id after the largest (the unit holds the
    only write lock since BEGIN IMMEDIATE) and the organisation as JSON text."""
    pick = ("f.version = :version" if by_version
            else f"f.status = '{PUBLISHED}' ORDER BY f.version DESC LIMIT 1")
    return f"""SELECT v.id, v.status, p.id, p.unit_id, h.path, p.tier, u.id, u.path,
  (SELECT coalesce(max(id), 0) + 1 FROM cases), {_sqlite_org_along(shape, "p.id")}
FROM (SELECT 1) one
LEFT JOIN (SELECT f.id, f.status FROM flow_versions f
            WHERE f.flow_id = :flow AND {pick}) v ON 1
LEFT JOIN people p ON p.id = :subject_id
LEFT JOIN units h ON h.id = p.unit_id
LEFT JOIN units u ON u.id = coalesce(:unit_id, p.unit_id)"""


def _along_params(needs: actors.OrgNeeds | None, sqlite: bool
                  ) -> tuple[list[actors.HostSource], dict[str, Any], Shape]:
    """The host sources in parameter order, the parameters of `*_ORG_ALONG` and, for
    SQLite, the statement's shape."""
    params: dict[str, Any] = {"org": bool(needs)}
    counts: list[int] = []

    def many(name: str, values: Iterable[str]) -> None:  # an array, or one value each
        ordered = sorted(values)
        if sqlite:
            params.update((f"{name}_{k}", v) for k, v in enumerate(ordered))
            counts.append(len(ordered))
        else:
            params[name] = ordered

    hosted = sorted(needs.hosted) if needs else []
    many("org_roles", needs.roles if needs else ())
    many("org_groups", needs.groups if needs else ())
    for i, (flow, states, field_name) in enumerate(hosted):
        params.update({f"host_flow{i}": flow, f"host_field{i}": field_name})
        many(f"host_states{i}", states)
    shape = (counts[0], counts[1], tuple(counts[2:])) if sqlite else (0, 0, ())
    return hosted, params, shape


def _along(unit_id: int, path: str, subject_id: int, needs: actors.OrgNeeds | None,
           hosted: list[actors.HostSource], value: Any) -> actors.Org | None:
    """The `Org` read along with a case or an opening (None when it was not asked for)."""
    if value is None or needs is None:
        return None
    holders, *hosts = value
    return actors.Org([actors.Holder(*h) for h in holders], {unit_id: unit_path_ids(path)},
                      needs, {src: {subject_id: host}
                              for src, host in zip(hosted, hosts, strict=True)})


CaseRow = namedtuple("CaseRow", (*CASE_COLUMNS, "path"))
FirstUse = namedtuple("FirstUse", "trigger from_state to_state seq actor_id request_hash")
Record = namedtuple("Record", "case_id seq trigger from_state actor_role data")


@dataclass
class StartRead:
    """What opening a case read before its checks (`Kernel.read_opening`)."""

    version_id: int
    tier: str | None
    unit_id: int
    path: str
    case_id: int  # drawn with the read, so that the case is written once
    org: actors.Org | None = None  # the organisation read along, when it was


@dataclass
class Loaded:
    """A case read for an action, with what was read along with it."""

    row: Any
    path: str
    held: list[tuple[str, int | None]] | None = None  # None: not read yet
    first_use: Any = None  # the Idempotency-Key's first record, when asked and found
    records: list[Any] | None = None  # the case's history, when read along
    org: actors.Org | None = None  # the organisation the action asks about, when read along


class SqlFacts:
    """`rules.Facts` answered inside the action's own unit of work (and from what the action
    read with its case, `along`, where that covers the question)."""

    def __init__(self, w: Work, along: actors.Org | None = None):
        self.w, self.along = w, along

    def query(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.w.session, *args)

    def dispatch_host(self, role: RoleSpec, subject_id: int) -> int | None:
        if self.along is not None:
            read, host = self.along.known_host(role, subject_id)
            if read:
                return host
        return actors.dispatch_hosts(self.w.conn, role, [subject_id]).get(subject_id)

    def pool_units(self, quota: quotas.Quota, unit_ids: set[int]) -> dict[int, int]:
        paths = self.along.paths if self.along is not None else {}
        if not quota.merge_units and unit_ids <= paths.keys():  # the case unit's ancestors
            return {u: quotas.depth_pool(quota, u, paths[u]) for u in unit_ids}
        return quotas.pool_units(self.w.session, quota, unit_ids)

    def quota_figures(self, flow: str, quota: quotas.Quota, keys: list[quotas.PoolKey],
                      units: dict[int, int] | None = None
                      ) -> dict[quotas.PoolKey, quotas.PoolFigures]:
        if self.w.dialect != "postgresql":  # SQLite: the write lock is held already
            return quotas.figures(self.w.session, flow, quota, keys, units,
                                  functools.partial(statement_rows, self.w.conn))
        # Serialise approvals of one pool: two can't both take its last place. The key is
        # the pool (its unit the one standing for the pool), so approvers of different
        # units of one pool wait for each other; taken in key order, in one statement (the
        # array's order). The count is a statement of its own after it: it sees what
        # committed before the last lock was granted.
        locks = [struct.unpack(">q", hashlib.sha256(
                     f"quota|{flow}|{sorted(pool)}|{quota.field}|{quota.value}".encode()
                 ).digest()[:8])[0] for pool in sorted(keys, key=str)]

        def locked_count(stmt: Any, params: dict[str, Any]) -> list[Any]:
            driver_rows(self.w.conn, PG_ADVISORY_LOCKS, {"keys": locks})
            return statement_rows(self.w.conn, stmt, params)
        return quotas.figures(self.w.session, flow, quota, keys, units, locked_count)


class Kernel:
    """Every change of a case, each inside the caller's unit of work (`db.Work`)."""

    def __init__(self, versions: Versions, clock: Callable[[], dt.datetime],
                 calendar: WorkCalendar):
        self.versions = versions
        self.clock = clock
        self.calendar = calendar

    def compiled(self, conn: Any, version_id: int) -> CompiledFlow:
        return self.versions.compiled(conn, version_id)

    # ------------------------------------------------------------------ start

    def start_case(self, w: Work, flow: str, subject_id: int, *, actor: Actor = SYSTEM_ACTOR,
                   unit_id: int | None = None, period_key: str | None = None,
                   data: dict[str, Any] | None = None, version: int | None = None,
                   comment: str | None = None, viewer: Viewer | None = None) -> CaseView:
        """Open a case of the latest (or given) version for a person; it pins that version.
        With `viewer`, only as someone who may start it (`access.check_can_start`). On
        PostgreSQL two round trips: the read (`pg_load_for_start`) and the write with its
        COMMIT (`history.open_case`)."""
        conn = w.conn
        opening = self.read_opening(w, flow, subject_id, unit_id, version, viewer)
        cf = self.compiled(conn, opening.version_id)
        spec = cf.spec
        unit_id, path, tier = opening.unit_id, opening.path, opening.tier
        now = self.clock()
        if period_key is None and spec.period != "none":
            period_key = period_key_of(spec.period, self.calendar.local(now).date())
        problem = check_period_key(spec.period, period_key)
        if problem:
            raise FieldErrors({"period_key": [problem]})
        values = forms.load_start(spec, cf.start_schema, data)
        # Start data only from a starter the definition names (`start: {by}`).
        role = self._start_role(conn, spec, actor, subject_id, path) if values \
            else SYSTEM if actor.is_system else "starter"
        doing = f"start {spec.flow} for person {subject_id}"
        actors.check_next_actor(conn, spec, spec.initial, None, unit_id, path, tier,
                                subject_id, doing, along=opening.org)
        actors.check_evaluators(conn, spec, unit_id, path, tier, subject_id, doing,
                                along=opening.org)
        # The case id was drawn with the read: the case is written once, with the head of
        # its history chain (the hash covers the case id).
        case_id = opening.case_id
        entry = Entry.first(case_id, at=now, actor_id=actor.person_id, actor_role=role,
                            trigger=START, to_state=spec.initial, data=values,
                            comment=comment)
        deadline, planned = plan_state(spec, spec.initial, now, period_key, self.calendar,
                                       values)
        case = {"id": case_id, "flow_id": spec.flow, "version_id": cf.version_id,
                "subject_id": subject_id, "unit_id": unit_id, "tier": tier,
                "period_key": period_key, "state": spec.initial, "data": values,
                "version": 1, "history_seq": 1, "state_visit": 1, "history_hash": entry.hash,
                "created_at": now, "updated_at": now, "state_entered_at": now,
                "deadline_at": deadline}
        w.finish()
        try:  # a duplicate fails the whole unit of work: no savepoint needed
            history.open_case(conn, case, entry, timer_rows(case_id, 1, planned, now),
                              commit=w.owned)
        except IntegrityError:
            raise DuplicateCase(msg(
                "engine.duplicate_case", subject_id=subject_id, flow=spec.flow, title=spec.title,
                period=msg("engine.duplicate_period", period_key=period_key)
                if period_key else "")) from None
        return CaseView(case_id, spec.flow, cf.version, cf.version_id, subject_id, unit_id,
                        tier, period_key, spec.initial,
                        spec.states[spec.initial].final, dict(values), 1, now, now, deadline)

    def read_opening(self, w: Work, flow: str, subject_id: int, unit_id: int | None,
                     version: int | None, viewer: Viewer | None = None) -> StartRead:
        """What opening a case reads before its checks: the version, the person and the path
        of their unit, the case unit (the person's own unless `unit_id`) and its path; on
        PostgreSQL in one round trip with the unit's BEGIN, a fresh case id and the
        organisation the checks ask about (on SQLite the same read, in-process).

        NotFound (or NotPublished) for the version, the person, the unit, in that order;
        with `viewer` the person comes first, then whether the viewer may start their case
        (Forbidden), so that a refusal says nothing about the flow."""
        sqlite = w.dialect == "sqlite"
        needs = self.versions.start_needs.get(flow)
        hosted, params, shape = _along_params(needs, sqlite)
        params.update(flow=flow, version=version, subject_id=subject_id, unit_id=unit_id)
        if sqlite:
            row = driver_rows(w.conn, sqlite_load_for_start(version is not None, shape),
                              params)[0]
            found_id, status, person, home, home_path, tier, unit, path, case_id, org_json = row
            along = json.loads(org_json) if org_json else None
        else:
            row = driver_rows(w.conn, pg_load_for_start(version is not None, bool(needs),
                                                        len(hosted)), params, begin=True)[0]
            (found_id, status, person, home, home_path, tier, unit, path, case_id,
             *along) = row
        if viewer is not None:
            if person is None:
                raise NotFound(msg("engine.person_does_not_exist", subject_id=subject_id))
            check_can_start(viewer, subject_id, home_path)
        version_id = published_id(flow, version, found_id, status)
        if person is None:
            raise NotFound(msg("engine.person_does_not_exist", subject_id=subject_id))
        if unit is None:
            raise NotFound(msg("engine.unit_does_not_exist", unit_id=unit_id or home))
        return StartRead(version_id, tier, unit, path, case_id,
                         _along(unit, path, subject_id, needs, hosted, along if needs else None))

    def _start_role(self, conn: Connection, spec: FlowSpec, actor: Actor, subject_id: int,
                    path: str) -> str:
        """The role through which `actor` may give start data (`start: {by}`), recorded as
        the start record's role; Forbidden when they hold none of them."""
        names = spec.start.by
        if actor.is_system:
            if SYSTEM in names:
                return SYSTEM
        else:
            org = {r for (r,) in conn.execute(select(RoleAssignment.role).where(
                RoleAssignment.person_id == actor.person_id,
                RoleAssignment.role.in_(START_ORG_ROLES)))}
            held = Roles(conn, actor, Opening(subject_id), path, spec)
            for name in sorted(names, key=lambda n: n != "subject"):
                if name != "subject" and actor.person_id == subject_id:
                    continue  # nobody gives a role's start data on their own case
                if name in START_ORG_ROLES and name not in spec.roles:
                    if name in org:
                        return name
                elif name != SYSTEM and held.holds(name):
                    return name
        who = ", ".join(names) or "nobody: this flow takes no data at start"
        raise Forbidden(msg("engine.start_data_may_given", spec_flow=spec.flow, who=who,
                            actor=actor.named(), subject_id=subject_id), rule="start_data")

    # ------------------------------------------------------------------ fire

    def fire(self, w: Work, case_id: int, trigger: str, actor: Actor, *,
             data: dict[str, Any] | None = None, comment: str | None = None,
             expected_version: int | None = None, idempotency_key: str | None = None,
             viewer: Viewer | None = None) -> FireResult:
        """Move one case by `trigger` (see the module docstring for what it checks). The
        API, the CLI and the timer worker (with the timer's row in the same transaction)
        all come here; a request sent again with its Idempotency-Key gets its first
        result."""
        loaded = self.load_for_action(w, case_id, actor, viewer, key=idempotency_key,
                                      records=trigger in self.versions.judged,
                                      needs=self.versions.org_needs.get(trigger))
        row, path = loaded.row, loaded.path
        digest = request_hash(actor, trigger, data, comment) if idempotency_key else None
        if idempotency_key:
            replay = self._replay(w, loaded, actor, trigger, idempotency_key, digest)
            if replay:
                return replay
        if expected_version is not None and row.version != expected_version:
            raise Conflict(case_id, row.version, expected_version)
        cf = self.compiled(w.conn, row.version_id)
        held = Roles(w.conn, actor, row, path, cf.spec, loaded.held, loaded.org)
        t, values, role = self._check(w, cf, row, trigger, actor, data, comment, held)
        self._check_next_actor(w.conn, cf, row, path, t, along=loaded.org)
        batch = None
        if t.rules or t.effects:
            if loaded.records is None:
                known = self._trusted(w.conn, [row])
            else:
                known = {row.id: provenance.trusted(cf.spec, dict(row.data), loaded.records)}
            batch = rules.Batch(t, cf.spec, [_facts(row, values, known)],
                                SqlFacts(w, loaded.org), self.clock(), actor.person_id)
            rules.evaluate(batch)
            if t.effects:
                # Before the write, so that the transaction can commit with it in one round
                # trip: no effect reads the case's new head, and the case is locked, so the
                # versioned write cannot miss and leave the effects' rows committed alone.
                rules.run_effects(batch)
                w.finish()
        return self._apply(w.conn, cf, row, t, actor, role, values, comment,
                           idempotency_key, digest, commit=w.owned)

    def replayed(self, w: Work, case_id: int, trigger: str, actor: Actor, key: str,
                 data: dict[str, Any] | None, comment: str | None,
                 viewer: Viewer | None) -> FireResult | None:
        """After a version conflict: the first result of this request if another session
        took it meanwhile (its Idempotency-Key is on the case now), else None."""
        loaded = self.load_for_action(w, case_id, actor, viewer, key=key, lock=False)
        return self._replay(w, loaded, actor, trigger, key,
                            request_hash(actor, trigger, data, comment))

    def fire_bulk(self, w: Work, case_ids: Iterable[int], trigger: str, actor: Actor, *,
                  data: dict[str, Any] | None = None, comment: str | None = None,
                  viewer: Viewer | None = None) -> BulkResult:
        """One trigger over many cases (批量审定).

        Each case is checked on its own (state, role, fields): a case that fails is reported
        in `refused` and left alone. The rules then judge the remaining cases together — a
        quota counts all of them at once — and a rule refusal refuses the whole batch.
        """
        ids = list(dict.fromkeys(case_ids))
        conn = w.conn
        # Lock the cases, in id order, before judging them: a second bulk request over
        # the same cases waits, then finds them moved and refuses them one by one
        # (instead of a version conflict failing it whole, or a deadlock).
        rows = {r.id: (r, r.path) for r in conn.execute(
            select(CASES, UNITS.c.path).join(UNITS, UNITS.c.id == CASES.c.unit_id)
            .where(CASES.c.id.in_(ids)).order_by(CASES.c.id)
            .with_for_update(of=CASES))}
        held_by_actor = self._assignments(conn, actor)
        refused: dict[int, CivflowError] = {}
        ready: list[tuple[Any, TransitionSpec, dict[str, Any], str]] = []
        orgs: dict = {}  # the organisation read once per unit for the next-actor check
        for cid in ids:
            if cid not in rows or not self.may_see(conn, viewer, *rows[cid]):
                refused[cid] = NotFound(_not_found(cid, viewer))
                continue
            row, path = rows[cid]
            cf = self.compiled(conn, row.version_id)
            try:
                held = Roles(conn, actor, row, path, cf.spec, held_by_actor)
                checked = self._check(w, cf, row, trigger, actor, data, comment, held)
                self._check_next_actor(conn, cf, row, path, checked[0], orgs)
                ready.append((row, *checked))
            except CivflowError as exc:
                refused[cid] = exc
        facts = SqlFacts(w)
        judged = any(t.rules or t.effects for _r, t, _v, _role in ready)
        known = self._trusted(conn, [r for r, _t, _v, _role in ready]) if judged else {}
        # Each transition's rules judge its own cases; batch rules (a quota) judge every
        # case of the flow in the request, whichever version it runs on.
        for t in {id(t): t for _r, t, _v, _role in ready}.values():
            own = [(r, v) for r, tt, v, _role in ready if tt is t]
            spec = self.compiled(conn, own[0][0].version_id).spec
            flow_wide = [_facts(r, v, known) for r, _t, v, _role in ready
                         if r.flow_id == spec.flow]
            rules.evaluate(rules.Batch(t, spec, [_facts(r, v, known) for r, v in own],
                                       facts, self.clock()), whole=flow_wide)
        # In case-id order: two overlapping bulk requests then lock rows in the same
        # order and wait for each other instead of deadlocking. The COMMIT stays a statement
        # of its own here (one round trip over many writes), so the effects may follow.
        done = [self._apply(conn, self.compiled(conn, row.version_id), row, t, actor, role,
                            values, comment, None)
                for row, t, values, role in sorted(ready, key=lambda x: x[0].id)]
        for row, t, values, _role in ready:
            if t.effects:
                rules.run_effects(rules.Batch(
                    t, self.compiled(conn, row.version_id).spec,
                    [_facts(row, values, known)], facts, self.clock(), actor.person_id))
        return BulkResult(done=done, refused=refused)

    # ------------------------------------------------------------------ claims (认领)

    def claim(self, w: Work, case_id: int, actor: Actor, expected_version: int | None = None,
              viewer: Viewer | None = None) -> FireResult:
        """Reserve the current step for `actor`, who must be able to act on it now."""
        row, cf, held = self._for_claim(w, case_id, actor, expected_version, viewer)
        role = self._acting_role(held, cf, row, actor)
        if row.claimed_by == actor.person_id:
            raise ActionNotAllowed(msg("engine.already_claimed_by_you", case_id=case_id))
        if row.claimed_by is not None:
            raise Forbidden(msg("engine.claimed_by_person", case_id=case_id,
                                row_claimed_by=row.claimed_by), rule="claimed")
        return self.record(w.conn, row, actor, role, CLAIM, {}, None,
                           {"claimed_by": actor.person_id, "claimed_at": self.clock()},
                           commit=w.owned)

    def release(self, w: Work, case_id: int, actor: Actor, expected_version: int | None = None,
                viewer: Viewer | None = None) -> FireResult:
        """Give a claimed step back to every holder of the role."""
        row, cf, held = self._for_claim(w, case_id, actor, expected_version, viewer)
        if row.claimed_by != actor.person_id:
            raise Forbidden(msg("engine.not_claimed_by_you", case_id=case_id), rule="claimed")
        role = self._acting_role(held, cf, row, actor)
        return self.record(w.conn, row, actor, role, RELEASE, {}, None,
                           {"claimed_by": None, "claimed_at": None}, commit=w.owned)

    def release_claims_of(self, w: Work, person_id: int, by: int | None) -> int:
        """Give back every open step `person_id` had claimed (认领), each recorded as a
        release by `by` (an admin; the scheduler when None), inside the caller's
        transaction. A person deactivated (停用) must not keep cases that only they could
        act on; how many were released is returned."""
        rows = w.conn.execute(
            select(CASES, UNITS.c.path).join(UNITS, UNITS.c.id == CASES.c.unit_id)
            .where(CASES.c.claimed_by == person_id, CASES.c.closed_at.is_(None))
            .order_by(CASES.c.id).with_for_update(of=CASES)).all()
        actor = Actor.person(by) if by is not None else SYSTEM_ACTOR
        role = "admin" if by is not None else SYSTEM
        released = msg("engine.claim_released_deactivated", person_id=person_id)
        for row in rows:  # the history keeps text, not keys: Chinese first, English beside
            self.record(w.conn, row, actor, role, RELEASE, {},
                        f"{released.render('zh')}（{released.render('en')}）",
                        {"claimed_by": None, "claimed_at": None})
        return len(rows)

    def delegate(self, w: Work, case_id: int, actor: Actor, to_person: int,
                 comment: str | None = None, expected_version: int | None = None,
                 viewer: Viewer | None = None) -> FireResult:
        """Hand the current step to another holder of the role (转办), recorded in history."""
        row, cf, held = self._for_claim(w, case_id, actor, expected_version, viewer)
        role = self._acting_role(held, cf, row, actor)
        if row.claimed_by not in (None, actor.person_id):
            raise Forbidden(msg("engine.claimed_by_person", case_id=case_id,
                                row_claimed_by=row.claimed_by), rule="claimed")
        if w.conn.execute(PERSON_EXISTS, {"id": to_person}).first() is None:
            raise NotFound(msg("engine.person_does_not_exist_3", to_person=to_person))
        target = Roles(w.conn, Actor.person(to_person), row, row.path, cf.spec)
        target_role = self._acting_role(target, cf, row, Actor.person(to_person),
                                        who=msg("engine.person", person_id=to_person))
        if to_person == actor.person_id:
            raise ActionNotAllowed(msg("engine.delegate_someone_else_release"))
        return self.record(w.conn, row, actor, role, DELEGATE,
                           {"to": to_person, "as": target_role}, comment,
                           {"claimed_by": to_person, "claimed_at": self.clock()},
                           commit=w.owned)

    def _for_claim(self, w: Work, case_id: int, actor: Actor, expected: int | None,
                   viewer: Viewer | None) -> tuple[Any, CompiledFlow, Roles]:
        loaded = self.load_for_action(w, case_id, actor, viewer)
        row = loaded.row
        if expected is not None and row.version != expected:
            raise Conflict(case_id, row.version, expected)
        cf = self.compiled(w.conn, row.version_id)
        if cf.spec.states[row.state].final:
            raise ActionNotAllowed(msg("engine.closed", case_id=case_id, row_state=row.state))
        return row, cf, Roles(w.conn, actor, row, loaded.path, cf.spec, loaded.held)

    @staticmethod
    def _acting_role(held: Roles, cf: CompiledFlow, row: Any, actor: Actor,
                     who: str = "you") -> str:
        """The role through which `actor` could act on the current step (not as subject)."""
        for t in cf.spec.transitions_from(row.state):
            role = held.first_allowed(t)
            if role not in (None, "subject", SYSTEM) and not held.self_refusal(t, role):
                return role
        raise Forbidden(msg("engine.cannot_act_on_current", who=who, row_state=row.state,
                            row_id=row.id), rule="role")

    # ------------------------------------------------------------------ reading a case

    def load_for_action(self, w: Work, case_id: int, actor: Actor, viewer: Viewer | None,
                        key: str | None = None, records: bool = False, lock: bool = True,
                        needs: actors.OrgNeeds | None = None) -> Loaded:
        """The case (locked for the action), its unit's path, the actor's role assignments,
        the first use of `key`, with `records` the case's history and with `needs` that
        much of the organisation: one round trip on PostgreSQL. NotFound also when
        `viewer` may not see the case."""
        conn = w.conn
        sqlite = w.dialect == "sqlite"
        hosted, params, shape = _along_params(needs, sqlite)
        params.update(case_id=case_id, person_id=actor.person_id, key=key, records=records)
        if sqlite:  # one statement; BEGIN IMMEDIATE holds the write lock already
            rows = driver_rows(conn, sqlite_load_for_action(shape), params)
            if not rows:
                raise NotFound(_not_found(case_id, viewer))
            found = list(rows[0])
            n = len(CASE_COLUMNS) + 1
            found[n:] = [json.loads(v) if v is not None else None for v in found[n:]]
            found[CASE_COLUMNS.index("data")] = json.loads(found[CASE_COLUMNS.index("data")]
                                                           or "{}")
            row = CaseRow(*found[:n])
            org, held, first_use, recs = found[n:]
        else:
            sql = pg_load_for_action(lock, key is not None, records, bool(needs), len(hosted))
            rows = driver_rows(conn, sql, params, begin=True)  # the unit's BEGIN with it
            n = len(CASE_COLUMNS) + 1
            if rows and lock and rows[0][n + 1] != rows[0][CASE_COLUMNS.index("version")]:
                rows = driver_rows(conn, sql, params)  # see PG_SEEN; the lock is ours now
            if not rows:
                raise NotFound(_not_found(case_id, viewer))
            row = CaseRow(*rows[0][:n])
            held, _seen, first_use, recs, org_holders, *hosts = rows[0][n:]
            org = [org_holders, *hosts] if needs else None
        loaded = Loaded(row, row.path, [tuple(h) for h in held],
                        FirstUse(*first_use) if first_use else None,
                        sorted((Record(case_id, *r) for r in recs), key=lambda r: r.seq)
                        if recs is not None else None,
                        _along(row.unit_id, row.path, row.subject_id, needs, hosted, org))
        if not self.may_see(conn, viewer, loaded.row, loaded.path, loaded.held):
            raise NotFound(_not_found(case_id, viewer))
        return loaded

    def load(self, conn: Any, case_id: int, viewer: Viewer | None = None) -> tuple[Any, str]:
        """The case row and its unit's path (not locked); NotFound also when `viewer` may
        not see it."""
        found = conn.execute(LOAD_CASE, {"case_id": case_id}).first()
        if found is None or not self.may_see(conn, viewer, found, found.path):
            raise NotFound(_not_found(case_id, viewer))
        return found, found.path

    def may_see(self, conn: Any, viewer: Viewer | None, row: Any, path: str,
                held: list[tuple[str, int | None]] | None = None) -> bool:
        """Visible by the organisation (`access`), or the viewer may act on its current
        step — a named group or a unit role the flow gives the step to."""
        if viewer is None or can_see(viewer, row.subject_id, row.claimed_by, path):
            return True
        cf = self.compiled(conn, row.version_id)
        return bool(self.actions(conn, cf, row, path, Actor.person(viewer.person_id), "zh",
                                 viewer.role_units()))

    def actions(self, conn: Any, cf: CompiledFlow, row: Any, path: str, actor: Actor,
                lang: str, held: list[tuple[str, int | None]] | None = None) -> list[Action]:
        """What `actor` may do on the case now, with the fields each action asks for."""
        roles = Roles(conn, actor, row, path, cf.spec, held)
        out = []
        for t in cf.spec.transitions_from(row.state):
            role = roles.first_allowed(t)
            if role is None or roles.self_refusal(t, role):
                continue
            if row.claimed_by not in (None, actor.person_id) and role != "subject":
                continue
            out.append(Action(t.trigger, t.label.text(lang), t.dest,
                              forms.describe(cf.spec.fields, t, lang), t.comment, role))
        return out

    def view(self, row: Any, cf: CompiledFlow) -> CaseView:
        return CaseView(
            id=row.id, flow=row.flow_id, flow_version=cf.version, version_id=row.version_id,
            subject_id=row.subject_id, unit_id=row.unit_id, tier=row.tier,
            period_key=row.period_key, state=row.state,
            final=cf.spec.states[row.state].final, data=dict(row.data), version=row.version,
            created_at=row.created_at, updated_at=row.updated_at, deadline_at=row.deadline_at)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _assignments(conn: Any, actor: Actor) -> list[tuple[str, int | None]]:
        if actor.person_id is None:
            return []
        return [(r, u) for r, u in conn.execute(ASSIGNMENTS, {"person_id": actor.person_id})]

    def _replay(self, w: Work, loaded: Loaded, actor: Actor, trigger: str, key: str,
                digest: str) -> FireResult | None:
        """The first result of a request sent again with its Idempotency-Key, or None when
        the key is new on this case. The key is bound to who sent it and what they sent
        (`request_hash`): only the same actor, entitled to the action, gets the replay."""
        row, rec = loaded.row, loaded.first_use
        case_id = row.id
        if rec is None:
            return None
        if rec.actor_id != actor.person_id:
            raise IdempotencyMismatch(
                msg("engine.idempotency_key_was_used", key_=key, case_id=case_id))
        if rec.trigger != trigger:
            raise IdempotencyMismatch(
                msg("engine.idempotency_key_was_used_2", key_=key, rec_trigger=rec.trigger,
                    case_id=case_id, trigger=trigger))
        # (A record from before keys were bound to the request has no hash to compare.)
        if rec.request_hash is not None and rec.request_hash != digest:
            raise IdempotencyMismatch(
                msg("engine.idempotency_key_was_used_3", key_=key, case_id=case_id,
                    rec_trigger=rec.trigger))
        # Last, before answering: the actor must still be entitled to the action.
        cf = self.compiled(w.conn, row.version_id)
        t = cf.spec.transition(rec.trigger, rec.from_state or "")
        held = Roles(w.conn, actor, row, loaded.path, cf.spec, loaded.held)
        role = held.first_allowed(t) if t is not None else None
        if role is None or held.self_refusal(t, role):
            raise Forbidden(msg("engine.idempotency_key_on_belongs", key_=key, case_id=case_id,
                                actor=actor.named()), rule="role")
        # The case version after an action is its history seq (both start at 1, both +1).
        return FireResult(case_id, rec.trigger, rec.from_state, rec.to_state, rec.seq, rec.seq,
                          replayed=True, flow=row.flow_id)

    def _trusted(self, conn: Any, rows: list[Any]) -> dict[int, dict[str, Any]]:
        """Per case, the stored values that a writer entitled to them wrote (one read of
        the cases' history): a value pre-filled at start, or written outside the engine,
        never reaches a rule or an effect."""
        if not rows:
            return {}
        records: dict[int, list[Any]] = {r.id: [] for r in rows}
        for rec in conn.execute(HISTORY_OF, {"ids": list(records)}):
            records[rec.case_id].append(rec)
        return {r.id: provenance.trusted(self.compiled(conn, r.version_id).spec, dict(r.data),
                                         records[r.id]) for r in rows}

    def _check(self, w: Work, cf: CompiledFlow, row: Any, trigger: str, actor: Actor,
               data: dict[str, Any] | None, comment: str | None, held: Roles
               ) -> tuple[TransitionSpec, dict[str, Any], str]:
        t = cf.transition(trigger, row.state)
        role = held.first_allowed(t)
        if role is None:
            raise Forbidden(
                msg("engine.on_holds_none_these", t_label=t.label, trigger=trigger,
                    row_id=row.id, value=held.describe(t.by), actor=actor.named()),
                rule="role")
        refusal = held.self_refusal(t, role)
        if refusal:
            raise Forbidden(refusal, rule="no_self_approval")
        if row.claimed_by not in (None, actor.person_id) and role not in ("subject", SYSTEM):
            raise Forbidden(msg("engine.claimed_by_person_they", row_id=row.id,
                                row_claimed_by=row.claimed_by), rule="claimed")
        values = forms.load(cf.schema(t, row.state), data)
        if t.comment == "required" and not (comment and comment.strip()):
            raise FieldErrors({"comment": [msg("engine.needs_reason", t_label=t.label,
                                               trigger=trigger)]})
        for name, value in values.items():
            if cf.spec.fields[name].type == "person" and value is not None \
                    and w.conn.execute(PERSON_EXISTS, {"id": value}).first() is None:
                raise FieldErrors({name: [msg("engine.person_does_not_exist_2", value=value)]})
        return t, values, role

    @staticmethod
    def _check_next_actor(conn: Any, cf: CompiledFlow, row: Any, path: str,
                          t: TransitionSpec, cache: dict | None = None,
                          along: actors.Org | None = None) -> None:
        """Refuse a move into a state nobody could act at (`actors.check_next_actor`)."""
        if t.dest != row.state:
            actors.check_next_actor(conn, cf.spec, t.dest, row.id, row.unit_id, path, row.tier,
                                    row.subject_id, f"{t.label.zh} ({t.trigger})", cache,
                                    along)

    def _apply(self, conn: Connection, cf: CompiledFlow, row: Any, t: TransitionSpec,
               actor: Actor, role: str, values: dict[str, Any], comment: str | None,
               idempotency_key: str | None, digest: str | None = None, commit: bool = False
               ) -> FireResult:
        dest = t.dest  # `cf.transition` found the transition from this state: no second look
        now = self.clock()
        merged = {**row.data, **values}
        for name in t.appends:  # 周记实, check-ins: items are added to what is there
            merged[name] = list(row.data.get(name) or []) + list(values.get(name) or [])
        changes: dict[str, Any] = {"state": dest, "data": merged}
        entry = Entry.after(row, at=now, actor_id=actor.person_id, actor_role=role,
                            trigger=t.trigger, to_state=dest, data=values, comment=comment,
                            idempotency_key=idempotency_key, request_hash=digest)
        arm = []
        if dest != row.state:
            # A new visit: its timers are armed; the old visit's are left as they are,
            # dropped by the visit they belong to (`timers.STALE`).
            visit = entry.seq  # the record about to be written enters `dest`
            deadline, planned = plan_state(cf.spec, dest, now, row.period_key, self.calendar,
                                           merged)
            changes.update(deadline_at=deadline, claimed_by=None, claimed_at=None,
                           state_visit=visit, state_entered_at=now)
            arm = timer_rows(row.id, visit, planned, now)
        if cf.spec.states[dest].final:
            changes["closed_at"] = now
        version = history.advance(conn, row, entry, changes, arm=arm, commit=commit)
        return FireResult(row.id, t.trigger, row.state, dest, version, entry.seq,
                          flow=row.flow_id)

    def record(self, conn: Connection, row: Any, actor: Actor, role: str, trigger: str,
               values: dict[str, Any], comment: str | None, changes: dict[str, Any],
               commit: bool = False) -> FireResult:
        """A bookkeeping record that leaves the state as it is (claim, release, delegate)."""
        entry = Entry.after(row, at=self.clock(), actor_id=actor.person_id, actor_role=role,
                            trigger=trigger, to_state=row.state, data=values, comment=comment)
        version = history.advance(conn, row, entry, changes, commit=commit)
        return FireResult(row.id, trigger, row.state, row.state, version, entry.seq,
                          flow=row.flow_id)


def new_case_ids(conn: Connection, n: int) -> list[int]:
    """`n` fresh case ids: from the sequence on PostgreSQL; after the largest id on SQLite,
    whose write transaction (BEGIN IMMEDIATE) holds the database's only write lock."""
    if conn.dialect.name == "postgresql":
        return list(conn.execute(text("SELECT nextval(pg_get_serial_sequence('cases', 'id')) "
                                      "FROM generate_series(1, :n)"), {"n": n}).scalars())
    from sqlalchemy import func

    top = conn.execute(select(func.coalesce(func.max(CASES.c.id), 0))).scalar_one()
    return list(range(top + 1, top + n + 1))


def _not_found(case_id: int, viewer: Viewer | None) -> str:
    # Not 403: whether a case exists is itself not for everyone to know.
    return msg("engine.case_not_found_or_hidden" if viewer else "engine.case_not_found",
               case_id=case_id)


def _facts(row: Any, values: dict[str, Any], known: dict[int, dict[str, Any]]
           ) -> rules.CaseFacts:
    """What rules and effects see of a case: of its stored data only what entitled writers
    wrote (`known`, from `Kernel._trusted`), then what this action submits."""
    return rules.CaseFacts(id=row.id, flow=row.flow_id, subject_id=row.subject_id,
                           unit_id=row.unit_id, tier=row.tier, period_key=row.period_key,
                           state=row.state, data={**known.get(row.id, {}), **values})


@dataclass(frozen=True)
class Opening:
    """The case about to be opened, as far as `Roles` needs one (who is its subject)."""

    subject_id: int
    id: int | None = None


class Roles:
    """Which of a flow's roles an actor holds on one case (read lazily, at most once)."""

    def __init__(self, conn: Any, actor: Actor, row: Any, unit_path: str, spec: FlowSpec,
                 held: list[tuple[str, int | None]] | None = None,
                 along: actors.Org | None = None):
        self.conn, self.actor, self.row, self.spec = conn, actor, row, spec
        self.along = along  # the organisation read with the case, when it was
        self.ancestors = unit_path_ids(unit_path)  # root … case unit
        self.unit_path = unit_path
        self._held = held  # (role, unit_id) pairs; read on first use when not given
        self._evaluators: dict[str, list[int]] = {}  # role name → who evaluates this case

    def _assignments(self) -> list[tuple[str, int | None]]:
        if self._held is None:
            self._held = Kernel._assignments(self.conn, self.actor)
        return self._held

    def holds(self, name: str) -> bool:
        if name == SYSTEM:
            return self.actor.is_system
        if self.actor.is_system:
            return False
        r = self.spec.roles[name]
        if r.resolve == "subject":
            return self.actor.person_id == self.row.subject_id
        if r.resolve == "leader":
            return any(role == "leader" and unit in self.ancestors
                       for role, unit in self._assignments())
        if r.resolve == "unit_role":
            units = self.ancestors if r.inherit else self.ancestors[-1:]
            return any(role == r.role and unit in units for role, unit in self._assignments())
        if r.resolve == "group":
            return any(role == r.group and unit is None for role, unit in self._assignments())
        if r.resolve == "evaluator":
            return self.actor.person_id in self.evaluators(r)
        return False

    def evaluators(self, r: RoleSpec) -> list[int]:
        """Who evaluates this case's subject (评鉴人, `actors.Org.evaluators`): one read."""
        if r.name not in self._evaluators:
            if self.along is not None and self.along.covers(self.row.unit_id, [r]):
                org = self.along.with_hosts([r], self.row.subject_id)
            else:
                org = actors.Org.read_for(self.conn, {self.row.unit_id: self.unit_path}, [r],
                                          [self.row.subject_id])
            self._evaluators[r.name] = org.holders(r, self.row.unit_id, self.row.tier,
                                                   self.row.subject_id)
        return self._evaluators[r.name]

    def first_allowed(self, t: TransitionSpec) -> str | None:
        # The subject's own role first, so that "by: [subject, leader]" records `subject`.
        for name in sorted(t.by, key=lambda n: n != "subject"):
            if self.holds(name):
                return name
        return None

    def self_refusal(self, t: TransitionSpec, role: str) -> str | None:
        if (self.actor.person_id == self.row.subject_id and role != "subject"
                and not t.allow_self):
            return msg("engine.self_refusal", t_label=t.label, trigger=t.trigger, role=role,
                       row_id=self.row.id)
        return None

    def describe(self, names: Iterable[str]) -> str:
        out: list[str] = []
        for n in names:
            if n == SYSTEM:
                out.append(msg("engine.role_system"))
                continue
            r = self.spec.roles[n]
            if r.resolve == "unit_role":
                how = msg("engine.role_unit_role", role=r.role,
                          above=msg("engine.role_unit_role_above") if r.inherit else "")
            elif r.resolve == "group":
                how = msg("engine.role_group", group=r.group)
            elif r.resolve == "evaluator":
                how = msg("engine.role_evaluator",
                          escalate=msg("engine.role_evaluator_escalate") if r.escalate else "",
                          fallback=msg("engine.role_evaluator_fallback", group=r.fallback_group)
                          if r.fallback_group else "")
            elif r.resolve == "subject":
                how = msg("engine.role_subject")
            else:
                how = msg("engine.role_leader")
            out.append(msg("engine.role_named", name=n, how=how))
        # "a or b or c": each `or` a key, so the Chinese reads 或
        described = out[-1] if out else ""
        for first in reversed(out[:-1]):
            described = msg("engine.roles_or", first=first, rest=described)
        return described
