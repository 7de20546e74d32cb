"""The migrations API (迁移): preview, run, list runs; owners and admins only."""

from __future__ import annotations

from workflows.engine import Actor

from .test_migrate import FLOW, V1, V2

URL = f"/api/v1/flows/{FLOW}/migrations"


def _cases(api, engine):
    org = api.org
    engine.publish(V1, "mig-v1.yaml")
    a = engine.start_case(FLOW, org.s1).id
    b = engine.start_case(FLOW, org.s2).id
    engine.fire(b, "submit", Actor.person(org.s2), data={"summary": "小结", "old_note": "旧"})
    engine.publish(V2, "mig-v2.yaml")
    return a, b


def test_preview_lists_every_case_and_changes_nothing(api, engine):
    a, b = _cases(api, engine)
    r = api.post("owner", f"{URL}/preview", json={"from": 1, "to": 2})
    assert r.status_code == 200, r.json
    body = r.json
    assert (body["from"], body["to"], body["moving"], body["refused"]) == (1, 2, 1, 1)
    assert body["mapping"] == {"draft": "draft", "review": None, "done": "done"}
    cases = {c["case_id"]: c for c in body["cases"]}
    assert cases[a]["moves"] and cases[a]["to_state"] == "draft"
    assert [t["kind"] for t in cases[a]["arm"]] == ["deadline", "reminder"]
    assert cases[a]["subject_name"] == "测试s1"
    assert not cases[b]["moves"] and "not mapped" in cases[b]["refusal"]
    r = api.post("admin", f"{URL}/preview", json={"from": 1, "to": 2,
                                                  "mapping": {"review": "check"}})
    c = {c["case_id"]: c for c in r.json["cases"]}[b]
    assert (c["to_state"], c["fields_not_declared"], c["moves"]) == ("check", ["old_note"],
                                                                     True)
    assert "carried" not in c  # the values stay out of the preview
    assert engine.get_case(a).flow_version == engine.get_case(b).flow_version == 1


def test_run_migrates_and_lists_the_run(api, engine):
    a, b = _cases(api, engine)
    r = api.post("owner", URL, json={"from": 1, "to": 2, "mapping": {"review": "check"},
                                     "dry_run": True})
    assert r.status_code == 200 and r.json["moving"] == 2
    assert engine.get_case(b).flow_version == 1
    r = api.post("owner", URL, json={"from": 1, "to": 2, "mapping": {"review": "check"},
                                     "batch": 1})
    assert r.status_code == 201, r.json
    run = r.json
    assert (run["moved"], run["refused"], run["status"], run["resumed"]) == (2, 0, "done",
                                                                           False)
    assert run["by"] == api.org.owner and run["mapping"] == {"review": "check"}
    assert engine.get_case(b).state == "check" and engine.get_case(a).flow_version == 2
    history = api.get("owner", f"/api/v1/cases/{b}/history").json
    assert history[-1]["trigger"] == "migrate"
    (listed,) = api.get("admin", URL).json
    assert listed["id"] == run["id"] and listed["finished_at"]
    # The version page's counts follow the cases.
    v2 = api.get("owner", f"/api/v1/flows/{FLOW}/versions/2").json
    assert v2["counts"] == {"draft": 1, "check": 1, "done": 0}
    v1 = api.get("owner", f"/api/v1/flows/{FLOW}/versions/1").json
    assert v1["counts"] == {"draft": 0, "review": 0, "done": 0}


def test_refused_cases_are_listed_with_their_reason(api, engine):
    _a, b = _cases(api, engine)
    r = api.post("owner", URL, json={"from": 1, "to": 2})
    assert r.status_code == 201
    assert (r.json["moved"], r.json["refused"]) == (1, 1)
    (refusal,) = r.json["refusals"]
    assert refusal["case_id"] == b and "not mapped" in refusal["reason"]


def test_bad_input_gets_a_clear_4xx_and_changes_nothing(api, engine):
    a, _b = _cases(api, engine)
    cases = [
        ({"from": 1, "to": 3}, 404, "no version 3"),
        ({"from": 2, "to": 1}, 422, "not newer"),
        ({"from": 1, "to": 2, "mapping": {"review": "nowhere"}}, 422,
         "'nowhere' is not a state of version 2"),
        ({"from": 1, "to": 2, "mapping": {"ghost": "check"}}, 422, "'ghost' is not a state"),
        ({"from": 1}, 422, None),
        ({"from": "x", "to": 2}, 422, None),
        ({"from": 1, "to": 2, "batch": 0}, 422, None),
    ]
    for body, status, text in cases:
        for url in (URL, f"{URL}/preview"):
            r = api.post("owner", url, json=body)
            assert r.status_code == status, (url, body, r.json)
            if text:
                assert text in r.json["message"] or text in str(r.json.get("fields")), r.json
    r = api.post("owner", "/api/v1/flows/no-such-flow/migrations", json={"from": 1, "to": 2})
    assert r.status_code == 404
    engine.upload(V2.replace("title: 迁移测试", "title: 迁移测试三"), "mig-v3.yaml")
    r = api.post("owner", URL, json={"from": 1, "to": 3})
    assert r.status_code == 409 and r.json["code"] == "not_published"
    assert engine.get_case(a).flow_version == 1
    assert api.get("owner", URL).json == []


def test_only_owners_and_admins(api, engine):
    _cases(api, engine)
    for who in ("s1", "l1", "c1"):
        for method, url in (("post", f"{URL}/preview"), ("post", URL), ("get", URL)):
            r = getattr(api, method)(who, url, json={"from": 1, "to": 2})
            assert r.status_code == 403, (who, url)
            assert r.json["rule"] == "needs_process_owner"
    assert api.client.get(URL).status_code == 401
