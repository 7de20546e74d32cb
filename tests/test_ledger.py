"""The ledger (台账) and statistics over the shipped regular assessment, on SQLite and PostgreSQL.

`build` drives a realistic month (2026-11, ten cases in every state, one overdue), the month
before (all approved) and the December before that, so that rates over a range, the quota per
pool and the year's 好 counts all have exact numbers to assert.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from openpyxl import load_workbook
from sqlalchemy import update

from workflows import ledger
from workflows.access import load_viewer
from workflows.engine import Actor
from workflows.errors import FieldErrors, NotFound
from workflows.models import Case

FLOW = "regular-assessment"
P = Actor.person
NOW = dt.datetime(2026, 12, 15, 8, 0, tzinfo=dt.UTC)
PAST = dt.datetime(2026, 12, 1, 1, 30, tzinfo=dt.UTC)  # 09:30 in Beijing
LATER = dt.datetime(2027, 1, 15, 1, 30, tzinfo=dt.UTC)
LEADER = {"l1": "chief", "c2": "chief", "t1": "l2", "t2": "l2"}  # default: l1
STEPS = ["summary", "evaluation", "feedback", "approval", "approved"]


def drive(engine, org, case_id: int, who: str, to: str, grade: str | None = None) -> None:
    """Move `who`'s case on from 个人小结 to state `to`."""
    pid = org.ids[who]
    for step in STEPS[1:STEPS.index(to) + 1]:
        if step == "evaluation":
            engine.fire(case_id, "submit", P(pid), data={"summary": "本月工作小结"})
        elif step == "feedback":
            data = {"grade": grade}
            if grade in ("一般", "较差"):
                data["evaluation_comment"] = "需改进"
            engine.fire(case_id, "evaluate", P(org.ids[LEADER.get(who, "l1")]), data=data)
        elif step == "approval":
            engine.fire(case_id, "accept", P(pid))
        else:
            engine.fire(case_id, "approve", P(org.c1))


PLAN = {
    "2026-11": [("s1", "approved", "好"), ("s2", "approved", "好"), ("s3", "approved", "较好"),
                ("s4", "approval", "一般"), ("s5", "summary", None), ("d1", "approved", "好"),
                ("l1", "evaluation", None), ("t1", "feedback", "较好"),
                ("t2", "approved", "好"), ("c2", "approved", "较好")],
    # Three staff of the 机关: limit max(floor(3 × 0.4), 1) = 1 好.
    "2026-10": [("s1", "approved", "好"), ("s2", "approved", "较好"), ("t2", "approved", "较好")],
    "2025-12": [("s1", "approved", "好")],  # another year
}


def build(engine, org, db) -> dict[str, int]:
    """The cases of the tests; returns the 2026-11 case ids by person.

    Each period's cases are all opened first (as the cycle does), so that a quota pool has
    its full size when the approvals come."""
    ids = {}
    for period, plan in PLAN.items():
        opened = {who: engine.start_case(FLOW, org.ids[who], period_key=period).id
                  for who, _to, _grade in plan}
        for who, to, grade in plan:
            drive(engine, org, opened[who], who, to, grade)
        if period == "2026-11":
            ids = opened
    with db.unit_of_work() as s:  # deadlines fixed against NOW, whatever day it is
        s.execute(update(Case).where(Case.id == ids["s5"]).values(deadline_at=PAST))
        s.execute(update(Case).where(Case.id.in_([ids["s4"], ids["l1"]]))
                  .values(deadline_at=LATER))
        s.execute(update(Case).where(Case.id == ids["t1"]).values(deadline_at=None))
    return ids


@pytest.fixture
def month(engine, org, regular, db):
    return build(engine, org, db)


@pytest.fixture
def spec(engine, regular):
    return engine.flow(FLOW).spec


@pytest.fixture
def as_(db, org):
    """as_("l1", ledger.rates, spec, period=…): call a ledger function as that person."""
    def call(who, fn, *args, **kw):
        with db.unit_of_work(write=False) as s:
            return fn(s, load_viewer(s, org.ids[who]), *args, **kw)
    return call


def test_state_counts_with_labels(month, spec, as_):
    out = as_("chief", ledger.state_counts, spec, period="2026-11")
    assert out["total"] == 10
    assert [(st["state"], st["label"], st["count"]) for st in out["states"]] == [
        ("summary", "个人小结", 1), ("evaluation", "领导评鉴", 1), ("feedback", "结果反馈", 1),
        ("approval", "审定", 1), ("approved", "已审定", 6)]
    assert [st["final"] for st in out["states"]] == [False] * 4 + [True]
    en = as_("chief", ledger.state_counts, spec, period="2026-11", lang="en")
    assert en["states"][0]["label"] == "Self summary"
    every = as_("chief", ledger.state_counts, spec)
    assert every["total"] == 14 and every["states"][-1]["count"] == 10


