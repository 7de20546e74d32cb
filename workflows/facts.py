"""Person facts the rules read: rank history, annual results, sanctions, investigations,
exam results, training (records and legacy yearly totals), commendations and the
consequences of regular results (see docs/facts.md).

Admins own these facts. Every write goes through this module and leaves a `fact_audit`
row (who, when, create | update | delete | import, the row before and after) in the same
transaction, so a grade or a sanction can be traced years later. Rules never query the
tables themselves: they read `person_facts(s, person_id)`, a snapshot whose sanctions carry
the end of their effect period (影响期) computed from the months stored on each row.

Values are checked here, not only in the API, so the CSV import and any Python caller get
the same precise messages (`FieldErrors`, field → messages). Text values are coerced the
way a CSV cell is read: "2024-03-01" is a date, "12.5" a number, "是"/"否" a yes/no.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .access import Viewer, can_see
from .db import Database, driver_rows, json_text
from .errors import FieldErrors, ImportFailed, NotFound
from .history import sqlite_value
from .messages import msg
from .models import (
    FACT_GRADES,
    RESULT_SOURCES,
    SANCTION_CATEGORIES,
    SANCTION_KINDS,
    AnnualResult,
    Base,
    Commendation,
    Consequence,
    DispatchOutcome,
    ExamResult,
    FactAudit,
    Investigation,
    Person,
    RankHistory,
    Sanction,
    TrainingHours,
    TrainingRecord,
    Unit,
    utcnow,
)

RANK, ANNUAL, SANCTION, INVESTIGATION = ("rank_history", "annual_results", "sanctions",
                                         "investigations")
EXAM, TRAINING, COMMENDATION = "exam_results", "training_hours", "commendations"
TRAINING_RECORD = "training_records"  # 培训记录: one row per training taken
CONSEQUENCE = "consequences"  # 平时考核结果运用
DISPATCH = "dispatch_outcomes"  # 下沉一线任期考核结果
DISPATCH_GRADES = ("优秀", "称职", "基本称职", "不称职")
ACTIONS = ("create", "update", "delete", "import", "flow")  # flow: written by a flow's effect
MIN_YEAR, MAX_YEAR = 1949, 2100
# The dates a person's record may hold (人事记录日期): those years. Beyond them a date is a
# typing error, and arithmetic on it (a sanction's effect of N months, a rank's years of
# service) would run past the calendar's end (year 9999) instead of failing as a field.
FIRST_DAY, LAST_DAY = dt.date(MIN_YEAR, 1, 1), dt.date(MAX_YEAR, 12, 31)
MAX_NOTE = 2000
MAX_EFFECT_MONTHS = 120
MAX_SCORE = Decimal("1000")
MAX_HOURS = Decimal("10000")
# 培训形式: the stored code and the words a CSV or a form may use for it.
TRAINING_KINDS = {"online": ("online", "线上", "网络培训"), "offline": ("offline", "线下", "脱产培训")}

# The type of each field, for coercing text (CSV cells) and refusing what does not fit.
DATE, INT, DECIMAL, BOOL, TEXT = "date", "int", "decimal", "bool", "text"
FIELD_TYPES = {
    "since": DATE, "until": DATE, "decided_on": DATE, "opened_on": DATE, "closed_on": DATE,
    "taken_on": DATE, "year": INT, "effect_months": INT, "score": DECIMAL, "hours": DECIMAL,
    "passed": BOOL, "rank": TEXT, "grade": TEXT, "source": TEXT, "kind": TEXT, "exam": TEXT,
    "course": TEXT, "organiser": TEXT, "note": TEXT, "period": TEXT,
    "post_type": TEXT, "receiving_unit": TEXT, "term_start": DATE, "term_end": DATE,
    "commendation_proposed": BOOL, "promotion_priority": BOOL,
}
TEXT_MAX = {"rank": 64, "grade": 16, "source": 16, "kind": 64, "exam": 100, "course": 200,
            "organiser": 200, "note": MAX_NOTE, "period": 16, "post_type": 64,
            "receiving_unit": 200}
YES = {"1", "true", "yes", "y", "是", "通过", "合格"}
NO = {"0", "false", "no", "n", "否", "未通过", "不合格"}

Errors = dict[str, list[str]]
Values = dict[str, Any]


@dataclass(frozen=True)
class FactKind:
    """One kind of fact: its table (also its name in URLs), fields and checks."""

    name: str
    csv_name: str
    label: str
    model: type[Base]
    fields: tuple[str, ...]
    required: tuple[str, ...]
    order: tuple[str, ...]  # list order, oldest first
    check: Callable[[Session, int, Values, int | None], Errors]
    csv_columns: dict[str, str] = field(default_factory=dict)  # CSV column -> field


# --------------------------------------------------------------------------- coercion


def _coerce(name: str, value: Any) -> tuple[Any, str | None]:
    """The value of `name` as its type, or an error message."""
    kind = FIELD_TYPES[name]
    if isinstance(value, str) and kind != TEXT:
        value = value.strip()
        if value == "":
            return None, None
    if value is None:
        return None, None
    if kind == DATE:
        if isinstance(value, dt.datetime):
            return None, f"{value.isoformat()!r} is a timestamp, not a date (YYYY-MM-DD)"
        if not isinstance(value, dt.date):
            try:
                value = dt.date.fromisoformat(str(value))
            except ValueError:
                return None, f"{value!r} is not a date (YYYY-MM-DD)"
        return (None, out_of_range(value)) if out_of_range(value) else (value, None)
    if kind == INT:
        if isinstance(value, bool):
            return None, f"{value!r} is not a whole number"
        if isinstance(value, int):
            return value, None
        try:
            return int(str(value)), None
        except ValueError:
            return None, f"{value!r} is not a whole number"
    if kind == DECIMAL:
        if isinstance(value, bool):
            return None, f"{value!r} is not a number"
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return None, f"{value!r} is not a number"
        if not number.is_finite():
            return None, f"{value!r} is not a finite number"
        return number, None
    if kind == BOOL:
        if isinstance(value, bool):
            return value, None
        text = str(value).strip().lower()
        if text in YES:
            return True, None
        if text in NO:
            return False, None
        return None, f"{value!r} is not yes or no (true/false, 1/0, 是/否)"
    if not isinstance(value, str):
        return None, f"{value!r} is not text"
    value = value.strip()
    if len(value) > TEXT_MAX[name]:
        return None, f"is longer than {TEXT_MAX[name]} characters"
    return (value or None), None


def out_of_range(day: dt.date) -> str | None:
    """Why `day` cannot be in a person's record, or None when it can."""
    if FIRST_DAY <= day <= LAST_DAY:
        return None
    return msg("facts.day_out_of_range", day=day.isoformat(), first=FIRST_DAY, last=LAST_DAY)


