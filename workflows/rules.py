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
from typing import Any, Protocol

from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as mf

from .errors import RuleViolation
from .messages import msg
from .quotas import (  # noqa: F401 - POOL_KEYS, ROUNDINGS, quota_limit: read from here too
    POOL_KEYS,
    ROUNDINGS,
    PoolFigures,
    PoolKey,
    Quota,
    from_params,
    pool_key,
    pool_units,
    quota_limit,
    tiers_problems,
)
from .spec import FlowSpec, RoleSpec, RuleSpec, TransitionSpec


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

    def dispatch_host(self, role: RoleSpec, subject_id: int) -> int | None:
        """Who hosts `subject_id` now for an evaluator role with `while_dispatched` (下沉一线),
        or None (`actors.dispatch_hosts`); the action may have read it with its case."""

    def pool_units(self, quota: Quota, unit_ids: set[int]) -> dict[int, int]:
        """The unit standing for each unit's pool (`quotas.pool_units`); the action may
        know its case unit's ancestors already."""

    def quota_figures(self, flow: str, quota: Quota, keys: list[PoolKey],
                      units: dict[int, int] | None = None) -> dict[PoolKey, PoolFigures]:
        """Size, used and limit of each pool (`quotas.figures`).

        Implementations serialise concurrent callers on the same pool (an advisory lock on
        PostgreSQL, taken in key order), so two approvals cannot both take the last place.
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
        hint = msg("spec.did_you_mean", name=close[0]) if close else ""
        yield "", msg(f"spec.unknown_{what}", name=rule.name, hint=hint,
                      known=sorted(registry) or msg("spec.none"))
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
        yield ".field", msg("spec.unknown_field", name=field)
        return
    fspec = spec.fields[field]
    if fspec.type == "enum":
        for v in values:
            if v not in fspec.values:
                yield (f".{path}", msg("spec.not_a_value", value=v, field=field,
                                       values=list(fspec.values)))


# --------------------------------------------------------------------------- required_when


class RequiredWhenParams(_Params):
    field = mf.String(required=True)  # the field that becomes required
    if_field = mf.String(required=True)  # when this field…
    in_ = mf.List(mf.Raw(), data_key="in", required=True, validate=validate.Length(min=1))


def _required_when_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    if p["field"] not in spec.fields:
        yield ".field", msg("spec.unknown_field", name=p["field"])
    elif p["field"] not in t.requires + t.accepts:
        yield ".field", msg("rules.required_when_not_accepted", field=p["field"],
                            trigger=t.trigger)
    if p["if_field"] not in spec.fields:
        yield ".if_field", msg("spec.unknown_field", name=p["if_field"])
    else:
        fspec = spec.fields[p["if_field"]]
        for v in p["in_"]:
            if fspec.type == "enum" and v not in fspec.values:
                yield ".in", msg("spec.not_a_value", value=v, field=p["if_field"],
                                 values=list(fspec.values))


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def _required_when(p: dict[str, Any], batch: Batch) -> None:
    for case in batch.cases:
        if case.data.get(p["if_field"]) in p["in_"] and _blank(case.data.get(p["field"])):
            f = batch.spec.fields[p["field"]]
            cond = batch.spec.fields[p["if_field"]]
            raise RuleViolation(
                "required_when",
                msg("rule.required_when", case_id=case.id, field=f.label, name=p["field"],
                    if_label=cond.label, if_field=p["if_field"],
                    value=case.data.get(p["if_field"])),
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


class RatioField(mf.Field):
    """A ratio in (0, 1], or one per tier: `{chief: 0.3, deputy: 0.35, staff: 0.4}`."""

    def _deserialize(self, value, attr, data, **kwargs):
        one = mf.Float(validate=validate.Range(min=0, max=1, min_inclusive=False))
        if isinstance(value, dict):
            errors, out = {}, {}
            for tier, r in value.items():
                try:
                    out[str(tier)] = one.deserialize(r)
                except ValidationError as exc:
                    errors[str(tier)] = exc.messages
            if errors:
                raise ValidationError(errors)
            return out
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValidationError(msg("rules.ratio"))
        return one.deserialize(value)


class PoolParams(_Params):
    """How a quota's pools are formed and its limit rounded (shared by `quota` and
    `excellent_quota`; see workflows/quotas.py)."""

    rounding = mf.String(load_default="floor", validate=validate.OneOf(sorted(ROUNDINGS)))
    min = mf.Integer(load_default=1, validate=validate.Range(min=0))  # 0: no minimum of one
    unit_depth = mf.Integer(validate=validate.Range(min=1, max=20))  # pool at this depth
    merge_units = mf.List(mf.List(mf.String(validate=validate.Length(min=1, max=64)),
                                  validate=validate.Length(min=2)))  # unit codes, one pool
    counted_states = mf.List(mf.String())  # default: the transition's destination


class QuotaParams(PoolParams):
    field = mf.String(required=True)
    value = mf.Raw(required=True)
    max_ratio = RatioField(required=True)
    pool = mf.List(mf.String(validate=validate.OneOf(POOL_KEYS)), load_default=list(POOL_KEYS))


def pool_problems(p: dict[str, Any], spec: FlowSpec):
    """Definition-time problems of the pool parameters, shared by the quota rules."""
    yield from tiers_problems(p["max_ratio"])
    if isinstance(p["max_ratio"], dict) and "tier" not in p["pool"]:
        yield ".max_ratio", msg("rules.ratio_per_tier_needs_tier")
    if len(set(p["pool"])) != len(p["pool"]):
        yield ".pool", msg("rules.pool_key_twice")
    spans = p.get("unit_depth") is not None or p.get("merge_units")
    if spans and "unit" not in p["pool"]:
        yield ".unit_depth" if p.get("unit_depth") is not None else ".merge_units", \
            msg("rules.pools_need_unit")
    seen: dict[str, int] = {}
    for i, group in enumerate(p.get("merge_units") or ()):
        for j, code in enumerate(group):
            if code in seen:
                yield f".merge_units[{i}][{j}]", msg("rules.unit_in_two_groups", unit=code,
                                                     group=seen[code])
            seen.setdefault(code, i)
    for i, s in enumerate(p.get("counted_states", ())):
        if s not in spec.states:
            yield f".counted_states[{i}]", msg("spec.unknown_state", name=s, hint="")


def _quota_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    yield from field_value_problems(spec, p["field"], [p["value"]], "value")
    ftype = spec.fields[p["field"]].type if p["field"] in spec.fields else None
    if ftype not in (None, "enum", "text"):
        yield ".field", msg("rules.quota_field_type", field=p["field"], type=ftype)
    yield from pool_problems(p, spec)


def pool_of(case: CaseFacts, keys: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A case's own attributes a pool is keyed on (its unit before `unit_depth` and
    `merge_units` map it: see `quotas.pool_units`)."""
    attrs = {"unit": case.unit_id, "tier": case.tier, "period": case.period_key}
    return {k: attrs[k] for k in keys}


