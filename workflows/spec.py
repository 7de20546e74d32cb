"""Flow definitions: the YAML/JSON format, its marshmallow schemas and its validation.

A definition is read in two passes. The marshmallow schemas check shape and types (unknown
keys, wrong types, bad enum values, bad durations); then `_check_semantics` checks what a
schema cannot see (unknown states and fields, unreachable states, dead ends, duplicate
triggers). Every finding becomes a `Problem` that names the file, the path inside the
document and, when the source is YAML, the line — so a process owner can fix all of them in
one go.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import isodate
import yaml
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    post_load,
    pre_load,
    validate,
    validates_schema,
)
from marshmallow import fields as mf

from .errors import DefinitionInvalid, Problem
from .messages import Message, constant, from_marshmallow, msg

PERIODS = ("none", "week", "month", "quarter", "year")
FIELD_TYPES = ("text", "int", "decimal", "date", "enum", "bool", "person", "list")
ROLE_RESOLUTIONS = ("subject", "leader", "unit_role", "group", "evaluator")
FALLBACK_ESCALATE = ("unit_above",)  # evaluator fallback: the nearest unit above with a leader
# Roles every flow has without declaring them.
BUILTIN_ROLES = {
    "subject": {"resolve": "subject"},  # 本人
    "leader": {"resolve": "leader"},  # 主管领导: a leader of the case's unit or above it
}
SYSTEM = "system"  # the scheduler; never a person
# History records of their own: a case's start, queue claims, a migration to a new version.
RESERVED_TRIGGERS = ("start", "claim", "release", "delegate", "migrate")
ANY_STATE = "*"
TIMER_KINDS = ("reminder", "auto", "repeat")
DEADLINE_FROM = ("entered", "period_start", "period_end", "quarter_end")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
COMMENT_POLICIES = ("optional", "required")
CYCLE_OPEN = ("period_start", "period_end")
CYCLE_CATCH_UP = ("latest", "all", "none")
CYCLE_TIERS = ("chief", "deputy", "staff")  # the person tiers (models.TIERS)
CYCLE_MAX_OFFSET = 366
# Who may give start data besides the flow's roles: the organisation-wide roles that may start
# any case (access.check_can_start): 流程管理员 and 系统管理员.
START_ORG_ROLES = ("process_owner", "admin")

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
FLOW_ID = re.compile(r"^[a-z][a-z0-9-]{1,63}$")
NAME_MSG = constant("spec.name_rule")


# --------------------------------------------------------------------------- value types


@dataclass(frozen=True)
class Label:
    zh: str
    en: str | None = None

    def text(self, lang: str = "zh") -> str:
        return (self.en if lang == "en" else None) or self.zh


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    label: Label
    values: tuple[str, ...] = ()  # enum
    max_length: int | None = None  # text
    min: Any = None  # int, decimal, date
    max: Any = None
    places: int | None = None  # decimal
    item: FieldSpec | None = None  # list of scalars
    record: tuple[FieldSpec, ...] = ()  # list of records
    max_items: int | None = None


@dataclass(frozen=True)
class RoleSpec:
    name: str
    resolve: str
    role: str | None = None  # unit_role: the organisation role, e.g. committee
    group: str | None = None  # group: a unit-less role assignment, e.g. hr-office
    inherit: bool = True  # unit_role: holders in an ancestor unit count too
    # evaluator (评鉴人, workflows/actors.py): the tier order, highest first, and the
    # fallback when nobody in the hierarchy is found — the nearest unit above with a leader
    # (`escalate`) and/or a named group (`fallback_group`), tried in that order.
    tiers: tuple[str, ...] = ("chief", "deputy", "staff")
    escalate: bool = False
    fallback_group: str | None = None
    # evaluator: while the subject has a case of `dispatch_flow` in one of
    # `dispatch_states` whose person field `dispatch_host` is set, that person evaluates.
    dispatch_flow: str | None = None
    dispatch_states: tuple[str, ...] = ()
    dispatch_host: str | None = None


@dataclass(frozen=True)
class DeadlineSpec:
    duration: str | None = None  # ISO 8601, e.g. P5D
    working_days: int | None = None
    start: str = "entered"  # entered | period_start | period_end | quarter_end (of the period)
    escalate: str | None = None  # trigger fired by `system` when the deadline passes


@dataclass(frozen=True)
class TimerSpec:
    kind: str  # reminder | auto | repeat
    after: str | None = None  # auto: ISO 8601 duration
    working_days: int | None = None  # auto
    at: str | None = None  # auto: period_start | period_end
    at_field: str | None = None  # auto: the date in this field of the case
    fire: str | None = None  # auto: trigger
    before: str | None = None  # reminder: ISO 8601 duration before the deadline
    every: str | None = None  # repeat: ISO 8601 duration
    weekday: str | None = None  # repeat: on this weekday
    time: str | None = None  # repeat / at: local time HH:MM
    notify: tuple[str, ...] = ()  # roles to notify; default: the state's actor
    message: Label | None = None


@dataclass(frozen=True)
class StateSpec:
    name: str
    label: Label
    actor: tuple[str, ...] = ()
    final: bool = False
    deadline: DeadlineSpec | None = None
    timers: tuple[TimerSpec, ...] = ()


@dataclass(frozen=True)
class RuleSpec:
    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class TransitionSpec:
    trigger: str
    label: Label
    sources: tuple[str, ...]  # expanded: never '*'
    dest: str
    by: tuple[str, ...]
    requires: tuple[str, ...] = ()
    accepts: tuple[str, ...] = ()
    appends: tuple[str, ...] = ()  # list fields whose items are added, not replaced
    rules: tuple[RuleSpec, ...] = ()
    effects: tuple[RuleSpec, ...] = ()  # record-keeping after the move (rules.EFFECTS)
    allow_self: bool = False  # may the subject fire it through a role other than subject?
    comment: str = "optional"
    # Enum (or bool) fields this transition takes only some values of (`values: {grade:
    # [优秀]}`, `values: {personal_matters_checked: [true]}`): its schema refuses the others
    # and its form offers only these.
    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def choices(self, f: FieldSpec) -> tuple[str, ...]:
        """The values of field `f` this transition accepts (all of an enum's by default)."""
        return self.values.get(f.name, f.values)


@dataclass(frozen=True)
class CycleSpec:
    """When a periodic flow opens its cases by itself, and for whom (see cycles.py)."""

    open: str = "period_start"  # period_start | period_end: the anchor day of the period
    time: str = "00:00"  # local time of day on the anchor day
    offset_days: int = 0  # calendar days added to the anchor day (negative: earlier)
    tiers: tuple[str, ...] = ()  # empty: every tier
    units: tuple[str, ...] = ()  # unit codes, each with its sub-units; empty: every unit
    catch_up: str = "latest"  # latest | all | none: what to open after downtime
    # only the liaisons (联络员) of the period's year's contact points (联系点台账)
    contact_points: bool = False


@dataclass(frozen=True)
class StartSpec:
    """What a case may carry when it is opened (`start:`), and from whom (开启时可填写的字段).

    By default nothing: every field is written by the transition that owns it, by the role
    that transition names — a case's subject cannot pre-fill a grade or a vote count."""

    accepts: tuple[str, ...] = ()
    by: tuple[str, ...] = ()  # flow roles, `system`, or process_owner / admin


@dataclass(frozen=True)
class FlowSpec:
    flow: str
    title: Label
    period: str
    initial: str
    fields: dict[str, FieldSpec]
    roles: dict[str, RoleSpec]
    states: dict[str, StateSpec]
    transitions: tuple[TransitionSpec, ...]
    description: str | None = None
    cycle: CycleSpec | None = None
    start: StartSpec = field(default_factory=StartSpec)
    content_hash: str = ""
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def transition(self, trigger: str, source: str) -> TransitionSpec | None:
        for t in self.transitions:
            if t.trigger == trigger and source in t.sources:
                return t
        return None

    def transitions_from(self, source: str) -> list[TransitionSpec]:
        return [t for t in self.transitions if source in t.sources]


# --------------------------------------------------------------------------- schemas


def _duration(value: str) -> None:
    """ISO 8601 durations (P5D, PT12H, P1M); isodate parses them, we only reject nonsense."""
    if not isinstance(value, str) or not value.startswith("P") or value in ("P", "PT") \
            or value.endswith("T"):
        raise ValidationError(msg("spec.not_iso_duration_such", value=value))
    try:
        parsed = isodate.parse_duration(value)
    except (isodate.ISO8601Error, ValueError) as exc:
        raise ValidationError(
            msg("spec.not_iso_duration_such", value=value)
        ) from exc
    try:  # from any day of this century, forward (deadlines) and back (reminders' before)
        dt.datetime(2100, 1, 1) + parsed
        dt.datetime(2000, 1, 1) - parsed
    except (OverflowError, ValueError):
        raise ValidationError(msg("spec.longer_than_calendar_holds", value=value)) from None


def _step(value: str) -> None:
    """A repeat's `every`: a duration longer than zero (PT0S would repeat without end)."""
    _duration(value)
    start = dt.datetime(2000, 1, 1)
    if start + isodate.parse_duration(value) <= start:
        raise ValidationError(msg("spec.repeats_without_end_every", value=value))


def _one_of(choices) -> validate.OneOf:
    return validate.OneOf(choices, error="{input!r} is not one of: {choices}")


def _hhmm(value: str) -> None:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValidationError(msg("spec.not_time_day_hh", value=value))


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class StrOrList(mf.Field):
    """`by: leader` and `by: [leader, system]` mean the same thing."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValidationError(msg("spec.must_name_non_empty"))


class LabelField(mf.Field):
    """A label is `{zh: …, en: …}` or a bare string taken as the Chinese label."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and value.strip():
            return Label(zh=value)
        if isinstance(value, dict):
            unknown = set(value) - {"zh", "en"}
            if unknown:
                raise ValidationError(msg("spec.unknown_language_use_zh", unknown=sorted(unknown)))
            zh = value.get("zh")
            if not isinstance(zh, str) or not zh.strip():
                raise ValidationError(msg("spec.needs_chinese_label_under"))
            en = value.get("en")
            if en is not None and not isinstance(en, str):
                raise ValidationError(msg("spec.en_must_string"))
            return Label(zh=zh, en=en)
        raise ValidationError(msg("spec.must_string_zh_en"))


class Scalar(mf.Field):
    """A bound (min/max) whose type depends on the field type; checked semantically."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, dt.date):  # YAML reads an unquoted 2026-01-01 as a date
            return value.isoformat()
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValidationError(msg("spec.must_number_iso_date"))
        if isinstance(value, float) and not math.isfinite(value):  # .nan, .inf
            raise ValidationError(msg("spec.must_finite_number"))
        return value


class FieldSchema(_Strict):
    type = mf.String(required=True, validate=_one_of(FIELD_TYPES))
    label = LabelField()
    values = mf.List(mf.String(validate=validate.Length(min=1)))
    max_length = mf.Integer(validate=validate.Range(min=1))
    min = Scalar()
    max = Scalar()
    places = mf.Integer(validate=validate.Range(min=0, max=10))
    item = mf.Nested(lambda: FieldSchema())
    fields = mf.Dict(keys=mf.String(), values=mf.Nested(lambda: FieldSchema()))
    max_items = mf.Integer(validate=validate.Range(min=1))

    @validates_schema
    def _options_fit_type(self, data, **kwargs):
        allowed = {
            "text": {"max_length"},
            "int": {"min", "max"},
            "decimal": {"min", "max", "places"},
            "date": {"min", "max"},
            "enum": {"values"},
            "bool": set(),
            "person": set(),
            "list": {"item", "fields", "max_items"},
        }[data["type"]]
        errors = {}
        for key in sorted(set(data) - {"type", "label"} - allowed):
            errors[key] = [msg("spec.does_not_apply_field", key_=key, type=data['type'])]
        if data["type"] == "enum":
            values = data.get("values") or []
            if not values:
                errors["values"] = [msg("spec.enum_field_needs_non")]
            elif len(set(values)) != len(values):
                errors["values"] = [msg("spec.values_must_not_repeat")]
        if data["type"] == "list" and ("item" in data) == ("fields" in data):
            errors["item"] = [msg("spec.list_field_needs_exactly")]
        if errors:
            raise ValidationError(errors)


class FallbackSchema(_Strict):
    """Who acts when the hierarchy gives nobody: `escalate: unit_above` and/or `group`."""

    escalate = mf.String(validate=_one_of(FALLBACK_ESCALATE))
    group = mf.String(validate=validate.Regexp(NAME, error=NAME_MSG))

    @validates_schema
    def _some(self, data, **kwargs):
        if not data:
            raise ValidationError(msg("spec.fallback_needs_escalate_unit"))


class WhileDispatchedSchema(_Strict):
    """While dispatched (下沉一线), the receiving side's assessor evaluates."""

    flow = mf.String(required=True, validate=validate.Regexp(FLOW_ID, error=constant("spec.not_flow_id")))
    states = mf.List(mf.String(validate=validate.Regexp(NAME, error=NAME_MSG)),
                     required=True, validate=validate.Length(min=1))
    host = mf.String(required=True, validate=validate.Regexp(NAME, error=NAME_MSG))


class RoleSchema(_Strict):
    resolve = mf.String(required=True, validate=_one_of(ROLE_RESOLUTIONS))
    role = mf.String(validate=validate.Regexp(NAME, error=NAME_MSG))
    group = mf.String(validate=validate.Regexp(NAME, error=NAME_MSG))
    inherit = mf.Boolean()
    tiers = mf.List(mf.String(validate=_one_of(CYCLE_TIERS)))
    fallback = mf.Nested(FallbackSchema)
    while_dispatched = mf.Nested(WhileDispatchedSchema)

    @validates_schema
    def _needs(self, data, **kwargs):
        if data["resolve"] != "evaluator":
            extra = [k for k in ("tiers", "fallback", "while_dispatched") if k in data]
            if extra:
                raise ValidationError({extra[0]: [
                    msg("spec.resolve_evaluator_only_hierarchy", value=extra[0])]})
        elif "tiers" in data and sorted(data["tiers"]) != sorted(CYCLE_TIERS):
            raise ValidationError({"tiers": [
                msg("spec.tiers_must_list_each", CYCLE_TIERS=list(CYCLE_TIERS))]})
        if data["resolve"] == "unit_role" and not data.get("role"):
            raise ValidationError({"role": [msg("spec.resolve_unit_role_needs")]})
        if data["resolve"] == "group" and not data.get("group"):
            raise ValidationError({"group": [msg("spec.resolve_group_needs_group")]})


class DeadlineSchema(_Strict):
    duration = mf.String(validate=_duration)
    working_days = mf.Integer(validate=validate.Range(min=0, max=365))
    # `from` is a Python keyword, hence data_key
    start = mf.String(data_key="from", validate=_one_of(DEADLINE_FROM))
    escalate = mf.String(validate=validate.Regexp(NAME, error=NAME_MSG))

    @validates_schema
    def _one_measure(self, data, **kwargs):
        if ("duration" in data) == ("working_days" in data):
            raise ValidationError(msg("spec.deadline_needs_exactly_one"))


class TimerSchema(_Strict):
    kind = mf.String(required=True, validate=_one_of(TIMER_KINDS))
    after = mf.String(validate=_duration)
    working_days = mf.Integer(validate=validate.Range(min=0, max=365))
    at = mf.String(validate=_one_of(("period_start", "period_end")))
    at_field = mf.String()  # auto: on the date held by this date field (e.g. term end)
    fire = mf.String(validate=validate.Regexp(NAME, error=NAME_MSG))
    before = mf.String(validate=_duration)
    every = mf.String(validate=_step)
    weekday = mf.String(validate=_one_of(WEEKDAYS))
    time = mf.String(validate=_hhmm)
    notify = StrOrList()
    message = LabelField()

    @validates_schema
    def _kind_options(self, data, **kwargs):
        kind = data["kind"]
        if kind == "auto":
            n = sum(k in data for k in ("after", "working_days", "at", "at_field"))
            if n != 1:
                raise ValidationError(msg("spec.auto_timer_needs_exactly"))
            if "fire" not in data:
                raise ValidationError({"fire": [msg("spec.auto_timer_needs_fire")]})
        elif kind == "reminder":
            if "before" not in data:
                raise ValidationError({"before": [msg("spec.reminder_needs_before_duration")]})
        elif kind == "repeat" and ("every" in data) == ("weekday" in data):
            raise ValidationError(msg("spec.repeat_timer_needs_exactly"))
        extra = {
            "auto": {"before", "every", "weekday"},
            "reminder": {"after", "working_days", "at", "at_field", "fire", "every", "weekday"},
            "repeat": {"after", "working_days", "at", "at_field", "fire", "before"},
        }[kind] & set(data)
        if extra:
            raise ValidationError({k: [msg("spec.does_not_apply_timer", k=k,
                                           value='an' if kind == 'auto' else 'a',
                                           kind=kind)] for k in extra})


class StateSchema(_Strict):
    name = mf.String(required=True, validate=validate.Regexp(NAME, error=NAME_MSG))
    label = LabelField()
    actor = StrOrList()
    final = mf.Boolean()
    deadline = mf.Nested(DeadlineSchema)
    timers = mf.List(mf.Nested(TimerSchema))


class RuleEntry(mf.Field):
    """A rule is written `{rule_name: {params}}`; parameters are checked by the rule."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not (isinstance(value, dict) and len(value) == 1):
            raise ValidationError(msg("spec.rule_written_as_rule"))
        (name, params), = value.items()
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ValidationError(msg("spec.parameters_rule_must_mapping", name=name))
        return (str(name), params)


class TransitionSchema(_Strict):
    trigger = mf.String(required=True, validate=validate.Regexp(NAME, error=NAME_MSG))
    label = LabelField()
    source = StrOrList(data_key="from", required=True)
    dest = mf.String(data_key="to", required=True)
    by = StrOrList(required=True)
    requires = mf.List(mf.String())
    accepts = mf.List(mf.String())
    appends = mf.List(mf.String())
    rules = mf.List(RuleEntry())
    effects = mf.List(RuleEntry())
    allow_self = mf.Boolean()
    comment = mf.String(validate=_one_of(COMMENT_POLICIES))
    # strings for an enum field, true/false for a bool field (checked with the fields)
    values = mf.Dict(keys=mf.String(), values=mf.List(mf.Raw(), validate=validate.Length(min=1)))


class TimeOfDay(mf.String):
    """HH:MM. YAML 1.1 reads an unquoted 8:30 as the number 510 (base 60): say so."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValidationError(msg("spec.must_time_day_hh"))
        value = super()._deserialize(value, attr, data, **kwargs)
        _hhmm(value)
        return value


class UnitCode(mf.Field):
    """A unit code (单位代码); an unquoted 110000 in YAML is a number, and means "110000"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not 1 <= len(value.strip()) <= 64:
            raise ValidationError(msg("spec.must_unit_code_characters"))
        return value.strip()


def _no_repeats(values: list, what: str) -> None:
    if len(set(values)) != len(values):
        raise ValidationError(msg("spec.must_not_repeat", what=what))


def _unique_list(what: str, inner: mf.Field) -> mf.List:
    def check(values: list) -> None:
        if not values:
            raise ValidationError(msg("spec.needs_at_least_one", what=what, what2=what))
        if len(set(values)) != len(values):
            raise ValidationError(msg("spec.must_not_repeat_2", what=what))

    return mf.List(inner, validate=check)


def _mapping_of(example: str):
    def check(self, data, **kwargs):
        if not isinstance(data, dict):
            raise ValidationError(msg("spec.must_mapping_such_as", example=example))
        return data

    return pre_load(check)


class CycleWhoSchema(_Strict):
    _mapping = _mapping_of("{tiers: [staff], units: [SEC1]}")
    tiers = _unique_list("tier", mf.String(validate=_one_of(CYCLE_TIERS)))
    units = _unique_list("unit", UnitCode())
    contact_points = mf.Boolean()


class CycleSchema(_Strict):
    _mapping = _mapping_of("{open: period_start, catch_up: latest}")
    open = mf.String(validate=_one_of(CYCLE_OPEN))
    time = TimeOfDay()
    offset_days = mf.Integer(strict=True, validate=validate.Range(
        min=-CYCLE_MAX_OFFSET, max=CYCLE_MAX_OFFSET,
        error=constant("spec.offset_days", max=CYCLE_MAX_OFFSET)))
    who = mf.Nested(CycleWhoSchema, error_messages={
        "null": "must be a mapping such as {{tiers: [staff], units: [SEC1]}}; "
                "leave who out for every active person"})
    catch_up = mf.String(validate=_one_of(CYCLE_CATCH_UP))


class StartSchema(_Strict):
    _mapping = _mapping_of("{accepts: [round], by: [process_owner]}")
    accepts = mf.List(mf.String(), validate=lambda v: _no_repeats(v, "fields"))
    by = StrOrList()


class FlowSchema(_Strict):
    flow = mf.String(
        required=True,
        validate=validate.Regexp(FLOW_ID, error=constant("spec.flow_id_rule")),
    )
    title = LabelField(required=True)
    description = mf.String()
    period = mf.String(validate=_one_of(PERIODS))
    initial = mf.String()
    fields = mf.Dict(keys=mf.String(), values=mf.Nested(FieldSchema))
    roles = mf.Dict(keys=mf.String(), values=mf.Nested(RoleSchema))
    states = mf.List(mf.Nested(StateSchema), required=True)
    transitions = mf.List(mf.Nested(TransitionSchema), required=True)
    cycle = mf.Nested(CycleSchema, error_messages={
        "null": "must be a mapping such as {{open: period_start, catch_up: latest}}; "
                "leave cycle out for a flow without one"})
    start = mf.Nested(StartSchema, error_messages={
        "null": "must be a mapping such as {{accepts: [round], by: [process_owner]}}; "
                "leave start out when a case starts without data"})

    @pre_load
    def _mapping(self, data, **kwargs):
        if not isinstance(data, dict):
            raise ValidationError(msg("spec.flow_definition_must_mapping"))
        return data

    @post_load
    def _defaults(self, data, **kwargs):
        data.setdefault("period", "none")
        data.setdefault("fields", {})
        data.setdefault("roles", {})
        return data


_FLOW_SCHEMA = FlowSchema()


# --------------------------------------------------------------------------- loading


class _AliasFound(Exception):
    def __init__(self, line: int | None):
        self.line = line


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that stops at the first alias: expanding nested aliases costs exponential
    time (a few hundred bytes can keep a worker busy for hours), and flows never need them.
    Checked while composing, so deep nesting still stops early at the recursion limit."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise _AliasFound(mark.line + 1 if mark else None)
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # longer than int() reads (sys.get_int_max_str_digits)
            return _TooLong(node.value)


_NoAliasLoader.add_constructor("tag:yaml.org,2002:int", _NoAliasLoader.construct_yaml_int)


class _TooLong:
    """An integer written with more digits than Python reads from text: kept as a
    marker, so that the problem names its path instead of the parser failing."""

    def __init__(self, text: str):
        self.digits = sum(c.isdigit() for c in text)


def _json_int(text: str) -> int | _TooLong:
    try:
        return int(text)
    except ValueError:
        return _TooLong(text)


def parse_source(text: str, filename: str) -> tuple[Any, yaml.Node | None]:
    """Parse YAML or JSON text. JSON is YAML, but `.json` files get JSON's own parser."""
    too_deep = DefinitionInvalid([Problem(filename, "", msg("spec.nested_too_deeply_flow"))])
    if filename.endswith(".json"):
        try:
            return json.loads(text, parse_int=_json_int), None
        except json.JSONDecodeError as exc:
            raise DefinitionInvalid(
                [Problem(filename, "", msg("spec.not_valid_json", exc_msg=exc.msg), exc.lineno)]
            ) from exc
        except RecursionError:  # both parsers recurse: 50,000 '[' is bad input, not a crash
            raise too_deep from None
    try:
        node = yaml.compose(text, Loader=_NoAliasLoader)
        if node is None:  # blank or comments only: what is missing is missing on line 1
            node = yaml.ScalarNode("tag:yaml.org,2002:null", "",
                                   start_mark=yaml.Mark(filename, 0, 0, 0, text, 0))
        return yaml.load(text, Loader=_NoAliasLoader), node  # noqa: S506 - a SafeLoader
    except _AliasFound as found:
        raise DefinitionInvalid([Problem(
            filename, "", msg("spec.yaml_anchors_aliases_name"), found.line)]) from None
    except RecursionError:
        raise too_deep from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        said = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, yaml.reader.ReaderError):  # a control character: no mark
            line = text.count("\n", 0, exc.position) + 1
            said = f"character {exc.character!r} is not allowed"
        raise DefinitionInvalid([Problem(filename, "", msg("spec.not_valid_yaml",
                                                           said=said), line)]) from exc


