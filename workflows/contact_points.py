"""The contact-point score sheet (考核联系点成绩单, docs/domain.md §5, seed document 3).

Selected units pilot the regular assessment as contact points (联系点). At year end each one
is evaluated and gets a score sheet: lines of {item, score, max} and their total, and a flag
`raised` for the units whose annual 优秀 ratio is raised ("对评估排名靠前、全年工作任务完成较
好的单位，年度考核优秀比例提高到…"). The annual rule `excellent_quota` reads the flag (and,
optionally, the rank) from here.

Admins and process owners write the sheets (one per unit and year; writing again replaces
it), by hand or by CSV import; the row keeps who wrote it and when. Leaders and committee
members read the sheets of their unit and its sub-units. Beside each sheet the ledger shows
what the data of that year says about the unit's regular assessment — cases, completion,
on-time completion, 好 against the quota, weekly records, results used — computed here with
the same visibility as the ledger (`access.visible_cases`). Definitions in
docs/contact-points.md.

Values are checked here, not only in the API, so the CSV import and Python callers get the
same precise messages (`FieldErrors`, field path → messages).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, exists, false, func, not_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from . import rules
from .access import COMMITTEE, LEADER, Viewer, visible_cases
from .calendar import DEFAULT_TZ
from .db import Database
from .errors import FieldErrors, Forbidden, ImportFailed, NotFound
from .facts import MAX_NOTE, MAX_YEAR, MIN_YEAR, NO, YES
from .messages import msg
from .models import Case, ContactPointScore, HistoryRecord, Timer, Unit, unit_path_ids
from .spec import FlowSpec
from .timers import DEADLINE

CASES = Case.__table__
HISTORY = HistoryRecord.__table__
TIMERS = Timer.__table__
REGULAR_FLOW = "regular-assessment"
WEEKLY_FIELD = "weekly_records"  # the regular flow's 周记实 list
MAX_ITEMS = 100  # lines on one sheet: a bound against runaway input, not a domain number
MAX_ITEM_TEXT = 200
MAX_SCORE = Decimal("9999.99")  # what the score column (NUMERIC(6, 2)) holds
PLACES = Decimal("0.01")
SHEET_FIELDS = ("score", "items", "raised", "note")
ITEM_FIELDS = ("item", "score", "max")

Errors = dict[str, list[str]]


# --------------------------------------------------------------------------- checking


def _number(value: Any) -> tuple[Decimal | None, str | None]:
    """A score as a Decimal of at most two places, or why not."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, bool):
        return None, f"{value!r} is not a number"
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None, f"{value!r} is not a number"
    if not number.is_finite():
        return None, f"{value!r} is not a finite number"
    if number < 0:
        return None, f"must not be negative (got {number})"
    if number > MAX_SCORE:
        return None, f"must be at most {MAX_SCORE} (got {number})"
    if number != number.quantize(PLACES):
        return None, f"{number} has more than 2 decimal places"
    return number, None


def shown(number: Decimal | float | None) -> str:
    """A score as people write it: 95.0, 95.5, 95.25."""
    if number is None:
        return "—"
    text = f"{Decimal(str(number)):.2f}"
    return text[:-1] if text.endswith("0") else text


def check_year(year: Any) -> int:
    if isinstance(year, bool) or not isinstance(year, int):
        raise FieldErrors({"year": [msg("contact_points.not_year", year=year)]})
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise FieldErrors({"year": [msg("contact_points.not_year_between", year=year,
                                        MIN_YEAR=MIN_YEAR, MAX_YEAR=MAX_YEAR)]})
    return year


def _check_items(items: Any, errors: Errors) -> list[dict[str, Decimal | str]]:
    if not isinstance(items, list):
        errors["items"] = [msg("contact_points.must_list_item_score")]
        return []
    if len(items) > MAX_ITEMS:
        errors["items"] = [msg("contact_points.lines_are_more_than", n_items=len(items),
                               MAX_ITEMS=MAX_ITEMS)]
        return []
    out: list[dict[str, Decimal | str]] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(items):
        at = f"items[{i}]"
        if not isinstance(raw, Mapping):
            errors[at] = [msg("contact_points.must_object_item_score")]
            continue
        for key in raw:
            if key not in ITEM_FIELDS:
                errors.setdefault(f"{at}.{key}", []).append(
                    msg("contact_points.not_field_item_fields", ITEM_FIELDS=list(ITEM_FIELDS)))
        name = raw.get("item")
        if not isinstance(name, str) or not name.strip():
            errors.setdefault(f"{at}.item", []).append(msg("contact_points.required_must_not_blank"))
            name = None
        elif len(name.strip()) > MAX_ITEM_TEXT:
            errors.setdefault(f"{at}.item", []).append(
                msg("contact_points.longer_than_characters_2", MAX_ITEM_TEXT=MAX_ITEM_TEXT))
            name = None
        else:
            name = name.strip()
            if name in seen:
                errors.setdefault(f"{at}.item", []).append(
                    msg("contact_points.already_items_each_item", name=name, value=seen[name]))
            seen.setdefault(name, i)
        values: dict[str, Decimal | None] = {}
        for key in ("score", "max"):
            number, problem = _number(raw.get(key))
            if problem:
                errors.setdefault(f"{at}.{key}", []).append(problem)
            elif number is None:
                errors.setdefault(f"{at}.{key}", []).append(msg("contact_points.required"))
            values[key] = number
        score, top = values["score"], values["max"]
        if top is not None and top == 0:
            errors.setdefault(f"{at}.max", []).append(msg("contact_points.must_more_than"))
        elif score is not None and top is not None and score > top:
            errors.setdefault(f"{at}.score", []).append(
                msg("contact_points.more_than_item_max", score=score, top=top))
        if name is not None and score is not None and top is not None:
            out.append({"item": name, "score": score, "max": top})
    return out


