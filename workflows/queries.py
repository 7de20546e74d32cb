"""Read side: case lists and the work queue, each one indexed query plus a count.

Nothing here writes. Lists are filtered by what the viewer may see (`access`), and the
queue by what the viewer may *do* now, worked out from the compiled flows: for every flow
version and state, which roles may fire a transition there.

Shaped for a million cases (bench/query_bench.py, docs/BENCHMARKS.md):
- conditions are on `cases` columns only — a unit subtree becomes the list of its unit ids
  (`subtrees`, one small query) instead of a LIKE on the joined unit path, which no index
  serves inside the OR of the visibility and queue conditions;
- the count and the choice of the page's ids read `cases` alone; the joins (person, unit,
  flow version) are made for the page's rows only, so a deep page walks an index instead
  of joining every row it skips;
- the sort keys match the indexes of migration 0007 (no `col IS NULL` sort key, which no
  index can serve; NULLS LAST only on the nullable deadline).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select, tuple_
from sqlalchemy.orm import Session

from . import actors
from .access import COMMITTEE, LEADER, Viewer, visible_cases
from .models import Case, FlowVersion, Person, Unit

CASES = Case.__table__
SORTABLE = {"id": CASES.c.id, "created_at": CASES.c.created_at,
            "updated_at": CASES.c.updated_at, "deadline_at": CASES.c.deadline_at,
            "state_entered_at": CASES.c.state_entered_at}


@dataclass(frozen=True)
class CaseFilter:
    flow: str | None = None
    state: str | None = None
    unit_id: int | None = None  # this unit and its sub-units
    subject_id: int | None = None
    period: str | None = None
    # (flow, state) pairs, any of them: one 环节 label that several flows give their steps
    steps: tuple[tuple[str, str], ...] | None = None
    tier: str | None = None  # chief / deputy / staff (正职 副职 一般干部)
    not_subject: int | None = None  # leave out this person's own cases (an approver's queue)
    overdue: bool | None = None
    text: str | None = None  # in the subject's name or code
    stuck: bool | None = None  # True: open cases whose current step nobody can act on
    sort: str = "-updated_at"
    page: int = 1
    per_page: int = 20


@dataclass
class CaseRow:
    id: int
    flow: str
    flow_title: str
    flow_version: int
    version_id: int
    subject_id: int
    subject_name: str
    unit_id: int
    unit_name: str
    unit_path: str
    tier: str | None
    period_key: str | None
    state: str
    version: int
    deadline_at: dt.datetime | None
    overdue: bool
    claimed_by: int | None
    created_at: dt.datetime
    updated_at: dt.datetime
    closed: bool
    state_label: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    actions: list[Any] = field(default_factory=list)
    # The deadline falls in a year whose official holidays the calendar does not know
    # (calendar_file.deadline_uncertain): it may be early. Set by the engine.
    deadline_uncertain: bool = False
    # A step with no deadline that moves by itself (结果反馈: accepted after 5 working days
    # of silence): when, and the action's label. Set by the engine on lists and the queue.
    auto_at: dt.datetime | None = None
    auto_action: str = ""


def _base():
    return (select(CASES, Person.name.label("subject_name"), Unit.name.label("unit_name"),
                   Unit.path.label("unit_path"), FlowVersion.version.label("flow_version"),
                   FlowVersion.title.label("flow_title"))
            .join(Person, Person.id == CASES.c.subject_id)
            .join(Unit, Unit.id == CASES.c.unit_id)
            .join(FlowVersion, FlowVersion.id == CASES.c.version_id))


def _filters(s: Session, f: CaseFilter, now: dt.datetime) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.flow:
        conds.append(CASES.c.flow_id == f.flow)
    if f.state:
        conds.append(CASES.c.state == f.state)
    if f.subject_id:
        conds.append(CASES.c.subject_id == f.subject_id)
    if f.period:
        conds.append(CASES.c.period_key == f.period)
    if f.steps:
        conds.append(tuple_(CASES.c.flow_id, CASES.c.state).in_(sorted(f.steps)))
    if f.tier:
        conds.append(CASES.c.tier == f.tier)
    if f.not_subject:
        conds.append(CASES.c.subject_id != f.not_subject)
    if f.unit_id:
        top = select(Unit.path).where(Unit.id == f.unit_id).scalar_subquery()
        ids = s.execute(select(Unit.id).where(Unit.path.like(top + "%"))).scalars().all()
        conds.append(CASES.c.unit_id.in_(ids) if ids else false())
    if f.overdue is not None:
        late = and_(CASES.c.deadline_at < now, CASES.c.closed_at.is_(None))
        # Spelled out, not ~late: NOT over a NULL deadline is NULL, which filters it out.
        on_time = or_(CASES.c.deadline_at.is_(None), CASES.c.deadline_at >= now,
                      CASES.c.closed_at.is_not(None))
        conds.append(late if f.overdue else on_time)
    if f.text:
        # autoescape: a `%` or `_` typed in the search box is that character, not a wildcard.
        text = f.text.strip()
        conds.append(or_(Person.name.icontains(text, autoescape=True),
                         Person.code.icontains(text, autoescape=True)))
    return conds


def _order(sort: str, *then):
    desc = sort.startswith("-")
    col = SORTABLE[sort.lstrip("-")]
    key = col.desc() if desc else col.asc()
    if col.nullable:  # NULLs last either way, the same on SQLite and PostgreSQL
        key = key.nulls_last()
    return [key, *then, CASES.c.id.asc()]


def _row(r, now: dt.datetime) -> CaseRow:
    return CaseRow(
        id=r.id, flow=r.flow_id, flow_title=r.flow_title, flow_version=r.flow_version,
        version_id=r.version_id, subject_id=r.subject_id, subject_name=r.subject_name,
        unit_id=r.unit_id, unit_name=r.unit_name, unit_path=r.unit_path, tier=r.tier,
        period_key=r.period_key, state=r.state, version=r.version, deadline_at=r.deadline_at,
        overdue=bool(r.deadline_at and r.closed_at is None and r.deadline_at < now),
        claimed_by=r.claimed_by, created_at=r.created_at, updated_at=r.updated_at,
        closed=r.closed_at is not None, data=dict(r.data))


@dataclass(frozen=True)
class Subtrees:
    """The ids of the units at or under each of some unit paths (`subtrees`)."""

    ids: dict[str, list[int]]

    def cond(self, paths: Iterable[str]) -> ColumnElement[bool]:
        """`cases.unit_id` in the subtree of any of `paths`: an IN list, which an index
        serves (also inside an OR), where a LIKE on the joined unit path is not."""
        units = sorted({uid for p in paths for uid in self.ids.get(p, ())})
        return CASES.c.unit_id.in_(units) if units else false()


def subtrees(s: Session, paths: Iterable[str]) -> Subtrees:
    """One query for the subtrees of all `paths` (materialised paths: a prefix LIKE)."""
    wanted = sorted(set(paths))
    if not wanted:
        return Subtrees({})
    rows = s.execute(select(Unit.id, Unit.path).where(
        or_(*[Unit.path.like(f"{p}%") for p in wanted]))).all()
    return Subtrees({p: [uid for uid, path in rows if path.startswith(p)] for p in wanted})


def _viewer_subtrees(s: Session, viewer: Viewer) -> Subtrees:
    """The subtrees of every unit the viewer holds a role in (leader, committee, …)."""
    if viewer.sees_all:
        return Subtrees({})
    return subtrees(s, [p for _r, _u, p in viewer.assignments if p])


def _page(s: Session, conds: list[ColumnElement[bool]], order: list[Any], f: CaseFilter,
          now: dt.datetime) -> tuple[list[CaseRow], int]:
    """The total and the page: both decided on `cases` alone (plus `people` for a text
    search), then the page's rows joined for display — in the same order."""
    src = CASES.join(Person, Person.id == CASES.c.subject_id) if f.text else CASES
    total = s.execute(select(func.count()).select_from(src).where(*conds)).scalar()
    ids: Select = (select(CASES.c.id).select_from(src).where(*conds).order_by(*order)
                   .limit(f.per_page).offset((f.page - 1) * f.per_page))
    rows = s.execute(_base().where(CASES.c.id.in_(ids)).order_by(*order)).all()
    return [_row(r, now) for r in rows], int(total or 0)