def content_hash(document: Any) -> str:
    """Hash of the parsed content: formatting and comments do not make a new version."""
    canonical = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                           default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_definition(text: str, filename: str = "<definition>") -> FlowSpec:
    """Parse and validate a definition; raise `DefinitionInvalid` listing every problem."""
    document, node = parse_source(text, filename)
    return compile_document(document, filename, node)


def compile_document(document: Any, filename: str, node: yaml.Node | None = None) -> FlowSpec:
    problems: list[Problem] = []

    def add(path: str, message: str) -> None:
        problems.append(Problem(filename, path, message, _line_of(node, path)))

    for path, message in _unreadable(document):
        add(path, message)
    if problems:
        raise DefinitionInvalid(problems)
    try:
        data = _FLOW_SCHEMA.load(document)
    except ValidationError as exc:
        for path, message in _flatten(exc.messages):
            add(path, _friendly(message))
        raise DefinitionInvalid(problems) from None

    spec = _build(data, add)
    # The rule registry lives above this module; import late to keep spec free of cycles.
    from .rules import EFFECTS, check_rule_params

    for ti, t in enumerate(spec.transitions):
        for ri, rule in enumerate(t.rules):
            for sub, message in check_rule_params(rule, t, spec):
                add(f"transitions[{ti}].rules[{ri}].{rule.name}{sub}", message)
        for ei, effect in enumerate(t.effects):
            for sub, message in check_rule_params(effect, t, spec, EFFECTS):
                add(f"transitions[{ti}].effects[{ei}].{effect.name}{sub}", message)
    if problems:
        raise DefinitionInvalid(problems)
    return _with_hash(spec, document)


