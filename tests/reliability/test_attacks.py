"""What a tester attacking the service found (issue 11, items 3, 5, 6, 8, 9), kept fixed.

- bodies too large: 413 before the body is read (announced or chunked), larger limits for
  the imports and flow uploads only, both configurable;
- malformed JSON (an integer of 5,000 digits, `[` nested 980 deep, bad UTF-8) on every
  operation that takes JSON, signed in or not: 400 with the problem shape, no error logged;
  a huge integer in a flow definition: a problem naming its path;
- dates a person's record cannot hold (9999-12-31, 0001-01-01) in the facts API, its CSV
  import, the organisation's people and import, the eligibility date: a field error;
- flow labels written as HTML reach mermaid as its entity codes, never as markup;
- the security headers on every answer, HEAD /login like GET, `%` and `_` in the case
  list's text search taken literally.

Unlike the rest of the suite this file runs on SQLite and PostgreSQL (what it tests does
not depend on the database, but the fixes touch queries and writes on both). The browser
side (the Content-Security-Policy with htmx, mermaid and Swagger UI, the labels drawn by
mermaid) is tests/web/test_security_pages.py. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from service.app import SECURITY_HEADERS, create_app
from service.limits import MAX_BODY, MAX_JSON_DEPTH

# Both databases: the suite-wide fixture, over the reliability suite's PostgreSQL-only one.
from ..conftest import db_url  # noqa: F401

pytestmark = pytest.mark.reliability

FLOWS = "/api/v1/flows"
FACTS = "/api/v1/facts"
BIG_INT = "9" * 5000  # Python reads at most 4,300 digits from text
ATTACKS = {
    "a 5,000-digit integer": b'{"username": "admin", "password": ' + BIG_INT.encode() + b"}",
    "[ nested 980 deep": b"[" * 980 + b"]" * 980,
    "{ nested 100,000 deep": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    f"nested {MAX_JSON_DEPTH + 1} deep": b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
    "not UTF-8": b'{"username": "\xff\xfe"}',
    "not JSON": b'{"username": ',
}


def _problem(r, status: int) -> dict:
    body = r.get_json()
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:300])
    assert body["status"] == status and body["code"] and body["message"], body
    return body


def _no_error_logged(caplog) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert "Traceback" not in caplog.text


# --------------------------------------------------------------------------- 3. body size


class _Untouchable(io.RawIOBase):
    """A request body that must never be read."""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        raise AssertionError("the body was read")


class _Long(io.RawIOBase):
    """A chunked body four times the limit (a bound, so that a regression reads it all and
    fails instead of reading without end); counts what was read of it."""

    def __init__(self, size: int):
        self.size, self.taken = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.size - self.taken)
        b[:n] = b"x" * n
        self.taken += n
        return n


@pytest.mark.parametrize("url, content_type", [
    ("/api/v1/auth/token", "application/json"),
    ("/api/v1/auth/token", "application/x-www-form-urlencoded"),
    ("/login", "application/x-www-form-urlencoded"),
    (f"{FACTS}/import", "application/json"),  # even the large limit has an end
    ("/flows/upload", "multipart/form-data; boundary=x"),
])
def test_an_announced_body_over_the_limit_is_413_unread(api, caplog, url, content_type):
    r = api.client.post(url, environ_overrides={
        "wsgi.input": _Untouchable(), "CONTENT_LENGTH": str(200_000_000),
        "CONTENT_TYPE": content_type})
    body = _problem(r, 413)
    assert body["code"] == "request_entity_too_large"
    assert "200000000 bytes" in body["message"], body
    _no_error_logged(caplog)


def test_a_chunked_body_is_cut_at_the_limit(api, caplog):
    stream = _Long(4 * MAX_BODY)
    r = api.client.post("/api/v1/auth/token", environ_overrides={
        "wsgi.input": stream, "wsgi.input_terminated": True,
        "CONTENT_TYPE": "application/json"})
    _problem(r, 413)
    assert MAX_BODY <= stream.taken <= MAX_BODY + 64 * 1024  # werkzeug reads 64 KiB at a time
    _no_error_logged(caplog)


def test_imports_and_uploads_take_more_than_ordinary_requests(api):
    padding = " " * (MAX_BODY + 1)  # JSON allows whitespace after the value
    csv = "person_code,fact,year,value\nS1,annual_result,2024,称职\n"
    big = (json.dumps({"csv": csv}) + padding).encode()
    r = api.post("admin", f"{FACTS}/import", data=big, content_type="application/json")
    assert r.status_code == 200, r.get_json()
    r = api.post("owner", f"{FLOWS}/validate",
                 data=(json.dumps({"source": "flow: x"}) + padding).encode(),
                 content_type="application/json")
    assert r.status_code == 422  # read and judged (not a flow), not refused for its size
    token = (json.dumps({"username": "admin", "password": "x"}) + padding).encode()
    _problem(api.client.post("/api/v1/auth/token", data=token,
                             content_type="application/json"), 413)
    # the cases' own endpoints keep the ordinary limit
    _problem(api.post("s1", "/api/v1/cases", data=big, content_type="application/json"), 413)


def test_the_limits_come_from_the_config_and_the_environment(api, monkeypatch):
    engine = api.client.application.extensions["civflow"]
    app = create_app(engine.db.url, config={"SECRET_KEY": "t", "CIVFLOW_MAX_BODY": 100,
                                            "CIVFLOW_MAX_IMPORT_BODY": 1000}, engine=engine)
    c = app.test_client()
    assert c.post("/api/v1/auth/token", data=b" " * 101,
                  content_type="application/json").status_code == 413
    headers = api.headers("admin")
    body = json.dumps({"csv": "x"}).encode()
    assert c.post(f"{FACTS}/import", data=body + b" " * 500, headers=headers,
                  content_type="application/json").status_code == 422  # read: bad CSV
    assert c.post(f"{FACTS}/import", data=body + b" " * 1000, headers=headers,
                  content_type="application/json").status_code == 413

    monkeypatch.setenv("CIVFLOW_MAX_BODY", "50")
    app = create_app(engine.db.url, config={"SECRET_KEY": "t"}, engine=engine)
    assert app.config["CIVFLOW_MAX_BODY"] == 50
    assert app.test_client().post("/api/v1/auth/token", data=b" " * 51,
                                  content_type="application/json").status_code == 413
    monkeypatch.setenv("CIVFLOW_MAX_BODY", "2MB")
    with pytest.raises(ValueError, match="CIVFLOW_MAX_BODY must be a number of bytes"):
        create_app(engine.db.url, config={"SECRET_KEY": "t"}, engine=engine)


# --------------------------------------------------------------------------- 5. malformed JSON


def _json_operations(api) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document that takes a JSON body, with real
    values in its path (a case of s1, the published flow, …)."""
    spec = api.get("admin", "/api/v1/openapi.json").get_json()
    case = api.post("s1", "/api/v1/cases", json={"flow": "regular-assessment",
                                                 "subject_id": api.org.s1,
                                                 "period_key": "2026-11"}).get_json()
    values = {"case_id": str(case["id"]), "flow": "regular-assessment", "trigger": "submit",
              "version": "1", "year": "2026", "unit_code": "SEC1"}
    out = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method != "parameters" and "application/json" in op.get(
                    "requestBody", {}).get("content", {}):
                filled = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1"), path)
                out.append((method, filled))
    return out


