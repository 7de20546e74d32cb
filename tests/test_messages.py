"""Message codes (消息代码): every refusal, field error, reason and definition problem of the
engine is a key with parameters, and every key has a Chinese and an English template.

- The source of `workflows/` is walked (AST): a refusal raised, a field error, an import
  error, a definition problem (`Problem`, `add(path, …)`, a rule's `yield path, …`, a
  marshmallow `ValidationError`) or an eligibility `Reason` made from a bare string or an
  f-string fails the test — it would reach a Chinese reader in English.
- Every key used (`msg("…")`, `constant("…")`, marshmallow's own messages) has an entry in
  both catalogues, the Chinese uses no placeholder the English does not have, and each
  committed `.mo` says exactly what its `.po` says.
- The API answers a quota refusal and a field error in Chinese by default and in English
  with `Accept-Language: en`, keeping `code`, `key` and the parameters; a page shows them in
  the session's language.
"""

from __future__ import annotations

import ast
import string
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from tests.conftest import ROOT
from workflows import messages
from workflows.errors import FieldErrors, RuleViolation
from workflows.messages import LANGS, Message, from_marshmallow, msg, render

WORKFLOWS = ROOT / "workflows"
LOCALE = WORKFLOWS / "locale"
# Modules whose raise lines are still being moved onto keys (none now: the engine's kernel,
# reads, versions, engine.py, the front door and migrate are done). A module listed here is
# skipped by the walk; the test must hold for every module.
PENDING: set[str] = set()
# Keys built from a value: the values they take (each must have an entry).
DYNAMIC = {
    "quota.pool_{}": ("unit", "tier", "period"),
    "quota.rounding_{}": ("floor", "ceil", "round"),
    "tier.{}": ("chief", "deputy", "staff"),
    "spec.unknown_{}": ("rule", "effect"),
    "period.{}": ("week", "month", "quarter", "year"),
}
ERRORS = {"CivflowError", "NotFound", "NotPublished", "ActionNotAllowed", "NoActor",
          "Forbidden", "FieldErrors", "RuleViolation", "Conflict", "DuplicateCase",
          "IdempotencyMismatch", "ImportFailed", "DefinitionInvalid", "AuthFailed",
          "LoginThrottled"}
MESSAGE_ARG = {"RuleViolation": 1, "Reason": 1, "add": 1, "Problem": 2, "_refuse": 1, "taken": 1}


