"""The work queue over HTTP (待办): who sees which steps, due first, claims, delegation and
bulk approval within quotas. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from workflows.engine import Actor
from workflows.models import Case

FLOW = "regular-assessment"
PERIOD = "2026-11"
QUEUE = "/api/v1/queue"
P = Actor.person


# --------------------------------------------------------------------------- helpers


def _start(engine, org, subject: str, period: str = PERIOD) -> int:
    return engine.start_case(FLOW, org.ids[subject], period_key=period).id


def _to_evaluation(engine, org, subject: str, period: str = PERIOD) -> int:
    cid = _start(engine, org, subject, period)
    engine.fire(cid, "submit", P(org.ids[subject]), data={"summary": "本月工作小结"})
    return cid


def _to_approval(engine, org, subject: str, grade: str = "较好", leader: str = "l1",
                 period: str = PERIOD) -> int:
    cid = _to_evaluation(engine, org, subject, period)
    engine.fire(cid, "evaluate", P(org.ids[leader]), data={"grade": grade})
    engine.fire(cid, "accept", P(org.ids[subject]))
    return cid


def _queue(api, who: str, **params) -> dict:
    r = api.get(who, QUEUE, query_string=params)
    assert r.status_code == 200, r.json
    return r.json


def _ids(body: dict) -> list[int]:
    return [item["id"] for item in body["items"]]


def _case(api, who: str, cid: int) -> dict:
    r = api.get(who, f"/api/v1/cases/{cid}")
    assert r.status_code == 200, r.json
    return r.json


def _version(api, cid: int) -> str:
    return api.get("admin", f"/api/v1/cases/{cid}").headers["ETag"]


def _set_deadline(db, cid: int, at: dt.datetime | None) -> None:
    """Deadlines set by hand: the planned ones depend on today's date."""
    with db.unit_of_work() as s:
        s.execute(update(Case).where(Case.id == cid).values(deadline_at=at))


def _bulk(api, who: str, trigger: str, case_ids: list[int], **extra):
    return api.post(who, f"{QUEUE}/bulk", json={"trigger": trigger, "case_ids": case_ids,
                                                **extra})


def _states(api, ids: list[int]) -> list[str]:
    return [_case(api, "admin", cid)["state"] for cid in ids]


def _actions_counter(api, trigger: str) -> float:
    text = api.get("admin", "/metrics").get_data(as_text=True)
    prefix = (f'civflow_actions_total{{flow="{FLOW}",outcome="ok",trigger="{trigger}"}} ')
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


# --------------------------------------------------------------------------- who sees what


def test_leaders_see_evaluations_in_their_subtree(api, engine):
    api.client.environ_base.pop("HTTP_ACCEPT_LANGUAGE")  # the labels in Chinese, the default
    org = api.org
    s1 = _to_evaluation(engine, org, "s1")
    t1 = _to_evaluation(engine, org, "t1")
    _start(engine, org, "s2")  # still the person's own summary: nobody else's to-do

    l1 = _queue(api, "l1")
    assert _ids(l1) == [s1] and l1["total"] == 1
    item = l1["items"][0]
    assert item["state"] == "evaluation" and item["state_label"] == "领导评鉴"
    assert item["subject"] == {"id": org.s1, "name": "测试s1"}
    assert item["unit"] == {"id": org.units["SEC1"], "name": "干部一科"}
    assert {a["trigger"] for a in item["actions"]} == {"evaluate", "return_summary"}
    assert all(a["as_role"] == "evaluator" for a in item["actions"])

    l2 = _queue(api, "l2")
    assert _ids(l2) == [t1] and l2["total"] == 1
    # The head above grades the section leaders, not their staff (who evaluates whom).
    chief = _queue(api, "chief")
    assert _ids(chief) == [] and chief["total"] == 0
    # Staff and committee members have nothing to do on evaluations.
    assert _queue(api, "s3") == {"items": [], "total": 0, "page": 1, "per_page": 20}
    assert _queue(api, "c1")["total"] == 0


