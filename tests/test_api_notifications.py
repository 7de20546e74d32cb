"""The notifications API: each person's in-app list with read/unread; deliveries for admins."""

from __future__ import annotations

import datetime as dt
import socket

import pytest

from workflows.notify import Deliverer, NotifyConfig, queue

URL = "/api/v1/notifications"
T0 = dt.datetime(2027, 3, 1, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def napi(api):
    assert "notifications" in api.client.application.blueprints
    return api


def _notify(api, who: list[str], key: str, title: str, at: dt.datetime = T0,
            config: NotifyConfig | None = None) -> list[int]:
    with api.db.unit_of_work() as s:
        return queue(s, person_ids=[api.org.ids[w] for w in who], case_id=None,
                     kind="reminder", title=title, body=f"{title} 正文", key_prefix=key,
                     now=at, config=config or NotifyConfig())


def _three_for_s1(api) -> list[int]:
    """s1 gets three (oldest first), s2 one."""
    ids = []
    for i in range(3):
        ids += _notify(api, ["s1"], f"evt:{i}", f"提醒{i}", T0 + dt.timedelta(hours=i))
    _notify(api, ["s2"], "evt:0", "给s2的提醒")
    return ids


def test_anonymous_callers_are_refused(napi):
    for method, url in (("get", URL), ("post", f"{URL}/1/read"), ("post", f"{URL}/read-all"),
                        ("get", f"{URL}/deliveries")):
        r = getattr(napi.client, method)(url)
        assert r.status_code == 401 and r.json["code"] == "unauthorized", url


def test_a_person_lists_their_notifications_newest_first(napi):
    ids = _three_for_s1(napi)
    r = napi.get("s1", URL)
    assert r.status_code == 200
    body = r.json
    assert (body["total"], body["unread"], body["page"], body["per_page"]) == (3, 3, 1, 20)
    assert [n["id"] for n in body["items"]] == ids[::-1]
    first = body["items"][0]
    assert (first["title"], first["body"], first["kind"], first["read"], first["read_at"]) == (
        "提醒2", "提醒2 正文", "reminder", False, None)
    assert first["key"] == f"evt:2:{napi.org.s1}" and first["case_id"] is None
    assert dt.datetime.fromisoformat(first["created_at"]) == T0 + dt.timedelta(hours=2)
    # Paging keeps the totals.
    page2 = napi.get("s1", f"{URL}?per_page=2&page=2").json
    assert [n["id"] for n in page2["items"]] == [ids[0]]
    assert (page2["total"], page2["unread"]) == (3, 3)
    # Others see only their own.
    assert [n["title"] for n in napi.get("s2", URL).json["items"]] == ["给s2的提醒"]
    assert napi.get("admin", URL).json == {"items": [], "total": 0, "unread": 0, "page": 1,
                                           "per_page": 20}


def test_mark_read_and_filter(napi):
    ids = _three_for_s1(napi)
    r = napi.post("s1", f"{URL}/{ids[1]}/read")
    assert r.status_code == 200
    assert r.json["id"] == ids[1] and r.json["read"] is True
    read_at = r.json["read_at"]
    assert read_at is not None
    # Again: still read, the first read time kept.
    again = napi.post("s1", f"{URL}/{ids[1]}/read").json
    assert again["read_at"] == read_at
    unread = napi.get("s1", f"{URL}?unread=true").json
    assert [n["id"] for n in unread["items"]] == [ids[2], ids[0]]
    assert (unread["total"], unread["unread"]) == (2, 2)
    read = napi.get("s1", f"{URL}?unread=false").json
    assert [n["id"] for n in read["items"]] == [ids[1]]
    assert (read["total"], read["unread"]) == (1, 2)
    # s2's notification is untouched.
    assert napi.get("s2", URL).json["unread"] == 1


def test_read_all(napi):
    _three_for_s1(napi)
    napi.post("s1", f"{URL}/{napi.get('s1', URL).json['items'][0]['id']}/read")
    r = napi.post("s1", f"{URL}/read-all")
    assert r.status_code == 200 and r.json == {"marked": 2, "unread": 0}
    assert napi.post("s1", f"{URL}/read-all").json == {"marked": 0, "unread": 0}
    body = napi.get("s1", URL).json
    assert body["unread"] == 0 and all(n["read"] for n in body["items"])
    assert napi.get("s2", URL).json["unread"] == 1  # only the caller's


def test_nobody_reads_another_persons_notification(napi):
    [theirs] = _notify(napi, ["s1"], "evt:1", "私人提醒")
    for who in ("s2", "l1", "chief", "admin"):
        r = napi.post(who, f"{URL}/{theirs}/read")
        assert r.status_code == 404 and r.json["code"] == "not_found", who
    missing = napi.post("s1", f"{URL}/999999/read")
    assert missing.status_code == 404
    assert napi.get("s1", URL).json["unread"] == 1  # still unread


def test_bad_queries_are_refused(napi):
    r = napi.get("s1", f"{URL}?unread=maybe&per_page=0")
    assert r.status_code == 422 and set(r.json["fields"]) == {"query.unread", "query.per_page"}
    r = napi.get("admin", f"{URL}/deliveries?status=lost")
    assert r.status_code == 422 and set(r.json["fields"]) == {"query.status"}


@pytest.mark.parametrize("who", ["s1", "l1", "chief", "owner"])
def test_deliveries_are_for_admins(napi, who):
    r = napi.get(who, f"{URL}/deliveries")
    assert r.status_code == 403
    assert r.json["rule"] == "needs_admin" and "admin (系统管理员)" in r.json["message"]


def test_admins_see_deliveries_and_their_failures(napi):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    broken = f"http://user:pw@127.0.0.1:{closed}/hook?token=abc"
    config = NotifyConfig(webhook_urls=(broken,), webhook_secret="x", max_attempts=2)
    _notify(napi, ["s1", "s2"], "evt:1", "提醒", config=config)
    deliverer = Deliverer(napi.db, config, node="n1")
    assert deliverer.deliver_due(T0).retried == 2
    body = napi.get("admin", f"{URL}/deliveries").json
    assert body["total"] == 2 and body["counts"] == {"pending": 2, "claimed": 0, "sent": 0,
                                                     "failed": 0}
    item = body["items"][0]
    assert (item["channel"], item["status"], item["attempts"]) == ("webhook", "pending", 1)
    assert item["target"] == f"http://127.0.0.1:{closed}/hook?…"  # no credentials, no token
    assert "pw" not in item["last_error"] and "abc" not in item["last_error"]
    assert dt.datetime.fromisoformat(item["next_attempt_at"]) == T0 + dt.timedelta(seconds=30)
    assert item["title"] == "提醒" and item["notification_key"].startswith("evt:1:")
    assert {i["person_id"] for i in body["items"]} == {napi.org.s1, napi.org.s2}

    assert deliverer.deliver_due(T0 + dt.timedelta(minutes=1)).failed == 2
    failed = napi.get("admin", f"{URL}/deliveries?status=failed&channel=webhook").json
    assert failed["total"] == 2 and failed["counts"]["failed"] == 2
    assert all(i["status"] == "failed" and i["attempts"] == 2 and i["last_error"]
               for i in failed["items"])
    assert napi.get("admin", f"{URL}/deliveries?status=sent").json["total"] == 0
    assert napi.get("admin", f"{URL}/deliveries?channel=email").json["total"] == 0
    paged = napi.get("admin", f"{URL}/deliveries?per_page=1&page=2").json
    assert len(paged["items"]) == 1 and paged["total"] == 2
