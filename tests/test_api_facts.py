"""The facts API (service/api/facts.py): admins write, import and read the audit; the
person, their leaders and committee, owners and admins read; nobody else sees them."""

from __future__ import annotations

import pytest

BASE = "/api/v1/facts"


@pytest.fixture
def fapi(api):
    assert "facts" in api.client.application.blueprints
    return api


def test_admin_adds_changes_and_deletes_each_kind(fapi):
    s1 = fapi.org.s1
    bodies = {
        "rank_history": {"rank": "二级主任科员", "since": "2022-03-01"},
        "annual_results": {"year": 2024, "grade": "优秀"},
        "sanctions": {"kind": "记大过", "decided_on": "2024-01-15"},
        "investigations": {"opened_on": "2024-02-01"},
        "exam_results": {"exam": "政治理论考试", "taken_on": "2024-06-01", "passed": True,
                         "score": "91.5"},
        "training_hours": {"year": 2024, "hours": 36.5},
        "commendations": {"kind": "嘉奖", "decided_on": "2023-12-01"},
    }
    made = {}
    for kind, body in bodies.items():
        r = fapi.post("admin", f"{BASE}/{kind}", json={"person_id": s1, **body})
        assert r.status_code == 201, (kind, r.get_json())
        made[kind] = r.get_json()
    assert made["sanctions"]["effect_months"] == 18
    assert made["sanctions"]["effect_ends"] == "2025-07-15"
    assert made["training_hours"]["hours"] == "36.5"
    r = fapi.patch("admin", f"{BASE}/investigations/{made['investigations']['id']}",
                   json={"closed_on": "2024-04-01"})
    assert r.status_code == 200 and r.get_json()["closed_on"] == "2024-04-01"
    r = fapi.delete("admin", f"{BASE}/commendations/{made['commendations']['id']}")
    assert r.status_code == 204
    got = fapi.get("admin", f"{BASE}/people/{s1}").get_json()
    assert got["rank"] == "二级主任科员" and got["rank_since"] == "2022-03-01"
    assert got["under_investigation"] is False
    assert [a["grade"] for a in got["annual_results"]] == ["优秀"]
    assert got["sanctions"][0]["effect_ends"] == "2025-07-15"
    assert got["exam_results"][0]["score"] == "91.50"
    assert got["commendations"] == []
    audit = fapi.get("admin", f"{BASE}/people/{s1}/audit?per_page=50").get_json()
    assert audit["total"] == 9
    assert [a["action"] for a in audit["items"][:2]] == ["delete", "update"]
    assert audit["items"][1]["before"]["closed_on"] is None
    assert audit["items"][1]["after"]["closed_on"] == "2024-04-01"
    assert {a["actor_id"] for a in audit["items"]} == {fapi.org.admin}


def test_refusals_are_422_with_the_field(fapi):
    s1 = fapi.org.s1
    body = {"person_id": s1, "year": 2024, "grade": "称职"}
    assert fapi.post("admin", f"{BASE}/annual_results", json=body).status_code == 201
    r = fapi.post("admin", f"{BASE}/annual_results", json=body)
    assert r.status_code == 422
    assert r.get_json()["fields"]["year"][0].startswith(
        f"person {s1} already has the annual result for 2024")
    r = fapi.post("admin", f"{BASE}/annual_results", json={**body, "year": 2025, "grade": "好"})
    assert r.status_code == 422 and "grade" in r.get_json()["fields"]
    r = fapi.post("admin", f"{BASE}/training_hours",
                  json={"person_id": s1, "year": 2024, "hours": -4})
    assert r.get_json()["fields"] == {"hours": ["hours must not be negative (got -4)"]}
    r = fapi.post("admin", f"{BASE}/sanctions", json={"person_id": 99999, "kind": "记过",
                                                      "decided_on": "2024-01-01"})
    assert r.status_code == 404
    assert fapi.patch("admin", f"{BASE}/sanctions/99999", json={}).status_code == 404


def test_only_admins_write(fapi):
    body = {"person_id": fapi.org.s1, "year": 2024, "grade": "优秀"}
    for who in ("s1", "l1", "owner", "chief"):
        r = fapi.post(who, f"{BASE}/annual_results", json=body)
        assert r.status_code == 403 and r.get_json()["rule"] == "needs_admin", who
    made = fapi.post("admin", f"{BASE}/annual_results", json=body).get_json()
    assert fapi.patch("l1", f"{BASE}/annual_results/{made['id']}",
                      json={"grade": "称职"}).status_code == 403
    assert fapi.delete("s1", f"{BASE}/annual_results/{made['id']}").status_code == 403
    assert fapi.post("l1", f"{BASE}/import", json={"csv": "person_code,fact\n"}
                     ).status_code == 403
    assert fapi.get("l1", f"{BASE}/people/{fapi.org.s1}/audit").status_code == 403


