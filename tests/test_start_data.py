"""Start data (issue 11 item 1): a case carries at start only what its definition accepts at
start (`start: {accepts, by}`), from a starter it names; rules and effects read a value only
as written by an entitled writer; `audit-case-data` finds the values nobody entitled wrote.

"Legacy" cases are made the way the engine made them before start data was restricted (any
field, recorded as given by `starter`), by putting the old behaviour back for one call."""

from __future__ import annotations

import datetime as dt
import json
from contextlib import contextmanager

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from service.cli import main
from workflows import facts, forms, ledger
from workflows.access import load_viewer
from workflows.engine import SYSTEM_ACTOR, Actor
from workflows.errors import DefinitionInvalid, FieldErrors, Forbidden, RuleViolation
from workflows.kernel import Kernel
from workflows.models import Case, HistoryRecord, Unit
from workflows.org import assign_role
from workflows.spec import load_definition

from .conftest import REGULAR
from .test_promotion import FLOW as PROMOTION
from .test_promotion import PROMOTION as PROMOTION_FILE
from .test_promotion import _higher_rank_facts, _to_approval

P = Actor.person
PREFILL = {"override_reason": "本人认为应当破格", "rank_effective": "2020-01-01",
           "votes_for": 99, "votes_cast": 99, "vetting_opinion": "优秀",
           "personal_matters_checked": True}


def _counts(db) -> tuple[int, int]:
    with db.unit_of_work(write=False) as s:
        return (s.execute(select(func.count()).select_from(Case)).scalar_one(),
                s.execute(select(func.count()).select_from(HistoryRecord)).scalar_one())


@contextmanager
def _old_engine(monkeypatch):
    """Start cases as the engine did before: any declared field, by anyone, as `starter`."""
    with monkeypatch.context() as m:
        m.setattr(forms, "load_start", lambda spec, _schema, data: forms.load(
            forms.build_schema(spec.fields, (), tuple(spec.fields)), data))
        m.setattr(Kernel, "_start_role", lambda *a: "starter")
        yield


@pytest.fixture
def promotion(engine):
    engine.publish(PROMOTION_FILE.read_text(encoding="utf-8"), str(PROMOTION_FILE))
    return engine


# --------------------------------------------------------------------------- refusing at start


def test_a_subject_cannot_prefill_the_protected_fields_of_their_promotion(promotion, db, org):
    with pytest.raises(FieldErrors) as exc:
        promotion.start_case(PROMOTION, org.s1, actor=P(org.s1), data=PREFILL)
    errors = exc.value.errors
    assert sorted(errors) == sorted(PREFILL)
    assert errors["override_reason"] == [
        "cannot be given when a case starts: it is set later by 审批通过 (approve) by committee"]
    assert errors["votes_for"] == ["cannot be given when a case starts: it is set later by "
                                   "录入推荐票 (record_votes) by hr"]
    assert errors["rank_effective"] == ["cannot be given when a case starts: it is set later "
                                        "by 备案 (file) by hr"]
    assert _counts(db) == (0, 0)  # nothing stored
    # Not even the scheduler or a leader may: the shipped definition accepts nothing at start.
    for actor in (SYSTEM_ACTOR, P(org.l1)):
        with pytest.raises(FieldErrors):
            promotion.start_case(PROMOTION, org.s1, actor=actor, data={"round": "2026-1"})
    with pytest.raises(FieldErrors) as exc:
        promotion.start_case(PROMOTION, org.s1, data={"no_such": 1})
    assert exc.value.errors == {"no_such": ["is not a field of flow rank-promotion"]}
    assert _counts(db) == (0, 0)


def test_a_grade_given_at_start_is_refused_and_never_counted(engine, regular, db, org):
    with pytest.raises(FieldErrors) as exc:
        engine.start_case("regular-assessment", org.s1, actor=P(org.s1), period_key="2026-11",
                          data={"grade": "好"})
    assert exc.value.errors == {"grade": [
        "cannot be given when a case starts: it is set later by 评鉴定等 (evaluate) by evaluator"]}
    assert _counts(db) == (0, 0)
    engine.start_case("regular-assessment", org.s1, actor=P(org.s1), period_key="2026-11")
    with db.unit_of_work(write=False) as s:
        dist = ledger.grade_distribution(s, load_viewer(s, org.chief),
                                         engine.flow("regular-assessment").spec,
                                         period="2026-11")
    assert dist["totals"]["好"] == 0 and dist["pools"][0]["ungraded"] == 1


ROUND_AT_START = """
flow: round-plan
title: {zh: 批次动议, en: Round plan}
fields:
  round: {type: text, max_length: 32}
  note: {type: text}
roles:
  committee: {resolve: unit_role, role: committee}
start: {accepts: [round], by: [leader, process_owner]}
states:
  - {name: plan, actor: committee}
  - {name: done, final: true}
transitions:
  - {trigger: finish, from: plan, to: done, by: committee, accepts: [note]}
"""


