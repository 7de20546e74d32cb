"""The organisation API (组织): units, people, role assignments, CSV import."""

from __future__ import annotations

import pytest

from .test_org_import import GOOD, HEADER

ORG = "/api/v1/org"


def _units(api) -> dict[str, dict]:
    return {u["code"]: u for u in api.get("s1", f"{ORG}/units").json}


# --------------------------------------------------------------------------- who may


def test_anonymous_callers_are_refused(api):
    for method, url in (("get", f"{ORG}/units"), ("get", f"{ORG}/people"),
                        ("get", f"{ORG}/roles"), ("post", f"{ORG}/import"),
                        ("delete", f"{ORG}/roles/1"), ("patch", f"{ORG}/people/1")):
        r = getattr(api.client, method)(url, json={})
        assert r.status_code == 401 and r.json["code"] == "unauthorized", url


@pytest.mark.parametrize("who", ["s1", "l1", "chief", "owner"])
def test_writes_are_for_admins(api, who):
    sec1 = api.org.units["SEC1"]
    writes = [
        ("post", f"{ORG}/units", {"code": "NEW", "name": "新单位"}),
        ("post", f"{ORG}/people", {"code": "N1", "name": "新人", "unit_id": sec1}),
        ("patch", f"{ORG}/people/{api.org.s1}", {"tier": "deputy"}),
        ("post", f"{ORG}/roles", {"person_id": api.org.s1, "role": "leader", "unit_id": sec1}),
        ("delete", f"{ORG}/roles/1", None),
        ("post", f"{ORG}/import", {"csv": GOOD}),
    ]
    for method, url, body in writes:
        r = getattr(api, method)(who, url, json=body)
        assert r.status_code == 403, (url, r.json)
        assert r.json["rule"] == "needs_admin" and "admin (系统管理员)" in r.json["message"]
    assert set(_units(api)) == {"ORG", "SEC1", "SEC2"}
    assert api.get("s1", f"{ORG}/people/{api.org.s1}").json["tier"] == "staff"
    assert api.get("s1", f"{ORG}/people?per_page=200").json["total"] == 15


# --------------------------------------------------------------------------- units


def test_anyone_signed_in_reads_units(api):
    units = _units(api)
    root, sec1 = units["ORG"], units["SEC1"]
    assert (root["name"], root["parent_id"], root["path"]) == ("部机关", None, f"/{root['id']}/")
    assert (sec1["name"], sec1["parent_id"]) == ("干部一科", root["id"])
    assert sec1["path"] == f"/{root['id']}/{sec1['id']}/"
    r = api.get("t1", f"{ORG}/units/{sec1['id']}")
    assert r.status_code == 200 and r.json == sec1


def test_admin_creates_a_unit(api):
    sec1 = api.org.units["SEC1"]
    r = api.post("admin", f"{ORG}/units", json={"code": " SEC1-A ", "name": "一科一组",
                                                "parent_id": sec1})
    assert r.status_code == 201, r.json
    assert (r.json["code"], r.json["name"], r.json["parent_id"]) == ("SEC1-A", "一科一组", sec1)
    assert r.json["path"] == f"{_units(api)['SEC1']['path']}{r.json['id']}/"
    root = api.post("admin", f"{ORG}/units", json={"code": "OTHER", "name": "另一机关"})
    assert root.status_code == 201
    assert (root.json["parent_id"], root.json["path"]) == (None, f"/{root.json['id']}/")
    assert set(_units(api)) == {"ORG", "SEC1", "SEC2", "SEC1-A", "OTHER"}


def test_unit_refusals(api):
    r = api.post("admin", f"{ORG}/units", json={"code": "SEC1", "name": "重复"})
    assert r.status_code == 422
    assert r.json["code"] == "invalid_data"
    assert r.json["fields"] == {"code": ["unit code 'SEC1' is already taken"]}
    r = api.post("admin", f"{ORG}/units", json={"code": "X", "name": "x", "parent_id": 999})
    assert r.status_code == 404 and r.json["message"] == "unit 999 does not exist"
    r = api.post("admin", f"{ORG}/units", json={"code": "  ", "name": ""})
    assert r.status_code == 422 and set(r.json["fields"]) == {"json.code", "json.name"}
    r = api.get("s1", f"{ORG}/units/999")
    assert r.status_code == 404 and r.json["code"] == "not_found"
    assert set(_units(api)) == {"ORG", "SEC1", "SEC2"}