def list_cases(s: Session, viewer: Viewer, f: CaseFilter, now: dt.datetime,
               flows: dict[int, Any] | None = None) -> tuple[list[CaseRow], int]:
    """Cases the viewer may see — or act on now (a group or unit role of the step)."""
    under = _viewer_subtrees(s, viewer)
    seen = visible_cases(viewer, under.cond(viewer.paths(LEADER, COMMITTEE)))
    if flows is not None and not viewer.sees_all:
        seen = or_(seen, and_(CASES.c.closed_at.is_(None),
                              actionable(viewer, flows, under, s)))
    conds = [seen, *_filters(s, f, now)]
    if f.stuck is not None and flows is not None:
        stuck = actors.stuck_condition(s, flows)
        conds.append(stuck if f.stuck else ~stuck)
    return _page(s, conds, _order(f.sort), f, now)


def count_stuck(s: Session, flows: dict[int, Any]) -> int:
    """Open cases, all units, whose current step nobody can act on (the /metrics gauge)."""
    return int(s.execute(select(func.count()).select_from(CASES)
                         .where(actors.stuck_condition(s, flows))).scalar() or 0)


def actionable(viewer: Viewer, flows: dict[int, Any], under: Subtrees,
               s: Session | None = None) -> ColumnElement[bool]:
    """SQL condition: the case's current step has a transition the viewer may fire.

    `flows` maps version_id → CompiledFlow; `under` the subtrees of the viewer's units
    (`subtrees`). Own cases are left out for roles other than `subject` unless the
    transition allows it (`allow_self`). The exact check per case is still the engine's;
    this condition only has to find the candidates.
    """
    # (kind, key, allow_self) -> {(version_id, state)}
    pairs: dict[tuple[str, str, bool], set[tuple[int, str]]] = defaultdict(set)
    evaluator_roles: dict[str, Any] = {}  # key → RoleSpec, for `resolve: evaluator`
    for vid, cf in flows.items():
        for t in cf.spec.transitions:
            for name in t.by:
                if name == "system":
                    continue
                r = cf.spec.roles[name]
                if r.resolve == "evaluator":  # the same resolution as the engine's
                    key = f"{r.tiers}|{r.escalate}|{r.fallback_group}"
                    evaluator_roles[key] = r
                else:
                    key = {"subject": "", "leader": "leader", "unit_role": r.role or "",
                           "group": r.group or ""}[r.resolve]
                kind = r.resolve if r.resolve != "unit_role" or r.inherit else "unit_role_here"
                for src in t.sources:
                    pairs[(kind, key, t.allow_self)].add((vid, src))
    me = viewer.person_id
    conds = []
    for (kind, key, allow_self), where in pairs.items():
        step = tuple_(CASES.c.version_id, CASES.c.state).in_(sorted(where))
        if kind == "subject":
            who = CASES.c.subject_id == me
        elif kind in ("leader", "unit_role"):
            paths = viewer.paths(key)
            if not paths:
                continue
            who = under.cond(paths)
        elif kind == "unit_role_here":
            units = [u for r, u, _p in viewer.assignments if r == key and u is not None]
            if not units:
                continue
            who = CASES.c.unit_id.in_(units)
        elif kind == "evaluator":
            role = evaluator_roles[key]
            in_group = role.fallback_group is not None and any(
                r == role.fallback_group and u is None for r, u, _p in viewer.assignments)
            if s is None:
                continue
            who = actors.viewer_evaluates(s, role, me, viewer.paths("leader"), in_group)
        else:  # group
            if not any(r == key and u is None for r, u, _p in viewer.assignments):
                continue
            who = CASES.c.id.is_not(None)
        if kind != "subject" and not allow_self:
            who = and_(who, CASES.c.subject_id != me)
        conds.append(and_(step, who))
    return or_(*conds) if conds else false()


