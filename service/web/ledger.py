"""Ledger and statistics pages (台账统计): the statistics of a flow with charts, the ledger
(台账) itself, the eligibility list (任职资格名单) and the contact-point score sheet
(联系点成绩单), each with its CSV / XLSX download.

Read-only, and the same numbers as the REST views beside them: `workflows.ledger`
(`state_counts`, `rates`, `grade_distribution`, `ledger_rows`), `workflows.eligibility`
and `workflows.contact_points`, called with the API's query schemas (`PeriodQuery`,
`CasesQuery`, `EligibilityQuery`, `ScoreBoardQuery`), over the cases the viewer may see.
The export buttons are links to those REST endpoints (`format=csv|xlsx`), which a browser
session may GET with its cookie.

Who: process owners and admins see every case; leaders and committee members the cases of
their units (the API's rule, `access.visible_cases`). Anyone else — staff — gets the 403
page: their own numbers are on their home page.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from marshmallow import Schema, ValidationError
from werkzeug.datastructures import MultiDict

from workflows import contact_points as cp
from workflows.access import COMMITTEE, LEADER, Viewer
from workflows.errors import FieldErrors, Forbidden, NotFound
from workflows.periods import period_key
from workflows.spec import FlowSpec

from .. import auth
from ..api.contact_points import ScoreBoardQuery
from ..api.ledger import MAX_EXPORT, CasesQuery, EligibilityQuery, PeriodQuery
from . import bp, charts
from .i18n import label, lang
from .nav import ledger_readers
from .queue import ROUNDINGS, tier_label

LEDGER_PER_PAGE = 50
TABS = [("web.ledger", _l("Statistics")), ("web.ledger_cases", _l("Case ledger")),
        ("web.eligibility", _l("Eligibility list")),
        ("web.contact_points", _l("Contact-point scores"))]


# --------------------------------------------------------------------------- access


def require_reader(viewer: Viewer) -> None:
    """Owners and admins, leaders and committee members (`nav.ledger_readers`)."""
    if not ledger_readers(viewer):
        raise Forbidden(_("The ledger and statistics are for process owners, admins, leaders "
                          "and committee members. Your own cases are on your home page."),
                        rule="ledger_read")


# --------------------------------------------------------------------------- filters


def published_flows() -> list[tuple[str, FlowSpec]]:
    """The published flows (their current version), by id; NotFound when there is none."""
    eng = auth.engine()
    ids = sorted({v.flow_id for v in eng.versions() if v.status == "published"})
    if not ids:
        raise NotFound(_("No flow is published yet: the ledger has nothing to count."))
    return [(fid, eng.flow(fid).spec) for fid in ids]


def visible_units(viewer: Viewer) -> list[Any]:
    """The units a filter may name: all for owners and admins, else the viewer's subtrees."""
    units = auth.door().org.units()
    if viewer.sees_all:
        return units
    paths = viewer.paths(LEADER, COMMITTEE)
    return [u for u in units if any(u.path.startswith(p) for p in paths)]


def read_query(schema: Schema, args: MultiDict, defaults: dict[str, Any] | None = None
               ) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The query string through the API's schema (blank inputs mean "not given"); a bad
    parameter is reported and left out, the rest still apply."""
    given = {**(defaults or {}),
             **{k: v.strip() for k, v in args.items() if v.strip() and k in schema.fields}}
    given.pop("format", None)
    try:
        return schema.load(given), {}
    except ValidationError as exc:
        errors = {k: v if isinstance(v, list) else [str(v)] for k, v in exc.messages.items()}
        kept = {k: v for k, v in given.items() if k not in errors}
        return schema.load({**(defaults or {}), **kept}), errors


def _default_flow(flows: list[tuple[str, FlowSpec]], preferred: str) -> str | None:
    ids = [fid for fid, _spec in flows]
    return preferred if preferred in ids else (ids[0] if ids else None)


def _flow_spec(flows: list[tuple[str, FlowSpec]], flow: str) -> FlowSpec:
    for fid, spec in flows:
        if fid == flow:
            return spec
    return auth.engine().flow(flow).spec  # NotFound: "flow … is not published"


def _scope(args: dict[str, Any]) -> dict[str, Any]:
    return {k: args.get(k) for k in ("unit_id", "period", "period_from", "period_to")}


def export_query(args: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The page's filters as the REST endpoint's query string (what a download holds)."""
    return {k: args[k] for k in ("flow", *keys) if args.get(k) not in (None, "")}


