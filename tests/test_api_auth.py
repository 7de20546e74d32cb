"""Authentication over HTTP: tokens, sessions, expiry, revocation, CSRF, anonymous access."""

from __future__ import annotations

import datetime as dt

from workflows.accounts import BEARER, issue_token

from .conftest import PASSWORD


def test_only_health_and_login_answer_anonymously(api):
    c = api.client
    assert c.get("/healthz").status_code == 200
    for url in ("/api/v1/cases", "/api/v1/queue", "/api/v1/flows", "/api/v1/auth/me",
                "/api/v1/openapi.json", "/metrics", "/api/v1/org/units"):
        r = c.get(url)
        assert r.status_code == 401, url
        assert r.json["code"] == "unauthorized" and r.json["status"] == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert c.get("/docs").status_code == 302  # browsers are sent to /login
    assert c.get("/login").status_code == 200


def test_token_login_and_wrong_passwords(api):
    c = api.client
    r = c.post("/api/v1/auth/token", json={"username": "s1", "password": PASSWORD})
    assert r.status_code == 201
    assert r.json["token_type"] == "bearer" and r.json["expires_in"] == 8 * 3600
    assert len(r.json["access_token"]) >= 40
    for body in ({"username": "s1", "password": "nope-nope"},
                 {"username": "ghost", "password": PASSWORD}):
        r = c.post("/api/v1/auth/token", json=body)
        assert r.status_code == 401 and r.json["message"] == "wrong username or password"
    r = c.post("/api/v1/auth/token", json={"username": "s1"})
    assert r.status_code == 422 and r.json["fields"] == {"json.password": ["is required"]}
    r = c.get("/api/v1/cases", headers={"Authorization": "Basic czE6eA=="})
    assert r.status_code == 401 and "Bearer" in r.json["message"]
    r = c.get("/api/v1/cases", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and r.json["message"] == "unknown token"


def test_tokens_expire_and_can_be_revoked(api, db):
    me = api.get("s1", "/api/v1/auth/me")
    assert me.status_code == 200 and me.json["username"] == "s1"
    r = api.client.delete("/api/v1/auth/token", headers=api.headers("s1"))
    assert r.status_code == 204
    r = api.get("s1", "/api/v1/auth/me")
    assert r.status_code == 401 and r.json["message"] == "the token was revoked"

    from sqlalchemy import select

    from workflows.models import User

    with db.unit_of_work(write=False) as s:
        uid = s.execute(select(User.id).where(User.username == "s2")).scalar()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=9)
    token, _ = issue_token(db, uid, BEARER, dt.timedelta(hours=8), past)
    r = api.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json["message"] == "the token has expired"


def test_browser_session_with_csrf(api):
    c = api.client
    r = c.post("/api/v1/auth/login", json={"username": "s1", "password": PASSWORD})
    assert r.status_code == 200 and r.json["csrf_token"]
    csrf = r.json["csrf_token"]
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert c.get("/api/v1/cases").status_code == 200  # the cookie authenticates reads
    body = {"flow": "regular-assessment", "subject_id": api.org.s1, "period_key": "2026-11"}
    r = c.post("/api/v1/cases", json=body)
    assert r.status_code == 403 and r.json["rule"] == "csrf"
    r = c.post("/api/v1/cases", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    assert c.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert c.get("/api/v1/cases").status_code == 401


def test_login_page_and_safe_redirects(api):
    c = api.client
    c.get("/login")  # the login form's CSRF token is made for the anonymous session
    with c.session_transaction() as s:
        csrf = s["csrf"]
    r = c.post("/login", data={"username": "s1", "password": "wrong-password",
                               "csrf_token": csrf})
    assert r.status_code == 401 and "用户名或密码错误" in r.get_data(as_text=True)
    r = c.post("/login", data={"username": "s1", "password": PASSWORD, "csrf_token": csrf,
                               "next": "https://evil.example/"})
    assert r.status_code == 302 and r.headers["Location"] == "/home"  # the person's to-dos
    assert c.get("/docs").status_code == 200


def test_request_ids(api):
    r = api.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    r = api.client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["X-Request-ID"] != "bad id with spaces" and len(r.headers["X-Request-ID"]) == 32


def test_metrics_for_admins(api):
    case = api.post("s1", "/api/v1/cases", json={
        "flow": "regular-assessment", "subject_id": api.org.s1, "period_key": "2026-11"}).json
    api.post("s1", f"/api/v1/cases/{case['id']}/actions/submit",
             json={"data": {"summary": "x"}}, headers={"If-Match": '"1"'})
    assert api.get("s1", "/metrics").json["rule"] == "needs_admin"
    text = api.get("admin", "/metrics").get_data(as_text=True)
    assert 'civflow_actions_total{flow="regular-assessment",outcome="ok",trigger="submit"}' in text
    assert "civflow_http_request_seconds_bucket" in text
    assert 'civflow_http_requests_total{endpoint="cases.Cases",method="POST",status="201"}' in text