def queue(s: Session, viewer: Viewer, flows: dict[int, Any], f: CaseFilter,
          now: dt.datetime) -> tuple[list[CaseRow], int]:
    """Open cases the viewer can act on now, due first; claimed-by-others left out."""
    conds = [CASES.c.closed_at.is_(None),
             actionable(viewer, flows, _viewer_subtrees(s, viewer), s),
             or_(CASES.c.claimed_by.is_(None), CASES.c.claimed_by == viewer.person_id),
             *_filters(s, f, now)]
    return _page(s, conds, _order("deadline_at", CASES.c.state_entered_at), f, now)


def get_row(s: Session, case_id: int, now: dt.datetime) -> CaseRow | None:
    r = s.execute(_base().where(CASES.c.id == case_id)).first()
    return _row(r, now) if r is not None else None


def counts_by_state(s: Session, version_id: int, viewer: Viewer | None = None
                    ) -> dict[str, int]:
    """Cases of a version per state — of those the viewer may see, when one is given (how
    many cases sit in 申诉 is not for every signed-in person to know)."""
    q = select(CASES.c.state, func.count()).where(CASES.c.version_id == version_id)
    if viewer is not None and not viewer.sees_all:
        q = q.select_from(CASES.join(Unit, Unit.id == CASES.c.unit_id)).where(
            visible_cases(viewer))
    return {state: n for state, n in s.execute(q.group_by(CASES.c.state)).all()}
