"""What a request may be (请求限制): its size, and the JSON it carries.

- **Size.** A body larger than `CIVFLOW_MAX_BODY` bytes (2 MiB by default; the largest
  ordinary JSON request is a few KB) is refused with 413 before it is read, whether it
  announces its length or comes chunked. Views marked `@large_body` — the CSV imports,
  flow uploads, the owner's upload page — accept up to `CIVFLOW_MAX_IMPORT_BODY` bytes
  (32 MiB: 5,000,000 characters of CSV, each `\\uXXXX`-escaped in JSON, still fit).
  Both come from the environment or the app's config (`create_app(config=...)`).
- **JSON.** A body sent as JSON is parsed once, here, before any view: text that is not
  JSON, an integer longer than Python converts (4,300 digits), or nesting deeper than
  `MAX_JSON_DEPTH` is a 400 with the problem shape (`fields: {"json": [...]}`), never a
  500 — the parsers otherwise raise ValueError or RecursionError, which nobody catches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, request
from flask_smorest import abort
from werkzeug.exceptions import RequestEntityTooLarge

from workflows.messages import Message, msg

MAX_BODY = 2 * 1024 * 1024
MAX_IMPORT_BODY = 32 * 1024 * 1024
MAX_JSON_DEPTH = 64  # the deepest civflow body (a bulk request's items) is 4 levels

V = TypeVar("V", bound=Callable[..., Any])


def large_body(view: V) -> V:
    """Mark a view (a function or a MethodView class) that accepts an import-sized body."""
    view.civflow_large_body = True  # type: ignore[attr-defined]
    return view


def configure(app: Flask) -> None:
    """Defaults from the environment, unless the app's config already names them."""
    for key, default in (("CIVFLOW_MAX_BODY", MAX_BODY),
                         ("CIVFLOW_MAX_IMPORT_BODY", MAX_IMPORT_BODY)):
        if key not in app.config:
            text = os.environ.get(key, "").strip()
            if text and not text.isdigit():
                raise ValueError(f"{key} must be a number of bytes, not {text!r}")
            app.config[key] = int(text) if text else default
    # Werkzeug enforces this on every read of the body (a chunked one too): a safety net
    # for whatever reads the body before `check_size` runs.
    app.config["MAX_CONTENT_LENGTH"] = app.config["CIVFLOW_MAX_BODY"]


def check_size() -> None:
    """Refuse a body over this endpoint's limit now, unread; set the limit for the reads."""
    view = current_app.view_functions.get(request.endpoint or "")
    large = getattr(getattr(view, "view_class", view), "civflow_large_body", False)
    limit = current_app.config["CIVFLOW_MAX_IMPORT_BODY" if large else "CIVFLOW_MAX_BODY"]
    # Per request (Flask 3.1): werkzeug stops a chunked body at the limit while reading it,
    # and a form's fields may then hold as much as the body.
    request.max_content_length = limit
    if large:
        request.max_form_memory_size = limit
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(msg(
            "request.body_over_limit", size=request.content_length, limit=limit,
            setting=f"CIVFLOW_{'MAX_IMPORT_BODY' if large else 'MAX_BODY'}"))


def json_body() -> Any:
    """The request's JSON body, parsed (and cached for the views' parser); None without one.

    Malformed JSON is a 400 here, so that no parser after this one meets it."""
    if not request.is_json:
        return None
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        # A chunked body: werkzeug stops reading at the limit and returns what it read.
        raise RequestEntityTooLarge(msg("request.body_too_large", limit=limit))
    if not data:
        return None
    try:
        value = json.loads(data)
    except RecursionError:
        _invalid(msg("request.json_too_deep", depth=MAX_JSON_DEPTH))
    except json.JSONDecodeError as exc:
        _invalid(msg("request.json_invalid", problem=exc.msg, line=exc.lineno,
                     column=exc.colno))
    except UnicodeDecodeError:
        _invalid(msg("request.json_not_utf8"))
    except ValueError as exc:  # int(): "Exceeds the limit (4300 digits) ..."
        _invalid(msg("request.json_number", problem=str(exc).split(";")[0]))
    if _depth(value) > MAX_JSON_DEPTH:
        _invalid(msg("request.json_too_deep", depth=MAX_JSON_DEPTH))
    return value


def _invalid(message: Message) -> None:
    abort(400, messages={"json": [message]})


def _depth(value: Any) -> int:
    """How deeply lists and objects nest (without recursion: the value may be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((child, level + 1) for child in item)
    return deepest