def _period_input(spec: FlowSpec) -> dict[str, str]:
    """How a period key is typed for this flow: a month picker for monthly flows, else
    text, with the current period as the example."""
    today = auth.engine().calendar.local(auth.engine().clock()).date()
    return {"type": "month" if spec.period == "month" else "text",
            "example": period_key(spec.period, today) or ""}


def _page_frame(args: dict[str, Any], errors: dict[str, list[str]], **extra: Any
                ) -> dict[str, Any]:
    viewer = auth.viewer()
    flows = published_flows()
    return {"args": args, "errors": errors, "tabs": TABS,
            "flows": [(fid, label(spec.title, fid)) for fid, spec in flows],
            "units": visible_units(viewer), **extra}


# --------------------------------------------------------------------------- statistics


def pool_label(pool: dict[str, Any], with_period: bool = True) -> str:
    """A pool in words: unit · tier (· period, unless the page shows one period)."""
    parts = []
    if "unit" in pool:
        parts.append(pool["unit"]["name"])
    if pool.get("tier"):
        parts.append(tier_label(pool["tier"]))
    if pool.get("period") and with_period:
        parts.append(pool["period"])
    return " · ".join(parts) or _("whole flow")


def grade_view(dist: dict[str, Any], wanted: str | None) -> dict[str, Any]:
    """The grade distribution for one period (the one asked for, else the latest with a
    grade), as rows for the chart and the table. Pools without a period are all shown."""
    periods = sorted({p["period"] for p in dist["pools"] if p.get("period")})
    graded = [k for k in periods if any(sum(p["graded"].values()) for p in dist["pools"]
                                        if p.get("period") == k)]
    shown = wanted if wanted in periods else (graded[-1] if graded else
                                              (periods[-1] if periods else None))
    value = str(dist["quota"]["value"])
    order = charts.grade_order([str(v) for v in dist["values"]], value)
    pools = []
    for p in dist["pools"]:
        if periods and p.get("period") != shown:
            continue
        proposed = p["graded"].get(value, 0)
        pools.append({"label": pool_label(p, with_period=not periods), "size": p["size"],
                      "graded": p["graded"], "approved": p["approved"],
                      "ungraded": p["ungraded"],
                      "limit": p["quota"]["limit"], "used": p["quota"]["used"],
                      "remaining": p["quota"]["remaining"], "value": value,
                      "over": proposed > p["quota"]["limit"]})
    q = dist["quota"]
    rule = _("“%(value)s” for at most %(ratio)s of each pool, rounded %(rounding)s, at least "
             "%(min)s.", value=value, ratio=_ratio_text(q["max_ratio"]),
             rounding=str(ROUNDINGS.get(q["rounding"], q["rounding"])), min=q["min"])
    return {"periods": periods, "shown": shown, "order": order, "value": value,
            "pools": pools, "field_label": dist["field_label"], "rule": rule,
            "chart": charts.grade_chart(pools, order, {"ungraded": _("ungraded"),
                                                       "limit": _("limit")})}


def _ratio_text(ratio: Any) -> str:
    """A quota's ratio, or its ratios per tier (正职 30% · 副职 35% · 一般干部 40%)."""
    if isinstance(ratio, dict):
        return " · ".join(f"{tier_label(t)} {charts.percent(r)}" for t, r in ratio.items())
    return charts.percent(ratio)


@bp.get("/ledger", endpoint="ledger")
def statistics():
    eng, viewer = auth.engine(), auth.viewer()
    require_reader(viewer)
    flows = published_flows()
    args, errors = read_query(PeriodQuery(), request.args,
                              {"flow": _default_flow(flows, cp.REGULAR_FLOW)})
    spec = _flow_spec(flows, args["flow"])
    page = _page_frame(args, errors, spec=spec, period_input=_period_input(spec),
                       title=label(spec.title, spec.flow))
    if errors:
        return render_template("owner/statistics.html", **page), 422
    try:
        found = auth.door().ledger.statistics(viewer=viewer, flow=spec, **_scope(args),
                                              lang=lang())
        states, rates, dist = found.states, found.rates, found.grades
    except FieldErrors as exc:
        page["errors"] = exc.errors
        return render_template("owner/statistics.html", **page), 422
    by_period = rates["by_period"]
    # The year of the 好-per-person download: the last period shown, else this year.
    last = args.get("period") or args.get("period_to") or \
        (by_period[-1]["period"] if by_period else None)
    year = (last or str(eng.calendar.local(eng.clock()).year))[:4]
    page.update(
        states=states, rates=rates, percent=charts.percent,
        rate_chart=charts.rate_chart(by_period, {"completion": _("completion"),
                                                 "overdue": _("overdue"),
                                                 "none": _("no cases")}),
        grades=grade_view(dist, request.args.get("grade_period")) if dist else None,
        exports={"scope": export_query(args, "unit_id", "period", "period_from",
                                       "period_to"),
                 "year": year, "good": {**export_query(args, "unit_id"), "year": year}},
        query={k: v for k, v in request.args.items() if k != "grade_period" and v})
    return render_template("owner/statistics.html", **page)


