"""Ledger (台账) and statistics: cases by state, completion and overdue rates, grades against
the quota, 好 counts per person per year, and the ledger itself, as JSON, CSV or XLSX.

Read-only. The numbers cover only the cases the caller may see: staff their own, leaders and
committee members their unit's subtree, process owners and admins every case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from workflows import eligibility, ledger
from workflows.errors import FieldErrors
from workflows.messages import localize

from ..auth import door, engine, viewer
from ..errors import request_lang
from .cases import lang
from .schemas import Id, PageQuery, RecordDate, Ref

blp = Blueprint("ledger", __name__, url_prefix="/api/v1/ledger",
                description="Ledger (台账) and statistics per unit and period; CSV and XLSX "
                            "export")

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MAX_EXPORT = 50_000  # rows in one CSV/XLSX download
PERIOD_DOC = "A period key of the flow's period, e.g. 2026-11 for a monthly flow"


def _file_doc(schema: type) -> dict[str, Any]:
    """The 200 response as JSON or as a CSV / XLSX download."""
    return {"responses": {"200": {"content": {
        "application/json": {"schema": schema},
        CSV: {"schema": {"type": "string"}},
        XLSX: {"schema": {"type": "string", "format": "binary"}}}}}}


# --------------------------------------------------------------------------- queries


class FlowQuery(Schema):
    flow = fields.String(required=True, validate=validate.Length(min=1, max=64),
                         metadata={"description": "The flow id, e.g. regular-assessment"})
    unit_id = Id(metadata={"description": "This unit and its sub-units"})


class PeriodQuery(FlowQuery):
    period = fields.String(validate=validate.Length(min=1, max=16),
                           metadata={"description": PERIOD_DOC})
    period_from = fields.String(validate=validate.Length(min=1, max=16), metadata={
        "description": "First period of a range (with period_to), e.g. 2026-01"})
    period_to = fields.String(validate=validate.Length(min=1, max=16), metadata={
        "description": "Last period of a range (with period_from), e.g. 2026-12"})


def _format(**kw) -> fields.String:
    return fields.String(load_default="json", validate=validate.OneOf(["json", "csv", "xlsx"]),
                         metadata={"description": "json, or a csv / xlsx file download"}, **kw)


class GradesQuery(PeriodQuery):
    format = _format()


class CasesQuery(PeriodQuery, PageQuery):
    state = fields.String(validate=validate.Length(min=1, max=64))
    format = _format()


class GoodQuery(FlowQuery):
    year = fields.Integer(required=True, validate=validate.Range(min=1900, max=9999))
    format = _format()


class EligibilityQuery(Schema):
    flow = fields.String(load_default="rank-promotion", validate=validate.Length(min=1, max=64),
                         metadata={"description": "The promotion flow whose published "
                                                  "promotion_eligible rule judges"})
    unit_id = Id(metadata={"description": "This unit and its sub-units"})
    date = RecordDate(metadata={"description": "The decision date judged; default today "
                                                "(Beijing time)"})
    format = _format()


# --------------------------------------------------------------------------- responses


class StateCount(Schema):
    state = fields.String(required=True)
    label = fields.String(required=True)
    final = fields.Boolean(required=True)
    count = fields.Integer(required=True)


class StatesOut(Schema):
    flow = fields.String(required=True)
    total = fields.Integer(required=True)
    states = fields.List(fields.Nested(StateCount), required=True)


class RateFields(Schema):
    total = fields.Integer(required=True)
    closed = fields.Integer(required=True, metadata={"description": "Reached a final state"})
    open = fields.Integer(required=True)
    completion_rate = fields.Float(allow_none=True, required=True,
                                   metadata={"description": "closed / total; null if no cases"})
    overdue = fields.Integer(required=True, metadata={
        "description": "Deadline passed, not closed (now)"})
    overdue_rate = fields.Float(allow_none=True, required=True,
                                metadata={"description": "overdue / total; null if no cases"})


class PeriodRates(RateFields):
    period = fields.String(allow_none=True, required=True)


class RatesOut(RateFields):
    flow = fields.String(required=True)
    by_period = fields.List(fields.Nested(PeriodRates), required=True)


class PoolQuota(Schema):
    size = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    used = fields.Integer(required=True)
    remaining = fields.Integer(required=True)
    ratio = fields.Float(metadata={"description": "The pool's own ratio, when it is not the "
                                                  "rule's one ratio (per tier, or raised)"})
    raised_for = fields.String(metadata={"description": "The unit whose contact-point "
                                                        "evaluation raised the ratio"})


class PoolOut(Schema):
    unit = fields.Nested(Ref)
    tier = fields.String(allow_none=True)
    tier_label = fields.String()
    period = fields.String(allow_none=True)
    size = fields.Integer(required=True)
    ungraded = fields.Integer(required=True)
    graded = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    approved = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    quota = fields.Nested(PoolQuota, required=True)


class QuotaRule(Schema):
    value = fields.Raw(required=True)
    max_ratio = fields.Raw(required=True, metadata={
        "description": "A ratio (0.4), or one per tier ({chief: 0.3, deputy: 0.35, "
                       "staff: 0.4})"})
    rounding = fields.String(required=True)
    min = fields.Integer(required=True)
    pool = fields.List(fields.String(), required=True)
    unit_depth = fields.Integer(allow_none=True, metadata={
        "description": "Pools of the units at this depth (the 机关), with their sub-units"})
    merge_units = fields.List(fields.List(fields.String()), metadata={
        "description": "Unit codes forming one pool each"})
    counted_states = fields.List(fields.String(), required=True)
    trigger = fields.String(required=True)


class GradesOut(Schema):
    flow = fields.String(required=True)
    field = fields.String(required=True)
    field_label = fields.String(required=True)
    values = fields.List(fields.String(), required=True)
    quota = fields.Nested(QuotaRule, required=True)
    pools = fields.List(fields.Nested(PoolOut), required=True)
    totals = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


class LedgerPerson(Ref):
    code = fields.String(required=True)


class GoodPerson(Schema):
    person = fields.Nested(LedgerPerson, required=True)
    unit = fields.Nested(Ref, required=True)
    good = fields.Integer(required=True)
    results = fields.Integer(required=True)


class GoodOut(Schema):
    flow = fields.String(required=True)
    year = fields.Integer(required=True)
    field = fields.String(required=True)
    value = fields.Raw(required=True)
    people = fields.List(fields.Nested(GoodPerson), required=True)


class LedgerRow(Schema):
    case_id = fields.Integer(required=True)
    person_id = fields.Integer(required=True)
    person_code = fields.String(required=True)
    person = fields.String(required=True)
    unit_id = fields.Integer(required=True)
    unit = fields.String(required=True)
    tier = fields.String(allow_none=True)
    tier_label = fields.String(required=True)
    period = fields.String(allow_none=True)
    state = fields.String(required=True)
    state_label = fields.String(required=True)
    grade = fields.String(allow_none=True)
    deadline_at = fields.DateTime(allow_none=True)
    overdue = fields.Boolean(required=True)
    closed = fields.Boolean(required=True)
    closed_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(required=True)


class NextRank(Schema):
    rank = fields.String(required=True)
    eligible = fields.Boolean(required=True)
    reasons = fields.List(fields.Dict(), required=True, metadata={
        "description": "Why not: code, message and the numbers (as the rule refuses)"})


class EligiblePerson(Schema):
    person = fields.Nested(LedgerPerson, required=True)
    unit = fields.Nested(Ref, required=True)
    tier = fields.String(allow_none=True, required=True)
    tier_label = fields.String(required=True)
    rank = fields.String(allow_none=True, required=True)
    rank_since = fields.Date(allow_none=True, required=True)
    eligible = fields.Boolean(required=True, metadata={
        "description": "Eligible for at least one of next_ranks"})
    next_ranks = fields.List(fields.Nested(NextRank), required=True)
    reasons = fields.List(fields.Dict(), required=True, metadata={
        "description": "Why there is no next rank (no rank on record, top of the ladder)"})
    priority = fields.List(fields.Dict(), required=True, metadata={
        "description": "优先情形: frontline (下沉一线 result recommends priority), "
                       "excellent_years (consecutive 优秀)"})


class EligibilityOut(Schema):
    flow = fields.String(required=True)
    date = fields.Date(required=True)
    unit = fields.Nested(Ref, allow_none=True, required=True)
    total = fields.Integer(required=True)
    eligible = fields.Integer(required=True)
    people = fields.List(fields.Nested(EligiblePerson), required=True)


class LedgerOut(Schema):
    items = fields.List(fields.Nested(LedgerRow), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)


# --------------------------------------------------------------------------- helpers


@contextmanager
def _query_errors() -> Iterator[None]:
    """Parameter errors found against the flow name the query parameter, as webargs does."""
    try:
        yield
    except FieldErrors as exc:
        raise FieldErrors({f"query.{k}": v for k, v in exc.errors.items()}) from None


def _read(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """One front-door read (`door().ledger`), as the viewer, its errors on the query."""
    with _query_errors():
        return fn(viewer=viewer(), **kwargs)


def _periods(args: dict[str, Any]) -> dict[str, Any]:
    return {"unit_id": args.get("unit_id"), "period": args.get("period"),
            "period_from": args.get("period_from"), "period_to": args.get("period_to")}


def _period_part(args: dict[str, Any]) -> str:
    if args.get("period"):
        return f"-{args['period']}"
    if args.get("period_from"):
        return f"-{args['period_from']}_{args['period_to']}"
    return ""


def _file(kind: str, args: dict[str, Any], rows: list[dict[str, Any]],
          columns: list[ledger.Column], sheet: str, what: str) -> Response:
    name = f"{what}-{args['flow']}{_period_part(args)}"
    if "year" in args:
        name += f"-{args['year']}"
    if args.get("unit_id"):
        name += f"-unit{args['unit_id']}"
    if kind == "csv":
        body, mimetype = ledger.to_csv(rows, columns), CSV + "; charset=utf-8"
    else:
        body, mimetype = ledger.to_xlsx(rows, columns, sheet), XLSX
    return Response(body, mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="{name}.{kind}"'})


# --------------------------------------------------------------------------- endpoints


@blp.route("/states")
class States(MethodView):
    @blp.arguments(PeriodQuery, location="query")
    @blp.response(200, StatesOut)
    def get(self, args):
        """Cases by state (with the flow's state labels), every state listed."""
        return _read(door().ledger.state_counts, flow=args["flow"], **_periods(args),
                     lang=lang())


@blp.route("/rates")
class Rates(MethodView):
    @blp.arguments(PeriodQuery, location="query")
    @blp.response(200, RatesOut)
    def get(self, args):
        """Completion and overdue: totals, and per period (every period of a range)."""
        return _read(door().ledger.rates, flow=args["flow"], **_periods(args))


@blp.route("/grades")
class Grades(MethodView):
    @blp.arguments(GradesQuery, location="query")
    @blp.response(200, GradesOut)
    @blp.doc(**_file_doc(GradesOut))
    def get(self, args):
        """Grades per quota pool (unit × tier × period, as the flow's quota rule says), with
        each pool's quota: size, limit, used, remaining."""
        dist = _read(door().ledger.grade_distribution, flow=args["flow"], **_periods(args),
                     lang=lang())
        if args["format"] != "json":
            return _file(args["format"], args, ledger.grade_rows(dist),
                         ledger.grade_columns(dist), "等次分布", "grades")
        return dist


@blp.route("/good-counts")
class GoodCounts(MethodView):
    @blp.arguments(GoodQuery, location="query")
    @blp.response(200, GoodOut)
    @blp.doc(**_file_doc(GoodOut))
    def get(self, args):
        """Per person: the year's approved results, and how many carry the quota value (好)."""
        counts = _read(door().ledger.good_counts, flow=args["flow"], year=args["year"],
                       unit_id=args.get("unit_id"))
        if args["format"] != "json":
            return _file(args["format"], args, ledger.good_rows(counts), ledger.GOOD_COLUMNS,
                         f"{args['year']}年好等次统计", "good-counts")
        return counts


@blp.route("/cases")
class LedgerCases(MethodView):
    @blp.arguments(CasesQuery, location="query")
    @blp.response(200, LedgerOut)
    @blp.doc(**_file_doc(LedgerOut))
    def get(self, args):
        """The ledger (台账): one row per case. JSON is paginated; a CSV or XLSX download
        holds every row (at most 50 000: narrow the unit or the periods beyond that)."""
        as_json = args["format"] == "json"
        found = _read(door().ledger.cases, flow=args["flow"], **_periods(args),
                      state=args.get("state"), lang=lang(),
                      page=args["page"] if as_json else None, per_page=args["per_page"],
                      max_rows=MAX_EXPORT)
        if as_json:
            return {"items": found.rows, "total": found.total, "page": args["page"],
                    "per_page": args["per_page"]}
        return _file(args["format"], args, found.rows, ledger.LEDGER_COLUMNS, "台账",
                     "ledger")


@blp.route("/eligibility")
class Eligibility(MethodView):
    @blp.arguments(EligibilityQuery, location="query")
    @blp.response(200, EligibilityOut)
    @blp.doc(**_file_doc(EligibilityOut))
    def get(self, args):
        """The eligibility list (任职资格名单): every active person you may see in the unit,
        their rank, the next rank(s) on the ladder, eligible or not on the date with the
        reasons and numbers, and priority situations (优先情形); also as CSV or XLSX (one
        row per person and next rank)."""
        on = args.get("date") or engine().calendar.local(engine().clock()).date()
        listing = _read(door().ledger.eligibility, flow=args["flow"], on=on,
                        unit_id=args.get("unit_id"))
        if args["format"] != "json":
            # the date takes the period's place in the file name
            return _file(args["format"], {**args, "period": on.isoformat()},
                         eligibility.export_rows(listing, request_lang()),
                         eligibility.COLUMNS, "任职资格名单", "eligibility")
        return localize(listing, request_lang())
