"""One JSON shape for every error the API gives.

```json
{"status": 409, "code": "conflict", "key": "case.conflict",
 "params": {"case_id": 7, "version": 4, "expected": 3},
 "message": "案件 7 已更新到第 4 版（您看到的是第 3 版）：请刷新后重试", "current_version": 4}
```
`status` and `code` are always there; `message` says what went wrong in words a person can
act on, in the request's `Accept-Language` (Chinese unless English is asked for); `key` and
`params` are the message code and its parameters (docs/messages.md), the same in every
language. The rest depends on the error: `fields` (field path → messages) and `field_keys`
(field path → [{key, params}]) for 400/422, `rule` and `details` for 403 and rule refusals,
`current_version` for 409, `problems` for definitions.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

from workflows import errors as e
from workflows.accounts import AuthFailed, LoginThrottled
from workflows.messages import LANGS, field_messages

STATUS: dict[type[e.CivflowError], int] = {
    e.NotFound: 404,
    e.Forbidden: 403,
    AuthFailed: 401,
    LoginThrottled: 429,
    e.Conflict: 409,
    e.DuplicateCase: 409,
    e.NotPublished: 409,
    e.ActionNotAllowed: 409,
    e.NoActor: 409,
    e.FieldErrors: 422,
    e.RuleViolation: 422,
    e.DefinitionInvalid: 422,
    e.ImportFailed: 422,
    e.IdempotencyMismatch: 422,
}


class ProblemSchema(Schema):
    """The error body (documented in the OpenAPI document as the default response)."""

    status = fields.Integer(required=True)
    code = fields.String(required=True)
    message = fields.String(required=True, metadata={
        "description": "in the request's Accept-Language: zh (default) or en"})
    key = fields.String(metadata={"description": "the message code (docs/messages.md)"})
    params = fields.Dict(metadata={"description": "the message code's parameters"})
    field_keys = fields.Dict(keys=fields.String(), values=fields.List(fields.Dict()))
    fields_ = fields.Dict(data_key="fields", attribute="fields", keys=fields.String(),
                          values=fields.List(fields.String()))
    rule = fields.String()
    details = fields.Dict()
    current_version = fields.Integer()
    case_id = fields.Integer()
    problems = fields.List(fields.Dict())
    state = fields.String(allow_none=True)  # no_actor: the step nobody could act at
    roles = fields.List(fields.String())  # no_actor: the roles nobody holds
    errors = fields.List(fields.Dict())
    retry_after = fields.Integer(metadata={"description": "429: seconds to wait, as the "
                                                          "Retry-After header says"})


def status_of(exc: e.CivflowError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def request_lang() -> str:
    """The language of the answer: the request's `Accept-Language`, Chinese by default."""
    from flask import has_request_context, request

    if not has_request_context():
        return "zh"
    return request.accept_languages.best_match(LANGS) or LANGS[0]


def body_of(exc: e.CivflowError, lang: str | None = None) -> dict[str, Any]:
    """The problem body of an engine refusal, its message in `lang` (default: the
    request's language)."""
    return {"status": status_of(exc), **exc.to_dict(lang or request_lang())}


def http_body(exc: HTTPException, lang: str | None = None) -> dict[str, Any]:
    """Werkzeug/flask-smorest errors in our shape; webargs' messages become field paths
    with keyed messages, like the engine's field errors."""
    code = (exc.name or "error").lower().replace(" ", "_")
    data = getattr(exc, "data", None) or {}
    # A view's `abort(…, message=msg(key, …))` reads in the request's language, with its key.
    body: dict[str, Any] = {"status": exc.code or 500, "code": code, **e.message_dict(
        data.get("message") or exc.description or exc.name, lang or request_lang())}
    messages = data.get("messages")
    if messages:
        refused = e.FieldErrors(field_messages(messages)).to_dict(lang or request_lang())
        body.update(refused, code="invalid_request")
    return body
