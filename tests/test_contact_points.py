"""The contact-point score sheet (考核联系点成绩单) and its effect on the annual 优秀 ratio, on
SQLite and PostgreSQL: checking, ranks, visibility, CSV import, the statistics beside each
sheet, the HTTP API with its downloads, and `excellent_quota` reading the `raised` flag.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from workflows import contact_points as cp
from workflows.access import Viewer, load_viewer
from workflows.engine import Actor
from workflows.errors import FieldErrors, Forbidden, ImportFailed, NotFound, RuleViolation
from workflows.models import ContactPointScore, Unit
from workflows.org import add_person, assign_role

from .conftest import Clock, cst
from .test_annual import (
    ANNUAL,
    GOOD_YEAR,
    SOURCE,
    _doc,
    _dump,
    _excellent_to_approval,
    _fill_sec1,
    _regular_year,
    _rule,
)

P = Actor.person
URL = "/api/v1/contact-points"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NOW = cst(2027, 1, 10, 9)
ITEMS = [{"item": "台账管理", "score": "38.5", "max": "40"},
         {"item": "信息月报", "score": 27, "max": 30},
         {"item": "创新案例", "score": "29.5", "max": "30"}]  # 95.0


def _owner(db, org) -> Viewer:
    """A process owner (流程管理员) in ORG, as the engine sees them."""
    with db.unit_of_work() as s:
        root = s.get(Unit, org.units["ORG"])
        p = add_person(s, "OWNER", "测试owner", root, "staff")
        assign_role(s, p, "process_owner", root)
        org.ids["owner"] = p.id
    return _viewer(db, org.ids["owner"])


def _viewer(db, person_id: int) -> Viewer:
    with db.unit_of_work(write=False) as s:
        return load_viewer(s, person_id)


def _put(db, code: str, year: int, values: dict, by: int | None = None):
    with db.unit_of_work() as s:
        return cp.put_sheet(s, code, year, values, by=by, now=NOW)


def _count(db) -> int:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(func.count()).select_from(ContactPointScore)).scalar_one()


def _errors(values: dict) -> dict[str, list[str]]:
    with pytest.raises(FieldErrors) as info:
        cp.check_sheet(values)
    return info.value.errors


# --------------------------------------------------------------------------- checking


def test_a_sheet_is_its_items_and_their_total():
    clean = cp.check_sheet({"items": ITEMS, "raised": True, "note": " 评估排名第一 "})
    assert clean["score"] == Decimal("95.0") and clean["raised"] is True
    assert clean["note"] == "评估排名第一"
    assert [i["item"] for i in clean["items"]] == ["台账管理", "信息月报", "创新案例"]
    assert cp.check_sheet({"items": ITEMS, "score": "95.00"})["score"] == Decimal("95")
    alone = cp.check_sheet({"score": 88})
    assert alone == {"score": Decimal(88), "items": None, "raised": False, "note": None}


def test_bad_sheets_are_refused_with_the_condition_and_the_numbers():
    assert _errors({"items": ITEMS, "score": 90}) == {"score": [
        "90 is not the sum of the items' scores, 95.0 (3 items); give the items' total or "
        "leave score out"]}
    assert _errors({}) == {"score": ["is required when no items are given (give the total, "
                                     "or the items and their scores)"]}
    errors = _errors({"items": [
        {"item": "  ", "score": 1, "max": 5},
        {"item": "台账", "score": 6, "max": 5},
        {"item": "月报", "score": -1, "max": 5},
        {"item": "案例", "score": "1.234", "max": 5},
        {"item": "台账", "score": 1, "max": 0},
        {"item": "调研", "score": 1},
        {"item": "x", "score": 1, "max": 2, "weight": 3}]})
    assert errors == {
        "items[0].item": ["is required and must not be blank"],
        "items[1].score": ["6 is more than the item's max 5"],
        "items[2].score": ["must not be negative (got -1)"],
        "items[3].score": ["1.234 has more than 2 decimal places"],
        "items[4].item": ["'台账' is already items[1]; each item once per sheet"],
        "items[4].max": ["must be more than 0"],
        "items[5].max": ["is required"],
        "items[6].weight": ["is not a field of an item; the fields are item, score, max"]}
    assert _errors({"score": "abc", "raised": "yes", "rank": 1}) == {
        "score": ["'abc' is not a number"], "raised": ["'yes' is not true or false"],
        "rank": ["is not a field of a score sheet; the fields are score, items, raised, note"]}
    assert _errors({"score": 10000}) == {"score": ["must be at most 9999.99 (got 10000)"]}


def test_put_creates_replaces_and_records_who_and_when(db, org):
    with pytest.raises(NotFound, match="unit 'NOPE' does not exist"):
        _put(db, "NOPE", 2026, {"score": 1})
    with pytest.raises(FieldErrors) as info:
        _put(db, "SEC1", 1800, {"score": 1})
    assert info.value.errors == {"year": ["1800 is not a year between 1949 and 2100"]}
    with pytest.raises(FieldErrors):
        _put(db, "SEC1", 2026, {"items": ITEMS, "score": 1})
    assert _count(db) == 0  # nothing written by a refusal

    out, created = _put(db, "SEC1", 2026, {"items": ITEMS, "raised": True}, by=org.c1)
    assert created and out["score"] == Decimal("95.0") and out["set_by"] == org.c1
    assert out["set_at"] == NOW and out["unit"]["code"] == "SEC1"
    assert out["items"][0] == {"item": "台账管理", "score": Decimal("38.5"),
                               "max": Decimal("40")}
    out, created = _put(db, "SEC1", 2026, {"score": "80.5"}, by=org.c2)
    assert not created and out["items"] == [] and out["score"] == Decimal("80.5")
    assert out["raised"] is False and out["set_by"] == org.c2  # replaced whole
    _put(db, "SEC1", 2025, {"score": 70})
    assert _count(db) == 2
    with db.unit_of_work() as s:
        cp.delete_sheet(s, "SEC1", 2025)
    with db.unit_of_work() as s, pytest.raises(NotFound,
                                               match="'SEC1' has no contact-point score "
                                                     "sheet for 2025"):
        cp.delete_sheet(s, "SEC1", 2025)
    assert _count(db) == 1


def test_only_admins_and_process_owners_write(db, org):
    staff, leader = _viewer(db, org.s1), _viewer(db, org.l1)
    for who in (staff, leader):
        with pytest.raises(Forbidden) as info:
            cp.set_sheet(db, who, "SEC1", 2026, {"score": 90}, NOW)
        assert info.value.rule == "needs_admin_or_process_owner"
    out, created = cp.set_sheet(db, _owner(db, org), "SEC1", 2026, {"score": 90}, NOW)
    assert created and out["set_by"] == org.ids["owner"] and out["rank"] == 1


# --------------------------------------------------------------------------- ranks


def test_ranks_share_ties_and_readers_see_their_subtree(db, org):
    with db.unit_of_work() as s:
        sec3 = add_person(s, "L3", "测试l3", s.get(Unit, org.units["SEC2"]), "chief")
        assign_role(s, sec3, "committee", s.get(Unit, org.units["SEC2"]))
    _put(db, "SEC1", 2026, {"score": 95})
    _put(db, "SEC2", 2026, {"score": "95.00"})
    _put(db, "ORG", 2026, {"score": 90, "raised": True})
    _put(db, "ORG", 2025, {"score": 99})
    with db.unit_of_work(write=False) as s:
        ranked = cp.ranked(s, [2026])[2026]
        assert [(r.code, r.rank, r.of) for r in ranked] == [
            ("SEC1", 1, 3), ("SEC2", 1, 3), ("ORG", 3, 3)]

        def seen(person_id):
            return [(x["unit"]["code"], x["rank"])
                    for x in cp.sheets(s, load_viewer(s, person_id), 2026)]

        assert seen(org.chief) == [("SEC1", 1), ("SEC2", 1), ("ORG", 3)]  # leader of ORG
        assert seen(org.l1) == [("SEC1", 1)]
        assert seen(org.l2) == [("SEC2", 1)]
        assert seen(sec3.id) == [("SEC2", 1)]  # committee of SEC2
        assert [x["unit"]["code"] for x in cp.sheets(s, load_viewer(s, org.chief), 2026,
                                                     org.units["SEC2"])] == ["SEC2"]
        with pytest.raises(Forbidden) as info:
            cp.require_reader(load_viewer(s, org.s1))
        assert info.value.rule == "contact_points_read"


# --------------------------------------------------------------------------- CSV import

GOOD_CSV = """\ufeffunit_code,year,item,score,max,raised,note
SEC1,2026,台账管理,38.5,40,是,评估第一
SEC1,2026,信息月报,27,30,,
SEC1,2026,创新案例,29.5,30,,
SEC2,2026,,88,,否,
ORG,2026,台账管理,30,40,,
ORG,2026,,30,,,
"""


def test_csv_import_all_or_nothing(db, org):
    owner = _owner(db, org)
    _put(db, "SEC2", 2026, {"score": 50, "raised": True})
    report = cp.import_csv(db, owner, GOOD_CSV, NOW)
    assert report == cp.ImportReport(rows=6, sheets=3, created=2, replaced=1)
    with db.unit_of_work(write=False) as s:
        got = {x["unit"]["code"]: (x["score"], x["raised"], len(x["items"]), x["note"], x["rank"])
               for x in cp.sheets(s, owner, 2026)}
    assert got == {"SEC1": (Decimal("95.0"), True, 3, "评估第一", 1),
                   "SEC2": (Decimal("88"), False, 0, None, 2),
                   "ORG": (Decimal("30"), False, 1, None, 3)}

    bad = ("unit_code,year,item,score,max,raised,note\n"
           "SEC1,2027,台账管理,41,40,,\n"      # line 2: score above max
           "SEC1,2027,信息月报,27,30,是,\n"
           "SEC1,2027,,60,,否,\n"               # line 4: total ≠ sum; raised differs
           "NOPE,2027,,10,,,\n"                 # line 5: no such unit
           "SEC2,20x7,,10,,,\n"                 # line 6: not a year
           "SEC2,2027,,10,5,,\n")               # line 7: max without item
    with pytest.raises(ImportFailed) as info:
        cp.import_csv(db, owner, bad, NOW)
    assert info.value.errors == [
        (2, "SEC1 2027: items[0].score: 41 is more than the item's max 40"),
        (4, "raised is 否 here but 是 on line 3 for SEC1 2027"),
        (5, "unit 'NOPE' does not exist"),
        (6, "year '20x7' is not a year"),
        (7, "max is given without an item; a line without item gives the sheet's total "
            "score")]
    with pytest.raises(ImportFailed) as info:
        cp.import_csv(db, owner, "unit_code,year,item,score,max\nSEC1,2027,a,10,20\n"
                                 "SEC1,2027,,11,\n", NOW)
    assert info.value.errors == [
        (3, "SEC1 2027: score: 11 is not the sum of the items' scores, 10 (1 item); give "
            "the items' total or leave score out")]
    with pytest.raises(ImportFailed) as info:
        cp.import_csv(db, owner, "unit,year,score\n", NOW)
    assert info.value.errors == [
        (1, "missing column(s) unit_code"),
        (1, "unknown column(s) unit; the columns are unit_code, year, item, score, max, "
            "raised, note")]
    with db.unit_of_work(write=False) as s:  # nothing of 2027 was written
        assert cp.sheets(s, owner, 2027) == []
    with pytest.raises(Forbidden):
        cp.import_csv(db, _viewer(db, org.l1), GOOD_CSV, NOW)


# --------------------------------------------------------------------------- statistics


def _week(n: int) -> dict:
    return {"weekly_records": [{"week": f"W{i}", "content": "完成台账整理"} for i in range(n)]}


def build(engine, org, db, clock: Clock) -> None:
    """October 2026 in SEC1 (s1 on time with 好, s2 late with 较好, s3 still open) and SEC2
    (t1 on time with 好, t2 still open); s1's annual 优秀 proposal reads the year's regular
    results; score sheets for SEC1 (95, raised) and ORG (90). The 好 quota pools the 机关's
    five staff (limit 2), so s1 and t1 both pass."""
    engine.publish(SOURCE, str(ANNUAL))
    clock.now = cst(2026, 11, 2, 9)  # Monday
    ids = {w: engine.start_case("regular-assessment", org.ids[w], period_key="2026-10").id
           for w in ("s1", "s2", "s3", "t1", "t2")}
    for who, leader, weeks in (("s1", "l1", 2), ("s2", "l1", 1), ("t1", "l2", 1)):
        for _ in range(weeks):
            engine.fire(ids[who], "record_week", P(org.ids[who]), data=_week(1))
        engine.fire(ids[who], "submit", P(org.ids[who]), data={"summary": "十月小结"})
        if who != "s2":
            engine.fire(ids[who], "evaluate", P(org.ids[leader]), data={"grade": "好"})
            engine.fire(ids[who], "accept", P(org.ids[who]))
            engine.fire(ids[who], "approve", P(org.c1))
    clock.now = cst(2026, 11, 20, 9)  # s2's evaluation was due 9 November: late
    engine.fire(ids["s2"], "evaluate", P(org.l1), data={"grade": "较好"})
    engine.fire(ids["s2"], "accept", P(org.s2))
    engine.fire(ids["s2"], "approve", P(org.c1))
    annual = engine.start_case("annual-assessment", org.s1, period_key="2026")
    engine.fire(annual.id, "submit", P(org.s1), data={"summary": "年度述职"})
    engine.fire(annual.id, "record_votes", P(org.l1))
    engine.fire(annual.id, "propose_excellent", P(org.l1), data={"grade": "优秀"})
    _put(db, "SEC1", 2026, {"items": ITEMS, "raised": True})
    _put(db, "ORG", 2026, {"score": 90})


SEC1_STATS = {
    "cases": 3, "closed": 2, "completion_rate": 0.6667, "on_time": 1, "on_time_rate": 0.5,
    "approved": 2, "good": 1, "good_share": 0.5, "good_value": "好", "good_max_ratio": 0.4,
    "good_limit": 1, "weekly_records": 3, "weekly_records_per_case": 1.0,
    "people_with_results": 2, "results_used": 1, "results_used_rate": 0.5}
ORG_STATS = {
    "cases": 5, "closed": 3, "completion_rate": 0.6, "on_time": 2, "on_time_rate": 0.6667,
    "approved": 3, "good": 2, "good_share": 0.6667, "good_value": "好", "good_max_ratio": 0.4,
    "good_limit": 2, "weekly_records": 4, "weekly_records_per_case": 0.8,
    "people_with_results": 3, "results_used": 1, "results_used_rate": 0.3333}


@pytest.fixture
def clock():
    return Clock(cst(2026, 11, 2, 9))


def test_statistics_beside_each_sheet(engine, org, db, regular, clock):
    engine.clock = clock
    build(engine, org, db, clock)
    owner = _owner(db, org)
    spec = engine.flow("regular-assessment").spec
    with db.unit_of_work(write=False) as s:
        specs = {vid: c.spec for vid, c in engine.all_flows(s).items()}
        board = cp.scoreboard(s, owner, 2026, spec, specs=specs)
        assert [(x["unit"]["code"], x["rank"], x["raised"]) for x in board["sheets"]] == [
            ("SEC1", 1, True), ("ORG", 2, False)]
        stats = {x["unit"]["code"]: x["statistics"] for x in board["sheets"]}
        assert stats == {"SEC1": SEC1_STATS, "ORG": ORG_STATS}
        # The leader of SEC1 sees SEC1's sheet, with the same numbers.
        mine = cp.scoreboard(s, load_viewer(s, org.l1), 2026, spec, specs=specs)
        assert [(x["unit"]["code"], x["statistics"]) for x in mine["sheets"]] == [
            ("SEC1", SEC1_STATS)]
        # Without the versions, results used is not computed; another year has no cases.
        plain = cp.statistics(s, owner, spec, 2026, [org.units["SEC1"]])[org.units["SEC1"]]
        assert plain["people_with_results"] is None and plain["results_used_rate"] is None
        assert plain["cases"] == 3
        empty = cp.statistics(s, owner, spec, 2025, [org.units["SEC1"]])[org.units["SEC1"]]
        assert (empty["cases"], empty["completion_rate"], empty["good_limit"]) == (0, None, 0)
        with pytest.raises(FieldErrors) as info:
            cp.statistics(s, owner, spec, 2026, [org.units["SEC1"]], weekly_field="summary")
        assert info.value.errors == {"weekly_field": [
            "'summary' is not a list field of regular-assessment; its list fields are "
            "weekly_records, individual_indicators, common_indicators, negative_items"]}


def test_results_used_reads_promotions_with_min_good_by_the_decision_year():
    """The shipped promotion flow does not read regular results; with `min_good` its
    `propose` step reads those of the day of the plan and `confirm` (the recheck) those of
    the decision's year (当年), or with `good_year: previous` of the year before."""
    import yaml

    from workflows.spec import load_definition

    path = ANNUAL.parent / "rank-promotion.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    shipped = load_definition(yaml.safe_dump(doc, allow_unicode=True), "promotion.yaml")
    assert cp._readers({7: shipped}, "regular-assessment") == []
    _rule(doc, "propose", "promotion_eligible")["min_good"] = 3
    spec = load_definition(yaml.safe_dump(doc, allow_unicode=True), "promotion.yaml")
    annual = load_definition(SOURCE, str(ANNUAL))
    readers = cp._readers({7: spec, 8: annual}, "regular-assessment")
    assert sorted((r.version_id, r.trigger, r.kind, r.field or "") for r in readers) == [
        (7, "confirm", "decision", "decision_date"),
        (7, "propose", "decision", ""),  # judged on the day of the plan
        (8, "propose_excellent", "same_year", "grade"),
        (8, "revise_excellent", "same_year", "grade"),  # on review and on complaint
        (8, "revise_excellent", "same_year", "grade")]
    confirm = next(r for r in readers if r.version_id == 7 and r.trigger == "confirm")
    tz = cst(2027, 1, 1).tzinfo
    at = dt.datetime(2026, 12, 31, 17, 0, tzinfo=dt.UTC)  # 2027-01-01 01:00 in Beijing
    assert cp._read_year(confirm, None, {"decision_date": "2026-12-01"}, at, tz) == 2026
    assert cp._read_year(confirm, None, {}, at, tz) == 2027  # the day of the step, local
    _rule(doc, "propose", "promotion_eligible")["good_year"] = "previous"
    spec = load_definition(yaml.safe_dump(doc, allow_unicode=True), "promotion.yaml")
    before = next(r for r in cp._readers({7: spec}, "regular-assessment")
                  if r.trigger == "confirm")
    assert cp._read_year(before, None, {"decision_date": "2027-03-01"}, at, tz) == 2026
    excellent = next(r for r in readers if r.trigger == "propose_excellent")
    assert cp._read_year(excellent, "2026", {"grade": "优秀"}, at, tz) == 2026
    assert cp._read_year(excellent, "2026", {"grade": "称职"}, at, tz) is None


