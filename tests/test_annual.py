"""The annual assessment (年度考核, docs/domain.md §2) and its rules, on SQLite and PostgreSQL.

definitions/annual-assessment.yaml: 总结述职 → 民主测评 → 审核评鉴 → 优秀公示 (5 working days)
→ 审定 (优秀 quota 15 %, 20 % for flagged units) → 书面结果签收 → 复核期 (30 days) → 归档.
Rules: workflows/domain_rules/annual.py. Regular results: workflows/results.py.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import pytest
import yaml

from workflows import rules
from workflows.engine import SYSTEM_ACTOR, Actor, Engine
from workflows.errors import DefinitionInvalid, FieldErrors, Forbidden, RuleViolation
from workflows.facts import add_sanction, close_investigation, open_investigation
from workflows.models import Case, FlowVersion, Person, Unit
from workflows.org import add_person
from workflows.results import ResultSummary, regular_results, regular_summary
from workflows.spec import load_definition
from workflows.timers import TimerWorker

from .conftest import REGULAR, Clock, cst

ANNUAL = Path(__file__).resolve().parent.parent / "definitions" / "annual-assessment.yaml"
SOURCE = ANNUAL.read_text(encoding="utf-8")
FLOW = "annual-assessment"
YEAR = "2026"
P = Actor.person




def _doc() -> dict:
    return yaml.safe_load(SOURCE)


def _rule(doc: dict, trigger: str, name: str) -> dict:
    t = next(t for t in doc["transitions"] if t["trigger"] == trigger)
    return next(r[name] for r in t["rules"] if name in r)


def _dump(doc: dict) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@pytest.fixture
def annual(engine, regular):
    """The shipped annual flow (and the regular flow whose results it reads), published."""
    return engine.publish(SOURCE, str(ANNUAL))


def _regular_year(db, person_id: int, grades: list[str], year: int = 2026,
                  state: str = "approved") -> None:
    """Approved regular-assessment cases of months 1… of `year`, inserted directly."""
    with db.unit_of_work() as s:
        vid = s.query(FlowVersion.id).filter(FlowVersion.flow_id == "regular-assessment").scalar()
        unit = s.get(Person, person_id).unit_id
        for month, grade in enumerate(grades, start=1):
            s.add(Case(flow_id="regular-assessment", version_id=vid, subject_id=person_id,
                       unit_id=unit, tier="staff", period_key=f"{year}-{month:02d}", state=state,
                       data={"grade": grade, "summary": "x"}))


GOOD_YEAR = ["好"] * 7 + ["较好"] * 5


def _to_evaluation(engine, org, who: str, leader: str = "l1", period: str = YEAR) -> int:
    case = engine.start_case(FLOW, org.ids[who], period_key=period)
    engine.fire(case.id, "submit", P(org.ids[who]), data={"summary": "年度述职报告"})
    engine.fire(case.id, "record_votes", P(org.ids[leader]), data={
        "votes_excellent": 12, "votes_competent": 8, "votes_basic": 0, "votes_incompetent": 0,
        "democratic_score": "92.5"})
    return case.id


def _excellent_to_approval(engine, org, who: str, leader: str = "l1") -> int:
    cid = _to_evaluation(engine, org, who, leader)
    engine.fire(cid, "propose_excellent", P(org.ids[leader]), data={"grade": "优秀"})
    engine.fire(cid, "notice_passed", SYSTEM_ACTOR)
    return cid


def _refusal(fn, *args, **kwargs) -> RuleViolation:
    with pytest.raises(RuleViolation) as exc:
        fn(*args, **kwargs)
    return exc.value


# --------------------------------------------------------------------------- definition


def test_the_definition_validates_and_every_number_is_a_parameter():
    spec = load_definition(SOURCE, str(ANNUAL))
    assert spec.flow == FLOW and spec.period == "year"
    assert list(spec.states) == ["summary", "democratic_evaluation", "evaluation",
                                 "public_notice", "approval", "result", "appeal_window",
                                 "review", "review_notice", "review_approval",
                                 "review_decided", "complaint", "complaint_notice",
                                 "complaint_approval", "withheld", "closed"]
    doc = _doc()
    quota = _rule(doc, "approve", "excellent_quota")
    assert (quota["max_ratio"], quota["raised_ratio"], quota["ceiling"]) == (0.2, 0.25, 0.25)
    notice = next(s for s in doc["states"] if s["name"] == "public_notice")
    assert notice["timers"] == [{"kind": "auto", "working_days": 5, "fire": "notice_passed"}]
    window = next(s for s in doc["states"] if s["name"] == "appeal_window")
    assert window["timers"] == [{"kind": "auto", "after": "P30D", "fire": "close"}]


def _problems(change) -> list[str]:
    doc = _doc()
    change(doc)
    with pytest.raises(DefinitionInvalid) as info:
        load_definition(_dump(doc), "annual.yaml")
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_definition_time_checks_of_the_annual_rules():
    found = _problems(lambda d: _rule(d, "approve", "excellent_quota").update(raised_ratio=0.3))
    assert any("raised_ratio: 30% is above the ceiling of 25%" in p for p in found), found
    found = _problems(lambda d: _rule(d, "approve", "excellent_quota").update(raised_ratio=0.1))
    assert any("raised_ratio 10% is below max_ratio 20%" in p for p in found), found
    found = _problems(lambda d: _rule(d, "evaluate", "sanction_block")["kinds"].update(
        记过={"only": ["无等次"]}))
    assert any("'无等次' is not a value of field 'grade'" in p for p in found), found
    found = _problems(lambda d: _rule(d, "evaluate", "sanction_block")["kinds"].update(
        记过={"only": ["不定等次"], "blocks": ["优秀"]}))
    assert any("give exactly one of blocks or only" in p for p in found), found
    found = _problems(lambda d: _rule(d, "propose_excellent", "regular_linkage").update(
        none_below="差"))
    assert any("none_below: '差' is not a regular grade" in p for p in found), found
    found = _problems(lambda d: next(t for t in d["transitions"]
                                     if t["trigger"] == "propose_excellent")["values"].update(
        grade=["卓越"]))
    assert any("values.grade: '卓越' is not a value of field 'grade'" in p for p in found), found


# --------------------------------------------------------------------------- results.py


def test_regular_results_read_approved_cases_of_the_year_in_period_order(engine, org, db,
                                                                         regular):
    # One case driven through the real regular flow to 已审定 …
    case = engine.start_case("regular-assessment", org.s1, period_key="2026-03")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "小结"})
    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "好"})
    engine.fire(case.id, "accept", P(org.s1))
    engine.fire(case.id, "approve", P(org.c1))
    # … others inserted: approved, not approved, another year.
    with db.unit_of_work() as s:
        vid = s.query(FlowVersion.id).filter(FlowVersion.flow_id == "regular-assessment").scalar()
        for key, state, grade in [("2026-01", "approved", "较好"), ("2026-11", "approval", "好"),
                                  ("2025-12", "approved", "一般"), ("2026-02", "approved", "一般")]:
            s.add(Case(flow_id="regular-assessment", version_id=vid, subject_id=org.s1,
                       unit_id=org.units["SEC1"], tier="staff", period_key=key, state=state,
                       data={"grade": grade}))
    with db.unit_of_work(write=False) as s:
        assert regular_results(s, org.s1, 2026) == ["较好", "一般", "好"]
        assert regular_results(s, org.s1, 2025) == ["一般"]
        assert regular_results(s, org.s2, 2026) == []
        summary = regular_summary(s, org.s1, 2026)
    assert summary == ResultSummary(("较好", "一般", "好"), {"较好": 1, "一般": 1, "好": 1})
    assert summary.total == 3 and summary.count("好") == 1 and summary.count("较差") == 0


# --------------------------------------------------------------------------- full pass


def test_full_pass_of_an_excellent_candidate(engine, org, db, annual):
    _regular_year(db, org.s1, GOOD_YEAR)
    cid = _to_evaluation(engine, org, "s1")
    # 优秀 is only proposed through the public notice; other grades never go there.
    with pytest.raises(FieldErrors) as refused:
        engine.fire(cid, "evaluate", P(org.l1), data={"grade": "优秀"})
    assert refused.value.errors == {"grade": ["must be one of: 称职, 基本称职, 不称职, 不定等次"]}
    engine.fire(cid, "propose_excellent", P(org.l1), data={"grade": "优秀"})
    assert engine.get_case(cid).state == "public_notice"
    # An objection during the notice returns it to evaluation, with the reason.
    with pytest.raises(FieldErrors):
        engine.fire(cid, "object", P(org.c1), data={"notice_objection": "群众反映"})
    engine.fire(cid, "object", P(org.c1), data={"notice_objection": "群众反映考勤问题"},
                comment="需核实")
    assert engine.get_case(cid).state == "evaluation"
    engine.fire(cid, "propose_excellent", P(org.l1), data={"grade": "优秀",
                                                          "verification_note": "经核实无问题"})
    engine.fire(cid, "notice_passed", SYSTEM_ACTOR)
    engine.fire(cid, "approve", P(org.c2))
    engine.fire(cid, "acknowledge", P(org.s1))
    engine.fire(cid, "close", SYSTEM_ACTOR)
    final = engine.get_case(cid)
    assert final.final and final.state == "closed" and final.data["grade"] == "优秀"
    assert final.data["notice_objection"] == "群众反映考勤问题"
    steps = [(h["trigger"], h["to"], h["actor_role"]) for h in engine.history(cid)]
    assert steps == [
        ("start", "summary", "system"), ("submit", "democratic_evaluation", "subject"),
        ("record_votes", "evaluation", "leader"),
        ("propose_excellent", "public_notice", "evaluator"),
        ("object", "evaluation", "committee"),
        ("propose_excellent", "public_notice", "evaluator"),
        ("notice_passed", "approval", "system"), ("approve", "result", "committee"),
        ("acknowledge", "appeal_window", "subject"), ("close", "closed", "system"),
    ]


def test_other_grades_skip_the_notice_and_a_review_can_change_the_grade(engine, org, annual):
    cid = _to_evaluation(engine, org, "s2")
    v = _refusal(engine.fire, cid, "evaluate", P(org.l1), data={"grade": "不称职"})
    assert v.rule == "required_when" and "评鉴意见 (evaluation_comment) is required" in str(v)
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "不称职",
                                                 "evaluation_comment": "工作完成不够及时"})
    assert engine.get_case(cid).state == "approval"
    engine.fire(cid, "approve", P(org.c1))
    engine.fire(cid, "acknowledge", P(org.s2))
    engine.fire(cid, "appeal", P(org.s2), data={"appeal_reason": "专项任务未计入"})
    assert engine.get_case(cid).state == "review"
    engine.fire(cid, "revise", P(org.c1), data={"grade": "称职", "review_decision": "改定称职"})
    final = engine.get_case(cid)
    assert final.state == "review_decided" and final.data["grade"] == "称职"


# --------------------------------------------------------------------------- sanctions


def test_the_grade_is_proposed_by_the_evaluator_of_the_hierarchy(engine, org, annual):
    """审核评鉴 follows who evaluates whom (resolve: evaluator, as in the regular
    assessment): a 科员 of 干部一科 by its 科长 l1, not by the bureau's chief; l1 himself, with
    nobody above him in his own unit, by the leader of the unit above (escalate)."""
    staff = _to_evaluation(engine, org, "s1")
    assert {"propose_excellent", "evaluate"} <= {
        a.trigger for a in engine.actions(staff, P(org.l1))}
    assert not {"propose_excellent", "evaluate"} & {
        a.trigger for a in engine.actions(staff, P(org.chief))}
    with pytest.raises(Forbidden):
        engine.fire(staff, "evaluate", P(org.chief), data={"grade": "称职"})
    assert engine.get_case(staff).state == "evaluation"
    head = _to_evaluation(engine, org, "l1", leader="chief")
    with pytest.raises(Forbidden):  # nobody grades himself
        engine.fire(head, "evaluate", P(org.l1), data={"grade": "称职"})
    engine.fire(head, "evaluate", P(org.chief), data={"grade": "称职"})
    assert engine.history(head)[-1]["actor_role"] == "evaluator"


def _sanction(db, person_id, kind, day, months=None):
    with db.unit_of_work() as s:
        add_sanction(s, person_id, kind, day, effect_months=months, by=None)


@pytest.mark.parametrize("kind, decided, message", [
    ("警告", dt.date(2025, 11, 10),
     "警告 decided 2025-11-10 (in effect until 2026-05-10) blocks 优秀 for 2026; "
     "考核等次 优秀 is not possible"),
    ("诫勉", dt.date(2026, 3, 1),
     "诫勉 decided 2026-03-01 (in effect until 2026-09-01) blocks 优秀 for 2026"),
])
def test_warning_and_admonition_block_excellent(engine, org, db, annual, kind, decided,
                                                message):
    _regular_year(db, org.s1, GOOD_YEAR)
    _sanction(db, org.s1, kind, decided)
    cid = _to_evaluation(engine, org, "s1")
    v = _refusal(engine.fire, cid, "propose_excellent", P(org.l1), data={"grade": "优秀"})
    assert v.rule == "sanction_block" and message in str(v)
    assert v.details["kind"] == kind and v.details["year"] == 2026
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "称职"})  # 称职 is still possible
    assert engine.get_case(cid).state == "approval"


def test_a_warning_whose_effect_ended_before_the_year_does_not_block(engine, org, db, annual):
    _regular_year(db, org.s1, GOOD_YEAR)
    _sanction(db, org.s1, "警告", dt.date(2025, 3, 1))  # in effect until 2025-09-01
    cid = _to_evaluation(engine, org, "s1")
    engine.fire(cid, "propose_excellent", P(org.l1), data={"grade": "优秀"})


@pytest.mark.parametrize("kind, decided, blocked", [
    ("记过", dt.date(2026, 2, 1), "记过 decided 2026-02-01 (applies to 2026) allows only 不定等次"),
    ("记大过", dt.date(2025, 6, 1),
     "记大过 decided 2025-06-01 (applies to 2025–2026) allows only 不定等次 for 2026"),
    ("降级", dt.date(2026, 1, 5), "降级 decided 2026-01-05 (applies to 2026–2027)"),
    ("撤职", dt.date(2025, 12, 30), "撤职 decided 2025-12-30 (applies to 2025–2026)"),
])
def test_demerits_allow_only_no_grade(engine, org, db, annual, kind, decided, blocked):
    _sanction(db, org.s2, kind, decided)
    cid = _to_evaluation(engine, org, "s2")
    v = _refusal(engine.fire, cid, "evaluate", P(org.l1), data={"grade": "称职"})
    assert v.rule == "sanction_block" and blocked in str(v), str(v)
    assert "考核等次 称职 is not possible" in str(v) and v.details["only"] == ["不定等次"]
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "不定等次",
                                                 "evaluation_comment": f"受{kind}处分"})
    engine.fire(cid, "approve", P(org.c1))


@pytest.mark.parametrize("kind, decided", [("记过", dt.date(2025, 6, 1)),
                                           ("记大过", dt.date(2024, 6, 1))])
def test_demerits_of_earlier_years_do_not_block(engine, org, db, annual, kind, decided):
    _sanction(db, org.s2, kind, decided)
    cid = _to_evaluation(engine, org, "s2")
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "称职"})


def test_a_sanction_decided_before_approval_is_caught_at_approval(engine, org, db, annual):
    cid = _to_evaluation(engine, org, "s2")
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "称职"})
    _sanction(db, org.s2, "记过", dt.date(2026, 12, 1))
    v = _refusal(engine.fire, cid, "approve", P(org.c1))
    assert "记过 decided 2026-12-01" in str(v)
    assert engine.get_case(cid).state == "approval"  # nothing was written


def test_an_open_investigation_withholds_the_grade(engine, org, db, annual):
    with db.unit_of_work() as s:
        inv = open_investigation(s, org.s3, dt.date(2026, 10, 8), by=None)
    cid = _to_evaluation(engine, org, "s3")
    v = _refusal(engine.fire, cid, "evaluate", P(org.l1), data={"grade": "称职"})
    assert str(v) == (f"case {cid}: under investigation since 2026-10-08; the 2026 grade is "
                      "withheld: only 不定等次, not 称职")
    with db.unit_of_work() as s:
        close_investigation(s, inv["id"], dt.date(2026, 12, 1), by=None)
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "称职"})


# --------------------------------------------------------------------------- linkage


@pytest.mark.parametrize("grades, message", [
    (["好"] * 5 + ["较好"] * 7, "优秀 for 2026 needs 7 好 of 12 regular results, has 5"),
    (["好"] * 6 + ["较好"] * 6, "needs 7 好 of 12 regular results, has 6"),  # half is not more
    (["好"] * 8 + ["较好"] * 3 + ["一般"],
     "优秀 for 2026 needs no regular result below 较好, has 1 (一般)"),
    ([], "needs 1 好 of 0 regular results, has 0"),
])
def test_excellent_needs_the_regular_results(engine, org, db, annual, grades, message):
    _regular_year(db, org.s1, grades)
    cid = _to_evaluation(engine, org, "s1")
    v = _refusal(engine.fire, cid, "propose_excellent", P(org.l1), data={"grade": "优秀"})
    assert v.rule == "regular_linkage" and message in str(v), str(v)
    assert v.details["results"] == len(grades)


def test_unapproved_regular_results_do_not_count(engine, org, db, annual):
    _regular_year(db, org.s1, GOOD_YEAR, state="approval")
    cid = _to_evaluation(engine, org, "s1")
    v = _refusal(engine.fire, cid, "propose_excellent", P(org.l1), data={"grade": "优秀"})
    assert "needs 1 好 of 0" in str(v)


class _StubFacts:
    def __init__(self, grades):
        self.grades = grades

    def query(self, fn, *args):
        return list(self.grades)


def _linkage(params: dict, grades: list[str], data: dict) -> None:
    spec = load_definition(SOURCE, str(ANNUAL))
    t = next(t for t in spec.transitions if t.trigger == "propose_excellent")
    loaded = rules.REGISTRY["regular_linkage"].params.load(params)
    case = rules.CaseFacts(id=1, flow=FLOW, subject_id=1, unit_id=1, tier="staff",
                           period_key="2026", state="evaluation", data=data)
    rules.REGISTRY["regular_linkage"].evaluate(
        loaded, rules.Batch(t, spec, [case], _StubFacts(grades)))


def test_linkage_by_count_and_by_weighted_score():
    _linkage({"min_good": 3}, ["好", "好", "好", "一般"], {"grade": "优秀"})
    with pytest.raises(RuleViolation, match="needs 4 好 of 4 regular results, has 3"):
        _linkage({"min_good": 4}, ["好", "好", "好", "一般"], {"grade": "优秀"})
    _linkage({"min_good": 4}, [], {"grade": "称职"})  # only 优秀 is guarded
    weighted = {"weighted": {"weight": 0.6, "score_field": "democratic_score",
                             "min_score": 90}}
    # 60 % × (100+100+85+85)/4 = 55.5, + 40 % × 90 = 36 → 91.5; then 53.25 + 36 = 89.25
    _linkage(weighted, ["好", "好", "较好", "较好"], {"grade": "优秀", "democratic_score": "90"})
    with pytest.raises(RuleViolation) as exc:
        _linkage(weighted, ["好", "较好", "较好", "较好"],
                 {"grade": "优秀", "democratic_score": "90"})
    assert "needs a weighted score of at least 90, has 89.25 (60% regular 88.75 + 40% " \
           "democratic_score 90)" in str(exc.value)


# --------------------------------------------------------------------------- quota


def _fill_sec1(db, org, engine, n_total: int = 9) -> None:
    """Give SEC1 `n_total` annual cases for 2026 (the pool counts cases, whatever state)."""
    with db.unit_of_work() as s:
        sec1 = s.get(Unit, org.units["SEC1"])
        extra = [add_person(s, f"X{i}", f"测试x{i}", sec1, "staff").id for i in range(3)]
    people = [org.s4, org.s5, org.d1, *extra]  # s1, s2, s3, l1 added by the test
    for pid in people[: n_total - 4]:
        engine.start_case(FLOW, pid, period_key=YEAR)
    # l1 is SEC1's leader; their case is evaluated by the chief above.
    engine.start_case(FLOW, org.l1, period_key=YEAR)


def test_excellent_quota_at_its_boundary(engine, org, db, annual):
    for who in ("s1", "s2", "s3", "t1"):
        _regular_year(db, org.ids[who], GOOD_YEAR)
    _fill_sec1(db, org, engine, n_total=8)
    a, b, c = (_excellent_to_approval(engine, org, w) for w in ("s1", "s2", "s3"))
    t1 = _excellent_to_approval(engine, org, "t1", leader="l2")
    # One pool for the 机关 (unit_depth: 1): 8 cases in SEC1 and t1 in SEC2, 9 × 20 % = 1.8,
    # floor → 1: a bulk approval of one from each 科室 is refused whole.
    res = _refusal(engine.fire_bulk, [a, t1], "approve", P(org.c1))
    assert res.rule == "excellent_quota"
    assert str(res).endswith(f"in pool period=2026, unit={org.units['ORG']}: limit 1 "
                             "(20% of 9, floor, at least 1), already used 0, asked 2")
    assert engine.get_case(a).state == "approval"
    engine.fire(a, "approve", P(org.c1))  # the one place
    # SEC2 alone would have had a place of its own (min 1); in the 机关's pool it has none.
    v = _refusal(engine.fire, t1, "approve", P(org.c1))
    assert "limit 1 (20% of 9, floor, at least 1), already used 1, asked 1" in str(v)
    v = _refusal(engine.fire, b, "approve", P(org.c1))
    assert "limit 1 (20% of 9, floor, at least 1), already used 1, asked 1" in str(v)
    # Acknowledged and closed results still hold their place.
    engine.fire(a, "acknowledge", P(org.s1))
    engine.fire(a, "close", SYSTEM_ACTOR)
    assert "already used 1, asked 1" in str(_refusal(engine.fire, c, "approve", P(org.c1)))
    # The committee sends one back; it is graded 称职, which the quota does not count.
    engine.fire(b, "send_back", P(org.c1), comment="优秀名额已满")
    engine.fire(b, "evaluate", P(org.l1), data={"grade": "称职"})
    engine.fire(b, "approve", P(org.c1))


def test_a_flagged_unit_gets_the_raised_ratio(engine, org, db, regular):
    doc = _doc()
    _rule(doc, "approve", "excellent_quota")["raise_units"] = ["ORG"]  # SEC1 is under ORG
    engine.publish(_dump(doc), "annual-raised.yaml")
    for who in ("s1", "s2", "s3"):
        _regular_year(db, org.ids[who], GOOD_YEAR)
    _fill_sec1(db, org, engine)
    a, b, c = (_excellent_to_approval(engine, org, w) for w in ("s1", "s2", "s3"))
    done = engine.fire_bulk([a, b], "approve", P(org.c1))  # 25 % of 9 = 2.25 → 2
    assert len(done.done) == 2 and not done.refused
    v = _refusal(engine.fire, c, "approve", P(org.c1))
    assert "limit 2 (25% of 9, raised for ORG, floor, at least 1), already used 2, asked 1" \
        in str(v)
    assert v.details["raised_for"] == "ORG" and v.details["ratio"] == 0.25


# --------------------------------------------------------------------------- timers


@pytest.fixture
def clock():
    return Clock(cst(2026, 9, 28, 9))


@pytest.fixture
def timed(db, org, clock):
    engine = Engine(db, clock=clock)
    engine.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
    engine.publish(SOURCE, str(ANNUAL))
    return engine


def test_the_public_notice_passes_by_itself_after_five_working_days(timed, db, org, clock):
    _regular_year(db, org.s1, GOOD_YEAR)
    cid = _to_evaluation(timed, org, "s1")
    clock.now = cst(2026, 9, 30, 10)  # Wednesday, before the National Day holiday
    timed.fire(cid, "propose_excellent", P(org.l1), data={"grade": "优秀"})
    worker = TimerWorker(timed)
    # 5 working days: 8, 9, 10 (make-up Saturday), 12, 13 October.
    clock.now = cst(2026, 10, 13, 23, 59)
    worker.tick()
    assert timed.get_case(cid).state == "public_notice"
    clock.now = cst(2026, 10, 14, 0, 1)
    assert worker.tick().fired == 1
    assert timed.get_case(cid).state == "approval"
    assert timed.history(cid)[-1]["actor_role"] == "system"


def test_an_objection_stops_the_notice_timer(timed, db, org, clock):
    _regular_year(db, org.s1, GOOD_YEAR)
    cid = _to_evaluation(timed, org, "s1")
    timed.fire(cid, "propose_excellent", P(org.l1), data={"grade": "优秀"})
    clock.now = cst(2026, 9, 29, 9)
    timed.fire(cid, "object", P(org.c1), data={"notice_objection": "有异议"}, comment="核实")
    clock.now = cst(2026, 11, 1)
    TimerWorker(timed).tick()
    assert timed.get_case(cid).state == "evaluation"


def test_the_appeal_window_closes_by_itself_after_30_days(timed, db, org, clock):
    cid = _to_evaluation(timed, org, "s2")
    timed.fire(cid, "evaluate", P(org.l1), data={"grade": "称职"})
    timed.fire(cid, "approve", P(org.c1))
    clock.now = cst(2026, 10, 9, 15)
    timed.fire(cid, "acknowledge", P(org.s2))
    worker = TimerWorker(timed)
    clock.now = cst(2026, 11, 8, 14, 59)
    worker.tick()
    assert timed.get_case(cid).state == "appeal_window"
    clock.now = cst(2026, 11, 8, 15, 1)
    assert worker.tick().fired == 1
    case = timed.get_case(cid)
    assert case.state == "closed" and case.final


def test_an_appeal_within_the_window_goes_to_review(timed, db, org, clock):
    cid = _to_evaluation(timed, org, "s2")
    timed.fire(cid, "evaluate", P(org.l1), data={"grade": "不称职",
                                                "evaluation_comment": "全年多次未完成任务"})
    timed.fire(cid, "approve", P(org.c1))
    timed.fire(cid, "acknowledge", P(org.s2))
    clock.now = cst(2026, 10, 20)
    timed.fire(cid, "appeal", P(org.s2), data={"appeal_reason": "等次偏低"})
    clock.now = cst(2026, 12, 31)
    TimerWorker(timed).tick()
    assert timed.get_case(cid).state == "review"  # the window's timer was dropped
    timed.fire(cid, "uphold", P(org.c2), data={"review_decision": "维持不称职"})
    assert timed.get_case(cid).state == "review_decided"
    timed.fire(cid, "accept_decision", P(org.s2))
    assert timed.get_case(cid).state == "closed"


def test_rule_params_are_copied_not_shared():
    loaded = rules.REGISTRY["sanction_block"].params.load({})
    loaded["kinds"]["记过"]["years"] = 9
    again = rules.REGISTRY["sanction_block"].params.load({})
    assert again["kinds"]["记过"]["years"] == 1 and copy.deepcopy(again) == again
