"""The contact-point register (考核联系点台账) and what the monthly reports (信息月报) say.

Seed document 3: the 组织人事部门 picks units as contact points (联系点) of the regular
assessment, "建立工作台账，明确…联系点制度创新的目标任务和成果形式，通过大数据分析和信息月
报等方式，动态跟进". Here:

- the **register**: one row per unit and year — the unit is a contact point that year — with
  its liaison (联络员, a person of that very unit, who files the monthly reports), its level
  (市级 / 区级 / 特色…), its targets (目标任务) and outcomes (成效 / 成果形式) as lists of
  short texts. Admins and process owners write it; leaders and committee members read the
  rows of their unit and its sub-units (the score sheet's rule, `contact_points`).
- the **reports**: the flow `contact-point-report` (definitions/contact-point-report.yaml)
  opens one case per registered contact point per month (its cycle's `who.contact_points`:
  the liaisons of the year's register; a liaison serves one contact point a year, so each
  case is one contact point's). `report_figures` counts them per contact point and year —
  on time, reviewed, the review's quality — and `sheet_items` turns them into the two
  derived lines of the year-end score sheet (成绩单), so they are never typed twice.

Definitions in docs/contact-points.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .access import Viewer
from .db import Database
from .errors import FieldErrors, NotFound
from .facts import MAX_NOTE
from .messages import msg
from .models import Case, ContactPoint, FlowVersion, HistoryRecord, Person, Timer, Unit
from .spec import FlowSpec, load_definition
from .timers import DEADLINE

REPORT_FLOW = "contact-point-report"
REPORT_STATE = "report"  # the liaison's step; its first deadline is the report's due moment
SUBMIT = "submit"
QUALITY_FIELD = "quality"  # an enum field: the first value is the best
ON_TIME_ITEM = "信息月报按时报送"  # derived lines of the score sheet
QUALITY_ITEM = "信息月报质量"
DERIVED_ITEMS = (ON_TIME_ITEM, QUALITY_ITEM)
ENTRY_FIELDS = ("unit_code", "year", "liaison_id", "level", "targets", "outcomes", "note")
CHANGEABLE = ("liaison_id", "level", "targets", "outcomes", "note")
MAX_LIST = 50  # lines of targets or outcomes: a bound against runaway input
MAX_LINE = 500
MAX_LEVEL = 64

CASES, HISTORY, TIMERS = Case.__table__, HistoryRecord.__table__, Timer.__table__
Errors = dict[str, list[str]]


# --------------------------------------------------------------------------- checking


def _texts(name: str, value: Any, errors: Errors) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        errors[name] = [msg("contact_register.must_list_short_texts")]
        return None
    if len(value) > MAX_LIST:
        errors[name] = [msg("contact_register.lines_are_more_than", n_value=len(value),
                            MAX_LIST=MAX_LIST)]
        return None
    out = []
    for i, line in enumerate(value):
        if not isinstance(line, str) or not line.strip():
            errors.setdefault(f"{name}[{i}]", []).append(msg("contact_register.must_non_blank_text"))
        elif len(line.strip()) > MAX_LINE:
            errors.setdefault(f"{name}[{i}]", []).append(
                msg("contact_register.longer_than_characters_2", MAX_LINE=MAX_LINE))
        else:
            out.append(line.strip())
    return out or None


def _text(name: str, value: Any, limit: int, errors: Errors) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors[name] = [msg("contact_register.not_text", value=value)]
        return None
    value = value.strip()
    if len(value) > limit:
        errors[name] = [msg("contact_register.longer_than_characters", limit=limit)]
    return value or None


def _check(s: Session, values: Mapping[str, Any], row: ContactPoint | None
           ) -> dict[str, Any]:
    """The entry's values checked against the database; FieldErrors otherwise."""
    from .contact_points import check_year  # the score sheet's module imports this one

    allowed = CHANGEABLE if row is not None else ENTRY_FIELDS
    errors: Errors = {}
    for key in values:
        if key not in allowed:
            errors[key] = [msg("contact_register.not_field_fields_are",
                               value='one may change' if row else 'of an entry',
                               allowed=list(allowed))]
    out: dict[str, Any] = {}
    if row is None:
        for key in ("unit_code", "year", "liaison_id"):
            if values.get(key) is None:
                errors.setdefault(key, []).append(msg("contact_register.required"))
        if values.get("year") is not None:
            try:
                out["year"] = check_year(values["year"])
            except FieldErrors as exc:
                errors.update(exc.errors)
        code = values.get("unit_code")
        if code is not None:
            unit = s.execute(select(Unit).where(Unit.code == code)).scalar() \
                if isinstance(code, str) else None
            if unit is None:
                errors.setdefault("unit_code", []).append(msg("contact_register.unit_does_not_exist",
                                                              code=code))
            else:
                out["unit_id"] = unit.id
    unit_id = row.unit_id if row is not None else out.get("unit_id")
    year = row.year if row is not None else out.get("year")
    if "liaison_id" in values and values["liaison_id"] is not None:
        pid = values["liaison_id"]
        person = s.get(Person, pid) if isinstance(pid, int) and not isinstance(pid, bool) \
            else None
        if person is None:
            errors.setdefault("liaison_id", []).append(msg("contact_register.person_does_not_exist",
                                                           pid=pid))
        elif not person.active:
            errors.setdefault("liaison_id", []).append(
                msg("contact_register.person_not_active", pid=pid, person_name=person.name))
        elif unit_id is not None and person.unit_id != unit_id:
            errors.setdefault("liaison_id", []).append(
                msg("contact_register.person_not_contact_point", pid=pid, person_name=person.name))
        elif year is not None:
            other = s.execute(select(ContactPoint, Unit.code)
                              .join(Unit, Unit.id == ContactPoint.unit_id)
                              .where(ContactPoint.year == year, ContactPoint.liaison_id == pid,
                                     ContactPoint.id != (row.id if row else 0))).first()
            if other is not None:
                errors.setdefault("liaison_id", []).append(
                    msg("contact_register.person_already_liaison_one", pid=pid,
                        person_name=person.name, value=other[1], year=year))
            else:
                out["liaison_id"] = pid
    elif "liaison_id" in values and row is not None:
        errors.setdefault("liaison_id", []).append(msg("contact_register.required"))
    if row is None and unit_id is not None and year is not None:
        other = s.execute(select(ContactPoint.id).where(
            ContactPoint.unit_id == unit_id, ContactPoint.year == year)).scalar()
        if other is not None:
            errors.setdefault("unit_code", []).append(
                msg("contact_register.already_contact_point_entry", unit_code=values['unit_code'],
                    year=year, other=other))
    if "level" in values:
        out["level"] = _text("level", values["level"], MAX_LEVEL, errors)
    if "note" in values:
        out["note"] = _text("note", values["note"], MAX_NOTE, errors)
    for key in ("targets", "outcomes"):
        if key in values:
            out[key] = _texts(key, values[key], errors)
    if errors:
        raise FieldErrors(errors)
    return out


