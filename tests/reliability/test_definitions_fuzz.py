"""Generated definitions thrown at the validator (issue 7, item 2): it never crashes, it
always explains — and what it accepts, the engine can run.

Three sources of input (hypothesis strategies):

- `raw_text`: arbitrary text over an alphabet heavy in YAML's special characters;
- `documents`: random YAML/JSON-ish documents (nested mappings and lists of scalars, dates,
  the keys a definition uses and others), written as YAML or JSON;
- `plausible`: the four shipped definitions, and definitions assembled from random states,
  transitions, fields, roles, rules, timers and cycles, each then mutated at random
  (a key dropped, renamed or added; a value replaced by junk, by a reference to some other
  name, by null; list items repeated, dropped or swapped).

Properties:

1. `load_definition` returns a spec or raises `DefinitionInvalid` whose every problem has
   the file name, a path (a string), a non-empty message and, when the source is YAML, the
   line (≥ 1). Any other exception is a bug.
2. What it accepts is usable: the flow compiles (`CompiledFlow`: the state machine and the
   form schemas), draws (`mermaid`), and each state's deadline and timers can be planned
   on entering it, a repeating timer always moving forward in time; each transition's form
   accepts or refuses sample data with `FieldErrors`, never another exception.
3. `civflow validate FILE` exits 0 or 1 and prints no traceback.

200 examples per property by default, derandomized so CI sees the same ones each run;
CIVFLOW_HEAVY=1 runs 3,000 random ones (a new draw each run).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import string
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.cli import main
from workflows.calendar import WorkCalendar
from workflows.diagram import mermaid
from workflows.errors import DefinitionInvalid, FieldErrors
from workflows.forms import build_schema
from workflows.forms import load as load_form
from workflows.machine import CompiledFlow
from workflows.rules import EFFECTS, REGISTRY
from workflows.spec import (
    FIELD_TYPES,
    PERIODS,
    TIMER_KINDS,
    WEEKDAYS,
    FlowSpec,
    load_definition,
)
from workflows.timers import next_repeat, plan_state

from ..conftest import ROOT
from .conftest import HEAVY, heavy

pytestmark = pytest.mark.reliability
EXAMPLES = heavy(200, 3000)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    derandomize=not HEAVY, suppress_health_check=list(HealthCheck))
SHIPPED = {p.name: yaml.safe_load(p.read_text(encoding="utf-8"))
           for p in sorted((ROOT / "definitions").glob("*.yaml")) if p.name != "calendar.yaml"}
CALENDAR = WorkCalendar()
ENTERED = dt.datetime(2026, 11, 26, 2, 0, tzinfo=dt.UTC)
PERIOD_KEYS = {"none": None, "week": "2026-W48", "month": "2026-11", "quarter": "2026-Q4",
               "year": "2026"}

# --------------------------------------------------------------------------- strategies

KEYS = ["flow", "title", "description", "period", "initial", "fields", "roles", "states",
        "transitions", "cycle", "name", "label", "actor", "final", "deadline", "timers",
        "kind", "after", "working_days", "at", "at_field", "fire", "before", "every",
        "weekday", "time", "notify", "message", "trigger", "from", "to", "by", "requires",
        "accepts", "appends", "rules", "effects", "allow_self", "comment", "type", "values",
        "max_length", "min", "max", "places", "item", "max_items", "resolve", "role",
        "group", "inherit", "duration", "escalate", "open", "offset_days", "who", "tiers",
        "units", "catch_up", "zh", "en", *REGISTRY, *EFFECTS]
WORDS = ["summary", "approval", "done", "subject", "leader", "system", "committee", "P5D",
         "PT12H", "P0D", "P99999Y", "08:30", "24:00", "mon", "period_start", "period_end",
         "quarter_end", "month", "none", "text", "enum", "list", "date", "decimal", "int",
         "好", "较好", "*", "", " ", "\x00", "start", "claim", "-1", "1e309", "NaN"]
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.dates() | st.sampled_from(WORDS) | st.sampled_from(KEYS))
keys = st.sampled_from(KEYS) | st.text(max_size=8) | st.integers(-3, 3) | st.booleans()
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(keys, inner, max_size=6), max_leaves=30)
YAML_ALPHABET = string.ascii_letters + string.digits + " \t\n:-[]{},&*!|>'\"%@`#?~.=+\\/" \
    + "好审定\u3000\ufeff\x00\x85\u2028"
raw_text = st.text(alphabet=YAML_ALPHABET, max_size=300)


def _to_text(doc: Any, as_json: bool) -> str:
    if as_json:
        return json.dumps(doc, ensure_ascii=False, default=str)
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


names = st.sampled_from(["summary", "review", "approval", "done", "closed", "x", "Bad Name",
                         "*", "start", "system"])
field_types = st.sampled_from([*FIELD_TYPES, "blob"])
durations = st.sampled_from(["P5D", "PT12H", "P1M", "P0D", "PT0S", "P1W", "P99999Y",
                             "P10000Y", "PT1S", "P", "5D", "P1.5D"])


@st.composite
def a_field(draw) -> dict[str, Any]:
    ftype = draw(field_types)
    f: dict[str, Any] = {"type": ftype, "label": draw(st.sampled_from(["字段", {"zh": "字段"}]))}
    if ftype == "enum":
        f["values"] = draw(st.lists(st.sampled_from(["好", "较好", "一般", "较差", ""]),
                                    max_size=4))
    if ftype == "text" and draw(st.booleans()):
        f["max_length"] = draw(st.integers(-1, 5000))
    if ftype in ("int", "decimal", "date") and draw(st.booleans()):
        bound = (st.dates().map(str) if ftype == "date"
                 else st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10))
        f["min"], f["max"] = draw(bound), draw(bound)
    if ftype == "decimal" and draw(st.booleans()):
        f["places"] = draw(st.integers(-1, 12))
    if ftype == "list":
        if draw(st.booleans()):
            f["item"] = {"type": draw(st.sampled_from(["text", "int", "date", "list"]))}
        else:
            f["fields"] = {"a": {"type": "text"}, "b": {"type": draw(field_types)}}
        f["max_items"] = draw(st.integers(0, 10))
    return f


@st.composite
def a_timer(draw, triggers: list[str], field_names: list[str]) -> dict[str, Any]:
    kind = draw(st.sampled_from([*TIMER_KINDS, "alarm"]))
    t: dict[str, Any] = {"kind": kind}
    if kind == "auto":
        how = draw(st.sampled_from(["after", "working_days", "at", "at_field"]))
        t[how] = {"after": draw(durations), "working_days": draw(st.integers(-1, 400)),
                  "at": draw(st.sampled_from(["period_start", "period_end", "noon"])),
                  "at_field": draw(st.sampled_from([*field_names, "nowhere"]))}[how]
        t["fire"] = draw(st.sampled_from([*triggers, "nothing"]))
        if draw(st.booleans()):
            t["time"] = draw(st.sampled_from(["08:00", "23:59", "8:00", "25:00"]))
    elif kind == "reminder":
        t["before"] = draw(durations)
    elif kind == "repeat":
        if draw(st.booleans()):
            t["every"] = draw(durations)
        else:
            t["weekday"] = draw(st.sampled_from([*WEEKDAYS, "fri", "someday"]))
            t["time"] = draw(st.sampled_from(["16:00", "00:00", "16:60"]))
    if draw(st.booleans()):
        t["notify"] = draw(st.sampled_from(["subject", ["leader", "subject"], "nobody"]))
    return t


@st.composite
def a_rule(draw, field_names: list[str]) -> dict[str, Any]:
    name = draw(st.sampled_from([*REGISTRY, *EFFECTS, "no_such_rule"]))
    fieldname = draw(st.sampled_from([*field_names, "grade", "nowhere"]))
    params = draw(st.sampled_from([
        {}, None, {"field": fieldname}, {"field": fieldname, "if_field": fieldname,
                                         "in": ["好"]},
        {"field": fieldname, "value": "好", "max_ratio": draw(st.floats(-1, 2) | st.just(
            float("nan"))), "rounding": "floor", "min": 1, "pool": ["unit", "tier", "period"]},
        {"field": fieldname, "value": "好", "max_ratio": 0.4, "pool": ["planet"]},
        "not a mapping"]))
    return {name: params}


@st.composite
def assembled(draw) -> dict[str, Any]:
    """A definition put together from random parts: often invalid, sometimes valid."""
    state_names = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    field_names = draw(st.lists(st.sampled_from(["summary", "grade", "due", "items", "n"]),
                                max_size=4, unique=True))
    fields = {n: draw(a_field()) for n in field_names}
    triggers = draw(st.lists(st.sampled_from(["submit", "approve", "expire", "back", "start"]),
                             min_size=1, max_size=5))
    roles = draw(st.sampled_from([{}, {"committee": {"resolve": "unit_role",
                                                     "role": "committee"}},
                                  {"hr": {"resolve": "group", "group": "hr-office"}},
                                  {"bad": {"resolve": "unit_role"}}]))
    who = st.sampled_from(["subject", "leader", "system", ["subject", "system"], *roles,
                           "nobody"])
    states = []
    for n in state_names:
        s: dict[str, Any] = {"name": n}
        if draw(st.booleans()):
            s["final"] = draw(st.booleans())
        if draw(st.booleans()):
            s["actor"] = draw(who)
        if draw(st.booleans()):
            s["deadline"] = {draw(st.sampled_from(["duration", "working_days"])):
                             draw(durations | st.integers(-1, 400))}
            if draw(st.booleans()):
                s["deadline"]["from"] = draw(st.sampled_from(
                    ["entered", "period_start", "period_end", "quarter_end", "later"]))
            if draw(st.booleans()):
                s["deadline"]["escalate"] = draw(st.sampled_from(triggers))
        if draw(st.booleans()):
            s["timers"] = draw(st.lists(a_timer(triggers, field_names), max_size=3))
        states.append(s)
    transitions = []
    for trig in triggers:
        t: dict[str, Any] = {"trigger": trig,
                             "from": draw(st.sampled_from([*state_names, "*", "elsewhere"])),
                             "to": draw(st.sampled_from([*state_names, "elsewhere"])),
                             "by": draw(who)}
        for key in ("requires", "accepts", "appends"):
            if field_names and draw(st.booleans()):
                t[key] = draw(st.lists(st.sampled_from([*field_names, "ghost"]), max_size=2))
        if draw(st.booleans()):
            t["rules"] = draw(st.lists(a_rule(field_names), max_size=2))
        if draw(st.booleans()):
            t["comment"] = draw(st.sampled_from(["optional", "required", "maybe"]))
        transitions.append(t)
    doc: dict[str, Any] = {"flow": draw(st.sampled_from(["fuzz-flow", "Fuzz", "f"])),
                           "title": draw(st.sampled_from(["模糊测试", {"zh": "模糊", "en": "Fuzz"},
                                                          {"en": "no zh"}, ""])),
                           "period": draw(st.sampled_from([*PERIODS, "decade"])),
                           "fields": fields, "roles": roles, "states": states,
                           "transitions": transitions}
    if draw(st.booleans()):
        doc["start"] = draw(st.sampled_from([
            {"accepts": field_names[:1], "by": draw(who)}, {"accepts": ["ghost"]},
            {"accepts": field_names[:2] * 2, "by": "process_owner"}, {"by": "admin"},
            None, "everything", {"accepts": [], "by": []}]))
    if draw(st.booleans()):
        doc["cycle"] = draw(st.sampled_from([
            {"open": "period_start", "time": "08:00", "catch_up": "latest"},
            {"open": "period_end", "offset_days": draw(st.integers(-400, 400)),
             "who": {"tiers": ["staff"], "units": ["SEC1", 110000]}},
            {"time": 510}, None, "monthly"]))
    return doc


# Durations the validator accepts, the odd ones included: accepted means the engine must
# cope with them.
SANE_DURATIONS = st.sampled_from(["P5D", "PT12H", "P1M", "P1W", "PT1S", "P0D", "PT0S",
                                  "P0Y", "PT0M", "P1Y", "P400Y", "P9999Y", "P99999Y",
                                  "PT1000000H", "P3000000D"])


@st.composite
def sane(draw) -> dict[str, Any]:
    """A definition the validator should accept: a chain of states to a final one, forms,
    back edges, rules, deadlines and timers of every kind, perhaps a cycle — with values
    drawn from everything the validator allows (so: mostly valid, and exactly the ones whose
    acceptance the engine must live with)."""
    period = draw(st.sampled_from(PERIODS))
    n_states = draw(st.integers(2, 5))
    state_names = [f"s{i}" for i in range(n_states - 1)] + ["done"]
    bound = st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.5, -3, 10**6]) \
        | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    fields: dict[str, Any] = {
        "summary": {"type": "text", "max_length": draw(st.integers(1, 5000))},
        "grade": {"type": "enum", "values": ["好", "较好", "一般"]},
        "due": {"type": "date"},
        "n": {"type": "decimal", "min": draw(bound), "max": draw(bound),
              "places": draw(st.integers(0, 10))},
        "k": {"type": "int", "min": draw(st.integers(-10**20, 10**20)),
              "max": draw(st.integers(-10**20, 10**20))},
        "items": {"type": "list", "item": {"type": "text"}, "max_items": draw(
            st.integers(1, 100))},
    }
    states: list[dict[str, Any]] = []
    transitions: list[dict[str, Any]] = []
    for i, name in enumerate(state_names[:-1]):
        nxt = state_names[i + 1]
        forward = {"trigger": f"next{i}", "from": name, "to": nxt,
                   "by": draw(st.sampled_from(["subject", ["subject", "system"], "leader",
                                               ["leader", "system"]]))}
        if "system" not in forward["by"] and draw(st.booleans()):
            forward["requires"] = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1,
                                                max_size=2, unique=True))
        if draw(st.booleans()):
            forward["accepts"] = [f for f in draw(st.lists(st.sampled_from(sorted(fields)),
                                                           max_size=3, unique=True))
                                  if f not in forward.get("requires", ())]
            if "grade" in forward["accepts"] + forward.get("requires", []) \
                    and "summary" in forward["accepts"] + forward.get("requires", []) \
                    and draw(st.booleans()):
                forward["rules"] = [{"required_when": {
                    "field": "summary", "if_field": "grade", "in": ["一般"]}}]
            elif "grade" in forward["accepts"] and draw(st.booleans()):
                forward["rules"] = [{"quota": {
                    "field": "grade", "value": "好",
                    "max_ratio": draw(st.floats(0.01, 1)),
                    "rounding": draw(st.sampled_from(["floor", "ceil", "round"])),
                    "min": draw(st.integers(0, 3)),
                    "pool": draw(st.lists(st.sampled_from(["unit", "tier", "period"]),
                                          min_size=1, unique=True))}}]
        transitions.append(forward)
        if i and draw(st.booleans()):
            transitions.append({"trigger": f"back{i}", "from": name,
                                "to": draw(st.sampled_from(state_names[:i])),
                                "by": "leader", "comment": "required"})
        state: dict[str, Any] = {"name": name, "actor": forward["by"] if isinstance(
            forward["by"], str) else forward["by"][0]}
        if draw(st.booleans()):
            measure = draw(st.sampled_from(["duration", "working_days"]))
            state["deadline"] = {measure: draw(SANE_DURATIONS) if measure == "duration"
                                 else draw(st.integers(0, 365))}
            if period != "none" and draw(st.booleans()):
                state["deadline"]["from"] = draw(st.sampled_from(
                    ["entered", "period_start", "period_end", "quarter_end"]))
        timers = []
        system_fires = "system" in forward["by"] and "requires" not in forward
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(TIMER_KINDS))
            if kind == "reminder" and "deadline" in state:
                timers.append({"kind": "reminder", "before": draw(SANE_DURATIONS)})
            elif kind == "auto" and system_fires:
                how = draw(st.sampled_from(["after", "working_days", "at", "at_field"]))
                if how == "at" and period == "none":
                    how = "after"
                value = {"after": draw(SANE_DURATIONS), "working_days": draw(st.integers(0, 365)),
                         "at": draw(st.sampled_from(["period_start", "period_end"])),
                         "at_field": "due"}[how]
                timer = {"kind": "auto", how: value, "fire": forward["trigger"]}
                if how in ("at", "at_field") and draw(st.booleans()):
                    timer["time"] = draw(st.sampled_from(["00:00", "08:30", "23:59"]))
                timers.append(timer)
            elif kind == "repeat":
                if draw(st.booleans()):
                    timers.append({"kind": "repeat", "every": draw(SANE_DURATIONS)})
                else:
                    timers.append({"kind": "repeat", "weekday": draw(st.sampled_from(WEEKDAYS)),
                                   "time": draw(st.sampled_from(["00:00", "16:00", "23:59"]))})
        if timers:
            state["timers"] = timers
        states.append(state)
    states.append({"name": "done", "final": True})
    doc: dict[str, Any] = {"flow": "fuzz-flow", "title": {"zh": "模糊测试", "en": "Fuzz"},
                           "period": period, "fields": fields, "states": states,
                           "transitions": transitions}
    if draw(st.booleans()):
        doc["start"] = {"accepts": draw(st.lists(st.sampled_from(sorted(fields)), min_size=1,
                                                 max_size=3, unique=True)),
                        "by": draw(st.sampled_from(["system", ["leader", "process_owner"],
                                                    "admin", ["subject", "system"]]))}
    if period != "none" and draw(st.booleans()):
        doc["cycle"] = {"open": draw(st.sampled_from(["period_start", "period_end"])),
                        "time": draw(st.sampled_from(["00:00", "08:00"])),
                        "offset_days": draw(st.integers(-366, 366)),
                        "catch_up": draw(st.sampled_from(["latest", "all", "none"]))}
    return doc


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw, base: Any) -> Any:
    """`base` with 0–3 random mutations somewhere in its tree."""
    doc = json.loads(json.dumps(base, default=str))  # a deep copy (dates become strings)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        how = draw(st.sampled_from(["drop", "junk", "doc", "null", "rename", "extra",
                                    "repeat", "swap", "reference", "listify"]))
        if how == "drop":
            del parent[key]
        elif how == "junk":
            parent[key] = draw(scalars)
        elif how == "doc":
            parent[key] = draw(documents)
        elif how == "null":
            parent[key] = None
        elif how == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS) | st.text(max_size=6))] = parent.pop(key)
        elif how == "extra" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(scalars)
        elif how == "repeat" and isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[key], default=str)))
        elif how == "swap" and isinstance(parent, list) and len(parent) > 1:
            other = draw(st.integers(0, len(parent) - 1))
            parent[key], parent[other] = parent[other], parent[key]
        elif how == "reference":
            parent[key] = draw(names | st.sampled_from(WORDS))
        elif how == "listify":
            parent[key] = [parent[key]]
    return doc


plausible = (st.sampled_from(sorted(SHIPPED)).flatmap(lambda n: mutated(SHIPPED[n]))
             | assembled().flatmap(mutated) | sane() | sane().flatmap(mutated))


# --------------------------------------------------------------------------- the properties


def check(text: str, filename: str) -> FlowSpec | None:
    """Property 1 (and 2 for what is accepted); returns the spec or None."""
    try:
        spec = load_definition(text, filename)
    except DefinitionInvalid as exc:
        assert exc.problems, "DefinitionInvalid without problems"
        for p in exc.problems:
            assert p.file == filename, p
            assert isinstance(p.path, str), p
            assert isinstance(p.message, str) and p.message.strip(), p
            if not filename.endswith(".json"):
                assert isinstance(p.line, int) and p.line >= 1, f"no line for {p}"
        return None
    usable(spec)
    return spec


SAMPLE = {"text": "样例", "int": 1, "decimal": "1.5", "date": "2026-11-26", "enum": None,
          "bool": True, "person": 1, "list": []}


def usable(spec: FlowSpec) -> None:
    """Property 2: an accepted definition compiles, draws, plans its timers, loads forms."""
    cf = CompiledFlow(spec, 0, 1)
    mermaid(spec)
    key = PERIOD_KEYS[spec.period]
    for name, state in spec.states.items():
        _deadline, planned = plan_state(spec, name, ENTERED, key, CALENDAR, {})
        for p in planned:
            assert p.due_at.tzinfo is not None, (name, p)
        for tm in state.timers:
            if tm.kind == "repeat":
                nxt = next_repeat(tm.every, tm.weekday, tm.time, ENTERED, CALENDAR)
                assert nxt > ENTERED, f"state {name!r}: a repeat timer that never moves on " \
                                      f"({tm.every or tm.weekday})"
    def sample(names) -> dict[str, Any]:
        return {f: (spec.fields[f].values[0] if spec.fields[f].type == "enum"
                    else SAMPLE[spec.fields[f].type]) for f in names}

    forms = [(cf.start_schema, sample(spec.start.accepts)),  # a case's start data
             (build_schema(spec.fields, (), tuple(spec.fields)), sample(spec.fields))]
    forms += [(cf.schema(t, source), sample((*t.requires, *t.accepts)))
              for t in spec.transitions for source in t.sources]
    for schema, data in forms:
        with contextlib.suppress(FieldErrors):  # refusing the sample with reasons is fine
            load_form(schema, data)


# Inputs that broke a property once (see docs/RELIABILITY.md), always tried first.
def _minimal(**state: Any) -> dict[str, Any]:
    return {"flow": "found-bug", "title": "回归", "fields": {
        "n": {"type": "decimal", **state.pop("n", {})}},
        "states": [{"name": "a", **state}, {"name": "b", "final": True}],
        "transitions": [{"trigger": "go", "from": "a", "to": "b", "by": "subject",
                         "accepts": ["n"]}]}


FOUND = [
    _minimal(deadline={"duration": "P99999Y"}),  # ValueError: year 12025 is out of range
    _minimal(deadline={"duration": "P5D"}, timers=[{"kind": "reminder",
                                                    "before": "P3000000D"}]),
    _minimal(timers=[{"kind": "repeat", "every": "PT0S"}]),  # repeats without end
    _minimal(n={"min": float("nan")}),  # decimal.InvalidOperation on every submission
]


@given(text=raw_text, json_name=st.booleans())
@example(text="", json_name=False)  # no line: the empty stream had no node
@example(text="# 只有注释\n", json_name=False)
@example(text="flow: a\x00b\n", json_name=False)  # ReaderError: no mark, no line
@SETTINGS
def test_arbitrary_text(text, json_name):
    check(text, "fuzz.json" if json_name else "fuzz.yaml")


@given(doc=documents, as_json=st.booleans())
@SETTINGS
def test_random_documents(doc, as_json):
    check(_to_text(doc, as_json), "fuzz.json" if as_json else "fuzz.yaml")


@given(doc=plausible, as_json=st.booleans())
@SETTINGS
def test_plausible_definitions(doc, as_json):
    check(_to_text(doc, as_json), "fuzz.json" if as_json else "fuzz.yaml")


@pytest.mark.parametrize("doc", FOUND, ids=["deadline-P99999Y", "reminder-P3000000D",
                                           "repeat-PT0S", "decimal-min-nan"])
def test_inputs_that_broke_the_properties_once(doc):
    for as_json in (False, True):
        check(_to_text(doc, as_json), "found.json" if as_json else "found.yaml")


def test_the_shipped_definitions_pass_both_properties():
    """The unmutated shipped flows are accepted and usable (the generator's baseline)."""
    for name, doc in SHIPPED.items():
        assert check(_to_text(doc, False), name) is not None, name


@given(doc=plausible | documents, as_json=st.booleans())
@settings(SETTINGS, max_examples=heavy(25, 300))
def test_civflow_validate_exit_codes(doc, as_json, tmp_path_factory):
    """Property 3, in-process (a process per example would take minutes)."""
    path = tmp_path_factory.mktemp("defs") / ("flow.json" if as_json else "flow.yaml")
    path.write_text(_to_text(doc, as_json), encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code in (0, 1), (result.exit_code, result.output[-2000:])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in result.output


def test_civflow_validate_as_a_process(tmp_path):
    """Property 3 as the shell sees it: a folder of broken and sound files, one process."""
    from .conftest import civflow

    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    (tmp_path / "junk.yaml").write_text("{[: &a\n\t- *a", encoding="utf-8")
    (tmp_path / "list.json").write_text("[1, 2", encoding="utf-8")
    (tmp_path / "nul.json").write_text('{"flow": "a\\u0000b"}', encoding="utf-8")
    (tmp_path / "ok.yaml").write_text(
        (ROOT / "definitions" / "regular-assessment.yaml").read_text(encoding="utf-8"),
        encoding="utf-8")
    done = civflow("validate", str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    for name in ("empty.yaml", "junk.yaml", "list.json", "nul.json"):
        assert str(tmp_path / name) in done.stdout, (name, done.stdout)
    assert "ok.yaml: ok: regular-assessment" in done.stderr