def test_rates_for_a_month_and_per_period(month, spec, as_):
    out = as_("chief", ledger.rates, spec, period="2026-11", now=NOW)
    assert {k: out[k] for k in ("total", "closed", "open", "completion_rate", "overdue",
                                "overdue_rate")} == {
        "total": 10, "closed": 6, "open": 4, "completion_rate": 0.6, "overdue": 1,
        "overdue_rate": 0.1}
    # Before the deadline nothing is overdue.
    early = as_("chief", ledger.rates, spec, period="2026-11", now=PAST - dt.timedelta(days=1))
    assert early["overdue"] == 0

    q4 = as_("chief", ledger.rates, spec, period_from="2026-10", period_to="2026-12", now=NOW)
    assert [(p["period"], p["total"], p["closed"], p["completion_rate"], p["overdue"],
             p["overdue_rate"]) for p in q4["by_period"]] == [
        ("2026-10", 3, 3, 1.0, 0, 0.0),
        ("2026-11", 10, 6, 0.6, 1, 0.1),
        ("2026-12", 0, 0, None, 0, None)]
    assert (q4["total"], q4["closed"], q4["completion_rate"], q4["overdue"],
            q4["overdue_rate"]) == (13, 9, 0.6923, 1, 0.0769)

    year = as_("chief", ledger.rates, spec, period_from="2026-01", period_to="2026-12", now=NOW)
    assert len(year["by_period"]) == 12 and year["total"] == 13
    every = as_("chief", ledger.rates, spec, now=NOW)
    assert [p["period"] for p in every["by_period"]] == ["2025-12", "2026-10", "2026-11"]


def test_visibility(month, spec, as_, org):
    def total(who, **kw):
        return as_(who, ledger.rates, spec, period="2026-11", now=NOW, **kw)

    s1 = total("s1")
    assert (s1["total"], s1["closed"], s1["overdue"]) == (1, 1, 0)
    s5 = total("s5")
    assert (s5["total"], s5["closed"], s5["overdue"]) == (1, 0, 1)
    l1 = total("l1")  # SEC1: s1…s5, d1 and l1 himself
    assert (l1["total"], l1["closed"], l1["overdue"]) == (7, 4, 1)
    assert total("l1", unit_id=org.units["SEC2"])["total"] == 0
    assert total("l2")["total"] == 2
    assert total("chief")["total"] == 10
    # The committee sees the subtree of its unit; nobody is left out for the owner.
    assert total("c1")["total"] == 10
    assert total("chief", unit_id=org.units["SEC1"])["total"] == 7

    people = as_("l1", ledger.ledger_rows, spec, period="2026-11", now=NOW)
    assert {r["person_code"] for r in people} == {"S1", "S2", "S3", "S4", "S5", "D1", "L1"}
    assert [r["person_code"] for r in as_("s1", ledger.ledger_rows, spec, now=NOW)] == \
        ["S1", "S1", "S1"]
    assert as_("s1", ledger.state_counts, spec, period="2026-11")["total"] == 1