def check_sheet(values: Mapping[str, Any]) -> dict[str, Any]:
    """The sheet's values checked and completed: `score` is the items' total when only the
    items are given; a total given with items must equal their sum. FieldErrors otherwise."""
    errors: Errors = {}
    for key in values:
        if key not in SHEET_FIELDS:
            errors[key] = [msg("contact_points.not_field_score_sheet",
                               SHEET_FIELDS=list(SHEET_FIELDS))]
    items_in = values.get("items")
    items = _check_items(items_in, errors) if items_in not in (None, []) else []
    score, problem = _number(values.get("score"))
    if problem:
        errors.setdefault("score", []).append(problem)
    raised = values.get("raised", False)
    if raised is None:
        raised = False
    if not isinstance(raised, bool):
        errors["raised"] = [msg("contact_points.not_true_false", raised=raised)]
    note = values.get("note")
    if note is not None and not isinstance(note, str):
        errors["note"] = [msg("contact_points.not_text", note=note)]
    elif isinstance(note, str):
        note = note.strip() or None
        if note and len(note) > MAX_NOTE:
            errors["note"] = [msg("contact_points.longer_than_characters", MAX_NOTE=MAX_NOTE)]
    if errors:
        raise FieldErrors(errors)
    if items:
        total = sum((i["score"] for i in items), Decimal(0))
        if score is not None and score != total:
            raise FieldErrors({"score": [
                msg("contact_points.not_sum_items_scores", score=score, total=total,
                    n_items=len(items), value='s' if len(items) != 1 else '')]})
        if total > MAX_SCORE:
            raise FieldErrors({"score": [msg("contact_points.items_add_up_more", total=total,
                                             MAX_SCORE=MAX_SCORE)]})
        score = total
    elif score is None:
        raise FieldErrors({"score": [msg("contact_points.required_when_no_items")]})
    return {"score": score, "items": [{"item": i["item"], "score": str(i["score"]),
                                       "max": str(i["max"])} for i in items] or None,
            "raised": raised, "note": note}


def with_report_items(s: Session, unit_id: int, year: int, clean: dict[str, Any]
                      ) -> dict[str, Any]:
    """The checked sheet with the report-derived lines added (itemised sheets only: a total
    entered alone already scores everything). A typed line named like one is refused."""
    from .contact_register import DERIVED_ITEMS, sheet_items  # it imports this module

    typed = clean["items"] or []
    clash = [i for i, x in enumerate(typed) if x["item"] in DERIVED_ITEMS]
    if clash:
        raise FieldErrors({f"items[{i}].item": [
            msg("contact_points.derived_from_monthly_reports",
                item=typed[i]['item'])] for i in clash})
    if not typed:
        return clean
    derived = sheet_items(s, unit_id, year)
    total = clean["score"] + sum((d["score"] for d in derived), Decimal(0))
    if total > MAX_SCORE:
        raise FieldErrors({"score": [msg("contact_points.monthly_reports_lines_sheet", total=total,
                                         MAX_SCORE=MAX_SCORE)]})
    items = typed + [{"item": d["item"], "score": str(d["score"]), "max": str(d["max"])}
                     for d in derived]
    return clean | {"items": items, "score": total}


# --------------------------------------------------------------------------- rows out


