"""Cases over HTTP for each kind of user: staff, leaders, committee, owners, admins."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from workflows.models import Case

from .conftest import ROOT

FLOW = "regular-assessment"


def start(api, who: str, subject: str, period: str = "2026-11"):
    return api.post(who, "/api/v1/cases", json={
        "flow": FLOW, "subject_id": api.org.ids[subject], "period_key": period})


def act(api, who: str, case_id: int, trigger: str, version: int, data=None, comment=None,
        **headers):
    body = {"data": data or {}}
    if comment is not None:
        body["comment"] = comment
    return api.post(who, f"/api/v1/cases/{case_id}/actions/{trigger}", json=body,
                    headers={"If-Match": f'"{version}"', **headers})


def test_full_pass_through_the_api(api):
    api.client.environ_base.pop("HTTP_ACCEPT_LANGUAGE")  # the labels in Chinese, the default
    r = start(api, "s1", "s1")
    assert r.status_code == 201 and r.headers["ETag"] == '"1"'
    case = r.json
    assert (case["state"], case["state_label"], case["subject"]["id"]) == (
        "summary", "个人小结", api.org.s1)
    assert [a["trigger"] for a in case["actions"]] == ["record_week", "submit"]
    cid = case["id"]
    assert act(api, "s1", cid, "submit", 1, {"summary": "本月小结"}).json["to"] == "evaluation"
    detail = api.get("l1", f"/api/v1/cases/{cid}")
    assert detail.headers["ETag"] == '"2"'
    assert {a["trigger"] for a in detail.json["actions"]} == {"evaluate", "return_summary"}
    grade = detail.json["actions"][0]["requires"][0]
    assert grade == {"name": "grade", "type": "enum", "required": True, "label": "考核等次",
                     "values": ["好", "较好", "一般", "较差"]}
    assert act(api, "l1", cid, "evaluate", 2, {"grade": "较好"}).status_code == 200
    assert act(api, "s1", cid, "accept", 3).status_code == 200
    r = act(api, "c1", cid, "approve", 4)
    assert r.status_code == 200 and r.json == {
        "case_id": cid, "trigger": "approve", "from": "approval", "to": "approved",
        "version": 5, "replayed": False}
    final = api.get("s1", f"/api/v1/cases/{cid}").json
    assert final["closed"] and final["actions"] == [] and final["data"]["grade"] == "较好"
    history = api.get("s1", f"/api/v1/cases/{cid}/history").json
    assert [h["trigger"] for h in history] == ["start", "submit", "evaluate", "accept", "approve"]
    assert history[2]["actor_role"] == "evaluator" and history[2]["data"] == {"grade": "较好"}


def test_english_labels_on_request(api):
    cid = start(api, "s1", "s1").json["id"]
    r = api.get("s1", f"/api/v1/cases/{cid}", headers={"Accept-Language": "en"})
    assert r.json["state_label"] == "Self summary"
    assert [a["label"] for a in r.json["actions"]] == ["Add a weekly record", "Submit summary"]


def test_who_may_start_a_case(api):
    assert start(api, "s1", "s1").status_code == 201  # oneself
    r = start(api, "s1", "s2")
    assert r.status_code == 403 and r.json["rule"] == "start"
    assert start(api, "l1", "s2").status_code == 201  # the leader of their unit
    assert start(api, "l2", "s3").json["rule"] == "start"  # another unit's leader may not
    assert start(api, "chief", "s3").status_code == 201  # a leader above
    assert start(api, "owner", "t1").status_code == 201
    r = start(api, "s1", "s1")
    assert r.status_code == 409 and r.json["code"] == "duplicate_case"
    r = api.post("s1", "/api/v1/cases", json={"flow": FLOW, "subject_id": 99999})
    assert r.status_code == 404
    r = api.post("s1", "/api/v1/cases", json={"flow": "nope", "subject_id": api.org.s1})
    assert r.status_code == 404 and "nope" in r.json["message"]
    # Someone who may not start the person's case learns nothing about the flow asked for.
    r = api.post("s1", "/api/v1/cases", json={"flow": "nope", "subject_id": api.org.s2})
    assert r.status_code == 403 and r.json["rule"] == "start"
    r = api.post("s1", "/api/v1/cases", json={"flow": "nope", "subject_id": 99999})
    assert r.status_code == 404 and "99999" in r.json["message"]
    r = api.post("s1", "/api/v1/cases", json={"subject_id": "x"})
    assert r.status_code == 422
    assert set(r.json["fields"]) == {"json.flow", "json.subject_id"}


def test_who_sees_which_cases(api):
    ids = {who: start(api, "owner", who).json["id"] for who in ("s1", "s2", "d1", "t1", "l1")}
    total = {}
    for who in ("s1", "l1", "l2", "chief", "c1", "owner", "admin", "t2"):
        r = api.get(who, "/api/v1/cases?per_page=50")
        assert r.status_code == 200
        total[who] = {c["subject"]["id"] for c in r.json["items"]}
        assert r.json["total"] == len(total[who])
    o = api.org
    assert total["s1"] == {o.s1}
    assert total["t2"] == set()
    assert total["l1"] == {o.s1, o.s2, o.d1, o.l1}  # SEC1, own case included
    assert total["l2"] == {o.t1}
    assert total["chief"] == total["c1"] == total["owner"] == total["admin"] == {
        o.s1, o.s2, o.d1, o.t1, o.l1}
    r = api.get("s2", f"/api/v1/cases/{ids['s1']}")
    assert r.status_code == 404 and "not visible" in r.json["message"]
    r = act(api, "s2", ids["s1"], "submit", 1, {"summary": "x"})
    assert r.status_code == 404  # acting on an invisible case says no more than reading it
    assert api.get("s2", f"/api/v1/cases/{ids['s1']}/history").status_code == 404


def test_filters_sorting_and_pagination(api, db):
    for who in ("s1", "s2", "s3", "t1"):
        start(api, "owner", who, "2026-10")
    for who in ("s1", "s2"):
        start(api, "owner", who, "2026-11")
    get = lambda q: api.get("admin", f"/api/v1/cases?{q}").json  # noqa: E731
    assert get("")["total"] == 6
    assert get("period=2026-10")["total"] == 4
    assert get(f"unit_id={api.org.units['SEC2']}")["total"] == 1
    assert get(f"unit_id={api.org.units['ORG']}")["total"] == 6  # the subtree
    assert get(f"subject_id={api.org.s1}")["total"] == 2
    assert get("q=测试s2")["total"] == 2 and get("q=S2")["total"] == 2
    assert get("state=summary")["total"] == 6 and get("state=approved")["total"] == 0
    assert get("flow=nope")["total"] == 0
    page1, page2 = get("per_page=4&page=1&sort=id"), get("per_page=4&page=2&sort=id")
    assert len(page1["items"]) == 4 and len(page2["items"]) == 2
    assert page1["total"] == page2["total"] == 6
    ids = [c["id"] for c in page1["items"] + page2["items"]]
    assert ids == sorted(ids)
    assert [c["id"] for c in get("sort=-id&per_page=6")["items"]] == sorted(ids, reverse=True)
    late = ids[0]
    now = dt.datetime.now(dt.UTC)
    with db.unit_of_work() as s:  # deadlines set by hand: the real ones depend on today
        s.execute(update(Case).values(deadline_at=now + dt.timedelta(days=10)))
        s.execute(update(Case).where(Case.id == late).values(
            deadline_at=now - dt.timedelta(days=1)))
    over = get("overdue=true")
    assert [c["id"] for c in over["items"]] == [late] and over["items"][0]["overdue"] is True
    assert get("overdue=false")["total"] == 5
    bad = api.get("admin", "/api/v1/cases?sort=name&page=0")
    assert bad.status_code == 422 and set(bad.json["fields"]) == {"query.sort", "query.page"}


def test_if_match_and_idempotency(api):
    cid = start(api, "s1", "s1").json["id"]
    url = f"/api/v1/cases/{cid}/actions/submit"
    r = api.post("s1", url, json={"data": {"summary": "x"}})
    assert r.status_code == 428 and "If-Match" in r.json["message"]
    r = api.post("s1", url, json={"data": {"summary": "x"}}, headers={"If-Match": "abc"})
    assert r.status_code == 400
    r = act(api, "s1", cid, "submit", 1, {"summary": "x"}, **{"Idempotency-Key": "k-1"})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"'
    again = act(api, "s1", cid, "submit", 1, {"summary": "x"}, **{"Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.json["replayed"] is True
    assert again.json["version"] == 2
    stale = act(api, "l1", cid, "return_summary", 1, comment="再写")
    assert stale.status_code == 409 and stale.json["current_version"] == 2
    assert len(api.get("s1", f"/api/v1/cases/{cid}/history").json) == 2
    r = act(api, "l1", cid, "return_summary", 2, comment="再写", **{"Idempotency-Key": "k-1"})
    assert r.status_code == 422 and r.json["code"] == "idempotency_mismatch"


def test_refusals_are_explained(api):
    cid = start(api, "s1", "s1").json["id"]
    r = act(api, "s1", cid, "submit", 1, {})
    assert r.status_code == 422 and r.json["fields"] == {"summary": ["is required"]}
    r = act(api, "s1", cid, "submit", 1, {"summary": "x", "grade": "好"})
    assert r.json["fields"] == {"grade": ["is not a field of this action"]}
    r = act(api, "l1", cid, "submit", 1, {"summary": "x"})
    assert r.status_code == 403 and r.json["rule"] == "role"
    r = act(api, "s1", cid, "approve", 1)
    assert r.status_code == 409 and r.json["code"] == "action_not_allowed"
    act(api, "s1", cid, "submit", 1, {"summary": "x"})
    r = act(api, "l1", cid, "evaluate", 2, {"grade": "较差"})
    assert r.status_code == 422 and r.json["rule"] == "required_when"
    r = act(api, "l1", cid, "return_summary", 2)
    assert r.status_code == 422 and "needs a reason" in r.json["fields"]["comment"][0]
    r = api.post("s1", f"/api/v1/cases/{cid}/actions/submit", data="not json",
                 headers={"If-Match": '"2"', "Content-Type": "application/json"})
    assert r.status_code in (400, 422) and r.json["status"] == r.status_code


def test_nobody_approves_their_own_case(api):
    cid = start(api, "l1", "l1").json["id"]
    act(api, "l1", cid, "submit", 1, {"summary": "科长小结"})
    r = act(api, "l1", cid, "evaluate", 2, {"grade": "好"})  # nobody is their own evaluator
    assert r.status_code == 403 and r.json["rule"] == "role"
    assert act(api, "chief", cid, "evaluate", 2, {"grade": "好"}).status_code == 200
    assert act(api, "l1", cid, "accept", 3).status_code == 200
    r = act(api, "c1", cid, "approve", 4)  # c1 approves l1's case, not their own
    assert r.status_code == 200
    own = start(api, "c1", "c1").json["id"]
    act(api, "c1", own, "submit", 1, {"summary": "委员小结"})
    assert act(api, "chief", own, "evaluate", 2, {"grade": "较好"}).status_code == 200
    act(api, "c1", own, "accept", 3)
    r = act(api, "c1", own, "approve", 4)
    assert r.status_code == 403 and r.json["rule"] == "no_self_approval"


def test_case_timers_are_visible(api):
    cid = start(api, "s1", "s1", "2026-09").json["id"]
    timers = api.get("s1", f"/api/v1/cases/{cid}/timers").json
    assert {(t["kind"], t["status"]) for t in timers} == {
        ("deadline", "pending"), ("reminder", "pending"), ("repeat", "pending")}
    deadline = next(t for t in timers if t["kind"] == "deadline")
    # 5 working days after 30 September 2026 (National Day holiday, make-up Saturday).
    assert deadline["due_at"] == "2026-10-13T16:00:00+00:00"
    assert api.get("s2", f"/api/v1/cases/{cid}/timers").status_code == 404
    # Submitted: the summary's timers show dropped (the case moved on), evaluation's wait.
    assert act(api, "s1", cid, "submit", 1, {"summary": "小结"}).status_code == 200
    timers = api.get("s1", f"/api/v1/cases/{cid}/timers").json
    assert sorted((t["state_visit"], t["kind"], t["status"]) for t in timers) == [
        (1, "deadline", "dropped"), (1, "reminder", "dropped"), (1, "repeat", "dropped"),
        (2, "deadline", "pending"), (2, "reminder", "pending")]


def test_text_no_database_can_store_is_refused(api):
    cid = start(api, "s1", "s1").json["id"]
    for bad in ("\ud800", "a\x00b"):
        r = act(api, "s1", cid, "submit", 1, {"summary": bad})
        assert r.status_code == 422 and r.json["fields"] == {
            "json.data.summary": ["must not contain NUL characters or lone surrogates"]}
    r = api.post("s1", "/api/v1/cases", json={"flow": FLOW, "subject_id": api.org.s2,
                                              "period_key": "0000-05"})
    assert r.status_code in (403, 422)  # s1 may not start s2's case; never a 500
    r = api.post("owner", "/api/v1/cases", json={"flow": FLOW, "subject_id": api.org.s2,
                                                 "period_key": "0000-05"})
    assert r.status_code == 422
    assert "between 1900 and 9998" in r.json["fields"]["period_key"][0]


def test_a_group_that_acts_on_a_step_sees_the_case(api, engine, db):
    source = (ROOT / "definitions" / "regular-assessment.yaml").read_text(encoding="utf-8")
    source = source.replace("committee: {resolve: unit_role, role: committee}",
                            "committee: {resolve: group, group: hr-office}")
    source = source.replace("title: {zh: 平时考核,", "title: {zh: 平时考核（人事处审定）,")
    engine.publish(source, "group.yaml")  # c1 holds the group hr-office (tests/conftest.py)
    cid = start(api, "t1", "t1").json["id"]
    act(api, "t1", cid, "submit", 1, {"summary": "x"})
    act(api, "l2", cid, "evaluate", 2, {"grade": "较好"})
    act(api, "t1", cid, "accept", 3)
    with db.unit_of_work() as s:  # take away c1's committee seat: only the group remains
        from sqlalchemy import delete

        from workflows.models import RoleAssignment
        s.execute(delete(RoleAssignment).where(RoleAssignment.person_id == api.org.c1,
                                               RoleAssignment.role == "committee"))
    queue = api.get("c1", "/api/v1/queue").json
    assert [i["id"] for i in queue["items"]] == [cid]
    assert api.get("c1", f"/api/v1/cases/{cid}").status_code == 200
    assert api.get("c1", "/api/v1/cases").json["total"] == 1
    assert act(api, "c1", cid, "approve", 4).status_code == 200
