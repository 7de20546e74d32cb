"""Moving running cases to a newer version of their flow (迁移).

A case pins the version it started on. When a flow is revised, the process owner may move
its open cases from one version to a newer published one, as Camunda's and spiff-arena's
process instance migration do:

1. **Mapping** (状态映射): each state of the old version maps to the state of the same
   name in the new one; the owner maps the states the new version removed (`old=new`).
2. **Preview** (`plan`, 预览): per case, what would happen — old state → new state, the
   timers disarmed and those armed (with their due dates), the fields the new version no
   longer declares, or why the case cannot move.
3. **Run** (`run`, 迁移): in batches, each case in its own transaction (the case row locked,
   its plan made again on what it is now): the case row moves to the new version, a
   `migrate` history record chained by the hash, the old visit's timers dropped and the new
   state's planned. A case already on the target version is skipped, so a run interrupted
   half-way is resumed by running it again; `migration_runs` keeps who ran it and the counts.

Data is never dropped. A field the new version does not declare keeps its value in the case
(the preview lists it); it appears on no form and no rule of the new version reads it. The
`migrate` record carries the values that were trusted (`provenance.trusted`, judged against
the old version) and that the new version declares: they stay trusted after the move.

Only open cases move (a closed case keeps the version its decision was taken under).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from . import actors, history, provenance
from .access import Viewer
from .errors import CivflowError, Conflict, FieldErrors, Forbidden, NotFound, NotPublished
from .history import BOOKKEEPING
from .messages import msg
from .models import Case, FlowVersion, HistoryRecord, MigrationRun, Person, Timer, Unit
from .spec import SYSTEM, FlowSpec
from .timers import LIVE, REMINDER, REPEAT, Planned, next_repeat, plan_state, timer_rows

if TYPE_CHECKING:
    from .engine import Engine

MIGRATE = provenance.MIGRATE  # the trigger of the history record a move writes
CASES = Case.__table__
HISTORY = HistoryRecord.__table__
TIMERS = Timer.__table__
BATCH = 100  # cases per batch; each case is still its own transaction
RUNNING, DONE, SUPERSEDED = "running", "done", "superseded"
HISTORY_OF = (select(HISTORY.c.case_id, HISTORY.c.seq, HISTORY.c.trigger,
                     HISTORY.c.from_state, HISTORY.c.actor_role, HISTORY.c.data)
              .where(HISTORY.c.case_id.in_(bindparam("ids", expanding=True)))
              .order_by(HISTORY.c.case_id, HISTORY.c.seq))
OPEN_TIMERS = (select(TIMERS.c.kind, TIMERS.c.action, TIMERS.c.due_at)
               .where(TIMERS.c.case_id == bindparam("case_id"),
                      TIMERS.c.state_visit == bindparam("visit"),
                      TIMERS.c.status.in_(LIVE))
               .order_by(TIMERS.c.due_at, TIMERS.c.id))


class MigrationInvalid(FieldErrors):
    """The migration asked for cannot be planned (a bad mapping, a version not newer)."""

    code = "migration_invalid"


@dataclass(frozen=True)
class TimerPlan:
    """A timer of the case: disarmed (pending in the old visit) or armed (planned anew)."""

    kind: str  # deadline | reminder | auto | repeat
    due_at: dt.datetime
    action: str | None = None


@dataclass(frozen=True)
class CasePlan:
    """What migrating one case would do, or why it cannot move (`refusal`)."""

    case_id: int
    subject_id: int
    subject_name: str
    period_key: str | None
    from_state: str
    to_state: str | None
    case_version: int  # the case's optimistic-lock version when planned
    deadline_at: dt.datetime | None = None
    disarm: tuple[TimerPlan, ...] = ()
    arm: tuple[TimerPlan, ...] = ()
    fields_not_declared: tuple[str, ...] = ()  # kept in the case, listed here
    carried: dict[str, Any] = field(default_factory=dict)  # trusted values, re-vouched
    refusal: str | None = None
    planned: tuple[Planned, ...] = field(default=(), repr=False)  # `arm`, with their slots

    @property
    def moves(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True)
class Preview:
    """The preview (预览) of a migration: one plan per open case of the old version."""

    flow: str
    from_version: int
    to_version: int
    mapping: dict[str, str]  # every state of the old version → its state in the new one
    cases: list[CasePlan]

    @property
    def moving(self) -> int:
        return sum(1 for c in self.cases if c.moves)

    @property
    def refused(self) -> int:
        return len(self.cases) - self.moving


@dataclass
class RunResult:
    run_id: int
    flow: str
    from_version: int
    to_version: int
    moved: int = 0
    refused: int = 0
    skipped: int = 0  # already on the target version (moved by an earlier, interrupted run)
    resumed: bool = False
    refusals: dict[int, str] = field(default_factory=dict)
    status: str = RUNNING


@dataclass(frozen=True)
class _Versions:
    flow: str
    old: Any  # FlowVersion row
    new: Any
    old_spec: FlowSpec
    new_spec: FlowSpec
    mapping: dict[str, str]


# --------------------------------------------------------------------------- public


def plan(engine: Engine, flow: str, from_version: int, to_version: int,
         mapping: dict[str, str] | None = None, viewer: Viewer | None = None) -> Preview:
    """The preview of moving every open case of `from_version` to `to_version` (read only).

    MigrationInvalid for a bad request (versions, mapping); per-case refusals in the plans."""
    _check_viewer(viewer)
    with engine.db.unit_of_work(write=False) as s:
        v = _versions(engine, s, flow, from_version, to_version, mapping)
        rows = s.execute(_open_cases(v.old.id).order_by(CASES.c.id)).all()
        plans: list[CasePlan] = []
        now = engine.clock()
        for chunk in _chunks(rows, 500):
            records = _records(s, [r.id for r in chunk])
            plans += [_plan_case(engine, s, v, r, records[r.id], now) for r in chunk]
        return Preview(flow, from_version, to_version, v.mapping, plans)


def run(engine: Engine, flow: str, from_version: int, to_version: int,
        mapping: dict[str, str] | None = None, viewer: Viewer | None = None,
        batch: int = BATCH, progress: Callable[[RunResult], None] | None = None,
        max_batches: int | None = None) -> RunResult:
    """Move the open cases of `from_version` to `to_version`, `batch` at a time, each case
    in its own transaction; idempotent: running it again resumes an interrupted run (the
    `migration_runs` row still running with the same versions and mapping) and skips the
    cases already moved. `max_batches` stops early (the run stays running)."""
    _check_viewer(viewer)
    by = viewer.person_id if viewer is not None else None
    with engine.db.unit_of_work() as s:
        v = _versions(engine, s, flow, from_version, to_version, mapping)
        wanted = _explicit(v)
        existing = s.execute(select(MigrationRun).where(
            MigrationRun.flow_id == flow, MigrationRun.from_version == from_version,
            MigrationRun.to_version == to_version, MigrationRun.status == RUNNING)
            .order_by(MigrationRun.id.desc())).scalars().first()
        if existing is not None and dict(existing.mapping) == wanted:
            row, resumed = existing, True
            row.refused = 0  # the refused cases are tried, and counted, again
        else:
            if existing is not None:  # another mapping: that run will not be resumed
                existing.status, existing.finished_at = SUPERSEDED, engine.clock()
            row = MigrationRun(flow_id=flow, from_version=from_version, to_version=to_version,
                               mapping=wanted, by=by, status=RUNNING,
                               started_at=engine.clock(), moved=0, refused=0, skipped=0)
            s.add(row)
            s.flush()
            resumed = False
        result = RunResult(row.id, flow, from_version, to_version, resumed=resumed)
    after, batches = 0, 0
    while max_batches is None or batches < max_batches:
        with engine.db.unit_of_work(write=False) as s:
            ids = s.execute(select(CASES.c.id).where(
                CASES.c.flow_id == flow, CASES.c.version_id == v.old.id,
                CASES.c.closed_at.is_(None), CASES.c.id > after)
                .order_by(CASES.c.id).limit(batch)).scalars().all()
        if not ids:
            with engine.db.unit_of_work() as s:
                s.execute(update(MigrationRun).where(MigrationRun.id == result.run_id)
                          .values(status=DONE, finished_at=engine.clock()))
            result.status = DONE
            break
        for case_id in ids:
            try:
                outcome = _move(engine, v, case_id, viewer, result.run_id)
            except Conflict as exc:  # changed under us (the row lock should prevent it)
                outcome = f"{exc}; run the migration again"
            if outcome is None:
                result.moved += 1
            elif outcome == "":
                result.skipped += 1
            else:
                result.refused += 1
                result.refusals[case_id] = outcome
        after = ids[-1]
        batches += 1
        if progress:
            progress(result)
    return result


def runs(engine: Engine, flow: str, viewer: Viewer | None = None) -> list[MigrationRun]:
    """The migration runs of a flow, newest first (for the owner's page and the audit)."""
    _check_viewer(viewer)
    with engine.db.unit_of_work(write=False) as s:
        return list(s.execute(select(MigrationRun).where(MigrationRun.flow_id == flow)
                              .order_by(MigrationRun.id.desc())).scalars())


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """`old=new` pairs (the CLI's and the page's form) as a mapping; MigrationInvalid for
    a pair that is not one."""
    out: dict[str, str] = {}
    bad = []
    for pair in pairs:
        pair = pair.strip()
        if not pair:
            continue
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            bad.append(f"{pair!r} is not old=new")
        else:
            out[old.strip()] = new.strip()
    if bad:
        raise MigrationInvalid({"mapping": bad})
    return out


# --------------------------------------------------------------------------- planning


def _check_viewer(viewer: Viewer | None) -> None:
    """Process owners (流程管理员) and admins; None is the operator at the CLI."""
    if viewer is not None and not (viewer.is_owner or viewer.is_admin):
        raise Forbidden(msg("migrate.needs_process_owner"), rule="needs_process_owner")


def _versions(engine: Engine, s: Session, flow: str, from_version: int, to_version: int,
              mapping: dict[str, str] | None) -> _Versions:
    rows = {r.version: r for r in s.execute(select(FlowVersion).where(
        FlowVersion.flow_id == flow, FlowVersion.version.in_([from_version, to_version])))
        .scalars()}
    for n in (from_version, to_version):
        if n not in rows:
            raise NotFound(msg("engine.flow_has_no_version", flow=flow, version=n))
    if to_version <= from_version:
        raise MigrationInvalid({"to": [msg("migrate.not_newer", to_version=to_version,
                                           from_version=from_version)]})
    new = rows[to_version]
    if new.status != "published":
        raise NotPublished(msg("migrate.draft", to_version=to_version, flow=flow))
    old_spec = engine.compiled(s, rows[from_version].id).spec
    new_spec = engine.compiled(s, new.id).spec
    given = dict(mapping or {})
    errors = []
    for old, target in sorted(given.items()):
        if old not in old_spec.states:
            errors.append(msg("migrate.not_a_state_old", old=old, from_version=from_version,
                              states=list(old_spec.states)))
        elif target not in new_spec.states:
            errors.append(msg("migrate.not_a_state_new", old=old, target=target,
                              to_version=to_version, states=list(new_spec.states)))
        elif new_spec.states[target].final and not old_spec.states[old].final:
            errors.append(msg("migrate.final_state", old=old, target=target,
                              to_version=to_version))
    if errors:
        raise MigrationInvalid({"mapping": errors})
    full = {name: given.get(name, name if name in new_spec.states else "")
            for name in old_spec.states}
    return _Versions(flow, rows[from_version], new, old_spec, new_spec, full)


def _explicit(v: _Versions) -> dict[str, str]:
    """The mapping as the owner gave it: what is not the same-name default."""
    return {k: t for k, t in v.mapping.items() if t and t != k}


def _open_cases(version_id: int):
    return (select(CASES, Person.name.label("subject_name"), Unit.path)
            .join(Person, Person.id == CASES.c.subject_id)
            .join(Unit, Unit.id == CASES.c.unit_id)
            .where(CASES.c.version_id == version_id, CASES.c.closed_at.is_(None)))


def _records(s: Session, ids: list[int]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {i: [] for i in ids}
    for rec in s.connection().execute(HISTORY_OF, {"ids": ids}):
        out[rec.case_id].append(rec)
    return out


def _plan_case(engine: Engine, s: Session, v: _Versions, row, records: list[Any],
               now: dt.datetime) -> CasePlan:
    base = {"case_id": row.id, "subject_id": row.subject_id,
            "subject_name": row.subject_name, "period_key": row.period_key,
            "from_state": row.state, "case_version": row.version}
    target = v.mapping.get(row.state) or None
    if target is None:
        return CasePlan(**base, to_state=None, refusal=(
            f"state {row.state!r} is not in version {v.new.version} and is not mapped: "
            f"map it to a state of version {v.new.version}"))
    if v.new_spec.states[target].final:
        return CasePlan(**base, to_state=target, refusal=(
            f"state {target!r} is final in version {v.new.version}: an open case would be "
            "closed without a decision; map its state to an open one"))
    if row.claimed_by is not None:
        return CasePlan(**base, to_state=target, refusal=(
            f"claimed (认领) by person {row.claimed_by}: it moves once the claim is released "
            "or the step is done"))
    try:
        actors.check_next_actor(s, v.new_spec, target, row.id, row.unit_id, row.path,
                                row.tier, row.subject_id, f"migrate case {row.id}")
    except CivflowError as exc:
        return CasePlan(**base, to_state=target, refusal=str(exc))
    data = dict(row.data)
    trusted = provenance.trusted(v.old_spec, data, records)
    carried = {k: val for k, val in trusted.items() if k in v.new_spec.fields}
    differ = _replay_differs(v.new_spec, records, carried, data)
    if differ:
        return CasePlan(**base, to_state=target, refusal=(
            f"its history would not add up to its data under version {v.new.version} "
            f"({', '.join(differ)}): a list field is appended to by a transition of version "
            f"{v.old.version} that version {v.new.version} does not append to, or the case "
            "was changed outside the engine (civflow verify-history)"))
    entered = row.state_entered_at if target == row.state else now
    deadline, planned = _planned(engine, v.new_spec, target, entered, row.period_key, data,
                                 now)
    disarm = tuple(TimerPlan(t.kind, t.due_at, t.action) for t in s.connection().execute(
        OPEN_TIMERS, {"case_id": row.id, "visit": row.state_visit}))
    return CasePlan(**base, to_state=target, deadline_at=deadline, disarm=disarm,
                    arm=tuple(TimerPlan(p.kind, p.due_at, p.action) for p in planned),
                    fields_not_declared=tuple(sorted(k for k in data
                                                     if k not in v.new_spec.fields)),
                    carried=carried, planned=tuple(planned))


def _planned(engine: Engine, spec: FlowSpec, state: str, entered: dt.datetime,
             period_key: str | None, data: dict[str, Any], now: dt.datetime
             ) -> tuple[dt.datetime | None, list[Planned]]:
    """The new state's timers, planned from when the case entered the state (a migration
    gives no extra time). A reminder already past is not sent late; a repeating reminder
    starts again from now; a deadline or an automatic transition already due fires at the
    scheduler's next tick."""
    deadline, planned = plan_state(spec, state, entered, period_key, engine.calendar, data)
    out = []
    for p in planned:
        if p.due_at <= now and p.kind == REMINDER:
            continue
        if p.due_at <= now and p.kind == REPEAT:
            pl = p.payload
            p = Planned(p.kind, next_repeat(pl.get("every"), pl.get("weekday"), pl.get("time"),
                                            now, engine.calendar), p.action, p.slot, pl)
        out.append(p)
    return deadline, out


def _replay_differs(spec: FlowSpec, records: list[Any], carried: dict[str, Any],
                    current: dict[str, Any]) -> list[str]:
    """The fields whose history, replayed as `civflow verify-history` replays it after the
    move (every record with the case's new version's appends, then the migrate record),
    would not add up to the case's data."""
    data: dict[str, Any] = {}
    for rec in records:
        if rec.trigger in BOOKKEEPING:
            continue
        t = spec.transition(rec.trigger, rec.from_state) if rec.from_state else None
        added = t.appends if t else ()
        for k, val in (rec.data or {}).items():
            data[k] = list(data.get(k) or []) + list(val or []) if k in added else val
    data.update(carried)
    return sorted(k for k in set(data) | set(current) if data.get(k) != current.get(k))


def _chunks(rows: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(rows), n):
        yield rows[i:i + n]


# --------------------------------------------------------------------------- moving


def _move(engine: Engine, v: _Versions, case_id: int, viewer: Viewer | None,
          run_id: int) -> str | None:
    """Move one case in its own transaction. None: moved; "": skipped (no longer an open
    case of the old version); otherwise why it was refused."""
    with engine.db.unit_of_work() as s:
        row = s.execute(_open_cases(v.old.id).where(CASES.c.id == case_id)
                        .with_for_update(of=CASES)).first()
        counter = MigrationRun.skipped
        outcome: str | None = ""
        if row is not None:
            now = engine.clock()
            p = _plan_case(engine, s, v, row, _records(s, [case_id])[case_id], now)
            if p.refusal:
                counter, outcome = MigrationRun.refused, p.refusal
            else:
                _write(s, engine, v, row, p, viewer, run_id, now)
                counter, outcome = MigrationRun.moved, None
        # The run's counts commit with the case: exact even when the run is interrupted.
        s.execute(update(MigrationRun).where(MigrationRun.id == run_id)
                  .values({counter: counter + 1}))
        return outcome


def _write(s: Session, engine: Engine, v: _Versions, row, p: CasePlan,
           viewer: Viewer | None, run_id: int, now: dt.datetime) -> None:
    """The case's new head, the chained `migrate` history record and the timers of the new
    state visit, through the one history writer (`history.advance`), in the caller's
    transaction (one case)."""
    actor_id = viewer.person_id if viewer is not None else None
    role = SYSTEM if viewer is None else "process_owner" if viewer.is_owner else "admin"
    # The versions go in the comment: the record's data is summed into the case's data by
    # the chain check (history.verify), so it holds only the values the move carries.
    comment = (f"迁移 migrate {v.flow} v{v.old.version} → v{v.new.version} "
               f"(migration run {run_id})")
    entry = history.Entry.after(row, at=now, actor_id=actor_id, actor_role=role,
                                trigger=MIGRATE, to_state=p.to_state, data=p.carried,
                                comment=comment)
    changes = {"version_id": v.new.id, "state": p.to_state, "state_visit": entry.seq,
               "deadline_at": p.deadline_at}
    if p.to_state != row.state:
        changes["state_entered_at"] = now
    history.advance(s.connection(), row, entry, changes,
                    arm=timer_rows(row.id, entry.seq, list(p.planned), now) if p.planned
                    else None)
