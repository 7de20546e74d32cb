"""The flow-definition validator (workflows.spec + the rule checks of workflows.rules).

Pure tests: no database. Broken definitions are made from the shipped
definitions/regular-assessment.yaml (loaded, mutated, dumped again) or written inline, and
each test asserts the exact path of the problem and a distinctive part of its message —
what a process owner would read from `civflow validate`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from workflows.errors import DefinitionInvalid, Problem
from workflows.spec import content_hash, load_definition

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "definitions" / "regular-assessment.yaml"
SOURCE = EXAMPLE.read_text(encoding="utf-8")
BASE: dict[str, Any] = yaml.safe_load(SOURCE)


# --------------------------------------------------------------------------- helpers


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def si(name: str) -> int:
    """Index of a state of the shipped example, so paths survive edits of the file."""
    return next(i for i, s in enumerate(BASE["states"]) if s["name"] == name)


def ti(trigger: str) -> int:
    """Index of the (first) transition with this trigger in the shipped example."""
    return next(i for i, t in enumerate(BASE["transitions"]) if t["trigger"] == trigger)


def state(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["states"][si(name)]


def transition(doc: dict[str, Any], trigger: str) -> dict[str, Any]:
    return doc["transitions"][ti(trigger)]


def rule(doc: dict[str, Any], trigger: str, name: str) -> dict[str, Any]:
    """The parameters of rule `name` on transition `trigger` (mutable in place)."""
    return next(r[name] for r in transition(doc, trigger)["rules"] if name in r)


def problems(text: str, filename: str = "flow.yaml") -> list[Problem]:
    with pytest.raises(DefinitionInvalid) as info:
        load_definition(text, filename)
    found = info.value.problems
    assert found, "DefinitionInvalid raised with no problems"
    return found


def mutated(change: Callable[[dict[str, Any]], Any]) -> list[Problem]:
    """Problems of the shipped example after `change` edits a deep copy of it."""
    doc = copy.deepcopy(BASE)
    change(doc)
    return problems(dump(doc))


def only(found: list[Problem], path: str) -> Problem:
    """The one problem at `path`; fails with the whole list when it is missing."""
    at = [p for p in found if p.path == path]
    assert len(at) == 1, f"expected one problem at {path!r}, got:\n" + "\n".join(map(str, found))
    return at[0]


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line of `text` containing `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


def replaced(old: str, new: str) -> str:
    """The shipped source with one unique piece of text replaced (keeps comments and lines)."""
    assert SOURCE.count(old) == 1, f"{old!r} is not unique in {EXAMPLE.name}"
    return SOURCE.replace(old, new)


def flow(states: str, transitions: str, head: str = "") -> str:
    """A small inline definition."""
    return f"flow: mini\ntitle: {{zh: 小流程}}\n{head}states:\n{states}transitions:\n{transitions}"


# --------------------------------------------------------------------------- the good case


def test_shipped_regular_assessment_validates():
    spec = load_definition(SOURCE, str(EXAMPLE))
    assert spec.flow == "regular-assessment"
    assert spec.title.zh == "平时考核" and spec.title.en == "Regular assessment"
    assert spec.period == "month"
    assert spec.initial == "summary"  # no `initial:` key: the first state
    assert list(spec.states) == ["summary", "evaluation", "feedback", "approval", "approved"]
    assert [s.name for s in spec.states.values() if s.final] == ["approved"]
    assert spec.fields["grade"].values == ("好", "较好", "一般", "较差")
    assert spec.roles["committee"].resolve == "unit_role"
    assert spec.roles["committee"].role == "committee"
    assert {"subject", "leader"} <= set(spec.roles)  # built in, never declared
    assert spec.transition("accept", "feedback").by == ("subject", "system")
    approve = spec.transition("approve", "approval")
    assert approve.dest == "approved"
    assert approve.rules[0].name == "quota"
    assert approve.rules[0].params["max_ratio"] == 0.4
    assert spec.transition("return_summary", "evaluation").comment == "required"
    assert spec.states["summary"].deadline.start == "period_end"
    assert spec.states["summary"].deadline.working_days == 5
    assert spec.states["feedback"].timers[0].fire == "accept"
    assert len(spec.content_hash) == 64 and int(spec.content_hash, 16) >= 0


def test_minimal_inline_flow_validates_with_defaults():
    spec = load_definition(flow(
        "  - {name: draft, actor: subject}\n  - {name: done, final: true}\n",
        "  - {trigger: finish, from: draft, to: done, by: subject}\n"))
    assert spec.period == "none" and spec.fields == {}
    assert spec.initial == "draft"
    assert spec.states["draft"].label.zh == "draft"  # label defaults to the name
    t = spec.transitions[0]
    assert (t.sources, t.dest, t.comment, t.allow_self) == (("draft",), "done", "optional", False)


def test_from_star_expands_to_every_non_final_state():
    def add_withdraw(doc):
        doc["states"].append({"name": "withdrawn", "final": True})
        doc["transitions"].append(
            {"trigger": "withdraw", "from": "*", "to": "withdrawn", "by": "leader"})

    doc = copy.deepcopy(BASE)
    add_withdraw(doc)
    spec = load_definition(dump(doc))
    withdraw = next(t for t in spec.transitions if t.trigger == "withdraw")
    assert withdraw.sources == ("summary", "evaluation", "feedback", "approval")


# --------------------------------------------------------------------------- states


@pytest.mark.parametrize(("trigger", "key", "value", "path", "message"), [
    ("evaluate", "to", "feedbak", "to",
     "unknown state 'feedbak' (did you mean 'feedback'?)"),
    ("evaluate", "from", "evaluaton", "from",
     "unknown state 'evaluaton' (did you mean 'evaluation'?)"),
    ("evaluate", "from", ["evaluation", "nowhere"], "from[1]", "unknown state 'nowhere'"),
])
def test_unknown_state_in_transition(trigger, key, value, path, message):
    found = mutated(lambda d: transition(d, trigger).__setitem__(key, value))
    assert only(found, f"transitions[{ti(trigger)}].{path}").message == message


def test_unknown_initial_state():
    found = mutated(lambda d: d.__setitem__("initial", "start"))
    assert only(found, "initial").message == "unknown state 'start'"


def test_unreachable_state():
    def add_orphan(doc):
        doc["states"].append({"name": "archived", "final": True})

    found = mutated(add_orphan)
    p = only(found, f"states[{len(BASE['states'])}]")
    assert p.message == "state 'archived' is unreachable from 'summary'"


def test_non_final_state_with_no_way_out():
    def add_dead_end(doc):
        doc["states"].append({"name": "review", "actor": "leader"})
        doc["transitions"].append(
            {"trigger": "review", "from": "approval", "to": "review", "by": "committee"})

    found = mutated(add_dead_end)
    p = only(found, f"states[{len(BASE['states'])}]")
    assert p.message.startswith("non-final state 'review' has no way out")
    assert "mark it final: true" in p.message


def test_flow_without_final_state():
    found = mutated(lambda d: state(d, "approved").__setitem__("final", False))
    assert only(found, "states").message == "a flow needs at least one final state"
    assert "non-final state 'approved' has no way out" in only(
        found, f"states[{si('approved')}]").message


@pytest.mark.parametrize(("source", "path"), [
    ("approved", "from"),
    (["approval", "approved"], "from[1]"),
])
def test_final_state_with_an_exit(source, path):
    def reopen(doc):
        doc["transitions"].append(
            {"trigger": "reopen", "from": source, "to": "evaluation", "by": "committee"})

    found = mutated(reopen)
    p = only(found, f"transitions[{len(BASE['transitions'])}].{path}")
    assert p.message == "final state 'approved' cannot have an exit"


def test_final_state_with_a_deadline():
    found = mutated(lambda d: state(d, "approved").__setitem__("deadline", {"duration": "P1D"}))
    p = only(found, f"states[{si('approved')}]")
    assert p.message == "final state 'approved' cannot have a deadline or timers"


def test_state_defined_twice():
    found = problems(flow(
        "  - {name: draft, actor: subject}\n  - {name: draft, actor: leader}\n"
        "  - {name: done, final: true}\n",
        "  - {trigger: finish, from: draft, to: done, by: subject}\n"))
    assert only(found, "states[1].name").message == "state 'draft' is defined twice"


def test_paths_after_a_duplicate_state_point_at_the_right_state():
    found = problems(flow(
        "  - {name: draft, actor: subject}\n  - {name: draft, actor: leader}\n"
        "  - {name: lost, actor: subject}\n  - {name: done, final: true}\n",
        "  - {trigger: finish, from: draft, to: done, by: subject}\n"
        "  - {trigger: leave, from: lost, to: done, by: subject}\n"))
    assert only(found, "states[2]").message == "state 'lost' is unreachable from 'draft'"


# --------------------------------------------------------------------------- triggers


@pytest.mark.parametrize(("where", "change", "path"), [
    ("timer fire",
     lambda d: state(d, "feedback")["timers"][0].__setitem__("fire", "acept"),
     f"states[{si('feedback')}].timers[0].fire"),
    ("deadline escalate",
     lambda d: state(d, "evaluation")["deadline"].__setitem__("escalate", "acept"),
     f"states[{si('evaluation')}].deadline.escalate"),
])
def test_unknown_trigger(where, change, path):
    p = only(mutated(change), path)
    assert p.message == "unknown trigger 'acept' (did you mean 'accept'?)", where


def test_escalation_trigger_must_exist_from_the_state_and_be_fired_by_system():
    found = mutated(lambda d: state(d, "evaluation")["deadline"].__setitem__("escalate", "submit"))
    path = f"states[{si('evaluation')}].deadline.escalate"
    assert only(found, path).message == "trigger 'submit' is not defined from state 'evaluation'"

    found = mutated(lambda d: transition(d, "accept").__setitem__("by", "subject"))
    p = only(found, f"states[{si('feedback')}].timers[0].fire")
    assert p.message.startswith("trigger 'accept' from 'feedback' must list system in by")


@pytest.mark.parametrize(("new", "first"), [
    ({"trigger": "submit", "from": "summary", "to": "approval", "by": "subject"}, "submit"),
    ({"trigger": "send_back", "from": "*", "to": "summary", "by": "committee"}, "send_back"),
])
def test_duplicate_trigger_from_one_source(new, first):
    found = mutated(lambda d: d["transitions"].append(new))
    source = BASE["transitions"][ti(first)]["from"]
    p = only(found, f"transitions[{len(BASE['transitions'])}].trigger")
    assert p.message == (f"trigger {first!r} from state {source!r} is already defined by "
                         f"transitions[{ti(first)}]")


def test_duplicate_trigger_from_different_sources_is_fine():
    def second_submit(doc):
        doc["transitions"].append(
            {"trigger": "submit", "from": "feedback", "to": "approval", "by": "subject"})

    doc = copy.deepcopy(BASE)
    second_submit(doc)
    spec = load_definition(dump(doc))
    assert spec.transition("submit", "feedback").dest == "approval"
    assert spec.transition("submit", "summary").dest == "evaluation"


# --------------------------------------------------------------------------- fields


@pytest.mark.parametrize(("key", "name", "message"), [
    ("requires", "sumary",
     "required field 'sumary' is not declared under fields (did you mean 'summary'?)"),
    ("accepts", "indicators",
     "field 'indicators' is not declared under fields (did you mean 'common_indicators'?)"),
])
def test_unknown_field_in_requires_or_accepts(key, name, message):
    found = mutated(lambda d: transition(d, "submit").__setitem__(key, [name]))
    assert only(found, f"transitions[{ti('submit')}].{key}[0]").message == message


def test_field_both_required_and_accepted():
    found = mutated(lambda d: transition(d, "submit")["accepts"].append("summary"))
    p = only(found, f"transitions[{ti('submit')}].accepts")
    assert p.message == "field 'summary' is listed in both requires and accepts"


@pytest.mark.parametrize(("name", "field", "path", "message"), [
    ("bad_type", {"type": "choice"}, "fields.bad_type.type",
     "'choice' is not one of: text, int, decimal, date, enum, bool, person, list"),
    ("no_type", {"label": "X"}, "fields.no_type.type", "is required"),
    ("wrong_option", {"type": "text", "places": 2}, "fields.wrong_option.places",
     "places does not apply to a field of type text"),
    ("flag", {"type": "bool", "values": ["是"]}, "fields.flag.values",
     "values does not apply to a field of type bool"),
    ("empty_enum", {"type": "enum", "values": []}, "fields.empty_enum.values",
     "an enum field needs a non-empty list of values"),
    ("twice", {"type": "enum", "values": ["好", "好"]}, "fields.twice.values",
     "values must not repeat"),
    ("score", {"type": "int", "min": 0.5}, "fields.score.min",
     "min of an int field must be an integer"),
    ("ratio", {"type": "decimal", "max": "1.5"}, "fields.ratio.max",
     "max of a decimal field must be a number"),
    ("day", {"type": "date", "min": "2026-13-01"}, "fields.day.min",
     "min of a date field must be a date YYYY-MM-DD"),
    ("span", {"type": "int", "min": 10, "max": 1}, "fields.span", "min 10 is greater than max 1"),
    ("bare", {"type": "list"}, "fields.bare.item",
     "a list field needs exactly one of item (scalars) or fields (records)"),
    ("nested", {"type": "list", "item": {"type": "list", "item": {"type": "text"}}},
     "fields.nested.item", "a list cannot hold lists"),
    ("rows", {"type": "list", "fields": {"cell": {"type": "txt"}}}, "fields.rows.fields.cell.type",
     "'txt' is not one of:"),
    ("long", {"type": "text", "max_length": 0}, "fields.long.max_length",
     "Must be greater than or equal to 1."),
    ("bad name", {"type": "text"}, "fields.bad name",
     "field name 'bad name' must start with a letter"),
])
def test_bad_field_declaration(name, field, path, message):
    found = mutated(lambda d: d["fields"].__setitem__(name, field))
    assert message in only(found, path).message


def test_every_field_type_and_option_validates():
    fields = {
        "note": {"type": "text", "max_length": 10},
        "score": {"type": "int", "min": 0, "max": 100},
        "weight": {"type": "decimal", "min": 0, "max": 99.5, "places": 1},
        "day": {"type": "date", "min": "2026-01-01", "max": "2026-12-31"},
        "level": {"type": "enum", "values": ["A", "B"]},
        "agreed": {"type": "bool"},
        "reviewer": {"type": "person", "label": "审核人"},
        "tags": {"type": "list", "item": {"type": "text", "max_length": 20}, "max_items": 3},
        "rows": {"type": "list", "fields": {"a": {"type": "int"}, "b": {"type": "bool"}}},
    }
    doc = copy.deepcopy(BASE)
    doc["fields"].update(fields)
    spec = load_definition(dump(doc))
    assert spec.fields["weight"].places == 1
    assert spec.fields["tags"].item.type == "text" and spec.fields["tags"].max_items == 3
    assert [f.name for f in spec.fields["rows"].record] == ["a", "b"]
    assert spec.fields["reviewer"].label.zh == "审核人"


def test_unquoted_yaml_date_bounds_are_accepted():
    text = replaced("\nfields:\n", "\nfields:\n  day: {type: date, min: 2026-01-01, max: 2026-12-31}\n")
    spec = load_definition(text)
    assert str(spec.fields["day"].min) == "2026-01-01"


def test_error_path_of_a_field_named_key():
    found = mutated(lambda d: d["fields"].__setitem__("key", {"type": "txt"}))
    assert "'txt' is not one of:" in only(found, "fields.key.type").message


# --------------------------------------------------------------------------- roles


@pytest.mark.parametrize(("change", "path", "message"), [
    (lambda d: transition(d, "approve").__setitem__("by", "comittee"),
     f"transitions[{ti('approve')}].by",
     "unknown role 'comittee'; known roles: committee, evaluator, leader, subject, system"),
    (lambda d: transition(d, "accept").__setitem__("by", ["subject", "sytem"]),
     f"transitions[{ti('accept')}].by[1]", "unknown role 'sytem'"),
    (lambda d: state(d, "approval").__setitem__("actor", "system"),
     f"states[{si('approval')}].actor",
     "unknown role 'system'; known roles: committee, evaluator, leader, subject"),
    (lambda d: state(d, "feedback")["timers"][0].__setitem__("notify", ["leader", "boss"]),
     f"states[{si('feedback')}].timers[0].notify[1]", "unknown role 'boss'"),
])
def test_unknown_role(change, path, message):
    assert message in only(mutated(change), path).message


@pytest.mark.parametrize(("role", "path", "message"), [
    ({"resolve": "unit_role"}, "roles.extra.role", "resolve: unit_role needs role"),
    ({"resolve": "group"}, "roles.extra.group", "resolve: group needs group"),
    ({"resolve": "office"}, "roles.extra.resolve",
     "'office' is not one of: subject, leader, unit_role, group"),
    ({"resolve": "group", "group": "hr office"}, "roles.extra.group",
     "must start with a letter"),
])
def test_bad_role_declaration(role, path, message):
    found = mutated(lambda d: d["roles"].__setitem__("extra", role))
    assert message in only(found, path).message


def test_system_role_cannot_be_redefined():
    found = mutated(lambda d: d["roles"].__setitem__("system", {"resolve": "group", "group": "x"}))
    assert only(found, "roles.system").message == "system is built in and cannot be redefined"


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize(("name", "param", "value", "path", "message"), [
    ("required_when", "if_field", "grad", "required_when.if_field",
     "unknown field 'grad'; declare it under fields"),
    ("required_when", "field", "nope", "required_when.field",
     "unknown field 'nope'; declare it under fields"),
    ("quota", "field", "grad", "quota.field", "unknown field 'grad'; declare it under fields"),
])
def test_unknown_field_in_rule_parameter(name, param, value, path, message):
    trigger = "evaluate" if name == "required_when" else "approve"
    found = mutated(lambda d: rule(d, trigger, name).__setitem__(param, value))
    assert only(found, f"transitions[{ti(trigger)}].rules[0].{path}").message == message


def test_required_when_field_must_be_accepted_by_the_transition():
    found = mutated(lambda d: rule(d, "evaluate", "required_when").__setitem__("field", "summary"))
    p = only(found, f"transitions[{ti('evaluate')}].rules[0].required_when.field")
    assert p.message == ("field 'summary' must be listed in accepts of trigger 'evaluate' "
                         "so that it can be given")


def test_unknown_rule_suggests_the_closest():
    def misspell(doc):
        t = transition(doc, "approve")
        t["rules"] = [{"qouta": t["rules"][0]["quota"]}]

    p = only(mutated(misspell), f"transitions[{ti('approve')}].rules[0].qouta")
    from workflows.rules import REGISTRY

    assert p.message == ("unknown rule 'qouta' (did you mean 'quota'?); "
                         f"known rules: {', '.join(sorted(REGISTRY))}")
    assert {"quota", "required_when"} <= set(REGISTRY)


@pytest.mark.parametrize(("rule_entry", "message"), [
    ({"quota": 3}, "parameters of rule 'quota' must be a mapping"),
    ({"quota": {}, "required_when": {}}, "a rule is written as {rule_name: {parameters}}"),
])
def test_rule_entry_shape(rule_entry, message):
    found = mutated(lambda d: transition(d, "approve").__setitem__("rules", [rule_entry]))
    assert only(found, f"transitions[{ti('approve')}].rules[0]").message == message


@pytest.mark.parametrize(("param", "value", "sub", "message"), [
    ("counted_states", ["aproved"], "counted_states[0]", "unknown state 'aproved'"),
    ("max_ratio", 1.5, "max_ratio", "Must be greater than 0 and less than or equal to 1."),
    ("extra", 1, "extra", "unknown key"),
])
def test_bad_quota_parameter(param, value, sub, message):
    found = mutated(lambda d: rule(d, "approve", "quota").__setitem__(param, value))
    path = f"transitions[{ti('approve')}].rules[0].quota.{sub}"
    assert only(found, path).message == message


def test_missing_quota_parameter():
    found = mutated(lambda d: rule(d, "approve", "quota").pop("max_ratio"))
    path = f"transitions[{ti('approve')}].rules[0].quota.max_ratio"
    assert only(found, path).message == "is required"


# --------------------------------------------------------------------------- enum values


@pytest.mark.parametrize(("change", "path", "message"), [
    (lambda d: rule(d, "approve", "quota").__setitem__("value", "优秀"),
     f"transitions[{ti('approve')}].rules[0].quota.value",
     "'优秀' is not a value of field 'grade'; its values are 好, 较好, 一般, 较差"),
    (lambda d: rule(d, "evaluate", "required_when").__setitem__("in", ["差"]),
     f"transitions[{ti('evaluate')}].rules[0].required_when.in",
     "'差' is not a value of field 'grade'"),
    (lambda d: rule(d, "approve", "quota").__setitem__("pool", ["unit", "grade"]),
     f"transitions[{ti('approve')}].rules[0].quota.pool[1]", "Must be one of: unit, tier, period."),
    (lambda d: rule(d, "approve", "quota").__setitem__("rounding", "up"),
     f"transitions[{ti('approve')}].rules[0].quota.rounding", "Must be one of: ceil, floor, round."),
    (lambda d: d.__setitem__("period", "fortnight"),
     "period", "'fortnight' is not one of: none, week, month, quarter, year"),
    (lambda d: d["fields"]["grade"].__setitem__("type", "choice"),
     "fields.grade.type", "'choice' is not one of: text, int, decimal"),
    (lambda d: transition(d, "submit").__setitem__("comment", "mandatory"),
     f"transitions[{ti('submit')}].comment", "'mandatory' is not one of: optional, required"),
    (lambda d: state(d, "feedback")["timers"][0].__setitem__("kind", "snooze"),
     f"states[{si('feedback')}].timers[0].kind", "'snooze' is not one of: reminder, auto, repeat"),
    (lambda d: state(d, "summary")["deadline"].__setitem__("from", "started"),
     f"states[{si('summary')}].deadline.from",
     "'started' is not one of: entered, period_start, period_end"),
])
def test_bad_enum_value(change, path, message):
    assert message in only(mutated(change), path).message


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize("bad", ["P5X", "5D", "P", "PT", "P1DT", "1 day"])
@pytest.mark.parametrize(("state_name", "change", "sub"), [
    ("evaluation", lambda st, v: st.__setitem__("deadline", {"duration": v}), "deadline.duration"),
    ("summary", lambda st, v: st["timers"][0].__setitem__("before", v), "timers[0].before"),
    ("feedback", lambda st, v: st.__setitem__(
        "timers", [{"kind": "auto", "after": v, "fire": "accept"}]), "timers[0].after"),
    ("feedback", lambda st, v: st.__setitem__(
        "timers", [{"kind": "repeat", "every": v}]), "timers[0].every"),
])
def test_bad_iso8601_duration(bad, state_name, change, sub):
    found = mutated(lambda d: change(state(d, state_name), bad))
    p = only(found, f"states[{si(state_name)}].{sub}")
    assert p.message == f"{bad!r} is not an ISO 8601 duration such as P5D or PT12H"


@pytest.mark.parametrize(("state_name", "new", "sub", "message"), [
    ("evaluation", {"deadline": {"duration": "P5D", "working_days": 3}}, "deadline",
     "a deadline needs exactly one of duration or working_days"),
    ("feedback", {"timers": [{"kind": "auto", "after": "P5D", "working_days": 5,
                              "fire": "accept"}]},
     "timers[0]", "an auto timer needs exactly one of after, working_days, at, at_field"),
    ("feedback", {"timers": [{"kind": "auto", "after": "P5D"}]}, "timers[0].fire",
     "an auto timer needs fire: <trigger>"),
    ("feedback", {"timers": [{"kind": "auto", "after": "P5D", "fire": "accept",
                              "before": "P1D"}]},
     "timers[0].before", "before does not apply to an auto timer"),
    ("feedback", {"timers": [{"kind": "reminder", "before": "P1D"}]}, "timers[0]",
     "a reminder needs a deadline on state 'feedback'"),
    ("feedback", {"timers": [{"kind": "repeat", "every": "P7D", "weekday": "mon"}]}, "timers[0]",
     "a repeat timer needs exactly one of every or weekday"),
    ("feedback", {"timers": [{"kind": "repeat", "weekday": "mon", "time": "25:00"}]},
     "timers[0].time", "'25:00' is not a time of day HH:MM"),
])
def test_bad_deadline_or_timer(state_name, new, sub, message):
    found = mutated(lambda d: state(d, state_name).update(new))
    assert only(found, f"states[{si(state_name)}].{sub}").message == message


def test_period_boundaries_need_a_flow_period():
    def no_period(doc):
        doc["period"] = "none"
        state(doc, "feedback")["timers"] = [{"kind": "auto", "at": "period_end", "fire": "accept"}]

    found = mutated(no_period)
    p = only(found, f"states[{si('summary')}].deadline.from")
    assert p.message == "period_end needs a flow period, and this flow has period: none"
    p = only(found, f"states[{si('feedback')}].timers[0].at")
    assert p.message == "a period boundary needs a flow period, and this flow has none"


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(("change", "path"), [
    (lambda d: d.__setitem__("owner", "hr"), "owner"),
    (lambda d: state(d, "summary").__setitem__("colour", "red"),
     f"states[{si('summary')}].colour"),
    (lambda d: d["fields"]["summary"].__setitem__("maxlength", 5), "fields.summary.maxlength"),
    (lambda d: transition(d, "submit").__setitem__("guard", "x"),
     f"transitions[{ti('submit')}].guard"),
    (lambda d: state(d, "summary")["deadline"].__setitem__("days", 5),
     f"states[{si('summary')}].deadline.days"),
])
def test_unknown_key(change, path):
    assert only(mutated(change), path).message == "unknown key"


def test_shape_errors_are_reported_before_semantic_ones():
    # The schema pass stops the load: the unknown state is reported once the key is fixed.
    def two_faults(doc):
        doc["owner"] = "hr"
        transition(doc, "evaluate")["to"] = "feedbak"

    assert [p.path for p in mutated(two_faults)] == ["owner"]


def test_all_semantic_problems_are_reported_together():
    def three_faults(doc):
        transition(doc, "submit")["requires"] = ["sumary"]
        transition(doc, "approve")["by"] = "comittee"
        state(doc, "feedback")["timers"][0]["fire"] = "acept"

    paths = {p.path for p in mutated(three_faults)}
    assert paths == {f"transitions[{ti('submit')}].requires[0]",
                     f"transitions[{ti('approve')}].by",
                     f"states[{si('feedback')}].timers[0].fire"}


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize(("text", "line", "message"), [
    ("flow: x\ntitle: {zh: a\nstates: []\n", 3, "not valid YAML: expected ',' or '}'"),
    ("flow: x\n  title: y\n", 2, "not valid YAML: mapping values are not allowed here"),
    ("flow: x\n\ttitle: y\n", 2, "not valid YAML: found character '\\t'"),
    ("flow: a\n---\nflow: b\n", 2, "not valid YAML: but found another document"),
])
def test_invalid_yaml_names_the_line(text, line, message):
    (p,) = problems(text, "bad.yaml")
    assert (p.file, p.path, p.line) == ("bad.yaml", "", line)
    assert p.message.startswith(message)
    assert str(p).startswith("bad.yaml: <root>: not valid YAML")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n"])
def test_top_level_must_be_a_mapping(text):
    (p,) = problems(text)
    assert p.path == "" and p.message == "a flow definition must be a mapping at the top level"


def test_json_source_is_accepted():
    text = json.dumps(BASE, ensure_ascii=False, indent=2)
    spec = load_definition(text, "regular-assessment.json")
    assert spec.flow == "regular-assessment"
    assert spec.content_hash == load_definition(SOURCE).content_hash


def test_json_problems_have_paths_but_no_lines():
    doc = copy.deepcopy(BASE)
    doc["period"] = "fortnight"
    (p,) = problems(json.dumps(doc, ensure_ascii=False, indent=1), "flow.json")
    assert (p.file, p.path, p.line) == ("flow.json", "period", None)


def test_invalid_json_names_the_line():
    (p,) = problems('{"flow": "x",\n "title": }', "flow.json")
    assert (p.path, p.line) == ("", 2)
    assert p.message == "not valid JSON: Expecting value"


# --------------------------------------------------------------------------- versions


def test_content_hash_ignores_comments_and_formatting():
    original = load_definition(SOURCE).content_hash
    assert original == content_hash(BASE)
    commented = "# 注释 comment\n" + SOURCE.replace("period: month", "period: month   # 月度")
    flow_style = yaml.safe_dump(BASE, allow_unicode=True, default_flow_style=True, width=4000)
    reordered = dump(dict(reversed(list(BASE.items()))))
    for text in (commented, flow_style, reordered):
        assert load_definition(text).content_hash == original


def test_content_hash_changes_with_content():
    original = load_definition(SOURCE).content_hash
    relabelled = replaced("{zh: 审定通过, en: Approve}", "{zh: 审定同意, en: Approve}")
    assert load_definition(relabelled).content_hash != original
    # Explicitly naming the default initial state is a different document, too.
    assert load_definition(SOURCE + "initial: summary\n").content_hash != original


# --------------------------------------------------------------------------- line numbers


@pytest.mark.parametrize(("old", "new", "path", "needle"), [
    ("    to: feedback\n", "    to: feedbak\n", f"transitions[{ti('evaluate')}].to", "to: feedbak"),
    ("fire: accept}", "fire: acept}", f"states[{si('feedback')}].timers[0].fire", "fire: acept"),
    ("value: 好,", "value: 优秀,", f"transitions[{ti('approve')}].rules[0].quota.value",
     "value: 优秀"),
    ("period: month\n", "period: fortnight\n", "period", "period: fortnight"),
    ("requires: [summary]", "requires: [sumary]", f"transitions[{ti('submit')}].requires[0]",
     "requires: [sumary]"),
    ("    label: {zh: 已审定, en: Approved}\n", "    label: {zh: 已审定, en: Approved}\n    x: 1\n",
     f"states[{si('approved')}].x", "    x: 1"),
])
def test_line_numbers_point_at_the_offending_line(old, new, path, needle):
    text = replaced(old, new)
    p = only(problems(text, "ra.yaml"), path)
    assert p.line == line_of(text, needle)
    assert str(p) == f"ra.yaml: {path}: {p.message} (line {p.line})"


def test_state_level_problem_points_at_the_state_entry():
    text = replaced("    final: true\n", "    final: false\n")
    p = only(problems(text), f"states[{si('approved')}]")
    assert p.line == line_of(text, "- name: approved")


def test_states_that_only_lead_in_circles():
    found = problems(flow(
        "  - {name: draft, actor: subject}\n  - {name: ping, actor: subject}\n"
        "  - {name: pong, actor: subject}\n  - {name: done, final: true}\n",
        "  - {trigger: finish, from: draft, to: done, by: subject}\n"
        "  - {trigger: play, from: draft, to: ping, by: subject}\n"
        "  - {trigger: hit, from: ping, to: pong, by: subject}\n"
        "  - {trigger: hit, from: pong, to: ping, by: subject}\n"))
    assert only(found, "states[1]").message == (
        "state 'ping' can never reach a final state: its transitions only lead in circles")
    assert only(found, "states[2]").message.startswith("state 'pong' can never reach")


def test_a_self_loop_is_no_way_out():
    found = problems(flow(
        "  - {name: draft, actor: subject}\n  - {name: stuck, actor: subject}\n"
        "  - {name: done, final: true}\n",
        "  - {trigger: finish, from: draft, to: done, by: subject}\n"
        "  - {trigger: park, from: draft, to: stuck, by: subject}\n"
        "  - {trigger: again, from: stuck, to: stuck, by: subject}\n"))
    assert "non-final state 'stuck' has no way out" in only(found, "states[1]").message


def test_quota_counts_only_enum_or_text_fields():
    def on_int(doc):
        doc["fields"]["score"] = {"type": "int"}
        rule(doc, "approve", "quota").update(field="score", value=1)

    found = mutated(on_int)
    assert only(found, f"transitions[{ti('approve')}].rules[0].quota.field").message == (
        "a quota counts an enum or text field; 'score' is int")


# --------------------------------------------------------------------------- cycle


def test_shipped_regular_assessment_has_a_monthly_cycle():
    from workflows.spec import CycleSpec

    spec = load_definition(SOURCE, str(EXAMPLE))
    assert spec.cycle == CycleSpec(open="period_start", time="08:00", offset_days=0, tiers=(),
                                   units=(), catch_up="latest")


def test_a_full_cycle_block_validates():
    def full(doc):
        doc["cycle"] = {"open": "period_end", "time": "17:30", "offset_days": -3,
                        "who": {"tiers": ["chief", "deputy"], "units": ["SEC1", 110000]},
                        "catch_up": "all"}

    doc = copy.deepcopy(BASE)
    full(doc)
    c = load_definition(dump(doc)).cycle
    assert (c.open, c.time, c.offset_days, c.catch_up) == ("period_end", "17:30", -3, "all")
    assert c.tiers == ("chief", "deputy")
    assert c.units == ("SEC1", "110000")  # an unquoted numeric unit code is a code


def test_cycle_defaults_and_flows_without_one():
    doc = copy.deepcopy(BASE)
    doc["cycle"] = {}
    c = load_definition(dump(doc)).cycle
    assert (c.open, c.time, c.offset_days, c.tiers, c.units, c.catch_up) == \
        ("period_start", "00:00", 0, (), (), "latest")
    del doc["cycle"]
    assert load_definition(dump(doc)).cycle is None


@pytest.mark.parametrize(("cycle", "path", "message"), [
    (None, "cycle", "must be a mapping such as {open: period_start, catch_up: latest}; "
                    "leave cycle out for a flow without one"),
    ("monthly", "cycle", "must be a mapping such as {open: period_start, catch_up: latest}"),
    ({"open": "start"}, "cycle.open", "'start' is not one of: period_start, period_end"),
    ({"catch_up": "some"}, "cycle.catch_up", "'some' is not one of: latest, all, none"),
    ({"catchup": "all"}, "cycle.catchup", "unknown key"),
    ({"time": "25:00"}, "cycle.time", "'25:00' is not a time of day HH:MM"),
    ({"time": "8:00"}, "cycle.time", "'8:00' is not a time of day HH:MM"),
    ({"time": 510}, "cycle.time", 'must be a time of day HH:MM in quotes, e.g. "08:30" '
                                  "(YAML reads an unquoted 8:30 as a number)"),
    ({"offset_days": 1.5}, "cycle.offset_days", "must be an integer"),
    ({"offset_days": True}, "cycle.offset_days", "must be an integer"),
    ({"offset_days": 400}, "cycle.offset_days", "must be between -366 and 366 days"),
    ({"who": "all"}, "cycle.who", "must be a mapping such as {tiers: [staff], units: [SEC1]}"),
    ({"who": None}, "cycle.who", "must be a mapping such as {tiers: [staff], units: [SEC1]}; "
                                 "leave who out for every active person"),
    ({"who": {"unit": ["SEC1"]}}, "cycle.who.unit", "unknown key"),
    ({"who": {"tiers": ["staff", "boss"]}}, "cycle.who.tiers[1]",
     "'boss' is not one of: chief, deputy, staff"),
    ({"who": {"tiers": []}}, "cycle.who.tiers",
     "needs at least one tier; leave it out to mean every tier"),
    ({"who": {"tiers": ["staff", "staff"]}}, "cycle.who.tiers", "tiers must not repeat"),
    ({"who": {"units": "SEC1"}}, "cycle.who.units", "must be a list"),
    ({"who": {"units": ["SEC1", "SEC1"]}}, "cycle.who.units", "units must not repeat"),
    ({"who": {"units": [""]}}, "cycle.who.units[0]", "must be a unit code (1 to 64 characters)"),
])
def test_bad_cycle(cycle, path, message):
    found = mutated(lambda d: d.__setitem__("cycle", cycle))
    assert only(found, path).message == message


def test_a_cycle_needs_a_flow_period():
    def no_period(doc):
        doc["period"] = "none"
        for st in doc["states"]:
            if "deadline" in st:
                st["deadline"].pop("from", None)

    found = mutated(no_period)
    assert [p.path for p in found] == ["cycle"]
    assert found[0].message == ("a cycle opens one case per person per period, and this flow "
                                "has period: none; set period: week, month, quarter or year")


def test_cycle_problems_name_their_line():
    text = SOURCE.replace('time: "08:00"', 'time: "8 am"')
    (p,) = problems(text)
    assert p.path == "cycle.time" and p.line == line_of(text, 'time: "8 am"')


def test_yaml_aliases_are_refused_before_they_expand():
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    with pytest.raises(DefinitionInvalid) as exc:
        load_definition(bomb, "bomb.yaml")
    (p,) = exc.value.problems
    assert "anchors and aliases" in p.message and p.line == 2


@pytest.mark.parametrize("trigger", ["start", "claim", "release", "delegate"])
def test_reserved_trigger_names(trigger):
    found = mutated(lambda d: d["transitions"][0].__setitem__("trigger", trigger))
    assert "is reserved" in only(found, "transitions[0].trigger").message


def test_a_trigger_the_scheduler_fires_cannot_require_data():
    def change(doc):
        accept = next(t for t in doc["transitions"] if t["trigger"] == "accept")
        accept["comment"] = "required"

    found = mutated(change)
    assert any("cannot require fields or a comment" in p.message for p in found)
