"""Effects: closed flows write their results back into person facts (结果运用).

The annual grade approved (审定), revised on review (复核) or on complaint (申诉) becomes the
year's `annual_results` row that promotion eligibility reads; a filed promotion becomes a
row of the rank history. Effects run in the action's transaction: a failing effect leaves
the case where it was.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from workflows.engine import Actor, Engine
from workflows.errors import DefinitionInvalid, FieldErrors, Forbidden
from workflows.facts import add_annual_result, add_rank, list_facts, person_facts
from workflows.models import FactAudit, Person
from workflows.org import assign_role
from workflows.spec import load_definition
from workflows.timers import TimerWorker

from .conftest import REGULAR, Clock, cst
from .test_annual import ANNUAL, SOURCE, _to_evaluation

P = Actor.person


@pytest.fixture
def annual(engine, regular):
    return engine.publish(SOURCE, str(ANNUAL))


def _results(db, person_id: int) -> list[dict]:
    with db.unit_of_work(write=False) as s:
        return list_facts(s, "annual_results", person_id)


def _audit(db, person_id: int, table: str) -> list[FactAudit]:
    with db.unit_of_work(write=False) as s:
        rows = s.execute(select(FactAudit).where(FactAudit.person_id == person_id,
                                                 FactAudit.table_name == table)
                         .order_by(FactAudit.id)).scalars().all()
        s.expunge_all()
        return rows


def _approved(engine, org, who: str, grade: str = "称职") -> int:
    cid = _to_evaluation(engine, org, who)
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": grade,
                                                 "evaluation_comment": "意见"})
    engine.fire(cid, "approve", P(org.c1))
    return cid


# --------------------------------------------------------------------------- annual grade


def test_the_approved_grade_becomes_the_years_annual_result(engine, org, db, annual):
    assert _results(db, org.s2) == []
    cid = _approved(engine, org, "s2")
    [row] = _results(db, org.s2)
    assert (row["year"], row["grade"], row["source"]) == (2026, "称职", "flow")
    assert row["note"] == f"annual-assessment case {cid} (approve)"
    [audit] = _audit(db, org.s2, "annual_results")
    assert (audit.action, audit.actor_id, audit.before) == ("flow", org.c1, None)
    # …and the promotion rules see it at once.
    with db.unit_of_work(write=False) as s:
        assert person_facts(s, org.s2).grades == {2026: "称职"}


def test_a_review_that_changes_the_grade_updates_the_fact(engine, org, db, annual):
    cid = _approved(engine, org, "s2", grade="不称职")
    engine.fire(cid, "acknowledge", P(org.s2))
    engine.fire(cid, "appeal", P(org.s2), data={"appeal_reason": "专项任务未计入"})
    engine.fire(cid, "revise", P(org.c1), data={"grade": "称职", "review_decision": "改定称职"})
    [row] = _results(db, org.s2)
    assert (row["grade"], row["note"]) == ("称职", f"annual-assessment case {cid} (revise)")
    created, updated = _audit(db, org.s2, "annual_results")
    assert (created.action, updated.action) == ("flow", "update")
    assert (updated.before["grade"], updated.after["grade"]) == ("不称职", "称职")


def test_a_manual_result_of_the_year_is_replaced_with_the_flows(engine, org, db, annual):
    with db.unit_of_work() as s:
        add_annual_result(s, org.s2, 2026, "优秀", by=None)
    _approved(engine, org, "s2")
    [row] = _results(db, org.s2)
    assert (row["grade"], row["source"]) == ("称职", "flow")


def test_an_upheld_review_leaves_the_fact_alone(engine, org, db, annual):
    cid = _approved(engine, org, "s2", grade="不称职")
    engine.fire(cid, "acknowledge", P(org.s2))
    engine.fire(cid, "appeal", P(org.s2), data={"appeal_reason": "等次偏低"})
    engine.fire(cid, "uphold", P(org.c1), data={"review_decision": "维持"})
    assert [r["grade"] for r in _results(db, org.s2)] == ["不称职"]
    assert len(_audit(db, org.s2, "annual_results")) == 1


# --------------------------------------------------------------------------- 申诉


def _complaints_office(db, person_id: int) -> None:
    with db.unit_of_work() as s:
        assign_role(s, s.get(Person, person_id), "complaints-office")


def _reviewed(engine, org, who: str = "s2", grade: str = "不称职") -> int:
    cid = _approved(engine, org, who, grade=grade)
    engine.fire(cid, "acknowledge", P(org.ids[who]))
    engine.fire(cid, "appeal", P(org.ids[who]), data={"appeal_reason": "等次偏低"})
    engine.fire(cid, "uphold", P(org.c1), data={"review_decision": "维持不称职"})
    return cid


def test_a_complaint_after_the_review_goes_to_the_authority(engine, org, db, annual):
    _complaints_office(db, org.t1)
    cid = _reviewed(engine, org)
    with pytest.raises(FieldErrors) as exc:
        engine.fire(cid, "complain", P(org.s2))
    assert "complaint_reason" in exc.value.errors
    engine.fire(cid, "complain", P(org.s2), data={"complaint_reason": "复核未听取本人陈述"})
    case = engine.get_case(cid)
    assert case.state == "complaint"
    # Only the complaints office (同级公务员主管部门) decides; the committee that
    # reviewed the grade does not.
    with pytest.raises(Forbidden):
        engine.fire(cid, "revise_on_complaint", P(org.c1),
                    data={"grade": "称职", "complaint_decision": "变更为称职"})
    engine.fire(cid, "revise_on_complaint", P(org.t1),
                data={"grade": "称职", "complaint_decision": "申诉成立，变更为称职"})
    case = engine.get_case(cid)
    assert case.state == "closed" and case.data["grade"] == "称职"
    [row] = _results(db, org.s2)
    assert (row["grade"], row["note"]) == ("称职",
                                           f"annual-assessment case {cid} (revise_on_complaint)")


def test_a_dismissed_complaint_keeps_the_grade(engine, org, db, annual):
    _complaints_office(db, org.t1)
    cid = _reviewed(engine, org)
    engine.fire(cid, "complain", P(org.s2), data={"complaint_reason": "不服"})
    engine.fire(cid, "dismiss", P(org.t1), data={"complaint_decision": "维持原复核决定"})
    assert engine.get_case(cid).state == "closed"
    assert [r["grade"] for r in _results(db, org.s2)] == ["不称职"]


def test_the_complaint_window_closes_by_itself_after_15_days(db, org):
    clock = Clock(cst(2026, 12, 1, 10))
    timed = Engine(db, clock=clock)
    timed.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR))
    timed.publish(SOURCE, str(ANNUAL))
    cid = _reviewed(timed, org)
    worker = TimerWorker(timed)
    clock.now = cst(2026, 12, 16, 9, 59)
    worker.tick()
    assert timed.get_case(cid).state == "review_decided"
    clock.now = cst(2026, 12, 16, 10, 1)
    assert worker.tick().fired == 1
    assert timed.get_case(cid).state == "closed"
    with pytest.raises(Exception) as exc:  # too late to complain
        timed.fire(cid, "complain", P(org.s2), data={"complaint_reason": "不服"})
    assert "closed" in str(exc.value)


# --------------------------------------------------------------------------- rank


PROMOTE = """
flow: promote-now
title: {zh: 职级备案, en: Rank filing}
fields:
  target_rank: {type: text, max_length: 64}
  rank_effective: {type: date}
