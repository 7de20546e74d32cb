"""Rules of the frontline dispatch flow (下沉一线 / 第一书记, docs/domain.md §4).

- `term_length` (任期年限): the term from `start` to `end` (both dates, the end day
  included) lasts between `min_months` and `max_months`; optionally only when `if_field`
  is one of `in` (e.g. 12–36 months for 第一书记).
- `check_in` (月度报到): each submitted check-in names a month `YYYY-MM` not reported
  before and inside the term, with days in post no more than the month has. `min_days`
  (e.g. 20) is **not** a refusal: a check-in below it is accepted and flagged by
  `workflows.dispatch.shortfalls`, which reads the number from this rule's parameters —
  the definition is the single source of it.
- `outcome_flags` (表彰、优先提拔): boolean outcome flags may only be set when the grade is
  one of `in` (e.g. 优秀).
- `record_dispatch_outcome` (effect, on the approval 审定备案): the term's grade and flags
  become a person fact (`dispatch_outcomes`, workflows/facts.py), dated the local day of
  the approval, which the promotion rules read. Audited (action `flow`), in the action's
  transaction.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import fields as mf
from marshmallow import validate
from sqlalchemy import select

from ..errors import RuleViolation
from ..facts import record_dispatch_outcome
from ..messages import msg
from ..models import Case
from ..rules import Batch, Rule, _Params, register, register_effect
from ..spec import FlowSpec, TransitionSpec

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def add_months(day: dt.date, months: int) -> dt.date:
    """`day` plus whole months; the day of month is clamped (31 Jan + 1 month = 28/29 Feb)."""
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    return day.replace(year=year, month=month,
                       day=min(day.day, calendar.monthrange(year, month)[1]))


def _date(value: Any) -> dt.date | None:
    if value in (None, ""):
        return None
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def _date_field(spec: FlowSpec, name: str, path: str):
    if name not in spec.fields:
        yield path, msg("dispatch.unknown_field_declare_under", name=name)
    elif spec.fields[name].type != "date":
        yield path, msg("dispatch.field_must_date_field", name=name, type=spec.fields[name].type)


# --------------------------------------------------------------------------- term_length


class TermLengthParams(_Params):
    start = mf.String(required=True)
    end = mf.String(required=True)
    min_months = mf.Integer(load_default=1, validate=validate.Range(min=0, max=600))
    max_months = mf.Integer(required=True, validate=validate.Range(min=1, max=600))
    if_field = mf.String()
    in_ = mf.List(mf.Raw(), data_key="in", validate=validate.Length(min=1))


def _term_length_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    yield from _date_field(spec, p["start"], ".start")
    yield from _date_field(spec, p["end"], ".end")
    if p["min_months"] > p["max_months"]:
        yield ".min_months", msg("dispatch.min_months_greater_than", min_months=p['min_months'],
                                 max_months=p['max_months'])
    if ("if_field" in p) != ("in_" in p):
        yield ".if_field", msg("dispatch.if_field_go_together")
    elif "if_field" in p:
        if p["if_field"] not in spec.fields:
            yield ".if_field", msg("dispatch.unknown_field_declare_under_5", if_field=p['if_field'])
        else:
            f = spec.fields[p["if_field"]]
            for v in p["in_"]:
                if f.type == "enum" and v not in f.values:
                    yield ".in", (msg("dispatch.not_value_field_values_2", v=v,
                                      if_field=p['if_field'], f_values=list(f.values)))


def _term_length(p: dict[str, Any], batch: Batch) -> None:
    for case in batch.cases:
        if "if_field" in p and case.data.get(p["if_field"]) not in p["in_"]:
            continue
        start, end = _date(case.data.get(p["start"])), _date(case.data.get(p["end"]))
        if start is None or end is None:
            continue  # `requires` says whether the dates must be there
        f_start, f_end = batch.spec.fields[p["start"]], batch.spec.fields[p["end"]]
        details = {"case_id": case.id, "start": start.isoformat(), "end": end.isoformat(),
                   "min_months": p["min_months"], "max_months": p["max_months"]}
        if end < start:
            raise RuleViolation("term_length", msg("dispatch.term_end_before_start",
                                                   case_id=case.id, f_end_label=f_end.label,
                                                   end=end, f_start_label=f_start.label,
                                                   start=start), details)
        after = end + dt.timedelta(days=1)  # the end day is part of the term
        when = (msg("dispatch.term_when", value=case.data.get(p["if_field"])) if "if_field" in p
                else "")
        if after < add_months(start, p["min_months"]) or after > add_months(start, p["max_months"]):
            raise RuleViolation(
                "term_length",
                msg("dispatch.term_must_last_months", case_id=case.id, start=start, end=end,
                    min_months=p['min_months'], max_months=p['max_months'], when=when), details)


register(Rule(
    name="term_length",
    label="任期年限 / term length",
    params=TermLengthParams(),
    check_definition=_term_length_definition,
    evaluate=_term_length,
))


# --------------------------------------------------------------------------- check_in


class CheckInParams(_Params):
    field = mf.String(required=True)  # the list of check-in records
    month = mf.String(load_default="month")  # sub-field: YYYY-MM
    days = mf.String(load_default="days_in_post")  # sub-field: days in post that month
    min_days = mf.Integer(required=True, validate=validate.Range(min=0, max=31))
    term_start = mf.String(load_default="term_start")  # date fields bounding the months
    term_end = mf.String(load_default="term_end")


def _check_in_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    f = spec.fields.get(p["field"])
    if f is None:
        yield ".field", msg("dispatch.unknown_field_declare_under_2", field=p['field'])
        return
    if f.type != "list" or not f.record:
        yield ".field", msg("dispatch.field_must_list_records", field=p['field'])
        return
    if p["field"] not in t.appends:
        yield ".field", msg("dispatch.field_must_listed_appends", field=p['field'],
                            t_trigger=t.trigger)
    subs = {s.name: s for s in f.record}
    if p["month"] not in subs or subs[p["month"]].type != "text":
        yield ".month", msg("dispatch.needs_text_sub_field", field=p['field'], month=p['month'])
    if p["days"] not in subs or subs[p["days"]].type != "int":
        yield ".days", msg("dispatch.needs_int_sub_field", field=p['field'], days=p['days'])
    for key in ("term_start", "term_end"):
        yield from _date_field(spec, p[key], f".{key}")


def _stored(s, case_id: int) -> dict[str, Any]:
    return s.execute(select(Case.data).where(Case.id == case_id)).scalar_one() or {}


def _check_in(p: dict[str, Any], batch: Batch) -> None:
    for case in batch.cases:
        stored = batch.facts.query(_stored, case.id)
        seen = {str(item.get(p["month"])) for item in stored.get(p["field"]) or []}
        start, end = _date(case.data.get(p["term_start"])), _date(case.data.get(p["term_end"]))
        for item in case.data.get(p["field"]) or []:
            month, days = item.get(p["month"]), item.get(p["days"])

            def refuse(why: str, case_id=case.id, month=month, days=days) -> None:
                raise RuleViolation("check_in", msg("dispatch.check_in", case_id=case_id,
                                                    month=month, why=why),
                                    {"case_id": case_id, "month": month, "days": days})

            m = MONTH.match(str(month or ""))
            if not m:
                refuse(msg("dispatch.month_format"))
            if days is None:
                refuse(msg("dispatch.days_missing"))
            year, mon = int(m.group(1)), int(m.group(2))
            if days > calendar.monthrange(year, mon)[1]:
                refuse(msg("dispatch.days_over_month", days=days,
                           month_days=calendar.monthrange(year, mon)[1]))
            if month in seen:
                refuse(msg("dispatch.month_reported"))
            first = dt.date(year, mon, 1)
            if (start and first < start.replace(day=1)) or (end and first > end.replace(day=1)):
                refuse(msg("dispatch.month_outside_term", start=start, end=end))
            seen.add(month)
            # days < min_days is accepted: workflows.dispatch.shortfalls flags it.


register(Rule(
    name="check_in",
    label="月度报到 / monthly check-in",
    params=CheckInParams(),
    check_definition=_check_in_definition,
    evaluate=_check_in,
))


# --------------------------------------------------------------------------- outcome_flags


class OutcomeFlagsParams(_Params):
    grade_field = mf.String(required=True)
    flags = mf.List(mf.String(), required=True, validate=validate.Length(min=1))
    in_ = mf.List(mf.Raw(), data_key="in", required=True, validate=validate.Length(min=1))


def _outcome_flags_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    g = spec.fields.get(p["grade_field"])
    if g is None:
        yield ".grade_field", msg("dispatch.unknown_field_declare_under_3",
                                  grade_field=p['grade_field'])
    else:
        for v in p["in_"]:
            if g.type == "enum" and v not in g.values:
                yield ".in", (msg("dispatch.not_value_field_values", v=v,
                                  grade_field=p['grade_field'], g_values=list(g.values)))
    for i, name in enumerate(p["flags"]):
        if name not in spec.fields or spec.fields[name].type != "bool":
            yield f".flags[{i}]", msg("dispatch.must_bool_field_declared", name=name)


def _outcome_flags(p: dict[str, Any], batch: Batch) -> None:
    for case in batch.cases:
        grade = case.data.get(p["grade_field"])
        if grade in p["in_"]:
            continue
        for name in p["flags"]:
            if case.data.get(name) is True:
                f = batch.spec.fields[name]
                raise RuleViolation(
                    "outcome_flags",
                    msg("dispatch.only_grade", case_id=case.id, f_label=f.label, name=name,
                        value='/'.join(map(str, p['in_'])), grade=grade),
                    {"case_id": case.id, "flag": name, "grade": grade})


register(Rule(
    name="outcome_flags",
    label="表彰与优先提拔 / outcome flags",
    params=OutcomeFlagsParams(),
    check_definition=_outcome_flags_definition,
    evaluate=_outcome_flags,
))


# --------------------------------------------------------------------------- record_dispatch_outcome

LOCAL = ZoneInfo("Asia/Shanghai")
# fact field -> the case field it is read from (the definition may rename the case's)
OUTCOME_FIELDS = ("post_type", "receiving_unit", "term_start", "term_end", "grade", "commendation_proposed",
                  "promotion_priority")


class RecordOutcomeParams(_Params):
    post_type = mf.String(load_default="post_type")
    receiving_unit = mf.String(load_default="receiving_unit")
    term_start = mf.String(load_default="term_start")
    term_end = mf.String(load_default="term_end")
    grade = mf.String(load_default="grade")
    commendation_proposed = mf.String(load_default="commendation_proposed")
    promotion_priority = mf.String(load_default="promotion_priority")


def _record_outcome_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    types = {"post_type": ("enum", "text"), "receiving_unit": ("text",), "term_start": ("date",), "term_end": ("date",),
             "grade": ("enum",), "commendation_proposed": ("bool",),
             "promotion_priority": ("bool",)}
    for key in OUTCOME_FIELDS:
        f = spec.fields.get(p[key])
        if f is None:
            yield f".{key}", msg("dispatch.unknown_field_declare_under_4", value=p[key])
        elif f.type not in types[key]:
            yield f".{key}", (msg("dispatch.field_effect_needs", value=p[key], f_type=f.type,
                                  value2=' or '.join(types[key])))


def _record_outcome(p: dict[str, Any], batch: Batch) -> None:
    day = (batch.now or dt.datetime.now(dt.UTC)).astimezone(LOCAL).date()
    for case in batch.cases:
        values = {key: case.data.get(p[key]) for key in OUTCOME_FIELDS}
        if not values["grade"]:
            continue  # nothing decided: nothing to record
        values |= {"term_start": _date(values["term_start"]),
                   "term_end": _date(values["term_end"]), "decided_on": day,
                   "commendation_proposed": values["commendation_proposed"] is True,
                   "promotion_priority": values["promotion_priority"] is True,
                   "note": f"{batch.spec.flow} case {case.id} ({batch.transition.trigger})"}
        batch.facts.query(partial(record_dispatch_outcome, by=batch.actor_id),
                          case.subject_id, values)


register_effect(Rule(
    name="record_dispatch_outcome",
    label="下沉一线结果记入 / record the dispatch outcome",
    params=RecordOutcomeParams(),
    check_definition=_record_outcome_definition,
    evaluate=_record_outcome,
))
