"""Person facts (workflows/facts.py): each kind added, listed and refused with its message;
the audit of every write; the CSV import, all rows or none; the snapshot rules read."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from workflows import facts
from workflows.errors import FieldErrors, ImportFailed, NotFound
from workflows.models import AnnualResult, FactAudit, Person

D = dt.date


def add(db, fact, person_id, by, **values):
    with db.unit_of_work() as s:
        return facts.add_fact(s, fact, person_id, values, by=by)


def refused(db, fact, person_id, by, **values) -> dict[str, list[str]]:
    with pytest.raises(FieldErrors) as exc:
        add(db, fact, person_id, by, **values)
    return exc.value.errors


def listed(db, kind, person_id):
    with db.unit_of_work(write=False) as s:
        return facts.list_facts(s, kind, person_id)


def audit_rows(db):
    with db.unit_of_work(write=False) as s:
        return list(s.execute(select(FactAudit).order_by(FactAudit.id)).scalars())


# --------------------------------------------------------------------------- each kind


def test_rank_history_closes_the_held_rank(db, org):
    with db.unit_of_work() as s:
        facts.add_rank(s, org.s1, "三级主任科员", D(2019, 3, 1), by=org.chief)
        facts.add_rank(s, org.s1, "二级主任科员", D(2022, 3, 1), by=org.chief)
    rows = listed(db, facts.RANK, org.s1)
    assert [(r["rank"], r["since"], r["until"]) for r in rows] == [
        ("三级主任科员", D(2019, 3, 1), D(2022, 3, 1)), ("二级主任科员", D(2022, 3, 1), None)]
    errors = refused(db, facts.RANK, org.s1, org.chief, rank="一级主任科员", since=D(2021, 1, 1))
    assert errors["since"] == [
        f"overlaps 三级主任科员 held from 2019-03-01 to 2022-03-01 (id {rows[0]['id']})",
        f"overlaps 二级主任科员 held from 2022-03-01 to now (id {rows[1]['id']})"]
    errors = refused(db, facts.RANK, org.s2, org.chief, rank="一级科员", since=D(2020, 1, 1),
                     until=D(2019, 1, 1))
    assert errors == {"until": ["until 2019-01-01 must be after since 2020-01-01"]}
    assert refused(db, facts.RANK, org.s2, org.chief, since="2020-13-01") == {
        "since": ["'2020-13-01' is not a date (YYYY-MM-DD)"]}
    assert refused(db, facts.RANK, org.s2, org.chief, since="2020-12-01") == {
        "rank": ["is required"]}


def test_annual_results_one_per_year(db, org):
    row = add(db, facts.ANNUAL, org.s1, org.chief, year=2024, grade="优秀")
    assert row["source"] == "manual"
    errors = refused(db, facts.ANNUAL, org.s1, org.chief, year=2024, grade="称职")
    assert errors == {"year": [f"person {org.s1} already has the annual result for 2024 "
                               f"(优秀, id {row['id']}); change that one instead"]}
    errors = refused(db, facts.ANNUAL, org.s1, org.chief, year=1900, grade="良好",
                     source="web")
    assert errors == {
        "year": ["1900 is not a year between 1949 and 2100"],
        "grade": ["'良好' is not a grade; the grades are 优秀, 称职, 基本称职, 不称职, 不定等次"],
        "source": ["'web' is not one of manual, import, flow"]}
    add(db, facts.ANNUAL, org.s1, org.chief, year=2023, grade="不定等次", source="flow")
    assert [(r["year"], r["grade"]) for r in listed(db, facts.ANNUAL, org.s1)] == [
        (2023, "不定等次"), (2024, "优秀")]


def test_sanctions_default_effect_months_and_end_dates(db, org):
    rows = [add(db, facts.SANCTION, org.s1, org.chief, kind=k, decided_on=D(2024, 1, 31))
            for k in ("警告", "记过", "记大过", "降级", "撤职", "诫勉")]
    assert [r["effect_months"] for r in rows] == [6, 12, 18, 24, 24, 6]
    assert rows[0]["effect_ends"] == D(2024, 7, 31)
    custom = add(db, facts.SANCTION, org.s2, org.chief, kind="记过", decided_on=D(2023, 12, 31),
                 effect_months=2)
    assert custom["effect_ends"] == D(2024, 2, 29)  # the 31st → the last day of February
    errors = refused(db, facts.SANCTION, org.s1, org.chief, kind="处分", decided_on=D(2024, 1, 1))
    assert errors == {"kind": [
        "'处分' is not a sanction; the kinds are 政务处分: 警告, 记过, 记大过, 降级, 撤职, 开除; "
        "党纪处分: 党内警告, 党内严重警告, 撤销党内职务, 留党察看, 开除党籍; "
        "组织处理: 停职检查, 调离岗位, 调整职务, 责令辞职, 免职, 降职; 诫勉: 诫勉"]}
    errors = refused(db, facts.SANCTION, org.s1, org.chief, kind="记过",
                     decided_on=D(2024, 1, 1), effect_months=-1)
    assert errors == {"effect_months": ["effect_months must not be negative (got -1)"]}


def test_party_discipline_and_organisational_measures(db, org):
    kinds = ("党内警告", "党内严重警告", "撤销党内职务", "留党察看", "停职检查", "调离岗位",
             "调整职务", "责令辞职", "免职", "降职")
    rows = [add(db, facts.SANCTION, org.s1, org.chief, kind=k, decided_on=D(2024, 3, 1))
            for k in kinds]
    assert [(r["kind"], r["category"], r["effect_months"]) for r in rows] == [
        ("党内警告", "党纪处分", 12), ("党内严重警告", "党纪处分", 18),
        ("撤销党内职务", "党纪处分", 24), ("留党察看", "党纪处分", 36),
        ("停职检查", "组织处理", 6), ("调离岗位", "组织处理", 12), ("调整职务", "组织处理", 12),
        ("责令辞职", "组织处理", 24), ("免职", "组织处理", 24), ("降职", "组织处理", 24)]
    # 留党察看 二年: the decision's own period (two years + two years after) is kept
    two = add(db, facts.SANCTION, org.s2, org.chief, kind="留党察看", decided_on=D(2024, 3, 1),
              effect_months=48)
    assert two["effect_ends"] == D(2028, 3, 1)
    # 开除党籍: no end; a number of months is refused rather than silently dropped
    expelled = add(db, facts.SANCTION, org.s3, org.chief, kind="开除党籍",
                   decided_on=D(2024, 3, 1))
    assert (expelled["effect_months"], expelled["effect_ends"], expelled["category"]) == (
        None, None, "党纪处分")
    errors = refused(db, facts.SANCTION, org.s3, org.chief, kind="开除党籍",
                     decided_on=D(2024, 3, 1), effect_months=60)
    assert errors == {"effect_months": [
        "开除党籍 (党纪处分) has no end to its effect period; leave effect_months empty"]}
    with db.unit_of_work() as s:
        snap = facts.person_facts(s, org.s3)
    assert snap.sanctions_in_effect(D(2099, 1, 1))[0].kind == "开除党籍"
    with db.unit_of_work() as s:
        snap = facts.person_facts(s, org.s1)
    assert [x.kind for x in snap.sanctions_in_effect(D(2026, 2, 28))] == [
        "撤销党内职务", "留党察看", "责令辞职", "免职", "降职"]


def test_investigations_one_open_at_a_time(db, org):
    with db.unit_of_work() as s:
        first = facts.open_investigation(s, org.s1, D(2024, 5, 1), by=org.chief)
    errors = refused(db, facts.INVESTIGATION, org.s1, org.chief, opened_on=D(2024, 6, 1))
    assert errors == {"closed_on": [f"person {org.s1} is already under investigation since "
                                    f"2024-05-01 (id {first['id']}); close that one first"]}
    with db.unit_of_work() as s:
        assert facts.person_facts(s, org.s1).under_investigation
        facts.close_investigation(s, first["id"], D(2024, 9, 1), by=org.chief)
        snap = facts.person_facts(s, org.s1)
    assert not snap.under_investigation
    assert snap.under_investigation_on(D(2024, 8, 31)) and not snap.under_investigation_on(
        D(2024, 9, 1))
    errors = refused(db, facts.INVESTIGATION, org.s1, org.chief, opened_on=D(2024, 6, 1),
                     closed_on=D(2024, 5, 1))
    assert errors == {"closed_on": ["closed_on 2024-05-01 is before opened_on 2024-06-01"]}


def test_exam_results(db, org):
    with db.unit_of_work() as s:
        row = facts.add_exam_result(s, org.s1, "政治理论考试", D(2024, 6, 1), True, score="88.5",
                                    by=org.chief)
    assert row["score"] == Decimal("88.5") and row["passed"] is True
    errors = refused(db, facts.EXAM, org.s1, org.chief, exam="政治理论考试",
                     taken_on=D(2024, 6, 1), passed="maybe", score="-3")
    assert errors == {"passed": ["'maybe' is not yes or no (true/false, 1/0, 是/否)"]}
    errors = refused(db, facts.EXAM, org.s1, org.chief, exam="政治理论考试",
                     taken_on=D(2024, 6, 1), passed="否", score="88.555")
    assert errors == {"score": ["88.555 has more than 2 decimal places"]}
    assert len(listed(db, facts.EXAM, org.s1)) == 1


def test_training_hours(db, org):
    with db.unit_of_work() as s:
        facts.add_training_hours(s, org.s1, 2024, "32.5", by=org.chief)
    errors = refused(db, facts.TRAINING, org.s1, org.chief, year=2025, hours=-1)
    assert errors == {"hours": ["hours must not be negative (got -1)"]}
    errors = refused(db, facts.TRAINING, org.s1, org.chief, year=2024, hours=3)
    assert errors["year"][0].startswith(f"person {org.s1} already has training hours for 2024")
    assert listed(db, facts.TRAINING, org.s1)[0]["hours"] == Decimal("32.5")


def test_commendations_and_unknown_fields(db, org):
    with db.unit_of_work() as s:
        facts.add_commendation(s, org.s1, "记二等功", D(2023, 12, 1), note="抗洪", by=org.chief)
    assert listed(db, facts.COMMENDATION, org.s1)[0]["note"] == "抗洪"
    assert refused(db, facts.COMMENDATION, org.s1, org.chief, decided_on=D(2023, 1, 1),
                   colour="red") == {
        "colour": ["is not a field of commendations; the fields are kind, decided_on, note"]}
    with pytest.raises(NotFound, match="person 99999 does not exist"):
        add(db, facts.COMMENDATION, 99999, org.chief, kind="嘉奖", decided_on=D(2023, 1, 1))
    with pytest.raises(NotFound, match="'awards' is not a kind of fact"):
        add(db, "awards", org.s1, org.chief)


# --------------------------------------------------------------------------- audit


def test_every_write_is_audited_with_before_and_after(db, org):
    row = add(db, facts.ANNUAL, org.s1, org.chief, year=2024, grade="称职")
    with db.unit_of_work() as s:
        facts.update_fact(s, facts.ANNUAL, row["id"], {"grade": "优秀"}, by=org.l1)
    with db.unit_of_work() as s:
        facts.delete_fact(s, facts.ANNUAL, row["id"], by=org.chief)
    rows = audit_rows(db)
    assert [(a.action, a.actor_id, a.table_name, a.row_id, a.person_id) for a in rows] == [
        ("create", org.chief, "annual_results", row["id"], org.s1),
        ("update", org.l1, "annual_results", row["id"], org.s1),
        ("delete", org.chief, "annual_results", row["id"], org.s1)]
    created, updated, deleted = rows
    assert created.before is None and created.after["grade"] == "称职"
    assert updated.before["grade"] == "称职" and updated.after["grade"] == "优秀"
    assert deleted.before == {"id": row["id"], "person_id": org.s1, "year": 2024,
                              "grade": "优秀", "source": "manual", "note": None}
    assert deleted.after is None
    assert all(a.at.tzinfo is not None for a in rows)


def test_a_refused_write_leaves_no_audit(db, org):
    refused(db, facts.ANNUAL, org.s1, org.chief, year=2024, grade="好")
    with db.unit_of_work() as s:
        row = facts.add_annual_result(s, org.s1, 2024, "称职", by=org.chief)
    with pytest.raises(FieldErrors), db.unit_of_work() as s:
        facts.update_fact(s, facts.ANNUAL, row["id"], {"year": "twenty"}, by=org.chief)
    assert [a.action for a in audit_rows(db)] == ["create"]


def test_closing_the_held_rank_is_audited(db, org):
    with db.unit_of_work() as s:
        first = facts.add_rank(s, org.s1, "一级科员", D(2018, 1, 1), by=org.chief)
        facts.add_rank(s, org.s1, "四级主任科员", D(2020, 1, 1), by=org.chief)
    actions = [(a.action, a.row_id, a.before and a.before["until"], a.after["until"])
               for a in audit_rows(db)]
    assert actions[1] == ("update", first["id"], None, "2020-01-01")


# --------------------------------------------------------------------------- snapshot


def test_person_facts_snapshot(db, org):
    with db.unit_of_work() as s:
        p = s.get(Person, org.s1)
        p.rank, p.rank_since = "三级主任科员", D(2018, 1, 1)
        assert (facts.person_facts(s, org.s1).rank, facts.person_facts(s, org.s1).rank_since) \
            == ("三级主任科员", D(2018, 1, 1))
        facts.add_rank(s, org.s1, "二级主任科员", D(2022, 7, 1), by=org.chief)
        facts.add_annual_result(s, org.s1, 2022, "称职", by=org.chief)
        facts.add_annual_result(s, org.s1, 2023, "优秀", by=org.chief)
        facts.add_sanction(s, org.s1, "警告", D(2024, 8, 31), by=org.chief)
        facts.add_sanction(s, org.s1, "记大过", D(2020, 2, 29), by=org.chief)
        facts.add_exam_result(s, org.s1, "政治理论考试", D(2024, 5, 1), False, by=org.chief)
        facts.add_exam_result(s, org.s1, "政治理论考试", D(2024, 11, 1), True, by=org.chief)
        facts.add_training_hours(s, org.s1, 2024, 40, by=org.chief)
        facts.add_commendation(s, org.s1, "嘉奖", D(2023, 12, 20), by=org.chief)
        snap = facts.person_facts(s, org.s1)
    assert (snap.rank, snap.rank_since) == ("二级主任科员", D(2022, 7, 1))
    assert snap.grades == {2022: "称职", 2023: "优秀"}
    assert [(x.kind, x.decided_on, x.effect_ends) for x in snap.sanctions] == [
        ("记大过", D(2020, 2, 29), D(2021, 8, 29)), ("警告", D(2024, 8, 31), D(2025, 2, 28))]
    assert [x.kind for x in snap.sanctions_in_effect(D(2025, 2, 27))] == ["警告"]
    assert snap.sanctions_in_effect(D(2025, 2, 28)) == ()
    assert snap.passed("政治理论考试") and not snap.passed("政治理论考试", D(2024, 10, 1))
    assert snap.training_hours == {2024: Decimal("40")}
    assert [c.kind for c in snap.commendations] == ["嘉奖"]
    assert not snap.under_investigation


# --------------------------------------------------------------------------- CSV import

CSV = """person_code,fact,year,date,until,value,number,passed,note
S1,rank,,2019-01-01,,三级主任科员,,,
S1,rank,,2021-01-01,,二级主任科员,,,晋升
S1,annual_result,2023,,,优秀,,,
S1,sanction,,2024-03-01,,记过,,,
S2,sanction,,2024-03-01,,警告,3,,
S2,investigation,,2024-05-01,2024-07-01,,,,
S2,exam,,2024-06-01,,政治理论考试,92,是,
S2,training,2024,,,,36.5,,
S2,commendation,,2023-12-01,,嘉奖,,,
S1,dispatch_outcome,,2025-01-20,,优秀,,是,第一书记 2024 年度
"""


def test_import_writes_every_row_and_audits_it(db, org):
    report = facts.import_facts(db, CSV, by=org.chief)
    assert report.rows == 10
    assert report.created == {"rank": 2, "annual_result": 1, "sanction": 2,
                              "investigation": 1, "exam": 1, "training": 1,
                              "commendation": 1, "training_record": 0,
                              "consequence": 0, "dispatch_outcome": 1}
    with db.unit_of_work(write=False) as s:
        s1, s2 = facts.person_facts(s, org.s1), facts.person_facts(s, org.s2)
        assert s.execute(select(AnnualResult.source)).scalar_one() == "import"
    assert (s1.rank, s1.rank_since) == ("二级主任科员", D(2021, 1, 1))
    assert s1.rank_history[0].until == D(2021, 1, 1)
    assert s1.sanctions[0].effect_ends == D(2025, 3, 1)
    assert s2.sanctions[0].effect_months == 3
    assert s2.investigations[0].closed_on == D(2024, 7, 1)
    assert s2.exams[0].score == Decimal("92") and s2.exams[0].passed
    (dispatch,) = s1.dispatch_outcomes
    assert (dispatch.grade, dispatch.decided_on, dispatch.promotion_priority,
            dispatch.commendation_proposed) == ("优秀", D(2025, 1, 20), True, False)
    rows = audit_rows(db)
    assert {a.action for a in rows} == {"import"}
    assert len(rows) == 11  # ten rows and the first rank closed by the second
    assert all(a.actor_id == org.chief for a in rows)


def test_import_with_bad_rows_writes_nothing(db, org):
    bad = CSV + ("S1,annual_result,2023,,,称职,,,\n"        # line 12: 2023 is on line 4
                 "NOBODY,commendation,,2023-01-01,,嘉奖,,,\n"
                 "S3,training,2024,,,,-2,,\n"
                 "S3,sanction,2024,2024-01-01,,记过,,,\n"
                 "S3,award,,,,,,,\n"
                 "S3,exam,,2024-01-01,,政治理论考试,,maybe,\n")
    with pytest.raises(ImportFailed) as exc:
        facts.import_facts(db, bad, by=org.chief)
    assert exc.value.errors == [
        (12, f"year (year): person {org.s1} already has the annual result for 2023 (优秀, "
             "id 1); change that one instead"),
        (13, "person 'NOBODY' does not exist"),
        (14, "number (hours): hours must not be negative (got -2)"),
        (15, "column year is not used by a sanction row (it uses value, date, number, note)"),
        (16, "fact 'award' is not one of rank, annual_result, sanction, investigation, exam, "
             "training, commendation, training_record, consequence, dispatch_outcome"),
        (17, "passed (passed): 'maybe' is not yes or no (true/false, 1/0, 是/否)"),
    ]
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(AnnualResult)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(FactAudit)).scalar_one() == 0


def test_import_header_is_checked(db, org):
    with pytest.raises(ImportFailed) as exc:
        facts.import_facts(db, "person_code,kind\nS1,x\n", by=org.chief)
    assert exc.value.errors == [
        (1, "missing column(s) fact"),
        (1, "unknown column(s) kind; the columns are person_code, fact, year, date, until, "
            "value, number, passed, note, organiser, mode")]
    with pytest.raises(ImportFailed, match="line 1: the file is empty"):
        facts.import_facts(db, "", by=org.chief)