def test_start_data_only_from_the_starters_the_definition_names(engine, db, org):
    engine.publish(ROUND_AT_START, "round.yaml")
    # a leader above the subject: accepted, and the start record says through which role
    case = engine.start_case("round-plan", org.s1, actor=P(org.l1), data={"round": "2026-1"})
    assert case.data == {"round": "2026-1"}
    assert engine.history(case.id)[0]["actor_role"] == "leader"
    # the subject, the scheduler, a leader on their own case: not entitled, nothing stored
    for who, actor in (("s2", P(org.s2)), ("s3", SYSTEM_ACTOR), ("l1", P(org.l1))):
        with pytest.raises(Forbidden) as exc:
            engine.start_case("round-plan", org.ids[who], actor=actor, data={"round": "x"})
        assert exc.value.rule == "start_data"
        assert "may be given only by leader, process_owner" in str(exc.value)
    # a field the block does not list: refused with the step that sets it
    with pytest.raises(FieldErrors) as exc:
        engine.start_case("round-plan", org.s2, actor=P(org.l1), data={"note": "x"})
    assert exc.value.errors == {"note": [
        "cannot be given when a case starts: it is set later by finish (finish) by committee"]}
    assert _counts(db) == (1, 1)
    # a process owner (organisation-wide role) may; without data anyone entitled to start may
    with db.unit_of_work() as s:
        from workflows.models import Person
        assign_role(s, s.get(Person, org.c2), "process_owner", s.get(Unit, org.units["ORG"]))
    owned = engine.start_case("round-plan", org.s2, actor=P(org.c2), data={"round": "2026-2"})
    assert engine.history(owned.id)[0]["actor_role"] == "process_owner"
    plain = engine.start_case("round-plan", org.s3, actor=P(org.s3))
    assert plain.data == {} and engine.history(plain.id)[0]["actor_role"] == "starter"


@pytest.mark.parametrize("block, path, message", [
    ("{accepts: [rounds], by: leader}", "start.accepts[0]",
     "field 'rounds' is not declared under fields (did you mean 'round'?)"),
    ("{accepts: [round]}", "start", "start.accepts needs start.by"),
    ("{accepts: [round], by: [leader, boss]}", "start.by[1]", "unknown role 'boss'"),
    ("{accepts: [round, round], by: leader}", "start.accepts", "fields must not repeat"),
    ("{accepts: [round], by: leader, when: now}", "start.when", "unknown key"),
    ("[round]", "start", "must be a mapping such as"),
])
def test_the_start_block_is_validated(block, path, message):
    source = ROUND_AT_START.replace("start: {accepts: [round], by: [leader, process_owner]}",
                                    f"start: {block}")
    with pytest.raises(DefinitionInvalid) as exc:
        load_definition(source, "round.yaml")
    assert [(p.path, message in p.message) for p in exc.value.problems] == [(path, True)]


def test_the_shipped_definitions_accept_nothing_at_start():
    for name in ("regular-assessment", "annual-assessment", "rank-promotion",
                 "frontline-dispatch"):
        spec = load_definition((REGULAR.parent / f"{name}.yaml").read_text(encoding="utf-8"),
                               name)
        assert (spec.start.accepts, spec.start.by) == ((), ()), name


# --------------------------------------------------------------------------- legacy values


def test_prefilled_values_of_an_old_case_reach_no_rule_or_effect(promotion, db, org,
                                                                  monkeypatch):
    """三三制 (a 较高职级: 四级调研员): s1 takes the one 排头兵 place; s2's case was opened (before this release) with
    an override_reason and a rank_effective of its own choosing."""
    for who in ("s1", "s2"):
        _higher_rank_facts(db, org, who)
    with _old_engine(monkeypatch):
        case = promotion.start_case(PROMOTION, org.s2, actor=P(org.s2), data={
            "override_reason": "本人认为应当破格", "rank_effective": "2020-01-01"})
    assert case.data["override_reason"] == "本人认为应当破格"  # what the old engine stored
    first = _to_approval(promotion, org, "s1", target="四级调研员")
    second = case.id  # through the same steps as s1's, by the same people
    promotion.fire(second, "propose", P(org.l1),
                   data={"target_rank": "四级调研员", "category": "排头兵", "round": "2026-1"})
    promotion.fire(second, "record_votes", P(org.c1), data={"votes_cast": 20, "votes_for": 16})
    promotion.fire(second, "confirm", P(org.c2), data={"decision_date": "2026-03-02"})
    promotion.fire(second, "pass", P(org.c2), data={"vetting_opinion": "德才表现好",
                                                     "personal_matters_checked": True})
    promotion.fire(second, "notice_passed", SYSTEM_ACTOR)
    promotion.fire(first, "approve", P(org.c1))
    with pytest.raises(RuleViolation) as exc:
        promotion.fire(second, "approve", P(org.c1))
    assert "give override_reason to exceed it" in str(exc.value)
    assert promotion.get_case(second).state == "approval"
    # The committee's own reason counts; the filing date is the filing day, not 2020.
    promotion.fire(second, "approve", P(org.c1), data={"override_reason": "经党组研究同意"})
    promotion.fire(second, "file", P(org.c1))
    with db.unit_of_work(write=False) as s:
        rank = facts.list_facts(s, "rank_history", org.s2)[-1]
    assert rank["rank"] == "四级调研员" and rank["since"] != dt.date(2020, 1, 1)


