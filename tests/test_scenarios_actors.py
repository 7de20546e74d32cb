"""Who acts on a case, through the HTTP API on the demo bureau (service/demo), with the
clock of tests/test_scenarios.py. On SQLite and PostgreSQL.

1. The monthly cycle opens a case for everyone the hierarchy gives an evaluator: 陈建国
   (committee1, the deputy head at the top of the demo bureau) and 林晓燕 (owner, a 副职 at
   the bureau level, whom only the bureau's 主要负责人 would grade — the demo has none) are
   skipped, and the cycle logs it.
2. Each case shows in exactly its evaluator's queue: a division's staff and 副职 with its
   处长, the 处长 with the bureau's leader (the unit above); a 副职 made a 处室负责人 grades
   the staff but not her 正职.
3. committee1 loses his leader role: the 处长's case waiting in 领导评鉴 is stuck — listed
   by `GET /api/v1/cases?stuck=true` and counted by `civflow_cases_stuck` on /metrics — and
   another 处长's submission is refused (409 no_actor) with nothing changed. The role back,
   nothing is stuck.
"""

from __future__ import annotations

import logging
import re

from .test_scenarios import (  # noqa: F401 - fixtures
    REGULAR,
    USERNAME,
    Bureau,
    bureau,
    start,
)

JULY_OPENS = (2026, 7, 1, 8)


def stuck(b: Bureau) -> list[int]:
    body = b.get("admin", "/api/v1/cases", stuck="true", per_page=200)
    assert body["total"] == len(body["items"])
    return [i["id"] for i in body["items"]]


def gauge(b: Bureau) -> float:
    r = b.http.get("/metrics", headers=b.headers("admin"))
    assert r.status_code == 200
    (value,) = re.findall(r"^civflow_cases_stuck (\S+)$", r.get_data(as_text=True), re.M)
    return float(value)


def queue_ids(b: Bureau, who: str) -> set[int]:
    return {i["id"] for i in b.queue(who, flow=REGULAR, state="evaluation")}


def submit(b: Bureau, code: str, cid: int, status: int = 200) -> dict:
    return b.act(USERNAME[code], cid, "submit", {"summary": "7 月小结"}, status=status)


def test_who_acts_on_a_case_on_the_demo_bureau(bureau, caplog):  # noqa: F811
    b = bureau
    with caplog.at_level(logging.WARNING, logger="civflow.cycles"):
        assert b.open_cycles(*JULY_OPENS) == [(REGULAR, "2026-07", 28)]
    cases = b.cases(REGULAR, period="2026-07")
    assert len(cases) == 28 and not {"RS0001", "RS0002"} & set(cases)
    skipped = {b.people["RS0001"], b.people["RS0002"]}
    (record,) = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert set(map(int, re.findall(r"\d+", record.getMessage().split("person ids")[1]))) \
        == skipped

    # Who evaluates whom: the staff and the 副职 by the 处长, the 处长 by the bureau's leader.
    b.at(2026, 7, 31, 16)
    for code in ("RS0102", "RS0103", "RS0101", "RS0201"):
        submit(b, code, cases[code])
    assert queue_ids(b, "leader1") == {cases["RS0102"], cases["RS0103"]}
    assert queue_ids(b, "committee1") == {cases["RS0101"], cases["RS0201"]}
    assert queue_ids(b, "leader2") == set()  # his own case is not his to grade
    assert queue_ids(b, "staff01") == set()
    # 张丽华 (staff01), 副处长, made a 处室负责人 (leader of 公务员管理处): she grades the
    # division's staff, never her 处长 (403, nothing changed).
    r = b.http.post("/api/v1/org/roles", headers=b.headers("admin"), json={
        "person_id": b.people["RS0102"], "role": "leader", "unit_id": b.units["RSJ-GWY"]})
    assert r.status_code == 201, r.json
    assert queue_ids(b, "staff01") == {cases["RS0103"]}  # her own case is not hers
    refused = b.act("staff01", cases["RS0101"], "evaluate", {"grade": "好"}, status=403)
    assert refused["rule"] == "role" and "evaluator" in refused["message"]
    assert b.case(cases["RS0101"])["state"] == "evaluation"
    b.at(2026, 8, 3, 10)
    b.act("leader1", cases["RS0102"], "evaluate", {"grade": "较好"})
    assert b.history(cases["RS0102"])[-1]["actor_role"] == "evaluator"

    # committee1 loses his leader role: nobody above the 处长 any more.
    assert stuck(b) == [] and gauge(b) == 0
    (role,) = b.get("admin", "/api/v1/org/roles", person_id=b.people["RS0001"], role="leader")
    r = b.http.delete(f"/api/v1/org/roles/{role['id']}", headers=b.headers("admin"))
    assert r.status_code == 204
    assert sorted(stuck(b)) == sorted([cases["RS0101"], cases["RS0201"]])
    assert gauge(b) == 2
    r = b.http.get("/api/v1/cases", headers=b.headers("leader1"),
                   query_string={"stuck": "true"})
    assert r.status_code == 403 and r.json["rule"] == "needs_admin"
    # 谢国平 (leader3) submits: nobody could evaluate him, the move is refused.
    version = b.case(cases["RS0301"])["version"]
    refused = submit(b, "RS0301", cases["RS0301"], status=409)
    assert refused["code"] == "no_actor" and refused["state"] == "evaluation"
    assert refused["roles"] == ["evaluator"]
    after = b.case(cases["RS0301"])
    assert (after["state"], after["version"]) == ("summary", version)

    # The role back: nothing is stuck, the 处长 can submit.
    r = b.http.post("/api/v1/org/roles", headers=b.headers("admin"), json={
        "person_id": b.people["RS0001"], "role": "leader", "unit_id": b.units["RSJ"]})
    assert r.status_code == 201, r.json
    assert stuck(b) == [] and gauge(b) == 0
    submit(b, "RS0301", cases["RS0301"])
    assert cases["RS0301"] in queue_ids(b, "committee1")
