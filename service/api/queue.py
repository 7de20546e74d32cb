"""The work queue (待办): what the caller can act on now, claims, delegation, bulk actions.

- `GET /api/v1/queue` lists the open cases whose current step the caller may act on, each
  with its `actions`, **due first** (earliest deadline first, cases without a deadline last).
  It takes the filters and paging of `/api/v1/cases`; `sort` is accepted but ignored.
- `claim` (认领) reserves a step for the caller, `release` gives it back to every holder of
  the role, `delegate` (转办) hands it to another holder, recorded in the case history.
  Each changes the case version, so each needs If-Match, like an action.
- `bulk` (批量审定) fires one trigger over many cases: per-case refusals are reported item by
  item, while a rule over the whole batch (a quota) refuses all of it with 422.
"""

from __future__ import annotations

from collections import Counter

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate

from workflows.messages import msg

from .. import metrics
from ..auth import engine, signed_action, viewer
from ..errors import ProblemSchema, body_of
from .cases import case_filter, case_out, if_match, lang
from .schemas import MAX_ID, CaseList, CaseQuery, FireOut

blp = Blueprint("queue", __name__, url_prefix="/api/v1/queue",
                description="Work queue (待办): claim, release, delegate, bulk actions")
BULK_MAX = 500
IF_MATCH_DOC = [{"in": "header", "name": "If-Match", "required": True,
                 "schema": {"type": "string"},
                 "description": "The case version last read (its ETag)."}]


def _unique(ids: list[int]) -> None:
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise ValidationError(msg("request.case_ids_repeated", ids=repeated))


class DelegateIn(Schema):
    to = fields.Integer(required=True, validate=validate.Range(min=1, max=MAX_ID),
                        metadata={"description": "The person who takes over the step"})
    comment = fields.String(validate=validate.Length(max=4000), allow_none=True)


class BulkIn(Schema):
    trigger = fields.String(required=True, validate=validate.Length(min=1, max=64))
    case_ids = fields.List(fields.Integer(validate=validate.Range(min=1, max=MAX_ID)),
                           required=True, validate=[validate.Length(min=1, max=BULK_MAX), _unique])
    data = fields.Dict(load_default=dict)
    comment = fields.String(validate=validate.Length(max=4000), allow_none=True)


class BulkRefused(ProblemSchema):
    """One case the bulk action left alone, and why (the error shape, with its case id)."""

    case_id = fields.Integer(required=True)
    # ProblemSchema documents errors rendered elsewhere; dumping needs the attribute too.
    fields_ = fields.Dict(data_key="fields", attribute="fields", keys=fields.String(),
                          values=fields.List(fields.String()))


class BulkCounts(Schema):
    done = fields.Integer(required=True)
    refused = fields.Integer(required=True)


class BulkOut(Schema):
    done = fields.List(fields.Nested(FireOut), required=True)
    refused = fields.List(fields.Nested(BulkRefused), required=True)
    counts = fields.Nested(BulkCounts, required=True)


def _fired(result):
    metrics.count_action(result.flow, result.trigger)
    return result.__dict__, 200, {"ETag": f'"{result.version}"'}


@blp.route("")
class Queue(MethodView):
    @blp.arguments(CaseQuery, location="query")
    @blp.response(200, CaseList)
    def get(self, args):
        """What the caller can act on now (待办), due first, each with its `actions`.

        Filters and paging as for `/api/v1/cases`; `sort` is ignored: the queue is always
        ordered by deadline (earliest first, none last), then by case id, and `stuck` is
        ignored: a stuck case is in nobody's queue. Steps claimed by
        someone else are left out; the caller's own cases appear only for their own steps.
        """
        rows, total = engine().queue(viewer(), case_filter(args), lang())
        return {"items": [case_out(r) for r in rows], "total": total,
                "page": args["page"], "per_page": args["per_page"]}


@blp.route("/<int:case_id>/claim")
class Claim(MethodView):
    @blp.response(200, FireOut)
    @blp.doc(parameters=IF_MATCH_DOC)
    def post(self, case_id: int):
        """Claim the current step (认领): others holding the role no longer see or act on it."""
        expected = if_match()
        return _fired(signed_action(lambda token, now: engine().claim_signed(
            token, now, case_id, expected)))


@blp.route("/<int:case_id>/release")
class Release(MethodView):
    @blp.response(200, FireOut)
    @blp.doc(parameters=IF_MATCH_DOC)
    def post(self, case_id: int):
        """Release a step you claimed: every holder of the role sees it again."""
        expected = if_match()
        return _fired(signed_action(lambda token, now: engine().release_signed(
            token, now, case_id, expected)))


@blp.route("/<int:case_id>/delegate")
class Delegate(MethodView):
    @blp.arguments(DelegateIn)
    @blp.response(200, FireOut)
    @blp.doc(parameters=IF_MATCH_DOC)
    def post(self, body, case_id: int):
        """Hand the current step to another person who can act on it (转办).

        The step becomes claimed by them; the history records `delegate` with
        `{"to": person id, "as": their role}` and the comment. 403 (rule `role`) when the
        person cannot act on the step.
        """
        expected = if_match()
        return _fired(signed_action(lambda token, now: engine().delegate_signed(
            token, now, case_id, body["to"], body.get("comment"), expected)))


@blp.route("/bulk")
class Bulk(MethodView):
    @blp.arguments(BulkIn)
    @blp.response(200, BulkOut)
    def post(self, body):
        """Fire one trigger over up to 500 cases (批量审定), with the same data and comment.

        Each case is checked on its own; the ones that fail (not visible, wrong state, role,
        data) are listed in `refused` with the error they would give alone, and the rest
        move. Rules over the batch (a quota) judge all the moving cases together: a refusal
        there refuses the whole batch with 422 and `details` (pool, size, limit, used,
        asked), and nothing moves. No If-Match: the batch is judged on the current versions.
        """
        ids: list[int] = body["case_ids"]
        result = signed_action(lambda token, now: engine().bulk_signed(
            token, now, ids, body["trigger"], data=body["data"], comment=body.get("comment")))
        refused = result.refused
        order = {cid: i for i, cid in enumerate(ids)}
        done = sorted(result.done, key=lambda r: order[r.case_id])
        for (flow, trigger), n in Counter((r.flow, r.trigger) for r in done).items():
            metrics.count_action(flow, trigger, n=n)
        return {"done": [r.__dict__ for r in done],
                "refused": [{**body_of(refused[cid]), "case_id": cid}
                            for cid in sorted(refused, key=order.__getitem__)],
                "counts": {"done": len(done), "refused": len(refused)}}
