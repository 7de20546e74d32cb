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
- `inform_home_unit` (effect, on the evaluation 评鉴定等): 下沉一线 — while a person is
  dispatched, the receiving side's assessor (the dispatch case's host) evaluates the
  regular assessment (`while_dispatched` of the evaluator role). When the one who evaluated
  is that host, the evaluators the home unit's hierarchy would have named (the same role,
  resolved without the dispatch) get an in-app notification with the grade — 派出单位知情.
  An evaluation by the home unit itself tells nobody.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import fields as mf
from marshmallow import validate
from sqlalchemy import bindparam, func, select, true
from sqlalchemy.orm import Session

from .. import notify
from ..actors import Org, role_needs
from ..db import statement_rows
from ..errors import RuleViolation
from ..facts import record_consequence
from ..messages import msg
from ..models import Notification, Person, Unit
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
        yield ".field", msg("regular.unknown_field_declare_under", field=p['field'])
    elif f.type != "list" or f.item is None or f.item.type != "enum":
        yield ".field", msg("regular.must_list_enum_values", field=p['field'])
    elif p["field"] not in t.requires + t.accepts:
        yield ".field", (msg("regular.field_must_listed_accepts", field=p['field'],
                             t_trigger=t.trigger))
    g = spec.fields.get(p["grade_field"])
    if g is None or g.type != "enum":
        yield ".grade_field", msg("regular.must_enum_field_grades", grade_field=p['grade_field'])
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
        label = batch.spec.fields[p["grade_field"]].label
        what = batch.spec.fields[p["field"]].label
        raise RuleViolation(
            "negative_list",
            msg("regular.hit_can_only_not", case_id=case.id, what=what, value=list(map(str, hits)),
                label=label, value2=' / '.join(scale[cap:]), grade=grade),
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
                yield f".consequences[{i}].if_field", msg("regular.unknown_field", flag=flag)
            elif spec.fields[flag].type != "bool":
                yield f".consequences[{i}].if_field", msg("regular.must_bool_field", flag=flag)


def _local_day(batch: Batch) -> dt.date:
    return (batch.now or dt.datetime.now(dt.UTC)).astimezone(LOCAL).date()


def _due(p: dict[str, Any], case: CaseFacts) -> list[str]:
    grade = case.data.get(p["field"])
    return [c["kind"] for c in p["consequences"] if c["value"] == grade
            and (c.get("if_field") is None or case.data.get(c["if_field"]) is True)]


# The subject's name and unit with a group's holders, in one read on the action path: one
# row per holder, or the subject's alone (holder NULL) when nobody holds the group.
_HOLDERS = notify.HOLDERS.subquery()
_SUBJECT_AND_HOLDERS = (select(Person.name, Unit.name, _HOLDERS.c.person_id)
                        .join(Unit, Unit.id == Person.unit_id).outerjoin(_HOLDERS, true())
                        .where(Person.id == bindparam("subject"))
                        .order_by(_HOLDERS.c.person_id))


def _tell(s: Session, group: str, case: CaseFacts, spec: FlowSpec, grade: Any,
          kinds: list[str], now: dt.datetime) -> None:
    rows = statement_rows(s.connection(), _SUBJECT_AND_HOLDERS,
                          {"subject": case.subject_id, "group": group})
    people = [holder for _name, _unit, holder in rows if holder is not None]
    if not people:
        return
    name, unit = rows[0][:2]
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


# --------------------------------------------------------------------------- inform_home_unit

HOME_UNIT_NOTICE = "home_unit"  # the notification kind


class InformHomeUnitParams(_Params):
    role = mf.String(load_default="evaluator")  # the evaluator role with while_dispatched
    field = mf.String(load_default="grade")  # the grade the host gave


def _inform_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    if p["field"] not in spec.fields:
        yield ".field", msg("regular.unknown_field_declare_under", field=p['field'])
    role = spec.roles.get(p["role"])
    if role is None:
        yield ".role", msg("regular.unknown_role_declare_under", role=p['role'])
    elif role.resolve != "evaluator" or not role.dispatch_flow:
        yield ".role", (msg("regular.role_must_resolve_evaluator", role=p['role']))


def _home_evaluators(s: Session, role: Any, case: CaseFacts) -> list[int]:
    """Who evaluates the case by the home unit's hierarchy, the dispatch left aside."""
    path = s.execute(select(Unit.path).where(Unit.id == case.unit_id)).scalar_one()
    unit_roles, groups = role_needs([role])
    org = Org.read(s, {case.unit_id: path}, unit_roles, groups)  # no hosts loaded
    return org.holders(role, case.unit_id, case.tier, case.subject_id)


def _inform(s: Session, role: Any, field: str, case: CaseFacts, spec: FlowSpec,
            actor_id: int, now: dt.datetime) -> None:
    people = [p for p in _home_evaluators(s, role, case) if p != actor_id]
    if not people:
        return
    rows = dict(s.execute(select(Person.id, Person.name).where(
        Person.id.in_([case.subject_id, actor_id]))).all())
    name, host = rows.get(case.subject_id, str(case.subject_id)), rows.get(actor_id, "")
    period = f" {case.period_key}" if case.period_key else ""
    grade = case.data.get(field)
    title = f"{spec.title.zh}（下沉一线）：{name}{period} 由接收方评为 {grade}"
    lines = [f"事项：{spec.title.zh} #{case.id}{period}", f"对象：{name}（下沉一线）",
             f"接收方考核负责人：{host}", f"等次：{grade}"]
    if case.data.get("evaluation_comment"):
        lines.append(f"评鉴意见：{case.data['evaluation_comment']}")
    # In-app only, like record_consequences. One notice per evaluation: an evaluation after
    # an objection is numbered after the earlier ones (the case is locked while it moves).
    told = s.execute(select(func.count()).select_from(Notification).where(
        Notification.case_id == case.id, Notification.kind == HOME_UNIT_NOTICE)).scalar()
    notify.queue(s, person_ids=people, case_id=case.id, kind=HOME_UNIT_NOTICE, title=title,
                 body="\n".join(lines), key_prefix=f"home-unit:{case.id}:{told}", now=now,
                 config=notify.NotifyConfig())


def _inform_home_unit(p: dict[str, Any], batch: Batch) -> None:
    role = batch.spec.roles[p["role"]]
    now = batch.now or dt.datetime.now(dt.UTC)
    for case in batch.cases:
        if batch.actor_id is None or \
                batch.facts.dispatch_host(role, case.subject_id) != batch.actor_id:
            continue  # not evaluated by the host: the home unit evaluated itself
        batch.facts.query(_inform, role, p["field"], case, batch.spec, batch.actor_id, now)


register_effect(Rule(
    name="inform_home_unit",
    label="派出单位知情 / inform the home unit of the host's grade",
    params=InformHomeUnitParams(),
    check_definition=_inform_definition,
    evaluate=_inform_home_unit,
))
