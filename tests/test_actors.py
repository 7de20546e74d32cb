"""Who acts on a case (workflows/actors.py): who evaluates whom, the next-actor check on
every move, start and cycle opening, and the stuck-case listing. On SQLite and PostgreSQL.

The bureau here (`bureau` fixture):

    B 局机关:  head (正职, leader: 主要负责人), vice (副职, leader: 副局长), bs (一般干部),
               hr (一般干部, group hr-office, committee on B)
      D1 一处: c1 (正职, leader), dp (副职, leader too: a 处室负责人), st (一般干部),
               vice holds leader on D1 as well: he is its 分管领导
      D2 二处: c2 (正职, leader), s2 (一般干部) — no 分管领导 assigned
"""

from __future__ import annotations

import datetime as dt
import logging
import re

import pytest
from sqlalchemy import delete, func, select

from workflows.access import load_viewer
from workflows.cycles import open_due_periods
from workflows.engine import Actor, Engine
from workflows.errors import DefinitionInvalid, Forbidden, NoActor
from workflows.models import Case, HistoryRecord, Notification, RoleAssignment
from workflows.org import add_person, add_unit, assign_role
from workflows.queries import CaseFilter
from workflows.spec import load_definition

from .conftest import REGULAR

FLOW = "regular-assessment"
PERIOD = "2026-11"
SOURCE = REGULAR.read_text(encoding="utf-8")
P = Actor.person


@pytest.fixture
def bureau(db) -> dict[str, int]:
    ids: dict[str, int] = {}
    with db.unit_of_work() as s:
        b = add_unit(s, "B", "局机关")
        d1 = add_unit(s, "D1", "一处", b)
        d2 = add_unit(s, "D2", "二处", b)
        ids.update(B=b.id, D1=d1.id, D2=d2.id)
        made = {}
        for code, unit, tier in [("head", b, "chief"), ("vice", b, "deputy"),
                                 ("bs", b, "staff"), ("hr", b, "staff"),
                                 ("c1", d1, "chief"), ("dp", d1, "deputy"),
                                 ("st", d1, "staff"), ("c2", d2, "chief"),
                                 ("s2", d2, "staff")]:
            made[code] = add_person(s, code.upper(), f"测试{code}", unit, tier)
            ids[code] = made[code].id
        for code, unit in [("head", b), ("vice", b), ("vice", d1), ("c1", d1), ("dp", d1),
                           ("c2", d2)]:
            assign_role(s, made[code], "leader", unit)
        assign_role(s, made["hr"], "committee", b)
        assign_role(s, made["hr"], "hr-office")
    return ids


def publish(engine: Engine, source: str = SOURCE):
    return engine.publish(source, "regular-assessment.yaml")


def with_fallback(fallback: str) -> str:
    return SOURCE.replace("fallback: {escalate: unit_above}", f"fallback: {fallback}")


def to_evaluation(engine: Engine, subject: int) -> int:
    case = engine.start_case(FLOW, subject, period_key=PERIOD)
    engine.fire(case.id, "submit", P(subject), data={"summary": "小结"})
    return case.id


def evaluators_of(engine: Engine, case_id: int, people: dict[str, int]) -> set[str]:
    """Who may evaluate the case, asked of the engine person by person."""
    return {code for code, pid in people.items() if code not in ("B", "D1", "D2")
            and "evaluate" in {a.trigger for a in engine.actions(case_id, P(pid))}}


def queues_holding(engine: Engine, case_id: int, people: dict[str, int]) -> set[str]:
    """Whose queue (待办) holds the case, asked of the queue's SQL."""
    out = set()
    for code, pid in people.items():
        if code in ("B", "D1", "D2"):
            continue
        with engine.db.unit_of_work(write=False) as s:
            viewer = load_viewer(s, pid)
        rows, _total = engine.queue(viewer, CaseFilter(per_page=200))
        if case_id in {r.id for r in rows}:
            out.add(code)
    return out


# --------------------------------------------------------------------------- who evaluates whom


@pytest.mark.parametrize(("subject", "expected"), [
    ("st", {"c1", "dp"}),      # 一般干部 by their 处室负责人 (正职, and a 副职 holding leader)
    ("dp", {"c1"}),            # 副职 by the 正职
    ("c1", {"vice"}),          # 处室正职 by the 分管领导, not by the 主要负责人 or his 副职
    ("c2", {"head", "vice"}),  # no 分管领导: the leaders of the unit above (escalate)
    ("s2", {"c2"}),
    ("vice", {"head"}),        # 领导班子成员 by the 主要负责人
    ("bs", {"head", "vice"}),  # the bureau's own staff by its leaders above their tier
], ids=["staff", "deputy", "chief-by-supervisor", "chief-escalates", "staff-d2",
        "bureau-deputy", "bureau-staff"])