def _coerce_all(k: FactKind, values: Values, partial: bool) -> tuple[Values, Errors]:
    out: Values = {}
    errors: Errors = {}
    for name, value in values.items():
        if name not in k.fields:
            errors.setdefault(name, []).append(
                msg("facts.not_field_fields_are", k_name=k.name, k_fields=list(k.fields)))
            continue
        coerced, problem = _coerce(name, value)
        if problem:
            errors.setdefault(name, []).append(problem)
        else:
            out[name] = coerced
    if not partial:
        for name in k.fields:
            out.setdefault(name, None)
    return out, errors


def _missing(values: Values, *names: str) -> Errors:
    return {n: ["is required"] for n in names if values.get(n) is None}


def _year(errors: Errors, values: Values) -> None:
    year = values.get("year")
    if year is not None and not MIN_YEAR <= year <= MAX_YEAR:
        errors.setdefault("year", []).append(
            msg("facts.not_year_between", year=year, MIN_YEAR=MIN_YEAR, MAX_YEAR=MAX_YEAR))


def _range(errors: Errors, name: str, value: Any, low: Any, high: Any, what: str) -> None:
    if value is None:
        return
    if value < low:
        errors.setdefault(name, []).append(f"{what} must not be negative (got {value})"
                                           if low == 0 else f"must be at least {low}")
    elif value > high:
        errors.setdefault(name, []).append(msg("facts.must_at_most_got", what=what, high=high,
                                               value=value))


def _places(errors: Errors, name: str, value: Decimal | None, places: int) -> None:
    if value is None or name in errors:
        return
    if value != value.quantize(Decimal(1).scaleb(-places)):
        errors.setdefault(name, []).append(
            msg("facts.has_more_than_decimal", value=value, places=places,
                value2='s' if places > 1 else ''))


def _one_per_year(s: Session, model: type, what: Any, person_id: int, values: Values,
                  row_id: int | None, shown: str) -> Errors:
    if values.get("year") is None:
        return {}
    other = s.execute(select(model).where(
        model.person_id == person_id, model.year == values["year"],
        model.id != (row_id or 0))).scalar()
    if other is None:
        return {}
    return {"year": [msg("facts.one_per_year", person_id=person_id, what=what,
                         year=values["year"], value=getattr(other, shown), id=other.id)]}


# --------------------------------------------------------------------------- checks


def _check_rank(s: Session, person_id: int, v: Values, row_id: int | None) -> Errors:
    errors = _missing(v, "rank", "since")
    if v["since"] and v["until"] and v["until"] <= v["since"]:
        errors.setdefault("until", []).append(
            msg("facts.until_must_after_since", until=v['until'], since=v['since']))
    if errors:
        return errors
    end = v["until"] or dt.date.max
    for o in s.execute(select(RankHistory).where(RankHistory.person_id == person_id,
                                                 RankHistory.id != (row_id or 0))).scalars():
        o_end = o.until or dt.date.max
        if row_id is None and v["until"] is None and o.until is None and o.since < v["since"]:
            o_end = v["since"]  # the held rank ends when the new one starts (add_rank)
        if o.since < end and v["since"] < o_end:
            till = o.until.isoformat() if o.until else "now"
            errors.setdefault("since", []).append(
                msg("facts.overlaps_held_from_id", o_rank=o.rank, o_since=o.since, till=till,
                    o_id=o.id))
    return errors


def _check_annual(s: Session, person_id: int, v: Values, row_id: int | None) -> Errors:
    errors = _missing(v, "year", "grade", "source")
    _year(errors, v)
    if v["grade"] is not None and v["grade"] not in FACT_GRADES:
        errors.setdefault("grade", []).append(
            msg("facts.not_grade_grades_are", grade=v['grade'], FACT_GRADES=list(FACT_GRADES)))
    if v["source"] is not None and v["source"] not in RESULT_SOURCES:
        errors.setdefault("source", []).append(
            msg("facts.not_one", source=v['source'], RESULT_SOURCES=list(RESULT_SOURCES)))
    if errors:
        return errors
    return _one_per_year(s, AnnualResult, msg("facts.what_annual_result"), person_id, v, row_id,
                         "grade")


def _check_sanction(s: Session, person_id: int, v: Values, row_id: int | None) -> Errors:
    errors = _missing(v, "kind", "decided_on")
    kind = SANCTION_KINDS.get(v["kind"]) if v["kind"] is not None else None
    if v["kind"] is not None and kind is None:
        errors["kind"] = [f"{v['kind']!r} is not a sanction; the kinds are " + "; ".join(
            f"{c}: {', '.join(k for k, x in SANCTION_KINDS.items() if x.category == c)}"
            for c in SANCTION_CATEGORIES)]
    elif kind is not None and kind.months is None and v["effect_months"] is not None:
        errors["effect_months"] = [msg("facts.has_no_end_effect", kind=v['kind'],
                                       kind_category=kind.category)]
    elif kind is not None and kind.months is not None and v["effect_months"] is None:
        errors["effect_months"] = [msg("facts.required")]
    _range(errors, "effect_months", v["effect_months"], 0, MAX_EFFECT_MONTHS, "effect_months")
    return errors


