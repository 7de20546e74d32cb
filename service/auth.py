"""Authentication: bearer tokens for API clients, a session cookie for browsers.

Every request except the health check and the two ways of logging in must carry a valid
token or session. Both are rows in `api_tokens` (only their SHA-256 is stored), so both
expire and both can be revoked. A browser that writes through the API with its cookie must
also send the session's CSRF token in `X-CSRF-Token`; bearer clients need not.

Every login (the token endpoint, the browser login, the /login form) is throttled per
account name and per client address (`workflows.accounts.login`): over the limit the
answer is 429 with `Retry-After`, before any password is hashed. The limits are the
CIVFLOW_LOGIN_* settings; the client address is `request.remote_addr`, which is the
proxy's unless CIVFLOW_PROXY_HOPS says how many proxies to trust (docs/OPERATIONS.md).
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import TypeVar
from urllib.parse import urlparse

from flask import (
    Flask,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from werkzeug.middleware.proxy_fix import ProxyFix

from workflows.access import Viewer
from workflows.accounts import (
    BEARER,
    EVENT_KINDS,
    SESSION,
    AuthFailed,
    LoginThrottled,
    ThrottlePolicy,
)
from workflows.engine import Actor, Engine, Signed, utcnow
from workflows.errors import Forbidden
from workflows.frontdoor import FrontDoor, IssuedToken
from workflows.messages import msg

from .errors import body_of

log = logging.getLogger("civflow.auth")

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth",
                description="Log in: bearer tokens and browser sessions (登录)")
# (endpoint, method) pairs that answer without a login.
PUBLIC = {("healthz", "GET"), ("healthz", "HEAD"), ("auth.Token", "POST"),
          ("auth.Login", "POST"), ("login_page", "GET"), ("login_page", "POST"),
          ("web.static", "GET"), ("web.static", "HEAD"), ("web.set_language", "POST")}
SAFE = {"GET", "HEAD", "OPTIONS"}
# (endpoint, method) pairs that sign in inside their own transaction (`signed_action`):
# firing an action (on one case or in bulk), claiming, releasing or delegating a step, or
# opening a case, reads the token, the roles and the case (the person) and writes in one
# transaction.
DEFERRED = {("cases.CaseAction", "POST"), ("cases.Cases", "POST"), ("queue.Bulk", "POST"),
            ("queue.Claim", "POST"), ("queue.Release", "POST"), ("queue.Delegate", "POST")}


def engine() -> Engine:
    return current_app.extensions["civflow"]


def door() -> FrontDoor:
    """The engine's front door (`workflows.frontdoor`): every call outside the case kernel."""
    return engine().door


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


class LockoutOut(Schema):
    key = fields.String(required=True, metadata={
        "description": "account:NAME or address:IP (an IPv6 client by its /64)"})
    failures = fields.Integer(required=True, metadata={
        "description": "failed logins counted in the current window"})
    window_started_at = fields.DateTime(required=True)
    locked_until = fields.DateTime(allow_none=True)
    locked = fields.Boolean(required=True, metadata={"description": "refused just now"})


class LiftIn(Schema):
    username = fields.String(validate=validate.Length(min=1, max=150))
    address = fields.String(validate=validate.Length(min=1, max=64),
                            metadata={"description": "an IP address as the log shows it"})

    @validates_schema
    def _one_of(self, data, **kwargs):
        if ("username" in data) == ("address" in data):
            raise ValidationError(msg("auth.username_or_address"), "username")


class LiftOut(Schema):
    lifted = fields.Boolean(required=True, metadata={
        "description": "false when there was no counter for it (nothing to lift)"})
    was = fields.Nested(LockoutOut, allow_none=True)


