"""A history record's idempotency key indexed only where there is one.

`case_history` had UNIQUE (case_id, idempotency_key) over every record, and most records
carry no key (starts, timers, cycles, bulk steps, most API calls). The same uniqueness as a
partial unique index over the records that have a key: every action writes one index entry
fewer (on SQLite a step's commit one WAL page fewer, about 10 µs; docs/BENCHMARKS.md), and
the first-use lookup (`case_id = ? AND idempotency_key = ?`) still finds the key by index.

On PostgreSQL `CREATE INDEX` holds writes to `case_history` while it builds: run it when
the service is quiet (a million records take seconds).

Revision ID: 0014
Revises: 0013_migrate
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013_migrate"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "uq_case_history_case_id_idempotency_key"
HAS_KEY = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("case_history") as batch:
        batch.drop_constraint(NAME, type_="unique")
    op.create_index(NAME, "case_history", ["case_id", "idempotency_key"], unique=True,
                    postgresql_where=HAS_KEY, sqlite_where=HAS_KEY)


def downgrade() -> None:
    op.drop_index(NAME, table_name="case_history")
    with op.batch_alter_table("case_history") as batch:
        batch.create_unique_constraint(NAME, ["case_id", "idempotency_key"])
