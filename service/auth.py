"""Authentication: bearer tokens for API clients, a session cookie for browsers.

Every request except the health check and the two ways of logging in must carry a valid
token or session. Both are rows in `api_tokens` (only their SHA-256 is stored), so both
expire and both can be revoked. A browser that writes through the API with its cookie must
also send the session's CSRF token in `X-CSRF-Token`; bearer clients need not.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
from urllib.parse import urlparse

from flask import (
    Flask,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields, validate

from workflows.access import Viewer, load_viewer
from workflows.accounts import (
    BEARER,
    SESSION,
    AuthFailed,
    authenticate,
    issue_token,
    principal_of,
    revoke_token,
    shared_secret,
)
from workflows.engine import Actor, Engine, utcnow
from workflows.errors import Forbidden

log = logging.getLogger("civflow.auth")

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth",
                description="Log in: bearer tokens and browser sessions (登录)")
# (endpoint, method) pairs that answer without a login.
PUBLIC = {("healthz", "GET"), ("healthz", "HEAD"), ("auth.Token", "POST"),
          ("auth.Login", "POST"), ("login_page", "GET"), ("login_page", "POST"),
          ("web.static", "GET"), ("web.static", "HEAD"), ("web.set_language", "POST")}
SAFE = {"GET", "HEAD", "OPTIONS"}


def engine() -> Engine:
    return current_app.extensions["civflow"]


def viewer() -> Viewer:
    return g.viewer


def actor() -> Actor:
    return Actor.person(g.viewer.person_id)


class Credentials(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=100))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1000),
                             load_only=True)


class TokenOut(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)


class Me(Schema):
    username = fields.String(required=True)
    person_id = fields.Integer(allow_none=True)
    roles = fields.List(fields.Dict(), required=True)
    csrf_token = fields.String(allow_none=True)


@blp.route("/token")
class Token(MethodView):
    @blp.arguments(Credentials)
    @blp.response(201, TokenOut)
    @blp.doc(security=[])
    def post(self, creds):
        """Exchange a username and password for a bearer token (anonymous)."""
        user = authenticate(engine().db, creds["username"], creds["password"])
        ttl = current_app.config["CIVFLOW_TOKEN_TTL"]
        token, _exp = issue_token(engine().db, user.id, BEARER, ttl, utcnow())
        return {"access_token": token, "token_type": "bearer",
                "expires_in": int(ttl.total_seconds())}

    @blp.response(204)
    def delete(self):
        """Revoke the token (or session) this request was made with."""
        revoke_token(engine().db, g.principal.token_id, utcnow())
        session.clear()


@blp.route("/login")
class Login(MethodView):
    @blp.arguments(Credentials)
    @blp.response(200, Me)
    @blp.doc(security=[])
    def post(self, creds):
        """Log in a browser: sets the session cookie (anonymous)."""
        _start_session(creds["username"], creds["password"])
        return _me()


@blp.route("/logout")
class Logout(MethodView):
    @blp.response(204)
    def post(self):
        """End the browser session (the session token is revoked)."""
        revoke_token(engine().db, g.principal.token_id, utcnow())
        session.clear()


@blp.route("/me")
class WhoAmI(MethodView):
    @blp.response(200, Me)
    def get(self):
        """The signed-in account, its roles, and the CSRF token for cookie clients."""
        return _me()


def _me() -> dict:
    v: Viewer = g.viewer
    return {"username": g.principal.username, "person_id": g.principal.person_id,
            "roles": [{"role": r, "unit_id": u} for r, u, _p in v.assignments],
            "csrf_token": session.get("csrf")}


def _start_session(username: str, password: str) -> None:
    user = authenticate(engine().db, username, password)
    token, _exp = issue_token(engine().db, user.id, SESSION,
                              current_app.config["CIVFLOW_SESSION_TTL"], utcnow())
    session.clear()
    session["t"] = token
    session["csrf"] = secrets.token_urlsafe(24)
    session.permanent = True
    _sign_in(token)


def _sign_in(token: str) -> None:
    """Resolve the token and load the viewer's roles in one read (g.principal, g.viewer)."""
    with engine().db.unit_of_work(write=False) as s:
        p = principal_of(s, token, utcnow())
        g.viewer = load_viewer(s, p.person_id) if p.person_id else Viewer(person_id=0)
    g.principal = p


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect after login would help phishing.
    if target and target.startswith("/") and not target.startswith("//") \
            and "\\" not in target and not urlparse(target).netloc:
        return target
    return url_for("web.home")  # the person's to-dos