# --------------------------------------------------------------------------- the ledger


@bp.get("/ledger/cases")
def ledger_cases():
    viewer = auth.viewer()
    require_reader(viewer)
    flows = published_flows()
    args, errors = read_query(CasesQuery(), request.args,
                              {"flow": _default_flow(flows, cp.REGULAR_FLOW),
                               "per_page": LEDGER_PER_PAGE})
    spec = _flow_spec(flows, args["flow"])
    page = _page_frame(args, errors, spec=spec, period_input=_period_input(spec),
                       title=label(spec.title, spec.flow), rows=[], total=0, pages=1,
                       states=[(s.name, label(s.label, s.name)) for s in spec.states.values()],
                       exports=export_query(args, "unit_id", "period", "period_from",
                                            "period_to", "state"),
                       query={k: v for k, v in request.args.items() if k != "page" and v},
                       max_export=MAX_EXPORT)
    if errors:
        return render_template("owner/ledger_cases.html", **page), 422
    scope = {**_scope(args), "state": args.get("state")}
    try:
        found = auth.door().ledger.cases(viewer=viewer, flow=spec, **scope, lang=lang(),
                                         page=args["page"], per_page=args["per_page"])
        rows, total = found.rows, found.total
    except FieldErrors as exc:
        page["errors"] = exc.errors
        return render_template("owner/ledger_cases.html", **page), 422
    for r in rows:
        r["tier_text"] = tier_label(r["tier"])
    page.update(rows=rows, total=total, pages=max(1, -(-total // args["per_page"])))
    return render_template("owner/ledger_cases.html", **page)


# --------------------------------------------------------------------------- eligibility


@bp.get("/ledger/eligibility", endpoint="eligibility")
def eligibility_page():
    eng, viewer = auth.engine(), auth.viewer()
    require_reader(viewer)
    flows = [(fid, spec) for fid, spec in published_flows()
             if any(r.name == "promotion_eligible" for t in spec.transitions for r in t.rules)]
    args, errors = read_query(EligibilityQuery(), request.args)
    today = eng.calendar.local(eng.clock()).date()
    on: dt.date = args.get("date") or today
    page = _page_frame(args, errors, on=on, listing=None,
                       exports=export_query({**args, "date": on.isoformat()}, "unit_id",
                                            "date"))
    page["flows"] = [(fid, label(spec.title, fid)) for fid, spec in flows]
    if errors:
        return render_template("owner/eligibility.html", **page), 422
    if not flows:
        return render_template("owner/eligibility.html", **page)
    spec = _flow_spec(flows, args["flow"])
    try:
        listing = auth.door().ledger.eligibility(viewer=viewer, flow=spec, on=on,
                                                 unit_id=args.get("unit_id"))
    except FieldErrors as exc:
        page["errors"] = exc.errors
        return render_template("owner/eligibility.html", **page), 422
    for p in listing["people"]:
        p["tier_text"] = tier_label(p["tier"])
    page.update(listing=listing, title=label(spec.title, spec.flow))
    return render_template("owner/eligibility.html", **page)



# --------------------------------------------------------------------------- contact points


@bp.get("/ledger/contact-points")
def contact_points():
    eng, viewer = auth.engine(), auth.viewer()
    require_reader(viewer)
    year = eng.calendar.local(eng.clock()).year
    args, errors = read_query(ScoreBoardQuery(), request.args, {"year": year})
    page = _page_frame(args, errors, board=None,
                       exports=export_query(args, "year", "unit_id"))
    if errors:
        return render_template("owner/contact_points.html", **page), 422
    try:
        board = auth.door().contact_points.scoreboard(
            viewer=viewer, year=args["year"], flow=args["flow"], unit_id=args.get("unit_id"),
            weekly_field=args["weekly_field"])
    except FieldErrors as exc:
        page["errors"] = exc.errors
        return render_template("owner/contact_points.html", **page), 422
    page.update(board=board, percent=charts.percent, shown=cp.shown)
    return render_template("owner/contact_points.html", **page)
