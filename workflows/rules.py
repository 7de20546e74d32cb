"""Guard rules and effects: registries of named, parameterised checks and record-keeping
steps that definitions refer to.

A definition says `rules: [{quota: {field: grade, value: 好, max_ratio: 0.4}}]`; nothing in
a definition is ever evaluated as code. Each rule has a marshmallow schema for its
parameters, a definition-time check against the flow (fields and values exist), and an
evaluation that is a pure function of the batch being fired and of facts the engine gives it
through `Facts` — rules never open sessions of their own.

Effects (`effects: [{record_annual_result: {...}}]` on a transition) use the same shape but
run after the case has moved, in the same transaction: a closed flow writes its result into
the person facts the other flows' rules read (an approved annual grade, a filed promotion).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as mf

from .errors import RuleViolation
from .spec import FlowSpec, RuleSpec, TransitionSpec

POOL_KEYS = ("unit", "tier", "period")  # case attributes a quota pool may be keyed on


@dataclass(frozen=True)
class CaseFacts:
    """What a rule may know about one case in the batch."""

    id: int
    flow: str
    subject_id: int
    unit_id: int
    tier: str | None
    period_key: str | None
    state: str
    data: dict[str, Any]  # case data merged with what this action submits


class Facts(Protocol):
    """Queries the engine answers for rules, inside the action's own transaction."""

    def query(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(session, *args)` in the action's transaction — for domain rules that read
        person facts or other cases (e.g. `workflows.facts.person_facts`)."""

    def quota_pool(
        self, flow: str, pool: dict[str, Any], field: str, value: Any, counted_states: list[str]
    ) -> tuple[int, int]:
        """(cases in the pool, cases in `counted_states` whose `field` equals `value`).

        Implementations serialise concurrent callers on the same pool (an advisory lock on
        PostgreSQL), so two approvals cannot both take the last place.
        """


@dataclass(frozen=True)
class Batch:
    transition: TransitionSpec
    spec: FlowSpec
    cases: list[CaseFacts]
    facts: Facts
    now: dt.datetime | None = None  # the engine's clock, for rules that judge by date
    actor_id: int | None = None  # who acts (None: the system), for effects' audit records


@dataclass(frozen=True)
class Rule:
    name: str
    label: str
    params: Schema
    check_definition: Callable[[dict[str, Any], TransitionSpec, FlowSpec], Iterator[tuple[str, str]]]
    evaluate: Callable[[dict[str, Any], Batch], None]
    # "case": judges each case on its own; "batch": judges the whole request together
    # (a quota counts every case of the flow being moved at once).
    scope: str = "case"


REGISTRY: dict[str, Rule] = {}
EFFECTS: dict[str, Rule] = {}  # run after the transition; `evaluate` writes through Facts


def register(rule: Rule) -> Rule:
    REGISTRY[rule.name] = rule
    return rule


def register_effect(effect: Rule) -> Rule:
    EFFECTS[effect.name] = effect
    return effect


def check_rule_params(rule: RuleSpec, t: TransitionSpec, spec: FlowSpec,
                      registry: dict[str, Rule] | None = None) -> Iterator[tuple[str, str]]:
    """Definition-time problems of one rule (or effect) use, as (sub-path, message)."""
    registry = REGISTRY if registry is None else registry
    impl = registry.get(rule.name)
    if impl is None:
        import difflib

        what = "rule" if registry is REGISTRY else "effect"
        close = difflib.get_close_matches(rule.name, list(registry), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        yield "", (f"unknown {what} {rule.name!r}{hint}; known {what}s: "
                   f"{', '.join(sorted(registry)) or 'none'}")
        return
    try:
        params = impl.params.load(rule.params)
    except ValidationError as exc:
        from .spec import _flatten, _friendly

        for path, message in _flatten(exc.messages):
            yield f".{path}" if path else "", _friendly(message)
        return
    yield from impl.check_definition(params, t, spec)


_LOADED: dict[int, tuple[RuleSpec, dict[str, Any]]] = {}


def _params(rule: RuleSpec, registry: dict[str, Rule] | None = None) -> dict[str, Any]:
    """A rule's parameters, loaded once (the spec keeps the RuleSpec alive, and so do we)."""
    found = _LOADED.get(id(rule))
    if found is None or found[0] is not rule:
        found = (rule, (REGISTRY if registry is None else registry)[rule.name].params.load(
            rule.params))
        _LOADED[id(rule)] = found
    return found[1]


def uses(spec: FlowSpec, name: str) -> Iterator[tuple[TransitionSpec, dict[str, Any]]]:
    """Each transition of a definition that uses rule `name`, with that use's parameters
    loaded (defaults filled in) — for readers that follow a rule's numbers: the ledger's
    quota, the positions table, the check-in minimum."""
    for t in spec.transitions:
        for r in t.rules:
            if r.name == name:
                yield t, REGISTRY[name].params.load(r.params)


def run_effects(batch: Batch) -> None:
    """Run the transition's effects over cases that have just moved (same transaction)."""
    for effect in batch.transition.effects:
        EFFECTS[effect.name].evaluate(_params(effect, EFFECTS), batch)


def evaluate(batch: Batch, whole: list[CaseFacts] | None = None) -> None:
    """Run every rule of the transition over the batch; the first refusal raises.

    `whole` is every case of the flow in a bulk request (other versions included): batch
    rules judge it, case rules only the transition's own cases."""
    for rule in batch.transition.rules:
        impl = REGISTRY[rule.name]
        judged = batch
        if impl.scope == "batch" and whole is not None:
            judged = Batch(batch.transition, batch.spec, whole, batch.facts, batch.now)
        impl.evaluate(_params(rule), judged)


class _Params(Schema):
    class Meta:
        unknown = RAISE


def field_value_problems(spec: FlowSpec, field: str, values: list[Any], path: str):
    if field not in spec.fields:
        yield ".field", f"unknown field {field!r}; declare it under fields"
        return
    fspec = spec.fields[field]
    if fspec.type == "enum":
        for v in values:
            if v not in fspec.values:
                yield (f".{path}", f"{v!r} is not a value of field {field!r}; "
                                   f"its values are {', '.join(fspec.values)}")


# --------------------------------------------------------------------------- required_when


class RequiredWhenParams(_Params):
    field = mf.String(required=True)  # the field that becomes required
    if_field = mf.String(required=True)  # when this field…
    in_ = mf.List(mf.Raw(), data_key="in", required=True, validate=validate.Length(min=1))


def _required_when_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    if p["field"] not in spec.fields:
        yield ".field", f"unknown field {p['field']!r}; declare it under fields"
    elif p["field"] not in t.requires + t.accepts:
        yield ".field", (f"field {p['field']!r} must be listed in accepts of trigger "
                         f"{t.trigger!r} so that it can be given")
    if p["if_field"] not in spec.fields:
        yield ".if_field", f"unknown field {p['if_field']!r}; declare it under fields"
    else:
        fspec = spec.fields[p["if_field"]]
        for v in p["in_"]:
            if fspec.type == "enum" and v not in fspec.values:
                yield ".in", (f"{v!r} is not a value of field {p['if_field']!r}; "
                              f"its values are {', '.join(fspec.values)}")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def _required_when(p: dict[str, Any], batch: Batch) -> None:
    for case in batch.cases:
        if case.data.get(p["if_field"]) in p["in_"] and _blank(case.data.get(p["field"])):
            f = batch.spec.fields[p["field"]]
            cond = batch.spec.fields[p["if_field"]]
            raise RuleViolation(
                "required_when",
                f"case {case.id}: {f.label.zh} ({p['field']}) is required when "
                f"{cond.label.zh} ({p['if_field']}) is {case.data.get(p['if_field'])}",
                {"case_id": case.id, "field": p["field"], "if_field": p["if_field"],
                 "value": case.data.get(p["if_field"])},
            )


register(Rule(
    name="required_when",
    label="条件必填 / required when",
    params=RequiredWhenParams(),
    check_definition=_required_when_definition,
    evaluate=_required_when,
))


# --------------------------------------------------------------------------- quota

ROUNDINGS: dict[str, Callable[[Decimal], int]] = {
    "floor": lambda x: int(x.to_integral_value(rounding=ROUND_FLOOR)),
    "ceil": lambda x: int(x.to_integral_value(rounding=ROUND_CEILING)),
    "round": lambda x: int(x.to_integral_value(rounding=ROUND_HALF_UP)),
}


class QuotaParams(_Params):
    field = mf.String(required=True)
    value = mf.Raw(required=True)
    max_ratio = mf.Float(required=True, validate=validate.Range(min=0, max=1, min_inclusive=False))
    min = mf.Integer(load_default=1, validate=validate.Range(min=0))
    rounding = mf.String(load_default="floor", validate=validate.OneOf(sorted(ROUNDINGS)))
    pool = mf.List(mf.String(validate=validate.OneOf(POOL_KEYS)), load_default=list(POOL_KEYS))
    counted_states = mf.List(mf.String())  # default: the transition's destination


def _quota_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    yield from field_value_problems(spec, p["field"], [p["value"]], "value")
    ftype = spec.fields[p["field"]].type if p["field"] in spec.fields else None
    if ftype not in (None, "enum", "text"):
        yield ".field", f"a quota counts an enum or text field; {p['field']!r} is {ftype}"
    for i, s in enumerate(p.get("counted_states", ())):
        if s not in spec.states:
            yield f".counted_states[{i}]", f"unknown state {s!r}"


def quota_limit(size: int, max_ratio: float, rounding: str, minimum: int) -> int:
    """The most cases of the pool that may have the value: max(round(n × ratio), minimum).

    Decimal arithmetic on the ratio as written: 5 × 0.4 is exactly 2, never 1.999…"""
    return max(ROUNDINGS[rounding](Decimal(str(max_ratio)) * size), minimum)


def pool_of(case: CaseFacts, keys: list[str]) -> dict[str, Any]:
    attrs = {"unit": case.unit_id, "tier": case.tier, "period": case.period_key}
    return {k: attrs[k] for k in keys}


def _quota(p: dict[str, Any], batch: Batch) -> None:
    counted = p.get("counted_states") or [batch.transition.dest]
    asked_by_pool: dict[tuple, list[CaseFacts]] = {}
    for case in batch.cases:
        if case.data.get(p["field"]) == p["value"]:
            key = tuple(sorted(pool_of(case, p["pool"]).items()))
            asked_by_pool.setdefault(key, []).append(case)
    field_label = batch.spec.fields[p["field"]].label.zh
    for key, cases in sorted(asked_by_pool.items(), key=lambda kv: str(kv[0])):
        pool = dict(key)
        size, used = batch.facts.quota_pool(batch.spec.flow, pool, p["field"], p["value"], counted)
        limit = quota_limit(size, p["max_ratio"], p["rounding"], p["min"])
        asked = len(cases)
        if used + asked > limit:
            where = ", ".join(f"{k}={v}" for k, v in pool.items()) or "whole flow"
            raise RuleViolation(
                "quota",
                f"quota for {field_label}={p['value']} in pool {where}: limit {limit} "
                f"({p['max_ratio']:.0%} of {size}, {p['rounding']}, at least {p['min']}), "
                f"already used {used}, asked {asked}",
                {"pool": pool, "size": size, "limit": limit, "used": used, "asked": asked,
                 "field": p["field"], "value": p["value"], "max_ratio": p["max_ratio"],
                 "case_ids": [c.id for c in cases]},
            )


register(Rule(
    name="quota",
    label="比例限额 / quota",
    params=QuotaParams(),
    check_definition=_quota_definition,
    evaluate=_quota,
    scope="batch",
))


from .domain_rules import load_all as _load_domain_rules  # noqa: E402 - after register()

_load_domain_rules()
