"""Scenarios of issue 13 as a 组织人事 department reads the rules (items 2, 3 and 6).

Each plays on the demo bureau of `tests/test_scenarios.py` through HTTP, on a controlled
clock (the department's own 2026 round), or through the engine where the step is an annual
assessment:

- the rank ladder (《公务员职务与职级并行规定》第十八条): 一级科员 → 四级主任科员 takes 3 years;
  a 乡镇党委书记 reaches 四级调研员 by the route of the source document; 三三制 binds the
  较高职级 only;
- sanctions: 党纪处分 and 组织处理 block promotion for their own effect periods, 开除党籍 for
  good, and block 优秀 (or any grade above 基本称职) in the annual assessment;
- vetting: eligibility is judged at the 动议, the 民主推荐 needs more than half of those
  voting, personal matters must be checked, the theory exam is asked for the 调研员 ranks
  and a pass expires.
"""

from __future__ import annotations

import datetime as dt

from workflows.engine import Actor

from . import test_annual, test_scenarios
from .test_annual import (
    GOOD_YEAR,
    _problems,
    _refusal,
    _regular_year,
    _rule,
    _sanction,
    _to_evaluation,
)
from .test_scenarios import PROMOTION, Bureau, evaluator

# the fixtures of those scenarios, used here as they are
bureau, start, annual = test_scenarios.bureau, test_scenarios.start, test_annual.annual
P = Actor.person
VOTES = {"votes_cast": 30, "votes_for": 26, "votes_against": 4}
CHECKED = {"vetting_opinion": "德才表现好，群众公认", "personal_matters_checked": True}


def _refused(b: Bureau, code: str, data: dict, rule: str = "promotion_eligible") -> dict:
    cid = b.start(evaluator(code), PROMOTION, code)
    body = b.act(evaluator(code), cid, "propose", data, status=422)
    assert body["rule"] == rule, body
    assert b.case(cid)["state"] == "plan"  # nothing written
    return body


def _reasons(body: dict) -> list[str]:
    (case,) = body["details"]["cases"]
    return [r["message"] for r in case["reasons"]]


def _to_approval(b: Bureau, code: str, data: dict, decided: str) -> int:
    cid = b.start(evaluator(code), PROMOTION, code)
    assert b.act(evaluator(code), cid, "propose", data)["to"] == "recommendation"
    assert b.act("owner", cid, "record_votes", VOTES)["to"] == "candidates"
    assert b.act("committee1", cid, "confirm", {"decision_date": decided})["to"] == "vetting"
    assert b.act("committee1", cid, "pass", CHECKED)["to"] == "public_notice"
    return cid


# --------------------------------------------------------------------------- item 2


def test_the_ladder_the_county_routes_and_three_thirds_for_higher_ranks(bureau):
    b = bureau
    b.at(2026, 6, 22, 10)
    # 周雨涵, 一级科员 since 1 September 2023: 2.7 years would have done under the old
    # 2-year row; 第十八条（十）asks 3.
    body = _refused(b, "RS0107", {"target_rank": "四级主任科员"})
    assert _reasons(body) == ["needs 3.0 years in 一级科员, has 2.7 (0 优秀 years counted)"]

    # 胡志鹏 has been 乡镇党委书记 since 1 January 2024 (a 挂任 recorded in his file): the
    # source document's route to 四级调研员, and as a 乡科级正职 to 一级主任科员 — not to
    # 三级调研员, which is reached from 四级调研员.
    r = b.http.post("/api/v1/facts/rank_history", headers=b.headers("admin"), json={
        "person_id": b.people["RS0204"], "rank": "乡镇党委书记", "since": "2024-01-01"})
    assert r.status_code == 201, r.json
    body = _refused(b, "RS0204", {"target_rank": "三级调研员", "category": "排头兵"})
    assert _reasons(body) == [
        "三级调研员 is reached from 县处级副职 or 四级调研员, not from 乡镇党委书记"]
    listing = b.get("owner", "/api/v1/ledger/eligibility", date="2026-06-22")
    (hu,) = [p for p in listing["people"] if p["person"]["code"] == "RS0204"]
    assert [(t["rank"], t["eligible"]) for t in hu["next_ranks"]] == [
        ("四级调研员", True), ("一级主任科员", True)]

    # 四级调研员 is a 较高职级: the 三三制 category is asked at the 动议 …
    body = _refused(b, "RS0204", {"target_rank": "四级调研员"}, rule="required_when")
    assert body["message"].endswith(
        "三三制 category (category) is required when Target rank (target_rank) is 四级调研员")
    r = b.http.put("/api/v1/rank-positions/RSJ/四级调研员/2026-1", headers=b.headers("owner"),
                   json={"positions": 3})
    assert r.status_code == 201, r.json
    # … and each category holds at most one of the three positions.
    higher = {"round": "2026-1", "target_rank": "四级调研员", "category": "排头兵"}
    a = _to_approval(b, "RS0204", higher, "2026-06-22")
    c = _to_approval(b, "RS0103", higher, "2026-06-22")  # 李明轩, 一级主任科员 since 2021
    # 一级主任科员 is not: no category, none counted
    lower = [_to_approval(b, code, {"round": "2026-1", "target_rank": "一级主任科员"},
                          "2026-06-22") for code in ("RS0104", "RS0205")]
    b.tick(2026, 7, 1, 0, 1)  # 公示: 23, 24, 25, 26, 29 June (5 working days)
    assert {b.case(x)["state"] for x in (a, c, *lower)} == {"approval"}
    assert b.act("committee1", a, "approve")["to"] == "filing"
    full = b.act("committee1", c, "approve", status=422)
    assert full["rule"] == "positions"
    assert "三三制: category 排头兵" in full["message"] and "may hold 1 of 3" in full["message"]
    for x in lower:
        assert b.act("committee1", x, "approve")["to"] == "filing"


