"""Migrations (迁移): a flow's running cases moved to a newer version — preview, run, runs.

Each view parses, makes one call into `workflows.migrate` (which opens its own unit of
work) and lets the error handler map the engine's errors."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from workflows import migrate

from ..auth import engine, viewer

blp = Blueprint("migrations", __name__, url_prefix="/api/v1/flows",
                description="Migrations (迁移): running cases moved to a newer version of "
                            "their flow; process owners and admins")
STATE = validate.Length(min=1, max=64)


# --------------------------------------------------------------------------- schemas


class MigrationIn(Schema):
    from_version = fields.Integer(required=True, data_key="from",
                                  validate=validate.Range(min=1, max=2**31 - 1),
                                  metadata={"description": "The version the cases are on"})
    to_version = fields.Integer(required=True, data_key="to",
                                validate=validate.Range(min=1, max=2**31 - 1),
                                metadata={"description": "A newer, published version"})
    mapping = fields.Dict(keys=fields.String(validate=STATE),
                          values=fields.String(validate=STATE), load_default=dict,
                          metadata={"description": "Old state → new state (状态映射), for "
                                                   "the states the new version removed; "
                                                   "every other state keeps its name"})


class RunIn(MigrationIn):
    dry_run = fields.Boolean(load_default=False, metadata={
        "description": "Only preview: the answer is the preview, nothing is changed"})
    batch = fields.Integer(load_default=migrate.BATCH, validate=validate.Range(min=1,
                                                                                max=1000),
                           metadata={"description": "Cases per batch (each case is still "
                                                    "its own transaction)"})


class TimerPlanOut(Schema):
    kind = fields.String(required=True, metadata={"description": "deadline | reminder | "
                                                                 "auto | repeat"})
    due_at = fields.DateTime(required=True)
    action = fields.String(allow_none=True)


class CasePlanOut(Schema):
    case_id = fields.Integer(required=True)
    subject_id = fields.Integer(required=True)
    subject_name = fields.String(required=True)
    period_key = fields.String(allow_none=True)
    from_state = fields.String(required=True)
    to_state = fields.String(allow_none=True)
    moves = fields.Boolean(required=True)
    refusal = fields.String(allow_none=True, metadata={
        "description": "Why the case cannot move; null when it moves"})
    deadline_at = fields.DateTime(allow_none=True)
    disarm = fields.List(fields.Nested(TimerPlanOut), required=True, metadata={
        "description": "Pending timers of the current visit, dropped by the move"})
    arm = fields.List(fields.Nested(TimerPlanOut), required=True, metadata={
        "description": "Timers of the new state, planned from when the case entered it"})
    fields_not_declared = fields.List(fields.String(), required=True, metadata={
        "description": "Data the new version does not declare: kept in the case, read by "
                       "no form or rule of the new version"})


class PreviewOut(Schema):
    flow = fields.String(required=True)
    from_version = fields.Integer(required=True, data_key="from")
    to_version = fields.Integer(required=True, data_key="to")
    mapping = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True),
                          required=True, metadata={
                              "description": "Every state of the old version → its state in "
                                             "the new one; null: removed and not mapped"})
    moving = fields.Integer(required=True)
    refused = fields.Integer(required=True)
    cases = fields.List(fields.Nested(CasePlanOut), required=True)


class RefusalOut(Schema):
    case_id = fields.Integer(required=True)
    reason = fields.String(required=True)


class RunOut(Schema):
    id = fields.Integer(required=True)
    flow = fields.String(required=True)
    from_version = fields.Integer(required=True, data_key="from")
    to_version = fields.Integer(required=True, data_key="to")
    mapping = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    by = fields.Integer(allow_none=True)
    status = fields.String(required=True, metadata={
        "description": "running (interrupted runs stay so: run again to resume) | done | "
                       "superseded (interrupted, then run again with another mapping)"})
    started_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(allow_none=True)
    moved = fields.Integer(required=True)
    refused = fields.Integer(required=True)
    skipped = fields.Integer(required=True)


class RunResultOut(RunOut):
    resumed = fields.Boolean(required=True, metadata={
        "description": "true: an interrupted run with the same versions and mapping went on"})
    refusals = fields.List(fields.Nested(RefusalOut), required=True, metadata={
        "description": "The cases of this call that could not move, and why"})


# --------------------------------------------------------------------------- views


@blp.route("/<flow>/migrations/preview")
class Preview(MethodView):
    @blp.arguments(MigrationIn)
    @blp.response(200, PreviewOut)
    def post(self, body: dict[str, Any], flow: str):
        """Preview a migration (迁移预览); process owners and admins.

        For every open case of the old version: its new state, the timers disarmed and
        armed (with due dates), the fields the new version no longer declares (kept), or
        why it cannot move. Changes nothing. 422 for a bad mapping or a version not newer,
        404 for an unknown version, 409 for a draft target."""
        return preview_out(migrate.plan(engine(), flow, body["from_version"],
                                        body["to_version"], body["mapping"], viewer()))


@blp.route("/<flow>/migrations")
class Migrations(MethodView):
    @blp.response(200, RunOut(many=True))
    def get(self, flow: str):
        """The migration runs of a flow, newest first; process owners and admins."""
        return [run_out(r) for r in migrate.runs(engine(), flow, viewer())]

    @blp.arguments(RunIn)
    @blp.response(201, RunResultOut)
    @blp.alt_response(200, schema=PreviewOut, description="dry_run: the preview")
    def post(self, body: dict[str, Any], flow: str):
        """Migrate the open cases of a version to a newer one (迁移); process owners and
        admins.

        In batches, each case in its own transaction with a `migrate` history record.
        Cases that cannot move are left alone and listed in `refusals`. Idempotent: an
        interrupted run is resumed by sending the same request again."""
        args = (engine(), flow, body["from_version"], body["to_version"], body["mapping"],
                viewer())
        if body["dry_run"]:  # another schema than the decorator's: dumped here
            return jsonify(PreviewOut().dump(preview_out(migrate.plan(*args))))
        result = migrate.run(*args, batch=body["batch"])
        row = next(r for r in migrate.runs(engine(), flow, viewer()) if r.id == result.run_id)
        return {**run_out(row), "resumed": result.resumed,
                "refusals": [{"case_id": k, "reason": v}
                             for k, v in sorted(result.refusals.items())]}, 201


def preview_out(p: migrate.Preview) -> dict[str, Any]:
    return {"flow": p.flow, "from_version": p.from_version, "to_version": p.to_version,
            "mapping": {k: v or None for k, v in p.mapping.items()}, "moving": p.moving,
            "refused": p.refused, "cases": [{**c.__dict__, "moves": c.moves}
                                            for c in p.cases]}


def run_out(r) -> dict[str, Any]:
    return {"id": r.id, "flow": r.flow_id, "from_version": r.from_version,
            "to_version": r.to_version, "mapping": dict(r.mapping), "by": r.by,
            "status": r.status, "started_at": r.started_at, "finished_at": r.finished_at,
            "moved": r.moved, "refused": r.refused, "skipped": r.skipped}
