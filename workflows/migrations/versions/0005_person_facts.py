"""Person facts the rules read: rank history, annual results, sanctions, investigations,
exam results, training hours, commendations; and the audit of every change to them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _person_fk(table: str, column: str = "person_id") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], ["people.id"],
                                   name=op.f(f"fk_{table}_{column}_people"))


def _fact_table(table: str, *columns: sa.Column, indexed: bool = True,
                unique_year: bool = False) -> None:
    extra = []
    if unique_year:
        extra.append(sa.UniqueConstraint("person_id", "year",
                                         name=op.f(f"uq_{table}_person_id_year")))
    op.create_table(
        table,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        *columns,
        sa.Column("note", sa.Text(), nullable=True),
        _person_fk(table),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        *extra,
    )
    if indexed:
        op.create_index(op.f(f"ix_{table}_person_id"), table, ["person_id"])


def upgrade() -> None:
    _fact_table("rank_history",
                sa.Column("rank", sa.String(64), nullable=False),
                sa.Column("since", sa.Date(), nullable=False),
                sa.Column("until", sa.Date(), nullable=True))
    _fact_table("annual_results",
                sa.Column("year", sa.Integer(), nullable=False),
                sa.Column("grade", sa.String(16), nullable=False),
                sa.Column("source", sa.String(16), nullable=False),
                indexed=False, unique_year=True)
    _fact_table("sanctions",
                sa.Column("kind", sa.String(16), nullable=False),
                sa.Column("decided_on", sa.Date(), nullable=False),
                sa.Column("effect_months", sa.Integer(), nullable=False))
    _fact_table("investigations",
                sa.Column("opened_on", sa.Date(), nullable=False),
                sa.Column("closed_on", sa.Date(), nullable=True))
    _fact_table("exam_results",
                sa.Column("exam", sa.String(100), nullable=False),
                sa.Column("taken_on", sa.Date(), nullable=False),
                sa.Column("score", sa.Numeric(7, 2), nullable=True),
                sa.Column("passed", sa.Boolean(), nullable=False))
    _fact_table("training_hours",
                sa.Column("year", sa.Integer(), nullable=False),
                sa.Column("hours", sa.Numeric(7, 1), nullable=False),
                indexed=False, unique_year=True)
    _fact_table("commendations",
                sa.Column("kind", sa.String(64), nullable=False),
                sa.Column("decided_on", sa.Date(), nullable=False))

    op.create_table(
        "fact_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("table_name", sa.String(32), nullable=False),
        sa.Column("row_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("before", JSON, nullable=True),
        sa.Column("after", JSON, nullable=True),
        _person_fk("fact_audit", "actor_id"),
        _person_fk("fact_audit"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fact_audit")),
    )
    op.create_index("ix_fact_audit_person_id_id", "fact_audit", ["person_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_fact_audit_person_id_id", table_name="fact_audit")
    op.drop_table("fact_audit")
    for table in ("commendations", "exam_results", "investigations", "sanctions",
                  "rank_history"):
        op.drop_index(op.f(f"ix_{table}_person_id"), table_name=table)
        op.drop_table(table)
    for table in ("training_hours", "annual_results"):
        op.drop_table(table)
