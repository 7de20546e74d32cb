"""Queries over frontline dispatch cases (下沉一线 / 第一书记, docs/frontline-dispatch.md).

- `shortfalls(s, minimum=None)`: monthly check-ins whose days in post are below the
  minimum (在岗天数不足). The minimum is the `min_days` parameter of the `check_in` rule in
  the definition each case is pinned to — the definition is the only place the number
  lives; `minimum=` overrides it for a what-if report.
- `dispatch_outcomes(s, person_id)`: the approved and recorded results (closed cases) of
  one person — grade, commendation proposal, priority for promotion, term dates, check-in
  shortfalls — read from the cases. Promotion reads the person fact `dispatch_outcomes`
  instead (workflows/facts.py), which the approval writes (effect
  `record_dispatch_outcome`) and an admin may enter for a dispatch before civflow.

Both take a SQLAlchemy session (and so run inside a caller's transaction) and only read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from .models import Case, FlowVersion
from .rules import uses
from .spec import FlowSpec, load_definition

FLOW = "frontline-dispatch"
CHECK_INS = "check_ins"
CLOSED = "closed"  # 已审定备案: the only state whose cases carry an outcome
CHECK_IN_RULE = "check_in"
DEFAULT_MIN_DAYS = 20  # only when a definition has no check_in rule at all


@dataclass(frozen=True)
class Shortfall:
    """One check-in below the minimum days in post (在岗天数不足)."""

    case_id: int
    person_id: int
    unit_id: int
    state: str
    month: str
    days_in_post: int
    minimum: int
    note: str | None = None

    @property
    def missing(self) -> int:
        return self.minimum - self.days_in_post


@dataclass(frozen=True)
class DispatchOutcome:
    """The recorded result of one finished dispatch, as its case holds it."""

    case_id: int
    person_id: int
    post_type: str | None
    receiving_unit: str | None
    term_start: dt.date | None
    term_end: dt.date | None
    grade: str | None  # 优秀 / 称职 / 基本称职 / 不称职
    commendation_proposed: bool
    promotion_priority: bool
    closed_at: dt.datetime | None
    shortfall_months: int  # check-ins below the definition's minimum

    @property
    def excellent(self) -> bool:
        return self.grade == "优秀"


def check_in_minimum(spec: FlowSpec, field: str = CHECK_INS) -> int | None:
    """`min_days` of the `check_in` rule on `field` in a definition, or None without one."""
    for _t, params in uses(spec, CHECK_IN_RULE):
        if params["field"] == field:
            return params["min_days"]
    return None


class _Specs:
    """Flow versions parsed once per query."""

    def __init__(self, s: Session):
        self.s, self._specs = s, {}

    def __call__(self, version_id: int) -> FlowSpec:
        if version_id not in self._specs:
            row = self.s.get(FlowVersion, version_id)
            self._specs[version_id] = load_definition(row.source, row.filename)
        return self._specs[version_id]


def _minimum(spec: FlowSpec) -> int:
    found = check_in_minimum(spec)
    return DEFAULT_MIN_DAYS if found is None else found


def _below(data: dict[str, Any], minimum: int) -> list[dict[str, Any]]:
    return [item for item in data.get(CHECK_INS) or []
            if isinstance(item.get("days_in_post"), int) and item["days_in_post"] < minimum]


def shortfalls(s: Session, minimum: int | None = None, *, flow: str = FLOW,
               person_id: int | None = None, unit_ids: list[int] | None = None,
               case_id: int | None = None) -> list[Shortfall]:
    """Check-ins below the minimum days in post, in every state (a running dispatch as well
    as a finished one), ordered by case and month."""
    q = select(Case).where(Case.flow_id == flow).order_by(Case.id)
    if person_id is not None:
        q = q.where(Case.subject_id == person_id)
    if unit_ids is not None:
        q = q.where(Case.unit_id.in_(unit_ids))
    if case_id is not None:
        q = q.where(Case.id == case_id)
    specs = _Specs(s)
    out = []
    for case in s.execute(q).scalars():
        least = minimum if minimum is not None else _minimum(specs(case.version_id))
        for item in sorted(_below(case.data or {}, least), key=lambda i: str(i.get("month"))):
            out.append(Shortfall(case.id, case.subject_id, case.unit_id, case.state,
                                 str(item.get("month")), item["days_in_post"], least,
                                 item.get("note")))
    return out


def _day(value: Any) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def dispatch_outcomes(s: Session, person_id: int, *, flow: str = FLOW
                      ) -> list[DispatchOutcome]:
    """The closed (审定备案) dispatches of a person, oldest term first."""
    return outcomes_of(s, Case.subject_id == person_id, flow=flow)


def outcomes_of(s: Session, subjects: ColumnElement[bool], *, flow: str = FLOW
                ) -> list[DispatchOutcome]:
    """`dispatch_outcomes` of every person `subjects` (a condition on the case) matches, in
    one query — for lists of many people (the eligibility list, workflows/eligibility.py)."""
    rows = s.execute(select(Case).where(Case.flow_id == flow, subjects,
                                        Case.state == CLOSED)).scalars()
    specs = _Specs(s)
    out = []
    for case in rows:
        d = case.data or {}
        out.append(DispatchOutcome(
            case_id=case.id, person_id=case.subject_id, post_type=d.get("post_type"),
            receiving_unit=d.get("receiving_unit"), term_start=_day(d.get("term_start")),
            term_end=_day(d.get("term_end")), grade=d.get("grade"),
            commendation_proposed=d.get("commendation_proposed") is True,
            promotion_priority=d.get("promotion_priority") is True, closed_at=case.closed_at,
            shortfall_months=len(_below(d, _minimum(specs(case.version_id))))))
    return sorted(out, key=lambda o: (o.term_end or dt.date.max, o.case_id))
