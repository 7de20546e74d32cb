"""Scenarios of issue 13 items 7, 8 and 11 on the demo bureau, through the HTTP API only,
on SQLite and PostgreSQL (the fixture and helpers of tests/test_scenarios.py).

7. 平时考核结果运用, July 2026 in 公务员管理处: a 好 for urgent work becomes 通报表扬 and a
   嘉奖/记功 candidacy, a month with a negative-list hit can only be 较差 and becomes a
   待岗学习/召回管理 review; 干部科 (owner, group hr-office) is told; 较好 leads nowhere.
8. 年度考核 2026 appeals: a 称职 cannot be appealed (《公务员法》第九十五条); a 不称职 goes to
   申诉 directly, the office's change to 优秀 is refused by his 警告 (the rules of the first
   decision) and it decides 称职; a grade withheld during an investigation is set after it closes (补定等次).
9. (item 11) The case's actions offer the values each action accepts, and a value outside
   them is a field error.
"""

from __future__ import annotations

from .test_scenarios import ANNUAL, REGULAR, USERNAME, bureau, start  # noqa: F401 - the fixtures the tests use

GWY_LEADER = "leader1"


def _grade_field(case: dict, trigger: str, name: str = "grade") -> dict:
    (action,) = [a for a in case["actions"] if a["trigger"] == trigger]
    return next(f for f in action["requires"] if f["name"] == name)


def test_regular_results_have_their_consequences(bureau):  # noqa: F811 - the fixture
    b = bureau
    b.at(2026, 7, 1, 9)
    codes = ("RS0103", "RS0104", "RS0106")
    cases = {c: b.start("owner", REGULAR, c, "2026-07") for c in codes}
    b.at(2026, 7, 31, 16)
    for code in codes:
        b.act(USERNAME[code], cases[code], "submit", {"summary": "7 月小结"})
    b.at(2026, 8, 3, 10)
    # The evaluation form lists the unit's negative list (负面清单).
    evaluate = _grade_field(b.case(cases["RS0106"], GWY_LEADER), "evaluate", "negative_items")
    assert evaluate["item_values"][:2] == ["违反政治纪律和政治规矩", "违反中央八项规定精神"]
    b.act(GWY_LEADER, cases["RS0103"], "evaluate",
          {"grade": "好", "urgent_task_merit": True, "evaluation_comment": "防汛抢险表现突出"})
    b.act(GWY_LEADER, cases["RS0104"], "evaluate", {"grade": "较好", "urgent_task_merit": True})
    hit = {"grade": "一般", "evaluation_comment": "统计数据弄虚作假",
           "negative_items": ["弄虚作假"]}
    capped = b.act(GWY_LEADER, cases["RS0106"], "evaluate", hit, status=422)
    assert capped["rule"] == "negative_list"
    assert capped["message"] == (f"case {cases['RS0106']}: Negative-list items hit hit (弄虚作假): "
                                 "Grade can be 较差 only, not 一般")
    assert b.case(cases["RS0106"])["state"] == "evaluation"
    b.act(GWY_LEADER, cases["RS0106"], "evaluate", {**hit, "grade": "较差"})
    b.at(2026, 8, 4, 10)
    for code in codes:
        b.act(USERNAME[code], cases[code], "accept")
    b.at(2026, 10, 16, 10)
    done = b.bulk("committee1", "approve", list(cases.values()), comment="第三季度审定")
    assert done["counts"] == {"done": 3, "refused": 0}

    def consequences(code: str) -> list[tuple[str, str, str]]:
        return [(c["kind"], c["period"], c["decided_on"])
                for c in b.facts(code)["consequences"]]

    assert consequences("RS0103") == [("通报表扬", "2026-07", "2026-10-16"),
                                      ("嘉奖记功人选", "2026-07", "2026-10-16")]
    assert consequences("RS0104") == []
    assert consequences("RS0106") == [("待岗学习或召回管理", "2026-07", "2026-10-16")]
    told = b.get("owner", "/api/v1/notifications", per_page=50)["items"]
    mine = sorted((n["case_id"], n["title"]) for n in told if n["kind"] == "consequence")
    assert mine == [
        (cases["RS0103"], "平时考核结果运用：李明轩 2026-07 好 → 通报表扬、嘉奖记功人选"),
        (cases["RS0106"], "平时考核结果运用：黄俊杰 2026-07 较差 → 待岗学习或召回管理")]


def _annual_to_evaluation(b, codes: tuple[str, ...]) -> dict[str, int]:
    b.at(2026, 12, 1, 9)
    cases = {c: b.start("owner", ANNUAL, c, "2026") for c in codes}
    b.at(2026, 12, 2, 10)
    for code in codes:
        b.act(USERNAME[code], cases[code], "submit", {"summary": "2026 年度述职报告"})
    b.at(2026, 12, 3, 10)
    assert b.bulk(GWY_LEADER, "record_votes", list(cases.values()))["counts"]["done"] == 3
    return cases