def judge_quota(quota: Quota, batch: Batch, name: str) -> None:
    """Refuse the batch when the cases asking for the value would take any pool over its
    limit — counted over the whole pool, every approver and every version of the flow."""
    asked = [c for c in batch.cases if c.data.get(quota.field) == quota.value]
    if not asked:
        return
    units = batch.facts.pool_units(quota, {c.unit_id for c in asked})
    by_pool: dict[PoolKey, list[CaseFacts]] = {}
    for c in asked:
        key = pool_key(quota, units.get(c.unit_id, c.unit_id), c.tier, c.period_key)
        by_pool.setdefault(key, []).append(c)
    found = batch.facts.quota_figures(batch.spec.flow, quota, sorted(by_pool, key=str), units)
    label = batch.spec.fields[quota.field].label
    for key, cases in sorted(by_pool.items(), key=lambda kv: str(kv[0])):
        f = found[key]
        if f.used + len(cases) <= f.limit:
            continue
        pool = dict(key)
        where = [msg(f"quota.pool_{k}", value=msg(f"tier.{v}") if k == "tier" and v else v)
                 for k, v in key] or msg("quota.pool_all")
        why = msg("quota.raised_for", raised=f.raised.describe()) if f.raised else ""
        details = {"pool": pool, "size": f.size, "limit": f.limit, "used": f.used,
                   "asked": len(cases), "field": quota.field, "value": quota.value,
                   "case_ids": [c.id for c in cases]}
        if name == "excellent_quota":
            details.update(ratio=f.ratio, raised_for=f.raised.code if f.raised else None,
                           raised_by=f.raised.details() if f.raised else None)
        else:
            details["max_ratio"] = f.ratio
        raise RuleViolation(
            name,
            msg("quota.exceeded", field=label, value=quota.value, pool=where, limit=f.limit,
                ratio=f"{f.ratio:.0%}", size=f.size, why=why,
                rounding=msg(f"quota.rounding_{quota.rounding}"), min=quota.min, used=f.used,
                asked=len(cases)), details)


def _quota(p: dict[str, Any], batch: Batch) -> None:
    t = batch.transition
    judge_quota(from_params("quota", t.trigger, t.dest, p), batch, "quota")


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
