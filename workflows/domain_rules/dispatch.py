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
        yield path, f"unknown field {name!r}; declare it under fields"
    elif spec.fields[name].type != "date":
        yield path, f"field {name!r} must be a date field; it is {spec.fields[name].type}"


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
        yield ".min_months", f"min_months {p['min_months']} is greater than max_months {p['max_months']}"
    if ("if_field" in p) != ("in_" in p):
        yield ".if_field", "if_field and in go together"
    elif "if_field" in p:
        if p["if_field"] not in spec.fields:
            yield ".if_field", f"unknown field {p['if_field']!r}; declare it under fields"
        else:
            f = spec.fields[p["if_field"]]
            for v in p["in_"]:
                if f.type == "enum" and v not in f.values:
                    yield ".in", (f"{v!r} is not a value of field {p['if_field']!r}; "
                                  f"its values are {', '.join(f.values)}")


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
            raise RuleViolation("term_length", f"case {case.id}: {f_end.label.zh} ({end}) is "
                                f"before {f_start.label.zh} ({start})", details)
        after = end + dt.timedelta(days=1)  # the end day is part of the term
        when = (f" for {case.data.get(p['if_field'])}" if "if_field" in p else "")
        if after < add_months(start, p["min_months"]) or after > add_months(start, p["max_months"]):
            raise RuleViolation(
                "term_length",
                f"case {case.id}: the term {start} – {end} must last {p['min_months']} to "
                f"{p['max_months']} months{when}", details)


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
        yield ".field", f"unknown field {p['field']!r}; declare it under fields"
        return
    if f.type != "list" or not f.record:
        yield ".field", f"field {p['field']!r} must be a list of records"
        return
    if p["field"] not in t.appends:
        yield ".field", f"field {p['field']!r} must be listed in appends of trigger {t.trigger!r}"
    subs = {s.name: s for s in f.record}
    if p["month"] not in subs or subs[p["month"]].type != "text":
        yield ".month", f"{p['field']!r} needs a text sub-field {p['month']!r} (YYYY-MM)"
    if p["days"] not in subs or subs[p["days"]].type != "int":
        yield ".days", f"{p['field']!r} needs an int sub-field {p['days']!r}"
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

            def refuse(msg: str, case_id=case.id, month=month, days=days) -> None:
                raise RuleViolation("check_in", f"case {case_id}: check-in {month}: {msg}",
                                    {"case_id": case_id, "month": month, "days": days})

            m = MONTH.match(str(month or ""))
            if not m:
                refuse("the month must be given as YYYY-MM")
            if days is None:
                refuse("the days in post must be given")
            year, mon = int(m.group(1)), int(m.group(2))
            if days > calendar.monthrange(year, mon)[1]:
                refuse(f"{days} days in post, but the month has "
                       f"{calendar.monthrange(year, mon)[1]}")
            if month in seen:
                refuse("this month has already been reported")
            first = dt.date(year, mon, 1)
            if (start and first < start.replace(day=1)) or (end and first > end.replace(day=1)):
                refuse(f"the month is outside the term {start} – {end}")
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
        yield ".grade_field", f"unknown field {p['grade_field']!r}; declare it under fields"
    else:
        for v in p["in_"]:
            if g.type == "enum" and v not in g.values:
                yield ".in", (f"{v!r} is not a value of field {p['grade_field']!r}; "
                              f"its values are {', '.join(g.values)}")
    for i, name in enumerate(p["flags"]):
        if name not in spec.fields or spec.fields[name].type != "bool":
            yield f".flags[{i}]", f"{name!r} must be a bool field declared under fields"


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
                    f"case {case.id}: {f.label.zh} ({name}) is only for "
                    f"{'/'.join(map(str, p['in_']))}; the grade is {grade}",
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
            yield f".{key}", f"unknown field {p[key]!r}; declare it under fields"
        elif f.type not in types[key]:
            yield f".{key}", (f"field {p[key]!r} is {f.type}; this effect needs "
                              f"{' or '.join(types[key])}")


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