# --------------------------------------------------------------------------- rows out


def _entry_out(s: Session, row: ContactPoint, figures: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    unit = s.get(Unit, row.unit_id)
    liaison = s.get(Person, row.liaison_id)
    return {"id": row.id, "unit": {"id": unit.id, "code": unit.code, "name": unit.name},
            "year": row.year,
            "liaison": {"id": liaison.id, "code": liaison.code, "name": liaison.name},
            "level": row.level, "targets": list(row.targets or []),
            "outcomes": list(row.outcomes or []), "note": row.note, "set_by": row.set_by,
            "set_at": row.set_at, "reports": figures}


def _row(s: Session, entry_id: int) -> ContactPoint:
    row = s.get(ContactPoint, entry_id)
    if row is None:
        raise NotFound(msg("contact_register.contact_point_entry_does", entry_id=entry_id))
    return row


# --------------------------------------------------------------------------- writes


def add_entry(s: Session, values: Mapping[str, Any], *, by: int | None,
              now: dt.datetime) -> dict[str, Any]:
    """Register a unit as a contact point of a year (列为联系点)."""
    clean = _check(s, values, None)
    row = ContactPoint(**clean, set_by=by, set_at=now)
    s.add(row)
    s.flush()
    return _entry_out(s, row)


def change_entry(s: Session, entry_id: int, changes: Mapping[str, Any], *, by: int | None,
                 now: dt.datetime) -> dict[str, Any]:
    """Change the liaison, level, targets, outcomes or note of an entry. A new liaison
    files the reports opened from then on; cases already opened keep their subject."""
    row = _row(s, entry_id)
    for key, value in _check(s, changes, row).items():
        setattr(row, key, value)
    row.set_by, row.set_at = by, now
    s.flush()
    return _entry_out(s, row)


def create(db: Database, viewer: Viewer, values: Mapping[str, Any], now: dt.datetime
           ) -> dict[str, Any]:
    from .contact_points import require_writer

    require_writer(viewer, "registering a contact point")
    try:
        with db.unit_of_work() as s:
            return add_entry(s, values, by=viewer.person_id, now=now)
    except IntegrityError:
        raise FieldErrors({"unit_code": [
            msg("contact_register.same_unit_liaison_was")]}) from None


def change(db: Database, viewer: Viewer, entry_id: int, changes: Mapping[str, Any],
           now: dt.datetime) -> dict[str, Any]:
    from .contact_points import require_writer

    require_writer(viewer, "changing a contact point")
    try:
        with db.unit_of_work() as s:
            return change_entry(s, entry_id, changes, by=viewer.person_id, now=now)
    except IntegrityError:
        raise FieldErrors({"liaison_id": [
            msg("contact_register.liaison_was_registered_another")]}) from None


def remove(db: Database, viewer: Viewer, entry_id: int) -> None:
    """Take a unit off the register. Its report cases stay (they are the unit's history);
    the cycle opens no more for it."""
    from .contact_points import require_writer

    require_writer(viewer, "deleting a contact point")
    with db.unit_of_work() as s:
        s.delete(_row(s, entry_id))


# --------------------------------------------------------------------------- reading


def entries(s: Session, viewer: Viewer, year: int, unit_id: int | None = None
            ) -> list[dict[str, Any]]:
    """The year's register as the viewer may read it (by unit code), each entry with the
    figures of its monthly reports."""
    from .contact_points import _readable, check_year, require_reader

    require_reader(viewer)
    check_year(year)
    q = _readable(s, select(ContactPoint).join(Unit, Unit.id == ContactPoint.unit_id)
                  .where(ContactPoint.year == year).order_by(Unit.code), viewer, unit_id)
    rows = s.execute(q).scalars().all()
    figures = report_figures(s, [r.unit_id for r in rows], year)
    return [_entry_out(s, r, figures.get(r.unit_id)) for r in rows]


def entry(s: Session, viewer: Viewer, entry_id: int) -> dict[str, Any]:
    from .contact_points import _visible_units, require_reader

    require_reader(viewer)
    row = _row(s, entry_id)
    cond = _visible_units(viewer)
    if cond is not None and s.execute(select(Unit.id).where(
            Unit.id == row.unit_id, cond)).first() is None:
        raise NotFound(msg("contact_register.contact_point_entry_does", entry_id=entry_id))
    return _entry_out(s, row, report_figures(s, [row.unit_id], row.year).get(row.unit_id))


# --------------------------------------------------------------------------- the reports

_SPECS: dict[str, FlowSpec] = {}  # content hash → spec: a published version never changes


def report_flow(s: Session) -> FlowSpec | None:
    """The latest published version of the report flow, or None when it is not published."""
    row = s.execute(select(FlowVersion.content_hash, FlowVersion.source, FlowVersion.filename)
                    .where(FlowVersion.flow_id == REPORT_FLOW,
                           FlowVersion.status == "published")
                    .order_by(FlowVersion.version.desc()).limit(1)).first()
    if row is None:
        return None
    if row.content_hash not in _SPECS:
        _SPECS[row.content_hash] = load_definition(row.source, row.filename)
    return _SPECS[row.content_hash]


def _quality_values(spec: FlowSpec) -> list[str]:
    f = spec.fields.get(QUALITY_FIELD)
    return list(f.values or ()) if f is not None and f.type == "enum" else []


def report_figures(s: Session, unit_ids: Iterable[int], year: int,
                   spec: FlowSpec | None = None) -> dict[int, dict[str, Any]]:
    """For each contact-point unit: its monthly reports of `year` (periods `YYYY-MM`).

    `reports` the cases; `submitted` those the liaison has submitted at least once;
    `on_time` those first submitted at or before the report step's deadline (the first
    `deadline` timer of the case, armed when it opened: 5 working days after the month by
    the shipped definition); `reviewed` those in a final state with a quality; `quality`
    how many of each value; `quality_points` the points (the best value of the field
    scores n-1, the next n-2, … the last 0) and `quality_max` what the reviewed reports
    could have scored. Empty when the flow is not published. Two queries for the batch."""
    unit_ids = sorted(set(unit_ids))
    spec = spec or report_flow(s)
    if spec is None or not unit_ids:
        return {}
    values = _quality_values(spec)
    finals = [n for n, st in spec.states.items() if st.final]
    first_submit = (select(func.min(HISTORY.c.at))
                    .where(HISTORY.c.case_id == CASES.c.id, HISTORY.c.trigger == SUBMIT)
                    .scalar_subquery())
    deadline = (select(func.min(TIMERS.c.due_at))
                .where(TIMERS.c.case_id == CASES.c.id, TIMERS.c.kind == DEADLINE,
                       TIMERS.c.state_visit == 1)
                .scalar_subquery())
    q = (select(CASES.c.unit_id, CASES.c.state, CASES.c.data[QUALITY_FIELD].as_string(),
                first_submit, deadline)
         .where(CASES.c.flow_id == REPORT_FLOW, CASES.c.unit_id.in_(unit_ids),
                CASES.c.period_key.like(f"{year:04d}-%")))
    out = {uid: {"reports": 0, "submitted": 0, "on_time": 0, "reviewed": 0,
                 "quality": {v: 0 for v in values}, "quality_points": 0, "quality_max": 0}
           for uid in unit_ids}
    top = max(len(values) - 1, 0)
    for uid, state, quality, submitted, due in s.execute(q).all():
        o = out[uid]
        o["reports"] += 1
        if submitted is not None:
            o["submitted"] += 1
            if due is None or _aware(submitted) <= _aware(due):
                o["on_time"] += 1
        if state in finals and quality in values:
            o["reviewed"] += 1
            o["quality"][quality] += 1
            o["quality_points"] += top - values.index(quality)
            o["quality_max"] += top
    for o in out.values():
        o["on_time_rate"] = round(o["on_time"] / o["reports"], 4) if o["reports"] else None
    return out


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def sheet_items(s: Session, unit_id: int, year: int) -> list[dict[str, Decimal | str]]:
    """The score-sheet lines the monthly reports give, as `{item, score, max}`:
    信息月报按时报送 (reports on time of the year's reports, one point each) and 信息月报质量
    (the reviewed reports' quality points of their maximum). A line is left out while it
    has nothing to count (no report, none reviewed)."""
    figures = report_figures(s, [unit_id], year).get(unit_id)
    if not figures:
        return []
    out: list[dict[str, Decimal | str]] = []
    if figures["reports"]:
        out.append({"item": ON_TIME_ITEM, "score": Decimal(figures["on_time"]),
                    "max": Decimal(figures["reports"])})
    if figures["quality_max"]:
        out.append({"item": QUALITY_ITEM, "score": Decimal(figures["quality_points"]),
                    "max": Decimal(figures["quality_max"])})
    return out