states:
  - {name: filing, actor: committee}
  - {name: filed, final: true}
roles:
  committee: {resolve: unit_role, role: committee}
transitions:
  - trigger: file
    from: filing
    to: filed
    by: committee
    requires: [target_rank]
    accepts: [rank_effective]
    effects:
      - record_rank: {field: target_rank, date_field: rank_effective}
"""


def test_a_filed_promotion_becomes_the_current_rank(engine, org, db):
    with db.unit_of_work() as s:
        add_rank(s, org.s3, "二级主任科员", dt.date(2023, 6, 1), by=None)
    engine.publish(PROMOTE, "promote.yaml")
    cid = engine.start_case("promote-now", org.s3).id
    engine.fire(cid, "file", P(org.c1), data={"target_rank": "一级主任科员",
                                             "rank_effective": "2026-11-20"})
    with db.unit_of_work(write=False) as s:
        ranks = list_facts(s, "rank_history", org.s3)
    assert [(r["rank"], r["since"], r["until"]) for r in ranks] == [
        ("二级主任科员", dt.date(2023, 6, 1), dt.date(2026, 11, 20)),
        ("一级主任科员", dt.date(2026, 11, 20), None)]
    assert ranks[1]["note"] == f"promote-now case {cid} (file)"


def test_without_a_date_the_rank_starts_on_the_engines_day(db, org):
    clock = Clock(cst(2026, 11, 26, 23, 30))  # 23:30 in Beijing: still the 26th there
    engine = Engine(db, clock=clock)
    engine.publish(PROMOTE, "promote.yaml")
    cid = engine.start_case("promote-now", org.s4).id
    engine.fire(cid, "file", P(org.c1), data={"target_rank": "四级调研员"})
    with db.unit_of_work(write=False) as s:
        [rank] = list_facts(s, "rank_history", org.s4)
    assert (rank["rank"], rank["since"]) == ("四级调研员", dt.date(2026, 11, 26))


def test_a_failing_effect_leaves_the_case_where_it_was(engine, org, db):
    with db.unit_of_work() as s:
        add_rank(s, org.s3, "一级主任科员", dt.date(2026, 1, 1), by=None)
    engine.publish(PROMOTE, "promote.yaml")
    cid = engine.start_case("promote-now", org.s3).id
    # The rank would start before the one held: the fact check refuses, the move too.
    with pytest.raises(FieldErrors) as exc:
        engine.fire(cid, "file", P(org.c1), data={"target_rank": "四级调研员",
                                                 "rank_effective": "2025-06-01"})
    assert "overlaps 一级主任科员" in str(exc.value.errors)
    case = engine.get_case(cid)
    assert case.state == "filing" and case.version == 1
    with db.unit_of_work(write=False) as s:
        assert [r["rank"] for r in list_facts(s, "rank_history", org.s3)] == ["一级主任科员"]


# --------------------------------------------------------------------------- definitions


@pytest.mark.parametrize("effect, message", [
    ("record_grade: {}", "transitions[0].effects[0].record_grade: unknown effect "
                         "'record_grade'"),
    ("record_rank: {field: nope}", "transitions[0].effects[0].record_rank.field: unknown "
                                   "field 'nope'"),
    ("record_rank: {field: target_rank, date_field: target_rank}",
     "transitions[0].effects[0].record_rank.date_field: field 'target_rank' is text; this "
     "effect needs date"),
    ("record_annual_result: {field: target_rank}",
     "transitions[0].effects[0].record_annual_result: record_annual_result needs a flow "
     "with period: year"),
    ("record_rank: {field: target_rank, when: filed}",
     "transitions[0].effects[0].record_rank.when: unknown key"),
])
def test_a_wrong_effect_is_refused_with_its_path(effect, message):
    source = PROMOTE.replace("record_rank: {field: target_rank, date_field: rank_effective}",
                             effect)
    with pytest.raises(DefinitionInvalid) as exc:
        load_definition(source, "promote.yaml")
    assert message in str(exc.value)