def _items_out(items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [{"item": i["item"], "score": Decimal(str(i["score"])),
             "max": Decimal(str(i["max"]))} for i in items or ()]


def sheet_out(row: ContactPointScore, unit: Unit, rank: int | None = None,
              of: int | None = None) -> dict[str, Any]:
    return {"unit": {"id": unit.id, "code": unit.code, "name": unit.name},
            "year": row.year, "score": row.score, "rank": rank, "of": of,
            "items": _items_out(row.items), "raised": bool(row.raised), "note": row.note,
            "set_by": row.set_by, "set_at": row.set_at}


def _unit(s: Session, code: str) -> Unit:
    unit = s.execute(select(Unit).where(Unit.code == code)).scalar()
    if unit is None:
        raise NotFound(msg("contact_points.unit_does_not_exist", code=code))
    return unit


# --------------------------------------------------------------------------- writes


def put_sheet(s: Session, unit_code: str, year: int, values: Mapping[str, Any], *,
              by: int | None, now: dt.datetime) -> tuple[dict[str, Any], bool]:
    """Set (create or replace) a unit's score sheet of a year; (the sheet, created?).

    An itemised sheet gets the lines the unit's monthly reports give (信息月报按时报送,
    信息月报质量: `contact_register.sheet_items`) added to the typed ones, as of now."""
    unit = _unit(s, unit_code)
    check_year(year)
    clean = with_report_items(s, unit.id, year, check_sheet(values))
    row = s.execute(select(ContactPointScore).where(
        ContactPointScore.unit_id == unit.id, ContactPointScore.year == year)).scalar()
    created = row is None
    if row is None:
        row = ContactPointScore(unit_id=unit.id, year=year)
        s.add(row)
    for key, value in clean.items():
        setattr(row, key, value)
    row.set_by, row.set_at = by, now
    s.flush()
    return sheet_out(row, unit), created


def delete_sheet(s: Session, unit_code: str, year: int) -> None:
    unit = _unit(s, unit_code)
    row = s.execute(select(ContactPointScore).where(
        ContactPointScore.unit_id == unit.id, ContactPointScore.year == year)).scalar()
    if row is None:
        raise NotFound(msg("contact_points.unit_has_no_contact", unit_code=unit_code, year=year))
    s.delete(row)
    s.flush()


def require_writer(viewer: Viewer, doing: str) -> None:
    """Score sheets are written by admins and process owners (组织人事部门)."""
    if not viewer.sees_all:
        raise Forbidden(msg("contact_points.needs_role_admin_process",
                            doing=doing), rule="needs_admin_or_process_owner")


def require_reader(viewer: Viewer) -> None:
    """Leaders and committee members read their subtree; admins and owners every sheet."""
    if not (viewer.sees_all or viewer.paths(LEADER, COMMITTEE)):
        raise Forbidden(msg("contact_points.reading_contact_point_score"), rule="contact_points_read")


def set_sheet(db: Database, viewer: Viewer, unit_code: str, year: int,
              values: Mapping[str, Any], now: dt.datetime) -> tuple[dict[str, Any], bool]:
    """`put_sheet` in its own transaction, for an admin or a process owner."""
    require_writer(viewer, "setting a contact-point score sheet")
    for attempt in range(2):
        try:
            with db.unit_of_work() as s:
                out, created = put_sheet(s, unit_code, year, values, by=viewer.person_id,
                                         now=now)
            break
        except IntegrityError:
            # Another request created the same unit and year after we looked: now it is
            # there, and the second attempt replaces it.
            if attempt:
                raise
    with db.unit_of_work(write=False) as s:
        return _with_rank(s, out), created


def remove_sheet(db: Database, viewer: Viewer, unit_code: str, year: int) -> None:
    require_writer(viewer, "deleting a contact-point score sheet")
    with db.unit_of_work() as s:
        delete_sheet(s, unit_code, year)


# --------------------------------------------------------------------------- ranks


@dataclass(frozen=True)
class Ranked:
    """A sheet of a year with its place: ties share a rank (1, 1, 3), sheets without a
    score have none."""

    unit_id: int
    code: str
    year: int
    score: Decimal | None
    raised: bool
    rank: int | None
    of: int  # sheets with a score that year


def ranked(s: Session, years: Iterable[int]) -> dict[int, list[Ranked]]:
    """Every sheet of the years, best score first (one query)."""
    years = sorted(set(years))
    out: dict[int, list[Ranked]] = {y: [] for y in years}
    if not years:
        return out
    rows = s.execute(
        select(ContactPointScore.unit_id, Unit.code, ContactPointScore.year,
               ContactPointScore.score, ContactPointScore.raised)
        .join(Unit, Unit.id == ContactPointScore.unit_id)
        .where(ContactPointScore.year.in_(years))).all()
    by_year: dict[int, list[Any]] = {}
    for r in rows:
        by_year.setdefault(r.year, []).append(r)
    for year, sheets in by_year.items():
        scored = sorted((r for r in sheets if r.score is not None),
                        key=lambda r: (-r.score, r.code))
        of = len(scored)
        rank, previous = 0, None
        for i, r in enumerate(scored, start=1):
            if r.score != previous:
                rank, previous = i, r.score
            out[year].append(Ranked(r.unit_id, r.code, year, r.score, bool(r.raised), rank,
                                    of))
        out[year] += [Ranked(r.unit_id, r.code, year, None, bool(r.raised), None, of)
                      for r in sorted(sheets, key=lambda r: r.code) if r.score is None]
    return out


def _with_rank(s: Session, sheet: dict[str, Any]) -> dict[str, Any]:
    for r in ranked(s, [sheet["year"]])[sheet["year"]]:
        if r.unit_id == sheet["unit"]["id"]:
            return {**sheet, "rank": r.rank, "of": r.of}
    return sheet


@dataclass(frozen=True)
class Raise:
    """Why a unit's 优秀 ratio is raised: the unit (itself or above it) and the source."""

    code: str
    source: str  # score_sheet | raise_top | raise_units
    year: int | None = None
    score: Decimal | None = None
    rank: int | None = None
    of: int | None = None
    top: int | None = None

    def describe(self) -> str:
        if self.source == "raise_units":
            return self.code
        top = msg("contact_points.raise_top", top=self.top) if self.source == "raise_top" else ""
        return msg("contact_points.raise_sheet", unit=self.code, year=self.year,
                   score=shown(self.score), rank=self.rank, top=top)

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"unit": self.code, "source": self.source}
        if self.source != "raise_units":
            out.update(year=self.year, score=float(self.score) if self.score is not None
                       else None, rank=self.rank, of=self.of)
        if self.top is not None:
            out["top"] = self.top
        return out


