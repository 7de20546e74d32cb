"""Who acts on a case, through the HTTP API on the demo bureau (workflows/demo), with the
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

from click.testing import CliRunner

from service.cli import main

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
        opened = b.open_cycles(*JULY_OPENS)  # other cycle flows may open their own too
        assert [o for o in opened if o[0] == REGULAR] == [(REGULAR, "2026-07", 28)]
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


DISPATCH = "frontline-dispatch"


def test_a_dispatched_person_is_evaluated_by_the_host_and_the_outcome_is_a_fact(
        bureau, caplog):  # noqa: F811
    """下沉一线 through HTTP: 罗 (RS0103, staff of 公务员管理处, graded by leader1) is sent as
    第一书记 with a village secretary as the host (接收方考核负责人). While dispatched the host
    grades her regular assessment and leader1 — her home unit's evaluator — is told the
    grade in-app. At term end the approved outcome is a person fact that the eligibility
    list reads as a priority marker."""
    b = bureau
    b.at(2026, 6, 22, 9)
    r = b.http.post("/api/v1/org/units", headers=b.headers("admin"),
                    json={"code": "SQC", "name": "青山镇石桥村"})
    assert r.status_code == 201, r.json
    r = b.http.post("/api/v1/org/people", headers=b.headers("admin"), json={
        "code": "SQ001", "name": "王村书", "unit_id": r.json["id"], "tier": "chief",
        "post": "村党支部书记"})
    assert r.status_code == 201, r.json
    host = r.json["id"]
    r = b.http.post("/api/v1/org/roles", headers=b.headers("admin"),
                    json={"person_id": host, "role": "dispatch-receiving", "unit_id": None})
    assert r.status_code == 201, r.json
    made = CliRunner().invoke(main, ["create-user", "village1", "--person", "SQ001",
                                     "--password-stdin", "--db", b.db.url],
                              input="shiqiao-2026\n")
    assert made.exit_code == 0, made.output
    r = b.http.post("/api/v1/auth/token", json={"username": "village1",
                                                "password": "shiqiao-2026"})
    assert r.status_code == 201
    b.tokens["village1"] = r.json["access_token"]

    subject = USERNAME["RS0103"]
    cid = b.start("leader1", DISPATCH, "RS0103")
    b.act("leader1", cid, "nominate", {
        "post_type": "第一书记", "receiving_unit": "青山镇石桥村", "term_start": "2026-07-01",
        "term_end": "2027-06-30", "nomination_reason": "熟悉基层工作"})
    b.act("committee1", cid, "approve_dispatch",
          {"dispatch_order": "示人社党〔2026〕9号", "host": host})

    assert (REGULAR, "2026-07", 28) in b.open_cycles(*JULY_OPENS)  # the village's not
    cases = b.cases(REGULAR, period="2026-07")
    b.at(2026, 7, 31, 16)
    submit(b, "RS0103", cases["RS0103"])
    submit(b, "RS0102", cases["RS0102"])
    assert cases["RS0103"] not in queue_ids(b, "leader1")  # the host's now
    assert {i["id"] for i in b.queue("village1", flow=REGULAR)} == {cases["RS0103"]}
    b.act("leader1", cases["RS0103"], "evaluate", {"grade": "好"}, status=403)
    b.at(2026, 8, 3, 10)
    b.act("leader1", cases["RS0102"], "evaluate", {"grade": "较好"})  # tells nobody
    assert all(n["kind"] != "home_unit" for n in b.get(
        "leader1", "/api/v1/notifications", per_page=100)["items"])
    b.act("village1", cases["RS0103"], "evaluate", {"grade": "好"})
    assert b.history(cases["RS0103"])[-1]["actor_role"] == "evaluator"
    told = [n for n in b.get("leader1", "/api/v1/notifications", per_page=100)["items"]
            if n["kind"] == "home_unit"]
    assert [(n["case_id"], n["title"]) for n in told] == [
        (cases["RS0103"], "平时考核（下沉一线）：" + b.case(cases["RS0103"])["subject"]["name"]
         + " 2026-07 由接收方评为 好")]
    assert "接收方考核负责人：王村书" in told[0]["body"]
    assert all(n["kind"] != "home_unit" for n in b.get(
        subject, "/api/v1/notifications", per_page=100)["items"])  # the subject is not told

    # Term end (ended early here), evaluation, approval: the outcome is a person fact.
    b.at(2026, 8, 10, 10)
    b.act("committee1", cid, "end_early", comment="工作需要，提前召回")
    b.act(subject, cid, "submit_summary", {"summary": "驻村一月总结"})
    b.act("village1", cid, "evaluate", {"receiving_evaluation": "表现突出",
                                        "recommended_grade": "优秀", "county_opinion": "同意"})
    b.act(subject, cid, "accept")
    b.act("committee1", cid, "approve", {"grade": "优秀", "commendation_proposed": True,
                                         "promotion_priority": True})
    (fact,) = b.facts("RS0103")["dispatch_outcomes"]
    assert (fact["grade"], fact["post_type"], fact["promotion_priority"],
            fact["decided_on"]) == ("优秀", "第一书记", True, "2026-08-10")
    listing = b.get("admin", "/api/v1/ledger/eligibility", flow="rank-promotion",
                    date="2026-08-11")
    (me,) = [p for p in listing["people"] if p["person"]["id"] == b.people["RS0103"]]
    assert [(m["code"], m["fact_id"]) for m in me["priority"]] == [("frontline", fact["id"])]