def _check_investigation(s: Session, person_id: int, v: Values,
                         row_id: int | None) -> Errors:
    errors = _missing(v, "opened_on")
    if v["opened_on"] and v["closed_on"] and v["closed_on"] < v["opened_on"]:
        errors["closed_on"] = [msg("facts.closed_on_before_opened", closed_on=v['closed_on'],
                                   opened_on=v['opened_on'])]
    if errors or v["closed_on"] is not None:
        return errors
    other = s.execute(select(Investigation).where(
        Investigation.person_id == person_id, Investigation.closed_on.is_(None),
        Investigation.id != (row_id or 0))).scalar()
    if other is not None:
        errors["closed_on"] = [msg("facts.person_already_under_investigation", person_id=person_id,
                                   other_opened_on=other.opened_on, other_id=other.id)]
    return errors


def _check_exam(s: Session, person_id: int, v: Values, row_id: int | None) -> Errors:
    errors = _missing(v, "exam", "taken_on", "passed")
    _range(errors, "score", v["score"], 0, MAX_SCORE, "score")
    _places(errors, "score", v["score"], 2)
    return errors


def _check_training(s: Session, person_id: int, v: Values, row_id: int | None) -> Errors:
    errors = _missing(v, "year", "hours")
    _year(errors, v)
    _range(errors, "hours", v["hours"], 0, MAX_HOURS, "hours")
    _places(errors, "hours", v["hours"], 1)
    if errors:
        return errors
    return _one_per_year(s, TrainingHours, msg("facts.what_training_hours"), person_id, v,
                         row_id, "hours")


def _check_training_record(s: Session, person_id: int, v: Values,
                           row_id: int | None) -> Errors:
    errors = _missing(v, "course", "hours", "taken_on", "kind")
    if v["hours"] is not None and v["hours"] <= 0:
        errors.setdefault("hours", []).append(msg("facts.must_more_than_got", hours=v['hours']))
    _range(errors, "hours", v["hours"], 0, MAX_HOURS, "hours")
    _places(errors, "hours", v["hours"], 1)
    if v["taken_on"] is not None and not MIN_YEAR <= v["taken_on"].year <= MAX_YEAR:
        errors.setdefault("taken_on", []).append(
            msg("facts.not_year_between_2", taken_on=v['taken_on'], MIN_YEAR=MIN_YEAR,
                MAX_YEAR=MAX_YEAR))
    if v["kind"] is not None:
        code = next((c for c, words in TRAINING_KINDS.items()
                     if v["kind"].lower() in words), None)
        if code is None:
            errors["kind"] = [msg("facts.not_kind_training_kinds", kind=v['kind'])]
        else:
            v["kind"] = code  # stored as the code, whichever word was used
    return errors


def _check_commendation(s: Session, person_id: int, v: Values,
                        row_id: int | None) -> Errors:
    return _missing(v, "kind", "decided_on")


def _check_consequence(s: Session, person_id: int, v: Values,
                       row_id: int | None) -> Errors:
    return _missing(v, "kind", "decided_on")


def _check_dispatch(s: Session, person_id: int, v: Values, row_id: int | None) -> Errors:
    errors = _missing(v, "grade", "decided_on")
    if v["grade"] is not None and v["grade"] not in DISPATCH_GRADES:
        errors.setdefault("grade", []).append(
            msg("facts.not_grade_dispatch_grades", grade=v['grade'],
                DISPATCH_GRADES=list(DISPATCH_GRADES)))
    if v["term_start"] and v["term_end"] and v["term_end"] < v["term_start"]:
        errors.setdefault("term_end", []).append(
            msg("facts.term_end_before_term", term_end=v['term_end'], term_start=v['term_start']))
    for flag in ("commendation_proposed", "promotion_priority"):
        if v[flag] is None:
            v[flag] = False  # not proposed unless said
    return errors


NOTE = ("note",)
KINDS: dict[str, FactKind] = {k.name: k for k in (
    FactKind(RANK, "rank", "职级 rank history", RankHistory,
             ("rank", "since", "until", *NOTE), ("rank", "since"), ("since", "id"),
             _check_rank, {"value": "rank", "date": "since", "until": "until"}),
    FactKind(ANNUAL, "annual_result", "年度考核 annual result", AnnualResult,
             ("year", "grade", "source", *NOTE), ("year", "grade"), ("year", "id"),
             _check_annual, {"year": "year", "value": "grade"}),
    FactKind(SANCTION, "sanction", "处分 / 诫勉 sanction", Sanction,
             ("kind", "decided_on", "effect_months", *NOTE), ("kind", "decided_on"),
             ("decided_on", "id"), _check_sanction,
             {"value": "kind", "date": "decided_on", "number": "effect_months"}),
    FactKind(INVESTIGATION, "investigation", "立案审查 investigation", Investigation,
             ("opened_on", "closed_on", *NOTE), ("opened_on",), ("opened_on", "id"),
             _check_investigation, {"date": "opened_on", "until": "closed_on"}),
    FactKind(EXAM, "exam", "考试 exam result", ExamResult,
             ("exam", "taken_on", "score", "passed", *NOTE), ("exam", "taken_on", "passed"),
             ("taken_on", "id"), _check_exam,
             {"value": "exam", "date": "taken_on", "number": "score", "passed": "passed"}),
    FactKind(TRAINING, "training", "培训学时 training hours", TrainingHours,
             ("year", "hours", *NOTE), ("year", "hours"), ("year", "id"), _check_training,
             {"year": "year", "number": "hours"}),
    FactKind(COMMENDATION, "commendation", "表彰奖励 commendation", Commendation,
             ("kind", "decided_on", *NOTE), ("kind", "decided_on"), ("decided_on", "id"),
             _check_commendation, {"value": "kind", "date": "decided_on"}),
    FactKind(TRAINING_RECORD, "training_record", "培训记录 training record", TrainingRecord,
             ("course", "hours", "taken_on", "organiser", "kind", *NOTE),
             ("course", "hours", "taken_on", "kind"), ("taken_on", "id"),
             _check_training_record,
             {"value": "course", "number": "hours", "date": "taken_on",
              "organiser": "organiser", "mode": "kind"}),
    FactKind(CONSEQUENCE, "consequence", "平时考核结果运用 consequence of a regular result",
             Consequence, ("kind", "period", "decided_on", *NOTE), ("kind", "decided_on"),
             ("decided_on", "id"), _check_consequence,
             {"value": "kind", "date": "decided_on"}),
    FactKind(DISPATCH, "dispatch_outcome", "下沉一线任期考核结果 dispatch outcome",
             DispatchOutcome,
             ("post_type", "receiving_unit", "term_start", "term_end", "grade",
              "commendation_proposed",
              "promotion_priority", "decided_on", *NOTE), ("grade", "decided_on"),
             ("decided_on", "id"), _check_dispatch,
             {"value": "grade", "date": "decided_on", "passed": "promotion_priority"}),
)}
BY_CSV_NAME = {k.csv_name: k for k in KINDS.values()}


