"""Notifications: who is told, the outbox, e-mail and webhook delivery, retries, races, and
reminders fired by the timer worker."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from workflows import notify
from workflows.db import Database
from workflows.engine import Actor
from workflows.models import Delivery, Notification, Person, Timer, Unit
from workflows.notify import Deliverer, NotifyConfig, on_timer_event, queue, recipients
from workflows.org import add_person, add_unit, assign_role
from workflows.spec import load_definition
from workflows.timers import TimerWorker

T0 = dt.datetime(2027, 3, 1, 2, 0, tzinfo=dt.UTC)
# A month ahead of the real clock (cases start "now"), so that its deadlines lie ahead.
NEXT_YEAR = dt.date.today().year + 1
PERIOD = f"{NEXT_YEAR}-06"
SECRET = "s3cret-for-tests"

ROLES_FLOW = """
flow: notify-roles
title: {zh: 通知测试}
period: none
roles:
  committee: {resolve: unit_role, role: committee}
  local_committee: {resolve: unit_role, role: committee, inherit: false}
  hr: {resolve: group, group: hr-office}
states:
  - {name: draft, label: 草稿, actor: subject}
  - {name: done, label: 完成, final: true}
transitions:
  - {trigger: finish, label: 完成, from: draft, to: done, by: subject}
