"""The contact-point register (考核联系点台账): which units are contact points in which
year, their liaison (联络员), targets (目标任务) and outcomes (成效), with what their monthly
reports (信息月报) say.

Writing is for admins and process owners (403 `needs_admin_or_process_owner`); reading for
them and for leaders and committee members of the unit or a unit above it (403
`contact_points_read`). Values are checked in `workflows.contact_register` (422 with the
field at fault).
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from workflows import contact_register as reg
from workflows.facts import MAX_NOTE, MAX_YEAR, MIN_YEAR

from ..auth import door, viewer
from .schemas import Id

blp = Blueprint("contact_register", __name__, url_prefix="/api/v1/contact-point-register",
                description="The contact-point register (考核联系点台账): units, liaisons, "
                            "targets and outcomes, and the figures of the monthly reports")

LIAISON = ("The liaison (联络员): an active person of the unit; one contact point per liaison "
           "and year. The subject of the unit's monthly reports")


class RegisterQuery(Schema):
    year = fields.Integer(required=True, validate=validate.Range(min=MIN_YEAR, max=MAX_YEAR),
                          metadata={"description": "The year of the register, e.g. 2026"})
    unit_id = Id(metadata={"description": "Only the entries of this unit and its sub-units"})


class EntryPatch(Schema):
    liaison_id = Id(metadata={"description": LIAISON})
    level = fields.String(allow_none=True, validate=validate.Length(max=reg.MAX_LEVEL),
                          metadata={"description": "e.g. 市级联系点, 区级联系点, 特色联系点"})
    targets = fields.List(fields.String(validate=validate.Length(min=1, max=reg.MAX_LINE)),
                          allow_none=True, validate=validate.Length(max=reg.MAX_LIST),
                          metadata={"description": "目标任务: what the contact point is to "
                                                   "build or try out this year"})
    outcomes = fields.List(fields.String(validate=validate.Length(min=1, max=reg.MAX_LINE)),
                           allow_none=True, validate=validate.Length(max=reg.MAX_LIST),
                           metadata={"description": "成效 / 成果形式: what came of it"})
    note = fields.String(allow_none=True, validate=validate.Length(max=MAX_NOTE))


class EntryIn(EntryPatch):
    unit_code = fields.String(required=True, validate=validate.Length(min=1, max=64),
                              metadata={"description": "The contact-point unit"})
    year = fields.Integer(required=True, validate=validate.Range(min=MIN_YEAR, max=MAX_YEAR))
    liaison_id = Id(required=True, metadata={"description": LIAISON})


class Named(Schema):
    id = fields.Integer(required=True)
    code = fields.String(required=True)
    name = fields.String(required=True)


class ReportFiguresOut(Schema):
    reports = fields.Integer(required=True, metadata={
        "description": "Monthly report cases of the year"})
    submitted = fields.Integer(required=True, metadata={
        "description": "Submitted by the liaison at least once"})
    on_time = fields.Integer(required=True, metadata={
        "description": "First submitted at or before the report step's deadline"})
    on_time_rate = fields.Float(required=True, allow_none=True, metadata={
        "description": "on_time / reports; null without reports"})
    reviewed = fields.Integer(required=True, metadata={
        "description": "Approved by the hr office with a quality"})
    quality = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                          metadata={"description": "Reviewed reports per quality value"})
    quality_points = fields.Integer(required=True, metadata={
        "description": "Best value n-1 points, next n-2, … last 0"})
    quality_max = fields.Integer(required=True, metadata={
        "description": "What the reviewed reports could have scored"})


class EntryOut(Schema):
    id = fields.Integer(required=True)
    unit = fields.Nested(Named, required=True)
    year = fields.Integer(required=True)
    liaison = fields.Nested(Named, required=True)
    level = fields.String(required=True, allow_none=True)
    targets = fields.List(fields.String(), required=True)
    outcomes = fields.List(fields.String(), required=True)
    note = fields.String(required=True, allow_none=True)
    set_by = fields.Integer(required=True, allow_none=True)
    set_at = fields.DateTime(required=True)
    reports = fields.Nested(ReportFiguresOut, required=True, allow_none=True, metadata={
        "description": "The year's monthly reports; null when the report flow is not "
                       "published (in answers to writes too)"})


class RegisterOut(Schema):
    year = fields.Integer(required=True)
    items = fields.List(fields.Nested(EntryOut), required=True)


@blp.route("")
class Register(MethodView):
    @blp.arguments(RegisterQuery, location="query")
    @blp.response(200, RegisterOut)
    def get(self, args):
        """The year's contact points (联系点台账), by unit code, each with the figures of its
        monthly reports; leaders and committee members see their unit and sub-units."""
        items = door().contact_points.register(viewer=viewer(), year=args["year"],
                                               unit_id=args.get("unit_id"))
        return {"year": args["year"], "items": items}

    @blp.arguments(EntryIn)
    @blp.response(201, EntryOut)
    def post(self, body):
        """Register a unit as a contact point of a year (列为联系点); admins and process
        owners. From then on the report flow's cycle opens its monthly report each month,
        the liaison as subject."""
        return door().contact_points.add_entry(viewer=viewer(), values=body)


@blp.route("/<int:entry_id>")
class Entry(MethodView):
    @blp.response(200, EntryOut)
    def get(self, entry_id: int):
        """One entry with the figures of its monthly reports."""
        return door().contact_points.entry(viewer=viewer(), entry_id=entry_id)

    @blp.arguments(EntryPatch)
    @blp.response(200, EntryOut)
    def patch(self, body, entry_id: int):
        """Change the liaison, level, targets, outcomes or note; admins and process owners.
        Reports already opened keep their subject."""
        return door().contact_points.change_entry(viewer=viewer(), entry_id=entry_id,
                                                  changes=body)

    @blp.response(204)
    def delete(self, entry_id: int):
        """Take the unit off the year's register; admins and process owners. Its report
        cases stay; no more are opened."""
        door().contact_points.remove_entry(viewer=viewer(), entry_id=entry_id)