def _modules() -> list[Path]:
    return [p for p in sorted(WORKFLOWS.rglob("*.py")) if "migrations" not in p.parts]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _bare(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (
        isinstance(node, ast.Constant) and isinstance(node.value, str))


def _bare_in_lists(node: ast.AST) -> list[ast.AST]:
    """Bare texts in `{path: [text, …]}` (field errors) and `[(line, text), …]` (imports)."""
    found = []
    values = node.values if isinstance(node, ast.Dict) else \
        [node.value] if isinstance(node, ast.DictComp) else []
    for v in values:
        if isinstance(v, ast.List):
            found += [x for x in v.elts if _bare(x)]
    if isinstance(node, ast.List):
        for t in node.elts:
            if isinstance(t, ast.Tuple) and len(t.elts) == 2 and _bare(t.elts[1]):
                found.append(t.elts[1])
    return found


def _collects(node: ast.AST) -> bool:
    """A name that collects messages: `errors`, `problems`, …"""
    return isinstance(node, ast.Name) and ("error" in node.id or "problem" in node.id)


def unkeyed(tree: ast.AST) -> list[int]:
    """Lines where a message is made from a bare string instead of a key."""
    lines = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
                else None
            if name in ERRORS or name in MESSAGE_ARG or name == "ValidationError":
                i = MESSAGE_ARG.get(name, 0)
                if len(n.args) > i and _bare(n.args[i]):
                    lines.append(n.lineno)
                if n.args and name in ("FieldErrors", "ImportFailed", "ValidationError"):
                    lines += [x.lineno for x in _bare_in_lists(n.args[0])]
        # errors collected before the raise: `errors[path] = [text]`,
        # `errors.setdefault(path, []).append(text)`, `problems.append((line, text))`
        if isinstance(n, ast.Assign) and len(n.targets) == 1 \
                and isinstance(n.targets[0], ast.Subscript) and _collects(n.targets[0].value) \
                and isinstance(n.value, ast.List):
            lines += [x.lineno for x in n.value.elts if _bare(x)]
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                and n.func.attr == "append" and n.args and (
                    _collects(n.func.value) or (isinstance(n.func.value, ast.Call)
                                                and isinstance(n.func.value.func, ast.Attribute)
                                                and n.func.value.func.attr == "setdefault")):
            arg = n.args[0]
            if _bare(arg) or (isinstance(arg, ast.Tuple) and len(arg.elts) == 2
                              and _bare(arg.elts[1])):
                lines.append(n.lineno)
        # a rule's definition check yields (path, message)
        if isinstance(n, ast.Yield) and isinstance(n.value, ast.Tuple) \
                and len(n.value.elts) == 2 and _bare(n.value.elts[1]):
            lines.append(n.lineno)
    return sorted(set(lines))


def used_keys() -> dict[str, str]:
    """Every key the engine uses → the first module using it."""
    found: dict[str, str] = {}
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for n in ast.walk(tree):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                    and n.func.id in ("msg", "constant", "Message") and n.args):
                continue
            arg = n.args[0]
            if isinstance(arg, ast.JoinedStr):
                pattern = "".join(v.value if isinstance(v, ast.Constant) else "{}"
                                  for v in arg.values)
                assert pattern in DYNAMIC, f"{_rel(path)}:{n.lineno}: key {pattern} is built " \
                                           "from a value: list its values in DYNAMIC"
                for value in DYNAMIC[pattern]:
                    found.setdefault(pattern.format(value), _rel(path))
                continue
            for c in ast.walk(arg):  # a literal, or the literals of a choice between keys
                if isinstance(c, ast.Constant) and isinstance(c.value, str) and "." in c.value:
                    found.setdefault(c.value, _rel(path))
    for _pattern, key in messages._MARSHMALLOW:
        found.setdefault(key, "workflows/messages.py")
    return found


def _po(lang: str):
    with open(LOCALE / lang / "LC_MESSAGES" / "civflow.po", "rb") as f:
        return read_po(f)


def _names(template: str) -> set[str]:
    return {name.split(".")[0].split("[")[0].split("!")[0]
            for _text, name, _spec, _conv in string.Formatter().parse(template)
            if name is not None}


# --------------------------------------------------------------------------- the source


