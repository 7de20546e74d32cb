"""Scenario (issue 13, item 10): contact points and training, on the demo bureau, through
the HTTP API with a controlled clock, on SQLite and PostgreSQL.

考核奖惩处 is registered as a contact point (联系点) of 2026 with 梁宇航 as its liaison
(联络员); the report flow's cycle opens its monthly information report (信息月报) in July,
August and September; the liaison files them — August late, September returned once — and
the hr office (干部科) reviews their quality. At the year-end evaluation the score sheet
(成绩单) gets the two lines the reports give without anyone typing them. Then a promotion
round whose definition asks for 90 training hours (学时) in the year before: 刘思远 is
refused, his training records (培训记录) are imported, and the derived total (records plus
the legacy yearly total) lets him through.
"""

from __future__ import annotations

from .test_scenarios import DIVISIONS, PROMOTION, ROOT, USERNAME, bureau, start  # noqa: F401

REPORT = "contact-point-report"
UNIT = "RSJ-KHJC"  # 考核奖惩处
LIAISON = "RS0208"  # 梁宇航, staff15
REGISTER = "/api/v1/contact-point-register"


def _post(b, who, url, body, status):
    r = b.http.post(url, headers=b.headers(who), json=body)
    assert r.status_code == status, (url, r.json)
    return r.json


def _open(b, *when) -> int:
    """The report case opened by the cycle at that moment (one contact point)."""
    opened = b.open_cycles(*when)
    key = f"{when[0]}-{when[1]:02d}"
    assert (REPORT, key, 1) in opened, opened
    (cid,) = b.cases(REPORT, period=key).values()
    return cid


def register(b) -> int:
    liaison = b.people[LIAISON]
    entry = {"unit_code": UNIT, "year": 2026, "liaison_id": liaison, "level": "市级联系点",
             "targets": ["建立“好差评”结果与平时考核审核评鉴相结合的办法", "形成一个创新案例"]}
    # Bad input: a precise message, nothing written.
    bad = _post(b, "owner", REGISTER, entry | {"liaison_id": b.people["RS0103"]}, 422)
    assert bad["fields"] == {"liaison_id": [
        f"person {b.people['RS0103']} (李明轩) is not of the contact-point unit; the liaison "
        "files the unit's reports and must belong to it"]}
    assert _post(b, USERNAME[LIAISON], REGISTER, entry, 403)["rule"] == \
        "needs_admin_or_process_owner"
    made = _post(b, "owner", REGISTER, entry, 201)
    assert (made["unit"]["code"], made["liaison"]["code"], made["targets"][1]) == (
        UNIT, LIAISON, "形成一个创新案例")
    again = _post(b, "owner", REGISTER, entry | {"liaison_id": b.people["RS0209"]}, 422)
    assert again["fields"]["unit_code"] == [
        f"{UNIT} is already a contact point in 2026 (entry {made['id']}); change that one "
        "instead"]
    # Read: the division's leader sees it, another division's leader does not.
    assert [e["unit"]["code"] for e in b.get("leader2", REGISTER, year=2026)["items"]] == [UNIT]
    assert b.get("leader1", REGISTER, year=2026)["items"] == []
    return made["id"]


def monthly_reports(b) -> dict[str, int]:
    who = USERNAME[LIAISON]
    cases = {}
    # July: opened on the 1st, filed within the 5 working days after the month, 好.
    cases["2026-07"] = cid = _open(b, 2026, 7, 1, 8)
    case = b.case(cid)
    assert (case["subject"]["id"], case["unit"]["id"], case["state"]) == (
        b.people[LIAISON], b.units[UNIT], "report")
    assert [i["id"] for i in b.queue(who, flow=REPORT)] == [cid]
    cases["2026-08"] = _open(b, 2026, 8, 1, 8)
    b.at(2026, 8, 3, 10)
    b.act(who, cid, "submit", {"progress": "7 月完成指标体系修订，召开座谈会 2 次。",
                               "highlights": ["“好差评”结果纳入审核评鉴"]})
    b.at(2026, 8, 4, 10)
    b.act("owner", cid, "approve", {"quality": "好"})

    # August: filed after its deadline (Monday 7 September); 一般 needs a comment.
    cid = cases["2026-08"]
    cases["2026-09"] = _open(b, 2026, 9, 1, 8)
    b.at(2026, 9, 15, 10)
    b.act(who, cid, "submit", {"progress": "8 月开展平时考核数据核查。"})
    b.at(2026, 9, 16, 10)
    refused = b.act("owner", cid, "approve", {"quality": "一般"}, status=422)
    assert refused["rule"] == "required_when"
    b.act("owner", cid, "approve", {"quality": "一般", "review_comment": "报送逾期，内容较简略。"})

    # September: filed in time (the National Day holiday moves the deadline to 13 October),
    # returned for more detail, filed again after the deadline: its first filing counts.
    cid = cases["2026-09"]
    b.at(2026, 10, 9, 10)
    b.act(who, cid, "submit", {"progress": "9 月总结季度审定情况。"})
    b.at(2026, 10, 10, 10)
    b.act("owner", cid, "return_report", comment="请补充季度审定中好等次分布情况")
    b.at(2026, 10, 19, 10)
    b.act(who, cid, "submit", {"progress": "9 月总结季度审定情况；好等次分布见附表。"})
    b.at(2026, 10, 20, 10)
    b.act("owner", cid, "approve", {"quality": "较好"})
    assert {b.case(c)["state"] for c in cases.values()} == {"done"}
    return cases