def fact_kind(name: str) -> FactKind:
    try:
        return KINDS[name]
    except KeyError:
        raise NotFound(msg("facts.not_kind_fact_kinds", name=name, KINDS=list(KINDS))) from None


# --------------------------------------------------------------------------- rows out


def add_months(day: dt.date, months: int) -> dt.date:
    """`day` plus calendar months; the 31st becomes the last day of a shorter month."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return day.replace(year=year, month=month,
                       day=min(day.day, calendar.monthrange(year, month)[1]))


def fact_out(k: FactKind, row: Any) -> dict[str, Any]:
    """A fact as a dict of Python values (dates, Decimals), with its id and person."""
    out = {"id": row.id, "person_id": row.person_id, **{f: getattr(row, f) for f in k.fields}}
    if k.name == SANCTION:
        out["effect_ends"] = (None if row.effect_months is None
                              else add_months(row.decided_on, row.effect_months))
        kind = SANCTION_KINDS.get(row.kind)
        out["category"] = kind.category if kind else None
    return out


def _json(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _audit_json(k: FactKind, row: Any) -> dict[str, Any]:
    return {"id": row.id, "person_id": row.person_id,
            **{f: _json(getattr(row, f)) for f in k.fields}}


def _audit(s: Session, by: int | None, action: str, k: FactKind, row: Any,
           before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    s.add(FactAudit(at=utcnow(), actor_id=by, action=action, table_name=k.name,
                    row_id=row.id, person_id=row.person_id, before=before, after=after))


def _person(s: Session, person_id: int) -> Person:
    person = s.get(Person, person_id)
    if person is None:
        raise NotFound(msg("facts.person_does_not_exist", person_id=person_id))
    return person


# --------------------------------------------------------------------------- writes


def _new_values(s: Session, k: FactKind, person_id: int, values: Values,
                action: str) -> Values:
    """The values of a new fact, coerced, completed and checked; FieldErrors if wrong."""
    v, errors = _coerce_all(k, values, partial=False)
    if not errors:
        if k.name == SANCTION and v["effect_months"] is None and v["kind"] in SANCTION_KINDS:
            v["effect_months"] = SANCTION_KINDS[v["kind"]].months  # None: no end
        if k.name == ANNUAL and v["source"] is None:
            v["source"] = "import" if action == "import" else "manual"
        errors = k.check(s, person_id, v, None)
    if errors:
        raise FieldErrors(errors)
    return v


def add_fact(s: Session, kind: str, person_id: int, values: Values, *, by: int | None,
             action: str = "create") -> dict[str, Any]:
    """Add one fact of `kind` for a person; audited. FieldErrors when a value is wrong."""
    k = fact_kind(kind)
    _person(s, person_id)
    v = _new_values(s, k, person_id, values, action)
    if k.name == RANK and v["until"] is None:
        _close_held_rank(s, person_id, v["since"], by, action)
    row = k.model(person_id=person_id, **v)
    s.add(row)
    s.flush()
    _audit(s, by, action, k, row, None, _audit_json(k, row))
    return fact_out(k, row)


def _close_held_rank(s: Session, person_id: int, since: dt.date, by: int | None,
                     action: str) -> None:
    k = KINDS[RANK]
    for held in s.execute(select(RankHistory).where(
            RankHistory.person_id == person_id, RankHistory.until.is_(None),
            RankHistory.since < since)).scalars():
        before = _audit_json(k, held)
        held.until = since
        _audit(s, by, "update" if action == "create" else action, k, held, before,
               _audit_json(k, held))


def update_fact(s: Session, kind: str, fact_id: int, changes: Values, *,
                by: int | None) -> dict[str, Any]:
    """Change some fields of one fact; audited with the row before and after."""
    k = fact_kind(kind)
    row = _row(s, k, fact_id)
    changed, errors = _coerce_all(k, changes, partial=True)
    if errors:
        raise FieldErrors(errors)
    merged = {f: getattr(row, f) for f in k.fields} | changed
    errors = k.check(s, row.person_id, merged, row.id)
    if errors:
        raise FieldErrors(errors)
    before = _audit_json(k, row)
    for name in changed:
        setattr(row, name, merged[name])  # as the check left it (e.g. 线上 → online)
    s.flush()
    _audit(s, by, "update", k, row, before, _audit_json(k, row))
    return fact_out(k, row)


def delete_fact(s: Session, kind: str, fact_id: int, *, by: int | None) -> None:
    """Delete one fact; the audit keeps the row as it was."""
    k = fact_kind(kind)
    row = _row(s, k, fact_id)
    _audit(s, by, "delete", k, row, _audit_json(k, row), None)
    s.delete(row)
    s.flush()


def _row(s: Session, k: FactKind, fact_id: int) -> Any:
    row = s.get(k.model, fact_id)
    if row is None:
        raise NotFound(msg("facts.does_not_exist", k_name=k.name, fact_id=fact_id))
    return row


def list_facts(s: Session, kind: str, person_id: int) -> list[dict[str, Any]]:
    """A person's facts of one kind, oldest first."""
    k = fact_kind(kind)
    order = [getattr(k.model, c) for c in k.order]
    rows = s.execute(select(k.model).where(k.model.person_id == person_id).order_by(*order))
    return [fact_out(k, r) for r in rows.scalars()]


