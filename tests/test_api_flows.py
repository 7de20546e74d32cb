"""The flows API (流程): list, upload, validate, publish, read a version; and the diagram."""

from __future__ import annotations

import re

import pytest

from workflows.diagram import mermaid, state_ids
from workflows.spec import load_definition

from .conftest import REGULAR

FLOW = "regular-assessment"
FLOWS = "/api/v1/flows"
SOURCE = REGULAR.read_text(encoding="utf-8")
# The same flow with one change of content: a new version when uploaded.
CHANGED = SOURCE.replace("title: {zh: 平时考核, en: Regular assessment}",
                         "title: {zh: 平时考核（修订）, en: Regular assessment (revised)}")
STATES = ["summary", "evaluation", "feedback", "approval", "approved"]
SMALL = """\
flow: small-flow
title: 小流程
states:
  - {name: draft, label: 草稿}
  - {name: done, final: true}
transitions:
  - {trigger: finish, from: draft, to: done, by: subject}
"""


def upload(api, source: str = CHANGED, who: str = "owner", **extra):
    return api.post(who, FLOWS, json={"source": source, **extra})


# --------------------------------------------------------------------------- reading


def test_anonymous_callers_are_refused(api):
    for method, url in (("get", FLOWS), ("post", FLOWS), ("post", f"{FLOWS}/validate"),
                        ("get", f"{FLOWS}/{FLOW}/versions/1"),
                        ("post", f"{FLOWS}/{FLOW}/versions/1/publish")):
        r = getattr(api.client, method)(url, json={"source": SOURCE})
        assert r.status_code == 401, url
        assert r.json["code"] == "unauthorized" and r.json["status"] == 401


def test_any_signed_in_user_lists_flows_with_versions(api):
    r = api.get("s1", FLOWS)
    assert r.status_code == 200
    (flow,) = r.json
    assert (flow["flow"], flow["title"], flow["current_version"]) == (FLOW, "平时考核", 1)
    (v1,) = flow["versions"]
    assert (v1["version"], v1["status"]) == (1, "published")
    assert re.fullmatch(r"[0-9a-f]{64}", v1["content_hash"])
    assert v1["created_at"] and v1["published_at"]
    assert v1["filename"].endswith("regular-assessment.yaml")


# --------------------------------------------------------------------------- uploading


def test_owner_uploads_a_draft_and_identical_content_creates_nothing(api):
    r = upload(api)
    assert r.status_code == 201, r.json
    assert r.json["flow"] == FLOW and r.json["version"] == 2
    assert (r.json["status"], r.json["created"]) == ("draft", True)
    assert r.json["title"] == "平时考核（修订）" and r.json["published_at"] is None
    assert r.json["filename"] == "upload.yaml"
    assert r.headers["Location"] == f"{FLOWS}/{FLOW}/versions/2"

    again = upload(api, CHANGED + "\n# only a comment differs\n", filename="again.yaml")
    assert again.status_code == 200
    assert (again.json["version"], again.json["created"], again.json["status"]) == \
        (2, False, "draft")
    assert again.json["content_hash"] == r.json["content_hash"]

    same_as_v1 = upload(api, SOURCE)
    assert same_as_v1.status_code == 200
    assert (same_as_v1.json["version"], same_as_v1.json["status"],
            same_as_v1.json["created"]) == (1, "published", False)

    (flow,) = api.get("s1", FLOWS).json
    assert flow["current_version"] == 1  # a draft is not current
    assert [(v["version"], v["status"]) for v in flow["versions"]] == \
        [(1, "published"), (2, "draft")]


@pytest.mark.parametrize("who", ["s1", "l1", "chief", "admin"])
def test_only_process_owners_upload(api, who):
    r = upload(api, who=who)
    assert r.status_code == 403
    assert r.json["rule"] == "needs_process_owner" and r.json["code"] == "forbidden"
    assert "process_owner" in r.json["message"]
    (flow,) = api.get("s1", FLOWS).json
    assert len(flow["versions"]) == 1


