"""The approvers' pages (待办队列): the queue with filters and due dates, claim / release /
delegate, and bulk approval (批量审定) with a quota meter per pool.

The same engine calls and schemas as `service/api/queue.py`: the filters are `CaseQuery`,
delegation `DelegateIn`, a bulk request `BulkIn`; claims carry the page's case version as
their If-Match. The quota meter's figures come from the flow's own quota rule
(`ledger.quota_of`: `quota`, or the annual `excellent_quota`) through `readouts.pool_usage`,
the count the rule itself makes (`workflows.quotas`), so the page refuses, before sending,
exactly what `Engine.fire_bulk` would refuse — and the server still judges.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from workflows import ledger
from workflows.access import Viewer
from workflows.errors import (
    ActionNotAllowed,
    Conflict,
    FieldErrors,
    Forbidden,
    NotFound,
    RuleViolation,
)
from workflows.messages import msg
from workflows.queries import CaseFilter, CaseRow
from workflows.spec import SYSTEM, FlowSpec

from .. import auth, metrics
from ..api.queue import BULK_MAX, BulkIn, DelegateIn
from ..api.schemas import CaseQuery
from ..errors import status_of
from . import bp, forms, wants_fragment
from .cases import Failure, form_version, refusal, render_case
from .i18n import label, lang, text
from .nav import approvers

PER_PAGE = 20
TIER_LABELS = {"chief": _l("Chief"), "deputy": _l("Deputy"), "staff": _l("Staff")}  # 正职 副职 一般干部
ROUNDINGS = {"floor": _l("down"), "ceil": _l("up"), "round": _l("to the nearest")}


def require_approver(viewer: Viewer) -> None:
    if not approvers(viewer):
        raise Forbidden(_("The approval queue is for people who hold a role (leaders, "
                          "committee members, groups). Your own to-dos are on your home page."),
                        rule="approver")


def tier_label(tier: str | None) -> str:
    return str(TIER_LABELS[tier]) if tier in TIER_LABELS else (tier or "")


def _flows() -> list[tuple[str, FlowSpec]]:
    """The published flows (latest version each), by id."""
    eng = auth.engine()
    out = []
    for flow in sorted({v.flow_id for v in eng.versions() if v.status == "published"}):
        out.append((flow, eng.flow(flow).spec))
    return out


def _units(viewer: Viewer) -> list[Any]:
    units = auth.door().org.units()
    if viewer.sees_all:
        return units
    paths = viewer.paths(*{r for r, _u, _p in viewer.assignments})
    return [u for u in units if any(u.path.startswith(p) for p in paths)]


# The queue's filters (筛选), carried as they are to the bulk page and back.
FILTER_KEYS = ("flow", "state", "unit_id", "period", "tier", "overdue", "q")
BULK_PREFIX = "f."  # the filters as hidden fields of the bulk form, apart from its data


def queue_filters(args: MultiDict | dict[str, str]
                  ) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The query string through `CaseQuery` (blank choices mean "any"); the tier against
    the tiers there are. A filter that does not parse is dropped and named in the errors."""
    given = {k: v.strip() for k, v in args.items()
             if k in (*FILTER_KEYS, "page") and isinstance(v, str) and v.strip()}
    tier = given.pop("tier", None)
    state = given.pop("state", None)  # a name or `flow:state` pairs: longer than CaseQuery's
    errors: dict[str, list[str]] = {}
    if state is not None and len(state) > 1000:
        errors["state"] = [_("Choose one of the steps.")]
        state = None
    if tier is not None and tier not in TIER_LABELS:
        errors["tier"] = [_("Choose one of the tiers.")]
        tier = None
    try:
        loaded = CaseQuery().load(given)
    except ValidationError as exc:
        errors.update({k: v for k, v in exc.messages.items()})
        loaded = CaseQuery().load({k: v for k, v in given.items() if k not in errors})
    if tier:
        loaded["tier"] = tier
    if state:
        loaded["state"] = state
    return loaded, errors


