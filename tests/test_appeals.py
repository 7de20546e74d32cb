"""Issue 13 items 7, 8 and 11, through the engine, on SQLite and PostgreSQL:

- 平时考核结果运用: 好 → 通报表扬 (and a 嘉奖/记功 candidacy for 急难险重 work), 较差 → 待岗学习
  / 召回管理, as person facts with a notification to 干部科 (hr-office); the negative list
  (负面清单) caps the grade.
- 年度考核 appeals: 复核 / 申诉 only against 不称职 (《公务员法》第九十五条), 申诉 directly; a
  change to 优秀 on review or complaint passes the rules and the public notice again; a grade
  withheld during an investigation is set afterwards (补定等次).
- Grade choices: an action offers (and accepts) only the values of its `values:`.
"""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from workflows.engine import SYSTEM_ACTOR, Actor, Engine
from workflows.errors import DefinitionInvalid, FieldErrors, RuleViolation
from workflows.facts import (
    audit_entries,
    close_investigation,
    list_facts,
    open_investigation,
    person_facts,
    record_consequence,
)
from workflows.models import Person
from workflows.notify import list_notifications
from workflows.org import assign_role
from workflows.spec import load_definition
from workflows.timers import TimerWorker

from .conftest import CST, REGULAR, Clock, cst
from .test_annual import ANNUAL, GOOD_YEAR, SOURCE, _regular_year, _to_evaluation

P = Actor.person
REGULAR_SOURCE = REGULAR.read_text(encoding="utf-8")


@pytest.fixture
def annual(engine, regular):
    return engine.publish(SOURCE, str(ANNUAL))


def _refusal(fn, *args, **kwargs) -> RuleViolation:
    with pytest.raises(RuleViolation) as exc:
        fn(*args, **kwargs)
    return exc.value


def _facts(db, kind: str, person_id: int) -> list[dict]:
    with db.unit_of_work(write=False) as s:
        return list_facts(s, kind, person_id)


# --------------------------------------------------------------------------- item 7


def _regular_month(engine, org, who: str, data: dict, period: str = "2026-03") -> int:
    case = engine.start_case("regular-assessment", org.ids[who], period_key=period)
    engine.fire(case.id, "submit", P(org.ids[who]), data={"summary": "小结"})
    engine.fire(case.id, "evaluate", P(org.l1), data=data)
    engine.fire(case.id, "accept", P(org.ids[who]))
    return case.id


def test_good_is_praised_and_outstanding_work_is_a_commendation_candidacy(engine, org, db,
                                                                         regular):
    cid = _regular_month(engine, org, "s1", {"grade": "好", "urgent_task_merit": True})
    assert _facts(db, "consequences", org.s1) == []  # only the approval decides
    engine.fire(cid, "approve", P(org.c2))
    rows = _facts(db, "consequences", org.s1)
    assert [(r["kind"], r["period"]) for r in rows] == [("通报表扬", "2026-03"),
                                                        ("嘉奖记功人选", "2026-03")]
    assert rows[0]["note"] == f"regular-assessment case {cid} (approve)"
    # 干部科 (c1 holds hr-office) is told once for the case, with what to do.
    (note,) = list_notifications(db, org.c1).items
    assert note["kind"] == "consequence" and note["case_id"] == cid
    assert note["title"] == "平时考核结果运用：测试s1 2026-03 好 → 通报表扬、嘉奖记功人选"
    with db.unit_of_work(write=False) as s:
        assert [c.kind for c in person_facts(s, org.s1).consequences] == ["通报表扬",
                                                                          "嘉奖记功人选"]


def test_poor_leads_to_stand_down_study_and_good_enough_to_nothing(engine, org, db, regular):
    poor = _regular_month(engine, org, "s2", {"grade": "较差", "evaluation_comment": "多次逾期"})
    fine = _regular_month(engine, org, "s3", {"grade": "较好", "urgent_task_merit": True})
    engine.fire(poor, "approve", P(org.c2))
    engine.fire(fine, "approve", P(org.c2))
    assert [r["kind"] for r in _facts(db, "consequences", org.s2)] == ["待岗学习或召回管理"]
    assert _facts(db, "consequences", org.s3) == []
    assert [n["case_id"] for n in list_notifications(db, org.c1).items] == [poor]