def raised_units(s: Session, unit_ids: Iterable[int], years: Iterable[int | None],
                 codes: Iterable[str] = (), top: int | None = None
                 ) -> dict[tuple[int, int | None], Raise]:
    """For each (unit, year): why the 优秀 ratio of that unit is raised, if it is.

    A unit is raised when it or a unit above it has a score sheet of the year flagged
    `raised`, or ranked within the `top` of the year (ties at the boundary included), or is
    one of `codes` (a definition's `raise_units`). The nearest unit wins; on one unit a
    score sheet is named before a listed code. A year of None (a case without a period)
    knows only the codes. Pairs that are not raised are left out. Three queries for the
    whole batch, none per case."""
    unit_ids, codes = sorted(set(unit_ids)), sorted(set(codes))
    wanted = sorted({y for y in years if y is not None})
    if not unit_ids:
        return {}
    paths = dict(s.execute(select(Unit.id, Unit.path).where(Unit.id.in_(unit_ids))).all())
    listed = dict(s.execute(select(Unit.id, Unit.code).where(Unit.code.in_(codes))).all()) \
        if codes else {}
    sheets = {(r.unit_id, r.year): r for rs in ranked(s, wanted).values() for r in rs}
    out: dict[tuple[int, int | None], Raise] = {}
    for uid in unit_ids:
        chain = [a for a in reversed(unit_path_ids(paths.get(uid) or "")) if a != uid]
        chain.insert(0, uid)  # nearest first
        for year in [*wanted, None]:
            for a in chain:
                r = sheets.get((a, year))
                if r is not None and (r.raised or (top and r.rank and r.rank <= top)):
                    out[(uid, year)] = Raise(r.code, "score_sheet" if r.raised else
                                             "raise_top", year, r.score, r.rank, r.of,
                                             None if r.raised else top)
                    break
                if a in listed:
                    out[(uid, year)] = Raise(listed[a], "raise_units")
                    break
    return out


# --------------------------------------------------------------------------- reading


def _visible_units(viewer: Viewer) -> Any:
    """SQL condition on `units` for the score sheets the viewer may read."""
    if viewer.sees_all:
        return None
    paths = viewer.paths(LEADER, COMMITTEE)
    return or_(*[Unit.path.like(f"{p}%") for p in paths]) if paths else false()


def _readable(s: Session, q: Any, viewer: Viewer, unit_id: int | None) -> Any:
    """`q` (joined with `units`) narrowed to what the viewer may read and, when given, to
    the subtree of `unit_id` (NotFound for a unit that does not exist)."""
    cond = _visible_units(viewer)
    if cond is not None:
        q = q.where(cond)
    if unit_id is not None:
        path = s.execute(select(Unit.path).where(Unit.id == unit_id)).scalar()
        if path is None:
            raise NotFound(msg("contact_points.unit_does_not_exist_2", unit_id=unit_id))
        q = q.where(Unit.path.like(f"{path}%"))
    return q


def sheets(s: Session, viewer: Viewer, year: int, unit_id: int | None = None
           ) -> list[dict[str, Any]]:
    """The year's score sheets the viewer may read, by rank (ties by unit code), each with
    its rank among all sheets of the year."""
    check_year(year)
    places = {r.unit_id: r for r in ranked(s, [year])[year]}
    q = _readable(s, select(ContactPointScore, Unit).join(
        Unit, Unit.id == ContactPointScore.unit_id).where(ContactPointScore.year == year),
        viewer, unit_id)
    out = [sheet_out(row, unit, places[row.unit_id].rank, places[row.unit_id].of)
           for row, unit in s.execute(q).all()]
    return sorted(out, key=lambda x: (x["rank"] is None, x["rank"] or 0, x["unit"]["code"]))


