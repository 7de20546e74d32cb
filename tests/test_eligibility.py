"""Eligibility lists (任职资格名单, workflows/eligibility.py and GET /api/v1/ledger/eligibility):
who in a unit may be proposed for the next rank on a date, who may not and why (the rule's
own reasons and numbers), the priority markers (下沉一线 recommended for priority,
consecutive 优秀 years), who sees whom, the downloads, and a query count that does not grow
with the number of people."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from openpyxl import load_workbook
from sqlalchemy import event, select

from workflows import eligibility, facts
from workflows.access import load_viewer
from workflows.engine import Engine
from workflows.errors import FieldErrors
from workflows.facts import person_facts
from workflows.models import Person, Unit
from workflows.org import add_person, add_unit, assign_role

from .conftest import ROOT, Clock, cst
from .test_promotion import FLOW, PROMOTION, SOURCE, P

D = dt.date
ON = D(2026, 3, 2)
DISPATCH = ROOT / "definitions" / "frontline-dispatch.yaml"
EXAM = "政治理论考试"


def _facts(db, org):
    """The people of the `org` fixture with the facts each case needs (see the asserts)."""
    chief = org.chief
    with db.unit_of_work() as s:
        def rank(who, r, since, grades=(), exam=True):
            if r:
                facts.add_rank(s, org.ids[who], r, since, by=chief)
            for year, grade in grades:
                facts.add_annual_result(s, org.ids[who], year, grade, by=chief)
            if exam:
                facts.add_exam_result(s, org.ids[who], EXAM, D(2025, 5, 1), True, by=chief)

        rank("s1", "二级主任科员", D(2022, 1, 1), [(y, "称职") for y in range(2022, 2026)])
        rank("s2", "二级主任科员", D(2025, 3, 2), [(2025, "优秀")], exam=False)
        facts.add_sanction(s, org.s2, "警告", D(2026, 1, 10), by=chief)
        rank("s3", "三级主任科员", D(2020, 1, 1), [(y, "优秀") for y in (2023, 2024, 2025)])
        rank("s5", "一级巡视员", D(2020, 1, 1), [(2025, "称职")])
        rank("t1", "四级主任科员", D(2023, 1, 1), [(y, "称职") for y in (2023, 2024, 2025)])
        rank("t2", "一级科员", D(2024, 1, 1), [(2024, "称职"), (2025, "基本称职")], exam=False)
        # d1's rank is on the person record only (the organisation import), not in history
        d1 = s.get(Person, org.d1)
        d1.rank, d1.rank_since = "乡科级副职", D(2024, 6, 1)
        rank("d1", None, None, [(2024, "称职"), (2025, "称职")])


def _frontline(db, org, who, leader, closed_on, priority=True):
    """A frontline dispatch of `who`, ended early and closed on `closed_on` with the
    result recommending priority for promotion (or not)."""
    clock = Clock(cst(closed_on.year, closed_on.month, closed_on.day, 10))
    eng = Engine(db, clock=clock)
    eng.publish(DISPATCH.read_text(encoding="utf-8"), str(DISPATCH))
    with db.unit_of_work() as s:
        town = s.query(Unit).filter_by(code="TOWN").one_or_none() or add_unit(s, "TOWN",
                                                                             "青山镇")
        cadre = add_person(s, f"TOWN{who}", "镇组织委员", town, "deputy")
        assign_role(s, cadre, "dispatch-receiving")
        cadre_id = cadre.id
    case = eng.start_case("frontline-dispatch", org.ids[who], actor=P(leader))
    eng.fire(case.id, "nominate", P(leader), data={
        "post_type": "第一书记", "receiving_unit": "青山镇石桥村", "term_start": "2025-01-01",
        "term_end": "2025-12-31", "nomination_reason": "基层工作经验丰富"})
    eng.fire(case.id, "approve_dispatch", P(org.c1), data={"dispatch_order": "组干〔2025〕1号"})
    eng.fire(case.id, "end_early", P(org.c1), comment="任期届满前召回")
    eng.fire(case.id, "submit_summary", P(org.ids[who]), data={"summary": "驻村工作总结"})
    eng.fire(case.id, "evaluate", P(cadre_id), data={
        "receiving_evaluation": "带领发展集体经济。", "recommended_grade": "优秀",
        "county_opinion": "同意。"})
    eng.fire(case.id, "accept", P(org.ids[who]))
    eng.fire(case.id, "approve", P(org.c1), data={
        "grade": "优秀", "commendation_proposed": True, "promotion_priority": priority})
    return case.id


@pytest.fixture
def promotion(engine):
    return engine.publish(SOURCE, str(PROMOTION))


def listing(db, org, who="chief", on=ON, unit=None, flow=None, engine=None):
    spec = (engine.flow(FLOW).spec if engine else flow)
    with db.unit_of_work(write=False) as s:
        viewer = load_viewer(s, org.ids[who])
        return eligibility.eligibility_list(s, viewer, spec, on, unit_id=unit)


def by_code(out):
    return {p["person"]["code"]: p for p in out["people"]}


def summary(p):
    """(next rank, eligible, reason codes) per next rank; the person's own reasons."""
    return ([(t["rank"], t["eligible"], [r["code"] for r in t["reasons"]])
             for t in p["next_ranks"]], [r["code"] for r in p["reasons"]])