# Typed shortcuts, one per kind, for Python callers (flows, the demo, tests).


def add_rank(s: Session, person_id: int, rank: str, since: dt.date, *,
             until: dt.date | None = None, note: str | None = None,
             by: int | None) -> dict[str, Any]:
    """A rank held since `since`; without `until` it is the rank now, and the rank held
    before it ends on `since`."""
    return add_fact(s, RANK, person_id, dict(rank=rank, since=since, until=until, note=note),
                    by=by)


def add_annual_result(s: Session, person_id: int, year: int, grade: str, *,
                      source: str = "manual", note: str | None = None,
                      by: int | None) -> dict[str, Any]:
    return add_fact(s, ANNUAL, person_id, dict(year=year, grade=grade, source=source,
                                               note=note), by=by)


def record_annual_result(s: Session, person_id: int, year: int, grade: str, *,
                         note: str | None, by: int | None) -> dict[str, Any]:
    """The grade a flow decided for `year` (source `flow`): added, or replacing the year's
    row — a 复核 or 申诉 that changes the grade updates it; the audit keeps both."""
    row = s.execute(select(AnnualResult).where(AnnualResult.person_id == person_id,
                                               AnnualResult.year == year)).scalar_one_or_none()
    if row is None:
        return add_fact(s, ANNUAL, person_id, dict(year=year, grade=grade, source="flow",
                                                   note=note), by=by, action="flow")
    if (row.grade, row.source, row.note) == (grade, "flow", note):
        return fact_out(KINDS[ANNUAL], row)
    return update_fact(s, ANNUAL, row.id, dict(grade=grade, source="flow", note=note), by=by)


def record_rank(s: Session, person_id: int, rank: str, since: dt.date, *,
                note: str | None, by: int | None) -> dict[str, Any] | None:
    """A rank a flow granted (职级晋升 filed): the held rank ends on `since`. Nothing when
    the person already holds that rank since that day (a replayed effect)."""
    held = s.execute(select(RankHistory).where(
        RankHistory.person_id == person_id, RankHistory.until.is_(None))).scalars().all()
    if any(h.rank == rank and h.since == since for h in held):
        return None
    return add_fact(s, RANK, person_id, dict(rank=rank, since=since, until=None, note=note),
                    by=by, action="flow")


def add_sanction(s: Session, person_id: int, kind: str, decided_on: dt.date, *,
                 effect_months: int | None = None, note: str | None = None,
                 by: int | None) -> dict[str, Any]:
    """A sanction; `effect_months` defaults to the kind's effect period (SANCTION_KINDS;
    none for a kind whose effect has no end, 开除党籍)."""
    return add_fact(s, SANCTION, person_id, dict(kind=kind, decided_on=decided_on,
                                                 effect_months=effect_months, note=note),
                    by=by)


def open_investigation(s: Session, person_id: int, opened_on: dt.date, *,
                       closed_on: dt.date | None = None, note: str | None = None,
                       by: int | None) -> dict[str, Any]:
    return add_fact(s, INVESTIGATION, person_id, dict(opened_on=opened_on,
                                                      closed_on=closed_on, note=note), by=by)


def close_investigation(s: Session, investigation_id: int, closed_on: dt.date, *,
                        by: int | None) -> dict[str, Any]:
    return update_fact(s, INVESTIGATION, investigation_id, {"closed_on": closed_on}, by=by)


def add_exam_result(s: Session, person_id: int, exam: str, taken_on: dt.date, passed: bool,
                    *, score: Decimal | int | float | str | None = None,
                    note: str | None = None, by: int | None) -> dict[str, Any]:
    return add_fact(s, EXAM, person_id, dict(exam=exam, taken_on=taken_on, passed=passed,
                                             score=score, note=note), by=by)


def add_training_hours(s: Session, person_id: int, year: int,
                       hours: Decimal | int | float | str, *, note: str | None = None,
                       by: int | None) -> dict[str, Any]:
    return add_fact(s, TRAINING, person_id, dict(year=year, hours=hours, note=note), by=by)


def add_training_record(s: Session, person_id: int, course: str,
                        hours: Decimal | int | float | str, taken_on: dt.date, kind: str, *,
                        organiser: str | None = None, note: str | None = None,
                        by: int | None) -> dict[str, Any]:
    """One training taken (培训记录); `kind` online (线上) or offline (线下)."""
    return add_fact(s, TRAINING_RECORD, person_id, dict(
        course=course, hours=hours, taken_on=taken_on, organiser=organiser, kind=kind,
        note=note), by=by)


def add_commendation(s: Session, person_id: int, kind: str, decided_on: dt.date, *,
                     note: str | None = None, by: int | None) -> dict[str, Any]:
    return add_fact(s, COMMENDATION, person_id, dict(kind=kind, decided_on=decided_on,
                                                     note=note), by=by)


# A consequence and its audit row, none when the person has this kind for this period
# already (a replayed effect); the period NULL is never a repeat. One statement on
# PostgreSQL, the audit row's `after` completed with the new id.
PG_ADD_CONSEQUENCE = """
WITH added AS (
  INSERT INTO consequences (person_id, kind, period, decided_on, note)
  SELECT %(person_id)s::int, %(kind)s::varchar, %(period)s::varchar, %(decided_on)s::date,
    %(note)s::text
  WHERE %(period)s::varchar IS NULL OR NOT EXISTS (
    SELECT 1 FROM consequences
    WHERE person_id = %(person_id)s::int AND kind = %(kind)s::varchar
      AND period = %(period)s::varchar)
  RETURNING id)
INSERT INTO fact_audit (at, actor_id, action, table_name, row_id, person_id, before, after)
SELECT %(at)s::timestamptz, %(by)s::int, 'flow', 'consequences', id, %(person_id)s::int,
  'null'::jsonb, %(after)s::jsonb || jsonb_build_object('id', id)
FROM added
RETURNING row_id"""
SQLITE_ADD_CONSEQUENCE = """
INSERT INTO consequences (person_id, kind, period, decided_on, note)
SELECT :person_id, :kind, :period, :decided_on, :note
WHERE :period IS NULL OR NOT EXISTS (
  SELECT 1 FROM consequences WHERE person_id = :person_id AND kind = :kind
    AND period = :period)
RETURNING id"""
SQLITE_AUDIT = """
INSERT INTO fact_audit (at, actor_id, action, table_name, row_id, person_id, before, after)
VALUES (:at, :by, 'flow', 'consequences', :id, :person_id, 'null', :after)"""


