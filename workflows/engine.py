"""The engine: publish flow versions, start cases, list and fire actions.

Every state change, whoever causes it (the API, the scheduler, the CLI), goes through
`Engine.fire` or `Engine.fire_bulk`, and each call is one unit of work: the case read, the
checks (role, fields, rules), the versioned update and the history insert commit together
or not at all. An action costs one case read, one read of the actor's role assignments when
a role other than the subject is asked for, one versioned UPDATE and one history INSERT.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import actors, forms, provenance, queries, quotas, rules
from .access import HELD_ROLES, Viewer, can_see, check_can_start
from .calendar import WorkCalendar
from .calendar_file import deadline_uncertain
from .db import Database
from .errors import (
    ActionNotAllowed,
    CivflowError,
    Conflict,
    DuplicateCase,
    FieldErrors,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
    NotPublished,
)
from .history import GENESIS, record_hash
from .history import verify as verify_chains
from .machine import CompiledFlow
from .models import (
    Case,
    FlowVersion,
    HistoryRecord,
    Person,
    RoleAssignment,
    Timer,
    Unit,
    unit_path_ids,
)
from .periods import check_period_key
from .periods import period_key as period_key_of
from .spec import (
    FLOW_ID,
    START_ORG_ROLES,
    SYSTEM,
    FlowSpec,
    RoleSpec,
    TransitionSpec,
    load_definition,
)
from .timers import Planned, plan_state, timer_rows

CASES = Case.__table__
HISTORY = HistoryRecord.__table__
UNITS = Unit.__table__
ROLES = RoleAssignment.__table__

# The hot path's statements are built once, with bind parameters: building a statement per
# action cost more client CPU than the database spent running it (bench/engine_bench.py).
LOAD_CASE = (select(CASES, UNITS.c.path).join(UNITS, UNITS.c.id == CASES.c.unit_id)
             .where(CASES.c.id == bindparam("case_id")))
ASSIGNMENTS = select(ROLES.c.role, ROLES.c.unit_id).select_from(HELD_ROLES).where(
    ROLES.c.person_id == bindparam("person_id"))  # an inactive person holds no role
VERSIONED_UPDATE = update(CASES).where(CASES.c.id == bindparam("_id"),
                                       CASES.c.version == bindparam("_version"))
INSERT_HISTORY = insert(HISTORY)
ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
TIMERS = Timer.__table__
DISARM = (update(TIMERS).where(TIMERS.c.case_id == bindparam("_case"),
                               TIMERS.c.state_visit == bindparam("_visit"),
                               TIMERS.c.status.in_(["pending", "claimed"]))
          .values(status="dropped"))
START = provenance.START  # the trigger name recorded for a case's first history record
# What rules may read of a case comes from its history (`provenance.trusted`).
HISTORY_OF = (select(HISTORY.c.case_id, HISTORY.c.seq, HISTORY.c.trigger,
                     HISTORY.c.from_state, HISTORY.c.actor_role, HISTORY.c.data)
              .where(HISTORY.c.case_id.in_(bindparam("ids", expanding=True)))
              .order_by(HISTORY.c.case_id, HISTORY.c.seq))
CLAIM, RELEASE, DELEGATE = "claim", "release", "delegate"  # queue bookkeeping, no state change


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Actor:
    """Who acts: a person, or the scheduler (`system`)."""

    person_id: int | None
    is_system: bool = False

    @classmethod
    def person(cls, person_id: int) -> Actor:
        return cls(person_id=person_id)

    def __str__(self) -> str:
        return SYSTEM if self.is_system else f"person {self.person_id}"


SYSTEM_ACTOR = Actor(person_id=None, is_system=True)


@dataclass(frozen=True)
class CaseView:
    id: int
    flow: str
    flow_version: int
    version_id: int
    subject_id: int
    unit_id: int
    tier: str | None
    period_key: str | None
    state: str
    final: bool
    data: dict[str, Any]
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    deadline_at: dt.datetime | None


@dataclass(frozen=True)
class Action:
    """Something the actor may do on a case now, and what it must send."""

    trigger: str
    label: str
    to: str
    requires: list[dict[str, Any]]
    comment: str
    as_role: str


@dataclass(frozen=True)
class FireResult:
    case_id: int
    trigger: str
    from_state: str
    to_state: str
    version: int
    history_seq: int
    replayed: bool = False
    flow: str = ""


@dataclass(frozen=True)
class BulkResult:
    """Per-item results of a bulk action: what moved, and why the rest did not."""

    done: list[FireResult] = field(default_factory=list)
    refused: dict[int, CivflowError] = field(default_factory=dict)


DRAFT, PUBLISHED = "draft", "published"


@dataclass(frozen=True)
class PublishResult:
    flow: str
    version: int
    version_id: int
    content_hash: str
    created: bool  # False: identical content was already stored, or already published
    status: str = PUBLISHED


class _SqlFacts:
    """`rules.Facts` answered from the action's own session."""

    def __init__(self, session: Session):
        self.session = session

    def query(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.session, *args)

    def quota_figures(self, flow: str, quota: quotas.Quota, keys: list[quotas.PoolKey],
                      units: dict[int, int] | None = None
                      ) -> dict[quotas.PoolKey, quotas.PoolFigures]:
        conn = self.session.connection()
        if conn.dialect.name == "postgresql":
            # Serialise approvals of one pool: two can't both take its last place. The key
            # is the pool (its unit the one standing for the pool), so approvers of
            # different units of one pool wait for each other; taken in key order.
            for pool in sorted(keys, key=str):
                key = f"quota|{flow}|{sorted(pool)}|{quota.field}|{quota.value}"
                lock_id = struct.unpack(">q", hashlib.sha256(key.encode()).digest()[:8])[0]
                conn.execute(ADVISORY_LOCK, {"k": lock_id})
        return quotas.figures(self.session, flow, quota, keys, units)