def case_filter(args: dict[str, Any], viewer: Viewer, **over: Any) -> CaseFilter:
    """The queue's `CaseFilter`: the viewer's own cases are left out — they are on the home
    page (我的待办), and nobody approves their own case."""
    state, steps = steps_of(args["state"]) if args.get("state") else (None, None)
    fields = dict(flow=args.get("flow"), state=state, steps=steps,
                  unit_id=args.get("unit_id"), period=args.get("period"),
                  tier=args.get("tier"), overdue=args.get("overdue"), text=args.get("q"),
                  not_subject=viewer.person_id, page=args.get("page", 1), per_page=PER_PAGE)
    return CaseFilter(**{**fields, **over})


def carried(args: dict[str, Any]) -> dict[str, str]:
    """The filters that parsed, as query-string values (for links and hidden fields)."""
    out = {}
    for k in FILTER_KEYS:
        v = args.get(k)
        if v is None or v == "":
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def state_options(flows: list[tuple[str, FlowSpec]]) -> list[tuple[str, str]]:
    """The 环节 filter: one entry per label (审定 once, though two flows have it). Its value
    is the state's name when that label is the whole of the name's use, else the flows'
    steps it stands for, `flow:state` joined by commas (`steps_of` reads both)."""
    by_label: dict[str, list[tuple[str, str]]] = {}
    by_name: dict[str, set[str]] = {}
    for fid, spec in flows:
        for st in spec.states.values():
            if not st.final:
                by_label.setdefault(label(st.label, st.name), []).append((fid, st.name))
                by_name.setdefault(st.name, set()).add(label(st.label, st.name))
    out = []
    for shown, pairs in by_label.items():
        names = {n for _f, n in pairs}
        if len(names) == 1 and by_name[next(iter(names))] == {shown}:
            out.append((next(iter(names)), shown))
        else:
            out.append((",".join(f"{f}:{n}" for f, n in pairs), shown))
    return out


def steps_of(value: str) -> tuple[str | None, tuple[tuple[str, str], ...] | None]:
    """The 环节 filter's value: a state name, or `flow:state` pairs (`state_options`)."""
    if ":" not in value:
        return value, None
    pairs = tuple(tuple(p.split(":", 1)) for p in value.split(",") if p.count(":") == 1)
    return None, pairs or (("", ""),)


def filter_chips(args: dict[str, Any], flows: list[tuple[str, FlowSpec]],
                 units: list[Any]) -> list[dict[str, str]]:
    """The filters in force, in words (the bulk page shows them as chips)."""
    titles = {fid: label(spec.title, fid) for fid, spec in flows}
    states = dict(state_options(flows))
    unit_names = {u.id: u.name for u in units}
    out = []
    for key, name in (("flow", _("Flow")), ("state", _("Step")), ("unit_id", _("Unit")),
                      ("period", _("Period")), ("tier", _("Tier")),
                      ("overdue", _("Overdue")), ("q", _("Name or code"))):
        v = args.get(key)
        if v is None or v == "":
            continue
        if key == "flow":
            text = titles.get(v, v)
        elif key == "state":
            text = states.get(v, v)
        elif key == "unit_id":
            text = unit_names.get(v, f"#{v}")
        elif key == "tier":
            text = tier_label(v)
        elif key == "overdue":
            text = _("Overdue only") if v else _("On time only")
        else:
            text = str(v)
        out.append({"key": key, "name": name, "text": text})
    return out


def queue_row(row: CaseRow, me: int) -> dict[str, Any]:
    approving = [a for a in row.actions if a.as_role not in ("subject", SYSTEM)]
    return {"row": row, "actions": row.actions, "approving": bool(approving),
            "claimed_by_me": row.claimed_by == me, "tier": tier_label(row.tier)}


def bulk_candidates(f: CaseFilter) -> tuple[list[CaseRow], int]:
    """Every queued case the filter keeps (up to the bulk maximum), not one page of them,
    and how many it keeps in all: the queue's bulk buttons count these, and the bulk page
    lists them (and says so when the maximum cut the list)."""
    return auth.engine().queue(auth.viewer(), replace(f, page=1, per_page=BULK_MAX), lang())


def _approving(action: Any) -> bool:
    return action.as_role not in ("subject", SYSTEM)