# --------------------------------------------------------------------------- HTTP


def ok(resp, status=200):
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()


def test_http_write_read_and_refusals(api, org):
    assert "contact_points" in api.client.application.blueprints
    body = {"items": ITEMS, "raised": True, "note": "评估排名靠前"}
    out = ok(api.put("owner", f"{URL}/SEC1/2026", json=body), 201)
    assert (out["score"], out["rank"], out["of"], out["raised"]) == (95.0, 1, 1, True)
    assert out["items"][0] == {"item": "台账管理", "score": 38.5, "max": 40.0}
    assert out["set_by"] == org.ids["owner"]
    out = ok(api.put("admin", f"{URL}/SEC1/2026", json={**body, "raised": False}))
    assert out["raised"] is False and out["set_by"] == org.ids["admin"]
    ok(api.put("admin", f"{URL}/SEC2/2026", json={"score": 97.5}), 201)

    r = api.put("l1", f"{URL}/SEC1/2026", json={"score": 1})
    assert r.status_code == 403 and r.get_json()["rule"] == "needs_admin_or_process_owner"
    r = api.put("owner", f"{URL}/NOPE/2026", json={"score": 1})
    assert r.status_code == 404 and r.get_json()["message"] == "unit 'NOPE' does not exist"
    r = api.put("owner", f"{URL}/SEC1/2026", json={"items": ITEMS, "score": 96})
    assert r.status_code == 422 and r.get_json()["fields"] == {"score": [
        "96 is not the sum of the items' scores, 95.0 (3 items); give the items' total or "
        "leave score out"]}
    r = api.put("owner", f"{URL}/SEC1/2026", json={"items": [{"item": "a", "score": 3,
                                                               "max": 2}]})
    assert r.get_json()["fields"] == {"items[0].score": ["3 is more than the item's max 2"]}
    r = api.put("owner", f"{URL}/SEC1/3000", json={"score": 1})
    assert r.status_code == 422 and "year" in r.get_json()["fields"]
    r = api.put("owner", f"{URL}/SEC1/2026", json={"score": 1, "rank": 2})
    assert r.status_code == 422 and "json.rank" in r.get_json()["fields"]

    board = ok(api.get("owner", f"{URL}?year=2026"))
    assert [(x["unit"]["code"], x["score"], x["rank"]) for x in board["sheets"]] == [
        ("SEC2", 97.5, 1), ("SEC1", 95.0, 2)]
    assert board["flow"] == "regular-assessment" and board["weekly_field"] == "weekly_records"
    assert [x["unit"]["code"] for x in ok(api.get("l1", f"{URL}?year=2026"))["sheets"]] == \
        ["SEC1"]
    assert [x["rank"] for x in ok(api.get("l2", f"{URL}?year=2026"))["sheets"]] == [1]
    r = api.get("s1", f"{URL}?year=2026")
    assert r.status_code == 403 and r.get_json()["rule"] == "contact_points_read"
    r = api.get("owner", f"{URL}?year=2026&weekly_field=summary")
    assert r.status_code == 422 and list(r.get_json()["fields"]) == ["query.weekly_field"]
    assert api.get("owner", f"{URL}?year=2026&flow=nope").status_code == 404
    assert api.get("owner", f"{URL}").status_code == 422  # year is required

    assert api.delete("l1", f"{URL}/SEC2/2026").status_code == 403
    assert api.delete("owner", f"{URL}/SEC2/2026").status_code == 204
    r = api.delete("owner", f"{URL}/SEC2/2026")
    assert r.status_code == 404 and "has no contact-point score sheet for 2026" in \
        r.get_json()["message"]


