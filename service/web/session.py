"""The session's own pages: the language switch (中文/English) and logging out."""

from __future__ import annotations

from flask import flash, g, redirect, request, session, url_for
from flask_babel import gettext as _

from workflows.engine import utcnow

from .. import auth
from . import bp
from .i18n import LANGS


@bp.post("/lang")
def set_language():
    """Keep the chosen language in the session and go back to the page (also logged out)."""
    auth._ensure_secret()
    chosen = request.form.get("lang", "")
    if chosen in LANGS:
        session["lang"] = chosen
    return redirect(auth._safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    """End the browser session: its token is revoked, the cookie emptied (the language
    choice stays)."""
    auth.door().accounts.revoke(token_id=g.principal.token_id, now=utcnow())
    chosen = session.get("lang")
    session.clear()
    if chosen:
        session["lang"] = chosen
    flash(_("You are logged out."), "info")
    return redirect(url_for("login_page"))