def test_malformed_json_is_400_on_every_operation(api, caplog):
    operations = _json_operations(api)
    assert len(operations) > 30
    assert ("post", "/api/v1/auth/token") in operations
    for method, path in operations:
        for what, raw in ATTACKS.items():
            for who in (None, "admin"):  # signed in or not: the body is judged first
                headers = api.headers(who) if who else {}
                r = api.client.open(path, method=method.upper(), data=raw, headers=headers,
                                    content_type="application/json")
                body = _problem(r, 400)
                assert body["code"] == "invalid_request" and "json" in body["fields"], \
                    (method, path, what, body)
    _no_error_logged(caplog)


def test_the_refusals_say_what_is_wrong(api):
    def message(raw: bytes) -> str:
        r = api.client.post("/api/v1/auth/token", data=raw, content_type="application/json")
        return r.get_json()["fields"]["json"][0]

    assert "4300 digits" in message(ATTACKS["a 5,000-digit integer"])
    assert f"nested more than {MAX_JSON_DEPTH} levels" in message(ATTACKS["[ nested 980 deep"])
    assert "UTF-8" in message(ATTACKS["not UTF-8"])
    assert message(ATTACKS["not JSON"]).startswith("not valid JSON: Expecting value")
    # an ordinary body still works (and nesting up to the limit is fine)
    deep = {"username": "admin", "password": "x", "note": json.loads(
        "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))}
    r = api.client.post("/api/v1/auth/token", json=deep)
    assert r.status_code in (401, 422), r.get_json()  # judged as credentials, not as JSON


@pytest.mark.parametrize("filename, source", [
    ("big.yaml", "flow: big\ntitle: 大\nstates:\n  - {name: a, label: "
                 + BIG_INT + "}\n"),
    ("big.json", '{"flow": "big", "title": "大", "states": [{"name": "a", "label": '
                 + BIG_INT + "}]}"),
])
def test_a_huge_integer_in_a_definition_is_a_problem_at_its_path(api, caplog, filename,
                                                                 source):
    for url in (FLOWS, f"{FLOWS}/validate"):
        body = _problem(api.post("owner", url, json={"source": source, "filename": filename}),
                        422)
        problem = next(p for p in body["problems"] if p["path"] == "states[0].label")
        assert "5000 digits" in problem["message"], body
        if filename.endswith(".yaml"):
            assert problem["line"] == 4
    assert not api.get("owner", FLOWS).get_json()[1:]  # nothing stored: the one shipped flow
    _no_error_logged(caplog)


def test_huge_numbers_in_well_formed_bodies_never_give_500(api, caplog):
    """Numbers JSON can carry (4,000 digits, 1e308, 2**63) in every numeric field of every
    operation's schema: refused as fields, never a 500."""
    spec = api.get("admin", "/api/v1/openapi.json").get_json()
    schemas = spec["components"]["schemas"]

    def resolve(s: dict) -> dict:
        while "$ref" in s:
            s = schemas[s["$ref"].rsplit("/", 1)[-1]]
        return s

    def fill(s: dict, big):
        s = resolve(s)
        if "properties" in s:
            return {k: fill(v, big) for k, v in s["properties"].items()}
        kind = s.get("type")
        if kind == "array":
            return [fill(s.get("items", {}), big)]
        if kind in ("integer", "number"):
            return big
        return {"boolean": True}.get(kind, "2024-01-01" if s.get("format") == "date" else "x")

    operations = _json_operations(api)
    by_path = {(m, p): op for p, ops in spec["paths"].items() for m, op in ops.items()
               if m != "parameters"}
    for method, path in operations:
        template = next(op for (m, p), op in by_path.items() if m == method and re.fullmatch(
            re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(p)), path))
        schema = template["requestBody"]["content"]["application/json"]["schema"]
        for big in (10**4000, -(10**4000), 1e308, 2**63):
            r = api.client.open(path, method=method.upper(), json=fill(schema, big),
                                headers=api.headers("admin"))
            assert r.status_code < 500, (method, path, str(big)[:20], r.get_json())
    _no_error_logged(caplog)


# --------------------------------------------------------------------------- 6. dates


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "1948-12-31", "2101-01-01"])
def test_dates_a_record_cannot_hold_are_field_errors(api, caplog, day):
    s1 = api.org.s1
    for kind, body, field in [
        ("sanctions", {"kind": "记大过", "decided_on": day}, "decided_on"),
        ("rank_history", {"rank": "二级主任科员", "since": day}, "since"),
        ("investigations", {"opened_on": day}, "opened_on"),
        ("exam_results", {"exam": "政治理论考试", "taken_on": day, "passed": True,
                          "score": "90"}, "taken_on"),
        ("commendations", {"kind": "嘉奖", "decided_on": day}, "decided_on"),
    ]:
        r = api.post("admin", f"{FACTS}/{kind}", json={"person_id": s1, **body})
        assert _problem(r, 422)["fields"] == {
            field: [f"{day} is not a date between 1949-01-01 and 2100-12-31"]}, kind
    r = api.post("admin", f"{FACTS}/investigations",
                 json={"person_id": s1, "opened_on": "2024-01-01", "closed_on": day})
    assert "closed_on" in _problem(r, 422)["fields"]

    csv = ("person_code,fact,date,until,value,passed\n"
           f"S1,sanction,{day},,记大过,\nS1,rank,{day},,二级主任科员,\n"
           f"S1,investigation,2024-01-01,{day},,\nS1,commendation,{day},,嘉奖,\n"
           f"S1,exam,{day},,政治理论考试,是\n")
    body = _problem(api.post("admin", f"{FACTS}/import", json={"csv": csv}), 422)
    assert [e["line"] for e in body["errors"]] == [2, 3, 4, 5, 6], body
    assert all("is not a date between 1949-01-01 and 2100-12-31" in e["message"]
               for e in body["errors"]), body

    r = api.patch("admin", f"/api/v1/org/people/{s1}", json={"rank_since": day})
    assert "json.rank_since" in _problem(r, 422)["fields"]
    r = api.post("admin", "/api/v1/org/people", json={
        "code": "NEW1", "name": "新人", "unit_id": api.org.units["SEC1"], "rank_since": day})
    assert "json.rank_since" in _problem(r, 422)["fields"]
    csv = f"unit_code,person_code,name,rank_since\nSEC1,NEW2,新人,{day}\n"
    body = _problem(api.post("admin", "/api/v1/org/import", json={"csv": csv}), 422)
    assert "rank_since" in body["errors"][0]["message"] and body["errors"][0]["line"] == 2
    r = api.get("admin", f"/api/v1/ledger/eligibility?date={day}")
    assert "query.date" in _problem(r, 422)["fields"]

    # nothing was written
    facts = api.get("admin", f"{FACTS}/people/{s1}").get_json()
    assert not any(facts[k] for k in ("sanctions", "exam_results", "commendations"))
    assert api.get("admin", f"{FACTS}/people/{s1}/audit").get_json()["total"] == 0
    assert api.get("admin", "/api/v1/org/people?q=NEW").get_json()["total"] == 0
    _no_error_logged(caplog)