def test_invalid_yaml_is_refused_with_its_line(api):
    r = upload(api, "flow: broken\ntitle: [不闭合\nstates: []\n", filename="broken.yaml")
    assert r.status_code == 422
    assert r.json["code"] == "definition_invalid"
    (problem,) = r.json["problems"]
    assert problem["file"] == "broken.yaml" and problem["path"] == ""
    assert "not valid YAML" in problem["message"] and problem["line"] == 3


def test_invalid_definition_lists_every_problem_with_path_and_line(api):
    bad = SMALL.replace("to: done", "to: dnoe").replace("by: subject", "by: nobody")
    r = upload(api, bad)
    assert r.status_code == 422
    problems = {p["path"]: p for p in r.json["problems"]}
    assert "unknown state 'dnoe'" in problems["transitions[0].to"]["message"]
    assert "unknown role 'nobody'" in problems["transitions[0].by"]["message"]
    assert (problems["transitions[0].to"]["line"], problems["transitions[0].by"]["line"]) == (7, 7)
    assert "unreachable" in problems["states[1]"]["message"]
    assert problems["states[1]"]["line"] == 5
    assert all(p["file"] == "upload.yaml" for p in problems.values())
    assert r.json["message"].startswith(f"{len(problems)} problem(s)")
    assert len(api.get("s1", FLOWS).json) == 1  # nothing stored


def test_upload_body_is_checked(api):
    r = api.post("owner", FLOWS, json={"filename": "x.yaml"})
    assert r.status_code == 422
    assert r.json["code"] == "invalid_request" and r.json["fields"] == {"json.source": ["is required"]}
    r = api.post("owner", FLOWS, json={"source": SMALL, "extra": 1})
    assert r.status_code == 422
    assert r.json["fields"] == {"json.extra": ["is not a known field"]}


def test_a_json_filename_is_parsed_as_json(api):
    r = upload(api, '{"flow": "x",\n "title": }', filename="flow.json")
    assert r.status_code == 422
    (problem,) = r.json["problems"]
    assert problem["file"] == "flow.json" and "not valid JSON" in problem["message"]
    assert problem["line"] == 2


def test_a_definition_nested_too_deep_is_422_not_500(api):
    for who, url in (("owner", FLOWS), ("s1", f"{FLOWS}/validate")):
        for filename in ("deep.yaml", "deep.json"):
            r = api.post(who, url, json={"source": "[" * 50_000, "filename": filename})
            assert r.status_code == 422, (url, filename)
            (problem,) = r.json["problems"]
            # Cut short it is a syntax error; closed, the parser's depth limit: both 422.
            assert problem["file"] == filename and ("nested too deeply" in problem["message"]
                                                    or "not valid" in problem["message"])


# --------------------------------------------------------------------------- validating


def test_anyone_signed_in_validates_without_storing(api):
    r = api.post("s1", f"{FLOWS}/validate", json={"source": SMALL})
    assert r.status_code == 200
    assert r.json == {"valid": True, "flow": "small-flow", "title": "小流程",
                      "content_hash": load_definition(SMALL).content_hash,
                      "states": 2, "transitions": 1}
    r = api.post("s1", f"{FLOWS}/validate", json={"source": SOURCE})
    assert (r.json["states"], r.json["transitions"]) == (5, 8)
    assert [f["flow"] for f in api.get("s1", FLOWS).json] == [FLOW]


def test_validate_reports_problems_with_path_and_line(api):
    bad = SMALL.replace("  - {name: done, final: true}\n", "  - {name: done}\n")
    r = api.post("s1", f"{FLOWS}/validate", json={"source": bad, "filename": "small.yaml"})
    assert r.status_code == 422 and r.json["code"] == "definition_invalid"
    messages = {(p["path"], p["line"]): p["message"] for p in r.json["problems"]}
    assert "no way out" in messages[("states[1]", 5)]
    assert "at least one final state" in messages[("states", 4)]
    assert all(p["file"] == "small.yaml" for p in r.json["problems"])


