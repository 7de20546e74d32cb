"""Cycles: a periodic flow with a `cycle` block opens its cases by itself, period by period.

`open_due_periods` is what a node's scheduler calls (every minute or so; any number of nodes
may call it at once). For every flow whose latest published version has a cycle it:

1. works out the periods whose **opening moment** has come — the period's first day
   (`open: period_start`) or last day (`open: period_end`), shifted by `offset_days`, at
   `time` local (Asia/Shanghai by default) — and, per `catch_up`, which of them to open:
   `latest` the most recent one only; `all` every one since the period that was due when
   the cycle began (the publication of the first version of the unbroken run of published
   versions with a cycle), at most `max_catch_up` (60) periods, the most recent ones — older
   ones are skipped with a warning; `none` only one whose opening moment is within `grace`
   (15 minutes) of now, so a node back from downtime opens nothing it missed;
2. **claims** each period by inserting its `cycle_runs` row (insert-on-conflict-do-nothing:
   the primary key (flow, period) picks the one winner) with a lease (`claimed_by`,
   `claim_until`); a run left `opening` by a node that died is taken over once its lease has
   run out (or that this node left after an error), whatever the catch-up policy, with a
   conditional UPDATE whose row count says who won (the same on PostgreSQL and SQLite);
3. **opens** the cases in chunks of `chunk` (1000) people, one transaction each: renew the
   lease (a node that lost it stops, and its chunk rolls back); read the next eligible
   people (keyset on the person id); draw their case ids (the sequence on PostgreSQL, after
   the largest id on SQLite, whose write lock the transaction holds) so that each case is
   written once with the head of its history chain; insert the cases with ON CONFLICT
   (flow, subject, period) DO NOTHING RETURNING id — whoever already has the period's case
   is skipped — then the first history record and the timers of those inserted; count
   them on the run. The last chunk marks the run `done`. On PostgreSQL each bulk INSERT is
   one statement with one array parameter per column (`unnest`), on SQLite an executemany.

An opened case is the one `Engine.start_case` would make for the person as `system`: the
latest published version pinned, the initial state, the person's unit and tier, the form's
start values, history record 1 (`start`, by `system`, chained from GENESIS: a
`history.Entry`, where the chain hash is computed for every record, written here in bulk
by `history.write` and by `Kernel.start_case` one at a time with `history.open_case`) and
the initial state's deadline and timers from `timers.plan_state`, with
`timers.timer_rows`.

Eligible: active people, filtered by `who.tiers` and by `who.units` (unit codes, each with
its sub-units; a code that matches no unit matches nobody and is logged) and, with
`who.contact_points`, to the liaisons (联络员) of the contact points registered for the
period's year (`workflows.contact_register`): one case per contact point, its subject the
liaison, its unit the liaison's — the contact-point unit itself. People who join after their
period was opened are not added by the cycle: start their cases by hand.
People whose case nobody could carry — no evaluator (`resolve: evaluator`, e.g. the top of
the organisation) or nobody to act at the first step (`actors.without_actor`) — are skipped
and logged (a warning naming them), never opened to sit unowned.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Select,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from . import actors, forms, history
from .calendar import WorkCalendar, period_days
from .core import START
from .db import bulk_insert
from .errors import CivflowError
from .kernel import new_case_ids
from .machine import CompiledFlow
from .models import (
    Case,
    ContactPoint,
    CycleRun,
    FlowVersion,
    Person,
    Timer,
    Unit,
)
from .periods import period_key
from .spec import SYSTEM, CycleSpec, FlowSpec
from .timers import node_name, plan_state, timer_rows

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("civflow.cycles")

RUNS = CycleRun.__table__
CASES = Case.__table__
TIMERS = Timer.__table__
PEOPLE = Person.__table__
UNITS = Unit.__table__
CONTACT_POINTS = ContactPoint.__table__
OPENING, DONE = "opening", "done"
MAX_CATCH_UP = 60  # catch_up: all opens at most this many missed periods (the latest ones)
GRACE = dt.timedelta(minutes=15)  # catch_up: none opens a period at most this late
CHUNK = 1000  # people per transaction
LEASE = dt.timedelta(seconds=60)

CASE_KEY = (CASES.c.flow_id, CASES.c.subject_id, CASES.c.period_key)  # the unique key


# --------------------------------------------------------------------------- periods


def next_period(period: str, key: str) -> str:
    _first, last = period_days(period, key)
    return period_key(period, last + dt.timedelta(days=1))


def previous_period(period: str, key: str) -> str:
    first, _last = period_days(period, key)
    return period_key(period, first - dt.timedelta(days=1))


def opening_moment(spec: FlowSpec, key: str, cal: WorkCalendar) -> dt.datetime:
    """When the cases of period `key` open: anchor day + offset_days, at `time` local."""
    cycle = spec.cycle or CycleSpec()
    first, last = period_days(spec.period, key)
    day = (first if cycle.open == "period_start" else last) + dt.timedelta(days=cycle.offset_days)
    return cal.at_time(day, cycle.time)


def latest_due(spec: FlowSpec, now: dt.datetime, cal: WorkCalendar) -> str:
    """The most recent period whose opening moment is at or before `now`."""
    offset = (spec.cycle or CycleSpec()).offset_days
    key = period_key(spec.period, cal.local(now).date() - dt.timedelta(days=offset))
    while opening_moment(spec, nxt := next_period(spec.period, key), cal) <= now:
        key = nxt
    while opening_moment(spec, key, cal) > now:
        key = previous_period(spec.period, key)
    return key


def due_periods(spec: FlowSpec, now: dt.datetime, began: dt.datetime, cal: WorkCalendar,
                grace: dt.timedelta = GRACE, max_catch_up: int = MAX_CATCH_UP,
                opened: Collection[str] = ()) -> list[str]:
    """The periods to open at `now` under the flow's catch-up policy, oldest first, leaving
    out those `opened` already. `began`: when the cycle began (for catch_up: all). Pure."""
    cycle = spec.cycle
    if cycle is None or spec.period == "none":
        return []
    latest = latest_due(spec, now, cal)
    if cycle.catch_up == "latest":
        keys = [latest]
    elif cycle.catch_up == "none":
        keys = [latest] if now - opening_moment(spec, latest, cal) <= grace else []
    else:  # all: back to the period that was due when the cycle began
        first = latest_due(spec, min(began, now), cal)
        keys = [latest]
        while keys[-1] != first and len(keys) < max(max_catch_up, 1):
            keys.append(previous_period(spec.period, keys[-1]))
        keys.reverse()
        if keys[0] != first and any(k not in opened for k in keys):
            log.warning("%s: catch_up all opens only the last %s missed periods (%s to %s); "
                        "older ones down to %s are skipped", spec.flow, len(keys), keys[0],
                        latest, first)
    return [k for k in keys if k not in opened]


# --------------------------------------------------------------------------- opening


def open_due_periods(engine: Engine, now: dt.datetime | None = None, node: str | None = None,
                     lease: dt.timedelta = LEASE, *, grace: dt.timedelta = GRACE,
                     chunk: int = CHUNK, max_catch_up: int = MAX_CATCH_UP
                     ) -> list[tuple[str, str, int]]:
    """Open what is due at `now` (default: the engine's clock) on every cycle flow.

    Returns (flow, period key, cases this call opened) for each period this node opened or
    finished. Safe to call from any number of nodes at once; a failure on one period is
    logged and leaves its run to be taken over when the lease runs out.
    """
    now = now or engine.clock()
    node = node or node_name()
    opened: list[tuple[str, str, int]] = []
    for cf, began in _cycle_flows(engine):
        spec = cf.spec
        with engine.db.unit_of_work(write=False) as s:
            runs = {r.period_key: r for r in s.execute(
                select(RUNS.c.period_key, RUNS.c.status, RUNS.c.claim_until,
                       RUNS.c.claimed_by)
                .where(RUNS.c.flow_id == spec.flow))}
        stale = sorted(k for k, r in runs.items() if r.status == OPENING and (
            r.claim_until is None or r.claim_until < now or r.claimed_by == node))
        due = due_periods(spec, now, began, engine.calendar, grace, max_catch_up, runs)
        for key in stale + due:
            try:
                n = open_period(engine, cf, key, now, node, lease, chunk)
            except Exception:  # noqa: BLE001 - one period must not stop the others
                log.exception("%s %s: opening failed; another check retries after the lease",
                              spec.flow, key)
                continue
            if n is not None:
                opened.append((spec.flow, key, n))
    return opened


def open_period(engine: Engine, cf: CompiledFlow, key: str, now: dt.datetime, node: str,
                lease: dt.timedelta = LEASE, chunk: int = CHUNK) -> int | None:
    """Claim period `key` of a cycle flow and open its cases; None if another node has it.

    Returns how many cases this call opened (the run's `cases_opened` counts every node's).
    """
    spec = cf.spec
    if not _claim(engine, spec.flow, key, now, node, lease):
        return None
    started = time.monotonic()

    def moment() -> dt.datetime:  # `now` moves on with the wall clock during a long run
        return now + dt.timedelta(seconds=time.monotonic() - started)

    with engine.db.unit_of_work(write=False) as s:
        eligible = _eligible(s, spec, key)
    values = forms.load(cf.start_schema, None)
    opened, after = 0, 0
    while True:
        with engine.db.unit_of_work() as s:
            n, after, finished = _open_chunk(engine, s, cf, key, eligible, values, after,
                                             moment(), node, lease, chunk)
            if n is None:  # another node took the run over: our chunk rolls back
                s.rollback()
                log.warning("%s %s: lost the claim after %s cases; another node goes on",
                            spec.flow, key, opened)
                return opened
            opened += n
        if finished:
            log.info("%s %s: opened %s cases", spec.flow, key, opened)
            return opened


def _claim(engine: Engine, flow: str, key: str, now: dt.datetime, node: str,
           lease: dt.timedelta) -> bool:
    """Insert the run row (the primary key decides), or take over an `opening` run whose
    lease has run out (or that this node holds already)."""
    with engine.db.unit_of_work() as s:
        conn = s.connection()
        won = conn.execute(
            _insert(conn)(RUNS).values(
                flow_id=flow, period_key=key, status=OPENING, claimed_by=node,
                claim_until=now + lease, opened_at=now, cases_opened=0)
            .on_conflict_do_nothing(index_elements=[RUNS.c.flow_id, RUNS.c.period_key])
            .returning(RUNS.c.period_key)  # rowcount of an INSERT is not reliable
        ).first() is not None
        if won:
            return True
        return conn.execute(
            update(RUNS).where(RUNS.c.flow_id == flow, RUNS.c.period_key == key,
                               RUNS.c.status == OPENING,
                               or_(RUNS.c.claim_until.is_(None), RUNS.c.claim_until < now,
                                   RUNS.c.claimed_by == node))
            .values(claimed_by=node, claim_until=now + lease)
        ).rowcount == 1


def _open_chunk(engine: Engine, s: Session, cf: CompiledFlow, key: str, eligible: Select,
                values: dict[str, Any], after: int, at: dt.datetime, node: str,
                lease: dt.timedelta, chunk: int) -> tuple[int | None, int, bool]:
    """One transaction: renew the lease, open the cases of the next `chunk` people.

    Returns (cases opened, or None when the claim was lost; last person id; run finished).
    """
    spec, conn = cf.spec, s.connection()
    mine = (RUNS.c.flow_id == spec.flow, RUNS.c.period_key == key,
            RUNS.c.status == OPENING, RUNS.c.claimed_by == node)
    if conn.execute(update(RUNS).where(*mine).values(claim_until=at + lease)).rowcount != 1:
        return None, after, False
    batch = conn.execute(eligible.where(PEOPLE.c.id > after).limit(chunk)).all()
    # Nobody opens a case nobody could carry: a person without an evaluator (the top of
    # the organisation) is skipped and logged; `GET /api/v1/cases?stuck=true` lists cases
    # that became stuck later.
    skipped = actors.without_actor(s, spec, batch)
    if skipped:
        log.warning("%s %s: skipped %s person(s) nobody could act for (no evaluator or no "
                    "actor at the first step): person ids %s", spec.flow, key, len(skipped),
                    ", ".join(map(str, sorted(skipped))))
    people = [p for p in batch if p.id not in skipped]
    opened = 0
    if people:
        # Case ids are drawn first so that each case is written once, with the head of its
        # history chain (the hash covers the case id) — no UPDATE after the INSERT.
        ids = new_case_ids(conn, len(people))
        entries = {case_id: history.Entry.first(
            case_id, at=at, actor_id=None, actor_role=SYSTEM, trigger=START,
            to_state=spec.initial, data=values) for case_id in ids}
        deadline, planned = plan_state(spec, spec.initial, at, key, engine.calendar)
        cases = [{"id": case_id, "flow_id": spec.flow, "version_id": cf.version_id,
                  "subject_id": p.id, "unit_id": p.unit_id, "tier": p.tier, "period_key": key,
                  "state": spec.initial, "data": values, "version": 1, "history_seq": 1,
                  "state_visit": 1, "history_hash": entries[case_id].hash, "created_at": at,
                  "updated_at": at, "state_entered_at": at, "deadline_at": deadline}
                 for case_id, p in zip(ids, people, strict=True)]
        # Someone who already has the period's case (opened by hand, or by a node that died
        # half-way) is skipped by the unique key; only the cases inserted go on.
        inserted = sorted(bulk_insert(conn, CASES, cases, CASE_KEY))
        opened = len(inserted)
        history.write(conn, [entries[case_id] for case_id in inserted])
        for p in planned:  # one statement per timer of the state: most columns are equal
            bulk_insert(conn, TIMERS, [row for case_id in inserted
                                       for row in timer_rows(case_id, 1, [p], at)])
    finished = len(batch) < chunk
    changes: dict[str, Any] = {"cases_opened": RUNS.c.cases_opened + opened}
    if finished:
        changes.update(status=DONE, finished_at=at, claimed_by=None, claim_until=None)
    conn.execute(update(RUNS).where(*mine).values(**changes))
    return opened, (batch[-1].id if batch else after), finished


def _eligible(s: Session, spec: FlowSpec, key: str) -> Select:
    """The eligible people (id, unit, tier) in id order: active, of the cycle's tiers and
    unit subtrees, and with `contact_points` the liaisons (联络员) of the contact points
    registered for the year of period `key` (one contact point per liaison and year, so
    one case per contact point). Whether one already has a case is left to the INSERT's
    ON CONFLICT."""
    cycle = spec.cycle or CycleSpec()
    q = select(PEOPLE.c.id, PEOPLE.c.unit_id, PEOPLE.c.tier).where(PEOPLE.c.active.is_(True))
    if cycle.contact_points:
        q = q.where(PEOPLE.c.id.in_(select(CONTACT_POINTS.c.liaison_id)
                                    .where(CONTACT_POINTS.c.year == int(key[:4]))))
    if cycle.tiers:
        q = q.where(PEOPLE.c.tier.in_(cycle.tiers))
    if cycle.units:
        paths = dict(s.execute(select(UNITS.c.code, UNITS.c.path)
                               .where(UNITS.c.code.in_(cycle.units))).all())
        missing = [c for c in cycle.units if c not in paths]
        if missing:
            log.warning("%s: cycle.who.units names unknown unit(s) %s: nobody is opened "
                        "for them", spec.flow, ", ".join(missing))
        subtree = or_(false(), *[UNITS.c.path.startswith(p) for p in paths.values()])
        q = q.where(PEOPLE.c.unit_id.in_(select(UNITS.c.id).where(subtree)))
    return q.order_by(PEOPLE.c.id)


def _cycle_flows(engine: Engine) -> list[tuple[CompiledFlow, dt.datetime]]:
    """Every flow whose latest published version has a cycle, with the moment its cycle
    began: the publication of the oldest version of the unbroken run of published versions
    with a cycle that ends at the latest (a cycle added in v3 does not reach back to v1)."""
    with engine.db.unit_of_work(write=False) as s:
        rows = s.execute(
            select(FlowVersion.id, FlowVersion.flow_id, FlowVersion.version,
                   func.coalesce(FlowVersion.published_at, FlowVersion.created_at))
            .where(FlowVersion.status == "published")
            .order_by(FlowVersion.flow_id, FlowVersion.version.desc())).all()
        by_flow: dict[str, list[tuple[int, int, dt.datetime]]] = {}
        for vid, flow, version, published in rows:
            by_flow.setdefault(flow, []).append((vid, version, published))
        out = []
        for flow, versions in by_flow.items():  # newest first
            began, latest = None, None
            for vid, version, published in versions:
                try:
                    cf = engine.compiled(s, vid)
                except CivflowError:
                    log.exception("%s v%s does not load; its cycle is not run", flow, version)
                    break
                if cf.spec.cycle is None or cf.spec.period == "none" or (
                        latest is not None and cf.spec.period != latest.spec.period):
                    break  # no cycle here, or another period: the cycle began after it
                latest = latest or cf
                began = published if began is None else min(began, published)
            if latest is not None and began is not None:
                out.append((latest, _aware(began)))
        return out


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _insert(conn) -> Callable[..., Any]:
    """The dialect's INSERT, which has on_conflict_do_nothing (PostgreSQL and SQLite)."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
