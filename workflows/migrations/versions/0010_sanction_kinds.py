"""Sanctions whose effect has no end (开除党籍, 开除): `sanctions.effect_months` may be NULL.

The kinds of sanction (政务处分, 党纪处分, 组织处理, 诫勉) and their default effect periods are
the table `SANCTION_KINDS` in `workflows.models`; a NULL period means the effect on promotion
never ends.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sanctions") as batch:
        batch.alter_column("effect_months", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    # A sanction without end cannot be written back as a number of months: refuse rather
    # than invent one.
    bind = op.get_bind()
    n = bind.execute(sa.text("SELECT count(*) FROM sanctions WHERE effect_months IS NULL"))
    if n.scalar():
        raise RuntimeError("sanctions without end (effect_months NULL) exist; remove or "
                           "change them before downgrading below 0009_promotion")
    with op.batch_alter_table("sanctions") as batch:
        batch.alter_column("effect_months", existing_type=sa.Integer(), nullable=False)
