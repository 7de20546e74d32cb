"""The contact-point register (考核联系点台账) and training records (培训记录).

- `contact_points`: which units are contact points in which year, with the liaison
  (联络员) who files the monthly information report (信息月报), targets and outcomes.
- `training_records`: one row per training a person took; the yearly training total is
  derived from them (plus the legacy per-year `training_hours` total, kept as it is).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "training_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("course", sa.String(200), nullable=False),
        sa.Column("hours", sa.Numeric(7, 1), nullable=False),
        sa.Column("taken_on", sa.Date(), nullable=False),
        sa.Column("organiser", sa.String(200), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"],
                                name=op.f("fk_training_records_person_id_people")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_records")),
    )
    op.create_index(op.f("ix_training_records_person_id"), "training_records", ["person_id"])
    op.create_table(
        "contact_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("liaison_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(64), nullable=True),
        sa.Column("targets", JSON, nullable=True),
        sa.Column("outcomes", JSON, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("set_by", sa.Integer(), nullable=True),
        sa.Column("set_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"],
                                name=op.f("fk_contact_points_unit_id_units")),
        sa.ForeignKeyConstraint(["liaison_id"], ["people.id"],
                                name=op.f("fk_contact_points_liaison_id_people")),
        sa.ForeignKeyConstraint(["set_by"], ["people.id"],
                                name=op.f("fk_contact_points_set_by_people")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_points")),
        sa.UniqueConstraint("unit_id", "year", name=op.f("uq_contact_points_unit_id_year")),
        sa.UniqueConstraint("year", "liaison_id",
                            name=op.f("uq_contact_points_year_liaison_id")),
    )


def downgrade() -> None:
    op.drop_table("contact_points")
    op.drop_index(op.f("ix_training_records_person_id"), table_name="training_records")
    op.drop_table("training_records")