def test_a_unit_code_taken_by_a_parallel_request_is_422_not_500(api, monkeypatch):
    """The check passed, then another request stored the code first: the unique
    constraint fails, and the caller gets the same answer as for a plain duplicate."""
    from workflows import org as org_api
    from workflows.models import Unit

    real = org_api.add_unit

    def raced(s, code, name, parent=None):
        s.add(Unit(code=code, name="抢先", path="/"))  # the parallel request's row
        s.flush()
        return real(s, code, name, parent)

    monkeypatch.setattr(org_api, "add_unit", raced)
    r = api.post("admin", f"{ORG}/units", json={"code": "RACE", "name": "竞争"})
    assert r.status_code == 422
    assert r.json["fields"] == {"code": ["unit code 'RACE' is already taken"]}
    assert "RACE" not in _units(api)


# --------------------------------------------------------------------------- people


def test_people_are_listed_by_code_with_pagination(api):
    r = api.get("s1", f"{ORG}/people")
    assert r.status_code == 200
    assert (r.json["total"], r.json["page"], r.json["per_page"]) == (15, 1, 20)
    codes = [p["code"] for p in r.json["items"]]
    assert codes == sorted(codes) and len(codes) == 15
    s1 = next(p for p in r.json["items"] if p["code"] == "S1")
    assert s1 == {"id": api.org.s1, "code": "S1", "name": "测试s1",
                  "unit_id": api.org.units["SEC1"], "unit_name": "干部一科", "tier": "staff",
                  "rank": None, "rank_since": None, "post": None, "active": True}

    page2 = api.get("s1", f"{ORG}/people?per_page=4&page=2").json
    assert (page2["total"], page2["page"], page2["per_page"]) == (15, 2, 4)
    assert [p["code"] for p in page2["items"]] == codes[4:8]
    beyond = api.get("s1", f"{ORG}/people?per_page=4&page=9").json
    assert beyond["items"] == [] and beyond["total"] == 15
    r = api.get("s1", f"{ORG}/people?per_page=500")
    assert r.status_code == 422 and "query.per_page" in r.json["fields"]


def test_people_filters(api):
    def codes(query: str) -> tuple[int, list[str]]:
        r = api.get("s1", f"{ORG}/people?{query}")
        assert r.status_code == 200, r.json
        return r.json["total"], [p["code"] for p in r.json["items"]]

    sec1, root = api.org.units["SEC1"], api.org.units["ORG"]
    assert codes(f"unit_id={sec1}") == (7, ["D1", "L1", "S1", "S2", "S3", "S4", "S5"])
    assert codes(f"unit_id={root}")[0] == 15  # the unit and everything under it
    assert codes("q=测试t") == (2, ["T1", "T2"])
    assert codes("q=s1") == (1, ["S1"])  # the code, in any case
    assert codes(f"unit_id={sec1}&q=l") == (1, ["L1"])
    assert codes("q=%25") == (0, [])  # LIKE wildcards are plain text
    r = api.get("s1", f"{ORG}/people?unit_id=999")
    assert r.status_code == 404 and r.json["message"] == "unit 999 does not exist"


def test_admin_creates_a_person(api):
    sec2 = api.org.units["SEC2"]
    body = {"code": "T3", "name": "李娜", "unit_id": sec2, "tier": "deputy",
            "rank": "二级主任科员", "rank_since": "2024-03-01", "post": "副科长"}
    r = api.post("admin", f"{ORG}/people", json=body)
    assert r.status_code == 201, r.json
    assert {k: r.json[k] for k in body} == body
    assert (r.json["unit_name"], r.json["active"]) == ("干部二科", True)
    assert api.get("s1", f"{ORG}/people/{r.json['id']}").json == r.json
    plain = api.post("admin", f"{ORG}/people", json={"code": "T4", "name": "王五",
                                                      "unit_id": sec2})
    assert plain.status_code == 201 and plain.json["tier"] == "staff"
    assert api.get("s1", f"{ORG}/people?unit_id={sec2}").json["total"] == 5