# --------------------------------------------------------------------------- item 3


def test_party_discipline_and_organisational_measures_block_promotion(bureau):
    b = bureau
    b.at(2026, 6, 22, 10)
    for code, kind, day in (("RS0105", "党内警告", "2026-03-01"),  # 赵雪梅
                            ("RS0206", "免职", "2025-09-01"),  # 何家豪
                            ("RS0303", "开除党籍", "2026-05-10")):  # 唐振华
        r = b.http.post("/api/v1/facts/sanctions", headers=b.headers("admin"), json={
            "person_id": b.people[code], "kind": kind, "decided_on": day})
        assert r.status_code == 201, r.json
    expelled = b.facts("RS0303")["sanctions"][-1]
    assert (expelled["category"], expelled["effect_months"], expelled["effect_ends"]) == (
        "党纪处分", None, None)
    # 党内警告: a year (the 政务 警告 would have ended on 1 September)
    body = _refused(b, "RS0105", {"target_rank": "二级主任科员"})
    assert _reasons(body) == ["sanction 党内警告 decided 2026-03-01 is in effect until 2027-03-01"]
    assert body["details"]["cases"][0]["reasons"][0]["category"] == "党纪处分"
    # 免职: two years
    body = _refused(b, "RS0206", {"target_rank": "二级主任科员"})
    assert _reasons(body) == ["sanction 免职 decided 2025-09-01 is in effect until 2027-09-01"]
    # 开除党籍: no end
    body = _refused(b, "RS0303", {"target_rank": "四级调研员", "category": "实干家"})
    assert _reasons(body) == ["sanction 开除党籍 decided 2026-05-10 is in effect without end"]
    # a wrong kind is refused with the table of kinds, nothing written
    before = len(b.facts("RS0105")["sanctions"])
    r = b.http.post("/api/v1/facts/sanctions", headers=b.headers("admin"), json={
        "person_id": b.people["RS0105"], "kind": "严重警告", "decided_on": "2026-03-01"})
    assert r.status_code == 422
    assert "党纪处分: 党内警告, 党内严重警告" in str(r.json)
    assert len(b.facts("RS0105")["sanctions"]) == before
    # a year later the 党内警告 is over
    b.at(2027, 3, 1, 10)
    cid = b.start(evaluator("RS0105"), PROMOTION, "RS0105")
    assert b.act(evaluator("RS0105"), cid, "propose",
                 {"target_rank": "二级主任科员"})["to"] == "recommendation"