def test_annual_appeals_follow_the_law(bureau):  # noqa: F811 - the fixture
    b = bureau
    r = b.http.post("/api/v1/facts/investigations", headers=b.headers("admin"),
                    json={"person_id": b.people["RS0105"], "opened_on": "2026-11-20"})
    assert r.status_code == 201, r.json
    investigation = r.json["id"]
    cases = _annual_to_evaluation(b, ("RS0104", "RS0105", "RS0106"))
    b.at(2026, 12, 4, 10)
    b.act(GWY_LEADER, cases["RS0104"], "evaluate", {"grade": "称职"})
    b.act(GWY_LEADER, cases["RS0106"], "evaluate",
          {"grade": "不称职", "evaluation_comment": "全年多项工作未完成"})
    b.act(GWY_LEADER, cases["RS0105"], "evaluate",
          {"grade": "不定等次", "evaluation_comment": "立案审查期间"})
    b.at(2026, 12, 7, 10)
    b.act("committee1", cases["RS0104"], "approve")
    b.act("committee1", cases["RS0106"], "approve")
    assert b.act("committee1", cases["RS0105"], "withhold",
                 {"grade": "不定等次"})["to"] == "withheld"
    b.at(2026, 12, 8, 9)
    for code in ("RS0104", "RS0106"):
        b.act(USERNAME[code], cases[code], "acknowledge")

    # 称职 is not among the results the law lets a person appeal.
    refused = b.act(USERNAME["RS0104"], cases["RS0104"], "appeal",
                    {"appeal_reason": "等次偏低"}, status=422)
    assert refused["rule"] == "appealable"
    assert refused["message"] == (
        f"case {cases['RS0104']}: Ask for review (appeal) is open only against 考核等次 不称职 "
        "(《公务员法》第九十五条); this case's 考核等次 is 称职")

    # 不称职: a complaint directly, without a review, to 同级公务员主管部门 (owner).
    b.at(2026, 12, 10, 9)
    assert b.act(USERNAME["RS0106"], cases["RS0106"], "complain",
                 {"complaint_reason": "考核未听取本人陈述"})["to"] == "complaint"
    b.at(2026, 12, 21, 10)
    excellent = b.act("owner", cases["RS0106"], "revise_excellent",
                      {"grade": "优秀", "complaint_decision": "申诉成立"}, status=422)
    # The same rules as the first decision: his 警告 of 2026 blocks 优秀.
    assert (excellent["rule"], excellent["details"]["kind"]) == ("sanction_block", "警告")
    assert b.act("owner", cases["RS0106"], "revise_on_complaint",
                 {"grade": "称职", "complaint_decision": "申诉成立，变更为称职"})["to"] == "closed"
    (year,) = [r for r in b.facts("RS0106")["annual_results"] if r["year"] == 2026]
    assert (year["grade"], year["source"]) == ("称职", "flow")

    # 补定等次: not before the investigation is closed, then through evaluation again.
    waiting = b.act("committee1", cases["RS0105"], "regrade", status=422)
    assert waiting["rule"] == "investigation_status"
    (withheld,) = [r for r in b.facts("RS0105")["annual_results"] if r["year"] == 2026]
    assert withheld["grade"] == "不定等次"
    r = b.http.patch(f"/api/v1/facts/investigations/{investigation}",
                     headers=b.headers("admin"), json={"closed_on": "2027-01-15"})
    assert r.status_code == 200, r.json
    b.at(2027, 1, 18, 10)
    assert b.act("committee1", cases["RS0105"], "regrade")["to"] == "evaluation"
    b.act(GWY_LEADER, cases["RS0105"], "evaluate", {"grade": "称职"})
    b.act("committee1", cases["RS0105"], "approve")
    (year,) = [r for r in b.facts("RS0105")["annual_results"] if r["year"] == 2026]
    assert (year["grade"], year["source"]) == ("称职", "flow")


def test_actions_offer_only_the_grades_they_accept(bureau):  # noqa: F811 - the fixture
    b = bureau
    cases = _annual_to_evaluation(b, ("RS0103", "RS0104", "RS0105"))
    case = b.case(cases["RS0103"], GWY_LEADER)
    assert _grade_field(case, "propose_excellent")["values"] == ["优秀"]
    assert _grade_field(case, "evaluate")["values"] == ["称职", "基本称职", "不称职", "不定等次"]
    wrong = b.act(GWY_LEADER, cases["RS0103"], "propose_excellent", {"grade": "称职"},
                  status=422)
    assert wrong["fields"] == {"grade": ["must be one of: 优秀"]}
    assert b.case(cases["RS0103"])["state"] == "evaluation"