# --------------------------------------------------------------------------- statistics


def _rate(part: int, whole: int, places: int = 4) -> float | None:
    return round(part / whole, places) if whole else None


def _one(cond: Any) -> Any:
    return case((cond, 1), else_=0)


def _list_length(dialect: str, field: str) -> Any:
    """Items in a list field of the case data (0 when absent), on either database."""
    if dialect == "postgresql":
        value = CASES.c.data[field]
        return case((func.jsonb_typeof(value) == "array", func.jsonb_array_length(value)),
                    else_=0)
    return func.coalesce(func.json_array_length(CASES.c.data, f'$."{field}"'), 0)


def _late() -> Any:
    """The case left some step after that step's deadline had passed.

    Every deadline is a row of `timers` (kind `deadline`) that outlives the step: fired when
    it passed, dropped when the case moved on first. The step's visit ends with the first
    later history record that changes the state; the case was late if that record came
    after the deadline."""
    left_at = (select(func.min(HISTORY.c.at))
               .where(HISTORY.c.case_id == TIMERS.c.case_id,
                      HISTORY.c.seq > TIMERS.c.state_visit,
                      HISTORY.c.from_state != HISTORY.c.to_state)
               .scalar_subquery())
    return exists().where(TIMERS.c.case_id == CASES.c.id, TIMERS.c.kind == DEADLINE,
                          TIMERS.c.due_at < left_at)


@dataclass(frozen=True)
class _Reader:
    """A transition whose rule reads a person's regular results of some year."""

    version_id: int
    trigger: str
    kind: str  # same_year: the case's period year | decision: the decision's year (min_good)
    field: str | None  # regular_linkage: the guarded field; promotion_eligible: date field
    value: Any = None


def _readers(specs: Mapping[int, FlowSpec], flow: str) -> list[_Reader]:
    """The transitions of every stored version whose rules read `flow`'s results:
    `regular_linkage` (annual 优秀, the assessment year) and `promotion_eligible` with
    `min_good` (the decision's year or the one before, `good_year`), and the
    `promotion_recheck` that repeats it on the decision date."""
    out = []
    for vid, spec in specs.items():
        for t, p in rules.uses(spec, "regular_linkage"):
            if p["regular_flow"] == flow:
                out.append(_Reader(vid, t.trigger, "same_year", p["field"], p["value"]))
        for t, p in rules.uses(spec, "promotion_eligible"):
            if p.get("min_good") and p["good_flow"] == flow:
                out.append(_Reader(vid, t.trigger, "decision", p.get("date_field"),
                                   p["good_year"]))
                # `promotion_recheck` judges again with these parameters on its own date
                for rt, rp in rules.uses(spec, "promotion_recheck"):
                    out.append(_Reader(vid, rt.trigger, "decision", rp.get("date_field"),
                                       p["good_year"]))
    return out


def _read_year(reader: _Reader, period_key: str | None, data: dict[str, Any],
               at: dt.datetime, tz: ZoneInfo) -> int | None:
    """The year of regular results the recorded step read, or None if it read none."""
    if reader.kind == "same_year":
        if (data or {}).get(reader.field) != reader.value:
            return None  # regular_linkage reads the results only for the guarded grade
        key = period_key or ""
        return int(key[:4]) if key[:4].isdigit() else None
    day = (data or {}).get(reader.field) if reader.field else None
    try:
        on = dt.date.fromisoformat(str(day)) if day else at.astimezone(tz).date()
    except ValueError:
        on = at.astimezone(tz).date()
    from .domain_rules.promotion import good_year  # here: the rules import this module

    return good_year({"good_year": reader.value}, on)