def test_who_evaluates_whom_engine_and_queue_agree(engine, bureau, subject, expected):
    publish(engine)
    cid = to_evaluation(engine, bureau[subject])
    assert evaluators_of(engine, cid, bureau) == expected
    assert queues_holding(engine, cid, bureau) == expected  # one source of truth


def test_a_deputy_cannot_grade_their_chief(engine, bureau, db):
    publish(engine)
    cid = to_evaluation(engine, bureau["c1"])
    before = engine.get_case(cid).version
    with pytest.raises(Forbidden) as exc:
        engine.fire(cid, "evaluate", P(bureau["dp"]), data={"grade": "好"})
    assert exc.value.rule == "role" and "evaluator" in str(exc.value)
    for who in ("head", "c2", "st"):  # not the 主要负责人 either: the 分管领导 grades him
        with pytest.raises(Forbidden):
            engine.fire(cid, "evaluate", P(bureau[who]), data={"grade": "好"})
    assert engine.get_case(cid).version == before
    done = engine.fire(cid, "evaluate", P(bureau["vice"]), data={"grade": "好"})
    assert done.to_state == "feedback"
    assert engine.history(cid)[-1]["actor_role"] == "evaluator"


def test_a_fallback_group_evaluates_when_the_hierarchy_has_nobody(engine, bureau):
    publish(engine, with_fallback("{group: hr-office}"))
    cid = to_evaluation(engine, bureau["c2"])  # no 分管领导; no escalation in this version
    assert evaluators_of(engine, cid, bureau) == {"hr"}
    assert queues_holding(engine, cid, bureau) == {"hr"}


DISPATCH = REGULAR.with_name("frontline-dispatch.yaml")
NOMINATION = {"post_type": "第一书记", "receiving_unit": "青山镇石桥村",
              "term_start": "2026-10-01", "term_end": "2027-09-30",
              "nomination_reason": "基层工作经验丰富"}


def dispatch_st(engine: Engine, bureau: dict[str, int], db) -> tuple[int, int]:
    """Both flows published, and st dispatched (下沉一线) to a village whose 村党支部书记 (vh)
    hosts them: (the dispatch case, vh)."""
    publish(engine)
    engine.publish(DISPATCH.read_text(encoding="utf-8"), "frontline-dispatch.yaml")
    with db.unit_of_work() as s:
        village = add_unit(s, "V", "青山镇石桥村")
        vh = add_person(s, "VH", "村党支部书记", village, "chief").id
    dispatch = engine.start_case("frontline-dispatch", bureau["st"])
    engine.fire(dispatch.id, "nominate", P(bureau["c1"]), data=NOMINATION)
    engine.fire(dispatch.id, "approve_dispatch", P(bureau["hr"]),
                data={"dispatch_order": "组干〔2026〕12号", "host": vh})
    return dispatch.id, vh


def test_while_dispatched_the_receiving_side_evaluates(engine, bureau, db):
    """下沉一线: the dispatch case's host (接收方考核负责人) evaluates the regular assessment
    while the person is in post; the home unit's evaluators again once the term ends."""
    dispatch, vh = dispatch_st(engine, bureau, db)
    people = {**bureau, "vh": vh}
    cid = to_evaluation(engine, bureau["st"])
    assert evaluators_of(engine, cid, people) == {"vh"}
    assert queues_holding(engine, cid, people) == {"vh"}  # not c1's or dp's any more
    with pytest.raises(Forbidden):
        engine.fire(cid, "evaluate", P(bureau["c1"]), data={"grade": "好"})
    other = to_evaluation(engine, bureau["bs"])  # nobody else's evaluator changes
    assert evaluators_of(engine, other, people) == {"head", "vice"}
    # The term ends early: the home unit evaluates again.
    engine.fire(dispatch, "end_early", P(bureau["hr"]), comment="工作需要")
    assert evaluators_of(engine, cid, people) == {"c1", "dp"}
    assert queues_holding(engine, cid, people) == {"c1", "dp"}


def _notices(db, kind="home_unit"):
    with db.unit_of_work(write=False) as s:
        return s.execute(select(Notification.person_id, Notification.case_id,
                                Notification.title, Notification.body)
                         .where(Notification.kind == kind)
                         .order_by(Notification.id)).all()


