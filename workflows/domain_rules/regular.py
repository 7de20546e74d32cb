"""Rules and effects of the regular assessment (平时考核, docs/domain.md §1): the use of its
results (结果运用) and the negative list (负面清单).

- `negative_list`: the "1" of "1+X" is a list each unit sets as positive / negative lists
  (seed document 5: 铜梁区 lists its political negative situations). A month with any item
  of the negative list hit cannot be graded better than `cap` (a parameter). The grades are
  the grade field's values, best first.
- `record_consequences` (effect, on the approval 审定): what a result leads to, as the seed
  document names it — 好: 在本机关通报表扬; 好 for outstanding work in urgent, hard, dangerous
  tasks (急难险重): a 嘉奖 / 记功 candidacy; 较差: 待岗学习 / 召回管理. Each consequence is a
  person fact (`consequences`, workflows/facts.py) and the holders of a group (干部科,
  `hr-office`) get an in-app notification per case to act on it. Which grade leads to what is
  the definition's table, not code.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import fields as mf
from marshmallow import validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import notify
from ..errors import RuleViolation
from ..facts import record_consequence
from ..models import Person, Unit
from ..rules import (
    Batch,
    CaseFacts,
    Rule,
    _Params,
    field_value_problems,
    register,
    register_effect,
)
from ..spec import FlowSpec, TransitionSpec

LOCAL = ZoneInfo("Asia/Shanghai")
CONSEQUENCE_NOTICE = "consequence"  # the notification kind


# --------------------------------------------------------------------------- negative_list


class NegativeListParams(_Params):
    field = mf.String(load_default="negative_items")  # a list of enum: the items hit
    grade_field = mf.String(load_default="grade")
    cap = mf.String(required=True)  # with any hit, no grade better than this


def _negative_list_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    f = spec.fields.get(p["field"])
    if f is None:
        yield ".field", f"unknown field {p['field']!r}; declare it under fields"
    elif f.type != "list" or f.item is None or f.item.type != "enum":
        yield ".field", f"{p['field']!r} must be a list of enum values (the negative list)"
    elif p["field"] not in t.requires + t.accepts:
        yield ".field", (f"field {p['field']!r} must be listed in accepts of trigger "
                         f"{t.trigger!r} so that it can be given")
    g = spec.fields.get(p["grade_field"])
    if g is None or g.type != "enum":
        yield ".grade_field", f"{p['grade_field']!r} must be an enum field (the grades)"
        return
    yield from field_value_problems(spec, p["grade_field"], [p["cap"]], "cap")


def _negative_list(p: dict[str, Any], batch: Batch) -> None:
    scale = list(batch.spec.fields[p["grade_field"]].values)  # best first
    cap = scale.index(p["cap"])
    for case in batch.cases:
        hits = case.data.get(p["field"]) or []
        grade = case.data.get(p["grade_field"])
        if not hits or grade not in scale or scale.index(grade) >= cap:
            continue
        label = batch.spec.fields[p["grade_field"]].label.zh
        what = batch.spec.fields[p["field"]].label.zh
        raise RuleViolation(
            "negative_list",
            f"case {case.id}: {what} hit ({'、'.join(map(str, hits))}): {label} can be "
            f"{' / '.join(scale[cap:])} only, not {grade}",
            {"case_id": case.id, "hits": list(hits), "grade": grade, "cap": p["cap"],
             "allowed": scale[cap:]},
        )


register(Rule(
    name="negative_list",
    label="负面清单封顶 / the negative list caps the grade",
    params=NegativeListParams(),
    check_definition=_negative_list_definition,
    evaluate=_negative_list,
))


# --------------------------------------------------------------------------- consequences


class ConsequenceParams(_Params):
    value = mf.String(required=True)  # the grade it follows from
    kind = mf.String(required=True, validate=validate.Length(min=1, max=64))  # the fact's kind
    if_field = mf.String()  # and only when this bool field of the case is true


class ConsequencesParams(_Params):
    field = mf.String(load_default="grade")
    consequences = mf.List(mf.Nested(ConsequenceParams), required=True,
                           validate=validate.Length(min=1))
    notify_group = mf.String(load_default="hr-office", allow_none=True)  # None: nobody told


def _consequences_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    for i, c in enumerate(p["consequences"]):
        yield from field_value_problems(spec, p["field"], [c["value"]],
                                        f"consequences[{i}].value")
        flag = c.get("if_field")
        if flag is not None:
            if flag not in spec.fields:
                yield f".consequences[{i}].if_field", f"unknown field {flag!r}"
            elif spec.fields[flag].type != "bool":
                yield f".consequences[{i}].if_field", f"{flag!r} must be a bool field"


def _local_day(batch: Batch) -> dt.date:
    return (batch.now or dt.datetime.now(dt.UTC)).astimezone(LOCAL).date()


def _due(p: dict[str, Any], case: CaseFacts) -> list[str]:
    grade = case.data.get(p["field"])
    return [c["kind"] for c in p["consequences"] if c["value"] == grade
            and (c.get("if_field") is None or case.data.get(c["if_field"]) is True)]


def _tell(s: Session, group: str, case: CaseFacts, spec: FlowSpec, grade: Any,
          kinds: list[str], now: dt.datetime) -> None:
    people = notify.group_holders(s, group)
    if not people:
        return
    who = s.execute(select(Person.name, Unit.name).join(Unit, Unit.id == Person.unit_id)
                    .where(Person.id == case.subject_id)).first()
    name, unit = who if who else (str(case.subject_id), "")
    period = f" {case.period_key}" if case.period_key else ""
    title = f"{spec.title.zh}结果运用：{name}{period} {grade} → {'、'.join(kinds)}"
    body = "\n".join([f"事项：{spec.title.zh} #{case.id}{period}",
                      f"对象：{name}（{unit}）", f"等次：{grade}",
                      f"结果运用：{'、'.join(kinds)}"])
    # In-app only: an effect has no delivery configuration of the service to hand.
    notify.queue(s, person_ids=people, case_id=case.id, kind=CONSEQUENCE_NOTICE,
                 title=title, body=body, key_prefix=f"consequence:{case.id}", now=now,
                 config=notify.NotifyConfig())


def _record_consequences(p: dict[str, Any], batch: Batch) -> None:
    day = _local_day(batch)
    now = batch.now or dt.datetime.now(dt.UTC)
    for case in batch.cases:
        kinds = _due(p, case)
        if not kinds:
            continue
        note = f"{batch.spec.flow} case {case.id} ({batch.transition.trigger})"
        for kind in kinds:
            batch.facts.query(partial(record_consequence, note=note, by=batch.actor_id),
                              case.subject_id, kind, case.period_key, day)
        if p.get("notify_group"):
            batch.facts.query(_tell, p["notify_group"], case, batch.spec,
                              case.data.get(p["field"]), kinds, now)


register_effect(Rule(
    name="record_consequences",
    label="平时考核结果运用 / record the consequences of a result",
    params=ConsequencesParams(),
    check_definition=_consequences_definition,
    evaluate=_record_consequences,
))