def statistics(s: Session, viewer: Viewer, flow: FlowSpec, year: int,
               unit_ids: Iterable[int], *, specs: Mapping[int, FlowSpec] | None = None,
               weekly_field: str = WEEKLY_FIELD, tz: ZoneInfo | None = None
               ) -> dict[int, dict[str, Any]]:
    """For each unit (with its sub-units): what the year's cases of `flow` say.

    Counts only the cases the viewer may see. `specs` (version id → spec, every stored
    version) lets `results_used` be computed; without it that figure is None.
    One aggregate query for the cases, one for the people with results, one for the
    recorded steps that read them."""
    # Imported here: the ledger imports the engine, which loads the rules, whose annual
    # module reads the score sheets from this one.
    from .ledger import require_quota

    check_year(year)
    quota = require_quota(flow)
    if weekly_field not in flow.fields or flow.fields[weekly_field].type != "list":
        lists = [n for n, f in flow.fields.items() if f.type == "list"]
        raise FieldErrors({"weekly_field": [
            msg("contact_points.not_list_field_list", weekly_field=weekly_field,
                flow_flow=flow.flow, value=', '.join(lists) or 'none')]})
    unit_ids = sorted(set(unit_ids))
    out = {uid: _empty(quota) for uid in unit_ids}
    if not unit_ids:
        return out
    dialect = s.get_bind().dialect.name
    cp = aliased(Unit)
    in_year = CASES.c.period_key.like(f"{year:04d}%")
    counted = CASES.c.state.in_(quota.counted_states)
    grade = CASES.c.data[quota.field].as_string()
    base = (CASES.join(Unit, Unit.id == CASES.c.unit_id)
            .join(cp, Unit.path.like(cp.path + "%")))
    where = [CASES.c.flow_id == flow.flow, in_year, visible_cases(viewer),
             cp.id.in_(unit_ids)]
    closed = CASES.c.closed_at.is_not(None)
    inner = (select(cp.id.label("cp"), CASES.c.unit_id.label("unit"),
                    CASES.c.tier.label("tier"), CASES.c.period_key.label("period"),
                    _one(closed).label("closed"),
                    _one(and_(closed, not_(_late()))).label("on_time"),
                    _one(counted).label("counted"),
                    _one(and_(counted, grade == str(quota.value))).label("good"),
                    _list_length(dialect, weekly_field).label("weekly"))
             .select_from(base).where(*where).subquery())
    keys = [inner.c.cp, inner.c.unit, inner.c.tier, inner.c.period]
    q = (select(*keys, func.count(), *[func.coalesce(func.sum(inner.c[n]), 0)
                                       for n in ("closed", "on_time", "counted", "good",
                                                 "weekly")])
         .group_by(*keys))
    pools: dict[int, dict[tuple, int]] = {uid: {} for uid in unit_ids}
    for cp_id, unit, tier, period, n, closed_n, on_time, approved, good, weekly in \
            s.execute(q).all():
        o = out[cp_id]
        o["cases"] += int(n)
        o["closed"] += int(closed_n)
        o["on_time"] += int(on_time)
        o["approved"] += int(approved)
        o["good"] += int(good)
        o["weekly_records"] += int(weekly)
        attrs = {"unit": unit, "tier": tier, "period": period}
        pool = tuple(sorted((k, attrs[k]) for k in quota.pool))
        pools[cp_id][pool] = pools[cp_id].get(pool, 0) + int(n)
    for uid, o in out.items():
        # Each contact point's own cases, by its units' pools: an indicator of the unit,
        # not the limit of a pool spanning several contact points (see workflows.quotas).
        o["good_limit"] = sum(quota.limit(size, dict(key).get("tier"))
                              for key, size in pools[uid].items())
    _results_used(s, out, flow, year, specs, where, base, counted, grade, cp,
                  tz or ZoneInfo(DEFAULT_TZ))
    for o in out.values():
        o["completion_rate"] = _rate(o["closed"], o["cases"])
        o["on_time_rate"] = _rate(o["on_time"], o["closed"])
        o["good_share"] = _rate(o["good"], o["approved"])
        o["weekly_records_per_case"] = _rate(o["weekly_records"], o["cases"], 2)
        if o["people_with_results"] is not None:
            o["results_used_rate"] = _rate(o["results_used"], o["people_with_results"])
    return out


def _empty(quota: Any) -> dict[str, Any]:
    return {"cases": 0, "closed": 0, "completion_rate": None, "on_time": 0,
            "on_time_rate": None, "approved": 0, "good": 0, "good_share": None,
            "good_value": quota.value, "good_max_ratio": quota.ratio(), "good_limit": 0,
            "weekly_records": 0, "weekly_records_per_case": None,
            "people_with_results": None, "results_used": None, "results_used_rate": None}


def _results_used(s: Session, out: dict[int, dict[str, Any]], flow: FlowSpec, year: int,
                  specs: Mapping[int, FlowSpec] | None, where: list[Any], base: Any,
                  counted: Any, grade: Any, cp: Any, tz: ZoneInfo) -> None:
    """People with approved results of the year, and those whose results a later case
    read in a step that went through (see docs/contact-points.md)."""
    if specs is None:
        return
    people_q = (select(cp.id, CASES.c.subject_id).select_from(base)
                .where(*where, counted, grade.is_not(None)).distinct())
    people: dict[int, set[int]] = {uid: set() for uid in out}
    for cp_id, pid in s.execute(people_q).all():
        people[cp_id].add(pid)
    readers = _readers(specs, flow.flow)
    used: set[int] = set()
    everyone = set().union(*people.values())
    if readers and everyone:
        which = {(r.version_id, r.trigger): r for r in readers}
        who = (select(CASES.c.subject_id).select_from(base)
               .where(*where, counted, grade.is_not(None)).distinct().subquery())
        q = (select(CASES.c.subject_id, CASES.c.version_id, CASES.c.period_key,
                    HISTORY.c.trigger, HISTORY.c.data, HISTORY.c.at)
             .select_from(HISTORY.join(CASES, CASES.c.id == HISTORY.c.case_id))
             .where(CASES.c.subject_id.in_(select(who.c.subject_id)),
                    or_(*[and_(CASES.c.version_id == v, HISTORY.c.trigger == t)
                          for v, t in which])))
        for pid, vid, key, trigger, data, at in s.execute(q).all():
            if _read_year(which[(vid, trigger)], key, data, at, tz) == year:
                used.add(pid)
    for uid, o in out.items():
        o["people_with_results"] = len(people[uid])
        o["results_used"] = len(people[uid] & used)


