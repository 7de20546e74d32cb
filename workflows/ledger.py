"""Ledger (台账) and statistics of a flow, per unit (with its sub-units) and period.

Read-only. Every number is computed over the cases the viewer may see (`access.visible_cases`):
staff see their own cases, leaders and committee members their unit's subtree, process owners
and admins every case. Each function is one aggregate query (no query per case or person),
grouping only on plain columns of a subquery so that the SQL is the same on SQLite and
PostgreSQL.

What is counted is read from the flow's definition, never hard-coded: state labels from its
states, the grade field, the value under quota (好), its ratio, rounding, minimum, pool keys and
counted states from the `quota` rule on one of its transitions.

Definitions (see docs/ledger.md):
- completed (closed): the case reached a final state (`closed_at` is set);
- completion rate: closed / total;
- overdue: the current step's deadline has passed and the case is not closed;
- overdue rate: overdue / total.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import unicodedata
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, false, func, select
from sqlalchemy.orm import Session, aliased

from .access import COMMITTEE, LEADER, Viewer, visible_cases
from .calendar import DEFAULT_TZ
from .cycles import next_period
from .errors import FieldErrors, NotFound
from .messages import msg
from .models import TIERS, Case, Person, Unit, utcnow
from .periods import check_period_key
from .queries import subtrees
from .quotas import Quota, figures, pool_key, pool_units, quota_of  # noqa: F401
from .spec import FlowSpec

CASES = Case.__table__
MAX_PERIODS = 120  # a range of periods: ten years of months
TIER_LABELS = {"chief": "正职", "deputy": "副职", "staff": "一般干部"}

Column = tuple[str, str]  # (key in the row, header)


# --------------------------------------------------------------------------- the quota rule


def require_quota(spec: FlowSpec) -> Quota:
    quota = quota_of(spec)
    if quota is None:
        raise FieldErrors({"flow": [msg("ledger.flow_has_no_quota", spec_flow=spec.flow)]})
    return quota


# --------------------------------------------------------------------------- scope


def periods_of(spec: FlowSpec, period: str | None = None, period_from: str | None = None,
               period_to: str | None = None) -> list[str] | None:
    """The period keys asked for (None: every period), checked against the flow's period."""
    errors: dict[str, list[str]] = {}
    ranged = period_from is not None or period_to is not None
    if period is not None and ranged:
        errors["period"] = [msg("ledger.give_either_period_period")]
    elif ranged and (period_from is None or period_to is None):
        missing = "period_to" if period_to is None else "period_from"
        errors[missing] = ["is required with " + ("period_from" if period_to is None
                                                  else "period_to")]
    for name, key in (("period", period), ("period_from", period_from),
                      ("period_to", period_to)):
        if key is not None:
            problem = check_period_key(spec.period, key)
            if problem:
                errors.setdefault(name, []).append(problem)
    if errors:
        raise FieldErrors(errors)
    if period is not None:
        return [period]
    if not ranged:
        return None
    assert period_from is not None and period_to is not None
    if period_from > period_to:
        raise FieldErrors({"period_to": [msg("ledger.before_period_from", period_to=period_to,
                                             period_from=period_from)]})
    keys = [period_from]
    while keys[-1] != period_to:
        if len(keys) >= MAX_PERIODS:
            raise FieldErrors({"period_to": [msg("ledger.range_holds_at_most",
                                                 MAX_PERIODS=MAX_PERIODS)]})
        keys.append(next_period(spec.period, keys[-1]))
    return keys


def _scope(s: Session, viewer: Viewer, spec: FlowSpec, unit_id: int | None,
           periods: list[str] | None) -> list[ColumnElement[bool]]:
    """Conditions on `cases` alone: unit subtrees as lists of unit ids, which an index
    serves (a LIKE on the joined unit path scans every case of the flow)."""
    mine = [] if viewer.sees_all else viewer.paths(LEADER, COMMITTEE)
    path = None
    if unit_id is not None:
        path = s.execute(select(Unit.path).where(Unit.id == unit_id)).scalar()
        if path is None:
            raise NotFound(msg("ledger.unit_does_not_exist", unit_id=unit_id))
    under = subtrees(s, [*mine, *([path] if path else [])])
    conds = [CASES.c.flow_id == spec.flow,
             visible_cases(viewer, None if viewer.sees_all else under.cond(mine))]
    if path is not None:
        conds.append(under.cond([path]))
    if periods is not None:
        conds.append(CASES.c.period_key.in_(periods) if periods else false())
    return conds


