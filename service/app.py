"""The Flask app factory: the REST API (flask-smorest), authentication, request ids, metrics.

Views are thin: they parse with a marshmallow schema, call the engine once and let the
error handlers turn engine exceptions into the one JSON error shape (`service.errors`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import flask_swagger_ui
from flask import (
    Flask,
    g,
    has_request_context,
    jsonify,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from flask_smorest import Api
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from workflows.engine import Engine
from workflows.errors import CivflowError, FieldErrors
from workflows.frontdoor import DatabaseBusy, DatabaseError
from workflows.messages import msg

from . import auth, limits, metrics, web
from .errors import ProblemSchema, body_of, http_body, status_of
from .runtime import make_engine

log = logging.getLogger("civflow.http")
SWAGGER_ASSETS = Path(flask_swagger_ui.__file__).parent / "dist"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# Every answer's security headers. Scripts come only from our own static files (htmx,
# mermaid, civflow.js, owner.js, api-docs.js: no inline script anywhere); inline *styles*
# are allowed because mermaid writes a <style> into each diagram it draws and htmx adds
# one for its indicators. Images may be data: URLs (Swagger UI's icons). No framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
MAX_ID = 2**31 - 1  # PostgreSQL INTEGER; SQLite would overflow at 2**63


class DatabaseId(IntegerConverter):
    def __init__(self, url_map, *args, **kwargs):
        kwargs.setdefault("max", MAX_ID)
        super().__init__(url_map, *args, **kwargs)


def _unreachable(exc: DatabaseBusy) -> bool:
    """The database cannot be used just now: a connection failure (SQLSTATE class 08, or
    psycopg's "connection failed", which carries none), an administrator's shutdown
    (57P01–57P03), or SQLite still locked after its busy timeout."""
    if isinstance(exc.orig, sqlite3.OperationalError):
        return "locked" in str(exc.orig)
    code = getattr(exc.orig, "sqlstate", None)
    return code is None or code.startswith("08") or code in ("57P01", "57P02", "57P03")


def _unavailable(exc: DatabaseError):
    """The database went away (restart, failover); the pool reconnects on the next request.
    Tell the client to retry — with its Idempotency-Key, since a connection lost during
    COMMIT leaves it unknown whether the action was applied."""
    log.warning("database unavailable: %s", (str(exc.orig).splitlines() or [""])[0])
    return (jsonify(status=503, code="database_unavailable",
                    message="the database is not reachable just now; try again shortly with "
                    "the same Idempotency-Key (the action may or may not have been applied)"),
            503, {"Retry-After": "2"})


class CivflowApi(Api):
    """flask-smorest's Api with civflow's error shape for every HTTP error."""

    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error: HTTPException):
        body = http_body(error)
        headers = getattr(error, "data", {}).get("headers") if hasattr(error, "data") else None
        return jsonify(body), body["status"], headers or {}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def _configure_logging() -> None:
    root = logging.getLogger("civflow")
    if not any(isinstance(f, _RequestIdFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.addFilter(_RequestIdFilter())
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("CIVFLOW_LOG_LEVEL", "INFO"))
        root.propagate = False


def _bad_text(value: str) -> bool:
    """NUL (PostgreSQL text cannot hold it) or a lone surrogate (not UTF-8 at all)."""
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _nul_in_request() -> str | None:
    """The first place in the path, query or JSON body holding text no database can store."""
    if _bad_text(request.path):
        return "path"
    for key, value in request.args.items(multi=True):
        if _bad_text(key) or _bad_text(value):
            return f"query.{key}"
    return _nul_path(limits.json_body(), "json")


def _nul_path(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if _bad_text(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and _bad_text(key):
            return f"{path}.{key}"
        found = _nul_path(item, f"{path}.{key}")
        if found:
            return found
    return None


def create_app(db_url: str | None = None, config: dict[str, Any] | None = None,
               engine: Engine | None = None) -> Flask:
    app = Flask(__name__)
    engine = engine or make_engine(db_url)
    app.config.update(
        API_TITLE="civflow",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="api/v1/openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
        SESSION_COOKIE_NAME="civflow_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=os.environ.get("CIVFLOW_COOKIE_SECURE", "") == "1",
        CIVFLOW_TOKEN_TTL=dt.timedelta(hours=8),
        CIVFLOW_SESSION_TTL=dt.timedelta(hours=8),
        API_SPEC_OPTIONS={
            "info": {"description": "civflow: civil-service personnel workflows "
                                    "(平时考核, 年度考核, 职级晋升, 下沉一线)."},
            "components": {"securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "civflow_session"}}},
            "security": [{"bearer": []}, {"session": []}],
        },
    )
    app.config.update(config or {})
    limits.configure(app)
    app.extensions["civflow"] = engine
    app.config.setdefault("SECRET_KEY", os.environ.get("CIVFLOW_SECRET_KEY"))
    _configure_logging()

    # Ids in paths fit the database's INTEGER; a larger number is simply no route (404).
    app.url_map.converters["int"] = DatabaseId
    api = CivflowApi(app)
    api.register_converter(
        DatabaseId, lambda _c: {"type": "integer", "minimum": 0, "maximum": MAX_ID})
    app.extensions["civflow_api"] = api

    @app.errorhandler(DatabaseBusy)
    def _contention(exc: DatabaseBusy):
        # A deadlock or serialization failure is the database refereeing a race: the
        # client may simply retry. Anything else is a real failure.
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if code in ("40P01", "40001"):
            return jsonify(status=409, code="retry", message="another change to the same "
                           "cases got in the way; try again"), 409
        if exc.connection_invalidated or _unreachable(exc):
            return _unavailable(exc)
        raise exc

    @app.errorhandler(DatabaseError)
    def _lost(exc: DatabaseError):
        if exc.connection_invalidated:  # e.g. an InterfaceError on a connection cut mid-way
            return _unavailable(exc)
        raise exc

    @app.errorhandler(CivflowError)
    def _civflow_error(exc: CivflowError):
        body = body_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if body["status"] == 401 else {}
        return jsonify(body), status_of(exc), headers

    @app.before_request
    def _start():
        rid = request.headers.get("X-Request-ID", "")
        g.request_id = rid if REQUEST_ID.match(rid) else uuid.uuid4().hex
        g.started = time.perf_counter()
        limits.check_size()  # before anything reads the body
        where = _nul_in_request()
        if where:
            # PostgreSQL text cannot hold NUL: refuse it here, once, for every endpoint.
            raise FieldErrors({where: [msg("request.nul_characters")]})

    @app.after_request
    def _finish(response):
        response.headers["X-Request-ID"] = g.get("request_id", "-")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.observe_request(request, response, elapsed)
        principal = g.get("principal")
        log.info("%s %s %s %.1fms user=%s", request.method, request.path,
                 response.status_code, elapsed * 1000,
                 principal.username if principal else "-")
        return response

    @app.get("/healthz")
    def healthz():
        try:
            health = engine.door.system.ping()
        except Exception as exc:  # noqa: BLE001 - any database failure is "unavailable"
            return jsonify(status="unavailable", database=exc.__class__.__name__), 503
        return jsonify(status="ok", database=health.dialect)

    def swagger_ui():
        # flask-smorest's page starts Swagger UI from an inline script, which the CSP
        # refuses: the same page with the start moved to static/api-docs.js.
        return render_template("api_docs.html", title=app.config["API_TITLE"],
                               spec_url=url_for("api-docs.openapi_json"))

    app.view_functions["api-docs.openapi_swagger_ui"] = swagger_ui

    @app.get("/docs/assets/<path:name>")
    def swagger_assets(name: str):
        return send_from_directory(SWAGGER_ASSETS, name)

    auth.init_app(app, api)
    metrics.init_app(app, engine)
    web.init_app(app)  # the pages (网页): service/web
    from .api import (
        cases,
        contact_points,
        contact_register,
        facts,
        flows,
        ledger,
        migrations,
        notifications,
        org,
        positions,
        queue,
    )

    for module in (flows, cases, queue, org, notifications, facts, ledger, contact_points,
                   contact_register, positions, migrations):
        api.register_blueprint(module.blp)
    return app
