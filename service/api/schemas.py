"""marshmallow schemas shared by the API blueprints (requests and responses)."""

from __future__ import annotations

from types import SimpleNamespace

from marshmallow import Schema, fields, pre_dump, validate

from workflows.facts import FIRST_DAY, LAST_DAY
from workflows.queries import SORTABLE

SORTS = [k for k in SORTABLE] + [f"-{k}" for k in SORTABLE]
MAX_ID = 2**31 - 1  # ids are PostgreSQL INTEGERs


def Id(**kwargs) -> fields.Integer:  # noqa: N802 - reads like a field class
    """An id of a row: 1 … 2**31-1, so no query ever sees a number the column cannot hold."""
    return fields.Integer(validate=validate.Range(min=1, max=MAX_ID), **kwargs)


def RecordDate(**kwargs) -> fields.Date:  # noqa: N802 - reads like a field class
    """A date of a person's record (or judged against one): within the years the record
    holds (`workflows.facts.FIRST_DAY` … `LAST_DAY`); 9999-12-31 is a field error."""
    return fields.Date(validate=validate.Range(
        min=FIRST_DAY, max=LAST_DAY, error=f"must be a date between {FIRST_DAY} and "
                                           f"{LAST_DAY}"), **kwargs)


class PageQuery(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=200))


class CaseQuery(PageQuery):
    flow = fields.String(validate=validate.Length(max=64))
    state = fields.String(validate=validate.Length(max=64))
    unit_id = Id()
    subject_id = Id()
    period = fields.String(validate=validate.Length(max=16))
    overdue = fields.Boolean()
    stuck = fields.Boolean(metadata={
        "description": "Open cases whose current step nobody can act on (admins and "
                       "process owners only)"})
    q = fields.String(validate=validate.Length(min=1, max=100),
                      metadata={"description": "Text in the subject's name or code"})
    sort = fields.String(load_default="-updated_at", validate=validate.OneOf(SORTS))


class Ref(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)


class RequiredField(Schema):
    name = fields.String(required=True)
    type = fields.String(required=True)
    required = fields.Boolean(required=True)
    label = fields.String(required=True)
    values = fields.List(fields.String(), metadata={
        "description": "An enum: the values this action accepts (only these)"})
    item_values = fields.List(fields.String(), metadata={
        "description": "A list of enum values: the values each item may take"})
    max_length = fields.Integer()
    min = fields.Raw()
    max = fields.Raw()
    fields_ = fields.List(fields.Dict(), data_key="fields", attribute="fields")

    @pre_dump
    def _attributes(self, data, **kwargs):
        # Optional keys are read as attributes: a missing "values" key must not find
        # dict.values (marshmallow falls back to getattr on a dict).
        return SimpleNamespace(**data) if isinstance(data, dict) else data


class ActionOut(Schema):
    trigger = fields.String(required=True)
    label = fields.String(required=True)
    to = fields.String(required=True)
    requires = fields.List(fields.Nested(RequiredField), required=True)
    comment = fields.String(required=True, metadata={"description": "optional | required"})
    as_role = fields.String(required=True)


class CaseOut(Schema):
    id = fields.Integer(required=True)
    flow = fields.String(required=True)
    flow_title = fields.String()
    flow_version = fields.Integer(required=True)
    subject = fields.Nested(Ref, required=True)
    unit = fields.Nested(Ref, required=True)
    tier = fields.String(allow_none=True)
    period_key = fields.String(allow_none=True)
    state = fields.String(required=True)
    state_label = fields.String(required=True)
    version = fields.Integer(required=True)
    deadline_at = fields.DateTime(allow_none=True)
    overdue = fields.Boolean(required=True)
    deadline_uncertain = fields.Boolean(required=True, metadata={
        "description": "The deadline falls in a year whose official holidays the calendar "
                       "does not know yet (e.g. 2027 before its State Council notice is "
                       "added to calendar.yaml): only weekends were counted as days off, so "
                       "it may be early. See docs/calendar.md."})
    claimed_by = fields.Integer(allow_none=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    closed = fields.Boolean(required=True)
    data = fields.Dict(required=True)
    actions = fields.List(fields.Nested(ActionOut))


class CaseList(Schema):
    items = fields.List(fields.Nested(CaseOut), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)


class StartCase(Schema):
    flow = fields.String(required=True, validate=validate.Length(min=1, max=64))
    subject_id = Id(required=True)
    period_key = fields.String(validate=validate.Length(min=1, max=16))
    version = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    data = fields.Dict(load_default=dict, metadata={
        "description": "Only the fields the flow's `start: {accepts}` names, from a starter "
                       "its `by` names (none in the shipped flows); any other field is "
                       "refused with 422 naming the step that sets it."})
    comment = fields.String(validate=validate.Length(max=4000))


class ActionIn(Schema):
    data = fields.Dict(load_default=dict)
    comment = fields.String(validate=validate.Length(max=4000), allow_none=True)


class FireOut(Schema):
    case_id = fields.Integer(required=True)
    trigger = fields.String(required=True)
    from_state = fields.String(required=True, data_key="from")
    to_state = fields.String(required=True, data_key="to")
    version = fields.Integer(required=True)
    replayed = fields.Boolean(required=True)


class HistoryOut(Schema):
    seq = fields.Integer(required=True)
    at = fields.DateTime(required=True)
    actor_id = fields.Integer(allow_none=True)
    actor_role = fields.String(required=True)
    trigger = fields.String(required=True)
    from_ = fields.String(data_key="from", attribute="from", allow_none=True)
    to = fields.String(required=True)
    data = fields.Dict(required=True)
    comment = fields.String(allow_none=True)
    hash = fields.String(required=True)


class TimerOut(Schema):
    id = fields.Integer(required=True)
    kind = fields.String(required=True, metadata={
        "description": "deadline (期限) | reminder (提醒) | auto (自动流转) | repeat (定期提醒)"})
    action = fields.String(allow_none=True, metadata={"description": "Trigger it fires"})
    due_at = fields.DateTime(required=True)
    status = fields.String(required=True, metadata={
        "description": "pending | claimed | done | dropped (the case moved on) | failed"})
    attempts = fields.Integer(required=True)
    state_visit = fields.Integer(allow_none=True)
    fired_at = fields.DateTime(allow_none=True)
    last_error = fields.String(allow_none=True)
