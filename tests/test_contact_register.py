"""The contact-point register (联系点台账), the monthly reports (信息月报) opened by a cycle
for the registered liaisons, the report lines of the score sheet, training records
(培训记录) with the derived yearly total, and `min_training_hours` — on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from workflows import contact_points as cp
from workflows import contact_register as reg
from workflows import facts
from workflows.access import load_viewer
from workflows.cycles import open_due_periods
from workflows.domain_rules.promotion import training_reasons
from workflows.engine import Actor, Engine
from workflows.errors import FieldErrors, Forbidden
from workflows.models import Case, ContactPoint, FactAudit, Person, Unit
from workflows.org import add_person

from .conftest import Clock, cst

REPORT = Path(__file__).resolve().parent.parent / "definitions" / "contact-point-report.yaml"
P = Actor.person
NOW = cst(2026, 2, 20, 9)


def _add(db, **values):
    with db.unit_of_work() as s:
        return reg.add_entry(s, values, by=None, now=NOW)


def _refused(db, **values) -> dict[str, list[str]]:
    with pytest.raises(FieldErrors) as info:
        _add(db, **values)
    return info.value.errors


def _entries(db) -> int:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(func.count()).select_from(ContactPoint)).scalar_one()


# --------------------------------------------------------------------------- register


def test_the_register_checks_unit_liaison_and_one_per_year(db, org):
    ids = org.ids
    made = _add(db, unit_code="SEC1", year=2026, liaison_id=ids["s1"], level="市级联系点",
                targets=[" 优化指标体系 ", "形成创新案例"])
    assert (made["unit"]["code"], made["liaison"]["id"], made["targets"]) == (
        "SEC1", ids["s1"], ["优化指标体系", "形成创新案例"])
    assert _refused(db, unit_code="SEC1", year=2026, liaison_id=ids["s2"]) == {
        "unit_code": [f"SEC1 is already a contact point in 2026 (entry {made['id']}); "
                      "change that one instead"]}
    assert _refused(db, unit_code="SEC2", year=2026, liaison_id=ids["s1"]) == {
        "liaison_id": [f"person {ids['s1']} (测试s1) is not of the contact-point unit; the "
                       "liaison files the unit's reports and must belong to it"]}
    with db.unit_of_work() as s:  # a second contact point of SEC1's subtree, same liaison
        sub = add_person(s, "SUB1", "测试sub1", s.get(Unit, org.units["SEC2"]), "staff")
    assert _refused(db, unit_code="NOPE", year=1800, liaison_id=10**6, targets=[""],
                    colour="red") == {
        "colour": ["is not a field of an entry; the fields are unit_code, year, liaison_id, "
                   "level, targets, outcomes, note"],
        "year": ["1800 is not a year between 1949 and 2100"],
        "unit_code": ["unit 'NOPE' does not exist"],
        "liaison_id": [f"person {10**6} does not exist"],
        "targets[0]": ["must be a non-blank text"]}
    assert _entries(db) == 1  # nothing written by a refusal
    _add(db, unit_code="SEC2", year=2026, liaison_id=sub.id)
    # The liaison changes: another person of the unit, not one already serving that year.
    with db.unit_of_work() as s:
        out = reg.change_entry(s, made["id"], {"liaison_id": ids["s2"], "outcomes": ["案例一"]},
                               by=ids["chief"], now=NOW)
    assert (out["liaison"]["id"], out["outcomes"], out["set_by"]) == (
        ids["s2"], ["案例一"], ids["chief"])
    with pytest.raises(FieldErrors) as info, db.unit_of_work() as s:
        reg.change_entry(s, made["id"], {"liaison_id": sub.id, "year": 2027}, by=None, now=NOW)
    assert info.value.errors == {
        "year": ["is not a field one may change; the fields are liaison_id, level, targets, "
                 "outcomes, note"],
        "liaison_id": [f"person {sub.id} (测试sub1) is not of the contact-point unit; the "
                       "liaison files the unit's reports and must belong to it"]}


def test_who_writes_and_who_reads_the_register(db, org):
    ids = org.ids
    with db.unit_of_work(write=False) as s:
        l1, l2, s1 = (load_viewer(s, ids[k]) for k in ("l1", "l2", "s1"))
    with pytest.raises(Forbidden):
        reg.create(db, l1, {"unit_code": "SEC1", "year": 2026, "liaison_id": ids["s1"]}, NOW)
    _add(db, unit_code="SEC1", year=2026, liaison_id=ids["s1"])
    with db.unit_of_work(write=False) as s:
        assert [e["unit"]["code"] for e in reg.entries(s, l1, 2026)] == ["SEC1"]
        assert reg.entries(s, l2, 2026) == []
        assert reg.entries(s, l1, 2025) == []
        with pytest.raises(Forbidden):
            reg.entries(s, s1, 2026)


# --------------------------------------------------------------------------- reports


@pytest.fixture
def reports(db, org):
    """The report flow published on 20 February 2026 (a controlled clock), SEC1 a contact
    point of 2026 with s1 as liaison; c1 holds the group hr-office."""
    clock = Clock(NOW)
    eng = Engine(db, clock=clock)
    eng.publish(REPORT.read_text(encoding="utf-8"), str(REPORT))
    _add(db, unit_code="SEC1", year=2026, liaison_id=org.ids["s1"])
    return eng, clock


def test_the_cycle_opens_one_report_per_registered_contact_point(db, org, reports):
    eng, clock = reports
    clock.now = cst(2026, 3, 1, 8)
    assert open_due_periods(eng) == [("contact-point-report", "2026-03", 1)]
    with db.unit_of_work(write=False) as s:
        (case,) = s.execute(select(Case)).scalars()
    assert (case.subject_id, case.unit_id, case.state, case.period_key) == (
        org.ids["s1"], org.units["SEC1"], "report", "2026-03")
    # The 2026 register opens nothing in 2027: a contact point is registered per year.
    clock.now = cst(2027, 1, 1, 8)
    assert open_due_periods(eng) == [("contact-point-report", "2027-01", 0)]
    # An inactive liaison is not opened for.
    with db.unit_of_work() as s:
        s.get(Person, org.ids["s1"]).active = False
    clock.now = cst(2027, 2, 1, 8)
    _add(db, unit_code="SEC1", year=2027, liaison_id=org.ids["s2"])
    assert open_due_periods(eng) == [("contact-point-report", "2027-02", 1)]


def test_report_figures_and_the_lines_they_give_the_sheet(db, org, reports):
    eng, clock = reports
    s1, hr = P(org.ids["s1"]), P(org.ids["c1"])
    cases = {}
    for key, opens in (("2026-03", (2026, 3, 1, 8)), ("2026-04", (2026, 4, 1, 8)),
                       ("2026-05", (2026, 5, 1, 8))):
        clock.now = cst(*opens)
        open_due_periods(eng)
        with db.unit_of_work(write=False) as s:
            cases[key] = s.execute(select(Case.id).where(Case.period_key == key)).scalar_one()
    # March: due at the end of the 5th working day after 31 March (7 April): on time.
    clock.now = cst(2026, 4, 3, 10)
    eng.fire(cases["2026-03"], "submit", s1, data={"progress": "三月进展"})
    clock.now = cst(2026, 4, 7, 10)
    eng.fire(cases["2026-03"], "approve", hr, data={"quality": "较好"})
    # April: filed in May after its deadline; 较差 needs a comment.
    clock.now = cst(2026, 5, 20, 10)
    eng.fire(cases["2026-04"], "submit", s1, data={"progress": "四月进展"})
    eng.fire(cases["2026-04"], "approve", hr,
             data={"quality": "较差", "review_comment": "逾期且内容空泛"})
    # May: not filed yet.
    with db.unit_of_work(write=False) as s:
        figures = reg.report_figures(s, [org.units["SEC1"], org.units["SEC2"]], 2026)
        assert figures[org.units["SEC1"]] == {
            "reports": 3, "submitted": 2, "on_time": 1, "reviewed": 2, "on_time_rate": 0.3333,
            "quality": {"好": 0, "较好": 1, "一般": 0, "较差": 1}, "quality_points": 2,
            "quality_max": 6}
        assert figures[org.units["SEC2"]]["reports"] == 0
        assert reg.report_figures(s, [org.units["SEC1"]], 2025)[org.units["SEC1"]][
            "reports"] == 0
    typed = [{"item": "台账管理", "score": "30", "max": "40"}]
    with db.unit_of_work() as s:
        sheet, _ = cp.put_sheet(s, "SEC1", 2026, {"items": typed, "score": 30}, by=None,
                                now=clock.now)
    assert [(i["item"], i["score"], i["max"]) for i in sheet["items"]] == [
        ("台账管理", Decimal("30"), Decimal("40")),
        ("信息月报按时报送", Decimal("1"), Decimal("3")),
        ("信息月报质量", Decimal("2"), Decimal("6"))]
    assert sheet["score"] == Decimal("33")
    # A total alone gets no lines; a typed line with a derived name is refused.
    with db.unit_of_work() as s:
        sheet, _ = cp.put_sheet(s, "SEC1", 2026, {"score": 80}, by=None, now=clock.now)
    assert (sheet["score"], sheet["items"]) == (Decimal("80"), [])
    with pytest.raises(FieldErrors) as info, db.unit_of_work() as s:
        cp.put_sheet(s, "SEC1", 2026, {"items": [
            *typed, {"item": "信息月报按时报送", "score": 3, "max": 3}]}, by=None, now=clock.now)
    assert info.value.errors == {"items[1].item": [
        "'信息月报按时报送' is derived from the monthly reports (信息月报); leave it out, it is "
        "added by itself"]}
    with db.unit_of_work(write=False) as s:
        viewer = load_viewer(s, org.ids["chief"])
        board = cp.scoreboard(s, viewer, 2026)
    assert board["sheets"][0]["score"] == Decimal("80")  # the refusal changed nothing
    assert board["sheets"][0]["reports"]["on_time"] == 1


# --------------------------------------------------------------------------- training


def test_training_records_are_checked_and_the_yearly_total_is_derived(db, org):
    pid, by = org.ids["s1"], org.ids["chief"]
    with db.unit_of_work() as s:
        facts.add_training_hours(s, pid, 2025, "10", note="未分项", by=by)
        first = facts.add_training_record(s, pid, "任职培训班", "40.5", dt.date(2025, 6, 30),
                                          "线下", organiser="市委党校", by=by)
        facts.add_training_record(s, pid, "网络专题", 8, dt.date(2025, 12, 31), "online", by=by)
        facts.add_training_record(s, pid, "新年第一课", 2, dt.date(2026, 1, 1), "网络培训", by=by)
    assert first["kind"] == "offline"  # 线下 is stored as its code
    bad = {"course": " ", "hours": "0", "taken_on": "2025-02-30", "kind": "函授"}
    with pytest.raises(FieldErrors) as info, db.unit_of_work() as s:
        facts.add_fact(s, facts.TRAINING_RECORD, pid, bad | {"taken_on": "2025-02-01"}, by=by)
    assert info.value.errors == {
        "course": ["is required"], "hours": ["must be more than 0 (got 0)"],
        "kind": ["'函授' is not a kind of training; the kinds are online (线上) and offline "
                 "(线下)"]}
    with pytest.raises(FieldErrors) as info, db.unit_of_work() as s:
        facts.add_fact(s, facts.TRAINING_RECORD, pid, {
            "course": "x", "hours": "1.25", "taken_on": "2025-02-30", "kind": "online"}, by=by)
    assert info.value.errors == {"taken_on": ["'2025-02-30' is not a date (YYYY-MM-DD)"]}
    with db.unit_of_work() as s:  # an update is checked and normalised the same way
        changed = facts.update_fact(s, facts.TRAINING_RECORD, first["id"], {"kind": "线上"},
                                    by=by)
        assert changed["kind"] == "online"
    with db.unit_of_work(write=False) as s:
        snap = facts.person_facts(s, pid)
        audit = s.execute(select(FactAudit.action, FactAudit.table_name)
                          .where(FactAudit.person_id == pid).order_by(FactAudit.id)).all()
    total = snap.training_totals[2025]
    assert (total.records, total.record_hours, total.legacy_hours, total.hours) == (
        2, Decimal("48.5"), Decimal("10"), Decimal("58.5"))
    assert snap.training_hours == {2025: Decimal("58.5"), 2026: Decimal("2")}
    assert audit[-1] == ("update", "training_records") and len(audit) == 5


def test_min_training_hours_reads_the_derived_total_of_the_year_before(db, org):
    pid = org.ids["s1"]
    with db.unit_of_work() as s:
        facts.add_training_hours(s, pid, 2025, "30", by=None)
        facts.add_training_record(s, pid, "专题班", 50, dt.date(2025, 9, 1), "offline", by=None)
        facts.add_training_record(s, pid, "专题班", 50, dt.date(2026, 9, 1), "offline", by=None)
        snap = facts.person_facts(s, pid)
    on = dt.date(2026, 12, 21)
    assert training_reasons(snap, {}, on) == []  # not asked for
    assert training_reasons(snap, {"min_training_hours": 80}, on) == []  # 50 + 30
    (reason,) = training_reasons(snap, {"min_training_hours": 90}, on)
    assert (reason.code, reason.message) == (
        "training", "needs 90.0 training hours in 2025, has 80.0 (1 records)")
    assert reason.details == {"year": 2025, "needed": 90.0, "has": 80.0, "records": 1,
                              "legacy_hours": 30.0}