"""


@pytest.fixture
def spec():
    return load_definition(ROLES_FLOW, "notify-roles.yaml")


def _case(org, who: str, unit: str = "SEC1"):
    """Enough of a case row for `recipients`: its subject and its unit."""
    return SimpleNamespace(subject_id=org.ids[who], unit_id=org.units[unit])


def _who(db, org, case, spec, roles) -> list[str]:
    names = {pid: name for name, pid in org.ids.items()}
    with db.unit_of_work(write=False) as s:
        return [names[p] for p in recipients(s, case, spec, roles)]


def _grant(db, org, who: str, role: str, unit: str | None):
    with db.unit_of_work() as s:
        assign_role(s, s.get(Person, org.ids[who]), role,
                    s.get(Unit, org.units[unit]) if unit else None)


def _deactivate(db, org, who: str):
    with db.unit_of_work() as s:
        s.get(Person, org.ids[who]).active = False


def _set_email(db, org, **emails):
    with db.unit_of_work() as s:
        for who, address in emails.items():
            s.get(Person, org.ids[who]).email = address


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _queue(db, person_ids, key_prefix="evt:1", config=None, title="提醒：测试", now=T0,
           case_id=None, kind="reminder", body="正文"):
    with db.unit_of_work() as s:
        return queue(s, person_ids=person_ids, case_id=case_id, kind=kind, title=title,
                     body=body, key_prefix=key_prefix, now=now, config=config or NotifyConfig())


def _deliveries(db) -> list[Delivery]:
    with db.unit_of_work(write=False) as s:
        return list(s.execute(select(Delivery).order_by(Delivery.id)).scalars())


def _notifications(db) -> list[Notification]:
    with db.unit_of_work(write=False) as s:
        return list(s.execute(select(Notification).order_by(Notification.id)).scalars())


# --------------------------------------------------------------------------- recipients


def test_subject_and_nearest_leader(db, org, spec):
    assert _who(db, org, _case(org, "s1"), spec, ["subject"]) == ["s1"]
    assert _who(db, org, _case(org, "s1"), spec, ["leader"]) == ["l1"]
    assert _who(db, org, _case(org, "t1", "SEC2"), spec, ["leader"]) == ["l2"]
    # A section chief's own case goes to the leader of the unit above, not to themself.
    assert _who(db, org, _case(org, "l1"), spec, ["leader"]) == ["chief"]
    # Nobody above the chief: no leader at all.
    assert _who(db, org, _case(org, "chief", "ORG"), spec, ["leader"]) == []
    # Two leaders of the nearest unit: both; an inactive one is skipped.
    _grant(db, org, "d1", "leader", "SEC1")
    assert sorted(_who(db, org, _case(org, "s1"), spec, ["leader"])) == ["d1", "l1"]
    _deactivate(db, org, "l1")
    _deactivate(db, org, "d1")
    assert _who(db, org, _case(org, "s1"), spec, ["leader"]) == ["chief"]


def test_unit_role_inherits_from_the_nearest_unit_with_holders(db, org, spec):
    sec1 = _case(org, "s1")
    assert _who(db, org, sec1, spec, ["committee"]) == ["c1", "c2"]
    assert _who(db, org, sec1, spec, ["local_committee"]) == []  # inherit: false
    assert _who(db, org, _case(org, "chief", "ORG"), spec, ["local_committee"]) == ["c1", "c2"]
    _grant(db, org, "s5", "committee", "SEC1")
    assert _who(db, org, sec1, spec, ["committee"]) == ["s5"]  # the nearest unit wins
    assert _who(db, org, sec1, spec, ["local_committee"]) == ["s5"]
    _deactivate(db, org, "s5")
    assert _who(db, org, sec1, spec, ["committee"]) == ["c1", "c2"]


def test_group_holders_wherever_they_work(db, org, spec):
    assert _who(db, org, _case(org, "t1", "SEC2"), spec, ["hr"]) == ["c1"]
    _grant(db, org, "t2", "hr-office", None)
    _grant(db, org, "l1", "hr-office", "SEC1")  # same name held in a unit: not the group
    assert _who(db, org, _case(org, "s1"), spec, ["hr"]) == ["c1", "t2"]
    _deactivate(db, org, "c1")
    assert _who(db, org, _case(org, "s1"), spec, ["hr"]) == ["t2"]


def test_recipients_are_deduplicated_and_skip_system(db, org, spec):
    # c1 is committee and in hr-office; system and unknown names notify nobody.
    who = _who(db, org, _case(org, "s1"), spec,
               ["subject", "system", "committee", "hr", "subject", "nobody"])
    assert who == ["s1", "c1", "c2"]
    _deactivate(db, org, "s1")
    assert _who(db, org, _case(org, "s1"), spec, ["subject"]) == []


# --------------------------------------------------------------------------- the outbox


def test_queue_is_idempotent_per_key(db, org):
    first = _queue(db, [org.s1, org.s2, org.s1])
    assert len(first) == 2
    again = _queue(db, [org.s1, org.s2, org.s3], title="另一个标题")
    assert len(again) == 1  # only s3 is new
    rows = _notifications(db)
    assert [(n.key, n.title) for n in rows] == [
        (f"evt:1:{org.s1}", "提醒：测试"), (f"evt:1:{org.s2}", "提醒：测试"),
        (f"evt:1:{org.s3}", "另一个标题")]
    assert all(n.read_at is None and n.created_at == T0 for n in rows)
    assert _queue(db, []) == []


def test_outbox_rows_are_written_with_the_notification(db, org):
    _set_email(db, org, s1="s1@example.gov.cn")
    config = NotifyConfig(smtp_host="127.0.0.1", webhook_urls=("http://a.example/h",
                                                               "http://b.example/h"),
                          webhook_secret=SECRET)
    ids = _queue(db, [org.s1, org.s2], config=config)
    rows = _deliveries(db)
    got = sorted((d.notification_id, d.channel, d.target) for d in rows)
    assert got == sorted([
        (ids[0], "email", "s1@example.gov.cn"),
        (ids[0], "webhook", "http://a.example/h"), (ids[0], "webhook", "http://b.example/h"),
        (ids[1], "webhook", "http://a.example/h"), (ids[1], "webhook", "http://b.example/h")])
    assert {(d.status, d.attempts, d.next_attempt_at) for d in rows} == {("pending", 0, T0)}
    # The same event again: neither notifications nor deliveries are doubled.
    assert _queue(db, [org.s1, org.s2], config=config) == []
    assert len(_deliveries(db)) == 5


def test_no_deliveries_when_nothing_is_configured(db, org):
    _set_email(db, org, s1="s1@example.gov.cn")
    _queue(db, [org.s1], config=NotifyConfig())  # no SMTP host, no webhook
    assert len(_notifications(db)) == 1 and _deliveries(db) == []
    # Webhooks alone: the address is not used without an SMTP host.
    _queue(db, [org.s1], key_prefix="evt:2",
           config=NotifyConfig(webhook_urls=("http://a.example/h",)))
    assert [d.channel for d in _deliveries(db)] == ["webhook"]


def test_outbox_commits_or_rolls_back_with_the_event(db, org):
    config = NotifyConfig(webhook_urls=("http://a.example/h",))
    with pytest.raises(RuntimeError), db.unit_of_work() as s:
        queue(s, person_ids=[org.s1], case_id=None, kind="reminder", title="t", body="b",
              key_prefix="evt:9", now=T0, config=config)
        raise RuntimeError("the event failed")
    assert _notifications(db) == [] and _deliveries(db) == []


def test_config_from_env():
    cfg = NotifyConfig.from_env({})
    assert not cfg.email_enabled and not cfg.webhooks_enabled and cfg.smtp_port == 25
    cfg = NotifyConfig.from_env({
        "CIVFLOW_SMTP_HOST": "smtp.example.gov.cn", "CIVFLOW_SMTP_PORT": "587",
        "CIVFLOW_SMTP_USER": "u", "CIVFLOW_SMTP_PASSWORD": "pw", "CIVFLOW_SMTP_STARTTLS": "1",
        "CIVFLOW_MAIL_FROM": "考核系统 <noreply@example.gov.cn>",
        "CIVFLOW_WEBHOOK_URLS": " https://a.example/h , http://b.example/h ,",
        "CIVFLOW_WEBHOOK_SECRET": SECRET})
    assert (cfg.smtp_host, cfg.smtp_port, cfg.smtp_user, cfg.smtp_password,
            cfg.smtp_starttls) == ("smtp.example.gov.cn", 587, "u", "pw", True)
    assert cfg.webhook_urls == ("https://a.example/h", "http://b.example/h")
    assert cfg.email_enabled and cfg.webhooks_enabled
    assert "pw" not in repr(cfg) and SECRET not in repr(cfg)
    with pytest.raises(ValueError, match="CIVFLOW_SMTP_PORT"):
        NotifyConfig.from_env({"CIVFLOW_SMTP_PORT": "smtp"})
    with pytest.raises(ValueError, match="CIVFLOW_WEBHOOK_URLS"):
        NotifyConfig.from_env({"CIVFLOW_WEBHOOK_URLS": "file:///etc/passwd"})
    with pytest.raises(ValueError, match="CIVFLOW_SMTP_STARTTLS"):
        NotifyConfig.from_env({"CIVFLOW_SMTP_STARTTLS": "maybe"})


# --------------------------------------------------------------------------- e-mail


class _SmtpSink:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.envelopes.append(envelope)
        return "250 OK"


@contextmanager
def smtp_sink():
    from aiosmtpd.controller import Controller

    sink = _SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield sink, controller.port
    finally:
        controller.stop()


def test_email_is_delivered_to_an_smtp_server(db, org):
    _set_email(db, org, s1="s1@example.gov.cn", s2="s2@example.gov.cn")
    with smtp_sink() as (sink, port):
        config = NotifyConfig(smtp_host="127.0.0.1", smtp_port=port,
                              mail_from="平时考核 <noreply@example.gov.cn>")
        _queue(db, [org.s1, org.s2, org.s3], key_prefix="timer:7", config=config,
               title="提醒：平时考核「个人小结」将于 2027-03-05 24:00 截止",
               body="事项：平时考核 #1（2027-02）\n环节：个人小结")
        result = Deliverer(db, config, node="n1").deliver_due(T0)
        assert (result.claimed, result.sent, result.retried) == (2, 2, 0)  # s3 has no e-mail
        assert len(sink.envelopes) == 2
    by_rcpt = {tuple(e.rcpt_tos): e for e in sink.envelopes}
    env = by_rcpt[("s1@example.gov.cn",)]
    assert env.mail_from == "noreply@example.gov.cn"
    msg = email.message_from_bytes(env.original_content, policy=email.policy.default)
    key = f"timer:7:{org.s1}"
    assert msg["Subject"] == "提醒：平时考核「个人小结」将于 2027-03-05 24:00 截止"
    assert msg["To"] == "s1@example.gov.cn"
    assert msg["X-Civflow-Idempotency-Key"] == key
    assert msg["Message-ID"] == notify.message_id(key, config.mail_from)
    assert msg["Message-ID"].endswith("@example.gov.cn>")
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_content().replace("\r\n", "\n").strip() == "事项：平时考核 #1（2027-02）\n环节：个人小结"
    rows = _deliveries(db)
    assert {(d.status, d.attempts, d.sent_at, d.claimed_by) for d in rows} == {
        ("sent", 1, T0, None)}
    assert Deliverer(db, config, node="n1").deliver_due(T0 + dt.timedelta(hours=1)).claimed == 0


# --------------------------------------------------------------------------- webhooks


class _Hook:
    """A local HTTP receiver: records each request; answers with `statuses` in turn."""

    def __init__(self, statuses=(200,), delay: float = 0.0):
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses)
        self.delay = delay
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.delay:
                    time.sleep(hook.delay)
                with hook.lock:
                    hook.requests.append((dict(self.headers), body))
                    status = hook.statuses.pop(0) if len(hook.statuses) > 1 \
                        else hook.statuses[0]
                self.send_response(status)
                if status in (301, 302, 303, 307):
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status >= 300 else b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _verify(headers: dict[str, str], body: bytes, secret: str) -> bool:
    """What a receiver does (docs/notifications.md)."""
    timestamp = headers["X-Civflow-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Civflow-Signature"])


def test_webhook_is_signed_and_carries_the_idempotency_key(db, org):
    with _Hook() as hook:
        config = NotifyConfig(webhook_urls=(hook.url,), webhook_secret=SECRET)
        [nid] = _queue(db, [org.s1], key_prefix="timer:3", config=config, case_id=None,
                       title="已逾期：平时考核「个人小结」", body="正文 body")
        now = dt.datetime.now(dt.UTC)
        result = Deliverer(db, config, node="n1").deliver_due(T0)
        assert (result.sent, result.retried) == (1, 0)
    [(headers, body)] = hook.requests
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == f"timer:3:{org.s1}"
    assert abs(int(headers["X-Civflow-Timestamp"]) - now.timestamp()) < 60
    assert headers["X-Civflow-Signature"].startswith("sha256=")
    assert _verify(headers, body, SECRET)
    assert not _verify(headers, body, "another secret")
    assert not _verify(headers, body.replace(b"body", b"bodY"), SECRET)
    payload = json.loads(body)
    assert payload == {"id": nid, "key": f"timer:3:{org.s1}", "person_id": org.s1,
                       "case_id": None, "kind": "reminder", "title": "已逾期：平时考核「个人小结」",
                       "body": "正文 body", "created_at": T0.isoformat()}
    [d] = _deliveries(db)
    assert (d.status, d.attempts, d.last_error) == ("sent", 1, None)


@pytest.mark.parametrize("status", [500, 503, 429, 408, 302])
def test_a_webhook_answer_that_is_not_2xx_is_retried(db, org, status):
    with _Hook(statuses=[status, 204]) as hook:
        config = NotifyConfig(webhook_urls=(hook.url + "?token=abc",), webhook_secret=SECRET)
        _queue(db, [org.s1], config=config)
        deliverer = Deliverer(db, config, node="n1")
        assert deliverer.deliver_due(T0).retried == 1
        [d] = _deliveries(db)
        assert (d.status, d.attempts) == ("pending", 1)
        assert f"HTTP {status}" in d.last_error and "abc" not in d.last_error
        assert d.next_attempt_at == T0 + dt.timedelta(seconds=30)
        assert deliverer.deliver_due(T0 + dt.timedelta(seconds=30)).sent == 1
    assert len(hook.requests) == 2  # a redirect is not followed
    assert hook.requests[0][0]["Idempotency-Key"] == hook.requests[1][0]["Idempotency-Key"]
    [d] = _deliveries(db)
    assert (d.status, d.attempts, d.last_error) == ("sent", 2, None)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_a_webhook_that_refuses_the_request_fails_at_once(db, org, status):
    """A 4xx says the request itself is wrong (a bad URL, a revoked key): retrying for
    hours would only hide it. 408, 425 and 429 are retried (see above)."""
    with _Hook(statuses=[status]) as hook:
        config = NotifyConfig(webhook_urls=(hook.url,), webhook_secret=SECRET)
        _queue(db, [org.s1], config=config)
        deliverer = Deliverer(db, config, node="n1")
        result = deliverer.deliver_due(T0)
        assert (result.retried, result.failed) == (0, 1)
        assert deliverer.deliver_due(T0 + dt.timedelta(hours=2)).claimed == 0
    assert len(hook.requests) == 1
    [d] = _deliveries(db)
    assert (d.status, d.attempts) == ("failed", 1)
    assert f"HTTP {status}" in d.last_error


def test_retries_back_off_and_give_up_after_max_attempts(db, org):
    closed = _free_port()  # nothing listens there
    _set_email(db, org, s1="s1@example.gov.cn")
    config = NotifyConfig(smtp_host="127.0.0.1", smtp_port=closed,
                          webhook_urls=(f"http://127.0.0.1:{closed}/hook",), timeout=2)
    _queue(db, [org.s1], config=config)
    deliverer = Deliverer(db, config, node="n1")
    now, waits = T0, []
    for attempt in range(1, config.max_attempts):
        result = deliverer.deliver_due(now)
        assert (result.claimed, result.retried, result.failed) == (2, 2, 0), attempt
        rows = _deliveries(db)
        assert {(d.status, d.attempts) for d in rows} == {("pending", attempt)}
        [due] = {d.next_attempt_at for d in rows}
        waits.append(due - now)
        # Nothing is due before the backoff has passed.
        assert deliverer.deliver_due(due - dt.timedelta(seconds=1)).claimed == 0
        now = due
    assert [w.total_seconds() for w in waits] == [30, 60, 120, 240, 480, 960, 1920]
    result = deliverer.deliver_due(now)
    assert (result.retried, result.failed) == (0, 2)
    rows = {d.channel: d for d in _deliveries(db)}
    assert {(d.status, d.attempts) for d in rows.values()} == {("failed", 8)}
    assert "Connection refused" in rows["webhook"].last_error or \
        "ConnectionRefused" in rows["webhook"].last_error
    assert f"SMTP 127.0.0.1:{closed}" in rows["email"].last_error
    assert deliverer.deliver_due(now + dt.timedelta(days=30)).claimed == 0


def test_backoff_is_capped_at_an_hour(db):
    deliverer = Deliverer(db, NotifyConfig(), node="n1")
    assert deliverer.backoff(1) == dt.timedelta(seconds=30)
    assert deliverer.backoff(7) == dt.timedelta(seconds=1920)
    assert deliverer.backoff(8) == dt.timedelta(hours=1)  # 3840 s, capped
    assert deliverer.backoff(30) == dt.timedelta(hours=1)


def test_local_time_writes_midnight_as_the_end_of_the_day_before():
    tz = ZoneInfo("Asia/Shanghai")
    assert notify.local_time(dt.datetime(2026, 12, 7, 16, 0, tzinfo=dt.UTC), tz) == \
        "2026-12-07 24:00"
    assert notify.local_time(dt.datetime(2026, 12, 7, 1, 30, tzinfo=dt.UTC), tz) == \
        "2026-12-07 09:30"


# --------------------------------------------------------------------------- claims and races


def test_two_deliverers_never_claim_the_same_delivery(db, org):
    config = NotifyConfig(webhook_urls=("http://a.example/h",))
    for i in range(7):
        _queue(db, [org.s1], key_prefix=f"evt:{i}", config=config)
    a = Deliverer(db, config, node="a", batch=3)
    b = Deliverer(db, config, node="b", batch=3)
    got_a, got_b = a.claim(T0), b.claim(T0)
    assert len(got_a) == len(got_b) == 3 and not set(got_a) & set(got_b)
    assert len(a.claim(T0)) == 1 and b.claim(T0) == []


def test_a_dead_nodes_claims_are_taken_over_and_sent_again_with_the_same_key(db, org):
    """At least once: `a` sent, then died before recording; `b` sends again after the lease,
    with the same idempotency key; `a`'s late record does not count."""
    with _Hook() as hook:
        config = NotifyConfig(webhook_urls=(hook.url,), webhook_secret=SECRET)
        _queue(db, [org.s1], config=config)
        lease = dt.timedelta(minutes=5)
        a = Deliverer(db, config, node="a", lease=lease)
        b = Deliverer(db, config, node="b", lease=lease)
        [item] = a._load(a.claim(T0))
        a.send(item)  # … and the process dies here
        assert b.deliver_due(T0 + dt.timedelta(minutes=1)).claimed == 0  # lease still runs
        assert b.deliver_due(T0 + lease + dt.timedelta(seconds=1)).sent == 1
        assert a.record_sent(item, T0 + lease) == "skipped"
    keys = [h["Idempotency-Key"] for h, _b in hook.requests]
    assert keys == [f"evt:1:{org.s1}"] * 2
    [d] = _deliveries(db)
    assert (d.status, d.attempts, d.sent_at) == ("sent", 1, T0 + lease + dt.timedelta(seconds=1))


