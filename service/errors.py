"""One JSON shape for every error the API gives.

```json
{"status": 409, "code": "conflict", "message": "…", "current_version": 4}
```
`status` and `code` are always there; `message` says what went wrong in words a person can
act on; the rest depends on the error: `fields` (field path → messages) for 400/422,
`rule` for 403 and rule refusals, `current_version` for 409, `problems` for definitions.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

from workflows import errors as e
from workflows.accounts import AuthFailed, LoginThrottled

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
    message = fields.String(required=True)
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


def body_of(exc: e.CivflowError) -> dict[str, Any]:
    body = {"status": status_of(exc), **exc.to_dict()}
    if isinstance(exc, e.ImportFailed):
        body["errors"] = [{"line": n, "message": m} for n, m in exc.errors]
    return body


def http_body(exc: HTTPException) -> dict[str, Any]:
    """Werkzeug/flask-smorest errors in our shape; webargs' messages become field paths."""
    code = (exc.name or "error").lower().replace(" ", "_")
    data = getattr(exc, "data", None) or {}
    body: dict[str, Any] = {"status": exc.code or 500, "code": code,
                            "message": data.get("message") or exc.description or exc.name}
    messages = data.get("messages")
    if messages:
        body["code"] = "invalid_request"
        body["fields"] = dict(_paths(messages))
        body["message"] = "; ".join(f"{k}: {' '.join(v)}" for k, v in body["fields"].items())
    return body


def _paths(messages: Any, prefix: str = ""):
    if isinstance(messages, dict):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield from _paths(value, path)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        yield prefix, [_friendly(m) for m in messages]
    elif isinstance(messages, list):
        for i, m in enumerate(messages):
            yield from _paths(m, f"{prefix}[{i}]")
    else:
        yield prefix, [str(messages)]


def _friendly(message: str) -> str:
    return {"Missing data for required field.": "is required",
            "Unknown field.": "is not a known field"}.get(message, message)
