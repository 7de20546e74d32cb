"""Starting a case by hand (发起事项), for process owners and admins: the annual assessment
for a unit and a year (one case per active person of the unit and its sub-units), a
promotion or a dispatch for one person, any published flow for a person.

Every case goes through `Engine.start_case_for` (the checks of `POST /api/v1/cases`, which
signs in within the same transaction: `Engine.start_signed`), after the API's own `StartCase`
schema: who may start for whom, the period key the flow's period
needs, one case per person and period, the start data the definition accepts (`start:
{accepts}`, none in the shipped flows) — the page checks nothing of its own. For one person a
refusal comes back on the form; for a unit, each person's outcome is listed.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from marshmallow import ValidationError

from workflows.errors import CivflowError, DuplicateCase, FieldErrors, Forbidden, NotFound
from workflows.messages import from_marshmallow
from workflows.periods import EXAMPLES
from workflows.spec import FlowSpec, Label, TransitionSpec

from .. import auth, metrics
from ..api.schemas import StartCase
from ..errors import status_of
from . import bp, forms
from .i18n import label, text
from .owner import require_owner_pages
from .queue import _flows, _units

UNIT_MAX = 500  # people started in one request, as many as a bulk approval takes


def start_transition(spec: FlowSpec) -> TransitionSpec:
    """The start as a transition, so the action forms' widgets and parser serve it: the
    fields `start: {accepts}` names, from the starters `start: {by}` names."""
    return TransitionSpec(trigger="start", label=Label(zh="发起", en="Start"), sources=(),
                          dest=spec.initial, by=spec.start.by, accepts=spec.start.accepts)


def _message(exc: CivflowError) -> str:
    """A refusal in the page language where the page knows the case, else the engine's."""
    if isinstance(exc, DuplicateCase):
        return _("There is already a case of this flow for this person and period.")
    return text(exc)


def render_start(flow: str | None, values: dict[str, Any] | None = None,
                 errors: dict[str, list[str]] | None = None, message: str | None = None,
                 status: int = 200):
    flows = _flows()
    spec = dict(flows).get(flow) if flow else None
    ws = forms.widgets(spec, start_transition(spec)) if spec else []
    errors = errors or {}
    own = {"flow": ("start-flow", _("Flow")), "period": ("start-period", _("Period")),
           "person": ("start-person", _("Person's code")),
           "unit_id": ("start-unit", _("Unit"))}
    summary = [(anchor, what, errors[k]) for k, (anchor, what) in own.items() if k in errors]
    summary += forms.summary("start", ws, {k: v for k, v in errors.items() if k not in own})
    return render_template(
        "owner/start.html", flows=[(fid, label(s.title, fid), s.period) for fid, s in flows],
        flow=flow if spec else None, spec=spec,
        flow_title=label(spec.title, flow) if spec else "",
        period=spec.period if spec else None,
        example=EXAMPLES.get(spec.period, "") if spec else "", units=_units(auth.viewer()),
        widgets=ws, values=values or {}, errors=errors, message=message,
        summary=summary), status


@bp.get("/owner/start")
def start_case():
    require_owner_pages(auth.viewer())
    flow = (request.args.get("flow") or "").strip() or None
    if flow and flow not in dict(_flows()):
        return render_start(None, errors={"flow": [_("Choose one of the published flows.")]},
                            status=422)
    return render_start(flow)


