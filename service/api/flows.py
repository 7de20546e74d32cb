"""Flows (流程): definitions and their versions — upload, validate, publish, read, draw."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from workflows.access import OWNER, require
from workflows.diagram import mermaid
from workflows.engine import PUBLISHED
from workflows.spec import load_definition

from ..auth import engine, viewer
from ..limits import large_body
from .cases import lang

blp = Blueprint("flows", __name__, url_prefix="/api/v1/flows",
                description="Flows (流程): definitions, their versions (版本) and publishing "
                            "(发布)")
MAX_SOURCE = 1_000_000  # characters of YAML/JSON; the shipped flows are a few KB


# --------------------------------------------------------------------------- schemas


class VersionOut(Schema):
    flow = fields.String(required=True)
    version = fields.Integer(required=True)
    status = fields.String(required=True, metadata={"description": "draft (草稿) | published"})
    content_hash = fields.String(required=True)
    title = fields.String(required=True)
    filename = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    published_at = fields.DateTime(allow_none=True)


class UploadOut(VersionOut):
    created = fields.Boolean(required=True, metadata={
        "description": "false: identical content was already stored as this version"})


class FlowOut(Schema):
    flow = fields.String(required=True)
    title = fields.String(required=True)
    current_version = fields.Integer(allow_none=True, metadata={
        "description": "The latest published version, on which new cases start; null if "
                       "only drafts exist"})
    versions = fields.List(fields.Nested(VersionOut), required=True)


class VersionDetail(VersionOut):
    source = fields.String(required=True)
    definition = fields.Dict(required=True, metadata={"description": "The parsed definition"})
    mermaid = fields.String(required=True, metadata={
        "description": "The flow as a mermaid stateDiagram-v2 (状态图), with case counts"})
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                         metadata={"description": "Cases of this version by state"})


class SourceIn(Schema):
    source = fields.String(required=True, validate=validate.Length(min=1, max=MAX_SOURCE),
                           metadata={"description": "The definition as YAML or JSON text"})
    filename = fields.String(load_default="upload.yaml",
                             validate=validate.Length(min=1, max=255),
                             metadata={"description": "Names the definition in error "
                                                      "messages; *.json is parsed as JSON"})


class ValidOut(Schema):
    valid = fields.Boolean(required=True)
    flow = fields.String(required=True)
    title = fields.String(required=True)
    content_hash = fields.String(required=True)
    states = fields.Integer(required=True)
    transitions = fields.Integer(required=True)


# --------------------------------------------------------------------------- views


@blp.route("")
@large_body
class Flows(MethodView):
    @blp.response(200, FlowOut(many=True))
    def get(self):
        """Every flow (流程) and its versions (版本), drafts included.

        `current_version` is the latest published one (当前版本): new cases start on it."""
        return flows_out(engine().versions())

    @blp.arguments(SourceIn)
    @blp.response(201, UploadOut)
    @blp.alt_response(200, schema=UploadOut,
                      description="Identical content was already stored: nothing created")
    def post(self, body):
        """Upload a definition as a draft version (上传草稿); process owners only.

        Identical content: 200 with the version that holds it and `created: false`.
        An invalid definition: 422 with every problem found (file, path, line)."""
        require(viewer(), OWNER, "uploading a flow definition")
        result = engine().upload(body["source"], body["filename"], by=viewer().person_id)
        out = {**version_out(engine().version(result.flow, result.version)),
               "created": result.created}
        if not result.created:
            return out, 200
        return out, 201, {"Location": f"{blp.url_prefix}/{result.flow}/versions/{result.version}"}


@blp.route("/validate")
@large_body
class Validate(MethodView):
    @blp.arguments(SourceIn)
    @blp.response(200, ValidOut)
    def post(self, body):
        """Check a definition without storing it (校验, dry run).

        200 with its name and size, or 422 with every problem found (file, path, line)."""
        spec = load_definition(body["source"], body["filename"])
        return {"valid": True, "flow": spec.flow, "title": spec.title.zh,
                "content_hash": spec.content_hash, "states": len(spec.states),
                "transitions": len(spec.transitions)}


@blp.route("/<flow>/versions/<int:version>")
class Version(MethodView):
    @blp.response(200, VersionDetail)
    def get(self, flow: str, version: int):
        """One version (版本) of a flow, drafts included.

        Its source, the parsed definition, a mermaid state diagram (状态图) and its cases
        counted by state — the cases you may see."""
        row = engine().version(flow, version, with_source=True)
        spec = engine().spec_of(row.id)
        counts = {name: 0 for name in spec.states} | engine().counts_by_state(row.id,
                                                                              viewer())
        return {**version_out(row), "source": row.source, "definition": _plain(spec.document),
                "mermaid": mermaid(spec, counts, lang()), "counts": counts}


@blp.route("/<flow>/versions/<int:version>/publish")
class Publish(MethodView):
    @blp.response(200, VersionOut)
    def post(self, flow: str, version: int):
        """Publish a version (发布); process owners only.

        New cases start on it from now on; running cases stay on their version.
        Publishing twice changes nothing."""
        require(viewer(), OWNER, "publishing a flow version")
        row = engine().version(flow, version)
        engine().publish_version(row.flow_id, version, by=viewer().person_id)
        return version_out(engine().version(flow, version))


def version_out(row) -> dict[str, Any]:
    return {"flow": row.flow_id, "version": row.version, "status": row.status,
            "content_hash": row.content_hash, "title": row.title, "filename": row.filename,
            "created_at": row.created_at, "published_at": row.published_at}


def flows_out(rows: list[Any]) -> list[dict[str, Any]]:
    """Group version rows (ordered by flow, version) into one entry per flow."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(row.flow_id, {"flow": row.flow_id, "title": row.title,
                                             "current_version": None, "versions": []})
        entry["versions"].append(version_out(row))
        if row.status == PUBLISHED:
            entry["current_version"] = row.version
            entry["title"] = row.title
    return list(out.values())


def _plain(value: Any) -> Any:
    """YAML may hold dates; JSON bodies hold ISO strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
