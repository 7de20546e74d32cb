"""Dispatch outcomes (下沉一线任期考核结果): a person fact the frontline dispatch's approval
writes and promotion reads.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dispatch_outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("post_type", sa.String(64), nullable=True),
        sa.Column("receiving_unit", sa.String(200), nullable=True),
        sa.Column("term_start", sa.Date(), nullable=True),
        sa.Column("term_end", sa.Date(), nullable=True),
        sa.Column("grade", sa.String(16), nullable=False),
        sa.Column("commendation_proposed", sa.Boolean(), nullable=False),
        sa.Column("promotion_priority", sa.Boolean(), nullable=False),
        sa.Column("decided_on", sa.Date(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"],
                                name=op.f("fk_dispatch_outcomes_person_id_people")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_outcomes")),
    )
    op.create_index(op.f("ix_dispatch_outcomes_person_id"), "dispatch_outcomes", ["person_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_dispatch_outcomes_person_id"), table_name="dispatch_outcomes")
    op.drop_table("dispatch_outcomes")