def test_a_consequence_is_recorded_once_per_period(db, org):
    with db.unit_of_work() as s:
        first = record_consequence(s, org.s1, "通报表扬", "2026-03", dt.date(2026, 4, 10),
                                   note=None, by=None)
        again = record_consequence(s, org.s1, "通报表扬", "2026-03", dt.date(2026, 4, 11),
                                   note=None, by=None)
    assert first is not None and again is None
    assert len(_facts(db, "consequences", org.s1)) == 1


def test_a_consequence_the_approval_records_is_audited_once(engine, org, db, regular):
    case = _regular_month(engine, org, "s1", {"grade": "好"})
    engine.fire(case, "approve", P(org.c2))
    (fact,) = _facts(db, "consequences", org.s1)
    assert (fact["kind"], fact["period"], fact["decided_on"]) == (
        "通报表扬", "2026-03", engine.clock().astimezone(CST).date())
    with db.unit_of_work() as s:  # the effect replayed: neither fact nor audit again
        assert record_consequence(s, org.s1, "通报表扬", "2026-03", fact["decided_on"],
                                  note=None, by=org.c2) is None
        # No period is never a repeat.
        extra = record_consequence(s, org.s1, "通报表扬", None, dt.date(2026, 4, 1),
                                   note="补", by=None)
    entries, total = audit_entries(db, org.s1)
    assert total == 2
    assert [(e["action"], e["table"], e["actor_id"], e["row_id"], e["before"]) for e in entries
            ] == [("flow", "consequences", None, extra["id"], None),
                  ("flow", "consequences", org.c2, fact["id"], None)]
    assert entries[1]["after"] == {"id": fact["id"], "person_id": org.s1, "kind": "通报表扬",
                                   "period": "2026-03",
                                   "decided_on": fact["decided_on"].isoformat(),
                                   "note": f"regular-assessment case {case} (approve)"}
    assert entries[0]["after"]["period"] is None and extra["note"] == "补"


def test_an_admin_may_import_a_consequence(db, org):
    from workflows.facts import import_facts

    report = import_facts(db, "person_code,fact,year,date,until,value,number,passed,note\n"
                              "S1,consequence,,2026-04-10,,通报表扬,,,补录\n", by=org.chief)
    assert report.created["consequence"] == 1 and sum(report.created.values()) == 1
    (row,) = _facts(db, "consequences", org.s1)
    assert (row["kind"], row["period"], row["decided_on"], row["note"]) == (
        "通报表扬", None, dt.date(2026, 4, 10), "补录")


def test_a_hit_on_the_negative_list_caps_the_grade(engine, org, db, regular):
    case = engine.start_case("regular-assessment", org.s1, period_key="2026-03")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "小结"})
    v = _refusal(engine.fire, case.id, "evaluate", P(org.l1),
                 data={"grade": "一般", "evaluation_comment": "弄虚作假",
                       "negative_items": ["弄虚作假"]})
    assert v.rule == "negative_list"
    assert str(v) == (f"case {case.id}: 负面清单情形 hit (弄虚作假): 考核等次 can be 较差 only, "
                      "not 一般")
    assert engine.get_case(case.id).state == "evaluation"  # nothing moved
    with pytest.raises(FieldErrors) as bad:  # only the list's items
        engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "较差",
                                                          "evaluation_comment": "x",
                                                          "negative_items": ["迟到"]})
    assert list(bad.value.errors) == ["negative_items.0"]
    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "较差", "evaluation_comment": "x",
                                                      "negative_items": ["弄虚作假"]})
    assert engine.get_case(case.id).state == "feedback"