# --------------------------------------------------------------------------- the list


def test_who_is_eligible_who_not_and_why(db, engine, org, promotion):
    _facts(db, org)
    out = listing(db, org, engine=engine)
    assert (out["flow"], out["date"], out["unit"], out["total"], out["eligible"]) == (
        FLOW, ON, None, 13, 3)
    people = by_code(out)
    assert [c for c in people] == ["C1", "C2", "CHIEF", "D1", "L1", "S1", "S2", "S3", "S4",
                                   "S5", "L2", "T1", "T2"]  # unit (tree order), then code
    s1 = people["S1"]
    assert (s1["rank"], s1["rank_since"], s1["eligible"]) == ("二级主任科员", D(2022, 1, 1), True)
    assert summary(s1) == ([("一级主任科员", True, [])], [])
    assert summary(people["S3"]) == ([("二级主任科员", True, [])], [])
    assert summary(people["T1"]) == ([("三级主任科员", True, [])], [])
    # the rule's own reasons, with their numbers
    (s2,) = people["S2"]["next_ranks"]
    assert [r["message"] for r in s2["reasons"]] == [
        "needs 2.0 years in 二级主任科员, has 1.5 (1 优秀 year counted)",
        "sanction 警告 decided 2026-01-10 is in effect until 2026-07-10"]
    assert (s2["reasons"][0]["counted_months"], s2["reasons"][0]["excellent_years"]) == (
        18.0, [2025])
    (t2,) = people["T2"]["next_ranks"]
    assert t2["rank"] == "四级主任科员"
    assert [r["message"] for r in t2["reasons"]] == [
        "needs 3.0 years in 一级科员, has 1.1 (0 优秀 years counted; not counted: 2025 "
        "(基本称职))",
        "last annual result 基本称职 (2025) is below 称职"]
    # the rank from the person record when the history has none
    (d1,) = people["D1"]["next_ranks"]
    assert (people["D1"]["rank"], d1["rank"], d1["eligible"]) == ("乡科级副职", "三级主任科员", False)
    assert [r["message"] for r in d1["reasons"]] == [
        "needs 2.0 years in 乡科级副职, has 1.7 (0 优秀 years counted)"]
    # no next rank: no rank on record, or the top of the ladder
    assert summary(people["S4"]) == ([], ["rank"])
    assert summary(people["S5"]) == ([], ["ladder"])
    assert people["S5"]["reasons"][0]["message"] == (
        "一级巡视员 is the start of no step of the ladder (the top rank, or a rank off the "
        "ladder)")
    assert people["S4"]["eligible"] is False and people["S5"]["eligible"] is False