def _race(url: str, deliverers: int = 2, people: int = 60) -> None:
    """`deliverers` threads, each with its own node name, drain the same due deliveries."""
    db = Database(url)
    try:
        with db.unit_of_work() as s:
            unit = add_unit(s, "ORG", "部机关")
            ids = [add_person(s, f"P{i}", f"人员{i}", unit).id for i in range(people)]
        with _Hook(delay=0.002) as hook:
            config = NotifyConfig(webhook_urls=(hook.url,), webhook_secret=SECRET)
            _queue(db, ids, key_prefix="race", config=config)
            nodes = [Deliverer(db, config, node=f"n{i}", batch=5) for i in range(deliverers)]
            barrier = threading.Barrier(deliverers)
            results = {}

            def run(d):
                barrier.wait()
                results[d.node] = d.deliver_due(T0)

            threads = [threading.Thread(target=run, args=(d,)) for d in nodes]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        keys = [h["Idempotency-Key"] for h, _b in hook.requests]
        assert len(keys) == people and len(set(keys)) == people
        assert sum(r.sent for r in results.values()) == people, results
        assert sum(r.skipped + r.retried + r.failed for r in results.values()) == 0
        assert {d.status for d in _deliveries(db)} == {"sent"}
    finally:
        db.dispose()


def test_racing_deliverers_on_postgresql_send_each_delivery_once(pg_only_url):
    _race(pg_only_url, deliverers=3)