def _regular_problems(change) -> list[str]:
    doc = yaml.safe_load(REGULAR_SOURCE)
    change(doc)
    with pytest.raises(DefinitionInvalid) as info:
        load_definition(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "r.yaml")
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def _trigger(doc: dict, trigger: str) -> dict:
    return next(t for t in doc["transitions"] if t["trigger"] == trigger)


def test_definition_time_checks_of_the_regular_rules():
    found = _regular_problems(lambda d: _trigger(d, "evaluate")["rules"][1]["negative_list"]
                              .update(cap="差"))
    assert any("'差' is not a value of field 'grade'" in p for p in found), found
    found = _regular_problems(lambda d: _trigger(d, "evaluate")["rules"][1]["negative_list"]
                              .update(field="summary"))
    assert any("'summary' must be a list of enum values" in p for p in found), found
    found = _regular_problems(lambda d: _trigger(d, "approve")["effects"][0][
        "record_consequences"]["consequences"].append({"value": "优", "kind": "x"}))
    assert any("'优' is not a value of field 'grade'" in p for p in found), found
    found = _regular_problems(lambda d: _trigger(d, "approve")["effects"][0][
        "record_consequences"]["consequences"].append(
            {"value": "好", "kind": "x", "if_field": "summary"}))
    assert any("'summary' must be a bool field" in p for p in found), found


# --------------------------------------------------------------------------- item 8


def _decided(engine, org, who: str, grade: str, comment: str = "意见") -> int:
    cid = _to_evaluation(engine, org, who)
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": grade, "evaluation_comment": comment})
    engine.fire(cid, "approve", P(org.c1))
    engine.fire(cid, "acknowledge", P(org.ids[who]))
    return cid


def _complaints_office(db, person_id: int) -> None:
    with db.unit_of_work() as s:
        assign_role(s, s.get(Person, person_id), "complaints-office")


def test_only_incompetent_may_be_appealed(engine, org, db, annual):
    _complaints_office(db, org.t1)  # someone to decide a complaint (else: no_actor first)
    cid = _decided(engine, org, "s2", "基本称职")
    for trigger, field in (("appeal", "appeal_reason"), ("complain", "complaint_reason")):
        v = _refusal(engine.fire, cid, trigger, P(org.s2), data={field: "不服"})
        assert v.rule == "appealable" and v.details["appealable"] == ["不称职"]
    assert str(v) == (f"case {cid}: 提出申诉 (complain) is open only against 考核等次 不称职 "
                      "(《公务员法》第九十五条); this case's 考核等次 is 基本称职")
    assert engine.get_case(cid).state == "appeal_window"
    other = _decided(engine, org, "s3", "不称职")
    assert engine.fire(other, "appeal", P(org.s3), data={"appeal_reason": "不服"}
                       ).to_state == "review"


def test_a_complaint_may_skip_the_review(engine, org, db, annual):
    _complaints_office(db, org.t1)
    cid = _decided(engine, org, "s2", "不称职")
    assert engine.fire(cid, "complain", P(org.s2), data={"complaint_reason": "直接申诉"}
                       ).to_state == "complaint"
    engine.fire(cid, "revise_on_complaint", P(org.t1),
                data={"grade": "称职", "complaint_decision": "申诉成立"})
    assert engine.get_case(cid).state == "closed"
    assert [r["grade"] for r in _facts(db, "annual_results", org.s2)] == ["称职"]


