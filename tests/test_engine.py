"""The engine on the shipped regular-assessment flow (平时考核), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from workflows.engine import SYSTEM_ACTOR, Actor
from workflows.errors import (
    ActionNotAllowed,
    Conflict,
    DuplicateCase,
    FieldErrors,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
    RuleViolation,
)
from workflows.models import Case, HistoryRecord

from .conftest import REGULAR

FLOW = "regular-assessment"
P = Actor.person


def _count(db, model) -> int:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(func.count()).select_from(model)).scalar()


def _to_approval(engine, org, subject: str, grade: str = "较好", leader: str = "l1",
                 period: str = "2026-11") -> int:
    """Start a case and move it to 审定 (approval)."""
    case = engine.start_case(FLOW, org.ids[subject], period_key=period)
    engine.fire(case.id, "submit", P(org.ids[subject]), data={"summary": "本月工作小结"})
    data = {"grade": grade}
    if grade in ("一般", "较差"):
        data["evaluation_comment"] = "需改进"
    engine.fire(case.id, "evaluate", P(org.ids[leader]), data=data)
    engine.fire(case.id, "accept", P(org.ids[subject]))
    return case.id


def test_full_pass_with_returns(engine, org, regular, db):
    case = engine.start_case(FLOW, org.s1, period_key="2026-11")
    assert (case.state, case.version, case.flow_version, case.tier) == ("summary", 1, 1, "staff")

    r = engine.fire(case.id, "submit", P(org.s1), data={
        "summary": "完成干部档案专项审核",
        "individual_indicators": [{"indicator": "审核档案", "target": "200 卷", "actual": "230 卷"}],
    }, expected_version=1)
    assert (r.from_state, r.to_state, r.version) == ("summary", "evaluation", 2)

    # 领导退回小结 needs a reason, then the person resubmits.
    with pytest.raises(FieldErrors) as exc:
        engine.fire(case.id, "return_summary", P(org.l1))
    assert "needs a reason" in exc.value.errors["comment"][0]
    engine.fire(case.id, "return_summary", P(org.l1), comment="请补充量化指标")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "补充后的小结"})

    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "好", "peer_views": "同事认可"})
    # 结果反馈: the person objects, the leader re-evaluates, the person accepts.
    engine.fire(case.id, "object", P(org.s1), data={"objection_reason": "漏记了专项任务"})
    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "好"})
    engine.fire(case.id, "accept", P(org.s1))
    # 审定: sent back once, then approved.
    engine.fire(case.id, "send_back", P(org.c1), comment="请核实等次依据")
    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "较好"})
    engine.fire(case.id, "accept", SYSTEM_ACTOR)  # auto-accept as the scheduler would
    r = engine.fire(case.id, "approve", P(org.c2))
    assert r.to_state == "approved"

    final = engine.get_case(case.id)
    assert final.final and final.state == "approved"
    assert final.data["grade"] == "较好"
    assert final.data["summary"] == "补充后的小结"
    assert final.data["individual_indicators"][0]["actual"] == "230 卷"

    steps = [(h["trigger"], h["from"], h["to"], h["actor_role"]) for h in engine.history(case.id)]
    assert steps == [
        ("start", None, "summary", "system"),
        ("submit", "summary", "evaluation", "subject"),
        ("return_summary", "evaluation", "summary", "evaluator"),
        ("submit", "summary", "evaluation", "subject"),
        ("evaluate", "evaluation", "feedback", "evaluator"),
        ("object", "feedback", "evaluation", "subject"),
        ("evaluate", "evaluation", "feedback", "evaluator"),
        ("accept", "feedback", "approval", "subject"),
        ("send_back", "approval", "evaluation", "committee"),
        ("evaluate", "evaluation", "feedback", "evaluator"),
        ("accept", "feedback", "approval", "system"),
        ("approve", "approval", "approved", "committee"),
    ]
    assert final.version == len(steps)
    history = engine.history(case.id)
    assert history[2]["comment"] == "请补充量化指标"
    assert history[5]["data"] == {"objection_reason": "漏记了专项任务"}


def test_actions_list_what_the_caller_may_do(engine, org, regular):
    case = engine.start_case(FLOW, org.s1, period_key="2026-11")
    record, submit = engine.actions(case.id, P(org.s1))
    assert (record.trigger, record.to) == ("record_week", "summary")
    assert submit.trigger == "submit" and submit.label == "提交小结" and submit.to == "evaluation"
    assert submit.requires[0] == {"name": "summary", "type": "text", "required": True,
                                  "label": "个人小结", "max_length": 4000}
    assert submit.requires[1]["name"] == "individual_indicators"
    assert submit.requires[1]["required"] is False
    assert engine.actions(case.id, P(org.l1)) == []  # not the leader's turn yet
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "x"})
    actions = {a.trigger: a for a in engine.actions(case.id, P(org.l1))}
    assert set(actions) == {"evaluate", "return_summary"}
    grade = actions["evaluate"].requires[0]
    assert grade["values"] == ["好", "较好", "一般", "较差"] and grade["required"] is True
    assert actions["return_summary"].comment == "required"
    # Who evaluates whom: a section's staff are graded by the section's leader, not by the
    # head above (tests/test_actors.py covers the hierarchy).
    assert engine.actions(case.id, P(org.chief)) == []
    assert engine.actions(case.id, P(org.l2)) == []  # the leader of another unit may not
    assert engine.actions(case.id, P(org.s2)) == []


def test_role_refusals_say_which_rule(engine, org, regular, db):
    case = engine.start_case(FLOW, org.s1, period_key="2026-11")
    with pytest.raises(Forbidden) as exc:
        engine.fire(case.id, "submit", P(org.s2), data={"summary": "x"})
    assert exc.value.rule == "role" and "subject" in str(exc.value)
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "x"})
    for who in ("s2", "l2", "c1"):
        with pytest.raises(Forbidden) as exc:
            engine.fire(case.id, "evaluate", P(org.ids[who]), data={"grade": "好"})
        assert exc.value.rule == "role"
        assert "evaluator" in str(exc.value)
    with pytest.raises(Forbidden):
        engine.fire(case.id, "evaluate", SYSTEM_ACTOR, data={"grade": "好"})
    assert engine.get_case(case.id).version == 2  # nothing changed
    assert _count(db, HistoryRecord) == 2


def test_nobody_approves_their_own_case(engine, org, regular):
    # l1 leads SEC1 and is assessed there: l1 may not evaluate their own case.
    case = engine.start_case(FLOW, org.l1, period_key="2026-11")
    engine.fire(case.id, "submit", P(org.l1), data={"summary": "科长小结"})
    with pytest.raises(Forbidden) as exc:  # nobody is their own evaluator (评鉴人)
        engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "好"})
    assert exc.value.rule == "role"
    assert [a.trigger for a in engine.actions(case.id, P(org.l1))] == []
    engine.fire(case.id, "evaluate", P(org.chief), data={"grade": "好"})  # the leader above
    # c1 sits on the committee and is assessed in ORG: c1 may not approve their own case.
    own = engine.start_case(FLOW, org.c1, period_key="2026-11")
    engine.fire(own.id, "submit", P(org.c1), data={"summary": "委员小结"})
    engine.fire(own.id, "evaluate", P(org.chief), data={"grade": "较好"})
    engine.fire(own.id, "accept", P(org.c1))
    with pytest.raises(Forbidden) as exc:
        engine.fire(own.id, "approve", P(org.c1))
    assert exc.value.rule == "no_self_approval"
    assert "own case" in str(exc.value)


def test_required_fields_and_bad_data(engine, org, regular, db):
    case = engine.start_case(FLOW, org.s1, period_key="2026-11")
    with pytest.raises(FieldErrors) as exc:
        engine.fire(case.id, "submit", P(org.s1), data={})
    assert exc.value.errors == {"summary": ["is required"]}
    with pytest.raises(FieldErrors) as exc:
        engine.fire(case.id, "submit", P(org.s1), data={"summary": "   "})
    assert exc.value.errors == {"summary": ["must not be blank"]}
    with pytest.raises(FieldErrors) as exc:
        engine.fire(case.id, "submit", P(org.s1), data={"summary": "x", "grade": "好"})
    assert exc.value.errors == {"grade": ["is not a field of this action"]}
    with pytest.raises(FieldErrors) as exc:
        engine.fire(case.id, "submit", P(org.s1), data={"summary": "x" * 4001})
    assert "4000" in exc.value.errors["summary"][0]
    with pytest.raises(FieldErrors) as exc:
        engine.fire(case.id, "submit", P(org.s1),
                    data={"summary": "x", "individual_indicators": [{"indicator": 5}]})
    assert "individual_indicators.0.indicator" in exc.value.errors
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "x"})
    with pytest.raises(FieldErrors) as exc:
        engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "优秀"})
    assert exc.value.errors["grade"] == ["must be one of: 好, 较好, 一般, 较差"]
    with pytest.raises(ActionNotAllowed) as exc:
        engine.fire(case.id, "approve", P(org.c1))
    assert "not possible in state 'evaluation'" in str(exc.value)
    with pytest.raises(ActionNotAllowed) as exc:
        engine.fire(case.id, "archive", P(org.c1))
    assert "has no action 'archive'" in str(exc.value)
    with pytest.raises(NotFound):
        engine.fire(999, "submit", P(org.s1))
    assert engine.get_case(case.id).version == 2
    assert _count(db, HistoryRecord) == 2


def test_required_when_guard(engine, org, regular):
    case = engine.start_case(FLOW, org.s1, period_key="2026-11")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "x"})
    with pytest.raises(RuleViolation) as exc:
        engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "一般"})
    assert exc.value.rule == "required_when"
    assert "评鉴意见 (evaluation_comment) is required when 考核等次 (grade) is 一般" in str(exc.value)
    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "一般", "evaluation_comment": "加强学习"})
    assert engine.get_case(case.id).state == "feedback"


def test_quota_at_its_boundary(engine, org, regular, db):
    # The 机关's staff pool for 2026-11 (unit_depth: 1, ORG with SEC1 and SEC2): s1…s5 in
    # SEC1 and t1, t2 in SEC2 → 7 cases, limit max(floor(7 × 40%), 1) = 2.
    cases = [_to_approval(engine, org, f"s{i}", grade="好") for i in range(1, 6)]
    cases += [_to_approval(engine, org, f"t{i}", grade="好", leader="l2") for i in (1, 2)]
    engine.fire(cases[0], "approve", P(org.c1))  # s1, SEC1
    engine.fire(cases[5], "approve", P(org.c1))  # t1, SEC2: 2 of 2, at the limit, allowed
    # s2 is refused although SEC1 holds only one 好: the pool is the 机关, not the 科室.
    with pytest.raises(RuleViolation) as exc:
        engine.fire(cases[1], "approve", P(org.c1))
    err = exc.value
    assert err.rule == "quota"
    assert err.details["limit"] == 2 and err.details["used"] == 2 and err.details["asked"] == 1
    assert err.details["size"] == 7
    assert err.details["pool"] == {"unit": org.units["ORG"], "tier": "staff", "period": "2026-11"}
    assert "limit 2 (40% of 7, floor, at least 1), already used 2, asked 1" in str(err)
    assert engine.get_case(cases[1]).state == "approval"
    # Another pool is not affected: the deputy d1 is alone in the deputy pool → limit 1.
    d = _to_approval(engine, org, "d1", grade="好")
    engine.fire(d, "approve", P(org.c1))
    # Another period is another pool.
    other = _to_approval(engine, org, "s3", grade="好", period="2026-12")
    engine.fire(other, "approve", P(org.c1))


def test_bulk_quota_counts_the_whole_batch(engine, org, regular, db):
    cases = [_to_approval(engine, org, f"s{i}", grade="好") for i in range(1, 4)]
    cases += [_to_approval(engine, org, f"s{i}", grade="较好") for i in range(4, 6)]
    before = _count(db, HistoryRecord)
    with pytest.raises(RuleViolation) as exc:  # 3 好 asked, limit 2: refused as a whole
        engine.fire_bulk(cases, "approve", P(org.c1))
    assert exc.value.details["asked"] == 3 and exc.value.details["limit"] == 2
    assert _count(db, HistoryRecord) == before
    assert all(engine.get_case(c).state == "approval" for c in cases)

    result = engine.fire_bulk(cases[1:] + [999], "approve", P(org.c1))
    assert sorted(r.case_id for r in result.done) == sorted(cases[1:])
    assert isinstance(result.refused[999], NotFound)
    # The remaining 好 would be the third: refused on its own now.
    with pytest.raises(RuleViolation):
        engine.fire_bulk([cases[0]], "approve", P(org.c1))
    # A quota refusal in one pool refuses the whole batch, other pools included: d1 is
    # alone in the 机关's deputy pool (limit 1).
    fresh = _to_approval(engine, org, "d1", grade="好")
    with pytest.raises(RuleViolation):
        engine.fire_bulk([fresh, cases[0]], "approve", P(org.c1))
    assert engine.get_case(fresh).state == "approval"
    result = engine.fire_bulk([fresh], "approve", P(org.c1))
    assert [r.case_id for r in result.done] == [fresh] and not result.refused


def test_bulk_reports_per_item_refusals(engine, org, regular):
    ready = _to_approval(engine, org, "s1", grade="较好")
    early = engine.start_case(FLOW, org.s2, period_key="2026-11").id
    own = _to_approval(engine, org, "c2", grade="较好", leader="chief")
    result = engine.fire_bulk([ready, early, own], "approve", P(org.c2))
    assert [r.case_id for r in result.done] == [ready]
    assert isinstance(result.refused[early], ActionNotAllowed)
    assert isinstance(result.refused[own], Forbidden)
    assert result.refused[own].rule == "no_self_approval"


def test_stale_version_is_a_conflict_with_the_current_version(engine, org, regular, db):
    case = engine.start_case(FLOW, org.s1, period_key="2026-11")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "x"}, expected_version=1)
    with pytest.raises(Conflict) as exc:
        engine.fire(case.id, "return_summary", P(org.l1), comment="r", expected_version=1)
    assert exc.value.current_version == 2 and exc.value.to_dict()["current_version"] == 2
    assert engine.get_case(case.id).state == "evaluation"


def test_idempotent_replay(engine, org, regular, db):
    case = engine.start_case(FLOW, org.s1, period_key="2026-11")
    first = engine.fire(case.id, "submit", P(org.s1), data={"summary": "x"},
                        expected_version=1, idempotency_key="req-1")
    again = engine.fire(case.id, "submit", P(org.s1), data={"summary": "x"},
                        expected_version=1, idempotency_key="req-1")
    assert again.replayed and not first.replayed
    assert (again.to_state, again.version, again.history_seq) == (
        first.to_state, first.version, first.history_seq)
    assert engine.get_case(case.id).version == 2
    assert _count(db, HistoryRecord) == 2
    with pytest.raises(IdempotencyMismatch):
        engine.fire(case.id, "return_summary", P(org.l1), comment="r", idempotency_key="req-1")


def test_versions_pin_running_cases(engine, org, regular, db):
    source = REGULAR.read_text(encoding="utf-8")
    assert regular.created and regular.version == 1
    again = engine.publish(source + "\n# a comment changes nothing\n", "again.yaml")
    assert not again.created and again.version == 1
    old_case = engine.start_case(FLOW, org.s1, period_key="2026-11")

    v2_source = source.replace("label: {zh: 提交小结, en: Submit summary}",
                               "label: {zh: 提交个人小结, en: Submit summary}")
    v2_source = v2_source.replace(
        "requires: [summary]\n    accepts: [individual_indicators]",
        "requires: [summary, individual_indicators]")
    v2 = engine.publish(v2_source, "v2.yaml")
    assert v2.created and v2.version == 2
    new_case = engine.start_case(FLOW, org.s2, period_key="2026-11")
    assert engine.get_case(old_case.id).flow_version == 1
    assert new_case.flow_version == 2
    # The old case still follows version 1: indicators optional, old label.
    _record, old_submit = engine.actions(old_case.id, P(org.s1))
    assert old_submit.label == "提交小结"
    engine.fire(old_case.id, "submit", P(org.s1), data={"summary": "x"})
    with pytest.raises(FieldErrors) as exc:
        engine.fire(new_case.id, "submit", P(org.s2), data={"summary": "x"})
    assert "individual_indicators" in exc.value.errors
    # An explicit older version can still be started.
    assert engine.start_case(FLOW, org.s3, period_key="2026-11", version=1).flow_version == 1
    with pytest.raises(NotFound):
        engine.start_case(FLOW, org.s4, period_key="2026-11", version=7)


def test_start_case_checks(engine, org, regular, db):
    engine.start_case(FLOW, org.s1, period_key="2026-11")
    with pytest.raises(DuplicateCase) as exc:
        engine.start_case(FLOW, org.s1, period_key="2026-11")
    # As a 组织人事 clerk writes it: the period, the flow's title, and what cannot be done.
    assert exc.value.to_dict("zh")["message"] == (
        f"人员 {org.s1} 已有 2026-11 期的「平时考核」事项，不能重复发起。")
    assert exc.value.to_dict("en")["message"] == (
        f"person {org.s1} already has a Regular assessment case for 2026-11; "
        "it cannot be started again")
    assert exc.value.to_dict("en")["params"]["flow"] == FLOW  # the id, for programs
    with pytest.raises(FieldErrors) as exc:
        engine.start_case(FLOW, org.s1, period_key="2026-13")
    assert "looks like 2026-11" in exc.value.errors["period_key"][0]
    with pytest.raises(NotFound):
        engine.start_case(FLOW, 9999, period_key="2026-11")
    with pytest.raises(NotFound):
        engine.start_case("no-such-flow", org.s1)
    with pytest.raises(FieldErrors):
        engine.start_case(FLOW, org.s2, period_key="2026-11", data={"grade": "优"})
    assert _count(db, Case) == 1
    # Without a period key the current month (Asia/Shanghai) is used.
    case = engine.start_case(FLOW, org.s2)
    assert len(case.period_key) == 7 and case.period_key[4] == "-"


def test_quota_limit_arithmetic():
    from workflows.rules import quota_limit

    assert quota_limit(5, 0.4, "floor", 1) == 2  # 5 × 40 % is exactly 2
    assert quota_limit(1, 0.4, "floor", 1) == 1  # at least one
    assert quota_limit(5, 0.2, "ceil", 0) == 1  # exactly 1: ceil must not make it 2
    assert quota_limit(0, 0.2, "ceil", 0) == 0
    assert quota_limit(7, 0.15, "round", 0) == 1  # 1.05
    assert quota_limit(10, 0.15, "round", 0) == 2  # 1.5 rounds half up
    assert quota_limit(20, 0.15, "floor", 1) == 3


def test_quota_holds_in_a_flow_without_periods(engine, org, db):
    source = REGULAR.read_text(encoding="utf-8").replace("period: month", "period: none")
    source = source.replace("deadline: {working_days: 5, from: period_end}",
                            "deadline: {working_days: 5}")
    source = source.replace("deadline: {working_days: 10, from: quarter_end}",
                            "deadline: {working_days: 10}")
    source = "\n".join(line for line in source.splitlines() if not line.startswith("cycle:"))
    source = source.replace("flow: regular-assessment", "flow: once-assessment")
    engine.publish(source, "once.yaml")
    ids = []
    for who in ("s1", "s2", "s3", "s4", "s5"):  # one pool of 5: limit 2
        c = engine.start_case("once-assessment", org.ids[who])
        engine.fire(c.id, "submit", P(org.ids[who]), data={"summary": "x"})
        engine.fire(c.id, "evaluate", P(org.l1), data={"grade": "好"})
        engine.fire(c.id, "accept", P(org.ids[who]))
        ids.append(c.id)
    engine.fire(ids[0], "approve", P(org.c1))
    engine.fire(ids[1], "approve", P(org.c1))
    with pytest.raises(RuleViolation) as exc:
        engine.fire(ids[2], "approve", P(org.c1))
    assert exc.value.details["size"] == 5 and exc.value.details["used"] == 2


def test_bulk_quota_counts_cases_on_every_version(engine, org, regular, db):
    first = [_to_approval(engine, org, who, grade="好") for who in ("s1", "s2")]
    changed = REGULAR.read_text(encoding="utf-8").replace("title: {zh: 平时考核,",
                                                          "title: {zh: 平时考核（新）,")
    assert engine.publish(changed, "v2.yaml").version == 2
    second = [_to_approval(engine, org, who, grade="好") for who in ("s3", "s4")]
    second.append(_to_approval(engine, org, "s5", grade="较好"))
    with pytest.raises(RuleViolation) as exc:  # 4 好 in a pool of 5 (limit 2), two versions
        engine.fire_bulk(first + second, "approve", P(org.c1))
    assert exc.value.details["asked"] == 4 and exc.value.details["limit"] == 2


def test_weekly_records_add_up_in_the_months_case(engine, org, regular):
    case = engine.start_case(FLOW, org.s1, period_key="2026-11")
    for week, text in (("2026-W45", "完成档案审核 60 卷"), ("2026-W46", "起草考核方案")):
        engine.fire(case.id, "record_week", P(org.s1),
                    data={"weekly_records": [{"week": week, "content": text}]})
    current = engine.get_case(case.id)
    assert current.state == "summary"
    assert [r["week"] for r in current.data["weekly_records"]] == ["2026-W45", "2026-W46"]
    history = engine.history(case.id)
    assert [h["data"]["weekly_records"][0]["week"] for h in history[1:]] == [
        "2026-W45", "2026-W46"]
    assert engine.verify_history()[2] == []