NUL = msg("spec.text_nul")


def _unreadable(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Where the document holds what nothing after the parser can take: a NUL character
    (JSON's \\u0000; databases refuse them) or an integer too long to read."""
    if isinstance(value, str):
        if "\x00" in value:
            yield path, NUL
    elif isinstance(value, _TooLong):
        yield path, (msg("spec.number_digits_longer_than", value_digits=value.digits))
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and "\x00" in k:
                yield _join(path, k), NUL
            elif isinstance(k, _TooLong):
                yield path, msg("spec.key_digits_longer_than", k_digits=k.digits)
                continue
            yield from _unreadable(v, _join(path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _unreadable(v, _join(path, i))


def _with_hash(spec: FlowSpec, document: Any) -> FlowSpec:
    from dataclasses import replace

    return replace(spec, content_hash=content_hash(document), document=document)


def _build(data: dict[str, Any], add) -> FlowSpec:  # noqa: C901 - one pass, many checks
    # ---- fields
    flow_fields: dict[str, FieldSpec] = {}
    for name, raw in data["fields"].items():
        path = f"fields.{name}"
        if not NAME.match(name):
            add(path, msg("spec.field_name", name=name, NAME_MSG=NAME_MSG))
            continue
        flow_fields[name] = _field(name, raw, path, add)

    # ---- roles
    roles = {n: RoleSpec(name=n, **r) for n, r in BUILTIN_ROLES.items()}
    for name, raw in data["roles"].items():
        if name == SYSTEM:
            add(f"roles.{name}", msg("spec.system_built_cannot_redefined"))
            continue
        if not NAME.match(name):
            add(f"roles.{name}", msg("spec.role_name", name=name, NAME_MSG=NAME_MSG))
            continue
        raw = dict(raw)
        fallback = raw.pop("fallback", {})
        dispatched = raw.pop("while_dispatched", None)
        if dispatched:
            raw.update(dispatch_flow=dispatched["flow"],
                       dispatch_states=tuple(dispatched["states"]),
                       dispatch_host=dispatched["host"])
        if "tiers" in raw:
            raw["tiers"] = tuple(raw["tiers"])
        roles[name] = RoleSpec(name=name, escalate="escalate" in fallback,
                               fallback_group=fallback.get("group"), **raw)

    def check_role(path: str, name: str, allow_system: bool) -> None:
        if name == SYSTEM and allow_system:
            return
        if name not in roles:
            known = sorted(roles) + ([SYSTEM] if allow_system else [])
            add(path, msg("spec.unknown_role_known_roles", name=name, known=list(known)))

    # ---- states
    states: dict[str, StateSpec] = {}
    position: dict[str, int] = {}  # a state's index in the source list, for error paths
    for i, raw in enumerate(data["states"]):
        name = raw["name"]
        if name == ANY_STATE or name in states:
            add(f"states[{i}].name", msg("spec.state_defined_twice", name=name))
            continue
        for j, actor in enumerate(raw.get("actor", ())):
            check_role(f"states[{i}].actor" + (f"[{j}]" if len(raw["actor"]) > 1 else ""),
                       actor, allow_system=False)
        deadline = raw.get("deadline")
        position[name] = i
        states[name] = StateSpec(
            name=name,
            label=raw.get("label") or Label(zh=name),
            actor=tuple(raw.get("actor", ())),
            final=raw.get("final", False),
            deadline=DeadlineSpec(**deadline) if deadline else None,
            timers=tuple(TimerSpec(**t) for t in raw.get("timers", ())),
        )
    if not states:
        add("states", msg("spec.flow_needs_at_least"))
        states["-"] = StateSpec(name="-", label=Label(zh="-"), final=True)
        position["-"] = 0

    initial = data.get("initial") or next(iter(states))
    if initial not in states:
        add("initial", msg("spec.unknown_initial", initial=initial))
        initial = next(iter(states))
    non_final = [s for s in states.values() if not s.final]

    # ---- transitions
    transitions: list[TransitionSpec] = []
    seen: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(data["transitions"]):
        p = f"transitions[{i}]"
        if raw["trigger"] in RESERVED_TRIGGERS:
            add(f"{p}.trigger", msg("spec.reserved_history_records_starting",
                                    trigger=raw['trigger']))
        sources: list[str] = []
        raw_sources = raw["source"]
        for j, s in enumerate(raw_sources):
            sp = f"{p}.from" + (f"[{j}]" if len(raw_sources) > 1 else "")
            if s == ANY_STATE:
                sources.extend(st.name for st in non_final if st.name not in sources)
            elif s not in states:
                add(sp, msg("spec.unknown_state_3", s=s, value=_suggest(s, states)))
            elif states[s].final:
                add(sp, msg("spec.final_state_cannot_have_2", s=s))
            elif s not in sources:
                sources.append(s)
        if raw["dest"] not in states:
            add(f"{p}.to", msg("spec.unknown_state_2", dest=raw['dest'],
                               value=_suggest(raw['dest'], states)))
        for j, b in enumerate(raw["by"]):
            check_role(f"{p}.by" + (f"[{j}]" if len(raw["by"]) > 1 else ""), b, allow_system=True)
        for key in ("requires", "accepts"):
            for j, fname in enumerate(raw.get(key, ())):
                if fname not in flow_fields:
                    what = "required field" if key == "requires" else "field"
                    add(f"{p}.{key}[{j}]",
                        msg("spec.not_declared_under_fields", what=what, fname=fname,
                            value=_suggest(fname, flow_fields)))
        given = set(raw.get("requires", ())) | set(raw.get("accepts", ()))
        for j, fname in enumerate(raw.get("appends", ())):
            if fname not in given:
                add(f"{p}.appends[{j}]", msg("spec.field_must_listed_requires", fname=fname))
            elif fname in flow_fields and flow_fields[fname].type != "list":
                add(f"{p}.appends[{j}]", msg("spec.only_list_field_can", fname=fname,
                                             type=flow_fields[fname].type))
        both = set(raw.get("requires", ())) & set(raw.get("accepts", ()))
        for fname in sorted(both):
            add(f"{p}.accepts", msg("spec.field_listed_both_requires", fname=fname))
        for fname, allowed in (raw.get("values") or {}).items():
            vp = f"{p}.values.{fname}"
            if fname not in given:
                add(vp, msg("spec.field_must_listed_requires_2", fname=fname))
            elif fname in flow_fields and flow_fields[fname].type not in ("enum", "bool"):
                add(vp, msg("spec.only_enum_bool_field", fname=fname, type=flow_fields[fname].type))
            elif fname in flow_fields and flow_fields[fname].type == "bool":
                if any(not isinstance(v, bool) for v in allowed):
                    add(vp, msg("spec.field_bool_values_are", fname=fname))
                elif len(set(allowed)) != len(allowed):
                    add(vp, msg("spec.value_listed_twice"))
            elif fname in flow_fields:
                for v in allowed:
                    if v not in flow_fields[fname].values:
                        add(vp, msg("spec.not_value_field_values", v=v, fname=fname,
                                    values=list(flow_fields[fname].values)))
                if len(set(allowed)) != len(allowed):
                    add(vp, msg("spec.value_listed_twice"))
        for s in sources:
            key = (raw["trigger"], s)
            if key in seen:
                add(f"{p}.trigger",
                    msg("spec.trigger_from_state_already", trigger=raw['trigger'], s=s,
                        value=seen[key]))
            else:
                seen[key] = i
        transitions.append(TransitionSpec(
            trigger=raw["trigger"],
            label=raw.get("label") or Label(zh=raw["trigger"]),
            sources=tuple(sources),
            dest=raw["dest"],
            by=tuple(raw["by"]),
            requires=tuple(raw.get("requires", ())),
            accepts=tuple(raw.get("accepts", ())),
            appends=tuple(raw.get("appends", ())),
            rules=tuple(RuleSpec(name=n, params=prm) for n, prm in raw.get("rules", ())),
            effects=tuple(RuleSpec(name=n, params=prm) for n, prm in raw.get("effects", ())),
            allow_self=raw.get("allow_self", False),
            comment=raw.get("comment", "optional"),
            values={k: tuple(v) for k, v in (raw.get("values") or {}).items()},
        ))
    triggers = {t.trigger for t in transitions}

    # ---- timers and deadlines refer to triggers that a `system` actor may fire
    def check_system_trigger(path: str, trigger: str, state: str) -> None:
        if trigger not in triggers:
            add(path, msg("spec.unknown_trigger", trigger=trigger,
                          value=_suggest(trigger, triggers)))
            return
        t = next((t for t in transitions if t.trigger == trigger and state in t.sources), None)
        if t is None:
            add(path, msg("spec.trigger_not_defined_from", trigger=trigger, state=state))
        elif SYSTEM not in t.by:
            add(path, msg("spec.trigger_from_must_list", trigger=trigger, state=state))
        elif t.requires or t.comment == "required":
            add(path, msg("spec.trigger_from_fired_by", trigger=trigger, state=state))

    for st in states.values():
        i = position[st.name]
        if st.deadline and st.deadline.escalate:
            check_system_trigger(f"states[{i}].deadline.escalate", st.deadline.escalate, st.name)
        if st.deadline and st.deadline.start != "entered" and data["period"] == "none":
            add(f"states[{i}].deadline.from",
                msg("spec.needs_flow_period_flow", deadline_start=st.deadline.start))
        if st.final and (st.deadline or st.timers):
            add(f"states[{i}]", msg("spec.final_state_cannot_have", st_name=st.name))
        for j, tm in enumerate(st.timers):
            tp = f"states[{i}].timers[{j}]"
            if tm.fire:
                check_system_trigger(f"{tp}.fire", tm.fire, st.name)
            if tm.at_field and tm.at_field not in flow_fields:
                add(f"{tp}.at_field", msg("spec.unknown_at_field", tm_at_field=tm.at_field,
                                          value=_suggest(tm.at_field, flow_fields)))
            elif tm.at_field and flow_fields[tm.at_field].type != "date":
                add(f"{tp}.at_field", msg("spec.at_field_must_name", tm_at_field=tm.at_field,
                                          type=flow_fields[tm.at_field].type))
            if tm.kind == "reminder" and not st.deadline:
                add(tp, msg("spec.reminder_needs_deadline_on", st_name=st.name))
            if tm.at and data["period"] == "none":
                add(f"{tp}.at", msg("spec.period_boundary_needs_flow"))
            for k, r in enumerate(tm.notify):
                check_role(f"{tp}.notify" + (f"[{k}]" if len(tm.notify) > 1 else ""), r,
                           allow_system=False)

    # ---- graph: reachable from initial, a way out of every non-final state
    exits: dict[str, set[str]] = {s: set() for s in states}
    for t in transitions:
        for s in t.sources:
            if t.dest in states:
                exits[s].add(t.dest)
    reached = {initial}
    frontier = [initial]
    while frontier:
        for nxt in exits[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    # States from which some final state can be reached (walk the arrows backwards).
    finishing = {s.name for s in states.values() if s.final}
    grew = True
    while grew:
        grew = False
        for name, nexts in exits.items():
            if name not in finishing and nexts & finishing:
                finishing.add(name)
                grew = True
    for st in states.values():
        i = position[st.name]
        if st.name not in reached:
            add(f"states[{i}]", msg("spec.state_unreachable_from", st_name=st.name,
                                    initial=initial))
        if not st.final and not (exits[st.name] - {st.name}):
            add(f"states[{i}]", msg("spec.non_final_state_has", st_name=st.name))
        elif st.name not in finishing and any(s.final for s in states.values()):
            add(f"states[{i}]", msg("spec.state_can_never_reach", st_name=st.name))
    if not any(s.final for s in states.values()):
        add("states", msg("spec.flow_needs_at_least_2"))

    # ---- cycle: opening cases by period needs a period
    cycle = None
    if "cycle" in data:
        raw = data["cycle"]
        who = raw.get("who") or {}
        if data["period"] == "none":
            add("cycle", msg("spec.cycle_opens_one_per"))
        cycle = CycleSpec(open=raw.get("open", "period_start"), time=raw.get("time", "00:00"),
                          offset_days=raw.get("offset_days", 0),
                          tiers=tuple(who.get("tiers", ())), units=tuple(who.get("units", ())),
                          catch_up=raw.get("catch_up", "latest"),
                          contact_points=who.get("contact_points", False))

    start = _start(data.get("start"), flow_fields, roles, transitions, add)

    return FlowSpec(
        flow=data["flow"],
        title=data["title"],
        description=data.get("description"),
        period=data["period"],
        initial=initial,
        fields=flow_fields,
        roles=roles,
        states=states,
        transitions=tuple(transitions),
        cycle=cycle,
        start=start,
    )


def _start(raw: dict[str, Any] | None, flow_fields: dict[str, FieldSpec],
           roles: dict[str, RoleSpec], transitions: list[TransitionSpec], add) -> StartSpec:
    """The `start:` block: fields a case may carry when opened, and who may give them."""
    if raw is None:
        return StartSpec()
    accepts = tuple(raw.get("accepts", ()))
    by = tuple(raw.get("by", ()))
    for j, fname in enumerate(accepts):
        if fname not in flow_fields:
            add(f"start.accepts[{j}]", msg("spec.field_not_declared_under", fname=fname,
                                           value=_suggest(fname, flow_fields)))
    known = sorted(roles) + [SYSTEM, *START_ORG_ROLES]
    for j, name in enumerate(by):
        path = "start.by" + (f"[{j}]" if len(by) > 1 else "")
        if name in START_ORG_ROLES and name in roles:
            add(path, msg("spec.names_both_organisation_role", name=name))
        elif name not in known:
            add(path, msg("spec.unknown_role_known_here", name=name, value=_suggest(name, known),
                          known=list(known)))
    if accepts and not by:
        add("start", msg("spec.start_accepts_needs_start"))
    return StartSpec(accepts=accepts, by=by)


def _field(name: str, raw: dict[str, Any], path: str, add) -> FieldSpec:
    ftype = raw["type"]
    for bound in ("min", "max"):
        if bound in raw:
            value = raw[bound]
            if ftype == "int" and not isinstance(value, int):
                add(f"{path}.{bound}", msg("spec.int_field_must_integer", bound=bound))
            elif ftype == "decimal" and not isinstance(value, int | float):
                add(f"{path}.{bound}", msg("spec.decimal_field_must_number", bound=bound))
            elif ftype == "date" and not _is_iso_date(value):
                add(f"{path}.{bound}", msg("spec.date_field_must_date", bound=bound))
    if ("min" in raw and "max" in raw and type(raw["min"]) is type(raw["max"])
            and raw["min"] > raw["max"]):
        add(path, msg("spec.min_greater_than_max", min=raw['min'], max=raw['max']))
    record: list[FieldSpec] = []
    for sub, sub_raw in (raw.get("fields") or {}).items():
        if sub_raw["type"] == "list":
            add(f"{path}.fields.{sub}", msg("spec.list_cannot_hold_lists"))
            continue
        record.append(_field(sub, sub_raw, f"{path}.fields.{sub}", add))
    item = None
    if raw.get("item") is not None:
        if raw["item"]["type"] == "list":
            add(f"{path}.item", msg("spec.list_cannot_hold_lists"))
        else:
            item = _field(name, raw["item"], f"{path}.item", add)
    return FieldSpec(
        name=name,
        type=ftype,
        label=raw.get("label") or Label(zh=name),
        values=tuple(raw.get("values", ())),
        max_length=raw.get("max_length"),
        min=raw.get("min"),
        max=raw.get("max"),
        places=raw.get("places"),
        item=item,
        record=tuple(record),
        max_items=raw.get("max_items"),
    )


def _is_iso_date(value: Any) -> bool:
    import datetime as dt

    if isinstance(value, dt.date):
        return True
    try:
        dt.date.fromisoformat(str(value))
    except ValueError:
        return False
    return True


def _suggest(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return msg("spec.did_you_mean", name=close[0]) if close else ""


_DEFINITION_WORDS = {  # marshmallow's words, as a definition's author reads them
    "field.unknown": "spec.unknown_key", "field.not_string": "spec.not_string",
    "field.not_integer": "spec.not_integer", "field.not_boolean": "spec.not_boolean",
    "field.not_list": "spec.not_list", "field.not_mapping": "spec.not_mapping",
}


def _friendly(message: str) -> Message:
    m = from_marshmallow(message)
    return msg(_DEFINITION_WORDS[m.key]) if m.key in _DEFINITION_WORDS else m


DICT_KEYS = ("fields", "roles")  # schema attributes that are mappings of named entries


def _join(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _flatten(messages: Any, prefix: str = "", entries: bool = False) -> list[tuple[str, str]]:
    """marshmallow's nested error dict → (path, message) pairs with `a.b[2].c` paths.

    With `entries`, `messages` are the errors of a mapping field (`fields`, `roles`):
    marshmallow files each entry's errors under "key" (the name) and "value" (the body).
    """
    out: list[tuple[str, str]] = []
    if entries and isinstance(messages, dict):
        for name, wrapper in messages.items():
            path = _join(prefix, name)
            if isinstance(wrapper, dict):
                for part in ("key", "value"):
                    if part in wrapper:
                        out.extend(_flatten(wrapper[part], path))
            else:
                out.extend(_flatten(wrapper, path))
    elif isinstance(messages, dict):
        for key, value in messages.items():
            path = prefix if key == "_schema" else _join(prefix, key)
            out.extend(_flatten(value, path, entries=key in DICT_KEYS and isinstance(value, dict)))
    elif isinstance(messages, list):
        for m in messages:
            out.extend(_flatten(m, prefix))
    else:
        out.append((prefix, str(messages)))
    return out


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _line_of(node: yaml.Node | None, path: str) -> int | None:
    """The 1-based line a path points at in the YAML source, for error messages."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for name, index in _PATH_TOKEN.findall(path):
        if isinstance(node, yaml.MappingNode):
            key = "from" if name == "source" else "to" if name == "dest" else name
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            if nxt is None:
                break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and index:
            i = int(index)
            if i >= len(node.value):
                break
            node = node.value[i]
        else:
            break
        line = node.start_mark.line + 1
    return line


def load_file(path: str) -> FlowSpec:
    """Read and validate one definition file. OSError and UnicodeError propagate."""
    with open(path, encoding="utf-8") as fh:
        return load_definition(fh.read(), path)