def test_a_review_to_excellent_passes_the_rules_and_the_notice_again(engine, org, db, annual):
    cid = _decided(engine, org, "s1", "不称职")
    engine.fire(cid, "appeal", P(org.s1), data={"appeal_reason": "专项任务未计入"})
    # The same rules as the original decision: the year's regular results first.
    v = _refusal(engine.fire, cid, "revise_excellent", P(org.c1),
                 data={"grade": "优秀", "review_decision": "改定优秀"})
    assert v.rule == "regular_linkage"
    # `revise` takes the other grades only: 优秀 never skips the notice.
    with pytest.raises(FieldErrors) as bad:
        engine.fire(cid, "revise", P(org.c1), data={"grade": "优秀", "review_decision": "x"})
    assert bad.value.errors == {"grade": ["must be one of: 称职, 基本称职, 不称职, 不定等次"]}
    _regular_year(db, org.s1, GOOD_YEAR)
    # Another 优秀 of the unit's pool (the section's only place) is approved meanwhile.
    _regular_year(db, org.s4, GOOD_YEAR)
    other = _to_evaluation(engine, org, "s4")
    engine.fire(other, "propose_excellent", P(org.l1), data={"grade": "优秀"})
    engine.fire(other, "notice_passed", SYSTEM_ACTOR)
    engine.fire(other, "approve", P(org.c1))
    assert engine.fire(cid, "revise_excellent", P(org.c1),
                       data={"grade": "优秀", "review_decision": "改定优秀"}
                       ).to_state == "review_notice"
    assert [r["grade"] for r in _facts(db, "annual_results", org.s1)] == ["不称职"]
    engine.fire(cid, "notice_passed", SYSTEM_ACTOR)
    assert engine.get_case(cid).state == "review_approval"
    over = _refusal(engine.fire, cid, "approve", P(org.c1))
    assert over.rule == "excellent_quota" and over.details["used"] == 1
    # The committee decides another grade instead; the fact follows.
    engine.fire(cid, "revise", P(org.c1), data={"grade": "称职", "review_decision": "名额已满"})
    assert engine.get_case(cid).state == "review_decided"
    assert [r["grade"] for r in _facts(db, "annual_results", org.s1)] == ["称职"]


def test_the_notice_of_a_review_to_excellent_passes_by_itself(db, org):
    clock = Clock(cst(2026, 12, 1, 9))
    timed = Engine(db, clock=clock)
    timed.publish(REGULAR_SOURCE, str(REGULAR))
    timed.publish(SOURCE, str(ANNUAL))
    _regular_year(db, org.s1, GOOD_YEAR)
    cid = _decided(timed, org, "s1", "不称职")
    timed.fire(cid, "appeal", P(org.s1), data={"appeal_reason": "不服"})
    clock.now = cst(2026, 12, 4, 10)  # a Friday: 7–11 December are the 5 working days
    timed.fire(cid, "revise_excellent", P(org.c1),
               data={"grade": "优秀", "review_decision": "改定优秀，公示"})
    worker = TimerWorker(timed)
    clock.now = cst(2026, 12, 11, 23, 59)
    worker.tick()
    assert timed.get_case(cid).state == "review_notice"
    clock.now = cst(2026, 12, 12, 0, 1)
    assert worker.tick().fired == 1
    assert timed.get_case(cid).state == "review_approval"
    timed.fire(cid, "approve", P(org.c1))
    assert timed.get_case(cid).state == "review_decided"
    assert [r["grade"] for r in _facts(db, "annual_results", org.s1)] == ["优秀"]


def test_a_complaint_to_excellent_goes_through_the_notice_and_is_recorded(engine, org, db,
                                                                         annual):
    _complaints_office(db, org.t1)
    _regular_year(db, org.s1, GOOD_YEAR)
    cid = _decided(engine, org, "s1", "不称职")
    engine.fire(cid, "complain", P(org.s1), data={"complaint_reason": "不服"})
    engine.fire(cid, "revise_excellent", P(org.t1),
                data={"grade": "优秀", "complaint_decision": "申诉成立"})
    assert engine.get_case(cid).state == "complaint_notice"
    engine.fire(cid, "object", P(org.t1), data={"notice_objection": "有群众反映"},
                comment="转审定")
    assert engine.get_case(cid).state == "complaint_approval"
    engine.fire(cid, "approve", P(org.t1))
    assert engine.get_case(cid).state == "closed"
    assert [r["grade"] for r in _facts(db, "annual_results", org.s1)] == ["优秀"]


