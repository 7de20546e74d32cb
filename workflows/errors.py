"""Engine exceptions.

Each one carries what a caller needs to explain the refusal to a person, and maps to one
HTTP status in the service. None of them is raised after anything was written: the unit of
work rolls back first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .messages import Message, key_of, msg, params_json, reader_lang, render


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where it is and what is wrong (`message` is a
    keyed `Message`, see workflows/messages.py)."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.file}: {self.path or '<root>'}: {self.message}{where}"

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {"file": self.file, "path": self.path, "message": render(self.message, lang),
                "key": key_of(self.message), "params": params_json(self.message),
                "line": self.line}


class CivflowError(Exception):
    """Base of every refusal the engine gives on purpose. The message is a keyed `Message`
    (`msg(key, **params)`): `str(exc)` is its English text, `to_dict(lang)` renders it in
    the reader's language and keeps `key` and `params` for programs."""

    code = "error"

    @property
    def message(self) -> Any:
        """The message as given (a `Message` once every raise site has a key)."""
        return self.args[0] if self.args else ""

    def text(self, lang: str) -> str:
        """The message in `lang` (`zh`, `en`)."""
        return render(self.message, lang)

    def __html__(self) -> str:  # Jinja: `{{ error }}` reads in the page's language
        from markupsafe import escape

        return str(escape(self.text(reader_lang.get())))

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {"code": self.code, **message_dict(self.message, lang)}


def message_dict(message: Any, lang: str) -> dict[str, Any]:
    """`message` in `lang`, with its key and parameters when it has them."""
    out: dict[str, Any] = {"message": render(message, lang)}
    if isinstance(message, Message):
        out["key"], out["params"] = message.key, params_json(message)
    return out


def field_dict(errors: dict[str, list[Any]], lang: str) -> dict[str, Any]:
    """Field errors in `lang` (`fields`: path → texts) and as keys (`field_keys`: path →
    [{key, params}])."""
    return {"fields": {k: [render(m, lang) for m in v] for k, v in errors.items()},
            "field_keys": {k: [{"key": key_of(m), "params": params_json(m)} for m in v]
                           for k, v in errors.items()}}


class DefinitionInvalid(CivflowError):
    """A flow definition does not validate; `problems` lists every finding."""

    code = "definition_invalid"

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def text(self, lang: str) -> str:
        return "\n".join(f"{p.file}: {p.path or '<root>'}: {render(p.message, lang)}"
                         + (f" ({p.line})" if p.line else "") for p in self.problems)

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {
            "code": self.code,
            **message_dict(msg("definition.problems", n=len(self.problems)), lang),
            "problems": [p.to_dict(lang) for p in self.problems],
        }


class NotFound(CivflowError):
    code = "not_found"


class NotPublished(CivflowError):
    """A draft version cannot have cases."""

    code = "not_published"


class ActionNotAllowed(CivflowError):
    """The trigger does not exist from the case's current state."""

    code = "action_not_allowed"


class NoActor(ActionNotAllowed):
    """The move would leave a live case that nobody can act on (办理人缺失): nobody holds
    the role the next step needs, and the definition's fallback finds nobody either."""

    code = "no_actor"

    def __init__(self, message: str, state: str | None, roles: list[str]):
        self.state, self.roles = state, roles
        super().__init__(message)

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {**super().to_dict(lang), "state": self.state, "roles": self.roles}


class Forbidden(CivflowError):
    """The actor holds none of the roles the transition names."""

    code = "forbidden"

    def __init__(self, message: str, rule: str):
        self.rule = rule
        super().__init__(message)

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {**super().to_dict(lang), "rule": self.rule}


@dataclass
class FieldErrors(CivflowError):
    """Submitted data does not fit the fields the transition requires or accepts; each
    entry is field path → messages (keyed `Message`s, see workflows/messages.py)."""

    errors: dict[str, list[str]] = field(default_factory=dict)
    code = "invalid_data"

    def __str__(self) -> str:  # the log text (see workflows/messages.py)
        return "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in sorted(self.errors.items()))

    def text(self, lang: str) -> str:
        return "; ".join(f"{k}: {' '.join(render(m, lang) for m in v)}"
                         for k, v in sorted(self.errors.items()))

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {"code": self.code, "message": self.text(lang), **field_dict(self.errors, lang)}


class RuleViolation(CivflowError):
    """A guard rule refused; `details` holds the numbers behind the refusal."""

    code = "rule_violation"

    def __init__(self, rule: str, message: str, details: dict[str, Any] | None = None):
        self.rule = rule
        self.details = details or {}
        super().__init__(message)

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {**super().to_dict(lang), "rule": self.rule, "details": self.details}


class Conflict(CivflowError):
    """The case changed since the caller read it (stale expected version)."""

    code = "conflict"

    def __init__(self, case_id: int, current_version: int, expected: int | None = None):
        self.case_id = case_id
        self.current_version = current_version
        self.expected = expected
        super().__init__(msg("case.conflict", case_id=case_id, version=current_version,
                             expected=expected))

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {**super().to_dict(lang), "case_id": self.case_id,
                "current_version": self.current_version}


class DuplicateCase(CivflowError):
    """The person already has a case of this flow for this period."""

    code = "duplicate_case"


class IdempotencyMismatch(CivflowError):
    """An idempotency key was reused for a different action."""

    code = "idempotency_mismatch"


class ImportFailed(CivflowError):
    """A CSV import found bad rows; nothing was written. `errors` are (line, message)."""

    code = "import_failed"

    def __init__(self, errors: list[tuple[int, str]]):
        self.errors = errors
        super().__init__("\n".join(f"line {n}: {m}" for n, m in errors))  # the log text

    def text(self, lang: str) -> str:
        return "\n".join(self.lines(lang))

    def lines(self, lang: str) -> list[str]:
        return [render(msg("import.line", line=n, message=m), lang) for n, m in self.errors]

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {"code": self.code, "message": "\n".join(self.lines(lang)),
                "errors": [{"line": n, **message_dict(m, lang)} for n, m in self.errors]}