def test_the_decision_date_decides(db, engine, org, promotion):
    _facts(db, org)
    later = by_code(listing(db, org, engine=engine, on=D(2026, 9, 2)))
    # on 2 September: 18 + 6 months and the 优秀 half year → 2.0; the 警告 is over (no
    # exam for 一级主任科员: 凡提必考 is for the 调研员 ranks)
    assert later["S2"]["next_ranks"][0]["reasons"] == []
    assert later["D1"]["eligible"] is True  # 27 months as 乡科级副职
    earlier = by_code(listing(db, org, engine=engine, on=D(2023, 6, 1)))
    assert [r["code"] for r in earlier["S1"]["next_ranks"][0]["reasons"]] == ["years"]


def test_priority_markers(db, engine, org, promotion):
    _facts(db, org)
    case_id = _frontline(db, org, "t1", org.l2, D(2026, 1, 10))
    _frontline(db, org, "s1", org.l1, D(2026, 1, 12), priority=False)
    people = by_code(listing(db, org, engine=engine))
    # the marker reads the person fact the dispatch's approval wrote (dispatch_outcomes)
    with db.unit_of_work() as s:
        (fact,) = person_facts(s, org.t1).dispatch_outcomes
    assert people["T1"]["priority"] == [{
        "code": "frontline", "key": "eligibility.priority_frontline",
        "message": f"下沉一线 第一书记 青山镇石桥村 2025-01-01–2025-12-31 优秀: result "
                   f"recommends priority for promotion (frontline-dispatch case {case_id} "
                   f"(approve))",
        "fact_id": fact.id, "post_type": "第一书记", "receiving_unit": "青山镇石桥村",
        "term_start": "2025-01-01", "term_end": "2025-12-31", "grade": "优秀",
        "decided_on": "2026-01-10"}]
    assert people["S1"]["priority"] == []  # a dispatch whose result gives no priority
    assert people["S3"]["priority"] == [{
        "code": "excellent_years", "message": "3 consecutive 优秀 years (2023–2025)",
        "key": "eligibility.priority_excellent_years",
        "years": [2023, 2024, 2025], "needed": 2}]
    assert people["S2"]["priority"] == []  # one 优秀 year only
    # a list dated before the dispatch closed does not show it
    assert by_code(listing(db, org, engine=engine, on=D(2026, 1, 9)))["T1"]["priority"] == []


def test_a_dispatch_outcome_entered_by_an_admin_is_read_like_one_a_flow_wrote(db, engine, org,
                                                                           promotion):
    """The marker reads the person fact, not the dispatch cases: an outcome recorded before
    the system (an admin's row, no case) counts the same."""
    _facts(db, org)
    with db.unit_of_work() as s:
        facts.add_fact(s, facts.DISPATCH, org.t1, {
            "post_type": "下沉社区", "receiving_unit": "东城社区", "term_start": "2024-01-01",
            "term_end": "2024-12-31", "grade": "优秀", "promotion_priority": "是",
            "decided_on": "2025-01-20"}, by=org.chief)
    (mark,) = by_code(listing(db, org, engine=engine))["T1"]["priority"]
    assert (mark["code"], mark["grade"], mark["decided_on"], mark["receiving_unit"]) == (
        "frontline", "优秀", "2025-01-20", "东城社区")
    assert mark["message"].endswith(f"(fact {mark['fact_id']})")


def test_a_poor_dispatch_outcome_defers_promotion_only_when_the_definition_says_so(
        db, engine, org):
    _facts(db, org)
    with db.unit_of_work() as s:
        facts.add_fact(s, facts.DISPATCH, org.s1, {
            "post_type": "第一书记", "grade": "基本称职", "decided_on": "2025-09-01"},
            by=org.chief)
    engine.publish(SOURCE, str(PROMOTION))
    assert by_code(listing(db, org, engine=engine))["S1"]["eligible"] is True  # off by default
    assert "# dispatch_min_grade: 称职" in SOURCE
    engine.publish(SOURCE.replace("# dispatch_min_grade: 称职", "dispatch_min_grade: 称职")
                   .replace("# dispatch_block_years: 1", "dispatch_block_years: 1"), "bar.yaml")
    (target,) = by_code(listing(db, org, engine=engine))["S1"]["next_ranks"]
    assert target["eligible"] is False
    assert target["reasons"] == [{
        "code": "dispatch", "key": "promotion.dispatch_outcome_decided_below",
        "grade": "基本称职", "decided_on": "2025-09-01",
        "until": "2026-09-01", "needed": "称职", "fact_id": target["reasons"][0]["fact_id"],
        "message": "dispatch outcome 基本称职 (第一书记, decided 2025-09-01) is below 称职; "
                   "defers promotion until 2026-09-01"}]
    # a year after the approval the outcome no longer defers
    later = by_code(listing(db, org, engine=engine, on=D(2026, 9, 1)))["S1"]
    assert later["next_ranks"][0]["eligible"] is True


