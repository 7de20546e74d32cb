"""The ledger API (/api/v1/ledger): numbers, visibility, downloads and refusals, on both DBs."""

from __future__ import annotations

import csv
import io

import pytest
from openpyxl import load_workbook

from .test_ledger import NOW, build

URL = "/api/v1/ledger"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def lapi(api, engine, org, db):
    assert "ledger" in api.client.application.blueprints
    api.ids = build(engine, org, db)
    engine.clock = lambda: NOW
    return api


def ok(resp, status=200):
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()


def test_states(lapi):
    lapi.client.environ_base.pop("HTTP_ACCEPT_LANGUAGE")  # the labels in Chinese, the default
    out = ok(lapi.get("owner", f"{URL}/states?flow=regular-assessment&period=2026-11"))
    assert out["total"] == 10
    assert {st["state"]: (st["label"], st["count"]) for st in out["states"]} == {
        "summary": ("个人小结", 1), "evaluation": ("领导评鉴", 1), "feedback": ("结果反馈", 1),
        "approval": ("审定", 1), "approved": ("已审定", 6)}
    en = ok(lapi.get("owner", f"{URL}/states?flow=regular-assessment&period=2026-11",
                     headers={"Accept-Language": "en"}))
    assert en["states"][-1]["label"] == "Approved"


def test_rates_and_visibility(lapi):
    q = "flow=regular-assessment&period_from=2026-10&period_to=2026-12"
    out = ok(lapi.get("owner", f"{URL}/rates?{q}"))
    assert (out["total"], out["closed"], out["completion_rate"], out["overdue"]) == (
        13, 9, 0.6923, 1)
    assert [(p["period"], p["total"], p["completion_rate"], p["overdue_rate"])
            for p in out["by_period"]] == [
        ("2026-10", 3, 1.0, 0.0), ("2026-11", 10, 0.6, 0.1), ("2026-12", 0, None, None)]

    def month(who, extra=""):
        r = ok(lapi.get(who, f"{URL}/rates?flow=regular-assessment&period=2026-11{extra}"))
        return r["total"], r["closed"], r["overdue"]

    assert month("s1") == (1, 1, 0)  # staff: their own case only
    assert month("s5") == (1, 0, 1)
    assert month("l1") == (7, 4, 1)  # the leader of SEC1: SEC1 only
    assert month("l1", f"&unit_id={lapi.org.units['SEC2']}") == (0, 0, 0)
    assert month("l2") == (2, 1, 0)
    assert month("owner") == month("admin") == month("chief") == (10, 6, 1)
    assert month("owner", f"&unit_id={lapi.org.units['SEC1']}") == (7, 4, 1)


def test_grades(lapi):
    out = ok(lapi.get("l1", f"{URL}/grades?flow=regular-assessment&period=2026-11"))
    assert out["quota"]["max_ratio"] == 0.4 and out["quota"]["value"] == "好"
    assert [(p["unit"]["name"], p["tier"], p["size"], p["graded"]["好"], p["quota"])
            for p in out["pools"]] == [
        ("部机关", "chief", 1, 0, {"size": 1, "limit": 1, "used": 0, "remaining": 1}),
        ("部机关", "deputy", 1, 1, {"size": 1, "limit": 1, "used": 1, "remaining": 0}),
        # l1 sees SEC1's 5 staff; the pool is the 机关's 8 (limit floor(3.2) = 3)
        ("部机关", "staff", 5, 2, {"size": 8, "limit": 3, "used": 3, "remaining": 0})]

    r = lapi.get("owner", f"{URL}/grades?flow=regular-assessment&period=2026-11&format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"] == \
        'attachment; filename="grades-regular-assessment-2026-11.csv"'
    lines = r.data.decode("utf-8-sig").splitlines()
    assert r.data.startswith(b"\xef\xbb\xbf")
    assert lines[0].startswith("单位,层级,考核期,参加人数,好,较好,一般,较差")
    assert len(lines) == 4  # the 机关's chief, deputy and staff pools
    assert lines[3] == "部机关,一般干部,2026-11,8,3,3,1,0,1,3,3,0"


