"""Tamper-evident history: each record's hash covers its content and the previous hash.

A personnel decision may be inspected years later; recomputing the chain shows whether any
record was altered, removed or inserted since it was written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
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


def verify(session: Session, batch: int = 2000) -> tuple[int, int, list[Break]]:
    """Recompute every chain; return (cases checked, records checked, first break per case)."""
    breaks: list[Break] = []
    cases = records = 0
    heads = session.execute(select(Case.id, Case.history_seq, Case.history_hash).order_by(Case.id))
    head_of = {cid: (seq, h) for cid, seq, h in heads}
    rows = session.execute(
        select(HistoryRecord).order_by(HistoryRecord.case_id, HistoryRecord.seq)
        .execution_options(yield_per=batch)
    ).scalars()
    current, prev, expected_seq, broken = None, GENESIS, 1, False

    def close(case_id: int | None) -> None:
        nonlocal cases
        if case_id is None:
            return
        cases += 1
        seq, head = head_of.pop(case_id, (None, None))
        if not broken and (seq != expected_seq - 1 or head != prev):
            breaks.append(Break(case_id, None, None,
                                f"case says its history ends at seq {seq}, the records end at "
                                f"seq {expected_seq - 1}: records were removed or added"))

    for rec in rows:
        if rec.case_id != current:
            close(current)
            current, prev, expected_seq, broken = rec.case_id, GENESIS, 1, False
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
        prev, expected_seq = rec.hash, expected_seq + 1
    close(current)
    for case_id, (seq, _h) in head_of.items():
        if seq:
            cases += 1
            breaks.append(Break(case_id, None, None, f"case has {seq} history records, none found"))
    return cases, records, breaks
