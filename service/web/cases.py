"""The case page (事项): header, the record so far, the forms of the actions the viewer may
take now, claim/release/delegate for approvers, the history as a timeline, and the timers.

An action form posts to `Engine.fire` exactly as `POST /api/v1/cases/{id}/actions/{trigger}`
does: the data goes through `ActionIn` and the transition's marshmallow schema, the page's
case version is the If-Match, and a key made for the form is the Idempotency-Key (a second
click changes nothing). Refusals re-render the page with the message beside the field or
above the form, and what was typed is kept.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from workflows.engine import CLAIM, DELEGATE, RELEASE, START
from workflows.errors import (
    ActionNotAllowed,
    CivflowError,
    Conflict,
    FieldErrors,
    Forbidden,
    NotFound,
    RuleViolation,
)
from workflows.messages import msg
from workflows.provenance import MIGRATE
from workflows.queries import CaseRow
from workflows.spec import SYSTEM, FieldSpec, FlowSpec
from workflows.timers import auto_step

from .. import auth, metrics
from ..api.schemas import ActionIn
from ..errors import status_of
from . import bp, forms
from .i18n import label, lang, text

TIMER_KINDS = {"deadline": _l("Deadline"), "reminder": _l("Reminder"),
               "auto": _l("Automatic step"), "repeat": _l("Repeating reminder")}
# The engine's fixed field messages (workflows.forms), shown in the page language.
LIVE_TIMERS = ("pending", "claimed", "failed")  # the ones still to come (or stuck)
TIMER_STATUSES = {"pending": _l("waiting"), "claimed": _l("running"), "done": _l("done"),
                  "dropped": _l("dropped (the case moved on)"), "failed": _l("failed")}


@dataclass
class Failure:
    """A refused form, shown again: which one, its errors by input, what was typed."""

    trigger: str
    message: str | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    comment: str = ""


# --------------------------------------------------------------------------- reading


def _value_text(f: FieldSpec | None, value: Any) -> str:
    if isinstance(value, bool):
        return _("Yes") if value else _("No")
    if f is not None and f.type == "person":
        return f"#{value}"
    return "" if value is None else str(value)


def record_items(spec: FlowSpec, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The case's data in the definition's order, with labels; lists as rows of cells."""
    out = []
    for name, f in spec.fields.items():
        value = data.get(name)
        if value in (None, "", []):
            continue
        item: dict[str, Any] = {"name": name, "label": label(f.label, name), "list": False}
        if f.type == "list":
            cols = list(f.record) or ([f.item] if f.item else [])
            item.update(list=True, columns=[label(c.label, c.name) for c in f.record] or
                        [label(f.label, name)],
                        rows=[[_value_text(c, row.get(c.name)) for c in f.record]
                              if isinstance(row, dict) else [_value_text(cols[0], row)]
                              for row in value])
        else:
            item["value"] = _value_text(f, value)
        out.append(item)
    return out


def timeline(spec: FlowSpec, history: list[dict[str, Any]], names: dict[int, str]
             ) -> list[dict[str, Any]]:
    """History records as the timeline shows them: who, when, what, comment, data."""
    out = []
    for h in history:
        trigger = h["trigger"]
        if trigger == START:
            what = _("Started")
        elif trigger == CLAIM:
            what = _("Claimed the step")
        elif trigger == RELEASE:
            what = _("Released the step")
        elif trigger == DELEGATE:
            what = _("Delegated the step to %(name)s",
                     name=names.get(h["data"].get("to"), f"#{h['data'].get('to')}"))
        elif trigger == MIGRATE:  # the versions are in the comment; the data is carried over
            what = _("Moved to a newer version of the flow")
        else:
            t = spec.transition(trigger, h["from"]) if h["from"] else None
            what = label(t.label, trigger) if t else trigger
        moved = h["from"] is not None and h["from"] != h["to"]
        data = [] if trigger in (DELEGATE, MIGRATE) else [
            {"label": label(spec.fields[k].label, k) if k in spec.fields else k,
             "value": (_("%(n)s row(s)", n=len(v)) if isinstance(v, list)
                       else _value_text(spec.fields.get(k), v))}
            for k, v in (h["data"] or {}).items()]
        out.append({
            "seq": h["seq"], "at": h["at"], "what": what,
            "who": (_("System") if h["actor_id"] is None
                    else names.get(h["actor_id"], f"#{h['actor_id']}")),
            "role": h["actor_role"],
            "from": label(spec.states[h["from"]].label) if moved and h["from"] in spec.states
            else None,
            "to": label(spec.states[h["to"]].label) if h["to"] in spec.states else h["to"],
            "moved": moved or trigger == START, "comment": h["comment"], "data": data})
    return list(reversed(out))  # newest first