def _from():
    return CASES.join(Unit, Unit.id == CASES.c.unit_id)


def _overdue(now: dt.datetime) -> ColumnElement[bool]:
    return and_(CASES.c.deadline_at.is_not(None), CASES.c.deadline_at < now,
                CASES.c.closed_at.is_(None))


def _one(cond: ColumnElement[bool]):
    return case((cond, 1), else_=0)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _state_label(spec: FlowSpec, state: str, lang: str) -> str:
    st = spec.states.get(state)
    return st.label.text(lang) if st else state  # a state only an older version has


# --------------------------------------------------------------------------- statistics


def state_counts(s: Session, viewer: Viewer, flow: FlowSpec, unit_id: int | None = None,
                 period: str | None = None, *, period_from: str | None = None,
                 period_to: str | None = None, lang: str = "zh") -> dict[str, Any]:
    """Cases by state, every state of the flow listed (zeros too), in the flow's order."""
    periods = periods_of(flow, period, period_from, period_to)
    q = (select(CASES.c.state, func.count()).select_from(_from())
         .where(*_scope(s, viewer, flow, unit_id, periods)).group_by(CASES.c.state))
    found = {state: int(n) for state, n in s.execute(q).all()}
    names = list(flow.states) + sorted(set(found) - set(flow.states))
    states = [{"state": name, "label": _state_label(flow, name, lang),
               "final": bool(flow.states[name].final) if name in flow.states else False,
               "count": found.get(name, 0)} for name in names]
    return {"flow": flow.flow, "total": sum(found.values()), "states": states}