@pytest.mark.parametrize("who,sees", [
    ("s1", True), ("s2", False), ("l1", True), ("l2", False), ("chief", True), ("c1", True),
    ("owner", True), ("admin", True), ("t1", False), ("d1", False)])
def test_who_reads_a_persons_facts(fapi, who, sees):
    r = fapi.get(who, f"{BASE}/people/{fapi.org.s1}")
    assert r.status_code == (200 if sees else 404), r.get_json()


def test_staff_read_their_own_facts_only(fapi):
    assert fapi.get("t1", f"{BASE}/people/{fapi.org.t1}").status_code == 200
    r = fapi.get("t1", f"{BASE}/people/{fapi.org.t2}")
    assert r.status_code == 404
    assert r.get_json()["message"] == (f"person {fapi.org.t2} does not exist or their "
                                       "facts are not visible to you")
    assert fapi.get("admin", f"{BASE}/people/99999").status_code == 404


def test_import_all_or_nothing(fapi):
    good = ("person_code,fact,year,date,value,number\n"
            "S1,annual_result,2024,,优秀,\n"
            "S2,sanction,,2024-05-01,警告,\n")
    r = fapi.post("admin", f"{BASE}/import", json={"csv": good + "S3,training,2024,,,x\n"})
    assert r.status_code == 422
    assert r.get_json()["errors"] == [{"line": 4, "message": "number (hours): 'x' is not a "
                                                             "number"}]
    assert fapi.get("admin", f"{BASE}/people/{fapi.org.s1}").get_json()["annual_results"] == []
    r = fapi.post("admin", f"{BASE}/import", json={"csv": good})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["rows"] == 2 and r.get_json()["created"]["sanction"] == 1
    audit = fapi.get("admin", f"{BASE}/people/{fapi.org.s2}/audit").get_json()
    assert [(a["action"], a["table"]) for a in audit["items"]] == [("import", "sanctions")]
    assert audit["items"][0]["after"]["effect_months"] == 6


def _workbook(rows: list[list]) -> str:
    import base64
    import io

    from openpyxl import Workbook

    book = Workbook()
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return base64.b64encode(out.getvalue()).decode()


def test_import_training_records_from_xlsx(fapi):
    import datetime as dt

    header = ["person_code", "fact", "year", "date", "value", "number", "organiser", "mode"]
    rows = [header,
            ["S1", "training_record", None, dt.datetime(2025, 5, 30), "任职培训班", 56.0,
             "市委党校", "线下"],
            [],  # a blank row is skipped; row numbers stay the sheet's
            ["S1", "training_record", None, dt.date(2025, 10, 15), "网络专题", 24.5, None,
             "线上"],
            ["S1", "training", 2025, None, None, 12, None, None]]
    bad = _workbook([*rows, ["S1", "training_record", None, "2025-13-01", "讲座", 2, None,
                             "offline"]])
    r = fapi.post("admin", f"{BASE}/import", json={"xlsx": bad})
    assert r.status_code == 422, r.get_json()
    assert r.get_json()["errors"] == [{"line": 6, "message": "date (taken_on): '2025-13-01' is "
                                                             "not a date (YYYY-MM-DD)"}]
    assert fapi.get("admin", f"{BASE}/people/{fapi.org.s1}").get_json()[
        "training_records"] == []
    r = fapi.post("admin", f"{BASE}/import", json={"xlsx": _workbook(rows)})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["created"]["training_record"] == 2
    got = fapi.get("admin", f"{BASE}/people/{fapi.org.s1}").get_json()
    assert [(t["course"], t["taken_on"], t["hours"], t["kind"])
            for t in got["training_records"]] == [
        ("任职培训班", "2025-05-30", "56.0", "offline"), ("网络专题", "2025-10-15", "24.5", "online")]
    assert got["training_totals"] == [{"year": 2025, "records": 2, "record_hours": "80.5",
                                       "legacy_hours": "12.0", "hours": "92.5"}]
    # Not a workbook, not base64, or both files at once: 422, nothing written.
    r = fapi.post("admin", f"{BASE}/import", json={"xlsx": "bm90IGEgd29ya2Jvb2s="})
    assert r.status_code == 422 and r.get_json()["errors"] == [
        {"line": 1, "message": "the file is not an XLSX workbook (save it from Excel or WPS as "
                               ".xlsx, or send CSV)", "key": "facts.file_not_xlsx_workbook",
         "params": {}}]
    for text in ("%%%", "工作簿"):
        r = fapi.post("admin", f"{BASE}/import", json={"xlsx": text})
        assert r.status_code == 422 and r.get_json()["fields"] == {
            "xlsx": ["is not base64 (the workbook's bytes, base64-encoded)"]}
    r = fapi.post("admin", f"{BASE}/import", json={"xlsx": "eA==", "csv": "x"})
    assert r.status_code == 422
    assert len(fapi.get("admin", f"{BASE}/people/{fapi.org.s1}").get_json()[
        "training_records"]) == 2