# --------------------------------------------------------------------------- publishing


def test_only_process_owners_publish(api):
    upload(api)
    for who in ("s1", "admin"):
        r = api.post(who, f"{FLOWS}/{FLOW}/versions/2/publish")
        assert r.status_code == 403 and r.json["rule"] == "needs_process_owner"
    detail = api.get("s1", f"{FLOWS}/{FLOW}/versions/2").json
    assert detail["status"] == "draft"


def test_publish_makes_the_version_current(api):
    upload(api)
    r = api.post("owner", f"{FLOWS}/{FLOW}/versions/2/publish")
    assert r.status_code == 200
    assert (r.json["version"], r.json["status"]) == (2, "published")
    assert r.json["published_at"] is not None
    (flow,) = api.get("s1", FLOWS).json
    assert flow["current_version"] == 2 and flow["title"] == "平时考核（修订）"
    twice = api.post("owner", f"{FLOWS}/{FLOW}/versions/2/publish")
    assert twice.status_code == 200 and twice.json["published_at"] == r.json["published_at"]


def test_publishing_an_unknown_version_is_404(api):
    for url in (f"{FLOWS}/{FLOW}/versions/9/publish", f"{FLOWS}/nope/versions/1/publish"):
        r = api.post("owner", url)
        assert r.status_code == 404 and r.json["code"] == "not_found"
        assert "has no version" in r.json["message"]


def test_a_draft_has_no_cases_until_published(api):
    upload(api)
    start = {"flow": FLOW, "subject_id": api.org.s1, "period_key": "2026-11", "version": 2}
    r = api.post("owner", "/api/v1/cases", json=start)
    assert r.status_code == 409
    assert r.json["code"] == "not_published" and "draft" in r.json["message"]

    assert api.post("owner", f"{FLOWS}/{FLOW}/versions/2/publish").status_code == 200
    r = api.post("owner", "/api/v1/cases", json=start)
    assert r.status_code == 201, r.json
    assert (r.json["flow_version"], r.json["state"]) == (2, "summary")
    assert r.json["subject"]["id"] == api.org.s1
    # Without a version, new cases start on the latest published one.
    r = api.post("owner", "/api/v1/cases", json={"flow": FLOW, "subject_id": api.org.s2,
                                                 "period_key": "2026-11"})
    assert r.status_code == 201 and r.json["flow_version"] == 2


# --------------------------------------------------------------------------- one version


def _start(api, who: str, subject: str, period: str = "2026-11"):
    r = api.post(who, "/api/v1/cases", json={"flow": FLOW, "subject_id": api.org.ids[subject],
                                             "period_key": period})
    assert r.status_code == 201, r.json
    return r.json


def test_version_detail_has_source_definition_diagram_and_counts(api):
    api.client.environ_base.pop("HTTP_ACCEPT_LANGUAGE")  # the labels in Chinese, the default
    _start(api, "owner", "s1")
    _start(api, "owner", "s2")
    case = _start(api, "s3", "s3")
    fired = api.post("s3", f"/api/v1/cases/{case['id']}/actions/submit",
                     json={"data": {"summary": "本月完成了三项工作"}},
                     headers={"If-Match": f'"{case["version"]}"'})
    assert fired.status_code == 200, fired.json

    # Counted over the cases the reader may see: t1 (another section) sees none, s3 its own.
    assert set(api.get("t1", f"{FLOWS}/{FLOW}/versions/1").json["counts"].values()) == {0}
    assert api.get("s3", f"{FLOWS}/{FLOW}/versions/1").json["counts"] == {
        "summary": 0, "evaluation": 1, "feedback": 0, "approval": 0, "approved": 0}
    r = api.get("l1", f"{FLOWS}/{FLOW}/versions/1")  # the leader of s1, s2, s3
    assert r.status_code == 200
    body = r.json
    assert (body["flow"], body["version"], body["status"]) == (FLOW, 1, "published")
    assert body["source"] == SOURCE
    assert body["definition"]["flow"] == FLOW
    assert [s["name"] for s in body["definition"]["states"]] == STATES
    assert body["counts"] == {"summary": 2, "evaluation": 1, "feedback": 0, "approval": 0,
                              "approved": 0}
    lines = body["mermaid"].splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> summary" in lines
    assert "    summary : 个人小结 (2)" in lines
    assert "    evaluation : 领导评鉴 (1)" in lines
    assert "    summary --> evaluation : 提交小结" in lines
    assert "    approved --> [*]" in lines

    en = api.get("l1", f"{FLOWS}/{FLOW}/versions/1", headers={"Accept-Language": "en"})
    assert "    summary : Self summary (2)" in en.json["mermaid"].splitlines()


