"""Frontline dispatch (下沉一线 / 第一书记): the shipped definition through the engine, with a
controlled clock, on SQLite and PostgreSQL; shortfalls and outcomes read back."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from workflows.dispatch import check_in_minimum, dispatch_outcomes, shortfalls
from workflows.engine import Actor, Engine
from workflows.errors import (
    ActionNotAllowed,
    DefinitionInvalid,
    FieldErrors,
    Forbidden,
    RuleViolation,
)
from workflows.facts import DISPATCH as DISPATCH_FACT
from workflows.facts import add_fact, person_facts
from workflows.models import FactAudit, Timer, Unit
from workflows.org import add_person, add_unit, assign_role
from workflows.spec import load_definition
from workflows.timers import TimerWorker

from .conftest import ROOT, Clock, cst

DISPATCH = ROOT / "definitions" / "frontline-dispatch.yaml"
SOURCE = DISPATCH.read_text(encoding="utf-8")
FLOW = "frontline-dispatch"
P = Actor.person

NOMINATION = {"post_type": "第一书记", "receiving_unit": "青山镇石桥村",
              "term_start": "2026-10-01", "term_end": "2027-09-30",
              "nomination_reason": "基层工作经验丰富"}
EVALUATION = {"receiving_evaluation": "扎根村里，带领发展集体经济。",
              "recommended_grade": "优秀", "county_opinion": "同意评为优秀。"}




@pytest.fixture
def clock():
    return Clock(cst(2026, 9, 1, 9))


@pytest.fixture
def town(db, org) -> int:
    """The receiving side: a township cadre in the unit-less group dispatch-receiving."""
    with db.unit_of_work() as s:
        unit = add_unit(s, "TOWN", "青山镇")
        person = add_person(s, "TOWN1", "镇组织委员", unit, "deputy")
        assign_role(s, person, "dispatch-receiving")
        return person.id


@pytest.fixture
def eng(db, org, clock) -> Engine:
    engine = Engine(db, clock=clock)
    engine.publish(SOURCE, str(DISPATCH))
    return engine


def _timers(db, case_id):
    with db.unit_of_work(write=False) as s:
        return s.execute(select(Timer.kind, Timer.status, Timer.due_at, Timer.action)
                         .where(Timer.case_id == case_id).order_by(Timer.id)).all()


def _dispatched(eng, org, subject=None) -> int:
    case = eng.start_case(FLOW, subject or org.s1, actor=P(org.l1))
    eng.fire(case.id, "nominate", P(org.l1), data=NOMINATION)
    eng.fire(case.id, "approve_dispatch", P(org.c1), data={"dispatch_order": "组干〔2026〕12号"})
    return case.id


def _check_in(eng, case_id, person, month, days, note=None):
    item = {"month": month, "days_in_post": days}
    if note:
        item["note"] = note
    return eng.fire(case_id, "check_in", P(person), data={"check_ins": [item]})


# --------------------------------------------------------------------------- definition


def test_the_definition_validates_and_holds_its_numbers():
    spec = load_definition(SOURCE, str(DISPATCH))
    assert spec.flow == FLOW and spec.period == "none"
    assert set(spec.states) == {"nomination", "dispatch_approval", "dispatched", "summary",
                                "evaluation", "feedback", "approval", "closed", "withdrawn"}
    assert check_in_minimum(spec) == 20
    (auto, _repeat) = spec.states["dispatched"].timers
    assert (auto.kind, auto.at_field, auto.fire) == ("auto", "term_end", "term_end")
    (accept,) = spec.states["feedback"].timers
    assert (accept.working_days, accept.fire) == (5, "accept")
    assert spec.roles["receiving"].group == "dispatch-receiving"
    assert spec.fields["grade"].values == ("优秀", "称职", "基本称职", "不称职")
    assert spec.title.en and all(s.label.en for s in spec.states.values())
    assert all(t.label.en for t in spec.transitions)


@pytest.mark.parametrize("old, new, path, message", [
    ("check_in: {field: check_ins, min_days: 20}", "check_in: {field: check_ins, min_days: 40}",
     "transitions[4].rules[0].check_in.min_days", "Must be greater than or equal to 0"),
    ("check_in: {field: check_ins, min_days: 20}", "check_in: {field: summary, min_days: 20}",
     "transitions[4].rules[0].check_in.field", "must be a list of records"),
    ("if_field: post_type, in: [第一书记]}\n  - trigger: send_back",
     "if_field: post_type, in: [书记]}\n  - trigger: send_back",
     "transitions[0].rules[1].term_length.in", "'书记' is not a value of field 'post_type'"),
    ("in: [优秀]}", "in: [excellent]}",
     "transitions[12].rules[0].outcome_flags.in", "'excellent' is not a value of field 'grade'"),
])
def test_rule_parameters_are_checked_when_the_definition_is_loaded(old, new, path, message):
    assert old in SOURCE
    with pytest.raises(DefinitionInvalid) as exc:
        load_definition(SOURCE.replace(old, new, 1), "d.yaml")
    found = {p.path: p.message for p in exc.value.problems}
    assert path in found, found
    assert message in found[path]


# --------------------------------------------------------------------------- a full pass


def test_a_full_dispatch_from_nomination_to_the_recorded_outcome(db, eng, org, clock, town):
    case = eng.start_case(FLOW, org.s1, actor=P(org.l1))
    assert case.state == "nomination"

    # 提名: by the sending unit's leader, with every nomination field.
    with pytest.raises(Forbidden):
        eng.fire(case.id, "nominate", P(org.s1), data=NOMINATION)
    with pytest.raises(FieldErrors) as missing:
        eng.fire(case.id, "nominate", P(org.l1), data={"post_type": "第一书记"})
    assert {"receiving_unit", "term_start", "term_end"} <= set(missing.value.errors)
    with pytest.raises(FieldErrors) as bad:
        eng.fire(case.id, "nominate", P(org.l1), data={**NOMINATION, "post_type": "驻村"})
    assert "post_type" in bad.value.errors
    # A first secretary serves 1–3 years: six months is refused, nothing is written.
    with pytest.raises(RuleViolation) as short:
        eng.fire(case.id, "nominate", P(org.l1), data={**NOMINATION, "term_end": "2027-03-31"})
    assert short.value.rule == "term_length" and "12 to 36 months for 第一书记" in str(short.value)
    with pytest.raises(RuleViolation):
        eng.fire(case.id, "nominate", P(org.l1), data={**NOMINATION, "term_end": "2029-10-01"})
    assert eng.get_case(case.id).data == {}
    eng.fire(case.id, "nominate", P(org.l1), data=NOMINATION)

    # 选派审批: sent back with a reason, nominated again, approved.
    with pytest.raises(Forbidden):
        eng.fire(case.id, "approve_dispatch", P(org.l1))
    with pytest.raises(FieldErrors):
        eng.fire(case.id, "send_back", P(org.c1))
    eng.fire(case.id, "send_back", P(org.c1), comment="请补充推荐理由中的基层经历")
    assert eng.get_case(case.id).state == "nomination"
    eng.fire(case.id, "nominate", P(org.l1), data=NOMINATION)
    eng.fire(case.id, "approve_dispatch", P(org.c1), data={"dispatch_order": "组干〔2026〕12号"})
    assert eng.get_case(case.id).state == "dispatched"
    (auto,) = [t for t in _timers(db, case.id) if t.kind == "auto"]
    assert (auto.due_at, auto.action, auto.status) == (cst(2027, 9, 30, 9), "term_end", "pending")

    # 在岗: monthly check-ins are appended, each one recorded in the history.
    clock.now = cst(2026, 11, 2, 9)
    _check_in(eng, case.id, org.s1, "2026-10", 22)
    _check_in(eng, case.id, org.s1, "2026-11", 18, note="参加县里集中培训 4 天")
    _check_in(eng, case.id, org.s1, "2026-12", 25)
    data = eng.get_case(case.id).data
    assert [(c["month"], c["days_in_post"]) for c in data["check_ins"]] == [
        ("2026-10", 22), ("2026-11", 18), ("2026-12", 25)]
    checks = [h for h in eng.history(case.id) if h["trigger"] == "check_in"]
    assert [h["data"]["check_ins"][0]["month"] for h in checks] == ["2026-10", "2026-11", "2026-12"]
    assert all(h["actor_role"] == "subject" and h["to"] == "dispatched" for h in checks)
    assert [t.status for t in _timers(db, case.id) if t.kind == "auto"] == ["pending"]

    # Only the shortfall month is flagged, against the definition's 20 days.
    with db.unit_of_work(write=False) as s:
        (gap,) = shortfalls(s)
        assert (gap.case_id, gap.person_id, gap.month, gap.days_in_post, gap.minimum,
                gap.missing) == (case.id, org.s1, "2026-11", 18, 20, 2)
        assert gap.note == "参加县里集中培训 4 天"
        assert [g.month for g in shortfalls(s, minimum=23)] == ["2026-10", "2026-11"]
        assert shortfalls(s, person_id=org.s2) == []

    # The term ends by itself on its date (monthly reminders fire meanwhile, nothing moves).
    clock.now = cst(2027, 9, 30, 8, 59)
    TimerWorker(eng).tick()
    assert eng.get_case(case.id).state == "dispatched"
    clock.now = cst(2027, 9, 30, 9, 1)
    assert TimerWorker(eng).tick().fired >= 1
    assert eng.get_case(case.id).state == "summary"
    assert [t.status for t in _timers(db, case.id) if t.kind == "auto"] == ["done"]
    last = eng.history(case.id)[-1]
    assert (last["trigger"], last["actor_role"], last["actor_id"]) == ("term_end", "system", None)
    with pytest.raises(ActionNotAllowed):
        _check_in(eng, case.id, org.s1, "2027-09", 21)

    # 任期总结 → 接收方评价 (with the county's opinion) → feedback; an objection goes back.
    with pytest.raises(FieldErrors):
        eng.fire(case.id, "submit_summary", P(org.s1), data={"summary": "  "})
    eng.fire(case.id, "submit_summary", P(org.s1), data={"summary": "两年任期工作总结……"})
    with pytest.raises(Forbidden):
        eng.fire(case.id, "evaluate", P(org.l1), data=EVALUATION)
    with pytest.raises(FieldErrors) as no_county:
        eng.fire(case.id, "evaluate", P(town), data={**EVALUATION, "county_opinion": ""})
    assert "county_opinion" in no_county.value.errors
    eng.fire(case.id, "evaluate", P(town), data={**EVALUATION, "recommended_grade": "称职"})
    eng.fire(case.id, "object", P(org.s1), data={"objection_reason": "村集体收入翻番未计入"})
    assert eng.get_case(case.id).state == "evaluation"
    clock.now = cst(2027, 10, 12, 10)
    eng.fire(case.id, "evaluate", P(town), data=EVALUATION)

    # Five working days without objection count as acceptance (the scheduler fires it).
    assert TimerWorker(eng).tick(cst(2027, 10, 18, 9)).fired == 0
    assert TimerWorker(eng).tick(cst(2027, 10, 20, 0, 1)).fired == 1
    assert eng.get_case(case.id).state == "approval"
    assert eng.history(case.id)[-1]["trigger"] == "accept"

    # 派出单位审定: flags only with 优秀; outcome fields are required.
    with pytest.raises(Forbidden):
        eng.fire(case.id, "approve", P(town), data={"grade": "优秀"})
    with pytest.raises(FieldErrors) as no_flags:
        eng.fire(case.id, "approve", P(org.c1), data={"grade": "优秀"})
    assert {"commendation_proposed", "promotion_priority"} <= set(no_flags.value.errors)
    with pytest.raises(RuleViolation) as flags:
        eng.fire(case.id, "approve", P(org.c1), data={
            "grade": "称职", "commendation_proposed": True, "promotion_priority": False})
    assert flags.value.rule == "outcome_flags"
    eng.fire(case.id, "approve", P(org.c1), data={
        "grade": "优秀", "commendation_proposed": True, "promotion_priority": True,
        "approval_note": "同意，记入干部档案"})
    assert eng.get_case(case.id).state == "closed"

    with db.unit_of_work(write=False) as s:
        (out,) = dispatch_outcomes(s, org.s1)
        assert dispatch_outcomes(s, org.s2) == []
    assert (out.case_id, out.grade, out.commendation_proposed, out.promotion_priority,
            out.excellent) == (case.id, "优秀", True, True, True)
    assert (out.term_start, out.term_end) == (dt.date(2026, 10, 1), dt.date(2027, 9, 30))
    assert (out.post_type, out.receiving_unit, out.shortfall_months) == (
        "第一书记", "青山镇石桥村", 1)
    assert out.closed_at is not None

    # 审定备案 writes the outcome as a person fact (what promotion reads), audited as `flow`
    with db.unit_of_work(write=False) as s:
        (fact,) = person_facts(s, org.s1).dispatch_outcomes
        audit = s.execute(select(FactAudit).where(
            FactAudit.table_name == "dispatch_outcomes")).scalars().all()
        assert person_facts(s, org.s2).dispatch_outcomes == ()
    assert (fact.post_type, fact.receiving_unit, fact.term_start, fact.term_end, fact.grade,
            fact.commendation_proposed, fact.promotion_priority, fact.decided_on) == (
        "第一书记", "青山镇石桥村", dt.date(2026, 10, 1), dt.date(2027, 9, 30), "优秀", True,
        True, clock.now.date())
    assert fact.note == f"frontline-dispatch case {case.id} (approve)"
    assert [(a.action, a.actor_id, a.row_id, a.after["grade"]) for a in audit] == [
        ("flow", org.c1, fact.id, "优秀")]


def test_a_false_flag_is_a_given_value_and_a_plain_grade_closes(db, eng, org, clock, town):
    case_id = _dispatched(eng, org)
    eng.fire(case_id, "end_early", P(org.c1), comment="因工作需要提前召回")
    eng.fire(case_id, "submit_summary", P(org.s1), data={"summary": "总结"})
    eng.fire(case_id, "evaluate", P(town), data={**EVALUATION, "recommended_grade": "称职"})
    eng.fire(case_id, "accept", P(org.s1))
    eng.fire(case_id, "return_evaluation", P(org.c1), comment="请补充县委组织部意见依据")
    eng.fire(case_id, "evaluate", P(town), data={**EVALUATION, "recommended_grade": "称职"})
    eng.fire(case_id, "accept", P(org.s1))
    eng.fire(case_id, "approve", P(org.c1), data={
        "grade": "称职", "commendation_proposed": False, "promotion_priority": False})
    with db.unit_of_work(write=False) as s:
        (out,) = dispatch_outcomes(s, org.s1)
    assert (out.grade, out.commendation_proposed, out.promotion_priority, out.excellent) == (
        "称职", False, False, False)
    with db.unit_of_work(write=False) as s:
        (fact,) = person_facts(s, org.s1).dispatch_outcomes
    assert (fact.grade, fact.commendation_proposed, fact.promotion_priority) == (
        "称职", False, False)


def test_the_outcome_fact_refuses_a_grade_that_is_not_a_dispatch_grade(db, org):
    with db.unit_of_work() as s, pytest.raises(FieldErrors) as bad:
        add_fact(s, DISPATCH_FACT, org.s1, {"grade": "好", "decided_on": "2026-01-01",
                                            "term_start": "2025-02-01",
                                            "term_end": "2025-01-01"}, by=org.chief)
    assert bad.value.errors == {
        "grade": ["'好' is not a grade of a dispatch; the grades are 优秀, 称职, 基本称职, 不称职"],
        "term_end": ["term_end 2025-01-01 is before term_start 2025-02-01"]}
    with db.unit_of_work(write=False) as s:
        assert person_facts(s, org.s1).dispatch_outcomes == ()


# --------------------------------------------------------------------------- check-ins


def test_check_ins_are_refused_when_they_cannot_be_true(db, eng, org):
    case_id = _dispatched(eng, org)
    _check_in(eng, case_id, org.s1, "2026-10", 20)
    for month, days, says in [
        ("2026-10", 21, "already been reported"),
        ("2026-11", 31, "the month has 30"),
        ("2026-09", 10, "outside the term"),
        ("2027-10", 10, "outside the term"),
        ("2026/12", 10, "YYYY-MM"),
    ]:
        with pytest.raises(RuleViolation, match=says):
            _check_in(eng, case_id, org.s1, month, days)
    with pytest.raises(RuleViolation, match="already been reported"):  # twice in one action
        eng.fire(case_id, "check_in", P(org.s1), data={"check_ins": [
            {"month": "2026-12", "days_in_post": 22}, {"month": "2026-12", "days_in_post": 3}]})
    with pytest.raises(RuleViolation, match="days in post must be given"):
        eng.fire(case_id, "check_in", P(org.s1), data={"check_ins": [{"month": "2026-12"}]})
    with pytest.raises(FieldErrors):
        _check_in(eng, case_id, org.s1, "2026-12", 32)
    with pytest.raises(FieldErrors):
        eng.fire(case_id, "check_in", P(org.s1), data={"check_ins": []})
    with pytest.raises(Forbidden):  # only the person dispatched reports
        _check_in(eng, case_id, org.l1, "2026-12", 22)
    assert [c["month"] for c in eng.get_case(case_id).data["check_ins"]] == ["2026-10"]
    # Exactly the minimum is not a shortfall; zero days is accepted and flagged.
    _check_in(eng, case_id, org.s1, "2026-11", 0, note="病假")
    with db.unit_of_work(write=False) as s:
        assert [(g.month, g.days_in_post) for g in shortfalls(s)] == [("2026-11", 0)]


def test_the_minimum_comes_from_the_definition_each_case_is_pinned_to(db, eng, org):
    old = _dispatched(eng, org, org.s1)
    eng.publish(SOURCE.replace("min_days: 20", "min_days: 22"), "frontline-dispatch-v2.yaml")
    new = _dispatched(eng, org, org.s2)
    _check_in(eng, old, org.s1, "2026-10", 21)
    _check_in(eng, new, org.s2, "2026-10", 21)
    _check_in(eng, new, org.s2, "2026-11", 22)
    with db.unit_of_work(write=False) as s:
        assert [(g.case_id, g.month, g.minimum) for g in shortfalls(s)] == [
            (new, "2026-10", 22)]
        assert len(shortfalls(s, minimum=25)) == 3
        sec1 = s.execute(select(Unit.id).where(Unit.code == "SEC1")).scalar_one()
        assert len(shortfalls(s, unit_ids=[sec1])) == 1  # s2 is in SEC1 too
        assert shortfalls(s, case_id=old) == []


def test_an_ordinary_post_may_be_short_and_a_case_may_be_withdrawn(db, eng, org):
    case = eng.start_case(FLOW, org.t1, actor=P(org.l2))
    community = {**NOMINATION, "post_type": "下沉社区", "receiving_unit": "城东社区",
                 "term_end": "2026-12-31"}
    with pytest.raises(Forbidden):  # l1 leads SEC1, not t1's unit
        eng.fire(case.id, "nominate", P(org.l1), data=community)
    with pytest.raises(RuleViolation, match="before"):
        eng.fire(case.id, "nominate", P(org.l2), data={**community, "term_end": "2026-09-30"})
    eng.fire(case.id, "nominate", P(org.l2), data=community)
    with pytest.raises(FieldErrors):
        eng.fire(case.id, "withdraw", P(org.c1))
    eng.fire(case.id, "withdraw", P(org.c1), comment="本人因病不宜选派")
    assert eng.get_case(case.id).state == "withdrawn"
    with db.unit_of_work(write=False) as s:
        assert dispatch_outcomes(s, org.t1) == []


def test_nobody_nominates_or_approves_their_own_dispatch(eng, org):
    case = eng.start_case(FLOW, org.l1, actor=P(org.chief))
    with pytest.raises(Forbidden):
        eng.fire(case.id, "nominate", P(org.l1), data=NOMINATION)
    eng.fire(case.id, "nominate", P(org.chief), data=NOMINATION)
    other = eng.start_case(FLOW, org.c2, actor=P(org.chief))
    eng.fire(other.id, "nominate", P(org.chief), data=NOMINATION)
    with pytest.raises(Forbidden):
        eng.fire(other.id, "approve_dispatch", P(org.c2))
    eng.fire(other.id, "approve_dispatch", P(org.c1))



def test_record_dispatch_outcome_checks_the_fields_it_reads():
    src = SOURCE.replace("- record_dispatch_outcome: {}",
                         "- record_dispatch_outcome: {grade: summary, term_end: no_such}")
    with pytest.raises(DefinitionInvalid) as exc:
        load_definition(src, "frontline-dispatch.yaml")
    messages = sorted(p.message for p in exc.value.problems)
    assert messages == ["field 'summary' is text; this effect needs enum",
                        "unknown field 'no_such'; declare it under fields"]