def test_the_home_unit_is_told_the_grade_the_host_gave(engine, bureau, db):
    """派出单位知情: the host's evaluation of a dispatched person's regular assessment
    tells the evaluators of the home unit's hierarchy (c1 and dp for st in D1), in-app,
    with the grade; the home unit's own evaluation of others tells nobody."""
    _dispatch, vh = dispatch_st(engine, bureau, db)
    other = to_evaluation(engine, bureau["s2"])
    engine.fire(other, "evaluate", P(bureau["c2"]), data={"grade": "好"})
    assert _notices(db) == []  # the home unit evaluated: nobody to tell
    cid = to_evaluation(engine, bureau["st"])
    engine.fire(cid, "evaluate", P(vh), data={"grade": "一般",
                                              "evaluation_comment": "驻村出勤不足"})
    got = _notices(db)
    assert sorted(n.person_id for n in got) == sorted([bureau["c1"], bureau["dp"]])
    assert {n.case_id for n in got} == {cid}
    assert got[0].title == f"平时考核（下沉一线）：测试st {PERIOD} 由接收方评为 一般"
    assert "接收方考核负责人：村党支部书记" in got[0].body and "评鉴意见：驻村出勤不足" in got[0].body
    # an objection and a second evaluation by the host tell them again
    engine.fire(cid, "object", P(bureau["st"]), data={"objection_reason": "出勤有请假条"})
    engine.fire(cid, "evaluate", P(vh), data={"grade": "好"})
    assert [n.title.rsplit(" ", 1)[1] for n in _notices(db)] == ["一般", "一般", "好", "好"]


def test_inform_home_unit_needs_an_evaluator_role_with_while_dispatched(engine):
    src = SOURCE.replace("inform_home_unit: {role: evaluator}",
                         "inform_home_unit: {role: committee}")
    with pytest.raises(DefinitionInvalid) as exc:
        load_definition(src, "regular-assessment.yaml")
    assert "must be a resolve: evaluator role with while_dispatched" in str(exc.value)


# --------------------------------------------------------------------------- no case without an actor


def test_the_top_of_the_organisation_cannot_be_started(engine, bureau, db):
    publish(engine)
    with pytest.raises(NoActor) as exc:
        engine.start_case(FLOW, bureau["head"], period_key=PERIOD)
    assert exc.value.code == "no_actor" and exc.value.roles == ["evaluator"]
    assert "nobody evaluates" in str(exc.value)
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(Case)).scalar() == 0


def test_the_cycle_skips_the_top_and_logs_it(bureau, db, caplog):
    now = dt.datetime(2026, 12, 1, 0, 5, tzinfo=dt.UTC)  # 08:05 on 1 December, Shanghai
    engine = Engine(db, clock=lambda: now - dt.timedelta(days=10))
    publish(engine)
    with caplog.at_level(logging.WARNING, logger="civflow.cycles"):
        opened = open_due_periods(engine, now)
    assert opened == [(FLOW, "2026-12", 8)]  # nine people, the head skipped
    with db.unit_of_work(write=False) as s:
        subjects = set(s.execute(select(Case.subject_id)).scalars())
    assert bureau["head"] not in subjects and len(subjects) == 8
    (record,) = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert re.search(rf"person ids {bureau['head']}$", record.getMessage())


def test_a_move_into_a_state_nobody_can_act_at_is_refused(engine, bureau, db):
    publish(engine)
    cid = to_evaluation(engine, bureau["st"])
    engine.fire(cid, "evaluate", P(bureau["c1"]), data={"grade": "较好"})
    with db.unit_of_work() as s:  # nobody holds committee any more
        s.execute(delete(RoleAssignment).where(RoleAssignment.role == "committee"))
    before = engine.get_case(cid)
    with db.unit_of_work(write=False) as s:
        records = s.execute(select(func.count()).select_from(HistoryRecord)).scalar()
    with pytest.raises(NoActor) as exc:
        engine.fire(cid, "accept", P(bureau["st"]))
    assert exc.value.state == "approval" and exc.value.roles == ["committee"]
    assert "nobody could act at 审定 (approval)" in str(exc.value)
    after = engine.get_case(cid)
    assert (after.state, after.version) == (before.state, before.version) == ("feedback", 3)
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(HistoryRecord)).scalar() == records


def test_bulk_refuses_each_case_that_would_be_stuck(engine, bureau, db):
    publish(engine)
    a = engine.start_case(FLOW, bureau["st"], period_key=PERIOD)
    engine.fire(a.id, "submit", P(bureau["st"]), data={"summary": "x"})
    engine.fire(a.id, "evaluate", P(bureau["c1"]), data={"grade": "较好"})
    with db.unit_of_work() as s:
        s.execute(delete(RoleAssignment).where(RoleAssignment.role == "committee"))
    res = engine.fire_bulk([a.id], "accept", Actor(person_id=None, is_system=True))
    assert isinstance(res.refused[a.id], NoActor) and res.done == []
    assert engine.get_case(a.id).state == "feedback"


