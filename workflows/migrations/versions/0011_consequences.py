"""Consequences of regular results (平时考核结果运用): a person fact the regular assessment's
approval writes — 通报表扬, 嘉奖 / 记功 candidacies, 待岗学习 / 召回管理 reviews.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consequences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("period", sa.String(16), nullable=True),
        sa.Column("decided_on", sa.Date(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"],
                                name=op.f("fk_consequences_person_id_people")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consequences")),
    )
    op.create_index(op.f("ix_consequences_person_id"), "consequences", ["person_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_consequences_person_id"), table_name="consequences")
    op.drop_table("consequences")
