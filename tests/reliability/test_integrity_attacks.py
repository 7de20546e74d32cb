"""What a tester found attacking the service (issue 11, items 1 and 7), kept as attacks.

- **Pre-filled protected fields.** The subject of a 职级晋升 case starts it over HTTP with
  the fields later steps own (votes, vetting opinion, 三三制 override reason, rank date);
  a 平时考核 is started with grade 好. Each is refused with 422 naming every field, nothing
  is stored, and `civflow audit-case-data` (a separate process) finds the database clean.
  An old case carrying such values (written as the engine wrote them before) is listed by
  the command with exit status 1, and the values reach no rule.
- **Idempotency-Key replayed.** With another body, by another holder of the same role, by
  someone who cannot see the case: 422 / 422 / 404, never the first result, nothing written.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from workflows.engine import Actor
from workflows.history import GENESIS, record_hash
from workflows.models import Case, HistoryRecord

from ..conftest import ROOT
from .conftest import assert_history_intact, civflow

pytestmark = pytest.mark.reliability
PROMOTION = ROOT / "definitions" / "rank-promotion.yaml"
P = Actor.person
PREFILL = {"override_reason": "本人认为应当破格", "rank_effective": "2020-01-01",
           "votes_for": 99, "votes_cast": 99, "vetting_opinion": "优秀",
           "personal_matters_checked": True, "target_rank": "一级调研员",
           "category": "排头兵"}


def _counts(db) -> tuple[int, int]:
    with db.unit_of_work(write=False) as s:
        return (s.execute(select(func.count()).select_from(Case)).scalar_one(),
                s.execute(select(func.count()).select_from(HistoryRecord)).scalar_one())


def _old_start(db, engine, flow: str, subject: int, data: dict, period: str | None = None
               ) -> int:
    """A case opened by the engine before this release: start data of any field, recorded
    as given by `starter` — the case row and its first history record, hash-chained."""
    case = engine.start_case(flow, subject, actor=P(subject), period_key=period)
    with db.unit_of_work() as s:
        row = s.get(Case, case.id)
        rec = s.execute(select(HistoryRecord).where(HistoryRecord.case_id == case.id)
                        ).scalar_one()
        rec.data = dict(data)
        rec.hash = record_hash(case_id=case.id, seq=1, at=rec.at, actor_id=subject,
                               actor_role="starter", trigger="start", from_state=None,
                               to_state=rec.to_state, data=rec.data, comment=None,
                               prev_hash=GENESIS)
        row.data, row.history_hash = dict(data), rec.hash
    return case.id


def test_prefilled_protected_fields_are_refused_and_old_ones_found(api, engine, db, org):
    engine.publish(PROMOTION.read_text(encoding="utf-8"), str(PROMOTION))
    url = db.url
    r = api.post("s1", "/api/v1/cases", json={"flow": "rank-promotion", "subject_id": org.s1,
                                              "data": PREFILL})
    assert r.status_code == 422, r.get_json()
    assert sorted(r.json["fields"]) == sorted(PREFILL)
    assert all("cannot be given when a case starts: it is set later by" in m[0]
               for m in r.json["fields"].values())
    for who in ("s1", "l1", "owner", "admin"):  # nobody: the definition accepts nothing
        r = api.post(who, "/api/v1/cases", json={
            "flow": "regular-assessment", "subject_id": org.s1, "period_key": "2026-11",
            "data": {"grade": "好"}})
        assert r.status_code == 422 and list(r.json["fields"]) == ["grade"], (who, r.json)
    assert _counts(db) == (0, 0)
    done = civflow("audit-case-data", "--db", url)
    assert done.returncode == 0 and "case data clean: 0 cases" in done.stdout, done.stderr

    old = _old_start(db, engine, "rank-promotion", org.s2,
                     {"override_reason": "本人认为应当破格", "rank_effective": "2020-01-01"})
    assert_history_intact(url, cases=1)  # a well-formed old case: the chain holds
    done = civflow("audit-case-data", "--db", url, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(f["case_id"], f["field"], f["seq"]) for f in found] == [
        (old, "override_reason", 1), (old, "rank_effective", 1)]
    assert "2 value(s) in 1 of 1 cases" in done.stderr


def test_a_replayed_idempotency_key_never_returns_someone_elses_result(api, engine, db, org):
    case = engine.start_case("regular-assessment", org.s1, period_key="2026-11")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "小结"})
    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "较好"})
    engine.fire(case.id, "accept", P(org.s1))

    def approve(who: str, version: int, comment: str | None = None):
        body = {"data": {}} if comment is None else {"data": {}, "comment": comment}
        return api.post(who, f"/api/v1/cases/{case.id}/actions/approve", json=body,
                        headers={"If-Match": f'"{version}"', "Idempotency-Key": "appr-1"})

    assert approve("c2", 4).status_code == 200
    before = _counts(db)
    attacks = {"another comment": approve("c2", 4, comment="改一下"),
               "another committee member": approve("c1", 4),
               "the subject": approve("s1", 4),
               "a colleague who cannot see it": approve("s2", 4)}
    statuses = {k: r.status_code for k, r in attacks.items()}
    assert statuses == {"another comment": 422, "another committee member": 422,
                        "the subject": 422, "a colleague who cannot see it": 404}
    assert all(not (r.get_json() or {}).get("replayed") for r in attacks.values())
    assert _counts(db) == before
    again = approve("c2", 4)
    assert again.status_code == 200 and again.json["replayed"] is True
    assert_history_intact(db.url, cases=1)