def test_the_priority_count_is_a_parameter_of_the_definition(db, engine, org):
    assert "priority_excellent_years: 2 " in SOURCE
    src = SOURCE.replace("priority_excellent_years: 2 ", "priority_excellent_years: 4 ")
    engine.publish(src, "four-years.yaml")
    _facts(db, org)
    assert by_code(listing(db, org, engine=engine))["S3"]["priority"] == []


def test_min_good_is_read_for_everyone_at_once(db, org, regular):
    engine = Engine(db, clock=Clock(cst(2026, 3, 2, 10)))
    engine.publish(SOURCE.replace("# min_good: 3 ", "min_good: 1 "), str(PROMOTION))
    _facts(db, org)
    c = engine.start_case("regular-assessment", org.s1, period_key="2026-01")  # 当年
    engine.fire(c.id, "submit", P(org.s1), data={"summary": "x"})
    engine.fire(c.id, "evaluate", P(org.l1), data={"grade": "好"})
    engine.fire(c.id, "accept", P(org.s1))
    engine.fire(c.id, "approve", P(org.c1))
    people = by_code(listing(db, org, engine=engine))
    assert people["S1"]["eligible"] is True
    (t1,) = people["T1"]["next_ranks"]
    assert [r["message"] for r in t1["reasons"]] == [
        "needs at least 1 好 in the regular assessments of 2026, has 0"]


def test_who_sees_whom(db, engine, org, promotion):
    _facts(db, org)
    codes = {who: [p["person"]["code"] for p in listing(db, org, who, engine=engine)["people"]]
             for who in ("c1", "l1", "l2", "s1")}
    assert codes["c1"][:3] == ["C1", "C2", "CHIEF"] and len(codes["c1"]) == 13
    assert codes["l1"] == ["D1", "L1", "S1", "S2", "S3", "S4", "S5"]
    assert codes["l2"] == ["L2", "T1", "T2"]
    assert codes["s1"] == ["S1"]
    sec2 = listing(db, org, "c1", engine=engine, unit=org.units["SEC2"])
    assert sec2["unit"] == {"id": org.units["SEC2"], "name": "干部二科"}
    assert [p["person"]["code"] for p in sec2["people"]] == ["L2", "T1", "T2"]
    # a unit out of the viewer's reach narrows to nobody, never widens
    assert listing(db, org, "l1", engine=engine, unit=org.units["SEC2"])["people"] == []
    with db.unit_of_work() as s:
        s.get(Person, org.s4).active = False
    assert "S4" not in by_code(listing(db, org, engine=engine))


def test_the_bulk_snapshots_are_the_rules_snapshots(db, engine, org, promotion):
    _facts(db, org)
    with db.unit_of_work(write=False) as s:
        rows = {r.id: r for r in s.execute(select(Person.id, Person.rank,
                                                  Person.rank_since)).all()}
        snaps = facts.people_facts(s, select(Person.id), rows)
        assert snaps == {pid: facts.person_facts(s, pid) for pid in rows}