class _SecretLoadingSessions(SecureCookieSessionInterface):
    """Flask opens the session before any `before_request` hook runs: load the signing key
    kept in the database first, or the first request of each process has no session."""

    def open_session(self, app: Flask, request):  # type: ignore[override]
        if not app.config.get("SECRET_KEY"):
            try:
                _ensure_secret()
            except Exception:  # noqa: BLE001 - database down: the request will say so (503)
                log.warning("no session key yet: the database is not reachable")
        return super().open_session(app, request)


def _ensure_secret() -> None:
    """Sessions are signed with CIVFLOW_SECRET_KEY, else with a key kept in the database
    (read on first use, so the service starts, and says it is unhealthy, without one)."""
    if not current_app.config.get("SECRET_KEY"):
        current_app.config["SECRET_KEY"] = shared_secret(engine().db)
        current_app.secret_key = current_app.config["SECRET_KEY"]


def login_page():
    """The login form (the web interface's base template); then the page asked for, or the
    person's to-dos. The form carries a CSRF token made for the anonymous session."""
    from .web import csrf

    _ensure_secret()
    nxt = _safe_next(request.values.get("next"))
    expired = request.args.get("expired") == "1"
    if request.method == "POST":
        csrf.check()
        username = request.form.get("username", "")
        try:
            _start_session(username, request.form.get("password", ""))
        except AuthFailed:
            return render_template("login.html", error=True, next=nxt, username=username,
                                   expired=False), 401
        return redirect(nxt)
    return render_template("login.html", error=False, next=nxt, username="", expired=expired)


def _to_login(expired: bool = False):
    """A browser asking for a page without a (live) session goes to the login page, and
    comes back to the page after logging in."""
    nxt = request.full_path.rstrip("?") if request.method in SAFE else request.path
    if request.method not in SAFE and request.referrer:
        ref = urlparse(request.referrer)
        if ref.netloc == request.host:
            nxt = ref.path + (f"?{ref.query}" if ref.query else "")
    args = {"next": nxt, **({"expired": "1"} if expired else {})}
    return redirect(url_for("login_page", **args))


def _authenticate():
    # HEAD is GET without the body: it answers wherever GET does (HEAD /login, too).
    method = "GET" if request.method == "HEAD" else request.method
    if (request.endpoint, method) in PUBLIC or request.endpoint is None:
        return None
    _ensure_secret()
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthFailed("use Authorization: Bearer <token>")
        _sign_in(token.strip())
    elif session.get("t"):
        try:
            _sign_in(session["t"])
        except AuthFailed:
            session.clear()
            if not request.path.startswith(("/api/", "/metrics")):
                return _to_login(expired=True)  # an expired or revoked browser session
            raise
        if request.method not in SAFE and request.path.startswith("/api/"):
            sent = request.headers.get("X-CSRF-Token", "")
            if not hmac.compare_digest(sent, session.get("csrf", "")):
                raise Forbidden("a browser session must send its X-CSRF-Token (from "
                                "/api/v1/auth/me) with every change", rule="csrf")
    elif request.path.startswith(("/api/", "/metrics")):
        raise AuthFailed("log in first: POST /api/v1/auth/token, then send "
                         "Authorization: Bearer <token>")
    else:
        return _to_login()
    return None


def init_app(app: Flask, api: Api) -> None:
    app.session_interface = _SecretLoadingSessions()
    app.permanent_session_lifetime = dt.timedelta(
        seconds=app.config["CIVFLOW_SESSION_TTL"].total_seconds())
    app.add_url_rule("/login", "login_page", login_page, methods=["GET", "POST"])
    app.add_url_rule("/", "index", lambda: redirect(url_for("web.home")))
    app.before_request(_authenticate)
    api.register_blueprint(blp)
