"""The process owner's migration page (迁移运行中的案件): move the open cases of a version to a
newer published one — choose the version, map the states it removed, preview every case,
confirm.

The same calls as `service/api/migrations.py`: `migrate.plan` (the preview, read only, a
GET) and `migrate.run` (a POST with the session's CSRF token). Seeing the page and
migrating: process owners and admins, as over the API.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from workflows import migrate
from workflows.engine import PUBLISHED
from workflows.errors import FieldErrors, NotFound, NotPublished

from .. import auth
from . import bp
from .i18n import label
from .owner import require_owner_pages

MAP = "map."  # form fields map.<old state> = <new state>
SHOWN = 500  # preview rows on the page; the counts cover every case (the API lists all)


def _targets(flow: str, version: int) -> list[int]:
    """The newer published versions of the flow: where its cases may move."""
    return [v.version for v in auth.engine().versions(flow)
            if v.version > version and v.status == PUBLISHED]


def _mapping(form: Any) -> dict[str, str]:
    return {k[len(MAP):]: v for k, v in form.items() if k.startswith(MAP) and v}


def _page(flow: str, version: int, to: int | None, mapping: dict[str, str],
          status: int = 200):
    eng, viewer = auth.engine(), auth.viewer()
    row = eng.version(flow, version)
    spec = eng.spec_of(row.id)
    targets = _targets(flow, version)
    preview, errors, removed, target_states = None, [], [], []
    if to is not None:
        try:
            target = eng.version(flow, to)
            new_spec = eng.spec_of(target.id)
            removed = [s for s in spec.states if s not in new_spec.states]
            target_states = [(name, label(st.label, name)) for name, st in
                             new_spec.states.items() if not st.final]
            preview = migrate.plan(eng, flow, version, to, mapping, viewer)
        except FieldErrors as exc:
            errors = [m for ms in exc.errors.values() for m in ms]
            status = 422
        except (NotFound, NotPublished) as exc:
            errors = [exc.message]  # a Message: the page shows it in the session's language
            status = 404 if isinstance(exc, NotFound) else 409
    return render_template(
        "owner/migrate.html", row=row, title=label(spec.title, row.title), targets=targets,
        to=to, mapping=mapping, removed=removed, target_states=target_states,
        preview=preview, shown=SHOWN, errors=errors, runs=migrate.runs(eng, flow, viewer),
        states={n: label(st.label, n) for n, st in spec.states.items()}), status


@bp.get("/flows/<flow>/versions/<int:version>/migrate")
def flow_migrate(flow: str, version: int):
    """The form; with `to`, the preview of every open case (nothing changes)."""
    require_owner_pages(auth.viewer())
    to = request.args.get("to", type=int)
    return _page(flow, version, to, _mapping(request.args))


@bp.post("/flows/<flow>/versions/<int:version>/migrate")
def flow_migrate_post(flow: str, version: int):
    """Migrate (the confirmed preview); back to the target version, whose counts now hold
    the moved cases."""
    require_owner_pages(auth.viewer())
    to = request.form.get("to", type=int)
    mapping = _mapping(request.form)
    if to is None:
        return _page(flow, version, None, mapping, 422)
    try:
        result = migrate.run(auth.engine(), flow, version, to, mapping, auth.viewer())
    except (FieldErrors, NotFound, NotPublished):
        return _page(flow, version, to, mapping)  # shows the errors with their status
    flash(_("Migration run %(id)s: %(moved)s case(s) moved to version %(to)s, %(refused)s "
            "could not move, %(skipped)s had already moved.", id=result.run_id,
            moved=result.moved, to=to, refused=result.refused, skipped=result.skipped),
          "success" if not result.refused else "info")
    return redirect(url_for("web.flow_version", flow=flow, version=to))