def test_racing_deliverers_on_sqlite_send_each_delivery_once(tmp_path, sqlite_template):
    path = tmp_path / "race.db"
    shutil.copy(sqlite_template, path)
    _race(f"sqlite:///{path}", deliverers=3)


# --------------------------------------------------------------------------- timers


def _timers(db, case_id) -> dict[str, Timer]:
    with db.unit_of_work(write=False) as s:
        return {t.kind: t for t in s.execute(select(Timer).where(
            Timer.case_id == case_id, Timer.status == "pending")).scalars()}


def _without_weekly_repeat(db, case_id) -> None:
    """The summary step also reminds every Friday (周记实); these tests follow one reminder."""
    with db.unit_of_work() as s:
        s.execute(update(Timer).where(Timer.case_id == case_id, Timer.kind == "repeat")
                  .values(status="dropped"))


def _count(db, model) -> int:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_a_reminder_timer_notifies_the_state_actor_once(db, engine, org, regular):
    _set_email(db, org, s1="s1@example.gov.cn")
    config = NotifyConfig(smtp_host="127.0.0.1", webhook_urls=("http://a.example/h",))
    case = engine.start_case("regular-assessment", org.s1, period_key=PERIOD)
    _without_weekly_repeat(db, case.id)
    timers = _timers(db, case.id)
    reminder, deadline = timers["reminder"], timers["deadline"]
    assert reminder.due_at == deadline.due_at - dt.timedelta(days=1)
    at = reminder.due_at + dt.timedelta(minutes=1)
    worker = TimerWorker(engine, node="w1", on_event=on_timer_event(config, clock=lambda: at))
    result = worker.tick(at)
    assert (result.fired, result.failed, result.retried) == (1, 0, 0)
    [n] = _notifications(db)
    when = notify.local_time(deadline.due_at, ZoneInfo("Asia/Shanghai"))
    assert (n.person_id, n.case_id, n.kind, n.key) == (
        org.s1, case.id, "reminder", f"timer:{reminder.id}:{org.s1}")
    assert n.title == f"提醒：平时考核「个人小结」将于 {when} 截止"
    # 5 working days after June 30: the end of a day in July, local time
    assert when.startswith(f"{NEXT_YEAR}-07-") and when.endswith(" 24:00")
    assert f"#{case.id}（{PERIOD}）" in n.body and "测试s1（干部一科）" in n.body
    assert n.created_at == at
    assert sorted(d.channel for d in _deliveries(db)) == ["email", "webhook"]
    # A timer fired again (a retry after a crash) does not notify twice.
    with db.unit_of_work() as s:
        s.execute(update(Timer).where(Timer.id == reminder.id).values(status="pending"))
    assert worker.tick(at).fired == 1
    assert _count(db, Notification) == 1 and _count(db, Delivery) == 2
    # The deadline passes: the subject hears it is overdue.
    late = deadline.due_at + dt.timedelta(minutes=1)
    assert worker.tick(late).fired == 1
    overdue = [n for n in _notifications(db) if n.kind == "overdue"]
    assert [(n.person_id, n.title) for n in overdue] == [
        (org.s1, f"已逾期：平时考核「个人小结」已于 {when} 截止")]