class Engine:
    """One per process. Holds the database and the compiled flows (immutable, cached)."""

    def __init__(self, db: Database, clock: Callable[[], dt.datetime] = utcnow,
                 calendar: WorkCalendar | None = None):
        self.db = db
        self.clock = clock
        self.calendar = calendar or WorkCalendar()
        self._flows: dict[int, CompiledFlow] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ flow versions

    def upload(self, source: str, filename: str, by: int | None = None) -> PublishResult:
        """Validate a definition and store it as a draft version, unless its content exists.

        Identical content (the content hash) creates nothing and returns the version that
        holds it, draft or published.
        """
        spec = load_definition(source, filename)
        for _attempt in range(3):
            try:
                with self.db.unit_of_work() as s:
                    return self._upload(s, spec, source, filename, by)
            except IntegrityError:
                continue  # another node stored the same flow at the same moment: look again
        raise CivflowError("could not store the version: too many concurrent uploads")

    def publish_version(self, flow: str, version: int, by: int | None = None) -> PublishResult:
        """Make a draft version the one new cases start on (发布). Publishing twice is a no-op."""
        with self.db.unit_of_work() as s:
            row = s.execute(select(FlowVersion).where(FlowVersion.flow_id == flow,
                                                      FlowVersion.version == version)
                            .with_for_update()).scalar_one_or_none()
            if row is None:
                raise NotFound(f"flow {flow!r} has no version {version}")
            created = row.status != PUBLISHED
            if created:
                row.status, row.published_at, row.published_by = PUBLISHED, self.clock(), by
            return PublishResult(row.flow_id, row.version, row.id, row.content_hash, created,
                                 row.status)

    def publish(self, source: str, filename: str, by: int | None = None) -> PublishResult:
        """Upload and publish in one step (the CLI and first start use this)."""
        draft = self.upload(source, filename, by)
        published = self.publish_version(draft.flow, draft.version, by)
        return replace(published, created=draft.created or published.created)

    def _upload(self, s: Session, spec: FlowSpec, source: str, filename: str,
                by: int | None) -> PublishResult:
        existing = s.execute(
            select(FlowVersion).where(FlowVersion.flow_id == spec.flow,
                                      FlowVersion.content_hash == spec.content_hash)
        ).scalar_one_or_none()
        if existing is not None:
            return PublishResult(spec.flow, existing.version, existing.id, spec.content_hash,
                                 False, existing.status)
        latest = s.execute(
            select(func.max(FlowVersion.version)).where(FlowVersion.flow_id == spec.flow)
        ).scalar() or 0
        row = FlowVersion(flow_id=spec.flow, version=latest + 1, content_hash=spec.content_hash,
                          title=spec.title.zh, filename=filename, source=source, status=DRAFT,
                          created_at=self.clock(), created_by=by)
        s.add(row)
        s.flush()
        return PublishResult(spec.flow, row.version, row.id, spec.content_hash, True, DRAFT)

    def versions(self, flow: str | None = None, version: int | None = None,
                 with_source: bool = False) -> list[Any]:
        """Version rows (metadata; the source text only when asked) by flow and version."""
        columns = [FlowVersion.id, FlowVersion.flow_id, FlowVersion.version,
                   FlowVersion.status, FlowVersion.content_hash, FlowVersion.title,
                   FlowVersion.filename, FlowVersion.created_at, FlowVersion.published_at]
        if with_source:
            columns.append(FlowVersion.source)
        q = select(*columns).order_by(FlowVersion.flow_id, FlowVersion.version)
        if flow is not None:
            q = q.where(FlowVersion.flow_id == flow)
        if version is not None:
            q = q.where(FlowVersion.version == version)
        with self.db.unit_of_work(write=False) as s:
            return list(s.execute(q).all())

    def version(self, flow: str, version: int, with_source: bool = False) -> Any:
        """One version row, draft or published; NotFound when there is none."""
        rows = self.versions(flow, version, with_source) if FLOW_ID.match(flow) else []
        if not rows:
            raise NotFound(f"flow {flow!r} has no version {version}")
        return rows[0]

    def verify_history(self) -> tuple[int, int, list[Any]]:
        """`history.verify` with each version's appended fields (see its docstring)."""
        with self.db.unit_of_work(write=False) as s:
            flows = self.all_flows(s)

            def appends(version_id: int, trigger: str, source: str | None) -> tuple[str, ...]:
                cf = flows.get(version_id)
                t = cf.spec.transition(trigger, source) if cf and source else None
                return t.appends if t else ()

            return verify_chains(s, appends=appends)

    def audit_case_data(self, flow: str | None = None, batch: int = 2000
                        ) -> tuple[int, list[provenance.Finding]]:
        """(cases checked, every stored value no entitled writer wrote): start data the
        case's definition does not accept at start (or from that starter), values written
        by a transition that does not take them or by a role it does not name, values in
        no history record. Rules already ignore them (`_trusted`); this finds them."""
        with self.db.unit_of_work(write=False) as s:
            flows = self.all_flows(s)
            q = select(CASES.c.id, CASES.c.flow_id, CASES.c.version_id, CASES.c.data)
            h = select(HISTORY.c.case_id, HISTORY.c.seq, HISTORY.c.trigger,
                       HISTORY.c.from_state, HISTORY.c.actor_role, HISTORY.c.data)
            if flow is not None:
                q = q.where(CASES.c.flow_id == flow)
                h = h.join(CASES, CASES.c.id == HISTORY.c.case_id).where(
                    CASES.c.flow_id == flow)
            heads = {r.id: r for r in s.execute(q)}
            found: list[provenance.Finding] = []
            records: list[Any] = []

            def close() -> None:
                head = heads.pop(records[0].case_id, None) if records else None
                if head is not None:
                    found.extend(provenance.audit(head.id, head.flow_id,
                                                  flows[head.version_id].spec,
                                                  dict(head.data), records))

            checked = len(heads)
            rows = s.execute(h.order_by(HISTORY.c.case_id, HISTORY.c.seq)
                             .execution_options(yield_per=batch))
            for rec in rows:
                if records and rec.case_id != records[0].case_id:
                    close()
                    records = []
                records.append(rec)
            close()
            for head in heads.values():  # a case without history: nothing vouches for it
                found.extend(provenance.audit(head.id, head.flow_id,
                                              flows[head.version_id].spec, dict(head.data), []))
            found.sort(key=lambda f: (f.case_id, f.field))
            return checked, found

    def spec_of(self, version_id: int) -> FlowSpec:
        """The compiled (cached) definition of a stored version, draft or published."""
        with self.db.unit_of_work(write=False) as s:
            return self.compiled(s, version_id).spec

    def compiled(self, s: Session, version_id: int) -> CompiledFlow:
        flow = self._flows.get(version_id)
        if flow is None:
            row = s.get(FlowVersion, version_id)
            if row is None:
                raise NotFound(f"flow version {version_id} does not exist")
            flow = CompiledFlow(load_definition(row.source, row.filename), row.id, row.version)
            with self._lock:
                self._flows[version_id] = flow
        return flow

    def _version_id(self, s: Session, flow: str, version: int | None) -> int:
        """The latest published version of a flow, or the given one if it is published."""
        q = select(FlowVersion.id, FlowVersion.status).where(FlowVersion.flow_id == flow)
        if version is None:
            q = q.where(FlowVersion.status == PUBLISHED).order_by(
                FlowVersion.version.desc()).limit(1)
        else:
            q = q.where(FlowVersion.version == version)
        found = s.execute(q).first()
        if found is None:
            what = f"version {version} of flow {flow!r}" if version else f"flow {flow!r}"
            raise NotFound(f"{what} is not published")
        if found.status != PUBLISHED:
            raise NotPublished(f"version {version} of flow {flow!r} is a draft; publish it "
                               "before starting cases on it")
        return found.id

    def flow(self, flow: str, version: int | None = None) -> CompiledFlow:
        with self.db.unit_of_work(write=False) as s:
            return self.compiled(s, self._version_id(s, flow, version))

    # ------------------------------------------------------------------ cases

    def start_case(self, flow: str, subject_id: int, *, actor: Actor = SYSTEM_ACTOR,
                   unit_id: int | None = None, period_key: str | None = None,
                   data: dict[str, Any] | None = None, version: int | None = None,
                   comment: str | None = None) -> CaseView:
        """Open a case of the latest (or given) version for a person; it pins that version."""
        with self.db.unit_of_work() as s:
            cf = self.compiled(s, self._version_id(s, flow, version))
            spec = cf.spec
            subject = s.get(Person, subject_id)
            if subject is None:
                raise NotFound(f"person {subject_id} does not exist")
            unit_id = unit_id or subject.unit_id
            if unit_id != subject.unit_id and s.get(Unit, unit_id) is None:
                raise NotFound(f"unit {unit_id} does not exist")
            now = self.clock()
            if period_key is None and spec.period != "none":
                period_key = period_key_of(spec.period, self.calendar.local(now).date())
            problem = check_period_key(spec.period, period_key)
            if problem:
                raise FieldErrors({"period_key": [problem]})
            values = forms.load_start(spec, cf.start_schema, data)
            # Start data only from a starter the definition names (`start: {by}`).
            role = self._start_role(s, spec, actor, subject_id, unit_id) if values \
                else SYSTEM if actor.is_system else "starter"
            self._check_start_actors(s, spec, unit_id, subject.tier, subject_id)
            case = Case(flow_id=spec.flow, version_id=cf.version_id, subject_id=subject_id,
                        unit_id=unit_id, tier=subject.tier, period_key=period_key,
                        state=spec.initial, data=values, version=1, history_seq=1,
                        state_visit=1, created_at=now, updated_at=now, state_entered_at=now)
            s.add(case)
            try:
                s.flush()
            except IntegrityError:
                raise DuplicateCase(
                    f"person {subject_id} already has a {spec.flow} case"
                    + (f" for {period_key}" if period_key else "")) from None
            case.deadline_at = self._arm(s, cf, case.id, spec.initial, 1, now, period_key,
                                         values)
            h = record_hash(case_id=case.id, seq=1, at=now, actor_id=actor.person_id,
                            actor_role=role, trigger=START, from_state=None,
                            to_state=spec.initial, data=values, comment=comment,
                            prev_hash=GENESIS)
            self._insert_history(s, case.id, 1, now, actor, role, START, None, spec.initial,
                                 values, comment, None, GENESIS, h)
            case.history_hash = h
            return self._view(case, cf)

    def _start_role(self, s: Session, spec: FlowSpec, actor: Actor, subject_id: int,
                    unit_id: int) -> str:
        """The role through which `actor` may give start data (`start: {by}`), recorded as
        the start record's role; Forbidden when they hold none of them."""
        names = spec.start.by
        if actor.is_system:
            if SYSTEM in names:
                return SYSTEM
        else:
            org = {r for (r,) in s.execute(select(RoleAssignment.role).where(
                RoleAssignment.person_id == actor.person_id,
                RoleAssignment.role.in_(START_ORG_ROLES)))}
            path = s.execute(select(Unit.path).where(Unit.id == unit_id)).scalar_one()
            held = _Roles(s, actor, _Opening(subject_id), path, spec)
            for name in sorted(names, key=lambda n: n != "subject"):
                if name != "subject" and actor.person_id == subject_id:
                    continue  # nobody gives a role's start data on their own case
                if name in START_ORG_ROLES and name not in spec.roles:
                    if name in org:
                        return name
                elif name != SYSTEM and held.holds(name):
                    return name
        who = ", ".join(names) or "nobody: this flow takes no data at start"
        raise Forbidden(f"start data of {spec.flow} may be given only by {who}; {actor} "
                        f"holds none of these for person {subject_id}", rule="start_data")

    def get_case(self, case_id: int) -> CaseView:
        with self.db.unit_of_work(write=False) as s:
            row, _path = self._load(s, case_id)
            return self._view(row, self.compiled(s, row.version_id))

    def history(self, case_id: int) -> list[dict[str, Any]]:
        with self.db.unit_of_work(write=False) as s:
            self._load(s, case_id)
            rows = s.execute(select(HistoryRecord).where(HistoryRecord.case_id == case_id)
                             .order_by(HistoryRecord.seq)).scalars()
            return [{
                "seq": r.seq, "at": r.at, "actor_id": r.actor_id, "actor_role": r.actor_role,
                "trigger": r.trigger, "from": r.from_state, "to": r.to_state, "data": r.data,
                "comment": r.comment, "hash": r.hash,
            } for r in rows]

    def actions(self, case_id: int, actor: Actor, lang: str = "zh") -> list[Action]:
        """What `actor` may do on the case now, with the fields each action asks for."""
        with self.db.unit_of_work(write=False) as s:
            row, path = self._load(s, case_id)
            return self._actions(s, self.compiled(s, row.version_id), row, path, actor, lang)

    def fire(self, case_id: int, trigger: str, actor: Actor, *,
             data: dict[str, Any] | None = None, comment: str | None = None,
             expected_version: int | None = None, idempotency_key: str | None = None,
             viewer: Viewer | None = None) -> FireResult:
        """Move one case by `trigger`. See the module docstring for what it checks."""
        try:
            with self.db.unit_of_work() as s:
                return self._fire_in(s, case_id, trigger, actor, data=data, comment=comment,
                                     expected_version=expected_version,
                                     idempotency_key=idempotency_key, viewer=viewer)
        except (Conflict, IntegrityError):
            if idempotency_key:  # the same request may have won in another session
                with self.db.unit_of_work(write=False) as s:
                    row, path = self._load(s, case_id, viewer)
                    replay = self._replay(s, row, path, actor, trigger, idempotency_key,
                                          request_hash(actor, trigger, data, comment))
                if replay:
                    return replay
            raise

    def _fire_in(self, s: Session, case_id: int, trigger: str, actor: Actor, *,
                 data: dict[str, Any] | None = None, comment: str | None = None,
                 expected_version: int | None = None, idempotency_key: str | None = None,
                 viewer: Viewer | None = None) -> FireResult:
        """`fire` inside a caller's transaction: the scheduler fires timers this way, so
        that the timer and the state change it causes commit together."""
        row, path = self._load(s, case_id, viewer)
        digest = request_hash(actor, trigger, data, comment) if idempotency_key else None
        if idempotency_key:
            replay = self._replay(s, row, path, actor, trigger, idempotency_key, digest)
            if replay:
                return replay
        if expected_version is not None and row.version != expected_version:
            raise Conflict(case_id, row.version, expected_version)
        cf = self.compiled(s, row.version_id)
        t, values, role = self._check(s, cf, row, path, trigger, actor, data, comment)
        self._check_next_actor(s, cf, row, path, t)
        known = self._trusted(s, [row]) if t.rules or t.effects else {}
        batch = rules.Batch(t, cf.spec, [_facts(row, values, known)], _SqlFacts(s),
                            self.clock(), actor.person_id)
        rules.evaluate(batch)
        result = self._apply(s, cf, row, t, actor, role, values, comment, idempotency_key,
                             digest)
        if t.effects:
            rules.run_effects(batch)
        return result

    def fire_bulk(self, case_ids: Iterable[int], trigger: str, actor: Actor, *,
                  data: dict[str, Any] | None = None, comment: str | None = None,
                  viewer: Viewer | None = None) -> BulkResult:
        """One trigger over many cases (批量审定).

        Each case is checked on its own (state, role, fields): a case that fails is reported
        in `refused` and left alone. The rules then judge the remaining cases together — a
        quota counts all of them at once — and a rule refusal refuses the whole batch.
        """
        ids = list(dict.fromkeys(case_ids))
        with self.db.unit_of_work() as s:
            # Lock the cases, in id order, before judging them: a second bulk request over
            # the same cases waits, then finds them moved and refuses them one by one
            # (instead of a version conflict failing it whole, or a deadlock).
            rows = {r.id: (r, r.path) for r in s.execute(
                select(CASES, Unit.path).join(Unit, Unit.id == CASES.c.unit_id)
                .where(CASES.c.id.in_(ids)).order_by(CASES.c.id)
                .with_for_update(of=CASES))}
            refused: dict[int, CivflowError] = {}
            ready: list[tuple[Any, TransitionSpec, dict[str, Any], str]] = []
            orgs: dict = {}  # the organisation read once per unit for the next-actor check
            for cid in ids:
                if cid not in rows or not self._may_see(s, viewer, *rows[cid]):
                    refused[cid] = NotFound(_not_found(cid, viewer))
                    continue
                row, path = rows[cid]
                cf = self.compiled(s, row.version_id)
                try:
                    checked = self._check(s, cf, row, path, trigger, actor, data, comment)
                    self._check_next_actor(s, cf, row, path, checked[0], orgs)
                    ready.append((row, *checked))
                except CivflowError as exc:
                    refused[cid] = exc
            facts = _SqlFacts(s)
            judged = any(t.rules or t.effects for _r, t, _v, _role in ready)
            known = self._trusted(s, [r for r, _t, _v, _role in ready]) if judged else {}
            # Each transition's rules judge its own cases; batch rules (a quota) judge every
            # case of the flow in the request, whichever version it runs on.
            for t in {id(t): t for _r, t, _v, _role in ready}.values():
                own = [(r, v) for r, tt, v, _role in ready if tt is t]
                spec = self.compiled(s, own[0][0].version_id).spec
                flow_wide = [_facts(r, v, known) for r, _t, v, _role in ready
                             if r.flow_id == spec.flow]
                rules.evaluate(rules.Batch(t, spec, [_facts(r, v, known) for r, v in own],
                                           facts, self.clock()), whole=flow_wide)
            # In case-id order: two overlapping bulk requests then lock rows in the same
            # order and wait for each other instead of deadlocking.
            done = [self._apply(s, self.compiled(s, row.version_id), row, t, actor, role,
                                values, comment, None)
                    for row, t, values, role in sorted(ready, key=lambda x: x[0].id)]
            for row, t, values, _role in ready:
                if t.effects:
                    rules.run_effects(rules.Batch(
                        t, self.compiled(s, row.version_id).spec,
                        [_facts(row, values, known)],
                        facts, self.clock(), actor.person_id))
            return BulkResult(done=done, refused=refused)

    # ------------------------------------------------------------------ read side, per viewer

    def all_flows(self, s: Session) -> dict[int, CompiledFlow]:
        """Every stored version, compiled (a small table; compiled once per process)."""
        ids = s.execute(select(FlowVersion.id)).scalars().all()
        return {vid: self.compiled(s, vid) for vid in ids}

    def list_cases(self, viewer: Viewer, f: queries.CaseFilter, lang: str = "zh"
                   ) -> tuple[list[queries.CaseRow], int]:
        if f.stuck is not None and not viewer.sees_all:
            raise Forbidden("listing cases by stuck (nobody can act on them) is for admins "
                            "and process owners", rule="needs_admin")
        with self.db.unit_of_work(write=False) as s:
            rows, total = queries.list_cases(s, viewer, f, self.clock(), self.all_flows(s))
            for row in rows:
                self._label(s, row, lang)
            return rows, total

    def count_stuck(self) -> int:
        """Open cases whose current step nobody can act on, in every unit (a gauge)."""
        with self.db.unit_of_work(write=False) as s:
            return queries.count_stuck(s, self.all_flows(s))

    def queue(self, viewer: Viewer, f: queries.CaseFilter, lang: str = "zh"
              ) -> tuple[list[queries.CaseRow], int]:
        """What the viewer can act on now (待办), due first, each with its actions."""
        with self.db.unit_of_work(write=False) as s:
            flows = self.all_flows(s)
            rows, total = queries.queue(s, viewer, flows, f, self.clock())
            actor = Actor.person(viewer.person_id)
            for row in rows:
                self._label(s, row, lang)
                row.actions = self._actions(s, flows[row.version_id], row, row.unit_path,
                                            actor, lang, viewer.role_units())
            return rows, total

    def case_for(self, viewer: Viewer, case_id: int, lang: str = "zh") -> queries.CaseRow:
        """A case the viewer may see, with what they may do on it now (`actions`)."""
        with self.db.unit_of_work(write=False) as s:
            row = queries.get_row(s, case_id, self.clock())
            if row is None or not self._may_see(s, viewer, row, row.unit_path):
                raise NotFound(_not_found(case_id, viewer))
            cf = self._label(s, row, lang)
            row.actions = self._actions(s, cf, row, row.unit_path,
                                        Actor.person(viewer.person_id), lang,
                                        viewer.role_units())
            return row

    def _label(self, s: Session, row: queries.CaseRow, lang: str) -> CompiledFlow:
        cf = self.compiled(s, row.version_id)
        row.state_label = cf.spec.states[row.state].label.text(lang)
        row.deadline_uncertain = not row.closed and deadline_uncertain(self.calendar,
                                                                       row.deadline_at)
        return cf

    def history_for(self, viewer: Viewer, case_id: int) -> list[dict[str, Any]]:
        self.case_for(viewer, case_id)
        return self.history(case_id)

    def timers_for(self, viewer: Viewer, case_id: int) -> list[Any]:
        """The case's timers, newest first: what is due, what fired, what failed and why."""
        self.case_for(viewer, case_id)
        with self.db.unit_of_work(write=False) as s:
            return list(s.execute(select(Timer).where(Timer.case_id == case_id)
                                  .order_by(Timer.id.desc())).scalars())

    def start_case_for(self, viewer: Viewer, flow: str, subject_id: int, **kwargs) -> CaseView:
        with self.db.unit_of_work(write=False) as s:
            if s.get(Person, subject_id) is None:
                raise NotFound(f"person {subject_id} does not exist")
            check_can_start(s, viewer, subject_id)
        return self.start_case(flow, subject_id, actor=Actor.person(viewer.person_id), **kwargs)

    def counts_by_state(self, version_id: int, viewer: Viewer | None = None
                        ) -> dict[str, int]:
        with self.db.unit_of_work(write=False) as s:
            return queries.counts_by_state(s, version_id, viewer)

    def _actions(self, s: Session, cf: CompiledFlow, row, path: str, actor: Actor, lang: str,
                 held: list[tuple[str, int | None]] | None = None) -> list[Action]:
        roles = _Roles(s, actor, row, path, cf.spec, held)
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

    # ------------------------------------------------------------------ internals

    def _may_see(self, s: Session, viewer: Viewer | None, row, path: str) -> bool:
        """Visible by the organisation (`access`), or the viewer may act on its current
        step — a named group or a unit role the flow gives the step to."""
        if _sees(viewer, row, path):
            return True
        cf = self.compiled(s, row.version_id)
        return bool(self._actions(s, cf, row, path, Actor.person(viewer.person_id), "zh",
                                  viewer.role_units()))

    def _load(self, s: Session, case_id: int, viewer: Viewer | None = None):
        """The case row and its unit's path; NotFound also when `viewer` may not see it."""
        found = s.connection().execute(LOAD_CASE, {"case_id": case_id}).first()
        if found is None or not self._may_see(s, viewer, found, found.path):
            raise NotFound(_not_found(case_id, viewer))
        return found, found.path

    def _check(self, s: Session, cf: CompiledFlow, row, path: str, trigger: str,
               actor: Actor, data: dict[str, Any] | None, comment: str | None
               ) -> tuple[TransitionSpec, dict[str, Any], str]:
        t = cf.transition(trigger, row.state)
        held = _Roles(s, actor, row, path, cf.spec)
        role = held.first_allowed(t)
        if role is None:
            raise Forbidden(
                f"{t.label.zh} ({trigger}) on case {row.id} is for "
                f"{held.describe(t.by)}; {actor} holds none of these on this case",
                rule="role")
        refusal = held.self_refusal(t, role)
        if refusal:
            raise Forbidden(refusal, rule="no_self_approval")
        if row.claimed_by not in (None, actor.person_id) and role not in ("subject", SYSTEM):
            raise Forbidden(f"case {row.id} is claimed by person {row.claimed_by}; they can "
                            "act on it, release it or delegate it", rule="claimed")
        values = forms.load(cf.schema(t, row.state), data)
        if t.comment == "required" and not (comment and comment.strip()):
            raise FieldErrors({"comment": [f"{t.label.zh} ({trigger}) needs a reason"]})
        for name, value in values.items():
            if cf.spec.fields[name].type == "person" and value is not None \
                    and s.get(Person, value) is None:
                raise FieldErrors({name: [f"person {value} does not exist"]})
        return t, values, role

    @staticmethod
    def _check_start_actors(s: Session, spec: FlowSpec, unit_id: int, tier: str | None,
                            subject_id: int) -> None:
        """A case starts only when someone can act at its first step and, for a flow with
        an evaluator (评鉴人), when the subject has one: it would otherwise be stuck later."""
        path = s.execute(select(Unit.path).where(Unit.id == unit_id)).scalar() or ""
        doing = f"start {spec.flow} for person {subject_id}"
        actors.check_next_actor(s, spec, spec.initial, None, unit_id, path, tier, subject_id,
                                doing)
        actors.check_evaluators(s, spec, unit_id, path, tier, subject_id, doing)

    @staticmethod
    def _check_next_actor(s: Session, cf: CompiledFlow, row, path: str, t: TransitionSpec,
                          cache: dict | None = None) -> None:
        """Refuse a move into a state nobody could act at (`actors.check_next_actor`)."""
        if t.dest != row.state:
            actors.check_next_actor(s, cf.spec, t.dest, row.id, row.unit_id, path, row.tier,
                                    row.subject_id, f"{t.label.zh} ({t.trigger})", cache)

    def _apply(self, s: Session, cf: CompiledFlow, row, t: TransitionSpec, actor: Actor,
               role: str, values: dict[str, Any], comment: str | None, idempotency_key: str | None,
               digest: str | None = None) -> FireResult:
        dest = cf.fire(t.trigger, row.state)
        now = self.clock()
        merged = {**row.data, **values}
        for name in t.appends:  # 周记实, check-ins: items are added to what is there
            merged[name] = list(row.data.get(name) or []) + list(values.get(name) or [])
        changes: dict[str, Any] = {"state": dest, "data": merged}
        planned: list[Planned] = []
        visit = row.history_seq + 1  # the record about to be written enters `dest`
        if dest != row.state:
            deadline, planned = plan_state(cf.spec, dest, now, row.period_key, self.calendar,
                                           merged)
            changes.update(deadline_at=deadline, claimed_by=None, claimed_at=None,
                           state_visit=visit)
        if cf.spec.states[dest].final:
            changes["closed_at"] = now
        result = self._record(s, row, actor, role, t.trigger, dest, values, comment,
                              idempotency_key, changes, now, digest)
        if dest != row.state:
            old = cf.spec.states[row.state]
            if old.deadline or old.timers:  # timers belong to the visit that armed them
                s.connection().execute(DISARM, {"_case": row.id, "_visit": row.state_visit})
            if planned:
                s.connection().execute(TIMERS.insert(),
                                       timer_rows(row.id, visit, planned, now))
        return result

    def _arm(self, s: Session, cf: CompiledFlow, case_id: int, state: str, visit: int,
             entered: dt.datetime, period_key: str | None, data: dict[str, Any]
             ) -> dt.datetime | None:
        """Insert the timers of a state visit; return its deadline."""
        deadline, planned = plan_state(cf.spec, state, entered, period_key, self.calendar,
                                       data)
        if planned:
            s.connection().execute(TIMERS.insert(),
                                   timer_rows(case_id, visit, planned, entered))
        return deadline

    def _record(self, s: Session, row, actor: Actor, role: str, trigger: str, dest: str,
                values: dict[str, Any], comment: str | None, idempotency_key: str | None,
                changes: dict[str, Any], now: dt.datetime | None = None,
                digest: str | None = None) -> FireResult:
        """The versioned UPDATE and the chained history INSERT that every change makes."""
        now = now or self.clock()
        seq = row.history_seq + 1
        h = record_hash(case_id=row.id, seq=seq, at=now, actor_id=actor.person_id,
                        actor_role=role, trigger=trigger, from_state=row.state,
                        to_state=dest, data=values, comment=comment,
                        prev_hash=row.history_hash)
        changes = {**changes, "version": row.version + 1, "history_seq": seq,
                   "history_hash": h, "updated_at": now}
        if dest != row.state:
            changes["state_entered_at"] = now
        res = s.connection().execute(VERSIONED_UPDATE,
                                     {**changes, "_id": row.id, "_version": row.version})
        if res.rowcount != 1:
            current = s.execute(select(CASES.c.version).where(CASES.c.id == row.id)).scalar()
            raise Conflict(row.id, current or 0, row.version)
        self._insert_history(s, row.id, seq, now, actor, role, trigger, row.state, dest,
                             values, comment, idempotency_key, row.history_hash, h, digest)
        return FireResult(row.id, trigger, row.state, dest, row.version + 1, seq,
                          flow=row.flow_id)

    # ------------------------------------------------------------------ claims (认领)

    def claim(self, case_id: int, actor: Actor, expected_version: int | None = None,
              viewer: Viewer | None = None) -> FireResult:
        """Reserve the current step for `actor`, who must be able to act on it now."""
        with self.db.unit_of_work() as s:
            row, cf, held = self._for_claim(s, case_id, actor, expected_version, viewer)
            role = self._acting_role(held, cf, row, actor)
            if row.claimed_by == actor.person_id:
                raise ActionNotAllowed(f"case {case_id} is already claimed by you")
            if row.claimed_by is not None:
                raise Forbidden(f"case {case_id} is claimed by person {row.claimed_by}",
                                rule="claimed")
            return self._record(s, row, actor, role, CLAIM, row.state, {}, None, None,
                                {"claimed_by": actor.person_id, "claimed_at": self.clock()})

    def release(self, case_id: int, actor: Actor, expected_version: int | None = None,
                viewer: Viewer | None = None) -> FireResult:
        """Give a claimed step back to every holder of the role."""
        with self.db.unit_of_work() as s:
            row, cf, held = self._for_claim(s, case_id, actor, expected_version, viewer)
            if row.claimed_by != actor.person_id:
                raise Forbidden(f"case {case_id} is not claimed by you", rule="claimed")
            role = self._acting_role(held, cf, row, actor)
            return self._record(s, row, actor, role, RELEASE, row.state, {}, None, None,
                                {"claimed_by": None, "claimed_at": None})

    def release_claims_of(self, s: Session, person_id: int, by: int | None) -> int:
        """Give back every open step `person_id` had claimed (认领), each recorded as a
        release by `by` (an admin; the scheduler when None), inside the caller's
        transaction. A person deactivated (停用) must not keep cases that only they could
        act on; how many were released is returned."""
        rows = s.connection().execute(
            select(CASES, UNITS.c.path).join(UNITS, UNITS.c.id == CASES.c.unit_id)
            .where(CASES.c.claimed_by == person_id, CASES.c.closed_at.is_(None))
            .order_by(CASES.c.id).with_for_update(of=CASES)).all()
        actor = Actor.person(by) if by is not None else SYSTEM_ACTOR
        role = "admin" if by is not None else SYSTEM
        for row in rows:
            self._record(s, row, actor, role, RELEASE, row.state, {},
                         f"person {person_id} deactivated (停用): the claim is released", None,
                         {"claimed_by": None, "claimed_at": None})
        return len(rows)

    def delegate(self, case_id: int, actor: Actor, to_person: int,
                 comment: str | None = None, expected_version: int | None = None,
                 viewer: Viewer | None = None) -> FireResult:
        """Hand the current step to another holder of the role (转办), recorded in history."""
        with self.db.unit_of_work() as s:
            row, cf, held = self._for_claim(s, case_id, actor, expected_version, viewer)
            role = self._acting_role(held, cf, row, actor)
            if row.claimed_by not in (None, actor.person_id):
                raise Forbidden(f"case {case_id} is claimed by person {row.claimed_by}",
                                rule="claimed")
            if s.get(Person, to_person) is None:
                raise NotFound(f"person {to_person} does not exist")
            target = _Roles(s, Actor.person(to_person), row, row.path, cf.spec)
            target_role = self._acting_role(target, cf, row, Actor.person(to_person),
                                            who=f"person {to_person}")
            if to_person == actor.person_id:
                raise ActionNotAllowed("delegate to someone else, or release the case")
            return self._record(s, row, actor, role, DELEGATE, row.state,
                                {"to": to_person, "as": target_role}, comment, None,
                                {"claimed_by": to_person, "claimed_at": self.clock()})

    def _for_claim(self, s: Session, case_id: int, actor: Actor, expected: int | None,
                   viewer: Viewer | None):
        row, path = self._load(s, case_id, viewer)
        if expected is not None and row.version != expected:
            raise Conflict(case_id, row.version, expected)
        cf = self.compiled(s, row.version_id)
        if cf.spec.states[row.state].final:
            raise ActionNotAllowed(f"case {case_id} is closed ({row.state})")
        return row, cf, _Roles(s, actor, row, path, cf.spec)

    @staticmethod
    def _acting_role(held: _Roles, cf: CompiledFlow, row, actor: Actor,
                     who: str = "you") -> str:
        """The role through which `actor` could act on the current step (not as subject)."""
        for t in cf.spec.transitions_from(row.state):
            role = held.first_allowed(t)
            if role not in (None, "subject", SYSTEM) and not held.self_refusal(t, role):
                return role
        raise Forbidden(f"{who} cannot act on the current step ({row.state}) of case {row.id}",
                        rule="role")

    def _insert_history(self, s: Session, case_id: int, seq: int, at: dt.datetime,
                        actor: Actor, role: str, trigger: str, from_state: str | None,
                        to_state: str, data: dict[str, Any], comment: str | None,
                        idempotency_key: str | None, prev: str, h: str,
                        digest: str | None = None) -> None:
        s.connection().execute(INSERT_HISTORY, [{
            "case_id": case_id, "seq": seq, "at": at, "actor_id": actor.person_id,
            "actor_role": role, "trigger": trigger, "from_state": from_state,
            "to_state": to_state, "data": data, "comment": comment,
            "idempotency_key": idempotency_key, "request_hash": digest, "prev_hash": prev,
            "hash": h}])

    def _replay(self, s: Session, row, path: str, actor: Actor, trigger: str, key: str,
                digest: str) -> FireResult | None:
        """The first result of a request sent again with its Idempotency-Key, or None when
        the key is new on this case. The key is bound to who sent it and what they sent
        (`request_hash`): only the same actor, entitled to the action, gets the replay."""
        case_id = row.id
        rec = s.execute(select(HISTORY.c.trigger, HISTORY.c.from_state, HISTORY.c.to_state,
                               HISTORY.c.seq, HISTORY.c.actor_id, HISTORY.c.request_hash)
                        .where(HISTORY.c.case_id == case_id,
                               HISTORY.c.idempotency_key == key)).first()
        if rec is None:
            return None
        if rec.actor_id != actor.person_id:
            raise IdempotencyMismatch(
                f"idempotency key {key!r} was used on case {case_id} by someone else; "
                "use a new key for your own action")
        if rec.trigger != trigger:
            raise IdempotencyMismatch(
                f"idempotency key {key!r} was used for {rec.trigger!r} on case {case_id}, "
                f"not {trigger!r}; use a new key for a new action")
        # (A record from before keys were bound to the request has no hash to compare.)
        if rec.request_hash is not None and rec.request_hash != digest:
            raise IdempotencyMismatch(
                f"idempotency key {key!r} was used on case {case_id} for {rec.trigger!r} with "
                "other data or another comment; nothing was done — send the first request "
                "unchanged to get its result, or use a new key for a new action")
        # Last, before answering: the actor must still be entitled to the action.
        cf = self.compiled(s, row.version_id)
        t = cf.spec.transition(rec.trigger, rec.from_state or "")
        held = _Roles(s, actor, row, path, cf.spec)
        role = held.first_allowed(t) if t is not None else None
        if role is None or held.self_refusal(t, role):
            raise Forbidden(f"idempotency key {key!r} on case {case_id} belongs to an action "
                            f"{actor} may not take; use a new key", rule="role")
        # The case version after an action is its history seq (both start at 1, both +1).
        return FireResult(case_id, rec.trigger, rec.from_state, rec.to_state, rec.seq, rec.seq,
                          replayed=True, flow=row.flow_id)

    def _trusted(self, s: Session, rows: list[Any]) -> dict[int, dict[str, Any]]:
        """Per case, the stored values that a writer entitled to them wrote (one read of
        the cases' history): a value pre-filled at start, or written outside the engine,
        never reaches a rule or an effect."""
        if not rows:
            return {}
        records: dict[int, list[Any]] = {r.id: [] for r in rows}
        for rec in s.connection().execute(HISTORY_OF, {"ids": list(records)}):
            records[rec.case_id].append(rec)
        return {r.id: provenance.trusted(self.compiled(s, r.version_id).spec, dict(r.data),
                                         records[r.id]) for r in rows}

    def _view(self, row, cf: CompiledFlow) -> CaseView:
        return CaseView(
            id=row.id, flow=row.flow_id, flow_version=cf.version, version_id=row.version_id,
            subject_id=row.subject_id, unit_id=row.unit_id, tier=row.tier,
            period_key=row.period_key, state=row.state,
            final=cf.spec.states[row.state].final, data=dict(row.data), version=row.version,
            created_at=row.created_at, updated_at=row.updated_at, deadline_at=row.deadline_at)