def record_consequence(s: Session, person_id: int, kind: str, period: str | None,
                       decided_on: dt.date, *, note: str | None,
                       by: int | None) -> dict[str, Any] | None:
    """A consequence a flow decided (平时考核结果运用) and its audit row; nothing when the
    person already has this kind for this period (a replayed effect).

    An approval's effect, so on the action path: sent as the driver's own SQL, one
    statement on PostgreSQL (two on SQLite) where `add_fact` through the ORM took four
    round trips (docs/BENCHMARKS.md). The person is the case's subject, who exists (the
    foreign key stands for `add_fact`'s look-up); the values are checked as there."""
    k = KINDS[CONSEQUENCE]
    v = _new_values(s, k, person_id, dict(kind=kind, period=period, decided_on=decided_on,
                                          note=note), "flow")
    conn = s.connection()
    after = {"person_id": person_id, **{f: _json(v[f]) for f in k.fields}}
    params = {**v, "person_id": person_id, "at": utcnow(), "by": by}
    if conn.dialect.name == "postgresql":
        rows = driver_rows(conn, PG_ADD_CONSEQUENCE, {**params, "after": json_text(after)})
    else:
        params = {n: sqlite_value(value) for n, value in params.items()}
        rows = driver_rows(conn, SQLITE_ADD_CONSEQUENCE, params)
        if rows:
            after = {"id": rows[0][0], **after}
            driver_rows(conn, SQLITE_AUDIT, {**params, "id": rows[0][0],
                                             "after": json_text(after)})
    if not rows:
        return None
    return {"id": rows[0][0], "person_id": person_id, **v}


def record_dispatch_outcome(s: Session, person_id: int, values: Values, *,
                            by: int | None) -> dict[str, Any]:
    """The outcome a dispatch's approval (审定备案) decided: added, or replacing the row of
    the same term (same post type and term start) — a replayed effect changes nothing;
    the audit keeps both."""
    row = s.execute(select(DispatchOutcome).where(
        DispatchOutcome.person_id == person_id,
        DispatchOutcome.post_type == values.get("post_type"),
        DispatchOutcome.term_start == values.get("term_start"))).scalars().first()
    if row is None:
        return add_fact(s, DISPATCH, person_id, values, by=by, action="flow")
    k = KINDS[DISPATCH]
    if all(getattr(row, n) == values.get(n) for n in k.fields):
        return fact_out(k, row)
    return update_fact(s, DISPATCH, row.id, values, by=by)


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class RankFact:
    id: int
    rank: str
    since: dt.date
    until: dt.date | None
    note: str | None


@dataclass(frozen=True)
class AnnualFact:
    id: int
    year: int
    grade: str
    source: str
    note: str | None


@dataclass(frozen=True)
class SanctionFact:
    id: int
    kind: str
    decided_on: dt.date
    effect_months: int | None  # None: no end (开除党籍)
    effect_ends: dt.date | None  # decided_on + effect_months: the first day it no longer blocks
    note: str | None
    category: str | None = None  # 政务处分 | 党纪处分 | 组织处理 | 诫勉 (SANCTION_KINDS)

    def in_effect(self, on: dt.date) -> bool:
        return self.decided_on <= on and (self.effect_ends is None or on < self.effect_ends)


@dataclass(frozen=True)
class InvestigationFact:
    id: int
    opened_on: dt.date
    closed_on: dt.date | None
    note: str | None

    def open_on(self, on: dt.date) -> bool:
        return self.opened_on <= on and (self.closed_on is None or on < self.closed_on)


@dataclass(frozen=True)
class ExamFact:
    id: int
    exam: str
    taken_on: dt.date
    score: Decimal | None
    passed: bool
    note: str | None


@dataclass(frozen=True)
class TrainingFact:
    id: int
    year: int
    hours: Decimal
    note: str | None


@dataclass(frozen=True)
class TrainingRecordFact:
    id: int
    course: str
    hours: Decimal
    taken_on: dt.date  # the day the training ended: its hours count in that year
    organiser: str | None
    kind: str  # online | offline
    note: str | None


@dataclass(frozen=True)
class TrainingTotal:
    """A year's training hours: the records of the year plus a legacy yearly total."""

    year: int
    records: int  # training records that ended in the year
    record_hours: Decimal
    legacy_hours: Decimal  # the `training_hours` row of the year (0 when none)

    @property
    def hours(self) -> Decimal:
        return self.record_hours + self.legacy_hours


@dataclass(frozen=True)
class CommendationFact:
    id: int
    kind: str
    decided_on: dt.date
    note: str | None


@dataclass(frozen=True)
class ConsequenceFact:
    id: int
    kind: str
    period: str | None
    decided_on: dt.date
    note: str | None


@dataclass(frozen=True)
class DispatchOutcomeFact:
    id: int
    post_type: str | None
    receiving_unit: str | None
    term_start: dt.date | None
    term_end: dt.date | None
    grade: str  # 优秀 / 称职 / 基本称职 / 不称职
    commendation_proposed: bool
    promotion_priority: bool
    decided_on: dt.date  # 审定备案: from this day promotion reads it
    note: str | None