def scoreboard(s: Session, viewer: Viewer, year: int, flow: FlowSpec | None = None, *,
               unit_id: int | None = None, specs: Mapping[int, FlowSpec] | None = None,
               weekly_field: str = WEEKLY_FIELD, tz: ZoneInfo | None = None
               ) -> dict[str, Any]:
    """The year's score sheets the viewer may read, ranked, each with the statistics of
    its unit's regular assessment (`flow`) that year."""
    require_reader(viewer)
    found = sheets(s, viewer, year, unit_id)
    stats = statistics(s, viewer, flow, year, [x["unit"]["id"] for x in found], specs=specs,
                       weekly_field=weekly_field, tz=tz) if flow is not None else {}
    from .contact_register import report_figures  # it imports this module

    reports = report_figures(s, [x["unit"]["id"] for x in found], year)
    for x in found:
        x["statistics"] = stats.get(x["unit"]["id"])
        x["reports"] = reports.get(x["unit"]["id"])  # the monthly reports, as of now
    return {"year": year, "flow": flow.flow if flow is not None else None,
            "weekly_field": weekly_field if flow is not None else None, "sheets": found}


# --------------------------------------------------------------------------- export

# (key, header) pairs, as `ledger.Column`
COLUMNS: list[tuple[str, str]] = [
    ("rank", "排名"), ("unit_code", "单位编码"), ("unit", "单位"), ("year", "年度"),
    ("score", "总分"), ("items_text", "评分明细"), ("raised", "提高优秀比例"),
    ("cases", "平时考核事项数"), ("completion_rate", "完成率"),
    ("on_time_rate", "按时完成率"), ("good", "“好”等次数"), ("approved", "已审定数"),
    ("good_share", "“好”等次占比"), ("good_limit", "“好”限额合计"),
    ("weekly_records_per_case", "人均每期周记实条数"),
    ("results_used_rate", "结果运用率"), ("note", "备注"), ("set_at", "录入时间")]


def rows(board: dict[str, Any]) -> list[dict[str, Any]]:
    """`scoreboard` flattened for CSV / XLSX: one row per sheet."""
    out = []
    for x in board["sheets"]:
        st = x.get("statistics") or {}
        out.append({
            "rank": x["rank"], "unit_code": x["unit"]["code"], "unit": x["unit"]["name"],
            "year": x["year"], "score": float(x["score"]) if x["score"] is not None else None,
            "items_text": "；".join(f"{i['item']} {shown(i['score'])}/{shown(i['max'])}"
                                   for i in x["items"]),
            "raised": x["raised"], "note": x["note"], "set_at": x["set_at"],
            **{k: st.get(k) for k in ("cases", "completion_rate", "on_time_rate", "good",
                                      "approved", "good_share", "good_limit",
                                      "weekly_records_per_case", "results_used_rate")}})
    return out


# --------------------------------------------------------------------------- CSV import

CSV_COLUMNS = ("unit_code", "year", "item", "score", "max", "raised", "note")
CSV_REQUIRED = ("unit_code", "year", "score")


@dataclass(frozen=True)
class ImportReport:
    rows: int
    sheets: int
    created: int
    replaced: int


@dataclass
class _Sheet:
    unit_code: str
    year: int
    first_line: int
    item_lines: list[int]
    items: list[dict[str, str]]
    total: str | None = None
    total_line: int | None = None
    raised: tuple[bool, int] | None = None  # (value, line that gave it)
    note: tuple[str, int] | None = None


def _yes_no(text: str) -> bool | None:
    low = text.strip().lower()
    return True if low in YES else False if low in NO else None


