"""The web interface (网页): server-rendered pages for staff, approvers and process owners.

Pages are Jinja2 templates with a little progressive enhancement (htmx and a few lines of
our own script, both served from `static/`: no build step, no network). Every view is thin:
it parses the form, calls the same engine function as the REST view beside it
(`service/api/*.py`), and renders the result or the error. Field checks are the engine's
marshmallow schemas; nothing here validates a second time.

- `i18n`: Flask-Babel, zh-CN by default, English by a switch kept in the session.
- `csrf`: every POST carries the session's token (form field or `X-CSRF-Token` header).
- `nav`: the navigation entries and who sees them.
- views: `staff` (home, notifications), `cases` (the case page and its action forms),
  `queue` (the approvers' queue, claims, delegation, bulk approval), `session` (language,
  logout).

See docs/web.md for the pages and for how to add one.
"""

from __future__ import annotations

from flask import Blueprint, Flask, render_template, request

from workflows.errors import CivflowError

from ..errors import status_of
from . import csrf, i18n

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/web")
bp.before_request(i18n.set_reader_lang)  # first: a refusal below reads in the page's language
bp.before_request(csrf.check)


@bp.errorhandler(CivflowError)
def _civflow_error(exc: CivflowError):
    """An engine refusal on a page: the error page with its status, never a 500."""
    status = status_of(exc)
    return render_template("error.html", status=status, error=exc), status


def wants_fragment() -> bool:
    """An htmx request asks for a piece of a page, not a whole one."""
    return request.headers.get("HX-Request") == "true"


# The views register their routes on `bp` when imported (after `bp` exists).
from . import (  # noqa: E402, F401
    calendar_gap,
    cases,
    i18n,
    ledger,
    migrations,
    nav,
    owner,
    queue,
    session,
    staff,
    starting,
)


def init_app(app: Flask) -> None:
    """Languages, CSRF page, navigation, and the blueprint, on one app."""
    i18n.init_app(app)
    csrf.init_app(app)
    nav.init_app(app)
    calendar_gap.init_app(app)
    app.register_blueprint(bp)