@bp.get("/queue")
def queue():
    eng, viewer = auth.engine(), auth.viewer()
    require_approver(viewer)
    args, errors = queue_filters(request.args)
    f = case_filter(args, viewer)
    rows, total = eng.queue(viewer, f, lang())
    flows = _flows()
    # Bulk: one link per (flow, state, action) an approver can take on what is filtered —
    # every filtered case, not only this page's, so the bulk page lists as many.
    bulk = Counter((r.flow, r.state, r.state_label, a.trigger, a.label)
                   for r in bulk_candidates(f)[0] for a in r.actions if _approving(a))
    pages = max(1, -(-total // PER_PAGE))
    query = carried(args)
    return render_template(
        "queue.html", rows=[queue_row(r, viewer.person_id) for r in rows], total=total,
        args=args, errors=errors,
        flows=[(fid, label(spec.title, fid)) for fid, spec in flows],
        states=state_options(flows), tiers=[(k, str(v)) for k, v in TIER_LABELS.items()],
        units=_units(viewer), bulk=sorted(bulk.items()), page=args["page"], pages=pages,
        query=query)


# --------------------------------------------------------------------------- claims


def _back(case_id: int) -> str:
    return auth._safe_next(request.form.get("next") or url_for("web.case", case_id=case_id))


def _claims(case_id: int, do, done_message: str):
    """Claim or release: on the case page and (htmx) in a queue row."""
    eng, viewer = auth.engine(), auth.viewer()
    try:
        result = do(eng, viewer, form_version(request.form))
    except (Conflict, Forbidden, ActionNotAllowed, FieldErrors) as exc:
        if wants_fragment():
            row = eng.case_for(viewer, case_id, lang())
            return render_template("_queue_row.html", r=queue_row(row, viewer.person_id),
                                   error=text(exc) if not isinstance(exc, Conflict) else
                                   _("Someone changed this case meanwhile; try again.")), \
                status_of(exc)
        flash(text(exc), "error")
        return redirect(_back(case_id))
    metrics.count_action(result.flow, result.trigger)
    if wants_fragment():
        row = eng.case_for(viewer, case_id, lang())
        return render_template("_queue_row.html", r=queue_row(row, viewer.person_id),
                               done=done_message)
    flash(done_message, "success")
    return redirect(_back(case_id))


@bp.post("/queue/<int:case_id>/claim")
def claim(case_id: int):
    return _claims(case_id, lambda eng, v, version: eng.claim(
        case_id, auth.actor(), expected_version=version, viewer=v),
        _("Claimed: others holding the role no longer see this step."))


@bp.post("/queue/<int:case_id>/release")
def release(case_id: int):
    return _claims(case_id, lambda eng, v, version: eng.release(
        case_id, auth.actor(), expected_version=version, viewer=v),
        _("Released: every holder of the role sees this step again."))


@bp.post("/queue/<int:case_id>/delegate")
def delegate(case_id: int):
    """转办: validated by the API's `DelegateIn`, then `Engine.delegate`."""
    eng, viewer = auth.engine(), auth.viewer()
    comment = (request.form.get("comment") or "").replace("\r\n", "\n")
    given = {"to": request.form.get("to", "").strip() or None, "comment": comment or None}
    try:
        try:
            body = DelegateIn().load({k: v for k, v in given.items() if v is not None})
        except ValidationError as exc:
            raise FieldErrors({k: v for k, v in exc.messages.items()}) from None
        result = eng.delegate(case_id, auth.actor(), body["to"], comment=body.get("comment"),
                              expected_version=form_version(request.form), viewer=viewer)
    except (FieldErrors, Conflict, Forbidden, ActionNotAllowed, NotFound) as exc:
        # NotFound here is the person chosen; a case the viewer cannot see is NotFound
        # again when the page is drawn, and gives the 404 page.
        failed, status = refusal(exc, "delegate", None, comment)
        failed.values = {"to": given["to"]}
        if isinstance(exc, NotFound | Forbidden) and not failed.errors:
            failed.errors = {"to": [text(exc)]}
        return render_case(case_id, failed, status)
    metrics.count_action(result.flow, result.trigger)
    names = auth.door().org.person_names(ids=[body["to"]])
    flash(_("Delegated to %(name)s.", name=names.get(body["to"], body["to"])), "success")
    try:
        eng.case_for(viewer, case_id)
    except NotFound:
        return redirect(url_for("web.queue"))
    return redirect(_back(case_id))


# --------------------------------------------------------------------------- bulk


def _bulk_rows(args: dict[str, Any], flow: str, state: str, trigger: str
               ) -> tuple[list[CaseRow], int]:
    """The cases of the bulk page: the queue's filters (`args`) narrowed to one step, those
    on which the viewer can take `trigger` as an approver — what the queue's button counts;
    and how many queued cases the filters keep, beyond the bulk maximum too."""
    f = case_filter(args, auth.viewer(), flow=flow, state=state)
    rows, total = bulk_candidates(f)
    return [r for r in rows if any(a.trigger == trigger and _approving(a)
                                   for a in r.actions)], total


def _pool_text(key: tuple, unit_names: dict[int, str]) -> str:
    parts = []
    for name, value in key:
        if name == "unit":
            parts.append(unit_names.get(value, f"#{value}"))
        elif name == "tier":
            parts.append(tier_label(value))
        elif value is not None:
            parts.append(str(value))
    return " · ".join(parts) or _("whole flow")


def quota_meter(spec: FlowSpec, trigger: str, rows: list[CaseRow], selected: set[int]
                ) -> dict[str, Any] | None:
    """The meter of the flow's quota (`quota`, or the annual `excellent_quota`) when
    `trigger` is the action it guards: per pool, its size, limit, already approved with the
    value, how many of the selected carry it — `readouts.pool_usage`, the rule's own count."""
    quota = ledger.quota_of(spec)
    if quota is None or quota.trigger != trigger:
        return None
    keys, usage = auth.door().ledger.pool_usage(flow=spec.flow, quota=quota, cases=rows)
    hits = {r.id: r.data.get(quota.field) == quota.value for r in rows}
    unit_names = {u.id: u.name for u in auth.door().org.units()} \
        if quota.spans_units else {r.unit_id: r.unit_name for r in rows}
    chosen = Counter(keys[i] for i in selected if i in keys and hits[i])
    pools = []
    for n, (key, u) in enumerate(sorted(usage.items(), key=lambda kv: str(kv[0]))):
        pools.append({"id": f"pool-{n}", "key": key, "text": _pool_text(key, unit_names),
                      "size": u.size, "limit": u.limit, "used": u.used, "ratio": u.ratio,
                      "ratio_text": f"{round(u.ratio * 100)}%",
                      "raised": u.raised.describe() if u.raised is not None else None,
                      "selected": chosen.get(key, 0),
                      "over": u.used + chosen.get(key, 0) > u.limit})
    ids = {p["key"]: p["id"] for p in pools}
    field = spec.fields[quota.field]
    ratios = sorted({p["ratio"] for p in pools}) or [quota.ratio()]
    return {"field": quota.field, "field_label": label(field.label, quota.field),
            "value": quota.value, "ratio": ratios[0] if len(ratios) == 1 else None,
            "rounding": str(ROUNDINGS.get(quota.rounding, quota.rounding)),
            "min": quota.min, "pools": pools, "pool_of": {i: ids[k] for i, k in keys.items()},
            "hit": hits, "over": any(p["over"] for p in pools)}


def render_bulk(flow: str, state: str, trigger: str, selected: set[int], args: dict[str, Any],
                failed: Failure | None = None, status: int = 200):
    eng = auth.engine()
    rows, matched = _bulk_rows(args, flow, state, trigger)
    spec = eng.flow(flow).spec if not rows else eng.spec_of(rows[0].version_id)
    t = spec.transition(trigger, state)
    if t is None:
        raise ActionNotAllowed(_("%(flow)s has no action %(trigger)s in step %(state)s",
                                 flow=flow, trigger=trigger, state=state))
    ws = forms.widgets(spec, t)
    comment = forms.comment_widget(t)
    grade_field = ledger.quota_of(spec).field if ledger.quota_of(spec) else None
    errors = failed.errors if failed else {}
    return render_template(
        "bulk.html", rows=[{"row": r, "tier": tier_label(r.tier),
                            "grade": r.data.get(grade_field) if grade_field else None}
                           for r in rows],
        flow=flow, state=state, trigger=trigger, flow_title=label(spec.title, flow),
        state_label=label(spec.states[state].label) if state in spec.states else state,
        action_label=label(t.label, trigger), danger=t.comment == "required",
        grade_label=label(spec.fields[grade_field].label) if grade_field else None,
        meter=quota_meter(spec, trigger, rows, selected), selected=selected,
        widgets=ws, comment=comment, values=failed.values if failed else {},
        comment_value=failed.comment if failed else "", errors=errors,
        message=failed.message if failed else None,
        summary=forms.summary("bulk", [*ws, comment], errors), max=BULK_MAX,
        capped=matched if matched > BULK_MAX else None,
        filters=carried(args), prefix=BULK_PREFIX,
        chips=[c for c in filter_chips(args, _flows(), _units(auth.viewer()))
               if c["key"] not in ("flow", "state")]), status


def _bulk_target(source: MultiDict) -> tuple[str, str, str]:
    flow, state, trigger = (source.get(k, "").strip() for k in ("flow", "state", "trigger"))
    if not (flow and state and trigger):
        raise FieldErrors({k: [msg("field.required")] for k, v in
                           (("flow", flow), ("state", state), ("trigger", trigger)) if not v})
    return flow, state, trigger


@bp.get("/queue/bulk")
def bulk():
    require_approver(auth.viewer())
    flow, state, trigger = _bulk_target(request.args)
    args, _errors = queue_filters(request.args)
    return render_bulk(flow, state, trigger, set(), args)


@bp.post("/queue/bulk")
def bulk_post():
    """Validated by the API's `BulkIn`, fired by `Engine.fire_bulk`; the results per case."""
    eng, viewer = auth.engine(), auth.viewer()
    require_approver(viewer)
    flow, state, trigger = _bulk_target(request.form)
    # The queue's filters came as hidden `f.<name>` fields, apart from the action's data.
    args, _errors = queue_filters({k[len(BULK_PREFIX):]: v for k, v in request.form.items()
                                   if k.startswith(BULK_PREFIX)})
    raw_ids = request.form.getlist("case_ids")
    selected = {int(i) for i in raw_ids if i.isdigit() and len(i) < 10}
    listed, _matched = _bulk_rows(args, flow, state, trigger)  # names on the results page
    spec = eng.flow(flow).spec
    t = spec.transition(trigger, state)
    parsed = forms.parse(spec, t, request.form)
    comment = (request.form.get("comment") or "").replace("\r\n", "\n")
    try:
        try:
            body = BulkIn().load({"trigger": trigger, "case_ids": raw_ids,
                                  "data": parsed.data, **({"comment": comment} if comment
                                                          else {})})
        except ValidationError as exc:
            msgs = exc.messages
            if "case_ids" in msgs:
                msgs = {**msgs, "case_ids": [_("Select at least one case, at most %(n)s.",
                                               n=BULK_MAX)]}
            raise FieldErrors({k: v if isinstance(v, list) else [str(v)]
                               for k, v in msgs.items()}) from None
        result = eng.fire_bulk(body["case_ids"], trigger, auth.actor(), data=body["data"],
                               comment=body.get("comment"), viewer=viewer)
    except (FieldErrors, RuleViolation, Forbidden, ActionNotAllowed) as exc:
        failed, status = refusal(exc, trigger, parsed, comment)
        if isinstance(exc, RuleViolation):
            failed.errors, failed.message = {}, text(exc)
        return render_bulk(flow, state, trigger, selected, args, failed, status)
    for (f, trig), n in Counter((r.flow, r.trigger) for r in result.done).items():
        metrics.count_action(f, trig, n=n)
    names = {r.id: r.subject_name for r in listed}
    done = [{"id": r.case_id, "name": names.get(r.case_id, ""),
             "to": label(spec.states[r.to_state].label) if r.to_state in spec.states
             else r.to_state} for r in result.done]
    refused = [{"id": cid, "name": names.get(cid, ""), "message": text(exc),
                "status": status_of(exc)} for cid, exc in result.refused.items()]
    return render_template("bulk_done.html", done=done, refused=refused, flow=flow,
                           state=state, trigger=trigger, action_label=label(t.label, trigger)
                           if t else trigger, flow_title=label(spec.title, flow),
                           filters=carried(args))
