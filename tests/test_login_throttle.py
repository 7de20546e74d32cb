"""Login throttling (登录限流, issue 11 item 4): failed logins are counted per account name
and per client address in the database, a key over its limit is refused with 429 and
Retry-After before any Argon2 hash, unknown names behave exactly like real ones, a good
password clears the account's count, and admins see the security log and lift lockouts."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from service.app import create_app
from service.auth import login_policy
from service.cli import main
from workflows import accounts
from workflows.accounts import (
    AuthFailed,
    LoginThrottled,
    ThrottlePolicy,
    address_key,
    lift_lockout,
    login,
)
from workflows.models import LoginThrottle, SecurityEvent

from .conftest import PASSWORD

POLICY = ThrottlePolicy(account_failures=3, address_failures=5,
                        window=dt.timedelta(minutes=10), lockout=dt.timedelta(minutes=15),
                        address_lockout=dt.timedelta(minutes=5))
T0 = dt.datetime(2026, 12, 4, 8, 0, tzinfo=dt.UTC)


class CountingHasher:
    """Counts the Argon2 verifications (the expensive part a throttle must spare)."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def verify(self, hashed, password):
        self.calls += 1
        return self.real.verify(hashed, password)


@pytest.fixture
def hasher(monkeypatch):
    counting = CountingHasher(accounts._hasher)
    monkeypatch.setattr(accounts, "_hasher", counting)
    return counting


@pytest.fixture
def client(api):
    """The service with the test policy (3 per account, 5 per address)."""
    app = create_app(api.db.url, config={"TESTING": True, "SECRET_KEY": "test",
                                         "CIVFLOW_LOGIN_POLICY": POLICY},
                     engine=api.client.application.extensions["civflow"])
    return app.test_client()


def _retry_after(response, most: int) -> int:
    """The Retry-After of a 429 (on the wall clock: at most the lockout, at least 1 s)."""
    assert response.status_code == 429
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= most
    return wait


def _token(client, username, password=PASSWORD, address="127.0.0.1"):
    return client.post("/api/v1/auth/token", json={"username": username, "password": password},
                       environ_base={"REMOTE_ADDR": address, "HTTP_ACCEPT_LANGUAGE": "en"})


def test_an_account_is_locked_after_its_failures_and_no_hash_is_spent_on_it(api, client,
                                                                           hasher):
    for _ in range(3):
        r = _token(client, "s1", "wrong-password")
        assert r.status_code == 401 and r.json["message"] == "wrong username or password"
    assert hasher.calls == 3
    r = _token(client, "s1")  # the right password, too late
    assert r.status_code == 429
    wait = _retry_after(r, 900)
    assert r.json == {"status": 429, "code": "too_many_attempts", "retry_after": wait,
                      "message": f"too many failed logins; try again in {wait} seconds",
                      "key": "account.throttled", "params": {"seconds": wait}}
    assert hasher.calls == 3  # refused before hashing
    # Another account from the same address is not locked by s1's failures.
    assert _token(client, "s2").status_code == 201


def test_unknown_names_are_throttled_exactly_like_real_ones(api, client):
    def attempts(name, address):
        out = []
        for _ in range(4):
            r = _token(client, name, "wrong-password", address)
            body = dict(r.json)
            out.append((r.status_code, body, r.headers.get("Retry-After")))
        return out

    assert attempts("s1", "10.0.0.1") == attempts("nobody-here", "10.0.0.2")
    with api.db.unit_of_work(write=False) as s:
        keys = set(s.execute(select(LoginThrottle.key)).scalars())
    assert {"account:s1", "account:nobody-here"} <= keys


def test_an_address_is_refused_after_failures_on_many_names(api, client, hasher):
    for i in range(5):
        assert _token(client, f"guess{i}", "wrong-password", "10.9.9.9").status_code == 401
    r = _token(client, "s1", PASSWORD, "10.9.9.9")  # even a real account with its password
    _retry_after(r, 300)
    assert hasher.calls == 5
    assert _token(client, "s1", PASSWORD, "10.9.9.10").status_code == 201  # other address


def test_a_good_password_clears_the_account_count(api, client):
    for _ in range(2):
        assert _token(client, "s1", "wrong-password").status_code == 401
    assert _token(client, "s1").status_code == 201
    for _ in range(2):  # two more failures are allowed again
        assert _token(client, "s1", "wrong-password").status_code == 401
    assert _token(client, "s1").status_code == 201
    with api.db.unit_of_work(write=False) as s:
        # The address keeps its count of failures; the successes gave their attempts back.
        (row,) = s.execute(select(LoginThrottle)).scalars().all()
        assert (row.key, row.failures) == ("address:127.0.0.1", 4)


