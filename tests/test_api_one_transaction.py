"""An action's request in one transaction (issue 12): the token, the viewer's roles, the case
and the action are read and written in one unit of work (`Engine.fire_signed`), and every
check the two-step path made still holds — revoked tokens, CSRF, roles, the access log."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import event, func, select, update

from workflows.models import ApiToken, Case

from .conftest import PASSWORD
from .test_api_cases import act, start


class Transactions:
    """Counts the transactions begun on the database while a request runs."""

    def __init__(self, db):
        self.db, self.begun = db, 0

    def _begin(self, _conn):
        self.begun += 1

    def __enter__(self):
        event.listen(self.db.engine, "begin", self._begin)
        return self

    def __exit__(self, *_exc):
        event.remove(self.db.engine, "begin", self._begin)


def version_of(db, case_id: int) -> int:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(Case.version).where(Case.id == case_id)).scalar_one()


def test_an_action_is_one_transaction_with_its_sign_in(api, db):
    cid = start(api, "s1", "s1").json["id"]
    api.headers("s1")  # the token is issued before counting
    with Transactions(db) as tx:
        r = act(api, "s1", cid, "submit", 1, {"summary": "本月完成档案审核"})
    assert r.status_code == 200 and r.json["to"] == "evaluation"
    assert tx.begun == 1
    # Any other request signs in in a transaction of its own, then does its work.
    with Transactions(db) as tx:
        assert api.get("s1", f"/api/v1/cases/{cid}").status_code == 200
    assert tx.begun == 2


def test_a_refused_action_changes_nothing_in_its_one_transaction(api, db):
    cid = start(api, "s1", "s1").json["id"]
    api.headers("s2")
    with Transactions(db) as tx:
        r = act(api, "s2", cid, "submit", 1, {"summary": "x"})
    # s2 may not see s1's case: not found, as on the two-transaction path.
    assert r.status_code == 404 and tx.begun == 1
    r = act(api, "l1", cid, "submit", 1, {"summary": "x"})  # the leader sees it: not theirs
    assert r.status_code == 403 and r.json["rule"] == "role"
    assert version_of(db, cid) == 1


def test_a_revoked_or_unknown_token_cannot_act(api, db):
    cid = start(api, "s1", "s1").json["id"]
    r = api.client.post(f"/api/v1/cases/{cid}/actions/submit", json={"data": {"summary": "x"}},
                        headers={"Authorization": "Bearer not-a-token", "If-Match": '"1"'})
    assert r.status_code == 401 and r.json["message"] == "unknown token"
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert api.client.delete("/api/v1/auth/token", headers=api.headers("s1")).status_code == 204
    r = act(api, "s1", cid, "submit", 1, {"summary": "x"})
    assert r.status_code == 401 and r.json["message"] == "the token was revoked"
    # No token at all: refused before the body is read.
    r = api.client.post(f"/api/v1/cases/{cid}/actions/submit", json={})
    assert r.status_code == 401 and "log in first" in r.json["message"]
    assert version_of(db, cid) == 1


def test_a_browser_session_acts_with_its_csrf_token_and_is_ended_when_revoked(api, db):
    cid = start(api, "s1", "s1").json["id"]
    c = api.client
    csrf = c.post("/api/v1/auth/login",
                  json={"username": "s1", "password": PASSWORD}).json["csrf_token"]
    url = f"/api/v1/cases/{cid}/actions/submit"
    r = c.post(url, json={"data": {"summary": "x"}}, headers={"If-Match": '"1"'})
    assert r.status_code == 403 and r.json["rule"] == "csrf"
    r = c.post(url, json={"data": {"summary": "x"}},
               headers={"If-Match": '"1"', "X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json["version"] == 2
    with db.unit_of_work() as s:  # e.g. revoked by an admin meanwhile
        s.execute(update(ApiToken).values(revoked_at=dt.datetime.now(dt.UTC)))
    r = c.post(f"/api/v1/cases/{cid}/actions/return_summary", json={"data": {}},
               headers={"If-Match": '"2"', "X-CSRF-Token": csrf})
    assert r.status_code == 401 and r.json["message"] == "the token was revoked"
    # The session was ended, as any request with a refused session token ends it.
    with c.session_transaction() as s:
        assert "t" not in s
    assert version_of(db, cid) == 2


def test_the_access_log_names_who_acted(api, caplog):
    cid = start(api, "s1", "s1").json["id"]
    with caplog.at_level(logging.INFO, logger="civflow.http"):
        assert act(api, "s1", cid, "submit", 1, {"summary": "x"}).status_code == 200
    lines = [r.getMessage() for r in caplog.records if "/actions/submit" in r.getMessage()]
    assert lines and lines[-1].endswith("user=s1")



def test_on_postgresql_the_sign_in_carries_the_begin_and_the_write_the_commit(
        api, db, monkeypatch):
    """Over HTTP the action's transaction begins with its sign-in and commits with its
    write: three round trips on PostgreSQL (sign-in, read, write). SQLite has no round
    trips to save; nothing goes out this way there."""
    from workflows import db as dbm

    cid = start(api, "s1", "s1").json["id"]
    api.headers("s1")
    sent: list[str] = []
    real = dbm._simple_query
    monkeypatch.setattr(dbm, "_simple_query",
                        lambda raw, query: sent.append(query) or real(raw, query))
    r = act(api, "s1", cid, "submit", 1, {"summary": "本月完成档案审核"})
    assert r.status_code == 200 and r.json["version"] == 2
    if db.dialect == "postgresql":
        from workflows.accounts import SIGN_IN
        from workflows.history import PG_ADVANCE

        with db.engine.connect() as conn:
            sign_in = dbm._sql_prepared(dbm.driver_statement(conn, SIGN_IN, {"digest": ""})[0])
            conn.commit()
        assert len(sent) == 2, sent  # the read between them went out plain
        assert f"BEGIN;\nEXECUTE {sign_in[0]}(" in sent[0]
        write = dbm._sql_prepared(PG_ADVANCE)[0]
        assert f"EXECUTE {write}(" in sent[1] and sent[1].endswith(";\nCOMMIT")
    else:
        assert sent == []


def test_opening_a_case_is_one_transaction_with_its_sign_in(api, db):
    """`POST /api/v1/cases` signs in inside the transaction that opens the case
    (`Engine.start_signed`); reading the new case back for the answer is a second. A token
    that is refused, or a viewer who may not start the person's case, leaves nothing."""
    from workflows.models import HistoryRecord, Timer

    def counts() -> tuple[int, int, int]:
        with db.unit_of_work(write=False) as s:
            return tuple(s.execute(select(func.count()).select_from(t)).scalar_one()
                         for t in (Case, HistoryRecord, Timer))

    api.headers("s1")  # the token is issued before counting
    with Transactions(db) as tx:
        r = start(api, "s1", "s1")
    assert r.status_code == 201 and r.json["state"] == "summary"
    assert tx.begun == 2  # the sign-in and the opening, then the answer's read
    before = counts()
    r = start(api, "s1", "s2")  # not theirs to start
    assert r.status_code == 403 and r.json["rule"] == "start"
    r = api.client.post("/api/v1/cases", json={"flow": "regular-assessment",
                                              "subject_id": api.org.s1},
                        headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and r.json["message"] == "unknown token"
    assert counts() == before


def test_a_bulk_approval_is_one_transaction_with_its_sign_in(api, db, engine):
    """`POST /api/v1/queue/bulk` signs in inside the transaction that moves the cases
    (`Engine.bulk_signed`); a refused token moves nothing."""
    from .test_api_queue import _bulk, _to_approval

    org = api.org
    cases = [_to_approval(engine, org, f"s{i}", grade="较好") for i in (1, 2)]
    before = [version_of(db, c) for c in cases]
    r = api.client.post("/api/v1/queue/bulk", json={"trigger": "approve", "case_ids": cases},
                        headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and r.json["message"] == "unknown token"
    assert [version_of(db, c) for c in cases] == before
    api.headers("c1")  # the token is issued before counting
    with Transactions(db) as tx:
        r = _bulk(api, "c1", "approve", cases)
    assert r.status_code == 200 and r.json["counts"] == {"done": 2, "refused": 0}
    assert tx.begun == 1
    assert [version_of(db, c) for c in cases] == [v + 1 for v in before]


def test_claim_release_and_delegate_are_one_transaction_each(api, db, engine):
    """The queue's claim, release and delegate sign in inside the transaction that writes
    the step's record (`Engine.claim_signed`, …); a refused token writes nothing."""
    from .test_api_queue import QUEUE, _to_approval

    org = api.org
    cid = _to_approval(engine, org, "s1", grade="较好")
    version = version_of(db, cid)
    r = api.client.post(f"{QUEUE}/{cid}/claim", headers={
        "Authorization": "Bearer not-a-token", "If-Match": f'"{version}"'})
    assert r.status_code == 401 and version_of(db, cid) == version
    api.headers("c1")  # the token is issued before counting
    for path, body in (("claim", None), ("release", None),
                       ("delegate", {"to": org.c2, "comment": "请代为审定"})):
        with Transactions(db) as tx:
            r = api.post("c1", f"{QUEUE}/{cid}/{path}", json=body,
                         headers={"If-Match": f'"{version}"'})
        assert r.status_code == 200, (path, r.json)
        assert tx.begun == 1, path
        version += 1
        assert r.json["version"] == version_of(db, cid) == version