def test_the_audit_lists_values_no_entitled_writer_wrote(engine, regular, db, org,
                                                        monkeypatch):
    with _old_engine(monkeypatch):
        old = engine.start_case("regular-assessment", org.s1, actor=P(org.s1),
                                period_key="2026-11", data={"grade": "好", "summary": "x"})
    clean = engine.start_case("regular-assessment", org.s2, period_key="2026-11")
    engine.fire(clean.id, "submit", P(org.s2), data={"summary": "本月小结"})
    with db.unit_of_work() as s:  # behind the engine's back
        s.execute(update(Case).where(Case.id == clean.id)
                  .values(data={"summary": "本月小结", "grade": "好"}))
    checked, found = engine.audit_case_data()
    assert checked == 2
    assert [(f.case_id, f.field, f.seq) for f in found] == [
        (old.id, "grade", 1), (old.id, "summary", 1), (clean.id, "grade", None)]
    assert found[0].reason == ("given when the case started (by starter); the definition "
                               "does not accept it at start")
    assert found[2].reason == "in the case's data, but no history record wrote it"
    # A value an entitled step rewrote is clean again: the leader's grade replaces 好.
    engine.fire(old.id, "submit", P(org.s1), data={"summary": "本月小结"})
    engine.fire(old.id, "evaluate", P(org.l1), data={"grade": "较好"})
    assert [(f.case_id, f.field) for f in engine.audit_case_data()[1]] == [
        (clean.id, "grade")]
    assert engine.audit_case_data("no-such-flow") == (0, [])
    # The same through the command line: one line per value, exit status 1.
    result = CliRunner().invoke(main, ["audit-case-data", "--db", db.url, "--json"])
    assert result.exit_code == 1, result.output
    line = json.loads(result.stdout.splitlines()[0])
    assert (line["case_id"], line["field"], line["flow"]) == (clean.id, "grade",
                                                              "regular-assessment")
    assert "1 value(s) in 1 of 2 cases" in result.stderr


def test_the_audit_of_clean_data_is_clean(engine, regular, db, org):
    case = engine.start_case("regular-assessment", org.s1, period_key="2026-11")
    engine.fire(case.id, "submit", P(org.s1), data={"summary": "小结"})
    engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "好"})
    result = CliRunner().invoke(main, ["audit-case-data", "--db", db.url])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "case data clean: 1 cases"


# --------------------------------------------------------------------------- over HTTP


def test_http_the_subject_prefilling_their_promotion_gets_422_and_nothing_is_stored(api, db,
                                                                                  engine):
    engine.publish(PROMOTION_FILE.read_text(encoding="utf-8"), str(PROMOTION_FILE))
    before = _counts(db)
    r = api.post("s1", "/api/v1/cases", json={"flow": PROMOTION, "subject_id": api.org.s1,
                                              "data": PREFILL})
    assert r.status_code == 422 and r.json["code"] == "invalid_data"
    assert sorted(r.json["fields"]) == sorted(PREFILL)
    assert r.json["fields"]["personal_matters_checked"] == [
        "cannot be given when a case starts: it is set later by Pass vetting (pass) by committee"]
    r = api.post("s1", "/api/v1/cases", json={"flow": "regular-assessment",
                                              "subject_id": api.org.s1,
                                              "period_key": "2026-11", "data": {"grade": "好"}})
    assert r.status_code == 422 and list(r.json["fields"]) == ["grade"]
    assert _counts(db) == before
    r = api.get("l1", "/api/v1/ledger/grades?flow=regular-assessment&period=2026-11")
    assert r.status_code == 200 and r.json["totals"]["好"] == 0
    # Without data the subject starts their case as before.
    r = api.post("s1", "/api/v1/cases", json={"flow": PROMOTION, "subject_id": api.org.s1})
    assert r.status_code == 201 and r.json["data"] == {}
