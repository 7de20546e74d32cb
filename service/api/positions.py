"""Rank positions (职数) per unit, target rank and promotion round.

Admins and process owners set, delete and import them (403 `needs_admin_or_process_owner`
for anyone else); leaders and committee members read the rows of their units, the units
below and the units above. What a row means and how the `positions` rule reads it:
`workflows.positions` and docs/rank-promotion.md.
"""

from __future__ import annotations

from dataclasses import asdict

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from workflows import positions as rank_positions

from ..auth import door, viewer
from ..limits import large_body
from .schemas import Id

blp = Blueprint("rank_positions", __name__, url_prefix="/api/v1/rank-positions",
                description="Rank positions (职数) per unit, rank and promotion round")
MAX_CSV = 5_000_000  # characters


# --------------------------------------------------------------------------- schemas


class PositionsQuery(Schema):
    unit_id = Id(metadata={"description": "This unit and its sub-units"})
    rank = fields.String(validate=validate.Length(min=1, max=rank_positions.MAX_RANK))
    round = fields.String(validate=validate.Length(min=1, max=rank_positions.MAX_ROUND))


class PositionsIn(Schema):
    positions = fields.Integer(required=True, strict=True, metadata={
        "description": f"Positions (职数), 0–{rank_positions.MAX_POSITIONS}; never fewer than "
                       "are already taken"})
    note = fields.String(load_default=None, allow_none=True,
                         validate=validate.Length(max=rank_positions.MAX_NOTE))


class PositionsUnit(Schema):
    id = fields.Integer(required=True)
    code = fields.String(required=True)
    name = fields.String(required=True)


class PositionsOut(Schema):
    id = fields.Integer(required=True)
    unit = fields.Nested(PositionsUnit, required=True)
    rank = fields.String(required=True)
    round = fields.String(required=True)
    positions = fields.Integer(required=True)
    taken = fields.Integer(allow_none=True, required=True, metadata={
        "description": "Approved promotions (cases in the rule's counted states) of the "
                       "rank and round in the unit and its sub-units; null when the "
                       "published flow's positions rule does not read this table"})
    remaining = fields.Integer(allow_none=True, required=True,
                               metadata={"description": "max(positions − taken, 0)"})
    note = fields.String(allow_none=True, required=True)
    set_by = fields.Integer(allow_none=True, required=True,
                            metadata={"description": "The person who set them last"})
    set_at = fields.DateTime(required=True)


class PositionsList(Schema):
    items = fields.List(fields.Nested(PositionsOut), required=True)
    total = fields.Integer(required=True)


class PositionsImportIn(Schema):
    csv = fields.String(required=True, validate=[validate.Length(min=1, max=MAX_CSV)],
                        metadata={"description": "UTF-8 CSV text with a header row: "
                                                 + ", ".join(rank_positions.CSV_COLUMNS)})


class PositionsImportOut(Schema):
    rows = fields.Integer(required=True)
    created = fields.Integer(required=True)
    updated = fields.Integer(required=True)


# --------------------------------------------------------------------------- views


@blp.route("")
class RankPositions(MethodView):
    @blp.arguments(PositionsQuery, location="query")
    @blp.response(200, PositionsList)
    def get(self, args):
        """Rank positions with what is taken and what remains.

        Admins and process owners see every row; leaders and committee members the rows
        of their units, the units below and above. Ordered by round, unit, rank."""
        items = door().positions.read(viewer=viewer(), **args)
        return {"items": items, "total": len(items)}



@blp.route("/<string:unit_code>/<string:rank>/<string:round>")
class RankPositionsRow(MethodView):
    @blp.arguments(PositionsIn)
    @blp.response(200, PositionsOut)
    @blp.alt_response(201, schema=PositionsOut, description="The row was created")
    def put(self, body, unit_code: str, rank: str, round: str):
        """Set the positions (职数) of a unit (with its sub-units), a target rank of the
        ladder (e.g. 一级主任科员) and a promotion round (e.g. 2026-1); admins and process
        owners. 201 when created, 200 when changed.

        404 for an unknown unit; 422 with the field at fault: a rank off the ladder of the
        published rank-promotion flow, a round longer than 32 characters, a negative
        number, or fewer positions than are already taken."""
        row, created = door().positions.put(viewer=viewer(), unit_code=unit_code, rank=rank,
                                            round=round, positions=body["positions"],
                                            note=body["note"])
        return (row, 201) if created else row

    @blp.response(204)
    def delete(self, unit_code: str, rank: str, round: str):
        """Delete the positions of a unit, rank and round that no approved promotion uses
        (422 when one does: the row stays as the record of the round); admins and process
        owners."""
        door().positions.remove(viewer=viewer(), unit_code=unit_code, rank=rank,
                                round=round)


@blp.route("/import")
@large_body
class Import(MethodView):
    @blp.arguments(PositionsImportIn)
    @blp.response(200, PositionsImportOut)
    def post(self, body):
        """Import rank positions from CSV (批量导入); admins and process owners.

        Columns unit_code, rank, round, positions, note. All rows or none: bad rows give
        422 with `errors` [{line, message}]."""
        return asdict(door().positions.import_csv(viewer=viewer(), text=body["csv"]))
