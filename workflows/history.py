"""Tamper-evident history: each record's hash covers its content and the previous hash.

A personnel decision may be inspected years later; recomputing the chain shows whether any
record was altered, removed or inserted since it was written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Case, HistoryRecord

GENESIS = "0" * 64


def _instant(at: dt.datetime) -> str:
    """UTC to the microsecond; SQLite hands back naive datetimes, PostgreSQL aware ones."""
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def record_hash(*, case_id: int, seq: int, at: dt.datetime, actor_id: int | None,
                actor_role: str, trigger: str, from_state: str | None, to_state: str,
                data: dict[str, Any], comment: str | None, prev_hash: str) -> str:
    content = {
        "case": case_id, "seq": seq, "at": _instant(at), "actor": actor_id,
        "role": actor_role, "trigger": trigger, "from": from_state, "to": to_state,
        "data": data, "comment": comment, "prev": prev_hash,
    }
    raw = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def hash_of(rec: HistoryRecord) -> str:
    return record_hash(case_id=rec.case_id, seq=rec.seq, at=rec.at, actor_id=rec.actor_id,
                       actor_role=rec.actor_role, trigger=rec.trigger,
                       from_state=rec.from_state, to_state=rec.to_state, data=rec.data,
                       comment=rec.comment, prev_hash=rec.prev_hash)


@dataclass(frozen=True)
class Break:
    case_id: int
    seq: int | None
    record_id: int | None
    reason: str

    def __str__(self) -> str:
        where = f"record {self.record_id} (seq {self.seq})" if self.record_id else "chain head"
        return f"case {self.case_id}: {where}: {self.reason}"


BOOKKEEPING = ("claim", "release", "delegate")  # queue records: they change no case data
Appends = Callable[[int, str, str | None], tuple[str, ...]]


def verify(session: Session, batch: int = 2000, appends: Appends | None = None
           ) -> tuple[int, int, list[Break]]:
    """Recompute every chain; return (cases checked, records checked, first break per case).

    Beyond the chain, the case row itself must be what its history says: the state of the
    last record, and the data the records add up to (`appends(version_id, trigger, from)`
    names the list fields a transition appends to instead of replacing). A grade edited in
    the cases table behind the engine's back shows here."""
    breaks: list[Break] = []
    cases = records = 0
    heads = session.execute(select(Case.id, Case.history_seq, Case.history_hash, Case.state,
                                   Case.data, Case.version_id).order_by(Case.id))
    head_of = {r.id: r for r in heads}
    rows = session.execute(
        select(HistoryRecord).order_by(HistoryRecord.case_id, HistoryRecord.seq)
        .execution_options(yield_per=batch)
    ).scalars()
    current, prev, expected_seq, broken = None, GENESIS, 1, False
    state: str | None = None
    data: dict[str, Any] = {}

    def close(case_id: int | None) -> None:
        nonlocal cases
        if case_id is None:
            return
        cases += 1
        head = head_of.pop(case_id, None)
        seq, last = (head.history_seq, head.history_hash) if head else (None, None)
        if broken:
            return
        if seq != expected_seq - 1 or last != prev:
            breaks.append(Break(case_id, None, None,
                                f"case says its history ends at seq {seq}, the records end at "
                                f"seq {expected_seq - 1}: records were removed or added"))
        elif head.state != state:
            breaks.append(Break(case_id, None, None, f"the case is in state {head.state!r} "
                                f"but its history ends in {state!r}: the case was altered"))
        elif dict(head.data) != data:
            changed = sorted(k for k in set(head.data) | set(data)
                             if head.data.get(k) != data.get(k))
            breaks.append(Break(case_id, None, None, "the case's data differ from what its "
                                f"history records ({', '.join(changed)}): the case was altered"))

    for rec in rows:
        if rec.case_id != current:
            close(current)
            current, prev, expected_seq, broken = rec.case_id, GENESIS, 1, False
            state, data = None, {}
        records += 1
        if broken:
            continue
        reason = None
        if rec.seq != expected_seq:
            reason = f"expected seq {expected_seq}: a record is missing"
        elif rec.prev_hash != prev:
            reason = "prev_hash does not match the previous record's hash"
        elif hash_of(rec) != rec.hash:
            reason = "content does not match its hash: the record was altered"
        if reason:
            breaks.append(Break(rec.case_id, rec.seq, rec.id, reason))
            broken = True
        prev, expected_seq, state = rec.hash, expected_seq + 1, rec.to_state
        if rec.trigger not in BOOKKEEPING:
            head = head_of.get(rec.case_id)
            added = appends(head.version_id, rec.trigger, rec.from_state) \
                if appends and head is not None else ()
            for key, value in rec.data.items():
                data[key] = list(data.get(key) or []) + list(value or []) if key in added \
                    else value
    close(current)
    for case_id, head in head_of.items():
        if head.history_seq:
            cases += 1
            breaks.append(Break(case_id, None, None,
                                f"case has {head.history_seq} history records, none found"))
    return cases, records, breaks
