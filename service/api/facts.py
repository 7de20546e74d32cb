"""Person facts (人员信息) the rules read: rank history, annual results, sanctions,
investigations, exam results, training (records and legacy yearly totals, with the derived
yearly total), commendations, consequences of regular results (平时考核结果运用); their
audit; CSV import.

Reading a person's facts is for admins, process owners, the person, and leaders and
committee members of their unit or a unit above it (404 for anyone else). Writing,
importing and reading the audit are for admins (403 `needs_admin`). The values are
checked in `workflows.facts`, which gives 422 with the field at fault.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from workflows import facts
from workflows.messages import msg
from workflows.vocab import FACT_GRADES, RESULT_SOURCES, SANCTION_CATEGORIES, SANCTION_KINDS

from ..auth import door, viewer
from ..limits import large_body
from .schemas import Id, PageQuery

blp = Blueprint("facts", __name__, url_prefix="/api/v1/facts",
                description="Person facts (人员信息) the rules read, their audit, CSV import")
MAX_CSV = 5_000_000  # characters
MAX_XLSX = 7_000_000  # base64 characters: about 5 MB of workbook

DESCRIPTIONS = {
    "rank": "职级, e.g. 二级主任科员",
    "since": "The first day in this rank",
    "until": "The first day no longer in this rank; null: holds it now",
    "year": "The year (e.g. 2025)",
    "grade": f"One of {', '.join(FACT_GRADES)}",
    "source": f"One of {', '.join(RESULT_SOURCES)}",
    "effect_months": "Months of the effect period on promotion (影响期); default per kind: "
                     + ", ".join(f"{k} {x.months if x.months is not None else 'no end'}"
                                 for k, x in SANCTION_KINDS.items())
                     + "; null: no end (开除党籍, 开除)",
    "opened_on": "The day the investigation was opened",
    "closed_on": "The day it was closed; null: still open",
    "exam": "The exam, e.g. 政治理论考试",
    "score": "The score, 0–1000, two decimal places at most",
    "hours": "Training hours (学时): of the course for a training record, of the year for a "
             "legacy yearly total; one decimal place at most",
    "course": "The course or class (培训班次), e.g. 新任处级干部任职培训班",
    "organiser": "Who organised it (主办单位), e.g. 市委党校",
    "note": "Free text, at most 2000 characters",
    "period": "The assessed period the consequence follows from, e.g. 2026-07",
    "post_type": "下沉一线 post, e.g. 第一书记, 下沉社区",
    "receiving_unit": "The receiving village, community or unit (接收单位)",
    "term_start": "The first day of the dispatch term",
    "term_end": "The last day of the dispatch term",
    "commendation_proposed": "The sending unit proposed a commendation (表彰建议)",
    "promotion_priority": "Priority for promotion (优先提拔使用) was proposed",
}
KIND_DESCRIPTIONS = {
    facts.SANCTION: "One of " + "; ".join(
        f"{c}: {', '.join(k for k, x in SANCTION_KINDS.items() if x.category == c)}"
        for c in SANCTION_CATEGORIES) + " (警告 is the 政务处分; the party's is 党内警告)",
    facts.COMMENDATION: "e.g. 嘉奖, 记功, 记二等功, 通报表扬",
    facts.TRAINING_RECORD: "online (线上) or offline (线下); 线上 / 线下 are accepted and "
                           "stored as online / offline",
    facts.CONSEQUENCE: "e.g. 通报表扬, 嘉奖记功人选, 待岗学习或召回管理 (the regular "
                       "assessment's definition names them)",
}


def _field(kind: str, name: str, *, required: bool, out: bool = False) -> fields.Field:
    meta = {"description": (KIND_DESCRIPTIONS.get(kind) if name == "kind" else None)
            or DESCRIPTIONS.get(name, name)}
    opts: dict[str, Any] = {"metadata": meta}
    if out:
        opts["required"] = name in facts.KINDS[kind].required or name == "source"
        opts["allow_none"] = not opts["required"]
    else:
        opts["required"] = required
        opts["allow_none"] = not required
    t = facts.FIELD_TYPES[name]
    if t == facts.DATE:
        return fields.Date(**opts)
    if t == facts.INT:
        return fields.Integer(strict=True, **opts)
    if t == facts.DECIMAL:
        return fields.Decimal(as_string=True, allow_nan=False, **opts)
    if t == facts.BOOL:
        return fields.Boolean(**opts)
    return fields.String(validate=validate.Length(max=facts.TEXT_MAX[name]), **opts)


def _schemas(k: facts.FactKind) -> tuple[type[Schema], type[Schema], type[Schema]]:
    camel = "".join(p.title() for p in k.name.split("_"))
    fin = {"person_id": Id(required=True)}
    fin |= {n: _field(k.name, n, required=n in k.required) for n in k.fields}
    patch = {n: _field(k.name, n, required=False) for n in k.fields}
    fout = {"id": fields.Integer(required=True), "person_id": fields.Integer(required=True)}
    fout |= {n: _field(k.name, n, required=True, out=True) for n in k.fields}
    if k.name == facts.SANCTION:
        fout["effect_ends"] = fields.Date(required=True, allow_none=True, metadata={
            "description": "decided_on + effect_months: the first day it no longer blocks; "
                           "null: no end"})
        fout["category"] = fields.String(required=True, allow_none=True, metadata={
            "description": f"One of {', '.join(SANCTION_CATEGORIES)} (from the kind)"})
    return (Schema.from_dict(fin, name=f"{camel}In"),
            Schema.from_dict(patch, name=f"{camel}Patch"),
            Schema.from_dict(fout, name=f"{camel}Out"))


SCHEMAS = {name: _schemas(k) for name, k in facts.KINDS.items()}


def _routes(k: facts.FactKind) -> None:
    fin, patch, fout = SCHEMAS[k.name]
    camel = "".join(p.title() for p in k.name.split("_"))

    def post(self, body):
        person_id = body.pop("person_id")
        return door().facts.create(viewer=viewer(), kind=k.name, person_id=person_id,
                                   values=body)

    post.__doc__ = (f"Add a {k.label} fact for a person; admins only.\n\n"
                    "Audited (create). 422 with the field at fault, 404 for an unknown "
                    "person.")

    def patch_(self, body, fact_id: int):
        return door().facts.change(viewer=viewer(), kind=k.name, fact_id=fact_id,
                                   changes=body)

    patch_.__doc__ = (f"Change a {k.label} fact; admins only.\n\n"
                      "Only the fields sent change. Audited (update) with the row before "
                      "and after.")

    def delete(self, fact_id: int):
        door().facts.remove(viewer=viewer(), kind=k.name, fact_id=fact_id)

    delete.__doc__ = f"Delete a {k.label} fact; admins only.\n\nAudited (delete)."

    collection = type(f"{camel}Facts", (MethodView,), {
        "post": blp.arguments(fin)(blp.response(201, fout)(post))})
    detail = type(f"{camel}Fact", (MethodView,), {
        "patch": blp.arguments(patch)(blp.response(200, fout)(patch_)),
        "delete": blp.response(204)(delete)})
    blp.route(f"/{k.name}")(collection)
    blp.route(f"/{k.name}/<int:fact_id>")(detail)


# --------------------------------------------------------------------------- schemas


class TrainingTotalOut(Schema):
    year = fields.Integer(required=True)
    records = fields.Integer(required=True, metadata={
        "description": "Training records that ended in the year"})
    record_hours = fields.Decimal(as_string=True, required=True)
    legacy_hours = fields.Decimal(as_string=True, required=True, metadata={
        "description": "The year's legacy total (training_hours), 0 when none"})
    hours = fields.Decimal(as_string=True, required=True, metadata={
        "description": "record_hours + legacy_hours: what the promotion rule reads"})


class PersonFactsOut(Schema):
    person_id = fields.Integer(required=True)
    rank = fields.String(allow_none=True, required=True, metadata={
        "description": "The open row of the rank history, else the person's rank"})
    rank_since = fields.Date(allow_none=True, required=True)
    under_investigation = fields.Boolean(required=True)
    rank_history = fields.List(fields.Nested(SCHEMAS[facts.RANK][2]), required=True)
    annual_results = fields.List(fields.Nested(SCHEMAS[facts.ANNUAL][2]), required=True)
    sanctions = fields.List(fields.Nested(SCHEMAS[facts.SANCTION][2]), required=True)
    investigations = fields.List(fields.Nested(SCHEMAS[facts.INVESTIGATION][2]),
                                 required=True)
    exam_results = fields.List(fields.Nested(SCHEMAS[facts.EXAM][2]), required=True)
    training_hours = fields.List(fields.Nested(SCHEMAS[facts.TRAINING][2]), required=True)
    commendations = fields.List(fields.Nested(SCHEMAS[facts.COMMENDATION][2]),
                                required=True)
    training_records = fields.List(fields.Nested(SCHEMAS[facts.TRAINING_RECORD][2]),
                                   required=True)
    training_totals = fields.List(fields.Nested(TrainingTotalOut), required=True, metadata={
        "description": "The training of each year, derived: records + legacy total"})
    consequences = fields.List(fields.Nested(SCHEMAS[facts.CONSEQUENCE][2]), required=True,
                               metadata={"description": "平时考核结果运用"})
    dispatch_outcomes = fields.List(fields.Nested(SCHEMAS[facts.DISPATCH][2]), required=True,
                                    metadata={"description": "下沉一线任期考核结果"})


class AuditOut(Schema):
    id = fields.Integer(required=True)
    at = fields.DateTime(required=True)
    actor_id = fields.Integer(allow_none=True, required=True,
                              metadata={"description": "The admin; null: the system"})
    action = fields.String(required=True, metadata={
        "description": "create | update | delete | import"})
    table = fields.String(required=True, metadata={"description": "The kind of fact"})
    row_id = fields.Integer(required=True)
    person_id = fields.Integer(required=True)
    before = fields.Dict(allow_none=True, required=True)
    after = fields.Dict(allow_none=True, required=True)


class AuditList(Schema):
    items = fields.List(fields.Nested(AuditOut), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)


class FactImportIn(Schema):
    csv = fields.String(validate=[validate.Length(min=1, max=MAX_CSV)],
                        metadata={"description": "UTF-8 CSV text with a header row: "
                                                 + ", ".join(facts.CSV_COLUMNS)})
    xlsx = fields.String(validate=[validate.Length(min=1, max=MAX_XLSX)], metadata={
        "description": "Or: an XLSX workbook, base64-encoded; its first sheet is read as "
                       "the CSV would be (the same columns, row numbers as line numbers)"})

    @validates_schema
    def _one_file(self, data, **kwargs):
        if ("csv" in data) == ("xlsx" in data):
            raise ValidationError(msg("request.csv_or_xlsx"), "_schema")


class FactImportOut(Schema):
    rows = fields.Integer(required=True)
    created = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                          metadata={"description": "Rows written per fact"})


# --------------------------------------------------------------------------- views


def facts_out(snapshot: facts.PersonFacts) -> dict[str, Any]:
    def items(rows) -> list[dict[str, Any]]:
        return [{"person_id": snapshot.person_id, **asdict(r)} for r in rows]

    return {"person_id": snapshot.person_id, "rank": snapshot.rank,
            "rank_since": snapshot.rank_since,
            "under_investigation": snapshot.under_investigation,
            "rank_history": items(snapshot.rank_history),
            "annual_results": items(snapshot.annual_results),
            "sanctions": items(snapshot.sanctions),
            "investigations": items(snapshot.investigations),
            "exam_results": items(snapshot.exams),
            "training_hours": items(snapshot.training),
            "commendations": items(snapshot.commendations),
            "training_records": items(snapshot.training_records),
            "training_totals": [{"year": t.year, "records": t.records,
                                 "record_hours": t.record_hours,
                                 "legacy_hours": t.legacy_hours, "hours": t.hours}
                                for t in snapshot.training_totals.values()],
            "consequences": items(snapshot.consequences),
            "dispatch_outcomes": items(snapshot.dispatch_outcomes)}


@blp.route("/people/<int:person_id>")
class PersonFacts(MethodView):
    @blp.response(200, PersonFactsOut)
    def get(self, person_id: int):
        """A person's facts, every kind, oldest first.

        For admins, process owners, the person, and leaders and committee members of
        their unit or a unit above it; 404 for everyone else."""
        return facts_out(door().facts.read(viewer=viewer(), person_id=person_id))


@blp.route("/people/<int:person_id>/audit")
class PersonAudit(MethodView):
    @blp.arguments(PageQuery, location="query")
    @blp.response(200, AuditList)
    def get(self, args, person_id: int):
        """The audit of a person's facts, newest first; admins only.

        Who changed what and when, with the row before and after."""
        items, total = door().facts.audit(viewer=viewer(), person_id=person_id,
                                          page=args["page"], per_page=args["per_page"])
        return {"items": items, "total": total, "page": args["page"],
                "per_page": args["per_page"]}


@blp.route("/import")
@large_body
class Import(MethodView):
    @blp.arguments(FactImportIn)
    @blp.response(200, FactImportOut)
    def post(self, body):
        """Import facts from CSV or XLSX (批量导入); admins only.

        One fact per row (see docs/facts.md); an XLSX workbook's first sheet is read as the
        CSV would be. All rows or none: bad rows give 422 with
        `errors` [{line, message}]. Each row written is audited (import)."""
        if "csv" in body:
            return asdict(door().facts.import_csv(viewer=viewer(), text=body["csv"]))
        return asdict(door().facts.import_xlsx(viewer=viewer(), base64_data=body["xlsx"]))


for _kind in facts.KINDS.values():
    _routes(_kind)