def test_a_withheld_grade_is_set_after_the_investigation_closes(engine, org, db, annual):
    with db.unit_of_work() as s:
        inv = open_investigation(s, org.s2, dt.date(2026, 9, 1), by=None)
    cid = _to_evaluation(engine, org, "s2")
    v = _refusal(engine.fire, cid, "evaluate", P(org.l1), data={"grade": "称职"})
    assert v.rule == "sanction_block"
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "不定等次",
                                                 "evaluation_comment": "立案审查中"})
    engine.fire(cid, "withhold", P(org.c1), data={"grade": "不定等次"})
    assert engine.get_case(cid).state == "withheld"
    assert [r["grade"] for r in _facts(db, "annual_results", org.s2)] == ["不定等次"]
    v = _refusal(engine.fire, cid, "regrade", P(org.c1))
    assert v.rule == "investigation_status"
    assert str(v) == (f"case {cid}: 补定等次 (regrade) waits for the investigation opened "
                      "2026-09-01 to be closed")
    with db.unit_of_work() as s:
        close_investigation(s, inv["id"], dt.date(2027, 1, 20), by=None)
    engine.fire(cid, "regrade", P(org.c1))
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "称职"})
    engine.fire(cid, "approve", P(org.c1))
    assert engine.get_case(cid).state == "result"
    assert [r["grade"] for r in _facts(db, "annual_results", org.s2)] == ["称职"]


def test_withholding_needs_an_open_investigation(engine, org, db, annual):
    cid = _to_evaluation(engine, org, "s2")
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "不定等次",
                                                 "evaluation_comment": "记过处分期内"})
    v = _refusal(engine.fire, cid, "withhold", P(org.c1), data={"grade": "不定等次"})
    assert v.rule == "investigation_status"
    assert engine.get_case(cid).state == "approval"


# --------------------------------------------------------------------------- item 11


def test_actions_and_forms_offer_only_the_values_an_action_accepts(engine, org, annual):
    cid = _to_evaluation(engine, org, "s1")
    actions = {a.trigger: a for a in engine.actions(cid, P(org.l1))}
    grade = {t: next(f for f in actions[t].requires if f["name"] == "grade")
             for t in ("propose_excellent", "evaluate")}
    assert grade["propose_excellent"]["values"] == ["优秀"]
    assert grade["evaluate"]["values"] == ["称职", "基本称职", "不称职", "不定等次"]
    # Refused by the schema, as a field error, before any rule runs.
    with pytest.raises(FieldErrors) as bad:
        engine.fire(cid, "propose_excellent", P(org.l1), data={"grade": "称职"})
    assert bad.value.errors == {"grade": ["must be one of: 优秀"]}


def test_definition_time_checks_of_values():
    doc = yaml.safe_load(SOURCE)

    def problems(change) -> list[str]:
        d = yaml.safe_load(SOURCE)
        change(d)
        with pytest.raises(DefinitionInvalid) as info:
            load_definition(yaml.safe_dump(d, allow_unicode=True, sort_keys=False), "a.yaml")
        return [f"{p.path}: {p.message}" for p in info.value.problems]

    assert _trigger(doc, "propose_excellent")["values"] == {"grade": ["优秀"]}
    found = problems(lambda d: _trigger(d, "propose_excellent")["values"].update(
        summary=["x"]))
    assert any("field 'summary' must be listed in requires or accepts" in p for p in found)
    found = problems(lambda d: _trigger(d, "propose_excellent")["values"].update(
        evaluation_comment=["x"]))
    assert any("only an enum or bool field's values can be restricted; 'evaluation_comment' is text"
               in p for p in found), found
    found = problems(lambda d: _trigger(d, "propose_excellent")["values"].update(
        grade=["优秀", "优秀"]))
    assert any("a value is listed twice" in p for p in found), found
    found = problems(lambda d: _trigger(d, "propose_excellent")["values"].update(grade=[]))
    assert any("values.grade" in p for p in found), found