@dataclass(frozen=True)
class PersonFacts:
    """Everything the rules read about one person, oldest first in each list.

    `rank`/`rank_since` are the open row of the rank history, else the person's own
    rank and rank date (from the organisation import)."""

    person_id: int
    rank: str | None
    rank_since: dt.date | None
    rank_history: tuple[RankFact, ...]
    annual_results: tuple[AnnualFact, ...]
    sanctions: tuple[SanctionFact, ...]
    investigations: tuple[InvestigationFact, ...]
    exams: tuple[ExamFact, ...]
    training: tuple[TrainingFact, ...]
    commendations: tuple[CommendationFact, ...]
    training_records: tuple[TrainingRecordFact, ...] = ()
    consequences: tuple[ConsequenceFact, ...] = ()  # 平时考核结果运用
    dispatch_outcomes: tuple[DispatchOutcomeFact, ...] = ()  # 下沉一线任期考核结果

    @property
    def grades(self) -> dict[int, str]:
        """Annual grade by year."""
        return {r.year: r.grade for r in self.annual_results}

    @property
    def training_totals(self) -> dict[int, TrainingTotal]:
        """The training of each year, derived: the hours of the records that ended in the
        year plus the year's legacy total (`training_hours`, the hours not itemised)."""
        years = {t.year for t in self.training} | {r.taken_on.year
                                                    for r in self.training_records}
        legacy = {t.year: t.hours for t in self.training}
        out = {}
        for year in sorted(years):
            mine = [r.hours for r in self.training_records if r.taken_on.year == year]
            out[year] = TrainingTotal(year, len(mine), sum(mine, Decimal(0)),
                                      legacy.get(year, Decimal(0)))
        return out

    @property
    def training_hours(self) -> dict[int, Decimal]:
        """Training hours by year (学时), derived from the records and the legacy totals."""
        return {year: t.hours for year, t in self.training_totals.items()}

    @property
    def under_investigation(self) -> bool:
        """An investigation is open (not closed)."""
        return any(i.closed_on is None for i in self.investigations)

    def under_investigation_on(self, on: dt.date) -> bool:
        return any(i.open_on(on) for i in self.investigations)

    def sanctions_in_effect(self, on: dt.date) -> tuple[SanctionFact, ...]:
        return tuple(x for x in self.sanctions if x.in_effect(on))

    def passed(self, exam: str, on_or_before: dt.date | None = None, *,
               after: dt.date | None = None) -> bool:
        """`exam` passed on or before `on_or_before`, and after `after` when given (a pass
        that is still valid: one taken on `after` has just expired)."""
        return any(e.passed and e.exam == exam
                   and (on_or_before is None or e.taken_on <= on_or_before)
                   and (after is None or e.taken_on > after)
                   for e in self.exams)


# fact kind → (field of `PersonFacts`, its dataclass)
SNAPSHOT_KINDS = {
    RANK: ("rank_history", RankFact), ANNUAL: ("annual_results", AnnualFact),
    SANCTION: ("sanctions", SanctionFact), INVESTIGATION: ("investigations", InvestigationFact),
    EXAM: ("exams", ExamFact), TRAINING: ("training", TrainingFact),
    COMMENDATION: ("commendations", CommendationFact),
    TRAINING_RECORD: ("training_records", TrainingRecordFact),
    CONSEQUENCE: ("consequences", ConsequenceFact),
    DISPATCH: ("dispatch_outcomes", DispatchOutcomeFact)}


def people_facts(s: Session, people: Select | list[int], rows: dict[int, Any]
                 ) -> dict[int, PersonFacts]:
    """The snapshots of many people at once (eligibility lists): one query per fact table,
    never one per person. `people` selects their ids; `rows` are their own rows (rank and
    rank date), by id."""
    found: dict[str, dict[int, list]] = {}
    for kind, (_name, cls) in SNAPSHOT_KINDS.items():
        k = KINDS[kind]
        names = [f.name for f in fields(cls)]
        order = [getattr(k.model, c) for c in k.order]
        by_person: dict[int, list] = defaultdict(list)
        for r in s.execute(select(k.model).where(k.model.person_id.in_(people))
                           .order_by(k.model.person_id, *order)).scalars():
            out = fact_out(k, r)
            by_person[r.person_id].append(cls(**{n: out[n] for n in names}))
        found[kind] = by_person
    snaps = {}
    for pid, person in rows.items():
        history = tuple(found[RANK].get(pid, ()))
        held = [r for r in history if r.until is None]
        rank, since = (held[-1].rank, held[-1].since) if held else (person.rank,
                                                                    person.rank_since)
        snaps[pid] = PersonFacts(
            person_id=pid, rank=rank, rank_since=since,
            **{name: tuple(found[kind].get(pid, ())) for kind, (name, _c) in
               SNAPSHOT_KINDS.items()})
    return snaps


def person_facts(s: Session, person_id: int) -> PersonFacts:
    """The snapshot of a person's facts that rules read. NotFound for an unknown person."""
    return people_facts(s, [person_id], {person_id: _person(s, person_id)})[person_id]


# --------------------------------------------------------------------------- units of work
# What the API calls: one transaction each.


@contextmanager
def _writing(db: Database) -> Iterator[Session]:
    """A unit of work whose unique-constraint failure (a parallel request added the same
    year after our check) is a 422 with the field, never a 500."""
    try:
        with db.unit_of_work() as s:
            yield s
    except IntegrityError:
        raise FieldErrors({"year": [msg("facts.fact_person_year_was")]}) from None


def _visible_person(s: Session, viewer: Viewer, person_id: int) -> None:
    path = s.execute(select(Unit.path).join(Person, Person.unit_id == Unit.id)
                     .where(Person.id == person_id)).scalar()
    if path is None or not can_see(viewer, person_id, None, path):
        # Not 403: whether a person's file exists is itself not for everyone to know.
        raise NotFound(msg("facts.person_does_not_exist_2", person_id=person_id))


def read(db: Database, viewer: Viewer, person_id: int) -> PersonFacts:
    """A person's facts, for admins, process owners, the person, and leaders and committee
    members of their unit or a unit above it; NotFound for everyone else."""
    with db.unit_of_work(write=False) as s:
        _visible_person(s, viewer, person_id)
        return person_facts(s, person_id)


def create(db: Database, kind: str, person_id: int, values: Values, by: int) -> dict:
    with _writing(db) as s:
        return add_fact(s, kind, person_id, values, by=by)