def _defaults(spec: FlowSpec, names: list[str], data: dict[str, Any],
              appends: tuple[str, ...]) -> dict[str, Any]:
    """Fields already in the case fill the form again (a returned summary is edited, not
    rewritten); appended lists (周记实) start empty, since what is sent is added."""
    out = {}
    for n in names:
        if n in appends or n not in data:
            continue
        out[n] = data[n]
    return out


def arrived_with(spec: FlowSpec, row: CaseRow) -> list[dict[str, str]]:
    """What the step before set, as the action forms recall it: the fields required by the
    transitions that lead into the current step (结果反馈 recalls the 考核等次 it acknowledges)."""
    names: dict[str, None] = {}
    for t in spec.transitions:
        if t.dest == row.state and row.state not in t.sources:
            names.update(dict.fromkeys(t.requires))
    return [{"name": n, "label": label(spec.fields[n].label, n),
             "value": _value_text(spec.fields[n], row.data[n])}
            for n in names if n in spec.fields and spec.fields[n].type != "list"
            and row.data.get(n) not in (None, "")]


def action_forms(spec: FlowSpec, row: CaseRow, failed: Failure | None) -> list[dict[str, Any]]:
    out = []
    recalled = arrived_with(spec, row)
    for a in row.actions:
        t = spec.transition(a.trigger, row.state)
        if t is None:
            continue
        ws = forms.widgets(spec, t)
        mine = failed is not None and failed.trigger == a.trigger
        errors = failed.errors if mine else {}
        values = failed.values if mine else _defaults(
            spec, [*t.requires, *t.accepts], row.data, t.appends)
        comment = forms.comment_widget(t)
        prefix = f"a-{a.trigger}"
        edited = {*t.requires, *t.accepts}
        out.append({
            "recalled": [r for r in recalled if r["name"] not in edited],
            "trigger": a.trigger, "label": a.label, "to": label(spec.states[t.dest].label),
            "widgets": ws, "comment": comment, "entered": values, "errors": errors,
            "comment_value": failed.comment if mine else "",
            "message": failed.message if mine else None,
            "summary": forms.summary(prefix, [*ws, comment], errors), "prefix": prefix,
            "key": uuid.uuid4().hex, "as_role": a.as_role,
            "danger": t.comment == "required",
            "stays": t.dest == row.state})
    return out


def render_case(case_id: int, failed: Failure | None = None, status: int = 200,
                notice: str | None = None):
    eng, viewer = auth.engine(), auth.viewer()
    row = eng.case_for(viewer, case_id, lang())
    spec = eng.spec_of(row.version_id)
    history = eng.history_for(viewer, case_id)
    timers = eng.timers_for(viewer, case_id)
    ids = [h["actor_id"] for h in history] + [row.claimed_by, row.subject_id]
    ids += [h["data"].get("to") for h in history if h["trigger"] == DELEGATE]
    names = auth.door().org.person_names(ids=ids)
    me = viewer.person_id
    approving = [a for a in row.actions if a.as_role not in ("subject", SYSTEM)]
    candidates = []
    if approving and not row.closed and (row.claimed_by in (None, me)):
        steps = spec.transitions_from(row.state)
        candidates = auth.door().reads.delegates(case_row=row, spec=spec, steps=steps,
                                                 exclude=[me])
    page = {
        "row": row, "spec": spec, "flow_title": label(spec.title, row.flow_title),
        "subject": names.get(row.subject_id, row.subject_name),
        "record": record_items(spec, row.data), "forms": action_forms(spec, row, failed),
        "timeline": timeline(spec, history, names),
        "timers": [{"kind": str(TIMER_KINDS.get(t.kind, t.kind)), "due_at": t.due_at,
                    "status": str(TIMER_STATUSES.get(t.status, t.status)),
                    "action": (label(next((x.label for x in spec.transitions
                                           if x.trigger == t.action), None), t.action or "")
                               if t.action else ""),
                    "error": t.last_error} for t in timers if t.status in LIVE_TIMERS],
        "auto": auto_step(spec, row.state, timers, lang()) if row.deadline_at is None
        else None,
        "approving": bool(approving), "claimed_by": row.claimed_by,
        "claimed_name": names.get(row.claimed_by) if row.claimed_by else None,
        "claimed_by_me": row.claimed_by == me, "candidates": candidates,
        "delegate_failed": failed if failed and failed.trigger == DELEGATE else None,
        "is_subject": row.subject_id == me, "notice": notice,
    }
    return render_template("case.html", **page), status