def _subjects(values: dict[str, str], spec: FlowSpec) -> list[dict[str, Any]]:
    """Who the form names: one person by code, or every active person of a unit."""
    code, unit = values.get("person", ""), values.get("unit_id", "")
    if bool(code) == bool(unit):
        raise FieldErrors({"person": [_("Give a person's code, or choose a unit — one of "
                                        "the two.")]})
    if code:
        found, _n = auth.door().org.people(filters={"q": code, "page": 1, "per_page": 50})
        exact = [p for p in found if p["code"] == code]
        if not exact:
            raise FieldErrors({"person": [_("Nobody has the code %(code)s.", code=code)]})
        return exact
    if spec.period == "none":
        raise FieldErrors({"unit_id": [_("This flow starts for one person at a time: give a "
                                         "person's code.")]})
    if not unit.isdigit() or len(unit) > 9:
        raise FieldErrors({"unit_id": [_("Choose a unit.")]})
    people, total = auth.door().org.people(filters={"unit_id": int(unit), "active": True,
                                                  "page": 1, "per_page": UNIT_MAX})
    if total > UNIT_MAX:
        raise FieldErrors({"unit_id": [_("%(n)s people: at most %(max)s at a time; choose a "
                                         "smaller unit.", n=total, max=UNIT_MAX)]})
    if not people:
        raise FieldErrors({"unit_id": [_("Nobody active works in this unit.")]})
    return people


@bp.post("/owner/start")
def start_case_post():
    """Parse, then `Engine.start_case_for` per person (the API's `POST /api/v1/cases`)."""
    eng, viewer = auth.engine(), auth.viewer()
    require_owner_pages(viewer)
    flow = (request.form.get("flow") or "").strip()
    spec = dict(_flows()).get(flow)
    if spec is None:
        return render_start(None, errors={"flow": [_("Choose one of the published flows.")]},
                            status=422)
    given = {k: (request.form.get(k) or "").strip() for k in ("person", "unit_id", "period")}
    comment = (request.form.get("comment") or "").replace("\r\n", "\n")
    parsed = forms.parse(spec, start_transition(spec), request.form)
    page_values = {**given, **forms.values_for_page(parsed), "comment": comment}
    try:
        subjects = _subjects(given, spec)
        bodies = []
        for p in subjects:
            try:
                bodies.append((p, StartCase().load({
                    "flow": flow, "subject_id": p["id"], "data": parsed.data,
                    **({"period_key": given["period"]} if given["period"] else {}),
                    **({"comment": comment} if comment else {})})))
            except ValidationError as exc:
                msgs = {("period" if k == "period_key" else k): v
                        for k, v in exc.messages.items()}
                raise FieldErrors({k: [from_marshmallow(m) for m in v] if isinstance(v, list)
                                   else [from_marshmallow(str(v))]
                                   for k, v in msgs.items()}) from None
        if len(bodies) == 1:
            p, body = bodies[0]
            case = eng.start_case_for(viewer, flow, p["id"], period_key=body.get("period_key"),
                                      data=body["data"], comment=body.get("comment"))
            metrics.count_action(flow, "start")
            flash(_("Started: %(flow)s for %(name)s.", flow=label(spec.title, flow),
                    name=p["name"]), "success")
            return redirect(url_for("web.case", case_id=case.id))
    except (FieldErrors, Forbidden, NotFound, DuplicateCase, CivflowError) as exc:
        if isinstance(exc, FieldErrors):
            errors = {("period" if k == "period_key" else k):
                      [text(m) for m in v] for k, v in exc.errors.items()}
            return render_start(flow, page_values, errors, status=status_of(exc))
        return render_start(flow, page_values, message=_message(exc), status=status_of(exc))
    # A unit: each person on their own, as the API would take them one by one.
    started, refused = [], []
    for p, body in bodies:
        try:
            case = eng.start_case_for(viewer, flow, p["id"], period_key=body.get("period_key"),
                                      data=body["data"], comment=body.get("comment"))
        except CivflowError as exc:
            refused.append({"name": p["name"], "code": p["code"], "message": _message(exc)})
            continue
        started.append({"id": case.id, "name": p["name"], "code": p["code"]})
    if started:
        metrics.count_action(flow, "start", n=len(started))
    return render_template("owner/start_done.html", started=started, refused=refused,
                           flow=flow, flow_title=label(spec.title, flow),
                           period=given["period"])