def test_a_draft_can_be_read_too(api):
    api.client.environ_base.pop("HTTP_ACCEPT_LANGUAGE")  # the labels in Chinese, the default
    upload(api)
    r = api.get("s1", f"{FLOWS}/{FLOW}/versions/2")
    assert r.status_code == 200
    assert (r.json["status"], r.json["source"]) == ("draft", CHANGED)
    assert r.json["definition"]["title"]["zh"] == "平时考核（修订）"
    assert set(r.json["counts"].values()) == {0}
    assert "    approval : 审定 (0)" in r.json["mermaid"].splitlines()


def test_unknown_versions_are_404(api):
    for url in (f"{FLOWS}/{FLOW}/versions/7", f"{FLOWS}/nope/versions/1",
                f"{FLOWS}/Bad_Name/versions/1", f"{FLOWS}/{FLOW}/versions/{2**40}"):
        r = api.get("s1", url)
        assert r.status_code == 404 and r.json["code"] == "not_found", url
    r = api.post("owner", f"{FLOWS}/nope/versions/1/publish")
    assert r.status_code == 404 and r.json["code"] == "not_found"
    # NUL never reaches the database (PostgreSQL text cannot hold it): refused up front.
    r = api.post("owner", f"{FLOWS}/bad%00name/versions/1/publish")
    assert r.status_code == 422 and r.json["fields"] == {
        "path": ["must not contain NUL characters or lone surrogates"]}


def test_a_definition_with_dates_reads_back_as_json(api):
    dated = SMALL.replace("states:", "fields:\n  due: {type: date, min: 2026-01-01}\nstates:")
    assert upload(api, dated).status_code == 201
    r = api.get("s1", f"{FLOWS}/small-flow/versions/1")
    assert r.json["definition"]["fields"]["due"]["min"] == "2026-01-01"


def test_the_openapi_document_describes_the_flow_paths(api):
    r = api.get("s1", "/api/v1/openapi.json")
    assert r.status_code == 200
    paths = r.json["paths"]
    assert set(paths[FLOWS]) >= {"get", "post"}
    assert "post" in paths[f"{FLOWS}/validate"]
    assert "get" in paths[f"{FLOWS}/{{flow}}/versions/{{version}}"]
    assert "post" in paths[f"{FLOWS}/{{flow}}/versions/{{version}}/publish"]
    assert set(paths[FLOWS]["post"]["responses"]) >= {"200", "201"}
    assert "发布" in paths[f"{FLOWS}/{{flow}}/versions/{{version}}/publish"]["post"]["summary"] \
        + paths[f"{FLOWS}/{{flow}}/versions/{{version}}/publish"]["post"].get("description", "")
    assert any(t["name"] == "flows" and "流程" in t["description"] for t in r.json["tags"])


# --------------------------------------------------------------------------- the diagram