def rates(s: Session, viewer: Viewer, flow: FlowSpec, unit_id: int | None = None,
          period: str | None = None, *, period_from: str | None = None,
          period_to: str | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """Total, closed, completion rate, overdue now, overdue rate; and the same per period.

    With a range (`period_from`…`period_to`) every period of the range is listed, zeros too,
    so that a chart has a point for each; otherwise the periods that have cases.
    """
    now = now or utcnow()
    periods = periods_of(flow, period, period_from, period_to)
    q = (select(CASES.c.period_key, func.count(),
                func.coalesce(func.sum(_one(CASES.c.closed_at.is_not(None))), 0),
                func.coalesce(func.sum(_one(_overdue(now))), 0))
         .select_from(_from()).where(*_scope(s, viewer, flow, unit_id, periods))
         .group_by(CASES.c.period_key))
    found = {key: (int(n), int(closed), int(late)) for key, n, closed, late in s.execute(q).all()}
    keys = periods if periods is not None else sorted(found, key=lambda k: (k is None, k or ""))
    by_period = [_rates_entry(found.get(k, (0, 0, 0)), period=k) for k in keys]
    totals = tuple(sum(v[i] for v in found.values()) for i in range(3))
    return {"flow": flow.flow, **_rates_entry(totals), "by_period": by_period}


def _rates_entry(values: tuple[int, ...], **extra: Any) -> dict[str, Any]:
    total, closed, late = values
    return {**extra, "total": total, "closed": closed, "open": total - closed,
            "completion_rate": _rate(closed, total), "overdue": late,
            "overdue_rate": _rate(late, total)}


def grade_distribution(s: Session, viewer: Viewer, flow: FlowSpec, unit_id: int | None = None,
                       period: str | None = None, *, period_from: str | None = None,
                       period_to: str | None = None, lang: str = "zh") -> dict[str, Any]:
    """Grades per quota pool, with each pool's quota: size, limit, used, remaining.

    `graded` counts every case of the pool carrying a grade (proposed or approved);
    `approved` only those in the rule's counted states; `used` is `approved[value]`, as the
    quota rule counts it when an approval is fired.
    """
    quota = require_quota(flow)
    periods = periods_of(flow, period, period_from, period_to)
    fspec = flow.fields[quota.field]
    grade = CASES.c.data[quota.field].as_string()
    counted = _one(CASES.c.state.in_(quota.counted_states))
    inner = (select(CASES.c.unit_id.label("unit_id"), CASES.c.tier.label("tier"),
                    CASES.c.period_key.label("period"), grade.label("grade"),
                    counted.label("counted"))
             .select_from(_from()).where(*_scope(s, viewer, flow, unit_id, periods)).subquery())
    group = [inner.c.unit_id, inner.c.tier, inner.c.period]
    q = (select(*group, inner.c.grade, func.count(), func.coalesce(func.sum(inner.c.counted), 0))
         .group_by(*group, inner.c.grade))
    rows = s.execute(q).all()
    # The pools as the quota rule forms them (`quotas`): a case's unit may stand in a pool
    # of its 机关 (unit_depth) or of merged units.
    units = pool_units(s, quota, {r[0] for r in rows})
    values = list(fspec.values) if fspec.type == "enum" else []
    pools: dict[tuple, dict[str, Any]] = {}
    for u, tier, per, g, n, approved in rows:
        key = pool_key(quota, units.get(u, u), tier, per)
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = _pool(key, values)
        n, approved = int(n), int(approved)
        pool["size"] += n
        if g is None:
            pool["ungraded"] += n
            continue
        if g not in pool["graded"]:  # a value an older version allowed
            pool["graded"][g] = pool["approved"][g] = 0
        pool["graded"][g] += n
        pool["approved"][g] += approved
    # The quota of each pool over the whole pool, whoever sees it: the count the rule makes.
    found = figures(s, flow.flow, quota, pools, units)
    names = dict(s.execute(select(Unit.id, Unit.name).where(
        Unit.id.in_({dict(k)["unit"] for k in pools if "unit" in dict(k)}))).all()) \
        if "unit" in quota.pool and pools else {}
    out = []
    for key, pool in pools.items():
        f = found[key]
        if "unit" in pool:
            pool["unit"]["name"] = names.get(pool["unit"]["id"])
        pool["quota"] = {"size": f.size, "limit": f.limit, "used": f.used,
                         "remaining": f.remaining}
        if f.ratio != quota.ratio() or f.raised is not None:
            pool["quota"]["ratio"] = f.ratio
        if f.raised is not None:
            pool["quota"]["raised_for"] = f.raised.code
        out.append(pool)
    out.sort(key=_pool_order)
    totals = {v: sum(p["graded"].get(v, 0) for p in out) for v in values}
    return {"flow": flow.flow, "field": quota.field, "field_label": fspec.label.text(lang),
            "values": values,
            "quota": {"value": quota.value, "max_ratio": quota.max_ratio,
                      "rounding": quota.rounding, "min": quota.min, "pool": list(quota.pool),
                      "unit_depth": quota.unit_depth,
                      "merge_units": [list(g) for g in quota.merge_units],
                      "counted_states": list(quota.counted_states), "trigger": quota.trigger},
            "pools": out, "totals": totals}


def _pool(key: tuple, values: list[str]) -> dict[str, Any]:
    pool: dict[str, Any] = {}
    for k, v in key:
        pool[k] = {"id": v, "name": None} if k == "unit" else v
    if "tier" in pool:
        pool["tier_label"] = TIER_LABELS.get(pool["tier"], pool["tier"] or "")
    pool.update(size=0, ungraded=0, graded={v: 0 for v in values},
                approved={v: 0 for v in values})
    return pool


def _pool_order(pool: dict[str, Any]):
    tier = pool.get("tier")
    return (pool["unit"]["id"] if "unit" in pool else 0,
            TIERS.index(tier) if tier in TIERS else len(TIERS), str(tier or ""),
            str(pool.get("period") or ""))


def good_counts(s: Session, viewer: Viewer, flow: FlowSpec, year: int,
                unit_id: int | None = None) -> dict[str, Any]:
    """Per person: how many of the year's approved results carry the quota value (好).

    The year's results are the cases in the quota rule's counted states whose period key
    lies in `year`; `results` is their number and `good` those with the value. Only people
    with at least one approved result that year are listed.
    """
    quota = require_quota(flow)
    if not 1900 <= year <= 9999:
        raise FieldErrors({"year": [msg("ledger.must_between")]})
    home = aliased(Unit)
    grade = CASES.c.data[quota.field].as_string()
    q = (select(Person.id, Person.code, Person.name, home.id, home.name, func.count(),
                func.coalesce(func.sum(_one(grade == str(quota.value))), 0))
         .select_from(_from().join(Person, Person.id == CASES.c.subject_id)
                      .join(home, home.id == Person.unit_id))
         .where(*_scope(s, viewer, flow, unit_id, None),
                CASES.c.state.in_(quota.counted_states),
                CASES.c.period_key.like(f"{year:04d}%"))
         .group_by(Person.id, Person.code, Person.name, home.id, home.name)
         .order_by(home.id, Person.code))
    people = [{"person": {"id": pid, "code": code, "name": name},
               "unit": {"id": uid, "name": uname}, "good": int(good), "results": int(n)}
              for pid, code, name, uid, uname, n, good in s.execute(q).all()]
    return {"flow": flow.flow, "year": year, "field": quota.field, "value": quota.value,
            "people": people}


# --------------------------------------------------------------------------- the ledger


def _ledger_query(s: Session, viewer: Viewer, flow: FlowSpec, unit_id, periods, state):
    conds = _scope(s, viewer, flow, unit_id, periods)
    if state is not None:
        if state not in flow.states:
            raise FieldErrors({"state": [msg("ledger.unknown_state_states_are", state=state,
                                             flow_states=list(flow.states))]})
        conds.append(CASES.c.state == state)
    return conds


def ledger_rows(s: Session, viewer: Viewer, flow: FlowSpec, unit_id: int | None = None,
                period: str | None = None, *, period_from: str | None = None,
                period_to: str | None = None, state: str | None = None,
                now: dt.datetime | None = None, lang: str = "zh", limit: int | None = None,
                offset: int = 0) -> list[dict[str, Any]]:
    """The 台账: one row per case, ordered by unit, period, person."""
    now = now or utcnow()
    periods = periods_of(flow, period, period_from, period_to)
    quota = quota_of(flow)
    field = quota.field if quota else ("grade" if "grade" in flow.fields else None)
    grade = CASES.c.data[field].as_string() if field else None
    columns = [CASES.c.id, CASES.c.subject_id, Person.code, Person.name, CASES.c.unit_id,
               Unit.name.label("unit_name"), CASES.c.tier, CASES.c.period_key, CASES.c.state,
               CASES.c.deadline_at, CASES.c.closed_at, CASES.c.updated_at]
    if grade is not None:
        columns.append(grade.label("grade"))
    q = (select(*columns)
         .select_from(_from().join(Person, Person.id == CASES.c.subject_id))
         .where(*_ledger_query(s, viewer, flow, unit_id, periods, state))
         .order_by(Unit.path, CASES.c.period_key, Person.code, CASES.c.id)
         .limit(limit).offset(offset))
    out = []
    for r in s.execute(q).all():
        out.append({
            "case_id": r.id, "person_id": r.subject_id, "person_code": r.code,
            "person": r.name, "unit_id": r.unit_id, "unit": r.unit_name, "tier": r.tier,
            "tier_label": TIER_LABELS.get(r.tier, r.tier or ""), "period": r.period_key,
            "state": r.state, "state_label": _state_label(flow, r.state, lang),
            "grade": r.grade if grade is not None else None, "deadline_at": r.deadline_at,
            "overdue": bool(r.deadline_at is not None and r.closed_at is None
                            and r.deadline_at < now),
            "closed": r.closed_at is not None, "closed_at": r.closed_at,
            "updated_at": r.updated_at})
    return out


def ledger_total(s: Session, viewer: Viewer, flow: FlowSpec, unit_id: int | None = None,
                 period: str | None = None, *, period_from: str | None = None,
                 period_to: str | None = None, state: str | None = None) -> int:
    periods = periods_of(flow, period, period_from, period_to)
    q = (select(func.count()).select_from(_from())
         .where(*_ledger_query(s, viewer, flow, unit_id, periods, state)))
    return int(s.execute(q).scalar() or 0)


# --------------------------------------------------------------------------- export

LEDGER_COLUMNS: list[Column] = [
    ("case_id", "事项编号"), ("person_code", "人员编号"), ("person", "姓名"), ("unit", "单位"),
    ("tier_label", "层级"), ("period", "考核期"), ("state_label", "状态"), ("grade", "等次"),
    ("deadline_at", "截止时间"), ("overdue", "是否逾期"), ("closed_at", "办结时间"),
    ("updated_at", "更新时间")]
GOOD_COLUMNS: list[Column] = [
    ("person_code", "人员编号"), ("person", "姓名"), ("unit", "单位"),
    ("results", "已审定结果数"), ("good", "“好”等次次数")]


def good_rows(counts: dict[str, Any]) -> list[dict[str, Any]]:
    """`good_counts` flattened for export."""
    return [{"person_code": p["person"]["code"], "person": p["person"]["name"],
             "unit": p["unit"]["name"], "results": p["results"], "good": p["good"]}
            for p in counts["people"]]


def grade_columns(dist: dict[str, Any]) -> list[Column]:
    keys = dist["quota"]["pool"]
    cols: list[Column] = []
    if "unit" in keys:
        cols.append(("unit", "单位"))
    if "tier" in keys:
        cols.append(("tier_label", "层级"))
    if "period" in keys:
        cols.append(("period", "考核期"))
    cols.append(("size", "参加人数"))
    cols += [(f"graded:{v}", str(v)) for v in dist["values"]]
    cols += [("ungraded", "未定等次"), ("limit", f"“{dist['quota']['value']}”限额"),
             ("used", "已审定占用"), ("remaining", "剩余名额")]
    return cols


def grade_rows(dist: dict[str, Any]) -> list[dict[str, Any]]:
    """`grade_distribution` flattened for export: one row per pool."""
    out = []
    for p in dist["pools"]:
        row = {"unit": p.get("unit", {}).get("name"), "tier_label": p.get("tier_label"),
               "period": p.get("period"), "size": p["size"], "ungraded": p["ungraded"],
               **{f"graded:{v}": n for v, n in p["graded"].items()},
               **{k: p["quota"][k] for k in ("limit", "used", "remaining")}}
        out.append(row)
    return out


def _cell(value: Any, tz: ZoneInfo) -> Any:
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, dt.datetime):
        return value.astimezone(tz).replace(tzinfo=None, microsecond=0)
    return value


