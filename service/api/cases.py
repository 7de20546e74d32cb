"""Cases (事项): start, list, read with the caller's actions, history, fire an action."""

from __future__ import annotations

import re
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from workflows.messages import msg
from workflows.queries import CaseFilter, CaseRow

from .. import metrics
from ..auth import engine, signed_action, viewer
from .schemas import (
    ActionIn,
    CaseList,
    CaseOut,
    CaseQuery,
    FireOut,
    HistoryOut,
    StartCase,
    TimerOut,
)

blp = Blueprint("cases", __name__, url_prefix="/api/v1/cases",
                description="Cases (事项): one run of a flow for one person and period")
ETAG = re.compile(r'^(?:W/)?"?(\d{1,9})"?$')
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


def case_out(row: CaseRow) -> dict[str, Any]:
    out = {k: getattr(row, k) for k in (
        "id", "flow", "flow_title", "flow_version", "tier", "period_key", "state",
        "state_label", "version", "deadline_at", "overdue", "deadline_uncertain", "claimed_by",
        "created_at", "updated_at", "closed", "data")}
    out["subject"] = {"id": row.subject_id, "name": row.subject_name}
    out["unit"] = {"id": row.unit_id, "name": row.unit_name}
    out["actions"] = [a.__dict__ for a in row.actions]
    return out


def case_filter(args: dict[str, Any]) -> CaseFilter:
    return CaseFilter(flow=args.get("flow"), state=args.get("state"),
                      unit_id=args.get("unit_id"), subject_id=args.get("subject_id"),
                      period=args.get("period"), overdue=args.get("overdue"),
                      text=args.get("q"), stuck=args.get("stuck"), sort=args["sort"],
                      page=args["page"],
                      per_page=args["per_page"])


def lang() -> str:
    return request.accept_languages.best_match(["zh", "en"]) or "zh"


def if_match() -> int:
    """The version the client last read: If-Match is required on every change (428)."""
    raw = request.headers.get("If-Match")
    if raw is None:
        abort(428, message=msg("request.if_match_required"))
    found = ETAG.match(raw.strip())
    if not found:
        abort(400, message=msg("request.if_match_invalid", raw=raw))
    return int(found.group(1))


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        abort(400, message=msg("request.idempotency_key_invalid"))
    return key


@blp.route("")
class Cases(MethodView):
    @blp.arguments(CaseQuery, location="query")
    @blp.response(200, CaseList)
    def get(self, args):
        """Cases the caller may see, filtered, sorted and paginated (with the total)."""
        rows, total = engine().list_cases(viewer(), case_filter(args), lang())
        return {"items": [case_out(r) for r in rows], "total": total,
                "page": args["page"], "per_page": args["per_page"]}

    @blp.arguments(StartCase)
    @blp.response(201, CaseOut)
    def post(self, body):
        """Start a case: by its subject, a leader above them, a process owner or an admin."""
        case = signed_action(lambda token, now: engine().start_signed(
            token, now, body["flow"], body["subject_id"], period_key=body.get("period_key"),
            data=body["data"], version=body.get("version"), comment=body.get("comment")))
        row = engine().case_for(viewer(), case.id, lang())
        return case_out(row), 201, {"ETag": f'"{row.version}"'}


@blp.route("/<int:case_id>")
class CaseDetail(MethodView):
    @blp.response(200, CaseOut)
    def get(self, case_id: int):
        """A case, with `actions`: what the caller may do now and what each needs.

        The ETag is the case version: send it back as If-Match when acting.
        """
        row = engine().case_for(viewer(), case_id, lang())
        return case_out(row), 200, {"ETag": f'"{row.version}"'}


@blp.route("/<int:case_id>/history")
class CaseHistory(MethodView):
    @blp.response(200, HistoryOut(many=True))
    def get(self, case_id: int):
        """Every step of the case: who, when, what, why (hash-chained)."""
        return engine().history_for(viewer(), case_id)


@blp.route("/<int:case_id>/timers")
class CaseTimers(MethodView):
    @blp.response(200, TimerOut(many=True))
    def get(self, case_id: int):
        """The case's timers (计时): deadlines, reminders, automatic steps; newest first.

        A failed automatic step keeps its last error here."""
        return engine().timers_for(viewer(), case_id)


@blp.route("/<int:case_id>/actions/<trigger>")
class CaseAction(MethodView):
    @blp.arguments(ActionIn)
    @blp.response(200, FireOut)
    @blp.doc(parameters=[
        {"in": "header", "name": "If-Match", "required": True, "schema": {"type": "string"},
         "description": "The case version last read (its ETag)."},
        {"in": "header", "name": "Idempotency-Key", "schema": {"type": "string"},
         "description": "Sending the same request again with the same key returns the "
                        "first result (`replayed: true`). The key is bound to the person "
                        "and the request: another body or comment, or another user, gets "
                        "422 idempotency_mismatch and nothing is done."}])
    def post(self, body, case_id: int, trigger: str):
        """Fire an action. 409 with the current version when If-Match is stale."""
        expected, key = if_match(), idempotency_key()
        result = signed_action(lambda token, now: engine().fire_signed(
            token, now, case_id, trigger, data=body["data"], comment=body.get("comment"),
            expected_version=expected, idempotency_key=key))
        if not result.replayed:
            metrics.count_action(result.flow, trigger)
        return result.__dict__, 200, {"ETag": f'"{result.version}"'}