# --------------------------------------------------------------------------- the stuck listing


def admin_viewer(engine: Engine, person_id: int):
    with engine.db.unit_of_work(write=False) as s:
        v = load_viewer(s, person_id)
    return type(v)(v.person_id, (*v.assignments, ("admin", None, None)))


def test_cases_that_became_stuck_are_listed_and_counted(engine, bureau, db):
    publish(engine)
    stuck = to_evaluation(engine, bureau["vice"])  # the 主要负责人 evaluates the 副局长
    fine = to_evaluation(engine, bureau["st"])
    assert engine.count_stuck() == 0
    with db.unit_of_work() as s:  # the head leaves: his leader role is removed
        s.execute(delete(RoleAssignment).where(RoleAssignment.person_id == bureau["head"]))
    admin = admin_viewer(engine, bureau["bs"])
    rows, total = engine.list_cases(admin, CaseFilter(stuck=True))
    assert [r.id for r in rows] == [stuck] and total == 1
    rows, total = engine.list_cases(admin, CaseFilter(stuck=False))
    assert {r.id for r in rows} == {fine}
    assert engine.count_stuck() == 1
    assert evaluators_of(engine, stuck, bureau) == set()  # the engine agrees: nobody
    with db.unit_of_work(write=False) as s:
        leader = load_viewer(s, bureau["c1"])
    with pytest.raises(Forbidden) as exc:  # the listing is for admins and process owners
        engine.list_cases(leader, CaseFilter(stuck=True))
    assert exc.value.rule == "needs_admin"
    # A new head takes the role: the case is no longer stuck.
    with db.unit_of_work() as s:
        s.add(RoleAssignment(person_id=bureau["head"], unit_id=bureau["B"], role="leader"))
    assert engine.count_stuck() == 0


def test_a_single_holder_is_stuck_only_on_their_own_case(engine, bureau, db):
    """Nobody approves their own case: when the committee's last other member goes, the
    remaining member's own case is stuck, and the others' are not."""
    publish(engine)
    with db.unit_of_work() as s:
        s.add(RoleAssignment(person_id=bureau["bs"], unit_id=bureau["B"], role="committee"))
    cases = {}
    for code, by in (("hr", "head"), ("st", "c1")):
        cases[code] = to_evaluation(engine, bureau[code])
        engine.fire(cases[code], "evaluate", P(bureau[by]), data={"grade": "较好"})
        engine.fire(cases[code], "accept", P(bureau[code]))
    assert engine.count_stuck() == 0
    with db.unit_of_work() as s:
        s.execute(delete(RoleAssignment).where(RoleAssignment.person_id == bureau["bs"],
                                               RoleAssignment.role == "committee"))
    rows, _total = engine.list_cases(admin_viewer(engine, bureau["bs"]), CaseFilter(stuck=True))
    assert [r.id for r in rows] == [cases["hr"]]
    assert engine.count_stuck() == 1
    # Another case of hr's is refused at the step before: it would be stuck there.
    other = engine.start_case(FLOW, bureau["hr"], period_key="2026-12")
    engine.fire(other.id, "submit", P(bureau["hr"]), data={"summary": "x"})
    engine.fire(other.id, "evaluate", P(bureau["head"]), data={"grade": "较好"})
    with pytest.raises(NoActor):
        engine.fire(other.id, "accept", P(bureau["hr"]))
    assert engine.get_case(other.id).state == "feedback"


# --------------------------------------------------------------------------- the definition


@pytest.mark.parametrize(("role", "path", "message"), [
    ("{resolve: unit_role, role: committee, fallback: {group: hr-office}}",
     "roles.evaluator.fallback", "for resolve: evaluator only"),
    ("{resolve: evaluator, fallback: {}}", "roles.evaluator.fallback",
     "escalate: unit_above or group"),
    ("{resolve: evaluator, fallback: {escalate: root}}", "roles.evaluator.fallback.escalate",
     "unit_above"),
    ("{resolve: evaluator, fallback: {group: 'a b'}}", "roles.evaluator.fallback.group",
     "must start with a letter"),
    ("{resolve: evaluator, tiers: [chief, staff]}", "roles.evaluator.tiers",
     "each of chief, deputy, staff once"),
    ("{resolve: evaluator, fallback: {escalate: unit_above, colour: red}}",
     "roles.evaluator.fallback.colour", "nknown"),
])
def test_the_role_and_its_fallback_are_validated(role, path, message):
    text = re.sub(r"  evaluator:\n    resolve: evaluator\n(?:    .*\n)*",
                  f"  evaluator: {role}\n", SOURCE)
    assert text != SOURCE
    with pytest.raises(DefinitionInvalid) as exc:
        load_definition(text, "x.yaml")
    found = [p for p in exc.value.problems if p.path == path]
    assert found and message in found[0].message, exc.value.problems