def _formula_safe(value: Any) -> Any:
    # A cell starting with = + - @ is a formula to a spreadsheet: keep names text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[Column],
           tz: ZoneInfo | None = None) -> bytes:
    """CSV in UTF-8 with a BOM (Excel then reads the Chinese right); times local, minutes."""
    tz = tz or ZoneInfo(DEFAULT_TZ)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([h for _k, h in columns])
    for row in rows:
        cells = []
        for key, _h in columns:
            v = _cell(row.get(key), tz)
            if isinstance(v, dt.datetime):
                v = v.strftime("%Y-%m-%d %H:%M")
            cells.append("" if v is None else _formula_safe(v))
        w.writerow(cells)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _width(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return 16
    text = str(value) if value is not None else ""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def to_xlsx(rows: Sequence[dict[str, Any]], columns: Sequence[Column], sheet_title: str,
            tz: ZoneInfo | None = None) -> bytes:
    """An .xlsx workbook: bold frozen header, fitted column widths, times as real dates."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    tz = tz or ZoneInfo(DEFAULT_TZ)
    wb = Workbook()
    ws = wb.active
    # Sheet titles: at most 31 characters, none of []:*?/\
    ws.title = "".join(ch for ch in sheet_title if ch not in "[]:*?/\\")[:31] or "Sheet1"
    widths = [_width(h) for _k, h in columns]
    bold = Font(bold=True)
    for j, (_k, header) in enumerate(columns, start=1):
        ws.cell(row=1, column=j, value=header).font = bold
    for i, row in enumerate(rows, start=2):
        for j, (key, _h) in enumerate(columns, start=1):
            v = _cell(row.get(key), tz)
            c = ws.cell(row=i, column=j, value=v)
            if isinstance(v, str):
                c.data_type = "s"  # never a formula
            elif isinstance(v, dt.datetime):
                c.number_format = "yyyy-mm-dd hh:mm"
            widths[j - 1] = max(widths[j - 1], _width(v))
    for j, w in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(j)].width = min(w + 2, 60)
    ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