def test_every_message_of_the_engine_is_made_from_a_key():
    missing = {}
    for path in _modules():
        if _rel(path) in PENDING:
            continue
        lines = unkeyed(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            missing[_rel(path)] = lines
    assert not missing, f"messages made from bare strings (use msg(key, …)): {missing}"


SERVICE = ROOT / "service"
# The service's own ways of refusing a request, beside the engine's errors: the text they
# are given (first argument, or `message=`) must be a keyed message too.
SERVICE_REFUSALS = {"abort", "RequestEntityTooLarge", "_invalid"}


def service_unkeyed(tree: ast.AST) -> list[int]:
    lines = unkeyed(tree)
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
                else None
            if name in SERVICE_REFUSALS:
                given = [k.value for k in n.keywords if k.arg in ("message", "description")]
                if name != "abort" and n.args:
                    given.append(n.args[0])
                lines += [x.lineno for x in given if _bare(x)]
    return sorted(set(lines))


def test_every_refusal_of_the_service_is_made_from_a_key():
    """The API answers in the reader's language (Chinese by default): the service's own
    refusals — a missing If-Match, a bad token, a body that is not JSON — are keyed too."""
    missing = {_rel(p): lines for p in sorted(SERVICE.rglob("*.py"))
               if (lines := service_unkeyed(ast.parse(p.read_text(encoding="utf-8"))))}
    assert not missing, f"refusals made from bare strings (use msg(key, …)): {missing}"
    found = service_unkeyed(ast.parse(
        'abort(428, message="send If-Match")\nraise RequestEntityTooLarge(f"{n} bytes")\n'
        '_invalid("not JSON")\nraise ValidationError("give a name", "name")\n'))
    assert found == [1, 2, 3, 4]  # the check itself finds each kind


def test_the_walk_finds_bare_messages():
    """The check itself: each kind of bare message is found (and PENDING is not stale)."""
    src = '''
def f(case, p):
    raise RuleViolation("quota", f"case {case.id}: over", {})
    raise NotFound("gone")
    raise FieldErrors({"year": ["is not a year"]})
    raise ImportFailed([(1, "bad file")])
    yield ".field", f"unknown field {p!r}"
    add("states", "a flow needs a state")
    raise ValidationError("must be a mapping")
    reasons.append(Reason("rank", "no rank"))
    errors["year"] = [f"{year} is not a year"]
    errors.setdefault("year", []).append("is required")
    errors.append((line, "missing column(s)"))
    raise RuleViolation("quota", msg("quota.exceeded", limit=2), {})
    errors.setdefault("year", []).append(msg("field.required"))
'''
    assert unkeyed(ast.parse(src)) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    for pending in sorted(PENDING):  # a file still listed must still have a bare message
        assert unkeyed(ast.parse((ROOT / pending).read_text(encoding="utf-8"))), pending


@pytest.mark.parametrize("lang", LANGS)
def test_every_key_used_has_a_template(lang):
    catalogue = {m.id: m.string for m in _po(lang) if m.id}
    used = used_keys()
    assert len(used) > 300  # the walk itself works
    missing = {k: where for k, where in used.items() if not catalogue.get(k)}
    assert not missing, f"not in workflows/locale/{lang}/LC_MESSAGES/civflow.po: {missing}"


def test_the_catalogues_agree():
    en = {m.id: m for m in _po("en") if m.id}
    zh = {m.id: m for m in _po("zh") if m.id}
    assert set(en) == set(zh), set(en) ^ set(zh)
    for key, m in zh.items():
        assert m.string and not m.fuzzy, key
        # the Chinese may leave a parameter out (an English-only word), never add one
        assert _names(m.string) <= _names(en[key].string), key
        string.Formatter().parse(m.string)  # well-formed


@pytest.mark.parametrize("lang", LANGS)
def test_each_mo_matches_its_po(lang):
    with open(LOCALE / lang / "LC_MESSAGES" / "civflow.mo", "rb") as f:
        mo = read_mo(f)
    expected = {m.id: m.string for m in _po(lang) if m.id and m.string and not m.fuzzy}
    assert {m.id: m.string for m in mo if m.id} == expected, \
        f"{lang}: civflow.mo is stale; run pybabel compile -D civflow -d workflows/locale"


DOC = ROOT / "docs" / "messages.md"
DOC_MARK = "of date.\n"  # the table follows the paragraph that ends so


def codes_table() -> str:
    """The table of docs/messages.md, from the catalogues."""
    en = {m.id: m.string for m in _po("en") if m.id}
    zh = {m.id: m.string for m in _po("zh") if m.id}
    out, group = [], None
    for key in sorted(en):
        if key.split(".")[0] != group:
            group = key.split(".")[0]
            out.append(f"\n### `{group}`\n\n| key | 中文 | English |\n|---|---|---|\n")
        cells = [t.replace("|", "\\|").replace("\n", " ") for t in (zh.get(key, ""), en[key])]
        out.append(f"| `{key}` | {cells[0]} | {cells[1]} |\n")
    return "".join(out)


def test_the_docs_list_every_code():
    text = DOC.read_text(encoding="utf-8")
    assert text[text.index(DOC_MARK) + len(DOC_MARK):] == codes_table(), \
        "docs/messages.md's table of codes is out of date: run python -m tests.test_messages"


# --------------------------------------------------------------------------- rendering


def test_a_message_renders_in_each_language_and_keeps_its_key():
    pool = [msg("quota.pool_period", value="2026-10"),
            msg("quota.pool_tier", value=msg("tier.staff")), msg("quota.pool_unit", value=2)]
    m = msg("quota.exceeded", field=_Label("考核等次", "Grade"), value="好", pool=pool, limit=2,
            ratio="40%", size=5, why="", rounding=msg("quota.rounding_floor"), min=1, used=1,
            asked=2)
    assert isinstance(m, str) and m.key == "quota.exceeded"
    # the log text: English words, the definition's own names
    assert str(m) == ("quota for 考核等次=好 in pool period=2026-10, tier=staff, unit=2: limit 2 "
                      "(40% of 5, floor, at least 1), already used 1, asked 2")
    assert render(m, "zh") == ("名额已满：2026-10 期、科员层级、单位 2 的“好”考核等次限额 2 人"
                               "（5 人的 40%，向下取整，至少 1 人），已用 1 人，本次申请 2 人")
    assert render(m, "en").startswith("quota for Grade=好 in pool period=2026-10")
    assert messages.params_json(m)["field"] == {"zh": "考核等次", "en": "Grade"}
    assert messages.params_json(m)["rounding"] == "quota.rounding_floor"


def test_marshmallow_messages_get_keys():
    for text, key, zh in [
            ("Missing data for required field.", "field.required", "必填"),
            ("Not a valid number.", "field.not_number", "不是有效的数字"),
            ("Must be greater than or equal to 0.", "field.min", "不得小于 0"),
            ("Must be greater than or equal to 0 and less than or equal to 5.",
             "field.between", "应在 0 至 5 之间"),
            ("Longer than maximum length 200.", "field.max_length", "长度不得超过 200")]:
        m = from_marshmallow(text)
        assert (m.key, render(m, "zh"), str(m)) == (key, zh, m.render("en"))
    other = from_marshmallow("Something nobody mapped.")
    assert other.key == "field.other" and "Something nobody mapped." in render(other, "zh")


def test_a_refusal_in_each_language():
    exc = FieldErrors({"summary": [msg("field.required")]})
    assert str(exc) == "summary: is required"
    assert exc.to_dict("zh")["fields"] == {"summary": ["必填"]}
    assert exc.to_dict("zh")["field_keys"] == {"summary": [{"key": "field.required",
                                                           "params": {}}]}
    rv = RuleViolation("quota", msg("rule.required_when", case_id=1, field="评鉴意见",
                                    name="evaluation_comment", if_label="考核等次",
                                    if_field="grade", value="一般"), {"case_id": 1})
    body = rv.to_dict("zh")
    assert body["key"] == "rule.required_when" and body["details"] == {"case_id": 1}
    assert body["message"] == "案件 1：考核等次为“一般”时，必须填写评鉴意见"
    assert isinstance(rv.message, Message)


class _Label:
    """A definition label (spec.Label) without importing the definition machinery."""

    def __init__(self, zh: str, en: str):
        self.zh, self.en = zh, en

    def text(self, lang: str = "zh") -> str:
        return self.en if lang == "en" else self.zh


# --------------------------------------------------------------------------- the service

FLOW, PERIOD = "regular-assessment", "2026-11"


def over_the_quota(engine, org) -> list[int]:
    """SEC1's staff s1…s5 for 2026-11: 5 in the pool, at most floor(5 × 40%) = 2 好; three
    cases graded 好 wait for approval."""
    from workflows.engine import Actor

    ids = []
    for who in ("s1", "s2", "s3"):
        cid = engine.start_case(FLOW, org.ids[who], period_key=PERIOD).id
        engine.fire(cid, "submit", Actor.person(org.ids[who]), data={"summary": "本月小结"})
        engine.fire(cid, "evaluate", Actor.person(org.ids["l1"]),
                    data={"grade": "好", "evaluation_comment": "意见"})
        engine.fire(cid, "accept", Actor.person(org.ids[who]))
        ids.append(cid)
    for who in ("s4", "s5"):
        engine.start_case(FLOW, org.ids[who], period_key=PERIOD)
    return ids


def test_the_api_answers_in_chinese_unless_english_is_asked_for(api, engine, org):
    api.client.environ_base.pop("HTTP_ACCEPT_LANGUAGE")  # the fixture asks for English
    ids = over_the_quota(engine, org)
    bulk = {"trigger": "approve", "case_ids": ids}
    zh = api.post("c1", "/api/v1/queue/bulk", json=bulk)
    en = api.post("c1", "/api/v1/queue/bulk", json=bulk, headers={"Accept-Language": "en"})
    assert zh.status_code == en.status_code == 422
    for r in (zh, en):  # the machine-readable part is the same in both languages
        assert (r.json["code"], r.json["rule"], r.json["key"]) == (
            "rule_violation", "quota", "quota.exceeded")
        assert (r.json["details"]["limit"], r.json["details"]["asked"]) == (2, 3)
        assert (r.json["params"]["limit"], r.json["params"]["asked"]) == (2, 3)
    assert zh.json["message"].startswith("名额已满：")
    assert "“好”考核等次限额 2 人" in zh.json["message"]
    assert zh.json["message"].endswith("已用 0 人，本次申请 3 人")
    assert "limit 2" in en.json["message"] and en.json["message"].endswith("asked 3")
    assert [engine.get_case(i).state for i in ids] == ["approval"] * 3  # nothing moved

    # A field error (marshmallow's own message) and a request body webargs refuses.
    cid = engine.start_case(FLOW, org.ids["s4"], period_key="2026-10").id
    url = f"/api/v1/cases/{cid}/actions/submit"
    for lang, required in (("zh-CN,zh;q=0.9", "必填"), ("en", "is required")):
        r = api.post("s4", url, json={"data": {}}, headers={"If-Match": '"1"',
                                                           "Accept-Language": lang})
        assert r.status_code == 422 and r.json["fields"] == {"summary": [required]}
        assert r.json["field_keys"] == {"summary": [{"key": "field.required", "params": {}}]}
        r = api.post("s4", url, json={"data": {"summary": 5}},
                     headers={"If-Match": '"1"', "Accept-Language": lang})
        assert r.json["field_keys"]["summary"][0]["key"] == "field.not_string"
    r = api.post("s4", url, json={"data": {"summary": 5}}, headers={"If-Match": '"1"'})
    assert r.json["fields"] == {"summary": ["不是有效的文本"]}
    r = api.post("c1", "/api/v1/queue/bulk", json={"trigger": "approve"})
    assert r.status_code == 422 and r.json["code"] == "invalid_request"
    assert r.json["fields"] == {"json.case_ids": ["必填"]}



def test_a_refusal_names_the_person_and_the_step_in_chinese(api, engine, org):
    """No English inside a Chinese refusal: the actor is 人员 N, the step and the actions
    are their labels (the ids stay in the parameters)."""
    api.client.environ_base.pop("HTTP_ACCEPT_LANGUAGE")  # the fixture asks for English
    cid = engine.start_case(FLOW, org.ids["s1"], period_key=PERIOD).id
    url = f"/api/v1/cases/{cid}/actions"
    r = api.post("l1", f"{url}/submit", json={"data": {"summary": "x"}},
                 headers={"If-Match": '"1"'})
    assert r.status_code == 403 and r.json["rule"] == "role"
    assert f"人员 {org.ids['l1']} 在本案中不具备" in r.json["message"]
    assert "person" not in r.json["message"]
    r = api.post("s1", f"{url}/approve", json={"data": {}}, headers={"If-Match": '"1"'})
    assert r.status_code == 409 and r.json["params"]["state"] == "summary"
    assert r.json["message"] == ("当前环节“个人小结”不能执行“审定通过”；"
                                 "此环节可执行：记录周记实、提交小结")
    # The service's own refusals too: a missing If-Match, a request without a login.
    r = api.post("s1", f"{url}/submit", json={"data": {"summary": "x"}})
    assert (r.status_code, r.json["key"]) == (428, "request.if_match_required")
    assert r.json["message"].startswith("请在 If-Match 中附带")
    r = api.client.post(f"{url}/submit", json={"data": {"summary": "x"}})
    assert (r.status_code, r.json["key"]) == (401, "auth.log_in_first")
    assert r.json["message"].startswith("请先登录")


if __name__ == "__main__":  # rewrite the table of docs/messages.md from the catalogues
    _text = DOC.read_text(encoding="utf-8")
    DOC.write_text(_text[:_text.index(DOC_MARK) + len(DOC_MARK)] + codes_table(),
                   encoding="utf-8")
