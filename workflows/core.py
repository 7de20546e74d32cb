"""The engine's value types: who acts, and the typed results every entrance returns.

Kept apart from the engine's modules (versions, kernel, history, reads) so that each of them,
the timer worker and the cycles can name an actor or a result without importing another
capability: no module imports another in a circle.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import CivflowError
from .messages import Message, msg
from .spec import SYSTEM

START = "start"  # the trigger name recorded for a case's first history record
CLAIM, RELEASE, DELEGATE = "claim", "release", "delegate"  # queue bookkeeping, no state change
DRAFT, PUBLISHED = "draft", "published"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Actor:
    """Who acts: a person, or the scheduler (`system`)."""

    person_id: int | None
    is_system: bool = False

    @classmethod
    def person(cls, person_id: int) -> Actor:
        return cls(person_id=person_id)

    def __str__(self) -> str:
        return SYSTEM if self.is_system else f"person {self.person_id}"

    def named(self) -> Message:
        """How a message names the actor, in the reader's language (人员 6 / person 6)."""
        if self.is_system:
            return msg("engine.role_system")
        return msg("engine.person", person_id=self.person_id)


SYSTEM_ACTOR = Actor(person_id=None, is_system=True)


@dataclass(frozen=True)
class CaseView:
    id: int
    flow: str
    flow_version: int
    version_id: int
    subject_id: int
    unit_id: int
    tier: str | None
    period_key: str | None
    state: str
    final: bool
    data: dict[str, Any]
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    deadline_at: dt.datetime | None


@dataclass(frozen=True)
class Action:
    """Something the actor may do on a case now, and what it must send."""

    trigger: str
    label: str
    to: str
    requires: list[dict[str, Any]]
    comment: str
    as_role: str


@dataclass(frozen=True)
class FireResult:
    case_id: int
    trigger: str
    from_state: str
    to_state: str
    version: int
    history_seq: int
    replayed: bool = False
    flow: str = ""


@dataclass(frozen=True)
class BulkResult:
    """Per-item results of a bulk action: what moved, and why the rest did not."""

    done: list[FireResult] = field(default_factory=list)
    refused: dict[int, CivflowError] = field(default_factory=dict)


@dataclass(frozen=True)
class PublishResult:
    flow: str
    version: int
    version_id: int
    content_hash: str
    created: bool  # False: identical content was already stored, or already published
    status: str = PUBLISHED


def request_hash(actor: Actor, trigger: str, data: dict[str, Any] | None,
                 comment: str | None) -> str:
    """What an Idempotency-Key was first used for: who, which action, what data and comment
    (canonical JSON, hashed). The same key with another of these is another request."""
    raw = json.dumps({"actor": actor.person_id, "system": actor.is_system, "trigger": trigger,
                      "data": data or {}, "comment": comment},
                     sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()