def test_grade_distribution_against_the_quota(month, spec, as_):
    out = as_("chief", ledger.grade_distribution, spec, period="2026-11")
    assert out["field"] == "grade" and out["field_label"] == "考核等次"
    assert out["values"] == ["好", "较好", "一般", "较差"]
    assert out["quota"] == {"value": "好", "max_ratio": 0.4, "rounding": "floor", "min": 1,
                            "pool": ["unit", "tier", "period"], "unit_depth": 1,
                            "merge_units": [], "counted_states": ["approved"],
                            "trigger": "approve"}
    pools = [(p["unit"]["name"], p["tier"], p["period"], p["size"], p["ungraded"],
              p["graded"], p["approved"]["好"], p["quota"]) for p in out["pools"]]
    z = {"好": 0, "较好": 0, "一般": 0, "较差": 0}
    # One pool per tier of the 机关 (部机关 with 干部一科 and 干部二科: unit_depth 1).
    assert pools == [
        ("部机关", "chief", "2026-11", 1, 1, z, 0,
         {"size": 1, "limit": 1, "used": 0, "remaining": 1}),
        ("部机关", "deputy", "2026-11", 1, 0, {**z, "好": 1}, 1,
         {"size": 1, "limit": 1, "used": 1, "remaining": 0}),
        # 8 staff (c2; s1…s5; t1, t2): max(floor(8 × 0.4), 1) = 3, used by s1, s2 and t2.
        ("部机关", "staff", "2026-11", 8, 1, {**z, "好": 3, "较好": 3, "一般": 1}, 3,
         {"size": 8, "limit": 3, "used": 3, "remaining": 0}),
    ]
    assert out["pools"][2]["tier_label"] == "一般干部"
    assert out["totals"] == {"好": 4, "较好": 3, "一般": 1, "较差": 0}

    q4 = as_("chief", ledger.grade_distribution, spec, period_from="2026-10",
             period_to="2026-12")
    oct_staff = [p for p in q4["pools"] if p["period"] == "2026-10"
                 and p["unit"]["name"] == "部机关"]
    # 3 staff: floor(1.2) = 0, raised to the minimum of one.
    assert [(p["size"], p["quota"]["limit"], p["quota"]["used"]) for p in oct_staff] == [(3, 1, 1)]
    l2 = as_("l2", ledger.grade_distribution, spec, period="2026-11")
    # l2 sees his 科's share of the 机关's staff pool (t1, t2); the quota is the whole
    # pool's, as the rule counts it.
    assert [(p["unit"]["name"], p["tier"], p["size"], p["quota"]) for p in l2["pools"]] == [
        ("部机关", "staff", 2, {"size": 8, "limit": 3, "used": 3, "remaining": 0})]


def test_the_limit_follows_the_definition(engine, org, db, month, as_):
    """A flow with 20%, ceil, at least 0 and pools by unit only: the numbers follow."""
    from .conftest import REGULAR

    source = REGULAR.read_text(encoding="utf-8").replace(
        "max_ratio: 0.4, rounding: floor, min: 1,\n                pool: [unit, tier, period]",
        "max_ratio: 0.2, rounding: ceil, min: 0, pool: [unit]")
    assert "max_ratio: 0.2" in source
    engine.publish(source.replace("flow: regular-assessment", "flow: regular-two"), "two.yaml")
    spec = engine.flow("regular-two").spec
    out = as_("chief", ledger.grade_distribution, spec)
    assert out["pools"] == [] and out["quota"]["pool"] == ["unit"]
    assert ledger.quota_of(spec).limit(7) == 2  # ceil(1.4)


def test_good_counts_per_person_over_a_year(month, spec, as_):
    out = as_("chief", ledger.good_counts, spec, 2026)
    assert (out["field"], out["value"], out["year"]) == ("grade", "好", 2026)
    assert [(p["person"]["code"], p["person"]["name"], p["unit"]["name"], p["good"],
             p["results"]) for p in out["people"]] == [
        ("C2", "测试c2", "部机关", 0, 1),
        ("D1", "测试d1", "干部一科", 1, 1),
        ("S1", "测试s1", "干部一科", 2, 2),
        ("S2", "测试s2", "干部一科", 1, 2),
        ("S3", "测试s3", "干部一科", 0, 1),
        ("T2", "测试t2", "干部二科", 1, 2)]
    assert [p["good"] for p in as_("chief", ledger.good_counts, spec, 2025)["people"]] == [1]
    assert [p["person"]["code"] for p in as_("l1", ledger.good_counts, spec, 2026)["people"]] \
        == ["D1", "S1", "S2", "S3"]
    assert [(p["person"]["code"], p["good"]) for p in
            as_("s1", ledger.good_counts, spec, 2026)["people"]] == [("S1", 2)]


def test_ledger_rows(month, spec, as_, org):
    rows = as_("chief", ledger.ledger_rows, spec, period="2026-11", now=NOW)
    assert len(rows) == 10
    assert as_("chief", ledger.ledger_total, spec, period="2026-11") == 10
    by = {r["person_code"]: r for r in rows}
    s5 = by["S5"]
    assert (s5["state"], s5["state_label"], s5["grade"], s5["overdue"], s5["closed"]) == (
        "summary", "个人小结", None, True, False)
    assert s5["deadline_at"] == PAST
    s1 = by["S1"]
    assert (s1["case_id"], s1["person"], s1["unit"], s1["tier_label"], s1["period"],
            s1["state_label"], s1["grade"], s1["overdue"], s1["closed"]) == (
        month["s1"], "测试s1", "干部一科", "一般干部", "2026-11", "已审定", "好", False, True)
    assert s1["closed_at"] is not None and s1["updated_at"] is not None
    # Ordered by unit (ORG, SEC1, SEC2), period, person code.
    assert [r["person_code"] for r in rows] == [
        "C2", "D1", "L1", "S1", "S2", "S3", "S4", "S5", "T1", "T2"]
    page = as_("chief", ledger.ledger_rows, spec, period="2026-11", limit=3, offset=3, now=NOW)
    assert [r["person_code"] for r in page] == ["S1", "S2", "S3"]
    waiting = as_("chief", ledger.ledger_rows, spec, state="approval", now=NOW)
    assert [r["person_code"] for r in waiting] == ["S4"]