def test_the_shipped_role_loads():
    spec = load_definition(SOURCE, "regular-assessment.yaml")
    r = spec.roles["evaluator"]
    assert (r.resolve, r.tiers, r.escalate, r.fallback_group) == (
        "evaluator", ("chief", "deputy", "staff"), True, None)
    assert {t.trigger for t in spec.transitions if "evaluator" in t.by} == {
        "evaluate", "return_summary"}


# --------------------------------------------------------------------------- read with the case


def test_the_organisation_read_with_the_case_answers_as_its_own_read(engine, bureau, db):
    """An action reads the organisation it asks about with the case (`actors.OrgNeeds`, in
    the same statement): for every trigger of the flows and every kind of
    subject — a dispatched one too — its answers are those of `Org.read_for`."""
    from workflows.actors import Org, action_needs
    from workflows.core import SYSTEM_ACTOR

    dispatch_st(engine, bureau, db)  # st is hosted: the along read names vh
    compared = 0
    for code in ("st", "dp", "c1", "c2", "s2", "vice", "bs"):
        cid = to_evaluation(engine, bureau[code])
        spec = engine.flow(FLOW).spec
        for trigger in sorted({t.trigger for t in spec.transitions}):
            needs = action_needs(spec, trigger)
            assert needs <= engine.kernel.versions.org_needs[trigger]  # of every flow

            def both(w, needs=needs, cid=cid, spec=spec):
                loaded = engine.kernel.load_for_action(w, cid, SYSTEM_ACTOR, None,
                                                       lock=False, needs=needs)
                row = loaded.row
                own = Org.read_for(w.conn, {row.unit_id: row.path},
                                   list(spec.roles.values()), [row.subject_id])
                return loaded, own

            loaded, own = db.run(both, write=False)
            row, along = loaded.row, loaded.org
            if not needs:  # nobody to resolve: nothing read along
                assert along is None
                continue
            for role in spec.roles.values():
                if role.resolve == "subject" or not along.covers(row.unit_id, [role]):
                    continue
                along.with_hosts([role], row.subject_id)
                assert along.holders(role, row.unit_id, row.tier, row.subject_id) == \
                    own.holders(role, row.unit_id, row.tier, row.subject_id), (code, trigger)
                compared += 1
    assert compared >= 7 * 2  # every subject, the evaluator and the next step's roles


def test_the_organisation_read_when_opening_a_case_answers_as_its_own_read(engine, bureau,
                                                                           db):
    """Opening a case reads the organisation its checks ask about with the person, the
    version and the unit (`actors.start_needs`, one statement): for every kind of subject —
    a dispatched one too — its answers are those of `Org.read_for`."""
    from workflows.actors import Org, start_needs

    _dispatch, vh = dispatch_st(engine, bureau, db)  # st is hosted: the read names vh
    spec = engine.flow(FLOW).spec
    needs = engine.kernel.versions.start_needs[FLOW]
    assert needs and start_needs(spec) <= needs
    compared = 0
    for code in ("st", "dp", "c1", "c2", "s2", "vice", "bs", "head"):
        def both(w, code=code):
            opening = engine.kernel.read_opening(w, FLOW, bureau[code], None, None)
            own = Org.read_for(w.conn, {opening.unit_id: opening.path},
                               list(spec.roles.values()), [bureau[code]])
            return opening, own

        opening, own = db.run(both, write=False)
        along = opening.org
        assert along is not None and opening.unit_id == own_unit(db, bureau[code])
        for role in spec.roles.values():
            if role.resolve == "subject" or not along.covers(opening.unit_id, [role]):
                continue
            along.with_hosts([role], bureau[code])
            assert along.holders(role, opening.unit_id, opening.tier, bureau[code]) == \
                own.holders(role, opening.unit_id, opening.tier, bureau[code]), (code, role)
            compared += 1
        if code == "st":
            assert along.holders(spec.roles["evaluator"], opening.unit_id, opening.tier,
                                 bureau["st"]) == [vh]
    assert compared >= 8


def own_unit(db, person_id: int) -> int:
    from workflows.models import Person

    with db.unit_of_work(write=False) as s:
        return s.get(Person, person_id).unit_id
