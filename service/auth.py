"""Authentication: bearer tokens for API clients, a session cookie for browsers.

Every request except the health check and the two ways of logging in must carry a valid
token or session. Both are rows in `api_tokens` (only their SHA-256 is stored), so both
expire and both can be revoked. A browser that writes through the API with its cookie must
also send the session's CSRF token in `X-CSRF-Token`; bearer clients need not.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from urllib.parse import urlparse

from flask import (
    Flask,
    current_app,
    g,
    redirect,
    render_template_string,
    request,
    session,
    url_for,
)
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

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth",
                description="Log in: bearer tokens and browser sessions (登录)")
# (endpoint, method) pairs that answer without a login.
PUBLIC = {("healthz", "GET"), ("healthz", "HEAD"), ("auth.Token", "POST"),
          ("auth.Login", "POST"), ("login_page", "GET"), ("login_page", "POST")}
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


_LOGIN_PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>登录 civflow</title>
<style>body{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}
label{display:block;margin:.8rem 0 .2rem}input{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}
button{margin-top:1rem;padding:.5rem 1rem;font-size:1rem}.err{color:#a00}</style></head>
<body><h1>civflow 登录 / Log in</h1>
{% if error %}<p class="err" role="alert">{{ error }}</p>{% endif %}
<form method="post"><input type="hidden" name="next" value="{{ next }}">
<label for="u">用户名 Username</label><input id="u" name="username" autocomplete="username" required>
<label for="p">密码 Password</label>
<input id="p" name="password" type="password" autocomplete="current-password" required>
<button type="submit">登录 Log in</button></form></body></html>"""


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect after login would help phishing.
    if target and target.startswith("/") and not target.startswith("//") \
            and not urlparse(target).netloc:
        return target
    return "/docs"


def _ensure_secret() -> None:
    """Sessions are signed with CIVFLOW_SECRET_KEY, else with a key kept in the database
    (read on first use, so the service starts, and says it is unhealthy, without one)."""
    if not current_app.config.get("SECRET_KEY"):
        current_app.config["SECRET_KEY"] = shared_secret(engine().db)
        current_app.secret_key = current_app.config["SECRET_KEY"]


def login_page():
    _ensure_secret()
    nxt = _safe_next(request.values.get("next"))
    if request.method == "POST":
        try:
            _start_session(request.form.get("username", ""), request.form.get("password", ""))
        except AuthFailed:
            return render_template_string(_LOGIN_PAGE, error="用户名或密码错误 / wrong username "
                                          "or password", next=nxt), 401
        return redirect(nxt)
    return render_template_string(_LOGIN_PAGE, error=None, next=nxt)


def _authenticate():
    if (request.endpoint, request.method) in PUBLIC or request.endpoint is None:
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
        return redirect(url_for("login_page", next=request.full_path.rstrip("?")))
    return None


def init_app(app: Flask, api: Api) -> None:
    app.permanent_session_lifetime = dt.timedelta(
        seconds=app.config["CIVFLOW_SESSION_TTL"].total_seconds())
    app.add_url_rule("/login", "login_page", login_page, methods=["GET", "POST"])
    app.add_url_rule("/", "index", lambda: redirect("/docs"))
    app.before_request(_authenticate)
    api.register_blueprint(blp)
