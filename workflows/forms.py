"""marshmallow schemas built from a definition's fields, one per transition.

The same schema checks a JSON body from the API, a web form and the initial data of a case,
so a field means the same thing everywhere. Schemas are built once per flow version and kept
with the compiled flow (`machine.CompiledFlow`).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as mf

from .errors import FieldErrors
from .facts import FIRST_DAY, LAST_DAY
from .messages import Message, constant, field_messages, msg
from .spec import FieldSpec, FlowSpec, TransitionSpec


def _not_blank(value: Any) -> None:
    if isinstance(value, str) and not value.strip():
        raise ValidationError(msg("field.blank"))
    if isinstance(value, list) and not value:
        raise ValidationError(msg("field.empty"))


def _no_nul(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError(msg("field.nul"))
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(msg("field.not_unicode")) from None


def _field(spec: FieldSpec, required: bool, choices: tuple[str, ...] | None = None) -> mf.Field:
    """The schema field of `spec`; `choices` narrows an enum to what a transition takes."""
    checks: list = [_not_blank] if required else []
    kw: dict[str, Any] = {"required": required, "allow_none": not required}
    t = spec.type
    if t == "text":
        checks.append(_no_nul)
        if spec.max_length:
            checks.append(validate.Length(max=spec.max_length))
        return mf.String(validate=checks, **kw)
    if t == "int":
        checks.append(validate.Range(min=spec.min, max=spec.max))
        return mf.Integer(strict=False, validate=checks, **kw)
    if t == "decimal":
        lo = Decimal(str(spec.min)) if spec.min is not None else None
        hi = Decimal(str(spec.max)) if spec.max is not None else None
        checks.append(validate.Range(min=lo, max=hi))
        return mf.Decimal(places=spec.places, as_string=True, validate=checks, **kw)
    if t == "date":
        # A bound the definition leaves out is the years a record holds (as facts keep
        # to), unless its other bound lies beyond them: 9999-12-31 would overflow the
        # timers and write-backs that add days to the date.
        lo = dt.date.fromisoformat(str(spec.min)) if spec.min is not None else None
        hi = dt.date.fromisoformat(str(spec.max)) if spec.max is not None else None
        if lo is None and (hi is None or hi >= FIRST_DAY):
            lo = FIRST_DAY
        if hi is None and lo <= LAST_DAY:
            hi = LAST_DAY
        checks.append(validate.Range(min=lo, max=hi))
        return mf.Date(validate=checks, **kw)
    if t == "enum":
        checks.append(validate.OneOf(spec.values if choices is None else choices,
                                     error="must be one of: {choices}"))
        return mf.String(validate=checks, **kw)
    if t == "bool":
        if choices is not None:  # e.g. a check that must have been done: values [true]
            allowed = [str(c).lower() for c in choices]
            checks.append(validate.OneOf(choices, error=constant("field.must_be", values=allowed)))
        return mf.Boolean(validate=checks, **kw)
    if t == "person":
        checks.append(validate.Range(min=1, max=2**31 - 1, error=constant("field.person_id")))
        return mf.Integer(strict=True, validate=checks, **kw)
    if t == "list":
        if spec.max_items:
            checks.append(validate.Length(max=spec.max_items))
        if spec.record:
            inner: mf.Field = mf.Nested(record_schema(spec.record))
        else:
            assert spec.item is not None
            inner = _field(spec.item, required=True)
        return mf.List(inner, validate=checks, **kw)
    raise ValueError(f"unknown field type {t}")  # spec validation makes this unreachable


def record_schema(subfields: tuple[FieldSpec, ...]) -> Schema:
    """Rows of a list-of-records field ("X" indicators: 指标, 目标, 实际…): all given."""
    attrs = {f.name: _field(f, required=False) for f in subfields}
    return Schema.from_dict(attrs, name="Record")(unknown=RAISE)


def build_schema(fields: dict[str, FieldSpec], required: tuple[str, ...],
                 optional: tuple[str, ...],
                 values: dict[str, tuple[str, ...]] | None = None) -> Schema:
    values = values or {}
    attrs: dict[str, mf.Field] = {}
    for name in required:
        attrs[name] = _field(fields[name], required=True, choices=values.get(name))
    for name in optional:
        attrs[name] = _field(fields[name], required=False, choices=values.get(name))
    return Schema.from_dict(attrs, name="ActionData")(unknown=RAISE)


def transition_schema(fields: dict[str, FieldSpec], t: TransitionSpec) -> Schema:
    return build_schema(fields, t.requires, t.accepts, t.values)


def load(schema: Schema, data: Any) -> dict[str, Any]:
    """Validate and return the JSON-ready form of `data` (dates and decimals as strings)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FieldErrors({"data": [msg("field.data_object")]})
    if not data and not schema.fields:  # a step without fields (认可): nothing to check
        return {}
    try:
        loaded = schema.load(data)
    except ValidationError as exc:
        raise FieldErrors(_messages(exc.messages)) from None
    return schema.dump(loaded)


def load_start(spec: FlowSpec, schema: Schema, data: Any) -> dict[str, Any]:
    """`load` for a case's initial data: a field the definition does not accept at start
    (`start: {accepts}`) is refused with the step that sets it, nothing is stored."""
    if isinstance(data, dict):
        errors = {str(name): [_not_at_start(spec, str(name))]
                  for name in data if name not in spec.start.accepts}
        if errors:
            raise FieldErrors(errors)
    return load(schema, data)


def _not_at_start(spec: FlowSpec, name: str) -> Message:
    if name not in spec.fields:
        return msg("field.not_of_flow", flow=spec.flow)
    setters = [t for t in spec.transitions if name in t.requires or name in t.accepts]
    if not setters:
        return msg("field.never_set")
    steps = [msg("field.step_by", step=t.label, trigger=t.trigger, roles=list(t.by))
             for t in setters[:3]]
    return msg("field.set_later", steps=steps, more="; …" if len(setters) > 3 else "")


def _messages(messages: dict[str, Any]) -> dict[str, list[Any]]:
    """marshmallow's messages as keyed ones; an unknown field is "not a field of this
    action" here (the data of one transition)."""
    return {path: [msg("field.not_of_action") if getattr(m, "key", "") == "field.unknown" else m
                   for m in ms]
            for path, ms in field_messages(messages).items()}


def describe(fields: dict[str, FieldSpec], t: TransitionSpec, lang: str = "zh") -> list[dict]:
    """What a client must send for this action: `[{name, type, required, values?, …}]`."""
    out = []
    for name, required in [(n, True) for n in t.requires] + [(n, False) for n in t.accepts]:
        f = fields[name]
        item: dict[str, Any] = {"name": name, "type": f.type, "required": required,
                                "label": f.label.text(lang)}
        if f.values:
            item["values"] = list(t.choices(f))  # only what this action accepts
        if f.max_length:
            item["max_length"] = f.max_length
        if f.min is not None:
            item["min"] = f.min
        if f.max is not None:
            item["max"] = f.max
        if f.item is not None and f.item.values:  # a list of enum values: the choices
            item["item_values"] = list(f.item.values)
        if f.record:
            item["fields"] = [{"name": s.name, "type": s.type, "label": s.label.text(lang)}
                              for s in f.record]
        out.append(item)
    return out