def test_the_edges_of_the_range_are_dates_like_any_other(api):
    for day in ("1949-01-01", "2100-12-31"):
        r = api.post("admin", f"{FACTS}/sanctions",
                     json={"person_id": api.org.s1, "kind": "记大过", "decided_on": day})
        assert r.status_code == 201, r.get_json()
    assert r.get_json()["effect_ends"] == "2102-06-30"


def test_a_case_form_date_without_bounds_keeps_to_the_same_years():
    """Dates typed into a case's form (a dispatch's term, a promotion's effective date)
    feed timers and write-backs: without bounds of their own they keep to the record's."""
    from marshmallow import ValidationError

    from workflows.forms import build_schema
    from workflows.spec import FieldSpec, Label

    fields = {"day": FieldSpec("day", "date", Label("日期")),
              "late": FieldSpec("late", "date", Label("日期"), min="2200-01-01"),
              "old": FieldSpec("old", "date", Label("日期"), max="1900-01-01")}
    schema = build_schema(fields, (), tuple(fields))
    assert schema.load({"day": "2100-12-31", "late": "2300-01-01", "old": "1800-01-01"})
    assert schema.load({"day": "1949-01-01"})
    for day in ("9999-12-31", "0001-01-01"):
        with pytest.raises(ValidationError) as refused:
            schema.load({"day": day})
        assert list(refused.value.messages) == ["day"]