def test_http_import_and_downloads(api, org, engine, db, clock):
    engine.clock = clock
    build(engine, org, db, clock)
    r = api.post("l1", f"{URL}/import", json={"csv": GOOD_CSV})
    assert r.status_code == 403
    r = api.post("owner", f"{URL}/import", json={"csv": "unit_code,year,score\nNOPE,2026,1\n"})
    assert r.status_code == 422
    assert [(e["line"], e["message"]) for e in r.get_json()["errors"]] == [
        (2, "unit 'NOPE' does not exist")]
    out = ok(api.post("owner", f"{URL}/import", json={"csv": GOOD_CSV}))
    assert out == {"rows": 6, "sheets": 3, "created": 1, "replaced": 2}

    board = ok(api.get("owner", f"{URL}?year=2026"))
    stats = {x["unit"]["code"]: x["statistics"] for x in board["sheets"]}
    assert stats["SEC1"] == SEC1_STATS and stats["ORG"] == ORG_STATS
    assert stats["SEC2"]["cases"] == 2 and stats["SEC2"]["on_time_rate"] == 1.0

    r = api.get("owner", f"{URL}?year=2026&format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv" and r.data.startswith(b"\xef\xbb\xbf")
    assert r.headers["Content-Disposition"] == 'attachment; filename="contact-points-2026.csv"'
    lines = list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))
    assert lines[0][:7] == ["排名", "单位编码", "单位", "年度", "总分", "评分明细", "提高优秀比例"]
    assert lines[1][:8] == ["1", "SEC1", "干部一科", "2026", "95.0",
                            "台账管理 38.5/40.0；信息月报 27.0/30.0；创新案例 29.5/30.0", "是", "3"]
    assert lines[1][8:16] == ["0.6667", "0.5", "1", "2", "0.5", "1", "1.0", "0.5"]

    r = api.get("owner", f"{URL}?year=2026&format=xlsx&unit_id={org.units['SEC1']}")
    assert r.mimetype == XLSX
    assert r.headers["Content-Disposition"] == \
        f'attachment; filename="contact-points-2026-unit{org.units["SEC1"]}.xlsx"'
    ws = load_workbook(io.BytesIO(r.data)).active
    assert ws.title == "2026年联系点成绩单"
    assert [c.value for c in ws[2]][:5] == [1, "SEC1", "干部一科", 2026, 95]
    assert ws.max_row == 2


