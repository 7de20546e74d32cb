"""Login throttling, the security log and idempotency bound to the request.

- `login_throttle`: failed-login counters per account and per address, shared by every
  node through the database; `locked_until` is a temporary lockout an admin can lift.
- `security_events`: the audit of authentication (failed logins, lockouts and their lifting,
  deactivations) — who, from where, when.
- `case_history.request_hash`: the hash of the request (actor, trigger, data, comment) that an
  `Idempotency-Key` was first used with, so a replay with another body or by another user is
  refused instead of silently returning the first result.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("window_started_at", TS, nullable=False),
        sa.Column("locked_until", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "security_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("username", sa.String(100), nullable=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("by", sa.Integer(), sa.ForeignKey("people.id"), nullable=True),
        sa.Column("detail", JSON, nullable=False),
    )
    op.create_index("ix_security_events_at", "security_events", ["at"])
    op.add_column("case_history", sa.Column("request_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("case_history", "request_hash")
    op.drop_index("ix_security_events_at", table_name="security_events")
    op.drop_table("security_events")
    op.drop_table("login_throttle")