def score_sheet(b) -> None:
    b.at(2026, 10, 26, 10)
    url = f"/api/v1/contact-points/{UNIT}/2026"
    typed = [{"item": "台账管理", "score": 38.5, "max": 40},
             {"item": "创新案例", "score": 27, "max": 30}]
    r = b.http.put(url, headers=b.headers("owner"),
                   json={"items": [*typed, {"item": "信息月报质量", "score": 9, "max": 9}]})
    assert r.status_code == 422, r.json
    assert r.json["fields"] == {"items[2].item": [
        "'信息月报质量' is derived from the monthly reports (信息月报); leave it out, it is "
        "added by itself"]}
    r = b.http.put(url, headers=b.headers("owner"), json={"items": typed, "note": "年底评估"})
    assert r.status_code == 201, r.json
    # Three reports, two first filed on time; quality 好 3 + 一般 1 + 较好 2 of 3 × 3.
    assert [(i["item"], i["score"], i["max"]) for i in r.json["items"]] == [
        ("台账管理", 38.5, 40.0), ("创新案例", 27.0, 30.0), ("信息月报按时报送", 2.0, 3.0),
        ("信息月报质量", 6.0, 9.0)]
    assert r.json["score"] == 73.5
    board = b.get("owner", "/api/v1/contact-points", year=2026)
    (sheet,) = board["sheets"]
    assert sheet["reports"] == {
        "reports": 3, "submitted": 3, "on_time": 2, "on_time_rate": 0.6667, "reviewed": 3,
        "quality": {"好": 1, "较好": 1, "一般": 1, "较差": 0}, "quality_points": 6,
        "quality_max": 9}
    (entry,) = b.get("owner", REGISTER, year=2026)["items"]
    assert entry["reports"] == sheet["reports"]


def training_and_promotion(b) -> None:
    # The promotion definition asks for 90 hours in the year before the decision.
    text = (ROOT / "definitions" / "rank-promotion.yaml").read_text(encoding="utf-8")
    marker = "          # min_good: 3"
    assert marker in text
    b.engine.publish(text.replace(marker, "          min_training_hours: 90\n" + marker),
                     "rank-promotion-training.yaml")
    b.at(2026, 12, 16, 10)
    cid = b.start("leader1", PROMOTION, "RS0104")
    plan = {"target_rank": "一级主任科员", "round": "2026-2"}
    refused = b.act("leader1", cid, "propose", plan, status=422)  # judged at the 动议
    assert refused["rule"] == "promotion_eligible"
    assert refused["message"].endswith(
        "is not eligible for 一级主任科员 on 2026-12-16: needs 90.0 training hours in 2025, "
        "has 0.0 (0 records)")
    # 干部科 imports last year's training records and a legacy yearly total.
    person = b.people["RS0104"]
    csv = ("person_code,fact,year,date,value,number,organiser,mode,note\n"
           "RS0104,training_record,,2025-05-30,新时代公务员能力提升专题班,56,市委党校,线下,\n"
           "RS0104,training_record,,2025-10-15,网络学院专题课程,24,,online,\n"
           "RS0104,training,2025,,,12,,,2025 年未分项登记的学时\n")
    bad = _post(b, "admin", "/api/v1/facts/import",
                {"csv": csv + "RS0104,training_record,,2025-11-01,讲座,2,,函授,\n"}, 422)
    assert bad["errors"] == [{"line": 5, "message": "mode (kind): '函授' is not a kind of "
                                                    "training; the kinds are online (线上) and "
                                                    "offline (线下)"}]
    assert b.facts("RS0104")["training_records"] == []  # nothing written
    done = _post(b, "admin", "/api/v1/facts/import", {"csv": csv}, 200)
    assert done["created"]["training_record"] == 2 and done["created"]["training"] == 1
    facts = b.facts("RS0104")
    assert [(t["course"], t["hours"], t["kind"]) for t in facts["training_records"]] == [
        ("新时代公务员能力提升专题班", "56.0", "offline"), ("网络学院专题课程", "24.0", "online")]
    totals = {t["year"]: t for t in facts["training_totals"]}
    assert totals[2025] == {"year": 2025, "records": 2, "record_hours": "80.0",
                            "legacy_hours": "12.0", "hours": "92.0"}
    assert totals[2026]["hours"] == "40.0"  # the demo's legacy total, no records
    audit = b.get("admin", f"/api/v1/facts/people/{person}/audit")["items"]
    assert {(a["table"], a["action"]) for a in audit[:3]} == {
        ("training_records", "import"), ("training_hours", "import")}
    b.act("leader1", cid, "propose", plan)
    b.act("owner", cid, "record_votes", {"votes_cast": 30, "votes_for": 26,
                                         "votes_against": 4})
    b.at(2026, 12, 21, 10)  # rechecked on the decision date
    assert b.act("committee1", cid, "confirm",
                 {"decision_date": "2026-12-21"})["to"] == "vetting"


def test_contact_point_reports_feed_the_score_sheet_and_training_feeds_promotion(
        bureau):  # noqa: F811 - the fixture imported from test_scenarios
    b = bureau
    assert b.units[UNIT] and LIAISON in DIVISIONS[UNIT]
    register(b)
    monthly_reports(b)
    score_sheet(b)
    training_and_promotion(b)
