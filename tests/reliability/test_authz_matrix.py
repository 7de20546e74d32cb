"""The authorization matrix (权限矩阵): every operation of the OpenAPI document × every kind
of user, against a declarative table of what each may do (issue 7, item 2).

Kinds of user (columns of `MATRIX`), from the `org` fixture of tests/conftest.py:

    anon     anonymous: no token
    subject  s1, the staff member whose case the case ids point at (本人)
    staff    s2, another staff member of the same unit (同事)
    leader   l1, leader of that unit, SEC1 (本单位领导)
    other    l2, leader of another unit, SEC2 (其他单位领导)
    committee c2, committee member of the root unit (审定; no other role)
    owner    process owner (流程管理员)
    admin    admin (系统管理员)

Outcome classes: `ok` (2xx — for the bulk endpoint, the case moved: a bulk refusal is
reported inside a 200, so its item's status is the outcome), `401`, `403` (signed in but
not allowed; the body says why), `404` (not visible: whether a case, a person's facts or a
notification exists is not for everyone to know). Anything else — 500 above all — fails.

Every cell runs on a fresh database of its user (one test per kind of user), with path
parameters filled with real ids of seeded rows and bodies that are valid, so that a cell's
outcome is decided by who asks and nothing else. Writes run after reads, and the two
requests that revoke the caller's token use a token of their own.

The test fails when the OpenAPI document has an operation the table does not classify: a
new endpoint must be added here with its expected row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from workflows.accounts import BEARER, issue_token
from workflows.engine import Actor, utcnow
from workflows.models import Person, RoleAssignment, Unit
from workflows.notify import NotifyConfig, queue
from workflows.org import assign_role

from ..conftest import PASSWORD, REGULAR, ROOT

pytestmark = pytest.mark.reliability
KINDS = ("anon", "subject", "staff", "leader", "other", "committee", "owner", "admin")
USER = {"anon": None, "subject": "s1", "staff": "s2", "leader": "l1", "other": "l2",
        "committee": "c2", "owner": "owner", "admin": "admin"}
PROMOTION = ROOT / "definitions" / "rank-promotion.yaml"
FACT_KINDS = {  # kind → a valid body (person_id added)
    "rank_history": {"rank": "二级主任科员", "since": "2022-03-01"},
    "annual_results": {"year": 2024, "grade": "优秀"},
    "sanctions": {"kind": "记大过", "decided_on": "2024-01-15"},
    "investigations": {"opened_on": "2024-02-01"},
    "exam_results": {"exam": "政治理论考试", "taken_on": "2024-06-01", "passed": True,
                     "score": "91.5"},
    "training_hours": {"year": 2024, "hours": 36.5},
    "commendations": {"kind": "嘉奖", "decided_on": "2023-12-01"},
    "training_records": {"course": "任职培训班", "hours": 24, "taken_on": "2024-05-01",
                         "kind": "offline"},
    "consequences": {"kind": "通报表扬", "period": "2024-05", "decided_on": "2024-07-10"},
    "dispatch_outcomes": {"post_type": "第一书记", "receiving_unit": "青山镇石桥村",
                          "term_start": "2023-01-01", "term_end": "2024-12-31",
                          "grade": "优秀", "decided_on": "2025-01-15"},
}
FACT_PATCH = {"rank_history": {"since": "2022-04-01"}, "annual_results": {"grade": "称职"},
              "sanctions": {"decided_on": "2024-01-16"}, "investigations": {
                  "closed_on": "2024-04-01"}, "exam_results": {"passed": False},
              "training_hours": {"hours": 40}, "commendations": {"kind": "记三等功"},
              "training_records": {"hours": 30}, "consequences": {"kind": "嘉奖记功人选"},
              "dispatch_outcomes": {"grade": "称职"}}

# --------------------------------------------------------------------------- the table

_ALL = "401 ok ok ok ok ok ok ok"
_ADMIN = "401 403 403 403 403 403 403 ok"
_OWNER = "401 403 403 403 403 403 ok 403"
_OWNER_ADMIN = "401 403 403 403 403 403 ok ok"
_READERS = "401 403 403 ok ok ok ok ok"  # leaders, committee, owners, admins
_CASE_A = "401 ok 404 ok 404 ok ok ok"  # s1's case: s1, SEC1's leader, committee above, all
_STEP_B = "401 404 404 ok 404 403 403 403"  # a step of s3's case that only SEC1's leader takes
_PUBLIC = "ok ok ok ok ok ok ok ok"

MATRIX: dict[str, str] = {
    "POST /api/v1/auth/token": _PUBLIC,
    "DELETE /api/v1/auth/token": _ALL,
    "POST /api/v1/auth/login": _PUBLIC,
    "POST /api/v1/auth/logout": _ALL,
    "GET /api/v1/auth/me": _ALL,
    "GET /api/v1/auth/lockouts": _ADMIN,
    "POST /api/v1/auth/lockouts/lift": _ADMIN,
    "GET /api/v1/auth/security-events": _ADMIN,
    "GET /api/v1/flows": _ALL,
    "POST /api/v1/flows": _OWNER,
    "POST /api/v1/flows/validate": _ALL,
    "GET /api/v1/flows/{flow}/versions/{version}": _ALL,
    "POST /api/v1/flows/{flow}/versions/{version}/publish": _OWNER,
    "GET /api/v1/cases": _ALL,
    # A case for s1: s1, a leader above s1, process owners and admins; not a colleague, not
    # another unit's leader, not a committee member.
    "POST /api/v1/cases": "401 ok 403 ok 403 403 ok ok",
    "GET /api/v1/cases/{case_id}": _CASE_A,
    "GET /api/v1/cases/{case_id}/history": _CASE_A,
    "GET /api/v1/cases/{case_id}/timers": _CASE_A,
    # submit (提交小结) is s1's own step: those who see the case but are not s1 get 403.
    "POST /api/v1/cases/{case_id}/actions/{trigger}": "401 ok 404 403 404 403 403 403",
    "GET /api/v1/queue": _ALL,
    "POST /api/v1/queue/{case_id}/claim": _STEP_B,
    "POST /api/v1/queue/{case_id}/release": _STEP_B,
    "POST /api/v1/queue/{case_id}/delegate": _STEP_B,
    "POST /api/v1/queue/bulk": _STEP_B,
    "GET /api/v1/org/units": _ALL,
    "POST /api/v1/org/units": _ADMIN,
    "GET /api/v1/org/units/{unit_id}": _ALL,
    "GET /api/v1/org/people": _ALL,
    "POST /api/v1/org/people": _ADMIN,
    "GET /api/v1/org/people/{person_id}": _ALL,
    "PATCH /api/v1/org/people/{person_id}": _ADMIN,
    "GET /api/v1/org/roles": _ALL,
    "POST /api/v1/org/roles": _ADMIN,
    "DELETE /api/v1/org/roles/{assignment_id}": _ADMIN,
    "POST /api/v1/org/import": _ADMIN,
    "GET /api/v1/notifications": _ALL,
    "POST /api/v1/notifications/{notification_id}/read": "401 ok 404 404 404 404 404 404",
    "POST /api/v1/notifications/read-all": _ALL,
    "GET /api/v1/notifications/deliveries": _ADMIN,
    "GET /api/v1/facts/people/{person_id}": _CASE_A,  # s1's facts: as s1's cases
    "GET /api/v1/facts/people/{person_id}/audit": _ADMIN,
    "POST /api/v1/facts/import": _ADMIN,
    **{f"{method} /api/v1/facts/{kind}{suffix}": _ADMIN for kind in FACT_KINDS
       for method, suffix in (("POST", ""), ("PATCH", "/{fact_id}"), ("DELETE", "/{fact_id}"))},
    "GET /api/v1/ledger/states": _ALL,
    "GET /api/v1/ledger/rates": _ALL,
    "GET /api/v1/ledger/grades": _ALL,
    "GET /api/v1/ledger/good-counts": _ALL,
    "GET /api/v1/ledger/cases": _ALL,
    "GET /api/v1/ledger/eligibility": _ALL,
    "GET /api/v1/contact-points": _READERS,
    "PUT /api/v1/contact-points/{unit_code}/{year}": _OWNER_ADMIN,
    "DELETE /api/v1/contact-points/{unit_code}/{year}": _OWNER_ADMIN,
    "POST /api/v1/contact-points/import": _OWNER_ADMIN,
    "GET /api/v1/contact-point-register": _READERS,
    "POST /api/v1/contact-point-register": _OWNER_ADMIN,
    "GET /api/v1/contact-point-register/{entry_id}": "401 403 403 ok 404 ok ok ok",  # SEC1's
    "PATCH /api/v1/contact-point-register/{entry_id}": _OWNER_ADMIN,
    "DELETE /api/v1/contact-point-register/{entry_id}": _OWNER_ADMIN,
    "GET /api/v1/rank-positions": _READERS,
    "PUT /api/v1/rank-positions/{unit_code}/{rank}/{round}": _OWNER_ADMIN,
    "DELETE /api/v1/rank-positions/{unit_code}/{rank}/{round}": _OWNER_ADMIN,
    "POST /api/v1/rank-positions/import": _OWNER_ADMIN,
    "POST /api/v1/flows/{flow}/migrations/preview": _OWNER_ADMIN,
    "GET /api/v1/flows/{flow}/migrations": _OWNER_ADMIN,
    "POST /api/v1/flows/{flow}/migrations": _OWNER_ADMIN,
}


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """The seeded rows whose ids fill path parameters, and the ways to read live values."""

    api: Any
    ids: dict[str, int] = field(default_factory=dict)

    def version(self, case_id: int) -> str:
        return f'"{self.api.client.application.extensions["civflow"].get_case(case_id).version}"'


@dataclass(frozen=True)
class Req:
    path: str
    json: dict | None = None
    query: dict | None = None
    if_match: int | None = None  # a case id: send its current version as If-Match
    own_token: bool = False  # a token of its own (the request revokes it)
    public: bool = False  # send no token even for a signed-in user (logging in)


def _seed(api, engine, org) -> World:
    w = World(api)
    engine.publish(PROMOTION.read_text(encoding="utf-8"), str(PROMOTION))
    # A second version of the regular assessment (a new title): what migrations move to.
    engine.publish(REGULAR.read_text(encoding="utf-8").replace(
        "title: {zh: 平时考核, en: Regular assessment}",
        "title: {zh: 平时考核（修订）, en: Regular assessment (revised)}"), "regular-v2.yaml")
    P = Actor.person
    a = engine.start_case("regular-assessment", org.s1, period_key="2026-11")
    b = engine.start_case("regular-assessment", org.s3, period_key="2026-11")
    engine.fire(b.id, "submit", P(org.s3), data={"summary": "三号的小结"})
    c = engine.start_case("regular-assessment", org.s4, period_key="2026-11")
    engine.fire(c.id, "submit", P(org.s4), data={"summary": "四号的小结"})
    w.ids.update(case_a=a.id, case_b=b.id, case_c=c.id)
    with api.db.unit_of_work() as s:
        w.ids["notification"] = queue(
            s, person_ids=[org.s1], case_id=a.id, kind="reminder", title="请提交小结",
            body="本月小结", key_prefix="authz", now=utcnow(), config=NotifyConfig())[0]
        assign_role(s, s.get(Person, org.t2), "committee", s.get(Unit, org.units["SEC2"]))
        # d1, SEC1's deputy, made a 处室负责人: a second evaluator of SEC1's staff, so that
        # the evaluation step can be delegated (转办) to someone who may act on it.
        assign_role(s, s.get(Person, org.d1), "leader", s.get(Unit, org.units["SEC1"]))
        w.ids["role"] = s.execute(select(RoleAssignment.id).where(
            RoleAssignment.person_id == org.t2, RoleAssignment.role == "committee")).scalar_one()
    for kind, body in FACT_KINDS.items():
        for use, person in (("patch", org.s3), ("delete", org.s5)):
            r = api.post("admin", f"/api/v1/facts/{kind}", json={"person_id": person, **body})
            assert r.status_code == 201, (kind, r.get_json())
            w.ids[f"{kind}:{use}"] = r.get_json()["id"]
    r = api.put("owner", "/api/v1/contact-points/SEC1/2026", json={"score": 90})
    assert r.status_code == 201, r.get_json()
    for unit, liaison, use in (("SEC1", org.s1, "patch"), ("SEC2", org.t1, "delete")):
        r = api.post("owner", "/api/v1/contact-point-register", json={
            "unit_code": unit, "year": 2026, "liaison_id": liaison})
        assert r.status_code == 201, r.get_json()
        w.ids[f"register:{use}"] = r.get_json()["id"]
    r = api.put("owner", "/api/v1/rank-positions/ORG/一级主任科员/2026-1", json={"positions": 3})
    assert r.status_code == 201, r.get_json()
    return w


def _requests(w: World, org, who: str | None) -> dict[str, Req]:
    """One valid request per operation (method and path template)."""
    ids, units = w.ids, org.units
    creds = {"username": who or "s1", "password": PASSWORD}
    new_flow = REGULAR.read_text(encoding="utf-8").replace(
        "flow: regular-assessment", "flow: authz-probe", 1)
    reqs: dict[str, Req] = {
        "POST /api/v1/auth/token": Req("/api/v1/auth/token", creds, public=True),
        "DELETE /api/v1/auth/token": Req("/api/v1/auth/token", own_token=True),
        "POST /api/v1/auth/login": Req("/api/v1/auth/login", creds, public=True),
        "POST /api/v1/auth/logout": Req("/api/v1/auth/logout", own_token=True),
        "GET /api/v1/auth/me": Req("/api/v1/auth/me"),
        "GET /api/v1/auth/lockouts": Req("/api/v1/auth/lockouts"),
        "POST /api/v1/auth/lockouts/lift": Req("/api/v1/auth/lockouts/lift",
                                               {"username": "s5"}),
        "GET /api/v1/auth/security-events": Req("/api/v1/auth/security-events"),
        "GET /api/v1/flows": Req("/api/v1/flows"),
        "POST /api/v1/flows": Req("/api/v1/flows", {"source": new_flow,
                                                    "filename": "authz-probe.yaml"}),
        "POST /api/v1/flows/validate": Req("/api/v1/flows/validate",
                                           {"source": REGULAR.read_text(encoding="utf-8")}),
        "GET /api/v1/flows/{flow}/versions/{version}":
            Req("/api/v1/flows/regular-assessment/versions/1"),
        "POST /api/v1/flows/{flow}/versions/{version}/publish":
            Req("/api/v1/flows/regular-assessment/versions/1/publish"),
        "GET /api/v1/cases": Req("/api/v1/cases"),
        "POST /api/v1/cases": Req("/api/v1/cases", {
            "flow": "regular-assessment", "subject_id": org.s1, "period_key": "2026-10"}),
        "GET /api/v1/cases/{case_id}": Req(f"/api/v1/cases/{ids['case_a']}"),
        "GET /api/v1/cases/{case_id}/history": Req(f"/api/v1/cases/{ids['case_a']}/history"),
        "GET /api/v1/cases/{case_id}/timers": Req(f"/api/v1/cases/{ids['case_a']}/timers"),
        "POST /api/v1/cases/{case_id}/actions/{trigger}": Req(
            f"/api/v1/cases/{ids['case_a']}/actions/submit", {"data": {"summary": "小结"}},
            if_match=ids["case_a"]),
        "GET /api/v1/queue": Req("/api/v1/queue"),
        "POST /api/v1/queue/{case_id}/claim": Req(f"/api/v1/queue/{ids['case_b']}/claim",
                                                  if_match=ids["case_b"]),
        "POST /api/v1/queue/{case_id}/release": Req(f"/api/v1/queue/{ids['case_b']}/release",
                                                    if_match=ids["case_b"]),
        "POST /api/v1/queue/{case_id}/delegate": Req(
            f"/api/v1/queue/{ids['case_b']}/delegate", {"to": org.d1},
            if_match=ids["case_b"]),
        "POST /api/v1/queue/bulk": Req("/api/v1/queue/bulk", {
            "trigger": "evaluate", "case_ids": [ids["case_c"]], "data": {"grade": "较好"}}),
        "GET /api/v1/org/units": Req("/api/v1/org/units"),
        "POST /api/v1/org/units": Req("/api/v1/org/units", {"code": "AUTHZ", "name": "新处",
                                                            "parent_id": units["ORG"]}),
        "GET /api/v1/org/units/{unit_id}": Req(f"/api/v1/org/units/{units['SEC1']}"),
        "GET /api/v1/org/people": Req("/api/v1/org/people"),
        "POST /api/v1/org/people": Req("/api/v1/org/people", {
            "code": "AUTHZ-P", "name": "新人", "unit_id": units["SEC2"]}),
        "GET /api/v1/org/people/{person_id}": Req(f"/api/v1/org/people/{org.t1}"),
        "PATCH /api/v1/org/people/{person_id}": Req(f"/api/v1/org/people/{org.t1}",
                                                    {"post": "科员"}),
        "GET /api/v1/org/roles": Req("/api/v1/org/roles"),
        "POST /api/v1/org/roles": Req("/api/v1/org/roles", {
            "person_id": org.t1, "role": "committee", "unit_id": units["SEC2"]}),
        "DELETE /api/v1/org/roles/{assignment_id}": Req(f"/api/v1/org/roles/{ids['role']}"),
        "POST /api/v1/org/import": Req("/api/v1/org/import", {"csv": (
            "unit_code,unit_name,parent_unit_code,person_code,name,tier,rank,rank_since,post,"
            "roles,username\nSEC3,干部三科,ORG,AUTHZ-I,导入者,staff,,,,,\n")}),
        "GET /api/v1/notifications": Req("/api/v1/notifications"),
        "POST /api/v1/notifications/{notification_id}/read":
            Req(f"/api/v1/notifications/{ids['notification']}/read"),
        "POST /api/v1/notifications/read-all": Req("/api/v1/notifications/read-all"),
        "GET /api/v1/notifications/deliveries": Req("/api/v1/notifications/deliveries"),
        "GET /api/v1/facts/people/{person_id}": Req(f"/api/v1/facts/people/{org.s1}"),
        "GET /api/v1/facts/people/{person_id}/audit":
            Req(f"/api/v1/facts/people/{org.s3}/audit"),
        "POST /api/v1/facts/import": Req("/api/v1/facts/import", {"csv": (
            "person_code,fact,year,date,value,number\nT1,annual_result,2023,,优秀,\n")}),
        "GET /api/v1/ledger/states": Req("/api/v1/ledger/states",
                                         query={"flow": "regular-assessment"}),
        "GET /api/v1/ledger/rates": Req("/api/v1/ledger/rates",
                                        query={"flow": "regular-assessment"}),
        "GET /api/v1/ledger/grades": Req("/api/v1/ledger/grades",
                                         query={"flow": "regular-assessment"}),
        "GET /api/v1/ledger/good-counts": Req("/api/v1/ledger/good-counts", query={
            "flow": "regular-assessment", "year": 2026}),
        "GET /api/v1/ledger/cases": Req("/api/v1/ledger/cases",
                                        query={"flow": "regular-assessment"}),
        "GET /api/v1/ledger/eligibility": Req("/api/v1/ledger/eligibility"),
        "GET /api/v1/contact-points": Req("/api/v1/contact-points", query={"year": 2026}),
        "PUT /api/v1/contact-points/{unit_code}/{year}":
            Req("/api/v1/contact-points/SEC2/2026", {"score": 88}),
        "DELETE /api/v1/contact-points/{unit_code}/{year}":
            Req("/api/v1/contact-points/SEC1/2026"),
        "POST /api/v1/contact-points/import": Req("/api/v1/contact-points/import", {
            "csv": "unit_code,year,item,score,max,raised,note\nORG,2026,,30,,,\n"}),
        "GET /api/v1/contact-point-register": Req("/api/v1/contact-point-register",
                                                  query={"year": 2026}),
        "POST /api/v1/contact-point-register": Req("/api/v1/contact-point-register", {
            "unit_code": "ORG", "year": 2026, "liaison_id": org.c1}),
        "GET /api/v1/contact-point-register/{entry_id}":
            Req(f"/api/v1/contact-point-register/{ids['register:patch']}"),
        "PATCH /api/v1/contact-point-register/{entry_id}":
            Req(f"/api/v1/contact-point-register/{ids['register:patch']}", {"level": "区级"}),
        "DELETE /api/v1/contact-point-register/{entry_id}":
            Req(f"/api/v1/contact-point-register/{ids['register:delete']}"),
        "GET /api/v1/rank-positions": Req("/api/v1/rank-positions"),
        "PUT /api/v1/rank-positions/{unit_code}/{rank}/{round}":
            Req("/api/v1/rank-positions/SEC1/一级主任科员/2026-1", {"positions": 2}),
        "DELETE /api/v1/rank-positions/{unit_code}/{rank}/{round}":
            Req("/api/v1/rank-positions/ORG/一级主任科员/2026-1"),
        "POST /api/v1/rank-positions/import": Req("/api/v1/rank-positions/import", {
            "csv": "unit_code,rank,round,positions\nSEC2,一级主任科员,2026-1,1\n"}),
        "POST /api/v1/flows/{flow}/migrations/preview": Req(
            "/api/v1/flows/regular-assessment/migrations/preview", {"from": 1, "to": 2}),
        "GET /api/v1/flows/{flow}/migrations": Req(
            "/api/v1/flows/regular-assessment/migrations"),
        "POST /api/v1/flows/{flow}/migrations": Req(
            "/api/v1/flows/regular-assessment/migrations", {"from": 1, "to": 2}),
    }
    for kind, body in FACT_KINDS.items():
        base = f"/api/v1/facts/{kind}"
        reqs[f"POST {base}"] = Req(base, {"person_id": org.t1, **body})
        reqs[f"PATCH {base}/{{fact_id}}"] = Req(f"{base}/{ids[kind + ':patch']}",
                                                FACT_PATCH[kind])
        reqs[f"DELETE {base}/{{fact_id}}"] = Req(f"{base}/{ids[kind + ':delete']}")
    return reqs


def _operations(api) -> list[str]:
    doc = api.get("admin", "/api/v1/openapi.json").get_json()
    return [f"{method.upper()} {path}" for path, ops in doc["paths"].items()
            for method in ops if method in ("get", "post", "put", "patch", "delete")]


def _outcome(response) -> str:
    status = response.status_code
    body = response.get_json(silent=True) or {}
    if status == 200 and "counts" in body and body.get("refused"):  # the bulk endpoint
        status = body["refused"][0]["status"]
    if 200 <= status < 300:
        return "ok"
    return str(status)


def _order(ops: list[str]) -> list[str]:
    """Reads first, then writes, then the two requests that end the caller's token; in the
    document's order otherwise (claim, release, delegate: the order a leader takes them)."""
    def group(op: str) -> int:
        if op in ("DELETE /api/v1/auth/token", "POST /api/v1/auth/logout"):
            return 2
        return 0 if op.startswith("GET ") else 1

    return sorted(ops, key=lambda op: (group(op), ops.index(op)))