def change(db: Database, kind: str, fact_id: int, changes: Values, by: int) -> dict:
    with _writing(db) as s:
        return update_fact(s, kind, fact_id, changes, by=by)


def remove(db: Database, kind: str, fact_id: int, by: int) -> None:
    with db.unit_of_work() as s:
        delete_fact(s, kind, fact_id, by=by)


def audit_entries(db: Database, person_id: int, page: int = 1,
                  per_page: int = 50) -> tuple[list[dict[str, Any]], int]:
    """The audit of a person's facts, newest first, with the total."""
    with db.unit_of_work(write=False) as s:
        _person(s, person_id)
        where = FactAudit.person_id == person_id
        total = s.execute(select(func.count()).where(where)).scalar_one()
        rows = s.execute(select(FactAudit).where(where).order_by(FactAudit.id.desc())
                         .limit(per_page).offset((page - 1) * per_page)).scalars()
        return [{"id": a.id, "at": a.at, "actor_id": a.actor_id, "action": a.action,
                 "table": a.table_name, "row_id": a.row_id, "person_id": a.person_id,
                 "before": a.before, "after": a.after} for a in rows], total


# --------------------------------------------------------------------------- CSV import

# One fact per row (UTF-8, header row required, BOM tolerated). Which columns each fact
# uses is `FactKind.csv_columns`; a column a fact does not use must be empty.
CSV_COLUMNS = ("person_code", "fact", "year", "date", "until", "value", "number", "passed",
               "note", "organiser", "mode")
CSV_REQUIRED = ("person_code", "fact")


@dataclass(frozen=True)
class ImportReport:
    rows: int
    created: dict[str, int]  # fact (CSV name) -> rows


@dataclass
class _CsvRow:
    line: int
    person_code: str
    kind: FactKind
    values: Values


def _read_csv(text: str) -> tuple[list[_CsvRow], list[tuple[int, str]]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        return [], [(1, "the file is empty; the first line must name the columns")]
    errors: list[tuple[int, str]] = []
    unknown = [h for h in header if h not in CSV_COLUMNS]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if unknown:
        errors.append((1, msg("facts.unknown_column_columns_are", unknown=list(unknown),
                              CSV_COLUMNS=list(CSV_COLUMNS))))
    if missing:
        errors.append((1, msg("facts.missing_column", missing=list(missing))))
    if errors:
        return [], errors
    rows: list[_CsvRow] = []
    for raw in reader:
        line = reader.line_num
        if None in raw:
            errors.append((line, msg("facts.more_value_than_there", n_value=len(raw[None]))))
            continue
        cells = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        if not any(cells.values()):
            continue
        code, name = cells.get("person_code", ""), cells.get("fact", "")
        problems = [] if code else ["person_code is empty"]
        k = BY_CSV_NAME.get(name)
        if k is None:
            problems.append(msg("facts.fact_not_one", name=name, BY_CSV_NAME=list(BY_CSV_NAME)))
        else:
            for column in CSV_COLUMNS[2:]:
                if cells.get(column) and column not in k.csv_columns and column != "note":
                    problems.append(msg("facts.column_not_used_by", column=column, name=name,
                                        k_csv_columns=list(k.csv_columns)))
        if problems:
            errors.extend((line, p) for p in problems)
            continue
        values = {f: cells.get(c, "") for c, f in k.csv_columns.items()}
        values["note"] = cells.get("note", "")
        rows.append(_CsvRow(line, code, k, values))
    return rows, errors


def import_facts(db: Database, text: str, by: int | None) -> ImportReport:
    """Import facts from CSV text (format in docs/facts.md); all rows or none.

    Every row is checked as `add_fact` checks it, against the database and the rows above
    it; `ImportFailed` lists every bad row by line number and nothing is written. Each row
    written is audited with the action `import`."""
    rows, errors = _read_csv(text)
    created = {k.csv_name: 0 for k in KINDS.values()}
    try:
        with db.unit_of_work() as s:
            codes = sorted({r.person_code for r in rows})
            people = dict(s.execute(select(Person.code, Person.id)
                                    .where(Person.code.in_(codes))).all()) if codes else {}
            for r in rows:
                person_id = people.get(r.person_code)
                if person_id is None:
                    errors.append((r.line, msg("facts.person_does_not_exist_3",
                                               r_person_code=r.person_code)))
                    continue
                try:
                    add_fact(s, r.kind.name, person_id, r.values, by=by, action="import")
                except FieldErrors as exc:
                    column = {f: c for c, f in r.kind.csv_columns.items()}
                    errors.extend((r.line, f"{column.get(f, f)} ({f}): {m}")
                                  for f, msgs in exc.errors.items() for m in msgs)
                    continue
                created[r.kind.csv_name] += 1
            if errors:
                raise ImportFailed(sorted(errors))
    except IntegrityError:
        raise ImportFailed([(1, msg("facts.another_change_these_people"))]) from None
    return ImportReport(len(rows), created)


def xlsx_text(data: bytes) -> str:
    """The first sheet of an XLSX workbook as CSV text for `import_facts`, row for row, so
    the import's line numbers are the sheet's row numbers. Dates become YYYY-MM-DD, numbers
    their plain text; a line break inside a cell becomes a space. `ImportFailed` when the
    bytes are not a workbook."""
    from openpyxl import load_workbook  # only the import needs it

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # noqa: BLE001 - zipfile, XML and openpyxl errors all mean "not XLSX"
        raise ImportFailed([(1, msg("facts.file_not_xlsx_workbook"))]) from None
    try:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for row in book.worksheets[0].iter_rows(values_only=True):
            writer.writerow([_cell(v) for v in row])
        return out.getvalue()
    finally:
        book.close()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return " ".join(str(value).splitlines())


def import_facts_xlsx(db: Database, data: bytes, by: int | None) -> ImportReport:
    """`import_facts` of an XLSX workbook's first sheet (`xlsx_text`); all rows or none."""
    return import_facts(db, xlsx_text(data), by)
