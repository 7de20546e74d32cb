"""Idempotency-Key bound to who sent it and what they sent (issue 11 item 7): the same key
with another body, another comment or from another user is refused with 422 and changes
nothing; the first result is replayed only to its own actor, still entitled to the action."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, update

from workflows.engine import Actor, request_hash
from workflows.errors import Forbidden, IdempotencyMismatch
from workflows.models import HistoryRecord, RoleAssignment

from .test_api_cases import act, start

P = Actor.person
FLOW = "regular-assessment"


def _records(db, case_id: int) -> int:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(func.count()).select_from(HistoryRecord)
                         .where(HistoryRecord.case_id == case_id)).scalar_one()


def _to_approval(engine, org, who="s1"):
    case = engine.start_case(FLOW, org.ids[who], period_key="2026-11")
    engine.fire(case.id, "submit", P(org.ids[who]), data={"summary": "小结"})
    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "较好"})
    engine.fire(case.id, "accept", P(org.ids[who]))
    return case.id


def test_a_key_replayed_with_another_body_or_comment_is_refused(engine, regular, db, org):
    case = engine.start_case(FLOW, org.s1, period_key="2026-11")
    first = engine.fire(case.id, "submit", P(org.s1), data={"summary": "第一版"},
                        idempotency_key="k1")
    with db.unit_of_work(write=False) as s:
        stored = s.execute(select(HistoryRecord.request_hash).where(
            HistoryRecord.case_id == case.id, HistoryRecord.idempotency_key == "k1")
        ).scalar_one()
    assert stored == request_hash(P(org.s1), "submit", {"summary": "第一版"}, None)
    with pytest.raises(IdempotencyMismatch) as exc:
        engine.fire(case.id, "submit", P(org.s1), data={"summary": "第二版"},
                    idempotency_key="k1")
    assert str(exc.value) == (
        f"idempotency key 'k1' was used on case {case.id} for 'submit' with other data or "
        "another comment; nothing was done — send the first request unchanged to get its "
        "result, or use a new key for a new action")
    with pytest.raises(IdempotencyMismatch):
        engine.fire(case.id, "submit", P(org.s1), data={"summary": "第一版"}, comment="补充",
                    idempotency_key="k1")
    # The same request again: its first result, nothing written.
    again = engine.fire(case.id, "submit", P(org.s1), data={"summary": "第一版"},
                        idempotency_key="k1")
    assert again.replayed and again.history_seq == first.history_seq
    assert engine.get_case(case.id).data == {"summary": "第一版"}
    assert _records(db, case.id) == 2


def test_another_holder_of_the_role_does_not_get_the_first_result(engine, regular, db, org):
    """c1 and c2 are both committee members: c2 re-sending c1's approval is not c1's."""
    cid = _to_approval(engine, org)
    engine.fire(cid, "approve", P(org.c1), idempotency_key="approve-1")
    with pytest.raises(IdempotencyMismatch) as exc:
        engine.fire(cid, "approve", P(org.c2), idempotency_key="approve-1")
    assert "was used on case" in str(exc.value) and "by someone else" in str(exc.value)
    # the subject cannot replay it either; a stale version does not change the answer
    with pytest.raises(IdempotencyMismatch):
        engine.fire(cid, "approve", P(org.s1), idempotency_key="approve-1",
                    expected_version=1)
    assert _records(db, cid) == 5


def test_a_replay_needs_the_role_still_held(engine, regular, db, org):
    case = engine.start_case(FLOW, org.s1, period_key="2026-11")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "小结"})
    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "较好"}, idempotency_key="ev")
    with db.unit_of_work() as s:
        s.execute(delete(RoleAssignment).where(RoleAssignment.person_id == org.l1))
    with pytest.raises(Forbidden) as exc:
        engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "较好"},
                    idempotency_key="ev")
    assert exc.value.rule == "role" and "may not take" in str(exc.value)


def test_a_key_recorded_before_binding_is_still_bound_to_actor_and_action(engine, regular,
                                                                          db, org):
    case = engine.start_case(FLOW, org.s1, period_key="2026-11")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "x"}, idempotency_key="old")
    with db.unit_of_work() as s:  # as migration 0008 left the records written before it
        s.execute(update(HistoryRecord).where(HistoryRecord.case_id == case.id)
                  .values(request_hash=None))
    assert engine.fire(case.id, "submit", P(org.s1), data={"summary": "x"},
                       idempotency_key="old").replayed
    with pytest.raises(IdempotencyMismatch):
        engine.fire(case.id, "return_summary", P(org.l1), comment="r", idempotency_key="old")


# --------------------------------------------------------------------------- over HTTP


def test_http_a_replay_with_another_body_or_user_gets_422(api, db):
    cid = start(api, "s1", "s1").json["id"]
    r = act(api, "s1", cid, "submit", 1, {"summary": "第一版"}, **{"Idempotency-Key": "k-1"})
    assert r.status_code == 200 and r.json["replayed"] is False
    r = act(api, "s1", cid, "submit", 1, {"summary": "第二版"}, **{"Idempotency-Key": "k-1"})
    assert r.status_code == 422 and r.json["code"] == "idempotency_mismatch"
    assert "other data or another comment" in r.json["message"]
    # another user who sees the case (its leader), with the very same body
    r = act(api, "l1", cid, "submit", 1, {"summary": "第一版"}, **{"Idempotency-Key": "k-1"})
    assert r.status_code == 422 and "by someone else" in r.json["message"]
    # a colleague who may not see the case: 404, as for any case they may not see
    r = act(api, "s2", cid, "submit", 1, {"summary": "第一版"}, **{"Idempotency-Key": "k-1"})
    assert r.status_code == 404
    r = act(api, "s1", cid, "submit", 1, {"summary": "第一版"}, **{"Idempotency-Key": "k-1"})
    assert r.status_code == 200 and r.json["replayed"] is True and r.json["version"] == 2
    assert api.get("s1", f"/api/v1/cases/{cid}").json["data"] == {"summary": "第一版"}
    assert _records(db, cid) == 2
