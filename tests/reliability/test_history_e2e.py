"""The audit history (审计记录) verified end to end (issue 7, item 2).

Cases go through the whole regular assessment over HTTP — each case its own steps, a
return and a resubmission on some, claims, a bulk approval (批量审定) — and then
`civflow verify-history`, run as a separate process on the PostgreSQL database, exits 0.
Then the history is tampered with behind the engine's back, one way at a time, and the
command exits non-zero naming the case and the record:

- a record's data edited (a grade raised): `case N: record R (seq S): … altered`;
- a record's hash recomputed after the edit: the next record's `prev_hash` gives it away;
- the last record of a case deleted: the case's chain head no longer matches;
- the case row changed (its state) without a record: its history disagrees.

(The load tests — `test_races.py`, `test_kill_bulk.py`, `test_pg_restart.py` — end with the
same command on what they wrote.)
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from workflows.history import hash_of
from workflows.models import HistoryRecord

from .conftest import assert_history_intact, civflow

pytestmark = pytest.mark.reliability
SUBJECTS = ("s1", "s2", "s3", "s4", "s5")


def _act(api, who: str, case_id: int, trigger: str, data=None, comment=None) -> None:
    version = api.get(who, f"/api/v1/cases/{case_id}").headers["ETag"]
    r = api.post(who, f"/api/v1/cases/{case_id}/actions/{trigger}",
                 headers={"If-Match": version, "Idempotency-Key": f"{case_id}-{trigger}-"
                          f"{version}"},
                 json={"data": data or {}, **({"comment": comment} if comment else {})})
    assert r.status_code == 200, (trigger, r.get_json())


def _load(api) -> list[int]:
    """Five cases to `approval` over HTTP (with a return, a claim and a release), then
    approved together in one bulk request."""
    ids = []
    for who in SUBJECTS:
        r = api.post(who, "/api/v1/cases", json={"flow": "regular-assessment",
                                                 "subject_id": api.org.ids[who],
                                                 "period_key": "2026-11"})
        assert r.status_code == 201, r.get_json()
        ids.append(r.get_json()["id"])
    for who, case_id in zip(SUBJECTS, ids, strict=True):
        _act(api, who, case_id, "record_week",
             {"weekly_records": [{"week": "W1", "content": "调研"}]})
        _act(api, who, case_id, "submit", {"summary": f"{who} 的小结"})
        if who == "s2":
            _act(api, "l1", case_id, "return_summary", comment="请补充")
            _act(api, who, case_id, "submit", {"summary": "补充后的小结"})
        if who == "s3":
            claim = api.post("l1", f"/api/v1/queue/{case_id}/claim", headers={
                "If-Match": api.get("l1", f"/api/v1/cases/{case_id}").headers["ETag"]})
            assert claim.status_code == 200, claim.get_json()
        _act(api, "l1", case_id, "evaluate", {"grade": "较好"})
        _act(api, who, case_id, "accept")
    r = api.post("c2", "/api/v1/queue/bulk", json={"trigger": "approve", "case_ids": ids})
    assert r.status_code == 200 and r.get_json()["counts"] == {"done": 5, "refused": 0}, \
        r.get_json()
    return ids


def _broken(url: str) -> str:
    done = civflow("verify-history", "--db", url)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out, out
    return out


def test_history_verifies_and_tampering_is_named(api, db, db_url):
    ids = _load(api)
    out = assert_history_intact(db_url, cases=len(ids))
    with db.unit_of_work(write=False) as s:
        records = s.execute(text("SELECT count(*) FROM case_history")).scalar()
    assert f"history intact: {len(ids)} cases, {records} records" in out

    # 1. A grade raised in the record of the evaluation.
    with db.unit_of_work() as s:
        rec_id, seq = s.execute(text(
            "SELECT id, seq FROM case_history WHERE case_id = :c AND trigger = 'evaluate'"),
            {"c": ids[0]}).one()
        s.execute(text("UPDATE case_history SET data = CAST(:d AS JSON) WHERE id = :id"),
                  {"d": '{"grade": "好"}', "id": rec_id})
    out = _broken(db_url)
    assert f"case {ids[0]}: record {rec_id} (seq {seq}): " in out and "altered" in out, out
    assert f"1 broken chain(s) in {len(ids)} cases" in out, out

    # 2. The same, with the record's own hash recomputed: the next record still tells.
    with db.unit_of_work() as s:
        rec = s.get(HistoryRecord, rec_id)
        rec.hash = hash_of(rec)
    out = _broken(db_url)
    assert f"case {ids[0]}: record " in out and f"(seq {seq + 1})" in out \
        and "prev_hash" in out, out

    # 3. The last record of another case removed.
    with db.unit_of_work() as s:
        s.execute(text("DELETE FROM case_history WHERE case_id = :c AND seq = "
                       "(SELECT max(seq) FROM case_history WHERE case_id = :c)"),
                  {"c": ids[1]})
    out = _broken(db_url)
    assert f"case {ids[1]}: " in out and "removed or added" in out, out

    # 4. A third case's row moved back to `approval` with no record of it.
    with db.unit_of_work() as s:
        s.execute(text("UPDATE cases SET state = 'approval' WHERE id = :c"), {"c": ids[2]})
    out = _broken(db_url)
    assert f"case {ids[2]}: " in out and "in state 'approval'" in out, out
    assert f"3 broken chain(s) in {len(ids)} cases" in out, out
