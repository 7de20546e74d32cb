"""Claiming a batch of due rows under a lease: the one way timers and deliveries are taken.

PostgreSQL: one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`, so concurrent
nodes skip each other's rows instead of waiting or taking them twice. SQLite silently
ignores FOR UPDATE (docs/architecture.md: measured 550 duplicates of 5,000 that way), so there each
candidate is taken by a conditional UPDATE whose row count says who won.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, Connection, Table, select, update


def claim_batch(conn: Connection, table: Table, claimable: ColumnElement[bool],
                order_by: tuple, batch: int, node: str, now: dt.datetime,
                lease: dt.timedelta) -> list[int]:
    """Mark up to `batch` rows matching `claimable` (which may use `:now`) as claimed by
    `node` until `now + lease`; return their ids."""
    values = {"status": "claimed", "claimed_by": node, "claim_until": now + lease}
    if conn.dialect.name == "postgresql":
        chosen = (select(table.c.id).where(claimable).order_by(*order_by).limit(batch)
                  .with_for_update(skip_locked=True))
        return sorted(conn.execute(
            update(table).where(table.c.id.in_(chosen.scalar_subquery())).values(**values)
            .returning(table.c.id), {"now": now}).scalars())
    candidates = conn.execute(select(table.c.id).where(claimable).order_by(*order_by)
                              .limit(batch), {"now": now}).scalars().all()
    return [row_id for row_id in candidates
            if conn.execute(update(table).where(table.c.id == row_id, claimable)
                            .values(**values), {"now": now}).rowcount == 1]