def _read_csv(text: str) -> tuple[list[_Sheet], int, list[tuple[int, str]]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        return [], 0, [(1, "the file is empty; the first line must name the columns")]
    errors: list[tuple[int, str]] = []
    unknown = [h for h in header if h not in CSV_COLUMNS]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if unknown:
        errors.append((1, msg("contact_points.unknown_column_columns_are", unknown=list(unknown),
                              CSV_COLUMNS=list(CSV_COLUMNS))))
    if missing:
        errors.append((1, msg("contact_points.missing_column", missing=list(missing))))
    if errors:
        return [], 0, errors
    found: dict[tuple[str, int], _Sheet] = {}
    broken: set[tuple[str, int]] = set()
    n = 0
    for raw in reader:
        line = reader.line_num
        if None in raw:
            errors.append((line, msg("contact_points.more_value_than_there",
                                     n_value=len(raw[None]))))
            continue
        cells = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        if not any(cells.values()):
            continue
        n += 1
        code, year_text = cells.get("unit_code", ""), cells.get("year", "")
        problems = [] if code else ["unit_code is empty"]
        year = int(year_text) if year_text.isdigit() else None
        if year is None:
            problems.append(f"year {year_text!r} is not a year" if year_text
                            else "year is empty")
        elif not MIN_YEAR <= year <= MAX_YEAR:
            problems.append(msg("contact_points.year_not_year_between", year=year,
                                MIN_YEAR=MIN_YEAR, MAX_YEAR=MAX_YEAR))
        raised = None
        if cells.get("raised"):
            raised = _yes_no(cells["raised"])
            if raised is None:
                problems.append(msg("contact_points.raised_not_yes_no", raised=cells['raised']))
        if problems:
            errors.extend((line, p) for p in problems)
            continue
        assert year is not None
        sheet = found.get((code, year))
        if not cells.get("item") and cells.get("max"):
            errors.append((line, msg("contact_points.max_given_without_item")))
            broken.add((code, year))  # its other lines would only add confusing errors
            continue
        if not cells.get("item") and sheet is not None and sheet.total_line is not None:
            errors.append((line, msg("contact_points.already_has_total_on", code=code, year=year,
                                     sheet_total_line=sheet.total_line)))
            broken.add((code, year))
            continue
        if sheet is None:
            sheet = found[(code, year)] = _Sheet(code, year, line, [], [])
        if cells.get("item"):
            sheet.items.append({"item": cells["item"], "score": cells.get("score", ""),
                                "max": cells.get("max", "")})
            sheet.item_lines.append(line)
        else:
            sheet.total, sheet.total_line = cells.get("score", ""), line
        if raised is not None:
            if sheet.raised is not None and sheet.raised[0] != raised:
                errors.append((line, msg("contact_points.raised_here_but_on",
                                         value='是' if raised else '否',
                                         value2='是' if sheet.raised[0] else '否',
                                         value3=sheet.raised[1], code=code, year=year)))
            elif sheet.raised is None:
                sheet.raised = (raised, line)
        if cells.get("note"):
            if sheet.note is not None and sheet.note[0] != cells["note"]:
                errors.append((line, msg("contact_points.note_differs_from_note",
                                         value=sheet.note[1], code=code, year=year)))
            elif sheet.note is None:
                sheet.note = (cells["note"], line)
    return [x for k, x in found.items() if k not in broken], n, errors


def _line_of(sheet: _Sheet, path: str) -> int:
    if path.startswith("items["):
        index = int(path[len("items["):path.index("]")])
        if index < len(sheet.item_lines):
            return sheet.item_lines[index]
    if path == "score" and sheet.total_line is not None:
        return sheet.total_line
    if path == "raised" and sheet.raised is not None:
        return sheet.raised[1]
    if path == "note" and sheet.note is not None:
        return sheet.note[1]
    return sheet.first_line


def import_csv(db: Database, viewer: Viewer, text: str, now: dt.datetime) -> ImportReport:
    """Import score sheets from CSV (format in docs/contact-points.md); all or none.

    One line per item; the lines of one unit and year form its sheet, which replaces the
    stored one whole. `ImportFailed` lists every bad line by number; nothing is written."""
    require_writer(viewer, "importing contact-point score sheets")
    found, n, errors = _read_csv(text)
    created = replaced = 0
    try:
        with db.unit_of_work() as s:
            codes = sorted({x.unit_code for x in found})
            units = set(s.execute(select(Unit.code).where(Unit.code.in_(codes))).scalars()) \
                if codes else set()
            for sheet in found:
                if sheet.unit_code not in units:
                    errors.append((sheet.first_line,
                                   msg("contact_points.unit_does_not_exist_3",
                                       sheet_unit_code=sheet.unit_code)))
                    continue
                values: dict[str, Any] = {"items": sheet.items or None,
                                          "score": sheet.total,
                                          "raised": sheet.raised[0] if sheet.raised else False,
                                          "note": sheet.note[0] if sheet.note else None}
                try:
                    _out, new = put_sheet(s, sheet.unit_code, sheet.year, values,
                                          by=viewer.person_id, now=now)
                except FieldErrors as exc:
                    errors.extend((_line_of(sheet, path), f"{sheet.unit_code} {sheet.year}: "
                                                          f"{path}: {m}")
                                  for path, msgs in exc.errors.items() for m in msgs)
                    continue
                created += new
                replaced += not new
            if errors:
                raise ImportFailed(sorted(errors))
    except IntegrityError:
        raise ImportFailed([(1, msg("contact_points.another_change_these_score"))]) from None
    return ImportReport(n, len(found), created, replaced)