def test_every_operation_is_classified(api):
    ops = _operations(api)
    unclassified = sorted(set(ops) - set(MATRIX))
    assert not unclassified, ("operations missing from the authorization matrix (add a row "
                              "to MATRIX and a request to _requests):\n  "
                              + "\n  ".join(unclassified))
    stale = sorted(set(MATRIX) - set(ops))
    assert not stale, f"MATRIX rows for operations the API no longer has: {stale}"
    assert all(len(row.split()) == len(KINDS) for row in MATRIX.values())


@pytest.mark.parametrize("kind", KINDS)
def test_authorization_matrix(api, engine, org, kind):
    ops = _operations(api)
    w = _seed(api, engine, org)
    who = USER[kind]
    reqs = _requests(w, org, who)
    missing = sorted(set(ops) - set(reqs))
    assert not missing, f"no request for {missing}"
    column = KINDS.index(kind)
    wrong: list[str] = []
    for op in _order([o for o in ops if o in MATRIX]):
        req = reqs[op]
        method = op.split()[0]
        headers: dict[str, str] = {}
        if who and not req.public:
            token = _token(api, who) if req.own_token else api.headers(who)["Authorization"]
            headers["Authorization"] = token
        if req.if_match is not None:
            headers["If-Match"] = w.version(req.if_match)
        client = api.client.application.test_client()  # no cookies from earlier requests
        response = client.open(req.path, method=method, json=req.json,
                               query_string=req.query, headers=headers)
        got, expected = _outcome(response), MATRIX[op].split()[column]
        if response.status_code >= 500 or got != expected:
            wrong.append(f"{op}: expected {expected}, got {response.status_code} "
                         f"{response.get_data(as_text=True)[:300]}")
    assert not wrong, f"{kind} ({who or 'no token'}):\n" + "\n".join(wrong)


def _token(api, who: str) -> str:
    value, _exp = issue_token(api.db, api.users[who], BEARER, dt.timedelta(hours=1), utcnow())
    return f"Bearer {value}"

