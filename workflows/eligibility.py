"""Eligibility lists (任职资格名单): who in a unit may be proposed for the next rank on a
decision date, who may not and why, and who has a priority situation (优先情形).

The judgement is the rule's own: `promotion.eligibility_reasons` with the parameters of the
`promotion_eligible` rule of the flow's published definition (ladder, 优秀 bonus, exam,
minimum 好). This module only gathers the inputs for many people at once — one query per
fact table for the whole list, never one per person — and lays the answers out for the
ledger (JSON, CSV, XLSX).

Priority markers (docs/domain.md §3, "five situations get priority"), from facts:
- `frontline`: a dispatch outcome (下沉一线 / 第一书记, the person fact `dispatch_outcomes`
  the dispatch's approval writes, or an admin enters) that recommends priority for
  promotion (`promotion_priority`), decided on or before the decision date;
- `excellent_years`: at least `priority_excellent_years` (a `promotion_eligible` parameter,
  default 2) consecutive 优秀 years ending with the latest annual result up to the decision
  year (`promotion.excellent_streak`).
Markers inform the committee; they never make an ineligible person eligible.

Who is listed: active people the viewer may see — admins and process owners everyone,
leaders and committee members their units and the units below, anyone else themselves (the
same rule as reading a person's facts, `facts.read`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import ColumnElement, Select, or_, select, true
from sqlalchemy.orm import Session

from . import facts
from .access import COMMITTEE, LEADER, Viewer
from .domain_rules.promotion import (
    Reason,
    eligibility_reasons,
    excellent_streak,
    good_year,
    next_ranks,
)
from .errors import FieldErrors, NotFound
from .ledger import TIER_LABELS, Column
from .messages import key_of, localize, msg
from .models import Case, Person, Unit
from .positions import eligible_params
from .spec import FlowSpec

CASES = Case.__table__


# --------------------------------------------------------------------------- inputs in bulk


def visible_people(viewer: Viewer) -> ColumnElement[bool]:
    """SQL condition on `people` joined with `units`: the people whose facts the viewer may
    read (`access.can_see` for a person)."""
    if viewer.sees_all:
        return true()
    return or_(Person.id == viewer.person_id,
               *[Unit.path.like(f"{p}%") for p in viewer.paths(LEADER, COMMITTEE)])


def regular_grades_of(s: Session, people: Select, year: int, p: dict[str, Any]
                      ) -> dict[int, list[str]]:
    """`promotion.regular_grades` for every person of `people`, in one query."""
    grade = CASES.c.data[p["good_field"]].as_string()
    out: dict[int, list[str]] = defaultdict(list)
    for pid, g in s.execute(select(CASES.c.subject_id, grade).where(
            CASES.c.flow_id == p["good_flow"], CASES.c.subject_id.in_(people),
            CASES.c.period_key.like(f"{year}%"), CASES.c.state.in_(p["good_states"]))):
        if g is not None:
            out[pid].append(g)
    return out


# --------------------------------------------------------------------------- the list


def _reason(r: Reason) -> dict[str, Any]:
    return {"code": r.code, "message": r.message, "key": key_of(r.message), **r.details}


def priority_markers(snap: facts.PersonFacts, on: dt.date, excellent_years: int
                     ) -> list[dict[str, Any]]:
    """The 优先情形 a person's facts show on day `on` (see the module's docstring)."""
    marks = []
    for o in snap.dispatch_outcomes:
        if o.promotion_priority and o.decided_on <= on:
            term = f"{o.term_start or '?'}–{o.term_end or '?'}"
            where = " ".join(x for x in (o.post_type, o.receiving_unit) if x)
            message = msg("eligibility.priority_frontline", where=where, term=term,
                          grade=o.grade, note=o.note or msg("eligibility.fact", id=o.id))
            marks.append({
                "code": "frontline", "message": message, "key": message.key,
                "fact_id": o.id, "post_type": o.post_type, "receiving_unit": o.receiving_unit,
                "term_start": o.term_start.isoformat() if o.term_start else None,
                "term_end": o.term_end.isoformat() if o.term_end else None,
                "grade": o.grade, "decided_on": o.decided_on.isoformat()})
    streak = excellent_streak(snap, on)
    if len(streak) >= excellent_years:
        message = msg("eligibility.priority_excellent_years", n=len(streak),
                      first=streak[0], last=streak[-1])
        marks.append({"code": "excellent_years", "message": message, "key": message.key,
                      "years": list(streak), "needed": excellent_years})
    return marks


def eligibility_list(s: Session, viewer: Viewer, flow: FlowSpec, on: dt.date,
                     unit_id: int | None = None) -> dict[str, Any]:
    """Every active person the viewer may see in the unit's subtree (all units without
    one): current rank, the next rank(s) on the ladder of `flow`'s `promotion_eligible`
    rule, for each whether the person is eligible on `on` with the reasons and numbers
    when not, and the priority markers. Ordered by unit (tree order), then person code."""
    params = eligible_params(flow)
    if params is None:
        raise FieldErrors({"flow": [msg("eligibility.flow_has_no_promotion", flow_flow=flow.flow)]})
    conds = [Person.active.is_(True), visible_people(viewer)]
    unit = None
    if unit_id is not None:
        unit = s.execute(select(Unit.id, Unit.name, Unit.path)
                         .where(Unit.id == unit_id)).first()
        if unit is None:
            raise NotFound(msg("eligibility.unit_does_not_exist", unit_id=unit_id))
        conds.append(Unit.path.like(f"{unit.path}%"))
    base = select(Person.id).join(Unit, Unit.id == Person.unit_id).where(*conds)
    rows = {r.id: r for r in s.execute(
        select(Person.id, Person.code, Person.name, Person.tier, Person.rank,
               Person.rank_since, Unit.id.label("unit_id"), Unit.name.label("unit_name"))
        .join(Unit, Unit.id == Person.unit_id).where(*conds)
        .order_by(Unit.path, Person.code, Person.id)).all()}
    snaps = facts.people_facts(s, base, rows)
    grades = (regular_grades_of(s, base, good_year(params, on), params)
              if params.get("min_good")
              else {})
    ladder = params["ladder"]
    people = []
    for pid, r in rows.items():
        snap = snaps[pid]
        reasons: list[dict[str, Any]] = []
        targets = next_ranks(ladder, snap.rank, params["posts"])
        if snap.rank is None:
            reasons.append({"code": "rank", "message": msg("eligibility.no_rank"),
                            "key": "eligibility.no_rank"})
        elif not targets:
            reasons.append({"code": "ladder", "rank": snap.rank,
                            "message": msg("eligibility.no_next_rank", rank=snap.rank),
                            "key": "eligibility.no_next_rank"})
        judged = []
        for target in targets:
            why = eligibility_reasons(snap, params, target, on, grades.get(pid, []))
            judged.append({"rank": target, "eligible": not why,
                           "reasons": [_reason(x) for x in why]})
        people.append({
            "person": {"id": pid, "code": r.code, "name": r.name},
            "unit": {"id": r.unit_id, "name": r.unit_name}, "tier": r.tier,
            "tier_label": TIER_LABELS.get(r.tier, r.tier or ""), "rank": snap.rank,
            "rank_since": snap.rank_since,
            "eligible": any(t["eligible"] for t in judged), "next_ranks": judged,
            "reasons": reasons,
            "priority": priority_markers(snap, on, params["priority_excellent_years"])})
    return {"flow": flow.flow, "date": on,
            "unit": {"id": unit.id, "name": unit.name} if unit else None,
            "total": len(people), "eligible": sum(1 for p in people if p["eligible"]),
            "people": people}


# --------------------------------------------------------------------------- export

COLUMNS: list[Column] = [
    ("person_code", "人员编号"), ("person", "姓名"), ("unit", "单位"), ("rank", "现职级"),
    ("rank_since", "任现职级时间"), ("target", "拟晋升职级"), ("eligible", "是否符合任职资格"),
    ("reasons", "不符合的原因"), ("priority", "优先情形")]


def export_rows(listing: dict[str, Any], lang: str = "zh") -> list[dict[str, Any]]:
    """`eligibility_list` flattened: one row per person and next rank (one row for a person
    with none), reasons and markers in `lang` joined with "; "."""
    listing = localize(listing, lang)
    out = []
    for p in listing["people"]:
        base = {"person_code": p["person"]["code"], "person": p["person"]["name"],
                "unit": p["unit"]["name"], "rank": p["rank"], "rank_since": p["rank_since"],
                "priority": "; ".join(m["message"] for m in p["priority"])}
        for t in p["next_ranks"] or [None]:
            why = t["reasons"] if t else p["reasons"]
            out.append({**base, "target": t["rank"] if t else None,
                        "eligible": bool(t and t["eligible"]),
                        "reasons": "; ".join(x["message"] for x in why)})
    return out