def test_schemathesis_over_the_contact_points(api, org, engine, db, clock):
    """Generated requests (valid and invalid) against these endpoints, with sheets and cases
    in the database: no 500, and every JSON response fits the document."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    engine.clock = clock
    build(engine, org, db, clock)
    headers = api.headers("owner")
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api.client.application,
                                            headers=headers)
    failures = []
    ops = [r.ok() for r in schema.get_all_operations() if r.ok().path.startswith(URL)]
    assert sorted((op.method.upper(), op.path) for op in ops) == [
        ("DELETE", f"{URL}/{{unit_code}}/{{year}}"), ("GET", URL),
        ("POST", f"{URL}/import"), ("PUT", f"{URL}/{{unit_code}}/{{year}}")]
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(headers=headers,
                                   checks=[not_a_server_error, response_schema_conformance])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collected, reported together below
            failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert not failures, "\n\n".join(failures)


# --------------------------------------------------------------------------- annual 优秀


@pytest.fixture
def annual(engine, regular):
    return engine.publish(SOURCE, str(ANNUAL))


def _three_candidates(engine, org, db) -> tuple[int, int, int]:
    for who in ("s1", "s2", "s3"):
        _regular_year(db, org.ids[who], GOOD_YEAR)
    _fill_sec1(db, org, engine)  # 9 annual cases of 2026 in SEC1, the 机关's only ones
    a, b, c = (_excellent_to_approval(engine, org, w) for w in ("s1", "s2", "s3"))
    return a, b, c


def test_a_raised_score_sheet_raises_the_excellent_ratio(engine, org, db, annual):
    """The 优秀 pool is the 机关's (unit_depth: 1), so the raise is read for the 机关: ORG's
    sheet raises it, a raised sheet of one 科室 under it does not."""
    a, b, c = _three_candidates(engine, org, db)
    _put(db, "ORG", 2026, {"items": ITEMS})  # a sheet, not raised: 20 %
    _put(db, "ORG", 2025, {"score": 99, "raised": True})  # another year does not count
    _put(db, "SEC1", 2026, {"score": 90, "raised": True})  # a 科室: not the pool's unit
    v = pytest.raises(RuleViolation, engine.fire_bulk, [a, b], "approve", P(org.c1)).value
    assert v.rule == "excellent_quota" and str(v).endswith(
        f"in pool period=2026, unit={org.units['ORG']}: limit 1 (20% of 9, floor, at least "
        "1), already used 0, asked 2")
    assert v.details["raised_for"] is None and v.details["ratio"] == 0.2
    assert engine.get_case(a).state == engine.get_case(b).state == "approval"

    _put(db, "ORG", 2026, {"items": ITEMS, "raised": True})  # 25 % of 9 = 2.25 → 2
    done = engine.fire_bulk([a, b], "approve", P(org.c1))
    assert len(done.done) == 2 and not done.refused
    v = pytest.raises(RuleViolation, engine.fire, c, "approve", P(org.c1)).value
    assert ("limit 2 (25% of 9, raised for ORG: contact-point score sheet 2026, score "
            "95.0, rank 1, floor, at least 1), already used 2, asked 1") in str(v)
    assert v.details["raised_for"] == "ORG" and v.details["ratio"] == 0.25
    assert v.details["raised_by"] == {"unit": "ORG", "source": "score_sheet", "year": 2026,
                                      "score": 95.0, "rank": 1, "of": 2}


def test_a_raised_unit_above_raises_its_sub_units(engine, org, db, annual):
    a, b, _c = _three_candidates(engine, org, db)
    _put(db, "SEC2", 2026, {"score": 99})
    _put(db, "ORG", 2026, {"score": 90.5, "raised": True})
    done = engine.fire_bulk([a, b], "approve", P(org.c1))
    assert len(done.done) == 2
    v = pytest.raises(RuleViolation, engine.fire, _c, "approve", P(org.c1)).value
    assert "raised for ORG: contact-point score sheet 2026, score 90.5, rank 2, floor" in str(v)


def test_raise_top_and_raise_units_are_read_with_the_sheets(engine, org, db, regular):
    doc = _doc()
    _rule(doc, "approve", "excellent_quota")["raise_top"] = 1
    engine.publish(_dump(doc), "annual-top.yaml")
    a, b, c = _three_candidates(engine, org, db)
    _put(db, "SEC2", 2026, {"score": 96})  # top, but a 科室, not the 机关 of the pool
    _put(db, "ORG", 2026, {"score": 95})  # rank 2, not flagged: 20 %
    v = pytest.raises(RuleViolation, engine.fire_bulk, [a, b], "approve", P(org.c1)).value
    assert "limit 1 (20% of 9, floor, at least 1)" in str(v)
    _put(db, "ORG", 2026, {"score": 96})  # a tie at the top: rank 1 too
    engine.fire_bulk([a, b], "approve", P(org.c1))
    v = pytest.raises(RuleViolation, engine.fire, c, "approve", P(org.c1)).value
    assert "raised for ORG: contact-point score sheet 2026, score 96.0, rank 1 (top 1)" \
        in str(v)
    assert v.details["raised_by"]["source"] == "raise_top"


def test_the_flag_is_read_when_the_approval_comes(engine, org, db, annual):
    """The sheet is data, not part of the definition: a flag set after the cases started
    counts, and deleting the sheet takes the raised ratio away again."""
    a, b, c = _three_candidates(engine, org, db)
    _put(db, "ORG", 2026, {"score": 95, "raised": True})  # the 机关 of the pool
    assert len(engine.fire_bulk([a, b], "approve", P(org.c1)).done) == 2
    with db.unit_of_work() as s:
        cp.delete_sheet(s, "ORG", 2026)
    v = pytest.raises(RuleViolation, engine.fire, c, "approve", P(org.c1)).value
    assert "limit 1 (20% of 9, floor, at least 1), already used 2, asked 1" in str(v)
    engine.fire(c, "send_back", P(org.c1), comment="优秀名额已满")
    engine.fire(c, "evaluate", P(org.l1), data={"grade": "称职"})
    engine.fire(c, "approve", P(org.c1))
    assert engine.get_case(c).state == "result"