def test_one_query_per_table_however_many_people(db, engine, org, promotion):
    _facts(db, org)
    spec = engine.flow(FLOW).spec
    statements = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement.split()[0:8])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        listing(db, org, flow=spec)
        few = len(statements)
        with db.unit_of_work() as s:
            unit = s.get(Unit, org.units["SEC1"])
            for i in range(30):
                p = add_person(s, f"X{i:02d}", f"新人{i}", unit)
                s.flush()
                facts.add_rank(s, p.id, "一级科员", D(2023, 1, 1), by=None)
                facts.add_annual_result(s, p.id, 2025, "优秀", by=None)
        statements.clear()
        out = listing(db, org, flow=spec)
        assert out["total"] == 43
        assert len(statements) == few, statements
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def test_a_flow_without_the_rule_is_refused(db, engine, org, regular):
    with pytest.raises(FieldErrors) as exc:
        listing(db, org, flow=engine.flow("regular-assessment").spec)
    assert exc.value.errors == {"flow": [
        "flow 'regular-assessment' has no promotion_eligible rule, so it has no ladder to "
        "judge by"]}


# --------------------------------------------------------------------------- HTTP

URL = "/api/v1/ledger/eligibility"


@pytest.fixture
def eapi(api, engine, db, org):
    engine.publish(SOURCE, str(PROMOTION))
    _facts(db, org)
    engine.clock = lambda: cst(2026, 3, 2, 10)
    return api


def test_http_json(eapi):
    out = eapi.get("owner", f"{URL}?date=2026-03-02").get_json()
    assert (out["date"], out["total"], out["eligible"]) == ("2026-03-02", 15, 3)
    people = by_code(out)
    assert people["S1"]["rank_since"] == "2022-01-01"
    assert people["S2"]["next_ranks"][0]["reasons"][1]["effect_ends"] == "2026-07-10"
    # without a date: today on the service's clock
    assert eapi.get("owner", URL).get_json()["date"] == "2026-03-02"
    out = eapi.get("l2", f"{URL}?date=2026-09-02").get_json()
    assert [p["person"]["code"] for p in out["people"]] == ["L2", "T1", "T2"]
    assert eapi.get("t2", URL).get_json()["total"] == 1


def test_http_downloads(eapi):
    sec2 = eapi.org.units["SEC2"]
    r = eapi.get("owner", f"{URL}?date=2026-03-02&unit_id={sec2}&format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"] == (
        f'attachment; filename="eligibility-rank-promotion-2026-03-02-unit{sec2}.csv"')
    text = r.get_data().decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[0] == ["人员编号", "姓名", "单位", "现职级", "任现职级时间", "拟晋升职级",
                       "是否符合任职资格", "不符合的原因", "优先情形"]
    assert rows[1:] == [
        ["L2", "测试l2", "干部二科", "", "", "", "否", "no current rank on record", ""],
        ["T1", "测试t1", "干部二科", "四级主任科员", "2023-01-01", "三级主任科员", "是", "", ""],
        ["T2", "测试t2", "干部二科", "一级科员", "2024-01-01", "四级主任科员", "否",
         "needs 3.0 years in 一级科员, has 1.1 (0 优秀 years counted; not counted: 2025 "
         "(基本称职)); last annual result 基本称职 (2025) is below 称职", ""]]
    r = eapi.get("owner", f"{URL}?date=2026-03-02&format=xlsx")
    assert r.status_code == 200
    ws = load_workbook(io.BytesIO(r.get_data())).active
    assert ws.title == "任职资格名单"
    values = [[c.value for c in row] for row in ws.iter_rows(min_row=2)]
    s3 = [v for v in values if v[0] == "S3"]
    assert s3 == [["S3", "测试s3", "干部一科", "三级主任科员", dt.datetime(2020, 1, 1),
                   "二级主任科员", "是", None, "3 consecutive 优秀 years (2023–2025)"]]


def test_http_refusals(eapi):
    r = eapi.get("owner", f"{URL}?unit_id=99999")
    assert r.status_code == 404
    r = eapi.get("owner", f"{URL}?date=2026-02-30")
    assert r.status_code == 422 and "query.date" in r.get_json()["fields"]
    r = eapi.get("owner", f"{URL}?flow=regular-assessment")
    assert r.status_code == 422
    assert r.get_json()["fields"]["query.flow"][0].startswith(
        "flow 'regular-assessment' has no promotion_eligible rule")
    assert eapi.get("owner", f"{URL}?flow=nope").status_code == 404
    assert eapi.get("owner", f"{URL}?format=pdf").status_code == 422