def test_person_refusals(api):
    sec1 = api.org.units["SEC1"]
    r = api.post("admin", f"{ORG}/people", json={"code": "S1", "name": "重名", "unit_id": sec1})
    assert r.status_code == 422
    assert r.json["fields"] == {"code": ["person code 'S1' is already taken"]}
    r = api.post("admin", f"{ORG}/people", json={"code": "N1", "name": "新人", "unit_id": 999})
    assert r.status_code == 404 and r.json["message"] == "unit 999 does not exist"
    r = api.post("admin", f"{ORG}/people", json={"code": "N1", "name": "新人", "unit_id": sec1,
                                                 "tier": "boss", "rank_since": "soon"})
    assert r.status_code == 422 and set(r.json["fields"]) == {"json.tier", "json.rank_since"}
    assert "chief, deputy, staff" in r.json["fields"]["json.tier"][0]
    r = api.get("s1", f"{ORG}/people/999")
    assert r.status_code == 404 and r.json["message"] == "person 999 does not exist"
    assert api.get("s1", f"{ORG}/people").json["total"] == 15


def test_admin_changes_a_person(api):
    sec2 = api.org.units["SEC2"]
    url = f"{ORG}/people/{api.org.s1}"
    r = api.patch("admin", url, json={"name": "测试s1改", "unit_id": sec2, "tier": "deputy",
                                      "rank": "一级主任科员", "rank_since": "2025-01-01",
                                      "post": "副科长", "active": False})
    assert r.status_code == 200, r.json
    assert {k: r.json[k] for k in ("code", "name", "unit_id", "unit_name", "tier", "rank",
                                   "rank_since", "post", "active")} == {
        "code": "S1", "name": "测试s1改", "unit_id": sec2, "unit_name": "干部二科",
        "tier": "deputy", "rank": "一级主任科员", "rank_since": "2025-01-01", "post": "副科长",
        "active": False}
    assert api.get("s2", url).json == r.json  # s1 itself can no longer sign in
    inactive = api.get("s2", f"{ORG}/people?active=false").json
    assert [p["code"] for p in inactive["items"]] == ["S1"]
    cleared = api.patch("admin", url, json={"rank": None, "post": None})
    assert (cleared.json["rank"], cleared.json["post"], cleared.json["tier"]) == \
        (None, None, "deputy")


def test_person_change_refusals(api):
    url = f"{ORG}/people/{api.org.s1}"
    r = api.patch("admin", url, json={"unit_id": 999})
    assert r.status_code == 404 and r.json["message"] == "unit 999 does not exist"
    r = api.patch("admin", url, json={"name": None, "code": "X"})
    assert r.status_code == 422 and set(r.json["fields"]) == {"json.name", "json.code"}
    r = api.patch("admin", f"{ORG}/people/999", json={"tier": "staff"})
    assert r.status_code == 404
    assert api.get("s1", url).json["unit_id"] == api.org.units["SEC1"]


# --------------------------------------------------------------------------- roles


def test_roles_are_listed_and_filtered(api):
    r = api.get("s1", f"{ORG}/roles?person_id={api.org.c1}")
    assert r.status_code == 200
    assert [(x["role"], x["unit_id"], x["unit_name"], x["person_name"]) for x in r.json] == [
        ("committee", api.org.units["ORG"], "部机关", "测试c1"), ("hr-office", None, None, "测试c1")]
    leaders = api.get("s1", f"{ORG}/roles?role=leader").json
    assert sorted(x["person_id"] for x in leaders) == sorted(
        [api.org.chief, api.org.l1, api.org.l2])
    in_sec2 = api.get("s1", f"{ORG}/roles?unit_id={api.org.units['SEC2']}").json
    assert [(x["person_id"], x["role"]) for x in in_sec2] == [(api.org.l2, "leader")]
    assert len(api.get("s1", f"{ORG}/roles").json) == 8  # 6 of the org, owner, admin


