"""Rank positions (职数) per unit, rank and round; the contact-point score sheet (成绩单).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _common(table: str) -> list:
    return [
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("set_by", sa.Integer(), nullable=True),
        sa.Column("set_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name=op.f(f"fk_{table}_unit_id_units")),
        sa.ForeignKeyConstraint(["set_by"], ["people.id"],
                                name=op.f(f"fk_{table}_set_by_people")),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def upgrade() -> None:
    op.create_table(
        "rank_positions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.String(64), nullable=False),
        sa.Column("round", sa.String(32), nullable=False),
        sa.Column("positions", sa.Integer(), nullable=False),
        *_common("rank_positions"),
        sa.UniqueConstraint("unit_id", "rank", "round",
                            name=op.f("uq_rank_positions_unit_id_rank_round")),
    )
    op.create_table(
        "contact_point_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("score", sa.Numeric(6, 2), nullable=True),
        sa.Column("items", JSON, nullable=True),
        sa.Column("raised", sa.Boolean(), nullable=False),
        *_common("contact_point_scores"),
        sa.UniqueConstraint("unit_id", "year", name=op.f("uq_contact_point_scores_unit_id_year")),
    )


def downgrade() -> None:
    op.drop_table("contact_point_scores")
    op.drop_table("rank_positions")