def test_the_subject_sees_their_own_summary_step(api, engine):
    org = api.org
    r = api.post("s2", "/api/v1/cases", json={"flow": FLOW, "subject_id": org.s2,
                                              "period_key": PERIOD})
    assert r.status_code == 201, r.json
    cid = r.json["id"]
    _to_evaluation(engine, org, "s1")  # s1's case waits for the leader, not for s1

    mine = _queue(api, "s2")
    assert _ids(mine) == [cid] and mine["total"] == 1
    record, submit = mine["items"][0]["actions"]
    assert record["trigger"] == "record_week"  # 周记实 while the summary step is open
    assert submit["trigger"] == "submit" and submit["as_role"] == "subject"
    assert submit["requires"][0]["name"] == "summary"
    assert _queue(api, "s1")["total"] == 0
    assert _queue(api, "s3")["total"] == 0  # a colleague's summary is not s3's step
    assert _queue(api, "l1")["total"] == 1  # only s1's evaluation


def test_committee_sees_approval_steps_but_not_their_own(api, engine):
    org = api.org
    s1 = _to_approval(engine, org, "s1")
    t1 = _to_approval(engine, org, "t1", leader="l2")
    c2 = _to_approval(engine, org, "c2", leader="chief")
    _to_evaluation(engine, org, "s2")  # the leader's step, not the committee's

    c1 = _queue(api, "c1")
    assert sorted(_ids(c1)) == sorted([s1, t1, c2]) and c1["total"] == 3
    for item in c1["items"]:
        assert item["state"] == "approval"
        assert {a["trigger"] for a in item["actions"]} == {"approve", "send_back"}
        assert {a["as_role"] for a in item["actions"]} == {"committee"}
    mine = _queue(api, "c2")
    assert sorted(_ids(mine)) == sorted([s1, t1]) and mine["total"] == 2


def test_own_cases_are_left_out_for_roles_other_than_subject(api, engine):
    org = api.org
    own = _to_evaluation(engine, org, "l1")  # l1 leads SEC1 and is assessed there
    other = _to_evaluation(engine, org, "s1")
    assert _ids(_queue(api, "l1")) == [other]
    assert _ids(_queue(api, "chief")) == [own]  # the leader above grades the section leader


# --------------------------------------------------------------------------- order, filters