def test_good_counts(lapi):
    out = ok(lapi.get("owner", f"{URL}/good-counts?flow=regular-assessment&year=2026"))
    assert [(p["person"]["code"], p["good"], p["results"]) for p in out["people"]] == [
        ("C2", 0, 1), ("D1", 1, 1), ("S1", 2, 2), ("S2", 1, 2), ("S3", 0, 1), ("T2", 1, 2)]
    mine = ok(lapi.get("s2", f"{URL}/good-counts?flow=regular-assessment&year=2026"))
    assert [(p["person"]["code"], p["good"]) for p in mine["people"]] == [("S2", 1)]

    r = lapi.get("owner", f"{URL}/good-counts?flow=regular-assessment&year=2026&format=xlsx")
    assert r.status_code == 200 and r.mimetype == XLSX
    assert r.headers["Content-Disposition"] == \
        'attachment; filename="good-counts-regular-assessment-2026.xlsx"'
    ws = load_workbook(io.BytesIO(r.data)).active
    assert ws.title == "2026年好等次统计"
    assert [c.value for c in ws[1]] == ["人员编号", "姓名", "单位", "已审定结果数", "“好”等次次数"]
    assert [c.value for c in ws[4]] == ["S1", "测试s1", "干部一科", 2, 2]
    assert ws.max_row == 7


def test_ledger_cases(lapi):
    lapi.client.environ_base.pop("HTTP_ACCEPT_LANGUAGE")  # the labels in Chinese, the default
    q = "flow=regular-assessment&period=2026-11"
    out = ok(lapi.get("owner", f"{URL}/cases?{q}&per_page=4&page=2"))
    assert out["total"] == 10 and (out["page"], out["per_page"]) == (2, 4)
    assert [r["person_code"] for r in out["items"]] == ["S2", "S3", "S4", "S5"]
    s5 = out["items"][3]
    assert (s5["state_label"], s5["overdue"], s5["grade"], s5["deadline_at"][:10]) == (
        "个人小结", True, None, "2026-12-01")
    mine = ok(lapi.get("s1", f"{URL}/cases?flow=regular-assessment"))
    assert mine["total"] == 3 and {r["person_code"] for r in mine["items"]} == {"S1"}
    waiting = ok(lapi.get("l1", f"{URL}/cases?flow=regular-assessment&state=approval"))
    assert [r["person_code"] for r in waiting["items"]] == ["S4"]

    r = lapi.get("l1", f"{URL}/cases?{q}&format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"] == \
        'attachment; filename="ledger-regular-assessment-2026-11.csv"'
    assert r.data.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))
    assert table[0][:3] == ["事项编号", "人员编号", "姓名"] and len(table) == 8  # SEC1: 7 cases
    row = next(t for t in table if t[1] == "S1")
    assert row[0] == str(lapi.ids["s1"]) and row[5:10] == ["2026-11", "已审定", "好", "", "否"]

    r = lapi.get("owner", f"{URL}/cases?{q}&format=xlsx")
    assert r.status_code == 200 and r.mimetype == XLSX
    assert r.headers["Content-Disposition"] == \
        'attachment; filename="ledger-regular-assessment-2026-11.xlsx"'
    ws = load_workbook(io.BytesIO(r.data)).active
    assert ws.title == "台账" and ws["A1"].font.bold and ws.max_row == 11
    s5 = next(r for r in ws.iter_rows(min_row=2) if r[1].value == "S5")
    assert s5[8].is_date and s5[8].value.strftime("%Y-%m-%d %H:%M") == "2026-12-01 09:30"
    r = lapi.get("owner", f"{URL}/cases?flow=regular-assessment&period_from=2026-10"
                          f"&period_to=2026-12&unit_id={lapi.org.units['SEC1']}&format=csv")
    assert 'filename="ledger-regular-assessment-2026-10_2026-12-unit' in \
        r.headers["Content-Disposition"]


