"""CSRF protection for the pages: every POST carries the session's token.

The token is `session["csrf"]`, the one `service.auth` gives a browser session at login and
that the REST API checks in `X-CSRF-Token`. A page form sends it in a hidden `csrf_token`
field (the `csrf_field()` macro of `macros.html`), an htmx request in the `X-CSRF-Token`
header (set once in `base.html`). The login form is protected too: its token is made for
the anonymous session when the page is shown. A POST without the right token gets the
403 page and changes nothing.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, render_template, request, session

SAFE = {"GET", "HEAD", "OPTIONS"}
FIELD = "csrf_token"
HEADER = "X-CSRF-Token"


class CsrfRefused(Exception):
    """A POST without the session's token: refused before any work is done."""


def token() -> str:
    """The session's token, made when the session has none (an anonymous login page)."""
    if not session.get("csrf"):
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def check() -> None:
    """Raise `CsrfRefused` unless a POST sends the session's token (field or header)."""
    if request.method in SAFE:
        return
    sent = request.form.get(FIELD) or request.headers.get(HEADER) or ""
    expected = session.get("csrf") or ""
    if not expected or not hmac.compare_digest(sent, expected):
        raise CsrfRefused()


def _refused(_exc: CsrfRefused):
    return render_template("error.html", status=403, csrf=True), 403


def init_app(app: Flask) -> None:
    """Per app: the 403 page and the template global. (The check itself is registered on
    the blueprint once, in `service.web.__init__`.)"""
    app.register_error_handler(CsrfRefused, _refused)
    app.jinja_env.globals["csrf_token"] = token