def test_due_first_and_the_overdue_filter(api, engine, db):
    org = api.org
    now = dt.datetime.now(dt.UTC)
    cases = {who: _to_approval(engine, org, who) for who in ("s1", "s2", "s3", "s4")}
    _set_deadline(db, cases["s2"], now + dt.timedelta(days=3))
    _set_deadline(db, cases["s3"], now - dt.timedelta(days=1))  # overdue
    _set_deadline(db, cases["s4"], now + dt.timedelta(days=1))
    _set_deadline(db, cases["s1"], None)  # no deadline: last

    body = _queue(api, "c1", sort="-id")  # sort is ignored: the queue is always due first
    assert _ids(body) == [cases["s3"], cases["s4"], cases["s2"], cases["s1"]]
    overdue = [item["overdue"] for item in body["items"]]
    assert overdue == [True, False, False, False]
    assert body["items"][0]["deadline_at"].startswith(
        (now - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    assert body["items"][3]["deadline_at"] is None

    late = _queue(api, "c1", overdue="true")
    assert _ids(late) == [cases["s3"]] and late["total"] == 1
    on_time = _queue(api, "c1", overdue="false")
    assert _ids(on_time) == [cases["s4"], cases["s2"], cases["s1"]] and on_time["total"] == 3


def test_pagination_with_total_and_filters(api, engine):
    org = api.org
    sec1 = [_to_approval(engine, org, f"s{i}") for i in range(1, 6)]
    t1 = _to_approval(engine, org, "t1", leader="l2")
    t2 = _to_approval(engine, org, "t2", leader="l2", period="2026-12")

    pages = [_queue(api, "c1", per_page=3, page=n) for n in (1, 2, 3)]
    assert [p["total"] for p in pages] == [7, 7, 7]
    assert [len(p["items"]) for p in pages] == [3, 3, 1]
    assert [(p["page"], p["per_page"]) for p in pages] == [(1, 3), (2, 3), (3, 3)]
    seen = [cid for p in pages for cid in _ids(p)]
    assert seen == sorted(sec1 + [t1, t2])  # no deadlines: by case id, nothing twice
    assert _queue(api, "c1", per_page=3, page=4) == {"items": [], "total": 7, "page": 4,
                                                     "per_page": 3}

    by_unit = _queue(api, "c1", unit_id=org.units["SEC2"])
    assert _ids(by_unit) == [t1, t2] and by_unit["total"] == 2
    assert _ids(_queue(api, "c1", unit_id=org.units["SEC2"], period="2026-12")) == [t2]
    assert _ids(_queue(api, "c1", q="测试t1")) == [t1]
    assert _queue(api, "c1", state="evaluation")["total"] == 0
    assert _queue(api, "c1", flow="no-such-flow")["total"] == 0
    assert _queue(api, "c1", flow=FLOW)["total"] == 7

    r = api.get("c1", QUEUE, query_string={"per_page": 500})
    assert r.status_code == 422 and "query.per_page" in r.json["fields"]


# --------------------------------------------------------------------------- claims


def test_claim_hides_the_step_from_others_and_release_gives_it_back(api, engine):
    org = api.org
    cid = _to_approval(engine, org, "s1")
    other = _to_approval(engine, org, "s2")
    etag = _version(api, cid)

    r = api.post("c1", f"{QUEUE}/{cid}/claim", headers={"If-Match": etag})
    assert r.status_code == 200, r.json
    assert r.json == {"case_id": cid, "trigger": "claim", "from": "approval",
                      "to": "approval", "version": int(etag.strip('"')) + 1, "replayed": False}
    assert r.headers["ETag"] == f'"{r.json["version"]}"'

    mine = _queue(api, "c1")
    assert sorted(_ids(mine)) == sorted([cid, other])
    assert next(i for i in mine["items"] if i["id"] == cid)["claimed_by"] == org.c1
    assert _ids(_queue(api, "c2")) == [other]

    # c2 may not act on it, nor claim or release it.
    r = api.post("c2", f"/api/v1/cases/{cid}/actions/approve", json={},
                 headers={"If-Match": r.headers["ETag"]})
    assert r.status_code == 403 and r.json["rule"] == "claimed"
    assert f"claimed by person {org.c1}" in r.json["message"]
    assert _case(api, "c2", cid)["actions"] == []
    r = api.post("c2", f"{QUEUE}/{cid}/claim", headers={"If-Match": _version(api, cid)})
    assert r.status_code == 403 and r.json["rule"] == "claimed"
    r = api.post("c2", f"{QUEUE}/{cid}/release", headers={"If-Match": _version(api, cid)})
    assert r.status_code == 403 and r.json["rule"] == "claimed"
    assert "not claimed by you" in r.json["message"]
    r = api.post("c1", f"{QUEUE}/{cid}/claim", headers={"If-Match": _version(api, cid)})
    assert r.status_code == 409 and r.json["code"] == "action_not_allowed"

    r = api.post("c1", f"{QUEUE}/{cid}/release", headers={"If-Match": _version(api, cid)})
    assert r.status_code == 200, r.json
    assert (r.json["trigger"], r.json["from"], r.json["to"]) == ("release", "approval",
                                                                 "approval")
    assert sorted(_ids(_queue(api, "c2"))) == sorted([cid, other])
    assert _case(api, "c2", cid)["claimed_by"] is None
    r = api.post("c2", f"/api/v1/cases/{cid}/actions/approve", json={},
                 headers={"If-Match": _version(api, cid)})
    assert r.status_code == 200 and r.json["to"] == "approved"

    steps = [(h["trigger"], h["actor_id"], h["actor_role"])
             for h in api.get("c1", f"/api/v1/cases/{cid}/history").json[-3:]]
    assert steps == [("claim", org.c1, "committee"), ("release", org.c1, "committee"),
                     ("approve", org.c2, "committee")]


def test_claim_needs_a_current_if_match_and_a_visible_case(api, engine):
    org = api.org
    cid = _to_approval(engine, org, "s1")
    version = _case(api, "c1", cid)["version"]

    r = api.post("c1", f"{QUEUE}/{cid}/claim", headers={"If-Match": f'"{version - 1}"'})
    assert r.status_code == 409 and r.json["code"] == "conflict"
    assert r.json["current_version"] == version and r.json["case_id"] == cid
    r = api.post("c1", f"{QUEUE}/{cid}/claim")
    assert r.status_code == 428 and "If-Match" in r.json["message"]
    r = api.post("c1", f"{QUEUE}/{cid}/claim", headers={"If-Match": "yesterday"})
    assert r.status_code == 400
    r = api.post("l2", f"{QUEUE}/{cid}/claim", headers={"If-Match": f'"{version}"'})
    assert r.status_code == 404 and r.json["code"] == "not_found"  # not l2's to know
    r = api.post("l1", f"{QUEUE}/{cid}/claim", headers={"If-Match": f'"{version}"'})
    assert r.status_code == 403 and r.json["rule"] == "role"  # sees it, cannot act on it
    r = api.post("c1", f"{QUEUE}/99999/claim", headers={"If-Match": '"1"'})
    assert r.status_code == 404
    assert _case(api, "c1", cid)["version"] == version  # nothing changed


# --------------------------------------------------------------------------- delegation


def test_delegate_hands_the_step_over_and_is_recorded(api, engine):
    org = api.org
    cid = _to_approval(engine, org, "s1")
    etag = _version(api, cid)

    r = api.post("c1", f"{QUEUE}/{cid}/delegate", json={"to": org.c2, "comment": "请代为审定"},
                 headers={"If-Match": etag})
    assert r.status_code == 200, r.json
    assert (r.json["trigger"], r.json["from"], r.json["to"]) == ("delegate", "approval",
                                                                 "approval")
    assert r.headers["ETag"] == f'"{r.json["version"]}"'

    assert _ids(_queue(api, "c2")) == [cid]
    assert _queue(api, "c1")["total"] == 0
    assert _case(api, "c1", cid)["claimed_by"] == org.c2
    r = api.post("c1", f"/api/v1/cases/{cid}/actions/approve", json={},
                 headers={"If-Match": _version(api, cid)})
    assert r.status_code == 403 and r.json["rule"] == "claimed"

    last = api.get("c2", f"/api/v1/cases/{cid}/history").json[-1]
    assert last["trigger"] == "delegate" and last["actor_id"] == org.c1
    assert last["actor_role"] == "committee"
    assert last["data"] == {"to": org.c2, "as": "committee"}
    assert last["comment"] == "请代为审定"
    assert (last["from"], last["to"]) == ("approval", "approval")

    r = api.post("c2", f"/api/v1/cases/{cid}/actions/approve", json={},
                 headers={"If-Match": _version(api, cid)})
    assert r.status_code == 200 and r.json["to"] == "approved"


def test_delegate_refusals(api, engine):
    org = api.org
    cid = _to_approval(engine, org, "s1")
    etag = _version(api, cid)
    url = f"{QUEUE}/{cid}/delegate"

    r = api.post("c1", url, json={"to": org.s2}, headers={"If-Match": etag})
    assert r.status_code == 403 and r.json["rule"] == "role"
    assert r.json["message"].startswith(f"person {org.s2} cannot act")
    r = api.post("c1", url, json={"to": org.s2}, headers={"If-Match": etag,
                                                          "Accept-Language": "zh"})
    assert r.json["message"].startswith(f"人员 {org.s2} 不能办理")  # not "person N 不能…"
    r = api.post("c1", url, json={"to": org.s1}, headers={"If-Match": etag})
    assert r.status_code == 403 and r.json["rule"] == "role"  # not on their own case
    r = api.post("c1", url, json={"to": 99999}, headers={"If-Match": etag})
    assert r.status_code == 404 and "99999" in r.json["message"]
    r = api.post("c1", url, json={"to": org.c1}, headers={"If-Match": etag})
    assert r.status_code == 409 and r.json["code"] == "action_not_allowed"
    r = api.post("l1", url, json={"to": org.c2}, headers={"If-Match": etag})
    assert r.status_code == 403 and r.json["rule"] == "role"  # l1 cannot act on approval
    r = api.post("c1", url, json={}, headers={"If-Match": etag})
    assert r.status_code == 422 and r.json["fields"] == {"json.to": ["is required"]}
    r = api.post("c1", url, json={"to": org.c2})
    assert r.status_code == 428
    r = api.post("c1", url, json={"to": org.c2}, headers={"If-Match": '"1"'})
    assert r.status_code == 409 and r.json["current_version"] == int(etag.strip('"'))
    assert _version(api, cid) == etag and _case(api, "c1", cid)["claimed_by"] is None


# --------------------------------------------------------------------------- bulk


def test_bulk_approval_over_the_quota_refuses_the_whole_batch(api, engine):
    org = api.org
    # The 机关's staff pool for 2026-11 (ORG with SEC1 and SEC2): s1…s5 and t1, t2 → 7
    # cases, limit max(floor(7 × 40%), 1) = 2.
    cases = [_to_approval(engine, org, f"s{i}", grade="好") for i in range(1, 6)]
    cases += [_to_approval(engine, org, f"t{i}", grade="好", leader="l2") for i in (1, 2)]
    before = [_case(api, "c1", cid)["version"] for cid in cases]

    r = _bulk(api, "c1", "approve", cases)
    assert r.status_code == 422, r.json
    assert r.json["code"] == "rule_violation" and r.json["rule"] == "quota"
    details = r.json["details"]
    assert details["pool"] == {"unit": org.units["ORG"], "tier": "staff", "period": PERIOD}
    assert (details["size"], details["limit"], details["used"], details["asked"]) == (7, 2, 0, 7)
    assert sorted(details["case_ids"]) == sorted(cases)
    assert "limit 2 (40% of 7, floor, at least 1), already used 0, asked 7" in r.json["message"]

    assert _states(api, cases) == ["approval"] * 7
    assert [_case(api, "c1", cid)["version"] for cid in cases] == before
    assert _queue(api, "c1")["total"] == 7


def test_bulk_approval_within_the_quota_moves_every_case(api, engine):
    org = api.org
    cases = [_to_approval(engine, org, f"s{i}", grade="好") for i in (1, 2)]
    cases += [_to_approval(engine, org, f"s{i}", grade="较好") for i in (3, 4, 5)]
    approved_before = _actions_counter(api, "approve")

    r = _bulk(api, "c1", "approve", cases, comment="季度审定")
    assert r.status_code == 200, r.json
    assert r.json["counts"] == {"done": 5, "refused": 0} and r.json["refused"] == []
    assert [d["case_id"] for d in r.json["done"]] == cases  # in the order asked
    for d in r.json["done"]:
        assert (d["trigger"], d["from"], d["to"], d["replayed"]) == ("approve", "approval",
                                                                     "approved", False)
        assert d["version"] == _case(api, "c1", d["case_id"])["version"]
    assert _states(api, cases) == ["approved"] * 5
    assert _queue(api, "c1")["total"] == 0
    last = api.get("c1", f"/api/v1/cases/{cases[0]}/history").json[-1]
    assert (last["trigger"], last["actor_id"], last["comment"]) == ("approve", org.c1, "季度审定")
    assert _actions_counter(api, "approve") == approved_before + 5


def test_bulk_reports_per_item_refusals_and_moves_the_rest(api, engine):
    org = api.org
    s1 = _to_evaluation(engine, org, "s1")
    s2 = _to_evaluation(engine, org, "s2")
    t1 = _to_evaluation(engine, org, "t1")  # SEC2: l1 may not see it
    s3 = _start(engine, org, "s3")  # still in summary: wrong state
    own = _to_evaluation(engine, org, "l1")  # l1's own case

    ids = [t1, s1, s3, 99999, own, s2]
    r = _bulk(api, "l1", "evaluate", ids, data={"grade": "较好"})
    assert r.status_code == 200, r.json
    assert r.json["counts"] == {"done": 2, "refused": 4}
    assert [(d["case_id"], d["from"], d["to"]) for d in r.json["done"]] == [
        (s1, "evaluation", "feedback"), (s2, "evaluation", "feedback")]
    refused = {item["case_id"]: item for item in r.json["refused"]}
    assert [item["case_id"] for item in r.json["refused"]] == [t1, s3, 99999, own]
    # Invisible and missing cases are refused alike: whether a case exists is not told.
    assert refused[t1] == {"case_id": t1, "status": 404, "code": "not_found",
                           "message": f"case {t1} does not exist or is not visible to you",
                           "key": "engine.case_not_found_or_hidden",
                           "params": {"case_id": t1}}
    assert refused[99999]["status"] == 404 and refused[99999]["code"] == "not_found"
    assert refused[s3]["status"] == 409 and refused[s3]["code"] == "action_not_allowed"
    assert "summary" in refused[s3]["message"]
    assert refused[own]["status"] == 403 and refused[own]["rule"] == "role"  # not his own evaluator

    assert _states(api, [s1, s2, t1, s3, own]) == ["feedback", "feedback", "evaluation",
                                                   "summary", "evaluation"]
    assert _ids(_queue(api, "l2")) == [t1]  # untouched, still l2's to-do
    assert _case(api, "s1", s1)["data"]["grade"] == "较好"


def test_bulk_field_errors_are_per_item_and_nothing_visible_is_a_no_op(api, engine):
    org = api.org
    s1 = _to_evaluation(engine, org, "s1")
    t1 = _to_evaluation(engine, org, "t1")

    r = _bulk(api, "l1", "evaluate", [s1], data={"grade": "优秀"})
    assert r.status_code == 200
    (item,) = r.json["refused"]
    assert item["case_id"] == s1 and item["status"] == 422 and item["code"] == "invalid_data"
    assert item["fields"] == {"grade": ["must be one of: 好, 较好, 一般, 较差"]}
    # A rule over the batch (required_when) refuses it as a whole, like the quota.
    r = _bulk(api, "l1", "evaluate", [s1], data={"grade": "一般"})
    assert r.status_code == 422 and r.json["rule"] == "required_when"

    r = _bulk(api, "l1", "evaluate", [t1, 99999], data={"grade": "好"})
    assert r.status_code == 200
    assert r.json["done"] == [] and r.json["counts"] == {"done": 0, "refused": 2}
    assert _states(api, [s1, t1]) == ["evaluation", "evaluation"]


@pytest.mark.parametrize("body, field", [
    ({"trigger": "approve", "case_ids": []}, "json.case_ids"),
    ({"trigger": "approve", "case_ids": [1, 2, 1]}, "json.case_ids"),
    ({"trigger": "approve", "case_ids": list(range(1, 502))}, "json.case_ids"),
    ({"trigger": "approve", "case_ids": [0]}, "json.case_ids.0"),
    ({"case_ids": [1]}, "json.trigger"),
    ({"trigger": "", "case_ids": [1]}, "json.trigger"),
    ({"trigger": "approve", "case_ids": [1], "data": []}, "json.data"),
    ({"trigger": "approve", "case_ids": [1], "extra": 1}, "json.extra"),
])
def test_bulk_validates_its_body(api, body, field):
    r = api.post("c1", f"{QUEUE}/bulk", json=body)
    assert r.status_code == 422, r.json
    assert r.json["code"] == "invalid_request" and field in r.json["fields"], r.json


def test_bulk_allows_500_cases(api):
    r = _bulk(api, "c1", "approve", list(range(1, 501)))
    assert r.status_code == 200
    assert r.json["counts"] == {"done": 0, "refused": 500}


# --------------------------------------------------------------------------- anonymous


def test_anonymous_callers_are_refused(api, engine):
    cid = _to_approval(engine, api.org, "s1")
    c = api.client
    for r in (c.get(QUEUE), c.post(f"{QUEUE}/{cid}/claim", headers={"If-Match": '"4"'}),
              c.post(f"{QUEUE}/{cid}/release", headers={"If-Match": '"4"'}),
              c.post(f"{QUEUE}/{cid}/delegate", json={"to": api.org.c2},
                     headers={"If-Match": '"4"'}),
              c.post(f"{QUEUE}/bulk", json={"trigger": "approve", "case_ids": [cid]})):
        assert r.status_code == 401
        assert r.json["code"] == "unauthorized" and r.json["status"] == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert _case(api, "c1", cid)["state"] == "approval"