@pytest.mark.parametrize("query, field", [
    ("", "flow"),
    ("flow=regular-assessment&period=2026-13", "period"),
    ("flow=regular-assessment&period=2026-11&period_from=2026-10&period_to=2026-11", "period"),
    ("flow=regular-assessment&period_from=2026-10", "period_to"),
    ("flow=regular-assessment&period_from=2026-12&period_to=2026-01", "period_to"),
    ("flow=regular-assessment&unit_id=0", "unit_id"),
    ("flow=regular-assessment&unit_id=abc", "unit_id"),
])
def test_refusals_with_field_paths(lapi, query, field):
    for path in ("states", "rates", "grades", "cases"):
        body = ok(lapi.get("owner", f"{URL}/{path}?{query}"), 422)
        assert f"query.{field}" in body["fields"], (path, body)


def test_other_refusals(lapi):
    body = ok(lapi.get("owner", f"{URL}/cases?flow=regular-assessment&format=pdf"), 422)
    assert "query.format" in body["fields"]
    body = ok(lapi.get("owner", f"{URL}/good-counts?flow=regular-assessment"), 422)
    assert "query.year" in body["fields"]
    body = ok(lapi.get("owner", f"{URL}/good-counts?flow=regular-assessment&year=20260"), 422)
    assert "query.year" in body["fields"]
    body = ok(lapi.get("owner", f"{URL}/cases?flow=regular-assessment&state=nope"), 422)
    assert "query.state" in body["fields"]
    for path in ("states", "rates", "grades", "cases", "good-counts"):
        body = ok(lapi.get("owner", f"{URL}/{path}?flow=no-such-flow&year=2026"), 404)
        assert body["code"] == "not_found" and "no-such-flow" in body["message"]
    body = ok(lapi.get("owner", f"{URL}/rates?flow=regular-assessment&unit_id=99999"), 404)
    assert "unit 99999" in body["message"]
    assert lapi.client.get(f"{URL}/rates?flow=regular-assessment").status_code == 401


def test_flow_without_a_quota(lapi, engine):
    from .conftest import REGULAR

    source = REGULAR.read_text(encoding="utf-8").replace("flow: regular-assessment",
                                                         "flow: regular-plain")
    start = source.index("    rules:\n      - quota:")
    end = source.index("  - trigger: send_back")
    engine.publish(source[:start] + source[end:], "plain.yaml")
    body = ok(lapi.get("owner", f"{URL}/grades?flow=regular-plain"), 422)
    assert "no quota rule" in body["fields"]["query.flow"][0]
    ok(lapi.get("owner", f"{URL}/good-counts?flow=regular-plain&year=2026"), 422)
    assert ok(lapi.get("owner", f"{URL}/states?flow=regular-plain"))["total"] == 0


def test_openapi_declares_the_downloads(lapi):
    doc = ok(lapi.get("owner", "/api/v1/openapi.json"))
    for path in ("/api/v1/ledger/cases", "/api/v1/ledger/grades", "/api/v1/ledger/good-counts"):
        content = doc["paths"][path]["get"]["responses"]["200"]["content"]
        assert {"application/json", "text/csv", XLSX} <= set(content), path
    assert "/api/v1/ledger/states" in doc["paths"] and "/api/v1/ledger/rates" in doc["paths"]


def test_schemathesis_over_the_ledger(lapi):
    """Generated requests (valid and invalid) against the ledger endpoints: no 500, and
    every JSON response fits the document."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    headers = lapi.headers("owner")
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", lapi.client.application,
                                            headers=headers)
    failures = []
    ops = [r.ok() for r in schema.get_all_operations() if r.ok().path.startswith(URL)]
    assert len(ops) == 6  # states, rates, grades, good-counts, cases, eligibility
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