@bp.get("/cases/<int:case_id>")
def case(case_id: int):
    return render_case(case_id)


# --------------------------------------------------------------------------- acting


def form_version(form: MultiDict) -> int:
    """The case version the page was drawn from: the page's If-Match."""
    raw = form.get("version", "")
    if not raw.isdigit() or len(raw) > 9:
        raise FieldErrors({"version": [msg("request.page_version_missing")]})
    return int(raw)


def refusal(exc: CivflowError, trigger: str, parsed: forms.Parsed | None = None,
            comment: str = "") -> tuple[Failure, int]:
    """An engine refusal as a re-rendered form: field errors beside their inputs, a rule's
    field beside its input too, anything else above the form."""
    values = forms.values_for_page(parsed) if parsed else {}
    failed = Failure(trigger, values=values, comment=comment)
    if isinstance(exc, FieldErrors):
        errors = parsed.page_errors(exc.errors) if parsed else dict(exc.errors)
        failed.errors = {path: [text(m) for m in messages]
                         for path, messages in errors.items()}
        failed.message = _("The form has errors; nothing was changed.")
    elif isinstance(exc, RuleViolation) and exc.details.get("field") and \
            exc.details.get("case_id") is not None:
        failed.errors = {exc.details["field"]: [text(exc)]}
        failed.message = _("The form has errors; nothing was changed.")
    elif isinstance(exc, Conflict):
        failed.message = _("Someone changed this case while you were on the page; it is "
                           "shown as it is now. Check it and send the form again.")
    else:
        failed.message = text(exc)
    return failed, status_of(exc)


@bp.post("/cases/<int:case_id>/actions/<trigger>")
def act(case_id: int, trigger: str):
    eng, viewer = auth.engine(), auth.viewer()
    row = eng.case_for(viewer, case_id, lang())
    spec = eng.spec_of(row.version_id)
    # A double click arrives after the case moved on: read the form by the trigger's fields
    # all the same, so that it is the same request and its Idempotency-Key replays it.
    t = spec.transition(trigger, row.state) or next(
        (x for x in spec.transitions if x.trigger == trigger), None)
    parsed = forms.parse(spec, t, request.form)
    comment = (request.form.get("comment") or "").replace("\r\n", "\n")
    try:
        try:
            body = ActionIn().load({"data": parsed.data, "comment": comment or None})
        except ValidationError as exc:
            raise FieldErrors({k: v for k, v in exc.messages.items()}) from None
        result = eng.fire(case_id, trigger, auth.actor(), data=body["data"],
                          comment=body.get("comment"), expected_version=form_version(request.form),
                          idempotency_key=request.form.get("idempotency_key") or None,
                          viewer=viewer)
    except (FieldErrors, RuleViolation, Conflict, Forbidden, ActionNotAllowed) as exc:
        failed, status = refusal(exc, trigger, parsed, comment)
        return render_case(case_id, failed, status)
    if not result.replayed:
        metrics.count_action(result.flow, trigger)
    done = label(t.label, trigger) if t else trigger
    dest = label(spec.states[result.to_state].label)
    flash(_("%(action)s: done. The case is now at “%(state)s”.", action=done, state=dest),
          "success")
    try:
        eng.case_for(viewer, case_id)
    except NotFound:  # acted as a delegate: the case is no longer theirs to see
        return redirect(url_for("web.home"))
    return redirect(url_for("web.case", case_id=case_id))
