"""The contact-point score sheet (考核联系点成绩单): list and rank a year's sheets with the
statistics of each unit's regular assessment, as JSON, CSV or XLSX; set, delete and import
sheets.

Writing is for admins and process owners (403 `needs_admin_or_process_owner`); reading for
them and for leaders and committee members, who see the sheets of their unit and its
sub-units (others get 403 `contact_points_read`). Values are checked in
`workflows.contact_points`, which gives 422 with the field at fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from workflows import contact_points as cp
from workflows import ledger
from workflows.errors import FieldErrors
from workflows.facts import MAX_NOTE, MAX_YEAR, MIN_YEAR

from ..auth import door, viewer
from ..limits import large_body
from .contact_register import ReportFiguresOut
from .schemas import Id

blp = Blueprint("contact_points", __name__, url_prefix="/api/v1/contact-points",
                description="The contact-point score sheet (考核联系点成绩单): ranks, statistics "
                            "of each unit's regular assessment, CSV and XLSX export")

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MAX_CSV = 5_000_000  # characters
SCORE_DOC = "0 … 9999.99, two decimal places at most"


# --------------------------------------------------------------------------- requests


class ScoreBoardQuery(Schema):
    year = fields.Integer(required=True, validate=validate.Range(min=MIN_YEAR, max=MAX_YEAR),
                          metadata={"description": "The year of the score sheets, e.g. 2026"})
    flow = fields.String(load_default=cp.REGULAR_FLOW, validate=validate.Length(min=1, max=64),
                         metadata={"description": "The flow the statistics read"})
    weekly_field = fields.String(load_default=cp.WEEKLY_FIELD,
                                 validate=validate.Length(min=1, max=64), metadata={
                                     "description": "The flow's list field of weekly records "
                                                    "(周记实)"})
    unit_id = Id(metadata={"description": "Only the sheets of this unit and its sub-units"})
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv", "xlsx"]),
                           metadata={"description": "json, or a csv / xlsx file download"})


class ScoreItemIn(Schema):
    item = fields.String(required=True, validate=validate.Length(max=cp.MAX_ITEM_TEXT),
                         metadata={"description": "The evaluated item, e.g. 台账管理"})
    score = fields.Decimal(required=True, allow_nan=False, metadata={"description": SCORE_DOC})
    max = fields.Decimal(required=True, allow_nan=False,
                         metadata={"description": "The item's full marks; score ≤ max"})


class ScoreSheetIn(Schema):
    score = fields.Decimal(allow_none=True, allow_nan=False, metadata={
        "description": "The total. With items: their sum (or leave it out); without items: "
                       "required"})
    items = fields.List(fields.Nested(ScoreItemIn), allow_none=True,
                        validate=validate.Length(max=cp.MAX_ITEMS),
                        metadata={"description": "The lines of the sheet"})
    raised = fields.Boolean(load_default=False, metadata={
        "description": "The unit's annual 优秀 ratio is raised (its sub-units' too)"})
    note = fields.String(allow_none=True, validate=validate.Length(max=MAX_NOTE))


class ScoreSheetImportIn(Schema):
    csv = fields.String(required=True, validate=validate.Length(min=1, max=MAX_CSV),
                        metadata={"description": "UTF-8 CSV text with a header row: "
                                                 + ", ".join(cp.CSV_COLUMNS)})


# --------------------------------------------------------------------------- responses


class ScoreSheetUnit(Schema):
    id = fields.Integer(required=True)
    code = fields.String(required=True)
    name = fields.String(required=True)


class ScoreItemOut(Schema):
    item = fields.String(required=True)
    score = fields.Float(required=True)
    max = fields.Float(required=True)


def _rate(description: str) -> fields.Float:
    return fields.Float(allow_none=True, required=True,
                        metadata={"description": description + "; null when there is nothing "
                                                               "to divide by"})


class ScoreSheetStats(Schema):
    cases = fields.Integer(required=True, metadata={
        "description": "Cases of the flow in the unit and its sub-units, periods of the year"})
    closed = fields.Integer(required=True, metadata={"description": "Reached a final state"})
    completion_rate = _rate("closed / cases")
    on_time = fields.Integer(required=True, metadata={
        "description": "Closed cases that left every step before its deadline"})
    on_time_rate = _rate("on_time / closed")
    approved = fields.Integer(required=True, metadata={
        "description": "Cases in the quota rule's counted states (已审定)"})
    good = fields.Integer(required=True, metadata={
        "description": "Approved cases with the quota value (好)"})
    good_share = _rate("good / approved")
    good_value = fields.Raw(required=True, metadata={"description": "The quota value, 好"})
    good_max_ratio = fields.Float(required=True, metadata={
        "description": "The quota rule's ratio (e.g. 0.4)"})
    good_limit = fields.Integer(required=True, metadata={
        "description": "The quota limits of the unit's pools added up"})
    weekly_records = fields.Integer(required=True, metadata={
        "description": "Items of the weekly-records list over the cases"})
    weekly_records_per_case = _rate("weekly_records / cases (per person-month for the "
                                    "monthly regular assessment)")
    people_with_results = fields.Integer(required=True, metadata={
        "description": "People with an approved, graded case of the year"})
    results_used = fields.Integer(required=True, metadata={
        "description": "Of them: whose results a later annual or promotion case read in a "
                       "step that went through"})
    results_used_rate = _rate("results_used / people_with_results")


class ScoreSheetOut(Schema):
    unit = fields.Nested(ScoreSheetUnit, required=True)
    year = fields.Integer(required=True)
    score = fields.Float(allow_none=True, required=True)
    rank = fields.Integer(allow_none=True, required=True, metadata={
        "description": "Among all sheets of the year, by score; ties share a rank"})
    of = fields.Integer(allow_none=True, required=True,
                        metadata={"description": "Sheets with a score that year"})
    items = fields.List(fields.Nested(ScoreItemOut), required=True)
    raised = fields.Boolean(required=True)
    note = fields.String(allow_none=True, required=True)
    set_by = fields.Integer(allow_none=True, required=True,
                            metadata={"description": "The person who wrote it"})
    set_at = fields.DateTime(required=True)


class ScoreBoardSheet(ScoreSheetOut):
    statistics = fields.Nested(ScoreSheetStats, allow_none=True, required=True)
    reports = fields.Nested(ReportFiguresOut, allow_none=True, required=True, metadata={
        "description": "The unit's monthly reports (信息月报) of the year as of now; null "
                       "when the report flow is not published or the unit has none"})


class ScoreBoardOut(Schema):
    year = fields.Integer(required=True)
    flow = fields.String(required=True)
    weekly_field = fields.String(required=True)
    sheets = fields.List(fields.Nested(ScoreBoardSheet), required=True)


class ScoreSheetImportOut(Schema):
    rows = fields.Integer(required=True, metadata={"description": "Lines read"})
    sheets = fields.Integer(required=True)
    created = fields.Integer(required=True)
    replaced = fields.Integer(required=True)


# --------------------------------------------------------------------------- helpers


@contextmanager
def _query_errors() -> Iterator[None]:
    """Errors about the query (weekly_field, flow) name the query parameter."""
    try:
        yield
    except FieldErrors as exc:
        raise FieldErrors({f"query.{k}": v for k, v in exc.errors.items()}) from None


def _file(kind: str, args: dict[str, Any], board: dict[str, Any]) -> Response:
    name = f"contact-points-{args['year']}"
    if args.get("unit_id"):
        name += f"-unit{args['unit_id']}"
    rows = cp.rows(board)
    if kind == "csv":
        body, mimetype = ledger.to_csv(rows, cp.COLUMNS), CSV + "; charset=utf-8"
    else:
        body, mimetype = ledger.to_xlsx(rows, cp.COLUMNS, f"{args['year']}年联系点成绩单"), XLSX
    return Response(body, mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="{name}.{kind}"'})


# --------------------------------------------------------------------------- endpoints


@blp.route("")
class Board(MethodView):
    @blp.arguments(ScoreBoardQuery, location="query")
    @blp.response(200, ScoreBoardOut)
    @blp.doc(responses={"200": {"content": {
        "application/json": {"schema": ScoreBoardOut}, CSV: {"schema": {"type": "string"}},
        XLSX: {"schema": {"type": "string", "format": "binary"}}}}})
    def get(self, args):
        """The year's score sheets (成绩单), ranked by score, each with the statistics of its
        unit's regular assessment that year; also as a CSV or XLSX download.

        Leaders and committee members get the sheets of their unit and its sub-units;
        process owners and admins every sheet. Ranks are among all sheets of the year."""
        with _query_errors():
            board = door().contact_points.scoreboard(
                viewer=viewer(), year=args["year"], flow=args["flow"],
                unit_id=args.get("unit_id"), weekly_field=args["weekly_field"])
        if args["format"] != "json":
            return _file(args["format"], args, board)
        return board


@blp.route("/<string:unit_code>/<int:year>")
class Sheet(MethodView):
    @blp.arguments(ScoreSheetIn)
    @blp.response(200, ScoreSheetOut)
    @blp.alt_response(201, schema=ScoreSheetOut, description="The sheet was created")
    def put(self, body, unit_code: str, year: int):
        """Set a unit's score sheet of a year (create or replace it whole); admins and
        process owners.

        Give the items and their scores (the total is their sum; a total given with them
        must match it), or the total alone. `raised: true` raises the unit's annual 优秀
        ratio (and its sub-units'). 201 when created, 200 when replaced."""
        out, created = door().contact_points.set_sheet(viewer=viewer(), unit_code=unit_code,
                                                       year=year, values=body)
        return (out, 201) if created else out

    @blp.response(204)
    def delete(self, unit_code: str, year: int):
        """Delete a unit's score sheet of a year; admins and process owners."""
        door().contact_points.remove_sheet(viewer=viewer(), unit_code=unit_code, year=year)


@blp.route("/import")
@large_body
class Import(MethodView):
    @blp.arguments(ScoreSheetImportIn)
    @blp.response(200, ScoreSheetImportOut)
    def post(self, body):
        """Import score sheets from CSV (批量导入); admins and process owners.

        One line per item (see docs/contact-points.md); the lines of one unit and year are
        its sheet and replace the stored one. All lines or none: bad lines give 422 with
        `errors` [{line, message}]."""
        return asdict(door().contact_points.import_sheets(viewer=viewer(), text=body["csv"]))