def test_admin_assigns_and_removes_a_role(api):
    sec1 = api.org.units["SEC1"]
    r = api.post("admin", f"{ORG}/roles", json={"person_id": api.org.d1, "role": "leader",
                                                "unit_id": sec1})
    assert r.status_code == 201, r.json
    assert {k: r.json[k] for k in ("person_id", "person_name", "role", "unit_id",
                                   "unit_name")} == {
        "person_id": api.org.d1, "person_name": "测试d1", "role": "leader", "unit_id": sec1,
        "unit_name": "干部一科"}
    me = api.get("d1", "/api/v1/auth/me").json
    assert {"role": "leader", "unit_id": sec1} in me["roles"]

    group = api.post("admin", f"{ORG}/roles", json={"person_id": api.org.s2,
                                                    "role": "hr-office", "unit_id": None})
    assert group.status_code == 201
    assert (group.json["unit_id"], group.json["unit_name"]) == (None, None)

    gone = api.delete("admin", f"{ORG}/roles/{r.json['id']}")
    assert gone.status_code == 204 and gone.data == b""
    assert api.get("s1", f"{ORG}/roles?person_id={api.org.d1}").json == []
    again = api.delete("admin", f"{ORG}/roles/{r.json['id']}")
    assert again.status_code == 404
    assert again.json["message"] == f"role assignment {r.json['id']} does not exist"


def test_duplicate_roles_are_422(api):
    root = api.org.units["ORG"]
    r = api.post("admin", f"{ORG}/roles", json={"person_id": api.org.chief, "role": "leader",
                                                "unit_id": root})
    assert r.status_code == 422
    assert r.json["fields"] == {
        "role": [f"person {api.org.chief} already holds 'leader' unit {root}"]}
    r = api.post("admin", f"{ORG}/roles", json={"person_id": api.org.c1, "role": "hr-office"})
    assert r.status_code == 422
    assert r.json["fields"] == {"role": [f"person {api.org.c1} already holds 'hr-office' "
                                         "as a group"]}
    assert len(api.get("s1", f"{ORG}/roles").json) == 8


def test_role_values_are_checked(api):
    sec1 = api.org.units["SEC1"]
    cases = [
        ({"person_id": api.org.s1, "role": "boss", "unit_id": sec1}, "json.role"),
        ({"person_id": api.org.s1, "role": "leader", "unit_id": None}, "json.unit_id"),
        ({"person_id": api.org.s1, "role": "1-group"}, "json.role"),
        ({"person_id": api.org.s1, "role": "hr office"}, "json.role"),
    ]
    for body, field in cases:
        r = api.post("admin", f"{ORG}/roles", json=body)
        assert r.status_code == 422, body
        assert list(r.json["fields"]) == [field], r.json
    assert "leader, committee, process_owner, admin" in api.post(
        "admin", f"{ORG}/roles", json=cases[0][0]).json["message"]
    r = api.post("admin", f"{ORG}/roles", json={"person_id": 999, "role": "leader",
                                                "unit_id": sec1})
    assert r.status_code == 404 and r.json["message"] == "person 999 does not exist"
    r = api.post("admin", f"{ORG}/roles", json={"person_id": api.org.s1, "role": "leader",
                                                "unit_id": 999})
    assert r.status_code == 404 and r.json["message"] == "unit 999 does not exist"


def test_the_last_admin_assignment_stays(api):
    (mine,) = api.get("s1", f"{ORG}/roles?role=admin").json
    r = api.delete("admin", f"{ORG}/roles/{mine['id']}")
    assert r.status_code == 409 and r.json["code"] == "action_not_allowed"
    assert "last admin" in r.json["message"]
    second = api.post("admin", f"{ORG}/roles", json={"person_id": api.org.c2, "role": "admin",
                                                     "unit_id": api.org.units["ORG"]})
    assert second.status_code == 201
    assert api.delete("admin", f"{ORG}/roles/{mine['id']}").status_code == 204
    assert api.get("s1", f"{ORG}/roles?role=admin").json == [second.json]