def test_party_discipline_and_organisational_measures_limit_the_annual_grade(
        engine, org, db, annual):
    # 党内严重警告: not 优秀 that year; 称职 still possible
    _regular_year(db, org.s1, GOOD_YEAR)
    _sanction(db, org.s1, "党内严重警告", dt.date(2026, 2, 1))
    cid = _to_evaluation(engine, org, "s1")
    v = _refusal(engine.fire, cid, "propose_excellent", P(org.l1), data={"grade": "优秀"})
    assert v.rule == "sanction_block" and v.details["category"] == "党纪处分"
    assert "党内严重警告 decided 2026-02-01 (applies to 2026) blocks 优秀 for 2026" in str(v)
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "称职"})
    # 撤销党内职务: nothing above 基本称职 that year
    _regular_year(db, org.s2, GOOD_YEAR)
    _sanction(db, org.s2, "撤销党内职务", dt.date(2026, 4, 1))
    cid = _to_evaluation(engine, org, "s2")
    v = _refusal(engine.fire, cid, "evaluate", P(org.l1), data={"grade": "称职"})
    assert "allows only 基本称职 / 不称职 / 不定等次 for 2026" in str(v)
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "基本称职",
                                                 "evaluation_comment": "受撤销党内职务处分"})
    # 降职 (组织处理): not 优秀 that year
    _regular_year(db, org.s3, GOOD_YEAR)
    _sanction(db, org.s3, "降职", dt.date(2026, 5, 1))
    cid = _to_evaluation(engine, org, "s3")
    v = _refusal(engine.fire, cid, "propose_excellent", P(org.l1), data={"grade": "优秀"})
    assert v.details["kind"] == "降职" and v.details["category"] == "组织处理"


def test_a_misspelt_sanction_kind_in_the_annual_table_is_refused():
    found = _problems(lambda d: _rule(d, "evaluate", "sanction_block")["kinds"].update(
        党内严重警高={"blocks": ["优秀"]}))
    assert any("'党内严重警高' is not a kind of sanction; the kinds are 警告, 记过" in p
               for p in found), found


# --------------------------------------------------------------------------- item 6


def test_vetting_is_enforced_step_by_step(bureau):
    b = bureau
    b.at(2026, 6, 22, 10)
    # 资格先行: 罗晓琳 (基本称职 in 2025) is refused at the 动议, before any vote is taken
    body = _refused(b, "RS0207", {"target_rank": "三级主任科员"})
    assert [r["code"] for r in body["details"]["cases"][0]["reasons"]] == [
        "years", "last_result"]
    # 民主推荐: 2 of 20 is no recommendation; 10 of 20 is not more than half
    cid = b.start(evaluator("RS0104"), PROMOTION, "RS0104")
    b.act(evaluator("RS0104"), cid, "propose", {"target_rank": "一级主任科员"})
    few = b.act("owner", cid, "record_votes", {"votes_cast": 20, "votes_for": 2}, status=422)
    assert few["rule"] == "recommendation_threshold"
    assert few["message"] == (f"case {cid}: 民主推荐 2 of 20 votes for; needs more than 50% "
                              "of those who took part (10)")
    half = b.act("owner", cid, "record_votes", {"votes_cast": 20, "votes_for": 10}, status=422)
    assert half["details"]["needed"] == 10.0
    assert b.case(cid)["state"] == "recommendation"
    b.act("owner", cid, "record_votes", {"votes_cast": 20, "votes_for": 11})
    b.act("committee1", cid, "confirm", {"decision_date": "2026-06-22"})
    # 个人有关事项 not checked: the committee may not pass the vetting
    unchecked = b.act("committee1", cid, "pass", {"vetting_opinion": "德才表现好",
                                                  "personal_matters_checked": False},
                      status=422)
    assert unchecked["fields"] == {"personal_matters_checked": ["must be true"]}
    assert b.case(cid)["state"] == "vetting"
    assert b.act("committee1", cid, "pass", CHECKED)["to"] == "public_notice"

    # 凡提必考 for the 调研员 ranks: 邓伟 failed the exam — no matter for 一级主任科员 …
    cid = b.start(evaluator("RS0305"), PROMOTION, "RS0305")
    assert b.act(evaluator("RS0305"), cid, "propose",
                 {"target_rank": "一级主任科员"})["to"] == "recommendation"
    # … but 胡志鹏's pass of 15 June 2026 counts for 四级调研员 for three years only.
    b.at(2029, 6, 14, 10)
    cid = b.start(evaluator("RS0204"), PROMOTION, "RS0204")
    assert b.act(evaluator("RS0204"), cid, "propose",
                 {"target_rank": "四级调研员", "category": "实干家"})["to"] == "recommendation"
    b.at(2029, 6, 15, 10)
    body = _refused(b, "RS0204", {"target_rank": "四级调研员", "category": "实干家"})
    assert _reasons(body) == [
        "theory exam 政治理论考试 not passed after 2026-06-15 (valid 3 years)"]
