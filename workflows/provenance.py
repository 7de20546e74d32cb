"""Where each value of a case came from (出处), read from its history.

A case's data is the sum of its history records' data. A value counts only if the record
that wrote it was entitled to: the start record for a field the definition accepts at start
(`start: {accepts, by}`), or a transition that requires or accepts the field, fired through
a role its `by` names. Rules and effects see only such values (`trusted`), and
`civflow audit-case-data` lists the others (`audit`): start data from before start data was
restricted, values written behind the engine's back.

A case moved to a newer version (迁移, `workflows.migrate`) has a `migrate` record: the
records before it were judged, when it was written, against the version they were written
under, and it carries the values that were trusted then and that the new version still
declares. Replayed against the case's (new) version, the records before it are summed up
by it: what it carries is trusted, every other earlier value is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .history import BOOKKEEPING
from .spec import FlowSpec

START = "start"  # the trigger name recorded for a case's first history record
MIGRATE = "migrate"  # the trigger of the record that moves a case to another version


class Record(Protocol):
    seq: int
    trigger: str
    from_state: str | None
    actor_role: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Finding:
    """A value in a case's data that no entitled writer put there."""

    case_id: int
    flow: str
    field: str
    seq: int | None  # the history record that wrote it; None when none did
    reason: str

    def __str__(self) -> str:
        where = f"record seq {self.seq}" if self.seq else "no record"
        return f"case {self.case_id} ({self.flow}): {self.field}: {where}: {self.reason}"


def _refusal(spec: FlowSpec, rec: Record, name: str) -> str | None:
    """Why `rec` was not entitled to write field `name`; None when it was."""
    if rec.trigger == START:
        if name not in spec.start.accepts:
            return (f"given when the case started (by {rec.actor_role}); the definition "
                    "does not accept it at start")
        if rec.actor_role not in spec.start.by:
            return (f"given when the case started by {rec.actor_role}; the definition "
                    f"accepts it at start only from {', '.join(spec.start.by)}")
        return None
    t = spec.transition(rec.trigger, rec.from_state or "")
    if t is None:
        return (f"written by {rec.trigger!r} from {rec.from_state!r}, which the case's "
                "definition version does not have")
    if name not in t.requires and name not in t.accepts:
        return f"written by {rec.trigger!r}, which does not take this field"
    if rec.actor_role not in t.by:
        return (f"written by {rec.trigger!r} as {rec.actor_role}, which is for "
                f"{', '.join(t.by)}")
    return None


def replay(spec: FlowSpec, records: Iterable[Record]
           ) -> tuple[dict[str, Any], dict[str, tuple[int, str | None]]]:
    """The data the records add up to, and per field (seq of its last writer, why that
    value is not trusted — None when it is). A list field appended to is trusted only if
    every part of it is."""
    data: dict[str, Any] = {}
    source: dict[str, tuple[int, str | None]] = {}
    for rec in records:
        if rec.trigger in BOOKKEEPING:
            continue
        if rec.trigger == MIGRATE:
            _migrated(rec, data, source)
            continue
        t = spec.transition(rec.trigger, rec.from_state or "") if rec.trigger != START else None
        appends = t.appends if t else ()
        for name, value in (rec.data or {}).items():
            why = _refusal(spec, rec, name)
            if name in appends:
                data[name] = list(data.get(name) or []) + list(value or [])
                earlier = source.get(name, (0, None))[1]
                why = why or earlier
            else:
                data[name] = value
            source[name] = (rec.seq, why)
    return data, source


def _migrated(rec: Record, data: dict[str, Any],
              source: dict[str, tuple[int, str | None]]) -> None:
    """A `migrate` record: earlier records were written under another version; only what
    the record carries (trusted under that version when the case moved) stays trusted."""
    carried = rec.data or {}
    for name, (seq, _why) in list(source.items()):
        if name not in carried:  # (`_why` judged it against the wrong version)
            source[name] = (seq, "written before the case moved to its current version "
                            f"(record seq {rec.seq}) and not carried by the move: not "
                            "trusted under the version it was written in, or not a field "
                            "of the current version")
    for name, value in carried.items():
        data[name] = value
        source[name] = (rec.seq, None)


def trusted(spec: FlowSpec, current: dict[str, Any], records: Iterable[Record]
            ) -> dict[str, Any]:
    """The part of a case's current data that entitled writers wrote (what rules read)."""
    data, source = replay(spec, records)
    return {k: v for k, v in current.items()
            if k in data and data[k] == v and source[k][1] is None}


def audit(case_id: int, flow: str, spec: FlowSpec, current: dict[str, Any],
          records: Iterable[Record]) -> list[Finding]:
    """Every value of `current` that no entitled writer wrote, with the reason."""
    data, source = replay(spec, records)
    out = []
    for name in sorted(current):
        if name not in data:
            out.append(Finding(case_id, flow, name, None,
                               "in the case's data, but no history record wrote it"))
        elif data[name] != current[name]:
            out.append(Finding(case_id, flow, name, source[name][0],
                               "differs from what the history records: changed outside "
                               "the engine"))
        elif source[name][1] is not None:
            out.append(Finding(case_id, flow, name, source[name][0], source[name][1]))
    return out
