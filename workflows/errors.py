"""Engine exceptions.

Each one carries what a caller needs to explain the refusal to a person, and maps to one
HTTP status in the service. None of them is raised after anything was written: the unit of
work rolls back first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where it is and what is wrong."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.file}: {self.path or '<root>'}: {self.message}{where}"


class CivflowError(Exception):
    """Base of every refusal the engine gives on purpose."""

    code = "error"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self)}


class DefinitionInvalid(CivflowError):
    """A flow definition does not validate; `problems` lists every finding."""

    code = "definition_invalid"

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": f"{len(self.problems)} problem(s) in the definition",
            "problems": [
                {"file": p.file, "path": p.path, "message": p.message, "line": p.line}
                for p in self.problems
            ],
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

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), "state": self.state,
                "roles": self.roles}


class Forbidden(CivflowError):
    """The actor holds none of the roles the transition names."""

    code = "forbidden"

    def __init__(self, message: str, rule: str):
        self.rule = rule
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), "rule": self.rule}


@dataclass
class FieldErrors(CivflowError):
    """Submitted data does not fit the fields the transition requires or accepts."""

    errors: dict[str, list[str]] = field(default_factory=dict)
    code = "invalid_data"

    def __str__(self) -> str:
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(self.errors.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), "fields": self.errors}


class RuleViolation(CivflowError):
    """A guard rule refused; `details` holds the numbers behind the refusal."""

    code = "rule_violation"

    def __init__(self, rule: str, message: str, details: dict[str, Any] | None = None):
        self.rule = rule
        self.details = details or {}
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "rule": self.rule, "message": str(self), "details": self.details}


class Conflict(CivflowError):
    """The case changed since the caller read it (stale expected version)."""

    code = "conflict"

    def __init__(self, case_id: int, current_version: int, expected: int | None = None):
        self.case_id = case_id
        self.current_version = current_version
        self.expected = expected
        super().__init__(
            f"case {case_id} is at version {current_version}, not {expected}: "
            "reload it and try again"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": str(self),
            "case_id": self.case_id,
            "current_version": self.current_version,
        }


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
        super().__init__("\n".join(f"line {n}: {m}" for n, m in errors))