def request_hash(actor: Actor, trigger: str, data: dict[str, Any] | None,
                 comment: str | None) -> str:
    """What an Idempotency-Key was first used for: who, which action, what data and comment
    (canonical JSON, hashed). The same key with another of these is another request."""
    raw = json.dumps({"actor": actor.person_id, "system": actor.is_system, "trigger": trigger,
                      "data": data or {}, "comment": comment},
                     sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def _sees(viewer: Viewer | None, row, path: str) -> bool:
    return viewer is None or can_see(viewer, row.subject_id, row.claimed_by, path)


def _not_found(case_id: int, viewer: Viewer | None) -> str:
    # Not 403: whether a case exists is itself not for everyone to know.
    return f"case {case_id} does not exist" + (" or is not visible to you" if viewer else "")


def _facts(row, values: dict[str, Any], known: dict[int, dict[str, Any]]) -> rules.CaseFacts:
    """What rules and effects see of a case: of its stored data only what entitled writers
    wrote (`known`, from `Engine._trusted`), then what this action submits."""
    return rules.CaseFacts(id=row.id, flow=row.flow_id, subject_id=row.subject_id,
                           unit_id=row.unit_id, tier=row.tier, period_key=row.period_key,
                           state=row.state, data={**known.get(row.id, {}), **values})


@dataclass(frozen=True)
class _Opening:
    """The case about to be opened, as far as `_Roles` needs one (who is its subject)."""

    subject_id: int
    id: int | None = None


class _Roles:
    """Which of a flow's roles an actor holds on one case (read lazily, at most once)."""

    def __init__(self, s: Session | None, actor: Actor, row, unit_path: str, spec: FlowSpec,
                 held: list[tuple[str, int | None]] | None = None):
        self.s, self.actor, self.row, self.spec = s, actor, row, spec
        self.ancestors = unit_path_ids(unit_path)  # root … case unit
        self.unit_path = unit_path
        self._held = held  # (role, unit_id) pairs; read on first use when not given
        self._evaluators: dict[str, list[int]] = {}  # role name → who evaluates this case

    def _assignments(self) -> list[tuple[str, int | None]]:
        if self._held is None:
            self._held = [] if self.actor.person_id is None else [
                (r, u) for r, u in self.s.connection().execute(
                    ASSIGNMENTS, {"person_id": self.actor.person_id})]
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
            unit_roles, groups = actors.role_needs([r])
            org = actors.Org.read(self.s, {self.row.unit_id: self.unit_path}, unit_roles,
                                  groups).load_hosts(self.s, [r], [self.row.subject_id])
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
            return (f"{t.label.zh} ({t.trigger}): nobody acts as {role} on their own case "
                    f"(case {self.row.id}); another holder of the role must do it")
        return None

    def describe(self, names: Iterable[str]) -> str:
        out = []
        for n in names:
            if n == SYSTEM:
                out.append("system (the scheduler)")
                continue
            r = self.spec.roles[n]
            how = {"subject": "the person assessed",
                   "leader": "a leader of the case's unit or a unit above it",
                   "unit_role": f"a holder of {r.role} in the case's unit"
                                + (" or above" if r.inherit else ""),
                   "group": f"a member of group {r.group}",
                   "evaluator": "the person's evaluator (评鉴人: a higher tier of the unit, "
                                "else its 分管领导"
                                + (", else the unit above" if r.escalate else "")
                                + (f", else group {r.fallback_group}" if r.fallback_group
                                   else "") + ")"}[r.resolve]
            out.append(f"{n} ({how})")
        return " or ".join(out)
