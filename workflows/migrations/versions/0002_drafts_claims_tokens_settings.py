"""Draft flow versions, queue claims, API tokens and sessions, installation settings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_settings")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])

    with op.batch_alter_table("cases") as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", TS, nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_cases_claimed_by_people"), "people", ["claimed_by"], ["id"])

    # Versions published before drafts existed stay published; created_at = published_at.
    with op.batch_alter_table("flow_versions") as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=False,
                                      server_default="published"))
        batch_op.add_column(sa.Column("created_at", TS, nullable=True))
        batch_op.add_column(sa.Column("created_by", sa.Integer(), nullable=True))
        batch_op.alter_column("published_at", existing_type=TS, nullable=True)
        batch_op.create_foreign_key(
            op.f("fk_flow_versions_created_by_people"), "people", ["created_by"], ["id"])
    op.execute("UPDATE flow_versions SET created_at = published_at")
    with op.batch_alter_table("flow_versions") as batch_op:
        batch_op.alter_column("created_at", existing_type=TS, nullable=False)
        batch_op.alter_column("status", existing_type=sa.String(length=16), server_default=None)


def downgrade() -> None:
    op.execute("DELETE FROM flow_versions WHERE status = 'draft'")
    with op.batch_alter_table("flow_versions") as batch_op:
        batch_op.drop_constraint(op.f("fk_flow_versions_created_by_people"), type_="foreignkey")
        batch_op.alter_column("published_at", existing_type=TS, nullable=False)
        batch_op.drop_column("created_by")
        batch_op.drop_column("created_at")
        batch_op.drop_column("status")
    with op.batch_alter_table("cases") as batch_op:
        batch_op.drop_constraint(op.f("fk_cases_claimed_by_people"), type_="foreignkey")
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("claimed_by")
    op.drop_index(op.f("ix_api_tokens_user_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("settings")
