"""Deactivating a person (停用, issue 11 item 2): their tokens and sessions end at once, they
cannot log in, and their role assignments stop counting in every lookup — acting, the queue,
who is notified — until they are reactivated, which restores the roles but not the tokens."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from workflows.access import load_viewer
from workflows.accounts import BEARER, AuthFailed, authenticate, issue_token
from workflows.engine import Actor, utcnow
from workflows.errors import Forbidden
from workflows.models import ApiToken, Case, Person, RoleAssignment, SecurityEvent
from workflows.notify import recipients
from workflows.org import update_person
from workflows.queries import CaseFilter

from .conftest import PASSWORD

ORG = "/api/v1/org"


def _submitted(engine, org) -> int:
    """s3's monthly summary, submitted: it waits for SEC1's leader (l1) to evaluate."""
    case = engine.start_case("regular-assessment", org.s3, period_key="2026-11")
    engine.fire(case.id, "submit", Actor.person(org.s3), data={"summary": "三号的小结"})
    return case.id


def _queue_ids(engine, db, person_id: int) -> list[int]:
    with db.unit_of_work(write=False) as s:
        viewer = load_viewer(s, person_id)
    rows, _total = engine.queue(viewer, CaseFilter())
    return [r.id for r in rows]


def _notified(engine, db, case_id: int) -> list[int]:
    with db.unit_of_work(write=False) as s:
        row = s.get(Case, case_id)
        return recipients(s, row, engine.spec_of(row.version_id), ["leader"])


def test_a_deactivated_leader_loses_tokens_login_roles_queue_and_notifications(api, engine, db):
    """The tester's attack: leader l1 deactivated keeps working with an old token, logs in
    anew and evaluates a case."""
    org, c = api.org, api.client
    case_id = _submitted(engine, org)
    bearer = api.headers("l1")
    assert c.post("/api/v1/auth/login", json={"username": "l1", "password": PASSWORD}
                  ).status_code == 200  # a browser session too
    assert _queue_ids(engine, db, org.l1) == [case_id]
    assert _notified(engine, db, case_id) == [org.l1]

    r = api.patch("admin", f"{ORG}/people/{org.l1}", json={"active": False})
    assert r.status_code == 200 and r.json["active"] is False

    r = c.get("/api/v1/auth/me", headers=bearer)
    assert r.status_code == 401 and r.json["message"] == "the token was revoked"
    assert c.get("/api/v1/auth/me").status_code == 401  # the browser session
    r = c.post("/api/v1/auth/token", json={"username": "l1", "password": PASSWORD})
    assert r.status_code == 401 and r.json["message"] == "wrong username or password"
    with pytest.raises(AuthFailed):
        authenticate(db, "l1", PASSWORD)
    # A token got around the login (issued in the same moment, or by a script) is refused too.
    late, _ = issue_token(db, api.users["l1"], BEARER, dt.timedelta(hours=1), utcnow())
    r = c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {late}"})
    assert r.status_code == 401 and r.json["message"] == "the account is disabled"
    # No role counts: not in the engine, not in the queue; the leader above is notified.
    with pytest.raises(Forbidden):
        engine.fire(case_id, "evaluate", Actor.person(org.l1), data={"grade": "好"})
    assert _queue_ids(engine, db, org.l1) == []
    with db.unit_of_work(write=False) as s:
        assert load_viewer(s, org.l1).assignments == ()
        # The assignment rows stay, for reactivation.
        assert s.execute(select(RoleAssignment.role).where(
            RoleAssignment.person_id == org.l1)).scalars().all() == ["leader"]
        live = s.execute(select(ApiToken.id).where(ApiToken.user_id == api.users["l1"],
                                                   ApiToken.revoked_at.is_(None))).all()
        assert len(live) == 1  # only `late`, issued after the deactivation
    assert _notified(engine, db, case_id) == [org.chief]
    assert engine.get_case(case_id).state == "evaluation"

    r = api.patch("admin", f"{ORG}/people/{org.l1}", json={"active": True})
    assert r.status_code == 200 and r.json["active"] is True
    assert _queue_ids(engine, db, org.l1) == [case_id]
    assert _notified(engine, db, case_id) == [org.l1]
    r = c.get("/api/v1/auth/me", headers=bearer)
    assert r.status_code == 401 and r.json["message"] == "the token was revoked"
    r = c.post("/api/v1/auth/token", json={"username": "l1", "password": PASSWORD})
    assert r.status_code == 201
    token = {"Authorization": f"Bearer {r.json['access_token']}"}
    assert c.get("/api/v1/auth/me", headers=token).json["roles"] == [
        {"role": "leader", "unit_id": org.units["SEC1"]}]

    with db.unit_of_work(write=False) as s:
        events = s.execute(select(SecurityEvent).where(SecurityEvent.kind.in_(
            ["deactivated", "reactivated"])).order_by(SecurityEvent.id)).scalars().all()
    assert [(e.kind, e.username, e.by) for e in events] == [
        ("deactivated", "l1", org.admin), ("reactivated", "l1", org.admin)]
    assert events[0].detail["tokens_revoked"] == 2  # the bearer token and the session
    assert events[0].detail["person_code"] == "L1"


def test_a_deactivated_group_member_and_committee_member_hold_nothing(engine, db, org, regular):
    """Group and unit roles go with the person too (the same `HELD_ROLES` rule)."""
    with db.unit_of_work() as s:
        assert load_viewer(s, org.c1).holds("hr-office")
    update_person(db, org.c1, {"active": False})
    with db.unit_of_work() as s:
        viewer = load_viewer(s, org.c1)
        assert not viewer.holds("hr-office") and not viewer.holds("committee")


def test_the_last_active_admin_cannot_be_deactivated(api, db):
    org = api.org
    r = api.patch("admin", f"{ORG}/people/{org.admin}", json={"active": False, "post": "x"})
    assert r.status_code == 409 and r.json["code"] == "action_not_allowed"
    assert "last admin" in r.json["message"]
    with db.unit_of_work(write=False) as s:  # nothing changed, nothing revoked or logged
        person = s.get(Person, org.admin)
        assert (person.active, person.post) == (True, None)
        assert s.execute(select(SecurityEvent.id)).first() is None
    assert api.get("admin", "/api/v1/auth/me").status_code == 200
    # With a second admin, the first may go; then the second is the last.
    assert api.post("admin", f"{ORG}/roles", json={
        "person_id": org.c2, "role": "admin", "unit_id": org.units["ORG"]}).status_code == 201
    assert api.patch("admin", f"{ORG}/people/{org.admin}",
                     json={"active": False}).status_code == 200
    r = api.patch("c2", f"{ORG}/people/{org.c2}", json={"active": False})
    assert r.status_code == 409


def test_an_inactive_admin_does_not_count_as_the_other_admin(api, db):
    """Removing the last admin assignment of an active person is refused even when an
    inactive person still has an admin row: nobody could use it."""
    org = api.org
    api.post("admin", f"{ORG}/roles", json={"person_id": org.c2, "role": "admin",
                                           "unit_id": org.units["ORG"]})
    assert api.patch("admin", f"{ORG}/people/{org.c2}", json={"active": False}
                     ).status_code == 200
    (mine,) = [a for a in api.get("admin", f"{ORG}/roles?role=admin").json
               if a["person_id"] == org.admin]
    r = api.delete("admin", f"{ORG}/roles/{mine['id']}")
    assert r.status_code == 409 and "last admin" in r.json["message"]


def test_the_cli_refuses_a_token_for_an_inactive_person(api, db):
    from click.testing import CliRunner

    from service.cli import main

    update_person(db, api.org.s1, {"active": False})
    done = CliRunner().invoke(main, ["token", "s1", "--db", db.url])
    assert done.exit_code == 1 and "disabled" in done.output
    update_person(db, api.org.s1, {"active": True})
    done = CliRunner().invoke(main, ["token", "s1", "--db", db.url])
    assert done.exit_code == 0, done.output


def test_a_deactivated_persons_claims_are_released_in_the_history(api, engine, db):
    """A step l1 had claimed (认领) would wait for l1 for ever: only the claimer may act on
    it or release it. Deactivating l1 releases it, as a record of the case's history."""
    org = api.org
    case_id = _submitted(engine, org)
    engine.claim(case_id, Actor.person(org.l1))
    with pytest.raises(Forbidden):  # nobody else while the claim holds
        engine.fire(case_id, "evaluate", Actor.person(org.chief), data={"grade": "好"})

    r = api.patch("admin", f"{ORG}/people/{org.l1}", json={"active": False})
    assert r.status_code == 200
    with db.unit_of_work(write=False) as s:
        assert s.get(Case, case_id).claimed_by is None
        event = s.execute(select(SecurityEvent).where(
            SecurityEvent.kind == "deactivated")).scalar_one()
    assert event.detail["claims_released"] == 1
    last = engine.history(case_id)[-1]
    assert (last["trigger"], last["actor_id"], last["actor_role"]) == (
        "release", org.admin, "admin")
    # Chinese first, the English beside it; no English phrase inside the Chinese.
    assert last["comment"] == (f"人员 {org.l1} 已停用，其认领已释放"
                               f"（person {org.l1} deactivated: the claim is released）")
    assert engine.verify_history()[2] == []
    # The evaluator above (the fallback, now that l1 is gone) can act at once.
    engine.fire(case_id, "evaluate", Actor.person(org.chief), data={"grade": "较好"})
    assert engine.get_case(case_id).state == "feedback"
