"""A person holds a named group once: unit-less role assignments are unique too.

(NULL unit ids never compare equal, so the existing unique constraint let duplicates in.)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = sa.text("unit_id IS NULL")


def upgrade() -> None:
    op.create_index("uq_role_assignments_group", "role_assignments", ["person_id", "role"],
                    unique=True, postgresql_where=WHERE, sqlite_where=WHERE)


def downgrade() -> None:
    op.drop_index("uq_role_assignments_group", table_name="role_assignments")