# --------------------------------------------------------------------------- 8. diagram labels

HTML_LABELS = """\
flow: html-labels
title: 标签
states:
  - {name: draft, label: '<img src=x onerror=alert(1)>'}
  - {name: done, label: '<b>bold</b> & <a href="javascript:alert(2)">link</a>', final: true}
transitions:
  - {trigger: finish, from: draft, to: done, by: subject, label: '<script>alert(3)</script>'}
"""


def test_diagram_labels_reach_mermaid_without_markup(api):
    r = api.post("owner", FLOWS, json={"source": HTML_LABELS})
    assert r.status_code == 201, r.get_json()
    text = api.get("owner", f"{FLOWS}/html-labels/versions/1").get_json()["mermaid"]
    labels = [line.split(" : ", 1)[1] for line in text.splitlines() if " : " in line]
    assert len(labels) == 3
    assert not any(c in label for label in labels for c in "<>&"), labels
    assert "draft : #lt;img src=x onerror=alert(1)#gt;" in text
    assert ("#lt;b#gt;bold#lt;/b#gt; #amp; #lt;a href=\"javascript：alert(2)\"#gt;link"
            "#lt;/a#gt;") in text
    assert "#lt;script#gt;alert(3)#lt;/script#gt;" in text


# --------------------------------------------------------------------------- 9. headers, HEAD, LIKE


def test_every_answer_carries_the_security_headers(api):
    answers = [api.client.get("/login"), api.client.get("/healthz"),
               api.client.post("/api/v1/auth/token", json={}),
               api.get("s1", "/api/v1/cases"), api.get("s1", "/home"),
               api.get("owner", "/docs"), api.client.get("/static/web/civflow.js")]
    for r in answers:
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (r.request.path, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-eval" not in csp
    docs = api.get("owner", "/docs").get_data(as_text=True)
    assert "<script>" not in docs and "api-docs.js" in docs  # no inline script


def test_head_login_answers_like_get(api):
    get, head = api.client.get("/login"), api.client.head("/login")
    assert get.status_code == head.status_code == 200
    assert head.get_data() == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert int(head.headers["Content-Length"]) > 1000  # the page's length, not sent


def test_percent_and_underscore_are_searched_for_themselves(api):
    with api.db.unit_of_work() as s:
        from workflows.models import Person
        s.get(Person, api.org.s1).name = "百分之100%"
        s.get(Person, api.org.s2).name = "下划_线"
    for who in ("s1", "s2", "s3"):
        r = api.post("owner", "/api/v1/cases", json={"flow": "regular-assessment",
                                                    "subject_id": getattr(api.org, who),
                                                    "period_key": "2026-11"})
        assert r.status_code == 201, r.get_json()

    def found(q: str) -> set[int]:
        items = api.get("l1", "/api/v1/cases", query_string={"q": q}).get_json()["items"]
        return {c["subject"]["id"] for c in items}

    assert found("%") == {api.org.s1}
    assert found("_") == {api.org.s2}
    assert found("0%") == {api.org.s1}
    assert found("下_线") == set()  # `_` is not "any character"
    assert found("测试s3") == {api.org.s3}