def test_the_browser_login_and_the_login_form_are_throttled_too(api, client):
    for _ in range(3):
        r = client.post("/api/v1/auth/login", json={"username": "s1", "password": "nope-nope"})
        assert r.status_code == 401
    r = client.post("/api/v1/auth/login", json={"username": "s1", "password": PASSWORD})
    assert _retry_after(r, 900) == r.json["retry_after"]
    assert r.json["code"] == "too_many_attempts"
    # The form (its CSRF token comes with the page).
    page = client.get("/login")
    csrf = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    r = client.post("/login", data={"username": "s1", "password": PASSWORD,
                                    "csrf_token": csrf, "next": "/"})
    minutes = -(-_retry_after(r, 900) // 60)
    assert f"登录失败次数过多，请 {minutes} 分钟后再试。" in r.get_data(as_text=True)
    assert client.get("/api/v1/auth/me").status_code == 401  # no session was started


def test_a_lockout_runs_out_and_gives_a_fresh_quota(api):
    db = api.db
    for i in range(3):
        with pytest.raises(AuthFailed):
            login(db, "s1", "wrong-password", "10.1.1.1", POLICY, T0 + dt.timedelta(seconds=i))
    with pytest.raises(LoginThrottled) as refused:
        login(db, "s1", PASSWORD, "10.1.1.1", POLICY, T0 + dt.timedelta(minutes=1))
    # Locked at the third failure (T0 + 2 s) for 15 minutes: 14 min 2 s left.
    assert refused.value.retry_after == 14 * 60 + 2
    later = T0 + dt.timedelta(minutes=16)
    assert login(db, "s1", PASSWORD, "10.1.1.1", POLICY, later).username == "s1"
    # Failures in an ended window do not add up with new ones.
    for minutes in (17, 18, 30, 31):
        with pytest.raises(AuthFailed):
            login(db, "s2", "wrong-password", "10.1.1.1", POLICY,
                  later + dt.timedelta(minutes=minutes))
    assert login(db, "s2", PASSWORD, "10.1.1.1", POLICY,
                 later + dt.timedelta(minutes=32)).username == "s2"


def test_failed_logins_and_lockouts_are_audited(api, client):
    for _ in range(3):
        _token(client, "s1", "wrong-password", "10.2.2.2")
    _token(client, "s1", PASSWORD, "10.2.2.2")  # refused: not a password check, not logged
    with api.db.unit_of_work(write=False) as s:
        events = s.execute(select(SecurityEvent).order_by(SecurityEvent.id)).scalars().all()
    assert [(e.kind, e.username, e.user_id, e.address) for e in events] == [
        ("login_failed", "s1", api.users["s1"], "10.2.2.2")] * 3 + [
        ("lockout", "s1", api.users["s1"], "10.2.2.2")]
    assert events[-1].detail["key"] == "account:s1" and events[-1].detail["failures"] == 3


def test_admins_list_lockouts_and_the_log_and_lift_a_lockout(api, client):
    for _ in range(3):
        _token(client, "s1", "wrong-password")
    assert _token(client, "s1").status_code == 429
    admin = api.headers("admin")
    r = client.get("/api/v1/auth/lockouts", headers=admin)
    assert r.status_code == 200
    assert [(x["key"], x["failures"], x["locked"]) for x in r.json] == [
        ("account:s1", 3, True), ("address:127.0.0.1", 3, False)]
    r = client.get("/api/v1/auth/security-events?kind=lockout", headers=admin)
    assert r.status_code == 200 and r.json["total"] == 1
    assert r.json["items"][0]["username"] == "s1"
    assert client.get("/api/v1/auth/lockouts", headers=api.headers("s2")).status_code == 403
    r = client.post("/api/v1/auth/lockouts/lift", json={"username": "s1"},
                    headers=api.headers("s2"))
    assert r.status_code == 403 and r.json["rule"] == "needs_admin"

    r = client.post("/api/v1/auth/lockouts/lift", json={"username": "s1"}, headers=admin)
    assert r.status_code == 200 and r.json["lifted"] is True
    assert r.json["was"]["locked"] is True and r.json["was"]["failures"] == 3
    assert _token(client, "s1").status_code == 201
    r = client.post("/api/v1/auth/lockouts/lift", json={"username": "s1"}, headers=admin)
    assert r.json == {"lifted": False, "was": None}
    r = client.get("/api/v1/auth/security-events?kind=lockout_lifted", headers=admin)
    (event,) = r.json["items"]
    assert (event["username"], event["by"]) == ("s1", api.org.admin)
    for bad in ({}, {"username": "s1", "address": "1.2.3.4"}):
        r = client.post("/api/v1/auth/lockouts/lift", json=bad, headers=admin)
        assert r.status_code == 422
        assert r.json["field_keys"]["json.username"][0]["key"] == "auth.username_or_address"
        assert r.json["fields"]["json.username"] == ["请填写用户名或地址（二者之一）"]
    r = client.get("/api/v1/auth/security-events?kind=nonsense", headers=admin)
    assert r.status_code == 422


def test_the_cli_lists_and_lifts_lockouts(api, client):
    for _ in range(5):
        _token(client, f"x{_}", "wrong-password", "10.3.3.3")
    run = CliRunner().invoke
    done = run(main, ["lockouts", "--db", api.db.url])
    assert done.exit_code == 0 and "address:10.3.3.3\t5 failure(s)\tlocked until" in done.output
    done = run(main, ["unlock", "--address", "10.3.3.3", "--db", api.db.url])
    assert done.exit_code == 0 and "lifted: address 10.3.3.3 (5 failure(s), was locked)" \
        in done.output
    assert _token(client, "s1", PASSWORD, "10.3.3.3").status_code == 201
    done = run(main, ["unlock", "nobody", "--db", api.db.url])
    assert done.exit_code == 0 and "nothing to lift" in done.output
    assert run(main, ["unlock", "--db", api.db.url]).exit_code == 2
    with api.db.unit_of_work(write=False) as s:
        lifted = s.execute(select(SecurityEvent).where(SecurityEvent.kind == "lockout_lifted")
                           ).scalar_one()
    assert (lifted.address, lifted.by) == ("10.3.3.3", None)


def test_the_client_address_comes_from_the_proxy_only_when_configured(api):
    engine = api.client.application.extensions["civflow"]
    policy = ThrottlePolicy(account_failures=50, address_failures=1)
    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    for hops, expected in ((0, "address:127.0.0.1"), (1, "address:203.0.113.7")):
        app = create_app(api.db.url, engine=engine, config={
            "TESTING": True, "SECRET_KEY": "test", "CIVFLOW_LOGIN_POLICY": policy,
            "CIVFLOW_PROXY_HOPS": hops})
        r = app.test_client().post("/api/v1/auth/token", headers=forwarded,
                                   json={"username": "s1", "password": "wrong-password"})
        assert r.status_code == 401
        with api.db.unit_of_work(write=False) as s:
            keys = set(s.execute(select(LoginThrottle.key)).scalars())
        assert expected in keys, keys
        lift_lockout(api.db, address=expected.split(":", 1)[1], by=None,
                     now=dt.datetime.now(dt.UTC))


def test_the_settings_and_their_defaults():
    assert login_policy({}) == ThrottlePolicy()
    assert ThrottlePolicy() == ThrottlePolicy(5, 20, dt.timedelta(minutes=15),
                                              dt.timedelta(minutes=15),
                                              dt.timedelta(minutes=15))
    p = login_policy({"CIVFLOW_LOGIN_ACCOUNT_FAILURES": "8", "CIVFLOW_LOGIN_WINDOW": "60",
                      "CIVFLOW_LOGIN_LOCKOUT": "3600"})
    assert (p.account_failures, p.window, p.lockout) == (8, dt.timedelta(seconds=60),
                                                         dt.timedelta(hours=1))
    for name, value in (("CIVFLOW_LOGIN_WINDOW", "0"), ("CIVFLOW_LOGIN_LOCKOUT", "soon"),
                        ("CIVFLOW_LOGIN_ADDRESS_FAILURES", "-1")):
        with pytest.raises(ValueError, match=name):
            login_policy({name: value})


def test_address_keys():
    assert address_key("192.0.2.1") == "address:192.0.2.1"
    assert address_key("::ffff:192.0.2.1") == "address:192.0.2.1"
    # One IPv6 subscriber (a /64) is one address.
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") == \
        "address:2001:db8:1:2::/64"
    assert address_key(None) == "address:unknown"


def test_a_good_password_in_flight_clears_a_lock_set_meanwhile(api):
    """A right password (S) and a wrong one (F) checked at once, F finishing first and
    reaching the limit: the account is locked, then S proves it — the lock goes."""
    db = api.db
    keys = [accounts.account_key("s1"), address_key("10.4.4.4")]
    with pytest.raises(AuthFailed):
        login(db, "s1", "wrong-password", "10.4.4.4", POLICY, T0)
    accounts._reserve(db, keys, POLICY, T0)  # S counted
    accounts._reserve(db, keys, POLICY, T0)  # F counted: the quota of 3 is taken
    with pytest.raises(LoginThrottled):  # any other attempt now waits for the window
        login(db, "s1", PASSWORD, "10.4.4.4", POLICY, T0)
    accounts._settle_failure(db, keys, "s1", api.users["s1"], "10.4.4.4", POLICY, T0)
    with db.unit_of_work(write=False) as s:
        assert s.get(LoginThrottle, "account:s1").locked_until is not None
    accounts._settle_success(db, keys, T0)
    with db.unit_of_work(write=False) as s:
        assert s.get(LoginThrottle, "account:s1") is None
        assert s.get(LoginThrottle, "address:10.4.4.4").failures == 2
    assert login(db, "s1", PASSWORD, "10.4.4.4", POLICY, T0).username == "s1"