def test_bad_parameters(month, spec, as_):
    cases = [
        (dict(period="2026-13"), "period"),
        (dict(period="2026-11", period_from="2026-10", period_to="2026-12"), "period"),
        (dict(period_from="2026-10"), "period_to"),
        (dict(period_to="2026-10"), "period_from"),
        (dict(period_from="2026-12", period_to="2026-10"), "period_to"),
        (dict(period_from="2000-01", period_to="2026-10"), "period_to"),
        (dict(period="2026-Q4"), "period"),
    ]
    for kw, where in cases:
        with pytest.raises(FieldErrors) as exc:
            as_("chief", ledger.rates, spec, **kw)
        assert where in exc.value.errors, (kw, exc.value.errors)
    with pytest.raises(NotFound):
        as_("chief", ledger.rates, spec, unit_id=99999)
    with pytest.raises(FieldErrors) as exc:
        as_("chief", ledger.ledger_rows, spec, state="nope")
    assert "state" in exc.value.errors
    with pytest.raises(FieldErrors):
        as_("chief", ledger.good_counts, spec, 99)


def test_csv_export(month, spec, as_):
    rows = as_("chief", ledger.ledger_rows, spec, period="2026-11", now=NOW)
    data = ledger.to_csv(rows, ledger.LEDGER_COLUMNS)
    assert data.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert table[0] == ["事项编号", "人员编号", "姓名", "单位", "层级", "考核期", "状态", "等次",
                        "截止时间", "是否逾期", "办结时间", "更新时间"]
    assert len(table) == 11
    s5 = next(r for r in table if r[1] == "S5")
    assert s5[2:10] == ["测试s5", "干部一科", "一般干部", "2026-11", "个人小结", "",
                        "2026-12-01 09:30", "是"]  # Beijing time
    good = ledger.to_csv(ledger.good_rows(as_("chief", ledger.good_counts, spec, 2026)),
                         ledger.GOOD_COLUMNS).decode("utf-8-sig").splitlines()
    assert good[0] == "人员编号,姓名,单位,已审定结果数,“好”等次次数"
    assert good[3] == "S1,测试s1,干部一科,2,2"
    # A value that a spreadsheet would run as a formula stays text.
    unsafe = ledger.to_csv([{"person": "=1+1"}], [("person", "姓名")])
    assert unsafe.decode("utf-8-sig").splitlines()[1] == "'=1+1"


def test_xlsx_export(month, spec, as_):
    rows = as_("chief", ledger.ledger_rows, spec, period="2026-11", now=NOW)
    data = ledger.to_xlsx(rows + [{"person": "=1+1"}], ledger.LEDGER_COLUMNS, "台账 2026-11")
    ws = load_workbook(io.BytesIO(data)).active
    assert ws.title == "台账 2026-11"
    assert [c.value for c in ws[1]][:4] == ["事项编号", "人员编号", "姓名", "单位"]
    assert all(c.font.bold for c in ws[1])
    assert ws.freeze_panes == "A2"
    found = next(r for r in ws.iter_rows(min_row=2) if r[1].value == "S5")
    assert found[0].value == month["s5"] and isinstance(found[0].value, int)
    assert found[8].value == dt.datetime(2026, 12, 1, 9, 30)  # a real date, Beijing time
    assert found[8].is_date and found[9].value == "是"
    last = ws[ws.max_row]
    assert last[2].value == "=1+1" and last[2].data_type == "s"
    assert ws.column_dimensions["D"].width >= 10  # 干部一科: four wide characters

    dist = as_("chief", ledger.grade_distribution, spec, period="2026-11")
    sheet = load_workbook(io.BytesIO(ledger.to_xlsx(
        ledger.grade_rows(dist), ledger.grade_columns(dist), "等次分布"))).active
    assert [c.value for c in sheet[1]] == ["单位", "层级", "考核期", "参加人数", "好", "较好",
                                           "一般", "较差", "未定等次", "“好”限额", "已审定占用",
                                           "剩余名额"]
    assert sheet.max_row == 4  # the 机关's chief, deputy and staff pools
    assert [c.value for c in sheet[4]] == ["部机关", "一般干部", "2026-11", 8, 3, 3, 1, 0, 1,
                                           3, 3, 0]