def test_values_no_column_can_hold_are_422_not_500(api):
    """NUL characters (PostgreSQL text refuses them) and ids past INTEGER."""
    sec1, big = api.org.units["SEC1"], 2**40
    refused = [
        ("get", f"{ORG}/people?q=a%00b", None, "query.q"),
        ("get", f"{ORG}/people?unit_id={big}", None, "query.unit_id"),
        ("get", f"{ORG}/roles?role=x%00", None, "query.role"),
        ("post", f"{ORG}/units", {"code": "A\x00", "name": "x", "parent_id": big},
         "json.code"),
        ("post", f"{ORG}/units", {"code": "A", "name": "x", "parent_id": big},
         "json.parent_id"),
        ("post", f"{ORG}/people", {"code": "N", "name": "n\x00", "unit_id": sec1}, "json.name"),
        ("patch", f"{ORG}/people/{api.org.s1}", {"post": "\x00"}, "json.post"),
        ("post", f"{ORG}/roles", {"person_id": big, "role": "leader", "unit_id": sec1},
         "json.person_id"),
        ("post", f"{ORG}/import", {"csv": HEADER + "X\x00,新,,,,,,,,,\n"}, "json.csv"),
    ]
    for method, url, body, fields in refused:
        r = getattr(api, method)("admin", url, json=body)
        assert r.status_code == 422, (url, r.json)
        assert set(r.json["fields"]) == ({fields} if isinstance(fields, str) else fields)
    assert api.get("s1", f"{ORG}/units/{big}").status_code == 404


# --------------------------------------------------------------------------- import


def test_admin_imports_csv(api):
    r = api.post("admin", f"{ORG}/import", json={"csv": GOOD})
    assert r.status_code == 200, r.json
    # SEC1 and SEC2 exist in the test organisation already: only CITY is new.
    assert r.json == {"rows": 4, "units_created": 1, "people_created": 3, "people_updated": 0,
                      "roles_added": 4, "users_created": 3}
    assert set(_units(api)) == {"ORG", "SEC1", "SEC2", "CITY"}
    p3 = api.get("s1", f"{ORG}/people?q=P3").json["items"]
    assert [(p["name"], p["unit_name"], p["rank_since"]) for p in p3] == \
        [("张伟", "干部一科", "2023-01-01")]
    again = api.post("admin", f"{ORG}/import", json={"csv": GOOD})
    assert (again.json["people_created"], again.json["people_updated"]) == (0, 3)


def test_bad_rows_are_422_with_line_numbers_and_nothing_is_imported(api):
    bad = HEADER + (
        "NEW,新单位,,N1,新人,staff,,,,,\n"
        "NEW,,,N2,,boss,,2024-13-01,,,\n"
        "NEW2,新单位2,NOWHERE,N3,某人,staff,,,,wizard,\n")
    r = api.post("admin", f"{ORG}/import", json={"csv": bad})
    assert r.status_code == 422
    assert r.json["code"] == "import_failed"
    lines = [e["line"] for e in r.json["errors"]]
    assert lines == sorted(lines) and set(lines) == {3, 4}
    messages = " ".join(e["message"] for e in r.json["errors"])
    assert "needs a name" in messages and "'boss'" in messages and "'wizard'" in messages
    assert set(_units(api)) == {"ORG", "SEC1", "SEC2"}
    assert api.get("s1", f"{ORG}/people?q=N1").json["total"] == 0


def test_import_needs_csv_text(api):
    r = api.post("admin", f"{ORG}/import", json={"csv": ""})
    assert r.status_code == 422 and "json.csv" in r.json["fields"]
    r = api.post("admin", f"{ORG}/import", json={"csv": "name,colour\nx,y\n"})
    assert r.status_code == 422
    assert [e["line"] for e in r.json["errors"]] == [1, 1]
    assert "missing column(s) unit_code" in r.json["errors"][0]["message"]
    assert "unknown column(s) colour" in r.json["errors"][1]["message"]


# --------------------------------------------------------------------------- documentation


def test_the_openapi_document_describes_the_org_paths(api):
    paths = api.get("s1", "/api/v1/openapi.json").json["paths"]
    expected = {
        f"{ORG}/units": {"get", "post"},
        f"{ORG}/units/{{unit_id}}": {"get"},
        f"{ORG}/people": {"get", "post"},
        f"{ORG}/people/{{person_id}}": {"get", "patch"},
        f"{ORG}/roles": {"get", "post"},
        f"{ORG}/roles/{{assignment_id}}": {"delete"},
        f"{ORG}/import": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    people = paths[f"{ORG}/people"]["get"]
    assert {p["name"] for p in people["parameters"]} >= {"unit_id", "q", "page", "per_page"}
    assert "人员" in people["summary"]