def test_a_reminder_in_the_leaders_step_goes_to_the_nearest_other_leader(db, engine, org,
                                                                         regular):
    cases = {who: engine.start_case("regular-assessment", org.ids[who], period_key=PERIOD)
             for who in ("s1", "l1")}
    for who, case in cases.items():
        engine.fire(case.id, "submit", Actor.person(org.ids[who]), data={"summary": "小结"})
    due = max(_timers(db, c.id)["reminder"].due_at for c in cases.values())
    at = due + dt.timedelta(minutes=1)
    worker = TimerWorker(engine, node="w1", on_event=on_timer_event(clock=lambda: at))
    assert worker.tick(at).fired == 2
    got = {(n.case_id, n.person_id) for n in _notifications(db)}
    assert got == {(cases["s1"].id, org.l1), (cases["l1"].id, org.chief)}
    assert all(n.title.startswith("提醒：平时考核「领导评鉴」将于 ")
               for n in _notifications(db))
    assert _deliveries(db) == []  # nothing configured: in-app only


def test_a_timer_message_and_notify_roles_from_the_definition(db, engine, org):
    source = """
flow: weekly-record
title: {zh: 周记实}
period: none
roles:
  hr: {resolve: group, group: hr-office}
states:
  - name: open
    label: 记实
    actor: subject
    deadline: {duration: P7D}
    timers:
      - {kind: reminder, before: P1D, notify: [subject, hr], message: {zh: 请填写本周记实, en: Weekly record due}}
  - {name: done, label: 完成, final: true}
transitions:
  - {trigger: finish, label: 完成, from: open, to: done, by: subject}
"""
    engine.publish(source, "weekly-record.yaml")
    case = engine.start_case("weekly-record", org.t1)
    due = _timers(db, case.id)["reminder"].due_at
    TimerWorker(engine, node="w1", on_event=on_timer_event()).tick(due)
    rows = _notifications(db)
    assert {(n.person_id, n.title) for n in rows} == {(org.t1, "请填写本周记实"),
                                                     (org.c1, "请填写本周记实")}
    assert all(n.body.endswith("Weekly record due") for n in rows)


def test_deliverer_sends_what_the_timer_queued(db, engine, org, regular):
    """End to end: reminder timer → outbox → e-mail in the SMTP sink."""
    _set_email(db, org, s1="s1@example.gov.cn")
    case = engine.start_case("regular-assessment", org.s1, period_key=PERIOD)
    _without_weekly_repeat(db, case.id)
    due = _timers(db, case.id)["reminder"].due_at
    with smtp_sink() as (sink, port):
        config = NotifyConfig(smtp_host="127.0.0.1", smtp_port=port)
        TimerWorker(engine, node="w1", on_event=on_timer_event(config, clock=lambda: due)
                    ).tick(due)
        assert Deliverer(db, config, node="d1").deliver_due(due).sent == 1
    [env] = sink.envelopes
    msg = email.message_from_bytes(env.original_content, policy=email.policy.default)
    assert msg["Subject"].startswith("提醒：平时考核「个人小结」将于 ")
    assert msg["X-Civflow-Idempotency-Key"].startswith("timer:")

