"""职级晋升 (definitions/rank-promotion.yaml, workflows/domain_rules/promotion.py):
the eligibility computation on crafted facts, the rule through the engine on facts written
with workflows.facts, the flow with its timers (公示 5 working days, 暂缓 re-review) on a
controlled clock, and the positions (职数) and 三三制 limits, including two approvals
racing for the last position on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from workflows import facts
from workflows.db import Database
from workflows.domain_rules.promotion import (
    EligibleParams,
    category_limit,
    eligibility_reasons,
    months_between,
    next_ranks,
)
from workflows.engine import SYSTEM_ACTOR, Actor, Engine
from workflows.errors import DefinitionInvalid, FieldErrors, RuleViolation
from workflows.facts import (
    AnnualFact,
    ExamFact,
    InvestigationFact,
    PersonFacts,
    RankFact,
    SanctionFact,
    add_months,
)
from workflows.spec import load_definition
from workflows.timers import TimerWorker

from .conftest import Clock, cst
from .test_concurrency import _race, _racing_engines

D = dt.date
P = Actor.person
PROMOTION = Path(__file__).resolve().parent.parent / "definitions" / "rank-promotion.yaml"
SOURCE = PROMOTION.read_text(encoding="utf-8")
FLOW = "rank-promotion"




def _confirm_params(**overrides) -> dict:
    doc = yaml.safe_load(SOURCE)
    (t,) = [t for t in doc["transitions"] if t["trigger"] == "propose"]
    (raw,) = [r["promotion_eligible"] for r in t["rules"] if "promotion_eligible" in r]
    return EligibleParams().load(dict(raw, **overrides))


PARAMS = _confirm_params()


RANK_DATE = D(2024, 1, 1)
EXAM_PASSED = (("政治理论考试", D(2023, 6, 1), True),)
SINCE_2022 = D(2022, 1, 1)


def snap(rank="二级主任科员", since=RANK_DATE, grades=None, sanctions=(),
         investigations=(), exams=EXAM_PASSED) -> PersonFacts:
    grades = grades if grades is not None else {}
    return PersonFacts(
        person_id=1, rank=rank, rank_since=since,
        rank_history=(RankFact(1, rank, since, None, None),) if rank else (),
        annual_results=tuple(AnnualFact(i, y, g, "manual", None)
                             for i, (y, g) in enumerate(sorted(grades.items()))),
        sanctions=tuple(SanctionFact(i, k, d, m, add_months(d, m), None)
                        for i, (k, d, m) in enumerate(sanctions)),
        investigations=tuple(InvestigationFact(i, o, c, None)
                             for i, (o, c) in enumerate(investigations)),
        exams=tuple(ExamFact(i, e, d, None, ok, None) for i, (e, d, ok) in enumerate(exams)),
        training=(), commendations=())


def reasons(s: PersonFacts, on: dt.date, target="一级主任科员", params=PARAMS, good=None):
    return [r.message for r in eligibility_reasons(s, params, target, on, good)]


# --------------------------------------------------------------------------- pure function


def test_months_between():
    assert months_between(D(2024, 1, 31), D(2024, 2, 29)) == 0
    assert months_between(D(2024, 1, 31), D(2024, 3, 1)) == 1
    assert months_between(D(2024, 7, 1), D(2026, 7, 1)) == 24
    assert months_between(D(2026, 7, 1), D(2024, 7, 1)) == 0


def test_the_ladder_from_the_definition_is_the_full_table():
    assert len(PARAMS["ladder"]) == 11
    assert PARAMS["ladder"]["一级主任科员"] == {"from": ["乡科级正职", "二级主任科员"], "years": 2.0}
    assert PARAMS["ladder"]["二级巡视员"] == {"from": ["一级调研员", "县委书记"], "years": 4.0}
    # 《公务员职务与职级并行规定》第十八条（十）: 一级科员 → 四级主任科员 takes 3 years
    assert PARAMS["ladder"]["四级主任科员"] == {"from": ["一级科员"], "years": 3.0}
    assert PARAMS["posts"] == {"县委书记": "县处级正职", "乡镇党委书记": "乡科级正职"}
    assert PARAMS["excellent_bonus_years"] == 0.5 and PARAMS["exam"] == "政治理论考试"
    assert PARAMS["exam_ranks"] == ["一级调研员", "二级调研员", "三级调研员", "四级调研员"]
    assert PARAMS["exam_valid_years"] == 3


def test_years_in_rank_with_the_excellent_bonus():
    one_year = snap(since=D(2025, 1, 1), grades={2024: "称职", 2025: "优秀"})
    assert reasons(one_year, D(2026, 1, 1)) == [
        "needs 2.0 years in 二级主任科员, has 1.5 (1 优秀 year counted)"]
    # 18 months + half a year for the 优秀 of 2025 = 2.0: eligible.
    assert reasons(snap(since=D(2024, 7, 1), grades={2024: "称职", 2025: "优秀"}),
                   D(2026, 1, 1)) == []
    assert reasons(snap(since=D(2024, 7, 1), grades={2024: "称职", 2025: "称职"}),
                   D(2026, 1, 1)) == [
        "needs 2.0 years in 二级主任科员, has 1.5 (0 优秀 years counted)"]
    # two 优秀 years: 12 + 2 × 6 months = 2.0
    assert reasons(snap(since=D(2025, 1, 1), grades={2025: "优秀", 2026: "优秀"}),
                   D(2026, 1, 1)) == []
    # a bonus parameter of 0 gives none
    no_bonus = _confirm_params(excellent_bonus_years=0)
    assert reasons(snap(since=D(2024, 7, 1), grades={2024: "称职", 2025: "优秀"}),
                   D(2026, 1, 1), params=no_bonus) == [
        "needs 2.0 years in 二级主任科员, has 1.5 (1 优秀 year counted)"]
    # a grade of a year before the rank date counts neither way
    assert reasons(snap(since=D(2024, 1, 1), grades={2023: "基本称职", 2024: "称职",
                                                     2025: "称职"}), D(2026, 1, 1)) == []


def test_years_graded_below_competent_do_not_count():
    s = snap(since=D(2023, 1, 1), grades={2023: "基本称职", 2024: "不定等次", 2025: "称职"})
    assert reasons(s, D(2026, 1, 1)) == [
        "needs 2.0 years in 二级主任科员, has 1.0 (0 优秀 years counted; "
        "not counted: 2023 (基本称职), 2024 (不定等次))"]
    s = snap(since=D(2023, 1, 1), grades={2023: "基本称职", 2024: "称职", 2025: "称职"})
    assert reasons(s, D(2026, 1, 1)) == []
    # only the part of a bad year spent in the rank is taken off: since July 2022
    s = snap(since=D(2022, 7, 1), grades={2022: "基本称职", 2023: "称职", 2024: "称职"})
    (r,) = eligibility_reasons(s, PARAMS, "一级主任科员", D(2024, 12, 1))
    assert r.message == ("needs 2.0 years in 二级主任科员, has 1.9 (0 优秀 years counted; "
                         "not counted: 2022 (基本称职))")
    assert (r.details["elapsed_months"], r.details["uncounted_months"]) == (29, 6)


def test_rank_and_target_must_fit_the_ladder():
    assert reasons(snap(rank="三级主任科员", grades={2025: "称职"}), D(2026, 6, 1)) == [
        "一级主任科员 is reached from 乡科级正职 or 二级主任科员, not from 三级主任科员"]
    assert reasons(snap(grades={2025: "称职"}), D(2026, 6, 1), target="处长") == [
        "处长 is not a rank of the ladder; known: " + ", ".join(PARAMS["ladder"])]
    assert reasons(snap(rank=None, since=None, grades={2025: "称职"}), D(2026, 6, 1)) == [
        "no current rank and rank date on record"]
    assert reasons(snap(grades={2025: "称职"}), D(2026, 6, 1), target=None) == [
        "no target rank given"]


def test_a_running_sanction_blocks_until_its_effect_ends():
    s = snap(since=D(2022, 1, 1), grades={2025: "称职"},
             sanctions=[("记过", D(2026, 3, 1), 12), ("警告", D(2024, 1, 1), 6)])
    assert reasons(s, D(2026, 6, 1)) == [
        "sanction 记过 decided 2026-03-01 is in effect until 2027-03-01"]
    assert reasons(s, D(2027, 2, 28)) == [
        "sanction 记过 decided 2026-03-01 is in effect until 2027-03-01"]
    assert reasons(s, D(2027, 3, 1)) == []  # the effect period is over on its end date
    assert reasons(s, D(2026, 2, 28)) == []  # not yet decided on the decision date


def test_an_investigation_blocks_while_open():
    s = snap(since=D(2022, 1, 1), grades={2025: "称职"},
             investigations=[(D(2026, 1, 5), None)])
    assert reasons(s, D(2026, 2, 1)) == ["under investigation since 2026-01-05"]
    closed = snap(since=D(2022, 1, 1), grades={2025: "称职"},
                  investigations=[(D(2026, 1, 5), D(2026, 1, 20))])
    assert reasons(closed, D(2026, 2, 1)) == []
    assert reasons(closed, D(2026, 1, 10)) == ["under investigation since 2026-01-05"]


def test_the_last_annual_result_must_be_competent():
    s = snap(since=D(2022, 1, 1), grades={2022: "称职", 2023: "称职", 2024: "优秀",
                                          2025: "基本称职"})
    assert reasons(s, D(2026, 6, 1)) == ["last annual result 基本称职 (2025) is below 称职"]
    s = snap(since=D(2022, 1, 1), grades={2024: "称职", 2025: "不称职"})
    assert "last annual result 不称职 (2025) is below 称职" in reasons(s, D(2026, 6, 1))
    assert reasons(snap(since=D(2022, 1, 1)), D(2026, 6, 1)) == ["no annual result on record"]
    # a result of a year after the decision date is not "last" yet
    s = snap(since=D(2022, 1, 1), grades={2024: "称职", 2026: "基本称职"})
    assert reasons(s, D(2025, 6, 1)) == []


def test_the_theory_exam_must_be_passed_by_the_decision_date():
    base = dict(rank="一级主任科员", since=D(2022, 1, 1), grades={2025: "称职"})
    up = "四级调研员"  # 凡提必考: a 处级 rank
    missing = "theory exam 政治理论考试 not passed after 2023-06-01 (valid 3 years)"
    assert reasons(snap(**base, exams=()), D(2026, 6, 1), up) == [missing]
    failed = snap(**base, exams=[("政治理论考试", D(2026, 1, 1), False)])
    assert reasons(failed, D(2026, 6, 1), up) == [missing]
    later = snap(**base, exams=[("政治理论考试", D(2026, 7, 1), True)])
    assert reasons(later, D(2026, 6, 1), up) == [missing]
    assert reasons(later, D(2026, 7, 1), up) == []
    no_exam = _confirm_params(exam=None)
    assert reasons(snap(**base, exams=()), D(2026, 6, 1), up, params=no_exam) == []


def test_the_exam_is_scoped_to_the_ranks_named_and_expires():
    # 一级主任科员 is not a 处级 rank: no exam asked
    assert reasons(snap(since=D(2022, 1, 1), grades={2025: "称职"}, exams=()),
                   D(2026, 6, 1)) == []
    # a pass of 1 June 2023 is valid for 3 years: on 31 May 2026, not on 1 June 2026
    s = snap(rank="一级主任科员", since=D(2022, 1, 1), grades={2025: "称职"},
             exams=[("政治理论考试", D(2023, 6, 1), True)])
    assert reasons(s, D(2026, 5, 31), "四级调研员") == []
    assert [r.code for r in eligibility_reasons(s, PARAMS, "四级调研员", D(2026, 6, 1))] == [
        "exam"]
    # without exam_ranks the exam is asked for every rank; without exam_valid_years a pass
    # never expires (the old defaults, still possible)
    every = _confirm_params(exam_ranks=None, exam_valid_years=None)
    assert reasons(snap(since=D(2022, 1, 1), grades={2025: "称职"}, exams=()),
                   D(2026, 6, 1), params=every) == ["theory exam 政治理论考试 not passed"]
    assert reasons(s, D(2040, 6, 1), "四级调研员", params=every) == []


def test_posts_reach_the_routes_of_their_level():
    # 乡镇党委书记 counts as 乡科级正职 (→ 一级主任科员) and has its own route to 四级调研员
    recent = [("政治理论考试", D(2025, 5, 1), True)]
    s = snap(rank="乡镇党委书记", since=D(2022, 1, 1), grades={2025: "称职"}, exams=recent)
    assert next_ranks(PARAMS["ladder"], "乡镇党委书记", PARAMS["posts"]) == [
        "四级调研员", "一级主任科员"]
    assert reasons(s, D(2026, 6, 1), "一级主任科员") == []
    assert reasons(s, D(2026, 6, 1), "四级调研员") == []
    assert reasons(s, D(2026, 6, 1), "三级调研员") == [
        "三级调研员 is reached from 县处级副职 or 四级调研员, not from 乡镇党委书记"]
    # 县委书记: 县处级正职 (→ 一级调研员) and the route to 二级巡视员 after 4 years
    k = snap(rank="县委书记", since=D(2023, 1, 1), grades={2025: "称职"}, exams=recent)
    assert next_ranks(PARAMS["ladder"], "县委书记", PARAMS["posts"]) == [
        "二级巡视员", "一级调研员"]
    assert reasons(k, D(2026, 6, 1), "一级调研员") == []
    assert reasons(k, D(2026, 6, 1), "二级巡视员") == [
        "needs 4.0 years in 县委书记, has 3.4 (0 优秀 years counted)"]
    assert reasons(k, D(2027, 1, 1), "二级巡视员") == []


def test_min_good_counts_the_regular_grades_of_the_decision_year():
    # 当年平时考核获"好"等次少于 N 次的不得晋升职级 (seed document 5): the decision's year.
    params = _confirm_params(min_good=3)
    s = snap(since=D(2022, 1, 1), grades={2025: "称职"})
    assert reasons(s, D(2026, 6, 1), params=params, good=["好", "较好", "好", "一般"]) == [
        "needs at least 3 好 in the regular assessments of 2026, has 2"]
    previous = _confirm_params(min_good=3, good_year="previous")
    assert reasons(s, D(2026, 6, 1), params=previous, good=["好", "较好"]) == [
        "needs at least 3 好 in the regular assessments of 2025, has 1"]
    assert reasons(s, D(2026, 6, 1), params=params, good=["好"] * 3) == []
    assert reasons(s, D(2026, 6, 1), good=[]) == []  # no min_good: not checked


def test_all_reasons_are_listed_together():
    s = snap(rank="一级主任科员", since=D(2025, 9, 1), grades={2025: "基本称职"}, exams=(),
             sanctions=[("警告", D(2026, 1, 10), 6)], investigations=[(D(2026, 2, 1), None)])
    assert [r.code for r in eligibility_reasons(s, PARAMS, "四级调研员", D(2026, 3, 1))] == [
        "years", "sanction", "investigation", "last_result", "exam"]


def test_category_limit_is_a_third_rounded_up():
    assert [category_limit(n, 3) for n in (0, 1, 2, 3, 4, 6, 7)] == [0, 1, 1, 1, 2, 2, 3]


# --------------------------------------------------------------------------- definition


def test_the_definition_validates_and_refuses_a_rule_without_ladder():
    spec = load_definition(SOURCE, str(PROMOTION))
    assert spec.flow == FLOW and spec.states["filed"].final
    broken = SOURCE.replace("          ladder:", "          ladder_gone:", 1)
    with pytest.raises(DefinitionInvalid) as exc:
        load_definition(broken, "broken.yaml")
    assert "ladder" in str(exc.value)
    bad_field = SOURCE.replace("date_field: decision_date", "date_field: decison_date")
    with pytest.raises(DefinitionInvalid) as exc:
        load_definition(bad_field, "broken.yaml")
    assert "unknown field 'decison_date'" in str(exc.value)


# --------------------------------------------------------------------------- through the engine


@pytest.fixture
def clock():
    return Clock(cst(2026, 3, 2, 10))  # a Monday


@pytest.fixture
def flow(db, org, clock):
    engine = Engine(db, clock=clock)
    engine.publish(SOURCE, str(PROMOTION))
    return engine


def _eligible_facts(db, org, who, since=SINCE_2022):
    with db.unit_of_work() as s:
        facts.add_rank(s, org.ids[who], "二级主任科员", since, by=org.chief)
        for year in range(since.year, 2026):
            facts.add_annual_result(s, org.ids[who], year, "称职", by=org.chief)
        facts.add_exam_result(s, org.ids[who], "政治理论考试", D(2025, 5, 1), True, by=org.chief)


def _to_candidates(engine, org, who, target="一级主任科员", category="排头兵", round="2026-1"):
    leader = org.l1 if who.startswith(("s", "d")) else org.l2
    case = engine.start_case(FLOW, org.ids[who])
    data = {"target_rank": target}
    if category is not None:
        data["category"] = category
    if round is not None:
        data["round"] = round  # without: a case of no round
    engine.fire(case.id, "propose", P(leader), data=data)
    engine.fire(case.id, "record_votes", P(org.c1), data={"votes_cast": 20, "votes_for": 16})
    return case.id


def _confirm(engine, org, cid, day="2026-03-02"):
    return engine.fire(cid, "confirm", P(org.c2), data={"decision_date": day})


def _to_approval(engine, org, who, **kw):
    cid = _to_candidates(engine, org, who, **kw)
    _confirm(engine, org, cid)
    engine.fire(cid, "pass", P(org.c2), data={"vetting_opinion": "德才表现好",
                                               "personal_matters_checked": True})
    engine.fire(cid, "notice_passed", SYSTEM_ACTOR)
    return cid


def test_the_rule_refuses_with_reasons_from_the_facts(flow, db, org, clock):
    with db.unit_of_work() as s:
        facts.add_rank(s, org.s1, "二级主任科员", D(2025, 3, 2), by=org.chief)
        facts.add_annual_result(s, org.s1, 2025, "优秀", by=org.chief)
        facts.add_sanction(s, org.s1, "警告", D(2026, 1, 10), by=org.chief)
    case = flow.start_case(FLOW, org.s1)
    # 资格先行: judged at the 动议, on the day of the 动议 (2 March), before any vote
    with pytest.raises(RuleViolation) as exc:
        flow.fire(case.id, "propose", P(org.l1), data={"target_rank": "一级主任科员"})
    assert exc.value.rule == "promotion_eligible"
    assert str(exc.value) == (
        f"case {case.id}: person {org.s1} is not eligible for 一级主任科员 on 2026-03-02: "
        "needs 2.0 years in 二级主任科员, has 1.5 (1 优秀 year counted); "
        "sanction 警告 decided 2026-01-10 is in effect until 2026-07-10")
    (detail,) = exc.value.details["cases"]
    assert [r["code"] for r in detail["reasons"]] == ["years", "sanction"]
    assert flow.get_case(case.id).state == "plan"  # nothing written
    # On 2 August the 警告 has run out and 17 months + half a year make 1.9: still refused.
    clock.now = cst(2026, 8, 3, 10)
    with pytest.raises(RuleViolation, match="has 1.9 "):
        flow.fire(case.id, "propose", P(org.l1), data={"target_rank": "一级主任科员"})
    # On 2 September 18 months + half a year make 2.0: the same case goes through, and the
    # decision date is judged again at 人选确定.
    clock.now = cst(2026, 9, 2, 10)
    flow.fire(case.id, "propose", P(org.l1), data={"target_rank": "一级主任科员"})
    flow.fire(case.id, "record_votes", P(org.c1), data={"votes_cast": 20, "votes_for": 16})
    with pytest.raises(RuleViolation, match="has 1.9 ") as exc:
        _confirm(flow, org, case.id, "2026-08-03")
    assert exc.value.rule == "promotion_eligible"
    assert _confirm(flow, org, case.id, "2026-09-02").to_state == "vetting"


def test_the_decision_date_rechecks_what_came_after_the_plan(flow, db, org):
    _eligible_facts(db, org, "s1")
    cid = _to_candidates(flow, org, "s1")
    with db.unit_of_work() as s:  # 诫勉 between the 动议 and the 人选确定
        facts.add_sanction(s, org.s1, "诫勉", D(2026, 3, 1), by=org.chief)
    with pytest.raises(RuleViolation, match="sanction 诫勉 decided 2026-03-01 is in effect "
                                            "until 2026-09-01") as exc:
        _confirm(flow, org, cid)
    assert flow.get_case(cid).state == "candidates"
    assert exc.value.details["cases"][0]["reasons"][0]["code"] == "sanction"


def test_the_current_rank_falls_back_to_the_person_record(flow, db, org):
    from workflows.models import Person

    with db.unit_of_work() as s:
        p = s.get(Person, org.s2)
        p.rank, p.rank_since = "二级主任科员", D(2023, 1, 1)
        for year in (2023, 2024, 2025):
            facts.add_annual_result(s, org.s2, year, "称职", by=org.chief)
        facts.add_exam_result(s, org.s2, "政治理论考试", D(2025, 5, 1), True, by=org.chief)
    cid = _to_candidates(flow, org, "s2")
    assert _confirm(flow, org, cid).to_state == "vetting"


def test_min_good_reads_approved_regular_assessments(db, org, clock, regular):
    engine = Engine(db, clock=clock)
    engine.publish(SOURCE.replace("# min_good: 3 ", "min_good: 2 "), str(PROMOTION))
    _eligible_facts(db, org, "s1")
    grades = {"2026-01": "好", "2026-02": "较好", "2026-03": "好"}  # the decision's year
    cases = {}
    for period, grade in grades.items():
        c = engine.start_case("regular-assessment", org.s1, period_key=period)
        engine.fire(c.id, "submit", P(org.s1), data={"summary": "x"})
        engine.fire(c.id, "evaluate", P(org.l1), data={"grade": grade})
        engine.fire(c.id, "accept", P(org.s1))
        cases[period] = c.id
    engine.fire(cases["2026-01"], "approve", P(org.c1))  # only this 好 is approved
    engine.fire(cases["2026-02"], "approve", P(org.c1))
    with pytest.raises(RuleViolation, match="needs at least 2 好 in the regular assessments "
                                            "of 2026, has 1"):
        _to_candidates(engine, org, "s1")
    engine.fire(cases["2026-03"], "approve", P(org.c2))
    cid = _to_candidates(engine, org, "s1")
    assert _confirm(engine, org, cid).to_state == "vetting"


def test_a_promotion_passes_through_the_flow(flow, db, org, clock):
    _eligible_facts(db, org, "s1")
    cid = _to_candidates(flow, org, "s1")
    _confirm(flow, org, cid)
    flow.fire(cid, "pass", P(org.c2), data={"vetting_opinion": "德才表现好",
                                             "personal_matters_checked": True})
    assert flow.get_case(cid).state == "public_notice"
    worker = TimerWorker(flow)
    # 公示 from Monday 2 March: 3, 4, 5, 6, 9 March → over at the end of 9 March.
    clock.now = cst(2026, 3, 9, 23, 59)
    worker.tick()
    assert flow.get_case(cid).state == "public_notice"
    clock.now = cst(2026, 3, 10, 0, 1)
    assert worker.tick().fired == 1
    assert flow.get_case(cid).state == "approval"
    flow.fire(cid, "approve", P(org.c1))
    flow.fire(cid, "file", P(org.c1), data={"filing_no": "组备〔2026〕1号"})
    case = flow.get_case(cid)
    assert case.state == "filed"
    assert [h["trigger"] for h in flow.history(cid)] == [
        "start", "propose", "record_votes", "confirm", "pass", "notice_passed", "approve",
        "file"]
    assert flow.history(cid)[5]["actor_role"] == "system"


def test_an_objection_in_the_notice_returns_to_vetting(flow, db, org):
    _eligible_facts(db, org, "s1")
    cid = _to_candidates(flow, org, "s1")
    _confirm(flow, org, cid)
    flow.fire(cid, "pass", P(org.c2), data={"vetting_opinion": "x",
                                             "personal_matters_checked": True})
    flow.fire(cid, "object", P(org.c1), data={"objection": "反映其工作作风问题"})
    assert flow.get_case(cid).state == "vetting"


def test_defer_and_the_re_review_timer(flow, db, org, clock):
    _eligible_facts(db, org, "s1")
    cid = _to_candidates(flow, org, "s1")
    _confirm(flow, org, cid)
    flow.fire(cid, "defer", P(org.c2), data={"defer_reason": "政治表现有疑点，待核实"})
    assert flow.get_case(cid).state == "deferred"
    worker = TimerWorker(flow)
    clock.now = cst(2026, 6, 1, 10)
    worker.tick()
    assert flow.get_case(cid).state == "deferred"
    clock.now = cst(2026, 6, 3, 10)  # three months after 2 March
    assert worker.tick().fired == 1
    assert flow.get_case(cid).state == "vetting"
    last = flow.history(cid)[-1]
    assert (last["trigger"], last["actor_role"]) == ("re_review", "system")
    flow.fire(cid, "reject", P(org.c2), data={"reject_reason": "考察不合格"})
    assert flow.get_case(cid).state == "rejected"


def _higher_rank_facts(db, org, who):
    """Eligible for 四级调研员 (a 较高职级) on 2 March 2026."""
    with db.unit_of_work() as s:
        facts.add_rank(s, org.ids[who], "一级主任科员", SINCE_2022, by=org.chief)
        for year in range(2022, 2026):
            facts.add_annual_result(s, org.ids[who], year, "称职", by=org.chief)
        facts.add_exam_result(s, org.ids[who], "政治理论考试", D(2025, 5, 1), True, by=org.chief)


def test_positions_and_the_three_thirds_rule(flow, db, org):
    # 四级调研员 (a 较高职级): 3 positions this round → each category at most 1.
    flow.publish(SOURCE.replace("            四级调研员: 2\n", "            四级调研员: 3\n"),
                 "three.yaml")
    ids = {}
    for who, cat in (("s1", "排头兵"), ("s2", "排头兵"), ("s3", "实干家"), ("s4", "老黄牛"),
                     ("s5", "老黄牛")):
        _higher_rank_facts(db, org, who)
        ids[who] = _to_approval(flow, org, who, target="四级调研员", category=cat)
    flow.fire(ids["s1"], "approve", P(org.c1))
    with pytest.raises(RuleViolation) as exc:
        flow.fire(ids["s2"], "approve", P(org.c1))
    assert str(exc.value) == (
        f"三三制: category 排头兵 in unit {org.units['SEC1']}, 四级调研员, round 2026-1 may "
        "hold 1 of 3 positions (1/3, rounded up), already 1, asked 1; give override_reason "
        "to exceed it")
    assert exc.value.details["category_limit"] == 1
    # blank reason is no override
    with pytest.raises(RuleViolation):
        flow.fire(ids["s2"], "approve", P(org.c1), data={"override_reason": "  "})
    flow.fire(ids["s2"], "approve", P(org.c1),
              data={"override_reason": "脱贫攻坚一线表现突出，经党组研究同意"})
    assert flow.history(ids["s2"])[-1]["data"]["override_reason"].startswith("脱贫攻坚")
    flow.fire(ids["s3"], "approve", P(org.c2))
    with pytest.raises(RuleViolation) as exc:
        flow.fire(ids["s4"], "approve", P(org.c2))
    assert str(exc.value) == (
        f"positions (职数) for unit {org.units['SEC1']}, 四级调研员, round 2026-1: 3 from "
        "the definition (no rank positions set for this unit or a unit above it), "
        "already taken 3, asked 1")
    assert (exc.value.details["source"], exc.value.details["subtree"]) == ("definition", False)
    assert flow.get_case(ids["s4"]).state == "approval"
    # a filed case still holds its position
    flow.fire(ids["s1"], "file", P(org.c1))
    with pytest.raises(RuleViolation, match="already taken 3"):
        flow.fire(ids["s5"], "approve", P(org.c2))


def test_three_thirds_is_for_higher_ranks_only(flow, db, org):
    # 一级主任科员 is not a 较高职级: no category asked, three of one category take the
    # three positions
    ids = []
    for who in ("s1", "s2", "s3"):
        _eligible_facts(db, org, who)
        ids.append(_to_approval(flow, org, who, category=None))
    for cid in ids:
        assert flow.fire(cid, "approve", P(org.c1)).to_state == "filing"
    # a 较高职级 needs its category at the 动议
    _higher_rank_facts(db, org, "s4")
    case = flow.start_case(FLOW, org.s4)
    with pytest.raises(RuleViolation, match=r"三三制类别 \(category\) is required when "
                                            r"拟晋升职级 \(target_rank\) is 四级调研员"):
        flow.fire(case.id, "propose", P(org.l1), data={"target_rank": "四级调研员"})
    assert flow.get_case(case.id).state == "plan"


def test_positions_are_per_unit_and_round(flow, db, org):
    src = SOURCE.replace("一级主任科员: 3", "一级主任科员: 1")
    flow.publish(src, "one-position.yaml")
    for who in ("s1", "t1"):
        _eligible_facts(db, org, who)
    a = _to_approval(flow, org, "s1")
    b = _to_approval(flow, org, "t1")  # SEC2: a pool of its own
    flow.fire(a, "approve", P(org.c1))
    flow.fire(b, "approve", P(org.c1))
    assert {flow.get_case(a).state, flow.get_case(b).state} == {"filing"}


def test_a_rank_without_positions_cannot_be_approved(flow, db, org):
    with db.unit_of_work() as s:
        facts.add_rank(s, org.s1, "二级调研员", D(2020, 1, 1), by=org.chief)
        for year in range(2020, 2026):
            facts.add_annual_result(s, org.s1, year, "称职", by=org.chief)
        facts.add_exam_result(s, org.s1, "政治理论考试", D(2025, 5, 1), True, by=org.chief)
    cid = _to_approval(flow, org, "s1", target="一级调研员")
    flow.fire(cid, "approve", P(org.c1))  # 一级调研员: 1
    with db.unit_of_work() as s:
        facts.add_rank(s, org.s2, "一级调研员", D(2020, 1, 1), by=org.chief)
        for year in range(2020, 2026):
            facts.add_annual_result(s, org.s2, year, "称职", by=org.chief)
        facts.add_exam_result(s, org.s2, "政治理论考试", D(2025, 5, 1), True, by=org.chief)
    cid = _to_approval(flow, org, "s2", target="二级巡视员")
    with pytest.raises(RuleViolation, match="二级巡视员, round 2026-1: 0 from the definition "
                                            r"\(no rank .*\), already taken 0"):
        flow.fire(cid, "approve", P(org.c1))


def test_two_approvals_race_for_the_last_position(pg_only_url):
    db = Database(pg_only_url)
    try:
        eng = Engine(db)
        eng.publish(SOURCE.replace("一级主任科员: 3", "一级主任科员: 1"), str(PROMOTION))
        org = _race_org(db)
        cases = []
        for who, cat in (("s1", "排头兵"), ("s2", "实干家")):
            _eligible_facts(db, org, who)
            cases.append(_to_approval(eng, org, who, category=cat))
        a, b = _racing_engines(pg_only_url)
        results, errors = _race([
            lambda: a.fire(cases[0], "approve", P(org.c1)),
            lambda: b.fire(cases[1], "approve", P(org.c2)),
        ])
        assert len(results) == 1 and len(errors) == 1, (results, errors)
        assert isinstance(errors[0], RuleViolation) and errors[0].rule == "positions"
        assert errors[0].details["limit"] == 1 and errors[0].details["used"] == 1
        assert sorted(eng.get_case(c).state for c in cases) == ["approval", "filing"]
        for e in (a, b):
            e.db.dispose()
    finally:
        db.dispose()


class _RaceOrg:
    def __init__(self, ids, units):
        self.ids, self.units = ids, units

    def __getattr__(self, name):
        try:
            return self.ids[name]
        except KeyError:
            raise AttributeError(name) from None


def _race_org(db) -> _RaceOrg:
    from workflows.org import add_person, add_unit, assign_role

    with db.unit_of_work() as s:
        root = add_unit(s, "ORG", "部机关")
        sec1 = add_unit(s, "SEC1", "干部一科", root)
        made = {code: add_person(s, code.upper(), code, unit, tier) for code, unit, tier in [
            ("chief", root, "chief"), ("c1", root, "staff"), ("c2", root, "staff"),
            ("l1", sec1, "chief"), ("s1", sec1, "staff"), ("s2", sec1, "staff")]}
        assign_role(s, made["c1"], "committee", root)
        assign_role(s, made["c2"], "committee", root)
        assign_role(s, made["c1"], "hr-office")
        assign_role(s, made["l1"], "leader", sec1)
        return _RaceOrg({k: v.id for k, v in made.items()}, {"SEC1": sec1.id})


def test_decimal_years_display_rounds_down():
    from workflows.domain_rules.promotion import _years

    assert [_years(m) for m in (17, 18, 23, 24)] == ["1.4", "1.5", "1.9", "2.0"]
    assert _years(Decimal("29")) == "2.4"


def test_without_a_decision_date_the_engines_clock_decides():
    import datetime as _dt

    from workflows.domain_rules.promotion import _decision_date
    from workflows.rules import CaseFacts

    case = CaseFacts(id=1, flow="rank-promotion", subject_id=1, unit_id=1, tier="staff",
                     period_key=None, state="candidates", data={})
    # 23:30 UTC on 31 December is already 1 January in Beijing.
    now = _dt.datetime(2026, 12, 31, 23, 30, tzinfo=_dt.UTC)
    assert _decision_date({"date_field": "decided_on"}, case, now) == _dt.date(2027, 1, 1)
    dated = CaseFacts(**{**case.__dict__, "data": {"decided_on": "2026-06-30"}})
    assert _decision_date({"date_field": "decided_on"}, dated, now) == _dt.date(2026, 6, 30)


# --------------------------------------------------------------------------- vetting


def test_recommendation_needs_more_than_half_of_those_voting(flow, db, org):
    from workflows.domain_rules.promotion import recommendation_problem

    assert recommendation_problem(20, 11, None, 0.5, True) is None
    assert recommendation_problem(20, 10, None, 0.5, True)[0] == (
        "10 of 20 votes for; needs more than 50% of those who took part (10)")
    assert recommendation_problem(20, 10, None, 0.5, False) is None  # at least half
    assert recommendation_problem(20, 15, 6, 0.5, True)[0] == (
        "15 for and 6 against make 21, more than the 20 who took part")
    _eligible_facts(db, org, "s1")
    case = flow.start_case(FLOW, org.s1)
    flow.fire(case.id, "propose", P(org.l1), data={"target_rank": "一级主任科员"})
    with pytest.raises(RuleViolation) as exc:
        flow.fire(case.id, "record_votes", P(org.c1), data={"votes_cast": 20, "votes_for": 2})
    assert exc.value.rule == "recommendation_threshold"
    assert str(exc.value) == (f"case {case.id}: 民主推荐 2 of 20 votes for; needs more than "
                              "50% of those who took part (10)")
    assert (exc.value.details["votes_for"], exc.value.details["needed"]) == (2, 10.0)
    with pytest.raises(RuleViolation, match="10 of 20 votes for; needs more than 50%"):
        flow.fire(case.id, "record_votes", P(org.c1), data={"votes_cast": 20, "votes_for": 10})
    assert flow.get_case(case.id).state == "recommendation"  # nothing written
    assert flow.fire(case.id, "record_votes", P(org.c1),
                     data={"votes_cast": 20, "votes_for": 11}).to_state == "candidates"


def test_vetting_passes_only_with_personal_matters_checked(flow, db, org):
    _eligible_facts(db, org, "s1")
    cid = _to_candidates(flow, org, "s1")
    _confirm(flow, org, cid)
    with pytest.raises(FieldErrors) as exc:
        flow.fire(cid, "pass", P(org.c2), data={"vetting_opinion": "德才表现好",
                                                 "personal_matters_checked": False})
    assert exc.value.errors == {"personal_matters_checked": ["must be true"]}
    assert flow.get_case(cid).state == "vetting"
    assert flow.fire(cid, "pass", P(org.c2), data={
        "vetting_opinion": "德才表现好", "personal_matters_checked": True}
    ).to_state == "public_notice"