class EventQuery(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    username = fields.String(validate=validate.Length(min=1, max=100))
    kind = fields.String(validate=validate.OneOf(EVENT_KINDS))


class EventOut(Schema):
    id = fields.Integer(required=True)
    at = fields.DateTime(required=True)
    kind = fields.String(required=True, metadata={"description": ", ".join(EVENT_KINDS)})
    username = fields.String(allow_none=True, metadata={
        "description": "as typed at the login; the account may not exist"})
    user_id = fields.Integer(allow_none=True)
    address = fields.String(allow_none=True)
    by = fields.Integer(allow_none=True, metadata={"description": "the admin's person id"})
    detail = fields.Dict(required=True)


class EventList(Schema):
    items = fields.List(fields.Nested(EventOut), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)


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
        """Exchange a username and password for a bearer token (anonymous).

        401 for a wrong username or password; 429 with `Retry-After` after too many
        failed logins for the name or from the address (see docs/OPERATIONS.md)."""
        ttl = current_app.config["CIVFLOW_TOKEN_TTL"]
        token = _login(creds["username"], creds["password"], BEARER, ttl).token
        return {"access_token": token, "token_type": "bearer",
                "expires_in": int(ttl.total_seconds())}

    @blp.response(204)
    def delete(self):
        """Revoke the token (or session) this request was made with."""
        door().accounts.revoke(token_id=g.principal.token_id, now=utcnow())
        session.clear()


@blp.route("/login")
class Login(MethodView):
    @blp.arguments(Credentials)
    @blp.response(200, Me)
    @blp.doc(security=[])
    def post(self, creds):
        """Log in a browser: sets the session cookie (anonymous).

        Throttled as `POST /auth/token` is (429 with `Retry-After`)."""
        _start_session(creds["username"], creds["password"])
        return _me()


@blp.route("/logout")
class Logout(MethodView):
    @blp.response(204)
    def post(self):
        """End the browser session (the session token is revoked)."""
        door().accounts.revoke(token_id=g.principal.token_id, now=utcnow())
        session.clear()


@blp.route("/me")
class WhoAmI(MethodView):
    @blp.response(200, Me)
    def get(self):
        """The signed-in account, its roles, and the CSRF token for cookie clients."""
        return _me()


@blp.route("/lockouts")
class Lockouts(MethodView):
    @blp.response(200, LockoutOut(many=True))
    def get(self):
        """Failed-login counters and lockouts (登录锁定); admins only.

        Every account name and address with failures in its window, locked ones first."""
        return [asdict(x) for x in door().accounts.lockouts(viewer=viewer(), now=utcnow())]


@blp.route("/lockouts/lift")
class LiftLockout(MethodView):
    @blp.arguments(LiftIn)
    @blp.response(200, LiftOut)
    def post(self, body):
        """Lift the lockout of an account name or an address (解除锁定); admins only.

        Clears its counter, so logging in is allowed again at once; recorded in the
        security log. `lifted` is false when there was nothing to lift."""
        was = door().accounts.lift_lockout(viewer=viewer(), username=body.get("username"),
                                           address=body.get("address"), now=utcnow())
        return {"lifted": was is not None, "was": asdict(was) if was else None}


@blp.route("/security-events")
class SecurityEvents(MethodView):
    @blp.arguments(EventQuery, location="query")
    @blp.response(200, EventList)
    def get(self, args):
        """The security log (安全日志), newest first; admins only.

        Failed logins, lockouts and their lifting, deactivations and reactivations of
        people: who, from which address, when, and the admin who did it."""
        items, total = door().accounts.security_events(viewer=viewer(), **args)
        return {"items": items, "total": total, "page": args["page"],
                "per_page": args["per_page"]}


def _me() -> dict:
    v: Viewer = g.viewer
    return {"username": g.principal.username, "person_id": g.principal.person_id,
            "roles": [{"role": r, "unit_id": u} for r, u, _p in v.assignments],
            "csrf_token": session.get("csrf")}


def _login(username: str, password: str, kind: str, ttl: dt.timedelta) -> IssuedToken:
    """The one way to log in over HTTP: throttled by name and address, then a token."""
    return door().accounts.login(username=username, password=password,
                                 address=request.remote_addr,
                                 policy=current_app.config["CIVFLOW_LOGIN_POLICY"], kind=kind,
                                 ttl=ttl, now=utcnow())


def _start_session(username: str, password: str) -> None:
    token = _login(username, password, SESSION,
                   current_app.config["CIVFLOW_SESSION_TTL"]).token
    session.clear()
    session["t"] = token
    session["csrf"] = secrets.token_urlsafe(24)
    session.permanent = True
    _sign_in(token)


def _sign_in(token: str) -> None:
    """Resolve the token and load the viewer's roles in one read (g.principal, g.viewer)."""
    signed = door().accounts.sign_in(token=token, now=utcnow())
    g.viewer, g.principal = signed.viewer, signed.principal


def _check_csrf() -> None:
    sent = request.headers.get("X-CSRF-Token", "")
    if not hmac.compare_digest(sent, session.get("csrf", "")):
        raise Forbidden(msg("auth.csrf_required"), rule="csrf")


R = TypeVar("R")


def signed_action(call: Callable[[str, dt.datetime], Signed[R]]) -> R:
    """For an endpoint in DEFERRED: `call(token, now)` signs the request in inside the
    change's own transaction (`Engine.fire_signed`, `start_signed`, `bulk_signed`, …). A browser
    session whose token is refused is ended, as `_authenticate` ends it."""
    try:
        done = call(g.token, utcnow())
    except AuthFailed:
        if g.token_of_session:
            session.clear()
        raise
    g.viewer, g.principal = done.signed.viewer, done.signed.principal
    return done.result


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
        current_app.config["SECRET_KEY"] = door().accounts.secret()
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
        except LoginThrottled as exc:
            return (render_template("login.html", error=False, next=nxt, username=username,
                                    expired=False, wait_minutes=-(-exc.retry_after // 60)),
                    429, {"Retry-After": str(exc.retry_after)})
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
    deferred = (request.endpoint, method) in DEFERRED
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthFailed(msg("auth.use_bearer"))
        if deferred:
            g.token, g.token_of_session = token.strip(), False
        else:
            _sign_in(token.strip())
    elif session.get("t"):
        if deferred:
            _check_csrf()
            g.token, g.token_of_session = session["t"], True
            return None
        try:
            _sign_in(session["t"])
        except AuthFailed:
            session.clear()
            if not request.path.startswith(("/api/", "/metrics")):
                return _to_login(expired=True)  # an expired or revoked browser session
            raise
        if request.method not in SAFE and request.path.startswith("/api/"):
            _check_csrf()
    elif request.path.startswith(("/api/", "/metrics")):
        raise AuthFailed(msg("auth.log_in_first"))
    else:
        return _to_login()
    return None


def _throttled(exc: LoginThrottled):
    return jsonify(body_of(exc)), 429, {"Retry-After": str(exc.retry_after)}


LOGIN_SETTINGS = {  # environment variable → (ThrottlePolicy field, default, unit)
    "CIVFLOW_LOGIN_ACCOUNT_FAILURES": ("account_failures", 5, None),
    "CIVFLOW_LOGIN_ADDRESS_FAILURES": ("address_failures", 20, None),
    "CIVFLOW_LOGIN_WINDOW": ("window", 900, "seconds"),
    "CIVFLOW_LOGIN_LOCKOUT": ("lockout", 900, "seconds"),
    "CIVFLOW_LOGIN_ADDRESS_LOCKOUT": ("address_lockout", 900, "seconds"),
}


def login_policy(environ: Mapping[str, str]) -> ThrottlePolicy:
    """The login throttle from CIVFLOW_LOGIN_* (whole numbers; durations in seconds)."""
    values = {}
    for name, (field, default, unit) in LOGIN_SETTINGS.items():
        raw = environ.get(name, "").strip() or str(default)
        try:
            number = int(raw)
            if number < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"{name}={raw!r}: a whole number of at least 1 is needed"
                             + (f" ({unit})" if unit else "")) from None
        values[field] = dt.timedelta(seconds=number) if unit else number
    return ThrottlePolicy(**values)


def _proxy_hops(environ: Mapping[str, str]) -> int:
    raw = environ.get("CIVFLOW_PROXY_HOPS", "").strip() or "0"
    if not raw.isdigit():
        raise ValueError(f"CIVFLOW_PROXY_HOPS={raw!r}: the number of trusted proxies "
                         "(0 when clients connect directly) is needed")
    return int(raw)


def init_app(app: Flask, api: Api) -> None:
    app.config.setdefault("CIVFLOW_LOGIN_POLICY", login_policy(os.environ))
    app.config.setdefault("CIVFLOW_PROXY_HOPS", _proxy_hops(os.environ))
    if app.config["CIVFLOW_PROXY_HOPS"]:
        # Only behind proxies that set X-Forwarded-For: trusting it otherwise would let a
        # client name its own address and escape the per-address throttle.
        hops = app.config["CIVFLOW_PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.register_error_handler(LoginThrottled, _throttled)
    app.session_interface = _SecretLoadingSessions()
    app.permanent_session_lifetime = dt.timedelta(
        seconds=app.config["CIVFLOW_SESSION_TTL"].total_seconds())
    app.add_url_rule("/login", "login_page", login_page, methods=["GET", "POST"])
    app.add_url_rule("/", "index", lambda: redirect(url_for("web.home")))
    app.before_request(_authenticate)
    api.register_blueprint(blp)
