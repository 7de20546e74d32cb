"""Indexes for the case lists and the queue at a million cases (bench/query_bench.py).

Each serves a query shape of `workflows.queries` that otherwise read the whole table:
- `ix_cases_updated_at_id`: the default list order (newest first) — a page walks the index;
- `ix_cases_deadline_at_id`: the list sorted by due date, and overdue ranges;
- `ix_cases_open_due`: open cases by deadline (the queue's order; overdue among the open);
- `ix_cases_open_step`: open cases at a step (flow version, state) in a unit — the queue's
  condition, for a step and a unit subtree in one index scan;
- `ix_cases_claimed_by`: cases a person claimed, one branch of who may see a case;
- `ix_cases_flow_id_period_key`: a flow's cases of one period (the monthly lists).
The partial ones hold only open cases (a few % of them) or claimed ones.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("closed_at IS NULL")
CLAIMED = sa.text("claimed_by IS NOT NULL")
INDEXES: list[tuple[str, list[str], sa.TextClause | None]] = [
    ("ix_cases_updated_at_id", ["updated_at", "id"], None),
    ("ix_cases_deadline_at_id", ["deadline_at", "id"], None),
    ("ix_cases_open_due", ["deadline_at", "state_entered_at", "id"], OPEN),
    ("ix_cases_open_step", ["version_id", "state", "unit_id"], OPEN),
    ("ix_cases_claimed_by", ["claimed_by"], CLAIMED),
    ("ix_cases_flow_id_period_key", ["flow_id", "period_key"], None),
]


def upgrade() -> None:
    for name, columns, where in INDEXES:
        op.create_index(name, "cases", columns, postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    for name, _columns, _where in reversed(INDEXES):
        op.drop_index(name, table_name="cases")