# What mermaid's state-diagram lexer accepts as an id, and its keywords there (each one
# was checked with mermaid 11's own parser: it fails, or drops the state's label).
MERMAID_ID = r"[^:\n\s\-\{]+"
LINE = re.compile(rf"^    (?:(\[\*\]|{MERMAID_ID}) --> (\[\*\]|{MERMAID_ID})(?: : [^:\n;]+)?"
                  rf"|({MERMAID_ID}) : [^:\n;]+)$")
KEYWORDS = {"state", "note", "class", "classdef", "scale", "statediagram", "acctitle",
            "accdescr", "default"}


def _well_formed(text: str) -> list[str]:
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2" and text.endswith("\n")
    for line in lines[1:]:
        m = LINE.match(line)
        assert m, line
        for ident in filter(None, m.groups()):
            assert ident.lower() not in KEYWORDS
    return lines


def test_mermaid_draws_the_shipped_flow():
    spec = load_definition(SOURCE, "regular.yaml")
    lines = _well_formed(mermaid(spec))
    assert lines[1] == "    [*] --> summary"
    assert [line for line in lines if " : " in line and "-->" not in line] == [
        "    summary : 个人小结", "    evaluation : 领导评鉴", "    feedback : 结果反馈",
        "    approval : 审定", "    approved : 已审定"]
    arrows = [line.strip() for line in lines if "-->" in line]
    assert arrows == [
        "[*] --> summary",
        "summary --> summary : 记录周记实",
        "summary --> evaluation : 提交小结",
        "evaluation --> feedback : 评鉴定等",
        "evaluation --> summary : 退回小结",
        "feedback --> approval : 认可结果",
        "feedback --> evaluation : 提出异议",
        "approval --> approved : 审定通过",
        "approval --> evaluation : 退回重评",
        "approved --> [*]",
    ]


def test_mermaid_counts_and_language():
    spec = load_definition(SOURCE, "regular.yaml")
    lines = _well_formed(mermaid(spec, {"evaluation": 3}, lang="en"))
    assert "    evaluation : Leader evaluation (3)" in lines
    assert "    summary : Self summary (0)" in lines
    assert "    summary --> evaluation : Submit summary" in lines


AWKWARD = """\
flow: awkward
title: 名字
states:
  - {name: to-do, label: "待办: 第一步; 说明\\n第二行"}
  - {name: to_do, label: 另一个}
  - {name: state}
  - {name: Default}
  - {name: note, label: "change direction LR"}
  - {name: done-done, final: true}
transitions:
  - {trigger: go, label: "去: 下一步", from: to-do, to: to_do, by: subject}
  - {trigger: onward, from: to_do, to: state, by: subject}
  - {trigger: next, from: state, to: Default, by: subject}
  - {trigger: more, from: Default, to: note, by: subject}
  - {trigger: cancel, from: "*", to: done-done, by: subject}
"""


def test_mermaid_ids_for_names_mermaid_cannot_read():
    spec = load_definition(AWKWARD, "awkward.yaml")
    ids = state_ids(list(spec.states))
    assert ids == {"to-do": "to_do_2", "to_do": "to_do", "state": "s_state",
                   "Default": "s_Default", "note": "s_note", "done-done": "done_done"}
    assert len(set(ids.values())) == len(ids)
    text = mermaid(spec, {"to-do": 1})
    lines = _well_formed(text)
    assert "    [*] --> to_do_2" in lines
    assert "    to_do_2 : 待办： 第一步； 说明 第二行 (1)" in lines
    assert "    to_do_2 --> to_do : 去： 下一步" in lines
    assert "    s_Default --> s_note : more" in lines
    assert "    done_done --> [*]" in lines
    # `*` expands to every non-final state.
    assert sum(line.endswith("--> done_done : cancel") for line in lines) == 5
    # "direction LR" in a label would be read as a layout statement.
    (note,) = [line for line in lines if line.startswith("    s_note :")]
    assert not re.search(r"direction\s+LR", note, re.IGNORECASE)
